"""Run configuration: every key declared once, with its type, default and help.

SKELETON OWNED BY THE TRAINING-ENGINE WORK: the section/field names below are the contract the
data, pruning, launch and table code read. Extend (new keys, validation, overrides, hashing),
but do not rename a field without updating every reader.
"""
from __future__ import annotations

from dataclasses import dataclass, field


def key(default, help: str, **kw):
    """A config field with its help text (read by --help and by the docs)."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable defaults are not allowed; use a tuple")
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class ModelConfig:
    arch: str = key("resnet20", "one of repro.models.ARCHS")
    num_classes: int = key(0, "head size; 0 = the data set's number of classes")


@dataclass(frozen=True)
class DataConfig:
    name: str = key("digits", "cifar10 | imagenet | digits")
    path: str = key("", "raw data set in its real on-disk layout (CIFAR-10 python pickles dir; "
                        "ImageNet root holding train/ and val/); unused for digits")
    ffcv_dir: str = key("", "folder with train.beton and val.beton (python -m repro.data.write ...)")
    loader: str = key("ffcv", "ffcv | plain (torch DataLoader over the raw layout)")
    batch_size: int = key(128, "global batch size, split evenly over ranks")
    workers: int = key(2, "loader worker threads/processes per rank")
    train_res: int = key(224, "ImageNet training crop (random-resized crop); ignored for 32x32 sets")
    val_res: int = key(224, "ImageNet validation centre crop; ignored for 32x32 sets")
    val_resize: int = key(256, "ImageNet validation resize before the centre crop (256 for 224)")
    in_memory: bool = key(True, "FFCV: load the whole .beton into RAM")


@dataclass(frozen=True)
class OptimConfig:
    lr: float = key(0.1, "peak learning rate for the global batch")
    momentum: float = key(0.9, "SGD momentum")
    nesterov: bool = key(True, "Nesterov momentum (both papers)")
    weight_decay: float = key(5e-4, "L2 weight decay")


@dataclass(frozen=True)
class ScheduleConfig:
    epochs: int = key(200, "training epochs (SNF: fine-tuning epochs are prune.finetune_epochs)")
    warmup_epochs: int = key(1, "epochs at warmup_lr before the peak lr (CIFAR recipe: 1)")
    warmup_lr: float = key(0.01, "learning rate during warm-up")
    milestones: tuple = key((60, 120, 160), "epochs at which the lr is multiplied by gamma")
    gamma: float = key(0.2, "lr multiplier at each milestone")


@dataclass(frozen=True)
class PruneConfig:
    method: str = key("none", "none | sfp | snf")
    rate: float = key(0.0, "SFP: fraction of filters zeroed per layer, in [0, 1)")
    criterion: str = key("l2", "filter importance: l2 | l1 | random")
    init_from: str = key("", "checkpoint or run folder of a trained baseline to start from "
                             "('' = from scratch); SNF requires one")
    flops_reduction: float = key(0.0, "SNF: target conv-MACs reduction in percent")
    finetune_epochs: int = key(0, "SNF: fine-tuning epochs after pruning")


@dataclass(frozen=True)
class LogConfig:
    wandb: str = key("auto", "auto (WANDB_MODE, else offline) | offline | online | disabled")
    project: str = key("prunerepro", "W&B project")
    group: str = key("", "W&B group (the table a run belongs to)")


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    log: LogConfig = field(default_factory=LogConfig)
    seed: int = key(0, "seed for weights, data order and augmentation")
    device: str = key("auto", "auto | cpu | cuda")
    deterministic: bool = key(False, "deterministic kernels (bit-exact resume on CPU)")
    amp: bool = key(True, "bf16/fp16 autocast on CUDA (ignored on CPU)")
    channels_last: bool = key(True, "channels_last memory format on CUDA (ignored on CPU)")
