"""The config schema: every key declared once, with its type, default and help.

The section/field names below are the contract the data, pruning, engine, launch and table code
read. Extend (new keys, validation), but do not rename a field without updating every reader.

* ``Config()`` is the CIFAR recipe of both papers: the recipe defaults are read from
  ``repro.papers.recipes.CIFAR`` (the one place a recipe is written).
* ``Config.from_overrides(["preset=imagenet", "optim.lr=0.05"])`` applies a named preset
  (``PRESETS`` = the papers' recipes; ``auto`` = by the arch's family), then dotted ``key=value``
  overrides, parsing each value to the key's declared type. Unknown keys and invalid values raise
  ``ConfigError``.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from repro.choices import (COMPILE_BACKENDS, CRITERIA, DATASETS, LOADERS, PRUNE_METHODS, SNF_VARIANT_INERT,
                           SNF_VARIANTS)
from repro.papers.recipes import CIFAR, IMAGENET, PRESETS, PRETRAINED_LR_SCALE

from .keys import ConfigError, _Section, check, flatten, iter_keys, key, parse_value

# ----------------------------------------------------------------------------- the sections
@dataclass(frozen=True)
class ModelConfig(_Section):
    _prefix = "model."
    arch: str = key("resnet20", "one of repro.models.ARCHS")
    num_classes: int = key(0, "head size; 0 = the data set's number of classes")

    def validate(self):
        from repro.models import ARCHS
        check(self.arch in ARCHS, "model.arch", f"must be one of {' | '.join(ARCHS)}", self.arch)
        check(self.num_classes >= 0, "model.num_classes", "must be >= 0", self.num_classes)


@dataclass(frozen=True)
class DataConfig(_Section):
    _prefix = "data."
    name: str = key("digits", " | ".join(DATASETS), choices=DATASETS)
    path: str = key("", "raw data set in its real on-disk layout (CIFAR-10 python pickles dir; "
                        "ImageNet root holding train/ and val/); unused for digits", identity=False)
    ffcv_dir: str = key("", "folder with train.beton and val.beton (python -m repro.data.write ...)",
                        identity=False)
    loader: str = key("ffcv", f"{' | '.join(LOADERS)} (torch DataLoader over the raw layout)", choices=LOADERS)
    batch_size: int = key(CIFAR["data.batch_size"], "global batch size, split evenly over ranks")
    workers: int = key(-1, "loader workers per rank: FFCV threads / DataLoader processes; -1 = auto, "
                           "the CPUs this task has (affinity, SLURM_CPUS_PER_TASK; minus one for the "
                           "DataLoader's own process); 0 = plain: load in the training process",
                       identity=False)
    train_res: int = key(IMAGENET["data.train_res"], "ImageNet training crop (random-resized crop); ignored for 32x32 sets")
    val_res: int = key(IMAGENET["data.val_res"], "ImageNet validation centre crop; ignored for 32x32 sets")
    val_resize: int = key(IMAGENET["data.val_resize"], "ImageNet validation resize before the centre crop")
    in_memory: bool = key(True, "FFCV: load the whole .beton into RAM", identity=False)
    stage_dir: str = key("", "node-local folder: FFCV reads a copy of the ffcv_dir files made there once per "
                             "node, verified (size + sha256), reused by later jobs; $VARS expanded on the "
                             "node; '' = read ffcv_dir (repro/data/stage.py)", identity=False)

    def validate(self):
        check(self.batch_size >= 1, "data.batch_size", "must be >= 1", self.batch_size)
        check(self.workers >= -1, "data.workers", "must be >= 0, or -1 (auto)", self.workers)
        check(self.stage_dir == "" or self.stage_dir[0] in "/$~", "data.stage_dir",
              "must be an absolute path (or start with $VAR or ~), or '' (off)", self.stage_dir)
        for k in ("train_res", "val_res", "val_resize"):
            check(getattr(self, k) >= 8, f"data.{k}", "must be >= 8 pixels", getattr(self, k))
        check(self.val_resize >= self.val_res, "data.val_resize", f"must be >= data.val_res ({self.val_res})",
               self.val_resize)

    @property
    def resolution(self) -> int:
        """Input resolution the model sees at evaluation (32 for the 32x32 sets)."""
        return self.val_res if self.name == "imagenet" else 32


@dataclass(frozen=True)
class OptimConfig(_Section):
    _prefix = "optim."
    lr: float = key(CIFAR["optim.lr"], "peak learning rate for the global batch")
    momentum: float = key(CIFAR["optim.momentum"], "SGD momentum")
    nesterov: bool = key(CIFAR["optim.nesterov"], "Nesterov momentum (both papers)")
    weight_decay: float = key(CIFAR["optim.weight_decay"], "L2 weight decay")

    def validate(self):
        check(self.lr > 0, "optim.lr", "must be > 0", self.lr)
        check(0 <= self.momentum < 1, "optim.momentum", "must be in [0, 1)", self.momentum)
        check(self.weight_decay >= 0, "optim.weight_decay", "must be >= 0", self.weight_decay)
        check(not self.nesterov or self.momentum > 0, "optim.nesterov", "needs optim.momentum > 0", self.nesterov)


@dataclass(frozen=True)
class ScheduleConfig(_Section):
    _prefix = "schedule."
    epochs: int = key(CIFAR["schedule.epochs"], "training epochs (SNF: fine-tuning epochs are prune.finetune_epochs; "
                                                "0: evaluate the prune.init_from model as it is)")
    warmup_epochs: int = key(CIFAR["schedule.warmup_epochs"], "epochs at warmup_lr before the peak lr")
    warmup_lr: float = key(CIFAR["schedule.warmup_lr"], "learning rate during warm-up")
    milestones: tuple[int, ...] = key(CIFAR["schedule.milestones"], "epochs at which the lr is multiplied by gamma")
    gamma: float = key(CIFAR["schedule.gamma"], "lr multiplier at each milestone")
    train_batches: int = key(0, "stop each training epoch after this many batches (0 = full epoch; "
                                "smoke tests only)")
    val_batches: int = key(0, "evaluate on this many validation batches per rank (0 = all; smoke tests only)")

    def validate(self):
        check(self.epochs >= 0, "schedule.epochs", "must be >= 1 (or 0: only evaluate the prune.init_from model)",
              self.epochs)
        check(self.warmup_epochs >= 0, "schedule.warmup_epochs", "must be >= 0", self.warmup_epochs)
        check(self.warmup_lr > 0, "schedule.warmup_lr", "must be > 0", self.warmup_lr)
        check(self.gamma > 0, "schedule.gamma", "must be > 0", self.gamma)
        ms = self.milestones
        check(all(m >= 1 for m in ms) and list(ms) == sorted(set(ms)), "schedule.milestones",
               "must be strictly increasing epochs >= 1", ms)
        check(self.train_batches >= 0, "schedule.train_batches", "must be >= 0", self.train_batches)
        check(self.val_batches >= 0, "schedule.val_batches", "must be >= 0", self.val_batches)

    def lr_at(self, epoch: int, peak: float, scale: float = 1.0) -> float:
        """Learning rate for a whole epoch: warm-up, then step decay (both papers change lr per epoch)."""
        if epoch < self.warmup_epochs:
            return self.warmup_lr * scale
        return peak * scale * self.gamma ** sum(epoch >= m for m in self.milestones)


@dataclass(frozen=True)
class PruneConfig(_Section):
    _prefix = "prune."
    method: str = key("none", " | ".join(PRUNE_METHODS), choices=PRUNE_METHODS)
    rate: float = key(0.0, "SFP: fraction of filters zeroed per layer, in [0, 1)")
    criterion: str = key("l2", f"filter importance: {' | '.join(CRITERIA)}", choices=CRITERIA)
    init_from: str = key("", "checkpoint or run folder of a trained baseline to start from "
                             "('' = from scratch); SNF requires one. Also a torchvision state dict "
                             "for the ImageNet archs")
    flops_reduction: float = key(0.0, "SNF: target conv-MACs reduction in percent")
    finetune_epochs: int = key(0, "SNF: fine-tuning epochs after pruning")
    init_lr_scale: float = key(PRETRAINED_LR_SCALE, "multiplier on optim.lr and schedule.warmup_lr when prune.init_from "
                                    "is set (SFP from pre-trained and SNF fine-tuning: lr/10)")
    search_batches: int = key(8, "SNF: training batches (epoch-0 order, per process) on which the "
                                 "sensitivity curves are measured")
    uniform: bool = key(False, "SNF: one prune rate for every layer meeting the same FLOPs target (the "
                               "uniform baseline) instead of the sensitivity search")
    snf_variant: str = key(SNF_VARIANTS[0], "SNF: the search (rise = held-out loss rise per conv with the "
                                            "trained BN statistics, as the abstract describes; rise-bn = BN "
                                            "statistics re-estimated after each cut; stage, weights: "
                                            "docs/snf_search.md). Other methods: no effect, recorded as "
                                            f"{SNF_VARIANT_INERT}",
                           choices=SNF_VARIANTS)

    def validate(self):
        check(0 <= self.rate < 1, "prune.rate", "must be in [0, 1)", self.rate)
        check(self.init_lr_scale > 0, "prune.init_lr_scale", "must be > 0", self.init_lr_scale)
        check(self.finetune_epochs >= 0, "prune.finetune_epochs", "must be >= 0", self.finetune_epochs)
        check(self.search_batches >= 1, "prune.search_batches", "must be >= 1", self.search_batches)
        if self.method == "sfp":
            check(self.rate > 0, "prune.rate", "must be > 0 for prune.method=sfp", self.rate)
        else:
            check(self.rate == 0, "prune.rate", f"is an SFP key; must be 0 for prune.method={self.method}",
                   self.rate)
        if self.method == "snf":
            check(self.init_from != "", "prune.init_from", "SNF prunes a trained baseline; give its run "
                   "folder or checkpoint", self.init_from)
            check(0 < self.flops_reduction < 100, "prune.flops_reduction", "must be in (0, 100) for SNF",
                   self.flops_reduction)
        else:
            check(self.flops_reduction == 0, "prune.flops_reduction",
                   f"is an SNF key; must be 0 for prune.method={self.method}", self.flops_reduction)
            check(not self.uniform, "prune.uniform", f"is an SNF key; must be false for prune.method={self.method}",
                   self.uniform)
            check(self.snf_variant in (SNF_VARIANTS[0], SNF_VARIANT_INERT), "prune.snf_variant",
                  f"is an SNF key; leave it unset for prune.method={self.method}", self.snf_variant)
            # one recorded value whatever the default: the default's change renames no such run
            object.__setattr__(self, "snf_variant", SNF_VARIANT_INERT)
            check(self.finetune_epochs == 0, "prune.finetune_epochs",
                   f"is an SNF key; must be 0 for prune.method={self.method} (use schedule.epochs)",
                   self.finetune_epochs)


@dataclass(frozen=True)
class LogConfig(_Section):
    _prefix = "log."
    wandb: str = key("auto", "auto (WANDB_MODE, else offline) | offline | online | disabled",
                     identity=False, choices=("auto", "offline", "online", "disabled"))
    project: str = key("prunerepro", "W&B project", identity=False)
    group: str = key("", "W&B group (the table a run belongs to)", identity=False)
    every: int = key(50, "print a progress line every N training steps when stderr is not a terminal",
                     identity=False)

    def validate(self):
        check(self.every >= 1, "log.every", "must be >= 1", self.every)


EXPORT_FORMATS = ("torchscript", "onnx")  # what repro.export writes; "all" = both


@dataclass(frozen=True)
class ExportConfig(_Section):
    _prefix = "export."
    formats: tuple[str, ...] = key((), "after training, also export the delivered model (repro.export: "
                                       "BN folded, checked equal, timed) as torchscript | onnx | all, "
                                       "comma-separated, into RUN_DIR/export (onnx needs the 'export' extra); "
                                       "empty = no export", identity=False)

    def validate(self):
        for f in self.formats:
            check(f in (*EXPORT_FORMATS, "all"), "export.formats",
                  f"each must be one of {' | '.join(EXPORT_FORMATS)} | all", self.formats)


@dataclass(frozen=True)
class Config(_Section):
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    log: LogConfig = field(default_factory=LogConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    seed: int = key(0, "seed for weights, data order and augmentation")
    device: str = key("auto", "auto | cpu | cuda", choices=("auto", "cpu", "cuda"))
    deterministic: bool = key(False, "deterministic kernels (bit-exact resume on CPU)")
    dtype: str = key("float32", "training arithmetic on CPU: float32, or float64 for numerical checks (e.g. that a "
                                "DDP run equals one process up to rounding, tests/test_train_ddp.py; several times "
                                "slower). The delivered model.pt is float32 either way", choices=("float32", "float64"),
                     hashed_at_default=False)
    amp: bool = key(True, "bf16/fp16 autocast on CUDA (ignored on CPU)")
    channels_last: bool = key(True, "channels_last memory format on CUDA (ignored on CPU)")
    sync_bn: bool = key(False, "synchronise BatchNorm statistics over ranks (the papers used per-GPU BN; "
                               "on: a DDP run equals one process with the same global batch)")
    allow_precision_switch: bool = key(False, "resume a checkpoint trained in another AMP dtype (bf16 <-> fp16 "
                                              "after a requeue onto another GPU type); off: refused in one line; "
                                              "on: the switch is recorded in env.json", identity=False)
    dist_timeout_s: int = key(600, "seconds a collective waits for the other ranks before the run ends with an "
                                   "error: a rank that died otherwise idles the whole job this long",
                              identity=False)
    compile: str = key("off", "torch.compile the training step (forward and backward; evaluation and the delivered "
                              "model stay eager): off | inductor | aot_eager. Not part of the run's identity: "
                              "checkpoints of compiled and eager attempts are interchangeable, and env.json's "
                              "attempts record which one ran. Off until measured (python -m repro.bench.gpu)",
                       identity=False, choices=COMPILE_BACKENDS)
    stop_check_every: int = key(0, "training steps between the ranks' agreements on stop signals and divergence; "
                                   "0 = auto: 1 on CPU, 20 on CUDA (each check waits for the GPU)", identity=False)

    def validate(self):
        from repro.models import check_resolution
        check(self.seed >= 0, "seed", "must be >= 0", self.seed)
        check(self.dtype == "float32" or self.device == "cpu", "dtype", "float64 runs on the CPU only: set device=cpu",
              self.dtype)
        check(self.dist_timeout_s >= 1, "dist_timeout_s", "must be >= 1", self.dist_timeout_s)
        check(self.stop_check_every >= 0, "stop_check_every", "must be >= 0 (0 = auto)", self.stop_check_every)
        if self.schedule.epochs == 0:  # an evaluation-only run: nothing to train, something to evaluate
            check(self.prune.method == "none" and self.prune.init_from != "", "schedule.epochs",
                  "0 only evaluates a starting model: needs prune.method=none and prune.init_from", 0)
        try:
            check_resolution(self.model.arch, self.data.resolution)
        except ValueError as e:
            raise ConfigError(f"model.arch / data.name: {e}") from None

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_overrides(cls, overrides: Iterable[str] | Mapping[str, Any] = ()) -> "Config":
        """``["preset=imagenet", "optim.lr=0.05", ...]`` (or a {dotted: value} mapping) -> Config.

        The preset (``auto`` unless given: picked by the arch's family) is applied first, then every
        override in order, so an explicit key always wins over the preset.
        """
        pairs = _split_overrides(overrides)
        preset = "auto"
        rest = []
        for k, v in pairs:
            if k == "preset":
                preset = v
            else:
                rest.append((k, v))
        arch = ModelConfig().arch
        for k, v in rest:
            if k == "model.arch":
                arch = v
        if preset == "auto":
            from repro.models import ARCHS
            preset = ARCHS[arch].family if arch in ARCHS else "cifar"
        if preset not in PRESETS:
            raise ConfigError(f"preset: must be one of auto | {' | '.join(PRESETS)}, got {preset!r}")
        values = dict(PRESETS[preset])
        values.update(rest)
        return cls.from_flat(values)

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any]) -> "Config":
        """{dotted key: value} -> Config; string values are parsed to the key's type."""
        known = {k: (tp, f) for k, tp, f in iter_keys(cls)}
        nested: dict[str, dict] = {}
        top: dict[str, Any] = {}
        for k, v in flat.items():
            if k not in known:
                raise ConfigError(f"unknown key {k!r}{_suggest(k, known)}; see --help for every key")
            tp = known[k][0]
            if isinstance(v, str) and tp is not str:
                v = parse_value(k, tp, v)
            if "." in k:
                sec, name = k.split(".", 1)
                nested.setdefault(sec, {})[name] = v
            else:
                top[k] = v
        sections = {}
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(f.default_factory if f.default_factory is not dataclasses.MISSING else None):
                sections[f.name] = f.default_factory(**nested.get(f.name, {}))
        return cls(**sections, **top)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Config":
        """Nested dict (config.json) -> Config. Unknown keys are errors; missing keys take defaults."""
        flat = {}
        for k, v in data.items():
            if isinstance(v, Mapping):
                for k2, v2 in v.items():
                    flat[f"{k}.{k2}"] = v2
            else:
                flat[k] = v
        return cls.from_flat(flat)

    @classmethod
    def from_json(cls, text: str) -> "Config":
        return cls.from_dict(json.loads(text))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def replace(self, overrides: Iterable[str] | Mapping[str, Any]) -> "Config":
        """A copy with dotted overrides applied (no preset): ``cfg.replace({"seed": 1})``."""
        flat = flatten(self)
        flat.update(_split_overrides(overrides))
        return Config.from_flat(flat)

    # ------------------------------------------------------------------ derived values
    @property
    def train_epochs(self) -> int:
        """Epochs the trainer runs: SNF fine-tunes for prune.finetune_epochs, others schedule.epochs."""
        return self.prune.finetune_epochs if self.prune.method == "snf" else self.schedule.epochs

    @property
    def lr_scale(self) -> float:
        return self.prune.init_lr_scale if self.prune.init_from else 1.0

    def lr_at(self, epoch: int) -> float:
        return self.schedule.lr_at(epoch, self.optim.lr, self.lr_scale)


def _split_overrides(overrides) -> list[tuple[str, Any]]:
    if isinstance(overrides, Mapping):
        return list(overrides.items())
    pairs = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (e.g. optim.lr=0.05)")
        k, v = item.split("=", 1)
        pairs.append((k.strip(), v))
    return pairs


def _suggest(name: str, known) -> str:
    import difflib
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
