"""Config: overrides, types, validation, presets, hashing, run names, JSON round trip, --help."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from repro.config import (PRESETS, Config, ConfigError, config_hash, help_text, identity_diff, iter_keys,
                          run_name)


def test_defaults_are_the_cifar_recipe():
    c = Config()
    assert (c.optim.lr, c.optim.momentum, c.optim.nesterov, c.optim.weight_decay) == (0.1, 0.9, True, 5e-4)
    assert (c.schedule.epochs, c.schedule.warmup_epochs, c.schedule.warmup_lr) == (200, 1, 0.01)
    assert c.schedule.milestones == (60, 120, 160) and c.schedule.gamma == 0.2
    assert c.data.batch_size == 128
    # warm-up epoch at 0.01, then 0.1, x0.2 at 60/120/160
    assert [round(c.lr_at(e), 8) for e in (0, 1, 59, 60, 120, 160, 199)] == \
        [0.01, 0.1, 0.1, 0.02, 0.004, 0.0008, 0.0008]


def test_imagenet_preset_by_arch_and_by_name():
    c = Config.from_overrides(["model.arch=resnet50"])  # preset=auto follows the arch family
    assert c.data.name == "imagenet" and c.schedule.epochs == 100 and c.schedule.milestones == (30, 60, 90)
    assert c.optim.weight_decay == 1e-4 and c.schedule.warmup_epochs == 0 and c.data.batch_size == 256
    assert [c.lr_at(e) for e in (0, 29, 30, 60, 90)] == pytest.approx([0.1, 0.1, 0.01, 0.001, 0.0001])
    # explicit keys win over the preset whatever their position
    c2 = Config.from_overrides(["optim.lr=0.01", "preset=imagenet", "model.arch=resnet18"])
    assert c2.optim.lr == 0.01 and c2.schedule.epochs == 100
    assert Config.from_overrides(["preset=cifar"]) == Config()
    assert set(PRESETS) == {"cifar", "imagenet"}


def test_type_parsing():
    c = Config.from_overrides(["optim.lr=0.05", "schedule.milestones=30,60", "optim.nesterov=false",
                               "seed=3", "schedule.gamma=1", "prune.init_from=/x/y"])
    assert c.optim.lr == 0.05 and isinstance(c.schedule.gamma, float)
    assert c.schedule.milestones == (30, 60) and c.optim.nesterov is False and c.seed == 3
    for text in ("(30,60)", "[30, 60]", " 30 , 60 "):
        assert Config.from_overrides([f"schedule.milestones={text}"]).schedule.milestones == (30, 60)
    assert Config.from_overrides(["schedule.milestones="]).schedule.milestones == ()
    for t, f in (("yes", True), ("0", False), ("TRUE", True), ("off", False)):
        assert Config.from_overrides([f"sync_bn={t}"]).sync_bn is f


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=0.1", "unknown key 'optim.lrr' (did you mean 'optim.lr'?)"),
    ("foo=1", "unknown key 'foo'"),
    ("optim.lr=abc", "optim.lr: expected float"),
    ("seed=1.5", "seed: expected int"),
    ("optim.nesterov=maybe", "optim.nesterov: expected bool"),
    ("schedule.milestones=a,b", "schedule.milestones: expected tuple of int"),
    ("schedule.epochs=-1", "schedule.epochs: must be >= 1"),
    ("schedule.milestones=60,30", "strictly increasing"),
    ("optim.lr=0", "optim.lr: must be > 0"),
    ("optim.lr=nan", "optim.lr: must be a finite number"),
    ("model.arch=resnet21", "model.arch: must be one of"),
    ("prune.method=lottery", "prune.method: must be one of none | sfp | snf"),
    ("prune.rate=0.3", "prune.rate: is an SFP key"),
    ("data.batch_size=0", "data.batch_size: must be >= 1"),
    ("optim.lr", "is not key=value"),
    ("preset=mnist", "preset: must be one of"),
    ("dtype=float16", "dtype: must be one of float32 | float64"),
    ("dtype=float64", "dtype: float64 runs on the CPU only: set device=cpu"),
])
def test_bad_values_are_one_line_errors(override, message):
    with pytest.raises(ConfigError) as e:
        Config.from_overrides([override])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_cross_key_validation():
    with pytest.raises(ConfigError, match="prune.rate: must be > 0 for prune.method=sfp"):
        Config.from_overrides(["prune.method=sfp"])
    with pytest.raises(ConfigError, match="SNF prunes a trained baseline"):
        Config.from_overrides(["prune.method=snf", "prune.flops_reduction=50"])
    with pytest.raises(ConfigError, match="prune.flops_reduction: must be in"):
        Config.from_overrides(["prune.method=snf", "prune.init_from=runs/base"])
    with pytest.raises(ConfigError, match="CIFAR ResNet and takes 32x32"):
        Config.from_overrides(["model.arch=resnet20", "data.name=imagenet"])
    snf = Config.from_overrides(["prune.method=snf", "prune.init_from=runs/base", "prune.flops_reduction=52.9",
                                 "prune.finetune_epochs=40", "optim.lr=0.1"])
    assert snf.train_epochs == 40 and snf.lr_at(5) == pytest.approx(0.01)  # fine-tuning at lr/10


def test_python_construction_is_validated_too():
    from repro.config import OptimConfig
    with pytest.raises(ConfigError, match="optim.lr: expected float"):
        OptimConfig(lr="0.1")
    with pytest.raises(ConfigError, match="optim.momentum: must be in"):
        dataclasses.replace(Config().optim, momentum=1.5)


def test_json_round_trip_and_unknown_json_keys():
    c = Config.from_overrides(["prune.method=sfp", "prune.rate=0.3", "schedule.milestones=2,4"])
    assert Config.from_json(c.to_json()) == c
    d = c.to_dict()
    d["optim"]["betas"] = 0.9
    with pytest.raises(ConfigError, match="unknown key 'optim.betas'"):
        Config.from_dict(d)


def test_hash_is_stable_and_ignores_non_identity_keys():
    c = Config()
    assert config_hash(c) == config_hash(Config.from_json(c.to_json()))
    assert len(config_hash(c)) == 8
    moved = c.replace({"data.path": "/elsewhere", "data.workers": 7, "log.wandb": "offline", "log.group": "t1",
                       "dist_timeout_s": 60, "allow_precision_switch": True})
    assert config_hash(moved) == config_hash(c) and identity_diff(c, moved) == {}
    changed = c.replace({"optim.lr": 0.2})
    assert config_hash(changed) != config_hash(c)
    assert identity_diff(c, changed) == {"optim.lr": (0.1, 0.2)}
    # same config built two ways hashes the same
    assert config_hash(Config.from_overrides({"seed": 1})) == config_hash(Config.from_overrides(["seed=1"]))


def test_a_key_added_later_joins_the_hash_only_when_set():
    """``hashed_at_default=False`` (keys.key): dtype joined the config after runs existed; at its
    default it leaves every run's hash, and so its folder name, as it was."""
    base = Config.from_overrides(["device=cpu"])
    assert config_hash(Config.from_overrides(["device=cpu", "dtype=float32"])) == config_hash(base)
    f64 = Config.from_overrides(["device=cpu", "dtype=float64"])
    assert config_hash(f64) != config_hash(base)
    assert identity_diff(base, f64) == {"dtype": ("float32", "float64")}


