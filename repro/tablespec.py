"""What a paper table contains: its rows, the runs behind each row (grid x seeds) and the paper's values.

A launch script (launch/table2.py, ...) declares one `TableSpec`; the launcher (repro.launch) plans
and submits from it and the table builder (repro.tables) reads the same object, so the two cannot
drift apart. Nothing here imports torch or the trainer: declaring a table is cheap.

Paper values are facts from ../shared/reference/papers.md. A cell the sources could not confirm is
`unconfirmed(...)`, never a guess; it renders as "unconfirmed" in every output.
"""
from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

# Metrics a row can carry, in display order. Drops are (baseline - pruned) in points, as in the
# papers: positive = the pruned model is worse. A paper's "+0.14% accuracy" is a drop of -0.14.
METRICS = ("top1", "top5", "top1_drop", "top5_drop")
METRIC_LABELS = {"top1": "Top-1", "top5": "Top-5", "top1_drop": "Top-1 drop", "top5_drop": "Top-5 drop"}
# result.json key each accuracy metric is read from (the delivered = compact model's accuracy)
RESULT_KEYS = {"top1": "val_top1", "top5": "val_top5"}


@dataclass(frozen=True)
class PaperValue:
    """One number printed in (or stated by) the paper; `value=None` means not known here."""
    value: float | None
    std: float | None = None
    confirmed: bool = True
    note: str = ""

    def __post_init__(self):
        if self.confirmed and self.value is None:
            raise ValueError("a confirmed paper value needs a number")


def paper(value: float, std: float | None = None, note: str = "") -> PaperValue:
    """A value printed in the paper (or reprinted by the same authors)."""
    return PaperValue(value, std, True, note)


def unconfirmed(note: str, value: float | None = None) -> PaperValue:
    """A cell the sources could not confirm; `value` only when some source states a number."""
    return PaperValue(value, None, False, note)


@dataclass(frozen=True)
class Row:
    """One line of the table: one model variant, trained once per seed.

    overrides: dotted config keys on top of the table's `base` (e.g. {"prune.method": "sfp"}).
    baseline:  key of the row the drops are measured against (None for a baseline row).
    init_from: key of the row whose run with the SAME seed is this row's starting checkpoint
               (SFP from a pre-trained baseline, SNF); the launcher adds a SLURM dependency on it.
    flops_target: SNF rows: the FLOPs reduction (percent) the search must reach.
    smoke:     overrides for --smoke that only this row takes (e.g. SNF's fine-tuning epochs).
    """
    key: str
    model: str
    variant: str
    overrides: Mapping[str, Any]
    paper: Mapping[str, PaperValue] = field(default_factory=dict)
    baseline: str | None = None
    init_from: str | None = None
    prune_rate: float = 0.0
    flops_target: float | None = None
    flops_paper: PaperValue | None = None
    smoke: Mapping[str, Any] = field(default_factory=dict)  # this row's own --smoke overrides

    @property
    def arch(self) -> str:
        return self.overrides["model.arch"]


@dataclass(frozen=True)
class RunSpec:
    """One run: a row at one seed. `name` is stable and is also the W&B run name suffix."""
    table: str
    row: Row
    seed: int

    @property
    def key(self) -> str:
        return f"{self.row.key}/seed{self.seed}"


@dataclass(frozen=True)
class TableSpec:
    """A paper table: rows x seeds, the training recipe, the smoke (miniature) variant.

    base:          dotted overrides every run gets (data set, recipe).
    smoke:         dotted overrides on top, for `--smoke` (tiny images, few epochs).
    smoke_data:    what `--smoke` generates: ("imagenet" | "cifar10", synth kwargs).
    metrics:       which METRICS the table shows.
    """
    name: str
    title: str
    source: str
    dataset: str
    rows: tuple[Row, ...]
    seeds: tuple[int, ...]
    base: Mapping[str, Any]
    smoke: Mapping[str, Any]
    smoke_seeds: tuple[int, ...] = (0,)
    smoke_data: Mapping[str, Any] = field(default_factory=dict)
    metrics: tuple[str, ...] = ("top1", "top1_drop")
    notes: tuple[str, ...] = ()

    def __post_init__(self):
        keys = [r.key for r in self.rows]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{self.name}: duplicate row keys in {keys}")
        for r in self.rows:
            for ref in (r.baseline, r.init_from):
                if ref is not None and ref not in keys:
                    raise ValueError(f"{self.name}: row {r.key} refers to unknown row {ref!r}")
            bad = set(r.paper) - set(METRICS)
            if bad:
                raise ValueError(f"{self.name}: row {r.key}: unknown paper metrics {sorted(bad)}")
        bad = set(self.metrics) - set(METRICS)
        if bad:
            raise ValueError(f"{self.name}: unknown metrics {sorted(bad)}")

    def row(self, key: str) -> Row:
        for r in self.rows:
            if r.key == key:
                return r
        raise KeyError(key)

    def runs(self, smoke: bool = False) -> list[RunSpec]:
        """Every run the table needs, rows in order, then seeds; dependencies come after their base."""
        seeds = self.smoke_seeds if smoke else self.seeds
        return [RunSpec(self.name, r, s) for r in self.rows for s in seeds]


# ----------------------------------------------------------------------------- finding a table by name
LAUNCH_DIR = Path(__file__).resolve().parent.parent / "launch"


def known_tables() -> list[str]:
    return sorted(p.stem for p in LAUNCH_DIR.glob("*.py") if not p.name.startswith("_"))


def load_table(name: str) -> TableSpec:
    """The TableSpec declared as TABLE in launch/<name>.py (the one place a table is declared)."""
    path = LAUNCH_DIR / f"{name}.py"
    if not name.replace("_", "").isalnum() or not path.is_file():
        raise LookupError(f"unknown table {name!r}; known: {', '.join(known_tables()) or '(none)'} "
                          f"(each is a launch/<name>.py)")
    mod_name = f"_prunerepro_launch_{name}"
    if mod_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module  # registered first: the TableSpec pickles by reference
        spec.loader.exec_module(module)
    table = getattr(sys.modules[mod_name], "TABLE", None)
    if not isinstance(table, TableSpec):
        raise LookupError(f"{path} does not declare TABLE = TableSpec(...)")
    return table
