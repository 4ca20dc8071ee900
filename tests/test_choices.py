"""Every choice list of the config is written once (repro/choices.py): the schema offers exactly those
names, and each implementation that registers objects under names registers the same ones."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from repro import choices
from repro.config import DataConfig, PruneConfig

from conftest import REPO


def _offered(section, name: str) -> tuple:
    return next(f for f in dataclasses.fields(section) if f.name == name).metadata["choices"]


@pytest.mark.parametrize("section, key, names", [
    (DataConfig, "name", choices.DATASETS), (DataConfig, "loader", choices.LOADERS),
    (PruneConfig, "method", choices.PRUNE_METHODS), (PruneConfig, "criterion", choices.CRITERIA),
    (PruneConfig, "snf_variant", choices.SNF_VARIANTS)])
def test_the_schema_offers_the_one_list(section, key, names):
    assert _offered(section, key) == names


def test_the_pruning_methods_are_the_listed_ones():
    from repro.engine.methods import METHODS
    assert sorted(METHODS) == sorted(choices.PRUNE_METHODS)


def test_the_criteria_are_the_listed_ones():
    from repro.prune.criteria import CRITERIA
    assert sorted(CRITERIA) == sorted(choices.CRITERIA)


def test_the_snf_searches_are_the_listed_ones():
    from repro.prune.snf_variants import DEFAULT_VARIANT, VARIANTS
    assert sorted(VARIANTS) == sorted(choices.SNF_VARIANTS)
    snf = PruneConfig(method="snf", init_from="run:base", flops_reduction=50.0)
    assert DEFAULT_VARIANT == snf.snf_variant == choices.SNF_VARIANTS[0]


@pytest.mark.parametrize("kw", [{}, {"method": "sfp", "rate": 0.3}])
def test_other_methods_record_one_snf_variant_whatever_the_default(kw):
    """prune.snf_variant does nothing outside SNF. Those runs record one value, so a change of the
    default renames no SFP or baseline run (the tables' `--check` holds their folder names)."""
    from repro.config import ConfigError
    for given in ({}, {"snf_variant": choices.SNF_VARIANTS[0]}, {"snf_variant": choices.SNF_VARIANT_INERT}):
        assert PruneConfig(**kw, **given).snf_variant == choices.SNF_VARIANT_INERT
    with pytest.raises(ConfigError, match="prune.snf_variant: is an SNF key; leave it unset"):
        PruneConfig(**kw, snf_variant="stage")


def test_every_data_set_has_its_implementation():
    """The loaders' normalisation and the writer's CLI know every listed data set, and nothing else."""
    from repro.data import write
    from repro.data.stats import STATS
    assert sorted(STATS) == sorted(choices.DATASETS)
    for name, code in [*[(n, 0) for n in choices.DATASETS], ("mnist", 2)]:  # argparse: 2 = not a choice
        with pytest.raises(SystemExit) as e:
            write.main(["identify", name, "--help"])
        assert e.value.code == code, name


def test_the_schema_stays_cheap_to_import():
    """The list lives in a module of plain names, so reading it costs the schema no torch."""
    code = "import sys, repro.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
