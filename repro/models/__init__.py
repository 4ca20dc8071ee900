"""Model registry: the eight ResNets of the two papers, dense or built to a channel spec.

``build_model("resnet56")`` gives the dense model; ``build_model("resnet56", spec=s)`` a compact
skeleton of the same class whose layers have the widths ``s`` names (weights are filled in by
``repro.prune.compact``). Importing this package has no side effects.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from torch import nn

from .cifar_resnet import CifarResNet
from .imagenet_resnet import Bottleneck, BasicBlock, ImageNetResNet
from .spec import DENSE, ChannelSpec, SpecError, kept_filters


class UnknownArchError(ValueError):
    pass


@dataclass(frozen=True)
class ArchInfo:
    name: str
    family: str          # "cifar" | "imagenet"
    num_classes: int     # default head size
    resolution: int      # the papers' input resolution
    make: Callable[..., nn.Module]


ARCHS: dict[str, ArchInfo] = {}
for _depth in (20, 32, 56, 110):
    ARCHS[f"resnet{_depth}"] = ArchInfo(f"resnet{_depth}", "cifar", 10, 32, partial(CifarResNet, _depth))
for _name, _block, _layers in (
    ("resnet18", BasicBlock, (2, 2, 2, 2)),
    ("resnet34", BasicBlock, (3, 4, 6, 3)),
    ("resnet50", Bottleneck, (3, 4, 6, 3)),
    ("resnet101", Bottleneck, (3, 4, 23, 3)),
):
    ARCHS[_name] = ArchInfo(_name, "imagenet", 1000, 224, partial(ImageNetResNet, _block, _layers))


def arch_info(name: str) -> ArchInfo:
    try:
        return ARCHS[name]
    except KeyError:
        raise UnknownArchError(f"unknown arch '{name}'; known: {', '.join(ARCHS)}") from None


def build_model(name: str, num_classes: int | None = None, spec: ChannelSpec = DENSE) -> nn.Module:
    info = arch_info(name)
    model = info.make(num_classes=num_classes or info.num_classes, spec=spec)
    model.arch = name
    return model


def check_resolution(name: str, resolution: int) -> None:
    """CIFAR ResNets are defined for 32x32 inputs; ImageNet ones need at least 32 px."""
    info = arch_info(name)
    if info.family == "cifar" and resolution != 32:
        raise ValueError(f"{name} is a CIFAR ResNet and takes 32x32 inputs, not {resolution}x{resolution}")
    if info.family == "imagenet" and resolution < 32:
        raise ValueError(f"{name} needs inputs of at least 32x32, got {resolution}x{resolution}")


__all__ = ["ARCHS", "ArchInfo", "ChannelSpec", "DENSE", "SpecError", "UnknownArchError", "arch_info",
           "build_model", "check_resolution", "kept_filters"]