def test_hash_pinned():
    # Part of every run folder name on disk: a change renames every folder, so change it only on
    # purpose (adding a key with a default changes it too, unless it is declared
    # hashed_at_default=False).
    assert config_hash(Config()) == PINNED_DEFAULT_HASH


PINNED_DEFAULT_HASH = "1610071f"


def test_hash_same_in_a_fresh_interpreter():
    out = subprocess.run([sys.executable, "-c", "from repro.config import Config, config_hash;"
                          "print(config_hash(Config()))"], capture_output=True, text=True, timeout=120,
                         env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == PINNED_DEFAULT_HASH, out.stderr


def test_run_name_is_readable_plus_hash():
    c = Config.from_overrides(["model.arch=resnet56", "data.name=cifar10", "prune.method=sfp", "prune.rate=0.4",
                               "seed=2"])
    assert run_name(c) == f"resnet56-cifar10-sfp0.4-e200-s2-{config_hash(c)}"
    snf = Config.from_overrides(["model.arch=resnet56", "prune.method=snf", "prune.init_from=x",
                                 "prune.flops_reduction=52.94", "prune.finetune_epochs=30"])
    assert run_name(snf).startswith("resnet56-digits-snf52.94-e30-s0-")
    assert run_name(Config()).startswith("resnet20-digits-base-e200-s0-")


def test_help_lists_every_key_with_type_and_default():
    text = help_text()
    for name, _tp, f in iter_keys():
        line = next(l for l in text.splitlines() if l.strip().startswith(name + " "))
        assert f.metadata["help"] in line
    assert "optim.lr                 float          default 0.1" in text
    assert "schedule.milestones      tuple of int   default 60,120,160" in text


def test_cli_help_exits_zero_and_shows_keys():
    out = subprocess.run([sys.executable, "-m", "repro.train", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0
    assert "prune.flops_reduction" in out.stdout and "--run-dir" in out.stdout and "75" in out.stdout
