"""Soft filter pruning (He et al., IJCAI 2018): per-layer masks recomputed from current weights.

The trainer calls ``update()`` once before the first epoch and at the end of every epoch. Only
the conv weights of the pruned filters are zeroed: gradients, momentum, weight decay and the
following BatchNorm are left alone, so a zeroed filter keeps receiving gradient (train-mode BN
normalises its all-zero output by sqrt(0 + eps)) and may regrow and win its place back at the next
ranking. That is what makes it "soft". Hard pruning (``hard.py``) happens once, after training.

A property of the method (and of the official code), not of this implementation: a zeroed filter
whose BN output goes straight into a ReLU (the stem and every inner conv) outputs exactly
ReLU(beta). While beta == 0 -- its init value -- that is the ReLU's kink, whose derivative PyTorch
takes as 0, so neither the filter nor beta gets any gradient. Filters zeroed by the update before
the first epoch (no momentum yet) therefore stay zero for good; later ones move again through
their momentum buffer or a non-zero beta. Block-output convs feed the residual add first and do
get gradient, amplified by 1/sqrt(eps) through the zero-variance BN. tests/test_sfp.py pins both.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from ..models import arch_info
from ..models.graph import prunable_convs
from ..models.spec import ChannelSpec, kept_filters
from .criteria import get_criterion, select_kept


class MaskError(ValueError):
    """A mask set or a model that does not fit the architecture it is used with."""


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DDP / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


def prunable_modules(model: nn.Module, arch: str) -> dict[str, nn.Conv2d]:
    """The dense model's prunable convs by name, checked against the arch's graph."""
    arch_info(arch)  # UnknownArchError for a name the registry does not know
    modules = dict(unwrap(model).named_modules())
    found = {}
    for layer in prunable_convs(arch):
        conv = modules.get(layer.name)
        if not isinstance(conv, nn.Conv2d) or conv.out_channels != layer.out_channels:
            raise MaskError(f"model does not look like a dense {arch}: conv '{layer.name}' "
                            f"is missing or does not have {layer.out_channels} filters")
        found[layer.name] = conv
    return found


class SoftFilterPruner:
    """Holds one boolean keep-mask per prunable conv; see the module docstring for the schedule.

    ``rate`` is the fraction of filters zeroed in every layer (``int(n * rate)`` of ``n``);
    ``criterion`` is a key of ``CRITERIA``; ``seed`` only matters for the random criterion, whose
    generator state is part of ``state_dict()`` so a resumed run draws the same masks.
    """

    def __init__(self, model: nn.Module, arch: str, rate: float, criterion: str = "l2", *, seed: int = 0):
        self.arch = arch
        self.rate = float(rate)
        self.criterion = criterion
        self._score = get_criterion(criterion)
        self.convs = prunable_modules(model, arch)
        # kept_filters validates the rate (0 <= rate < 1) with a clear message.
        self.kept = {name: kept_filters(conv.out_channels, self.rate) for name, conv in self.convs.items()}
        self.generator = torch.Generator().manual_seed(seed)
        # Before the first update nothing is pruned; masks live on the weights' device.
        self.masks: dict[str, torch.Tensor] = {
            name: torch.ones(conv.out_channels, dtype=torch.bool, device=conv.weight.device)
            for name, conv in self.convs.items()}

    @torch.no_grad()
    def update(self) -> None:
        """Rank every layer's filters by the criterion on the CURRENT weights, then zero the losers."""
        for name, conv in self.convs.items():
            keep = select_kept(self._score(conv.weight, self.generator), self.kept[name])
            mask = torch.zeros(conv.out_channels, dtype=torch.bool)
            mask[keep] = True
            self.masks[name] = mask.to(conv.weight.device)
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        """Zero the pruned filters' conv weights with the current masks (nothing else is touched)."""
        for name, conv in self.convs.items():
            mask = self.masks[name].to(conv.weight.device)
            conv.weight.masked_fill_(~mask.view(-1, 1, 1, 1), 0.0)

    def kept_indices(self) -> dict[str, torch.Tensor]:
        """Sorted CPU indices of the kept filters of every prunable conv."""
        return {name: mask.cpu().nonzero().flatten() for name, mask in self.masks.items()}

    def spec(self) -> ChannelSpec:
        """The channel spec of the compact model (full-width residual streams)."""
        return ChannelSpec(convs={name: int(mask.sum()) for name, mask in self.masks.items()
                                  if int(mask.sum()) < mask.numel()})

    def state_dict(self) -> dict:
        return {"arch": self.arch, "rate": self.rate, "criterion": self.criterion,
                "masks": {name: mask.detach().cpu().clone() for name, mask in self.masks.items()},
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore masks (bit-exact) and the generator; refuse a mask set made for another model."""
        for key, mine in (("arch", self.arch), ("rate", self.rate), ("criterion", self.criterion)):
            if key in state and state[key] != mine:
                raise MaskError(f"checkpoint masks were made with {key}={state[key]!r}, this pruner has {mine!r}")
        masks = state.get("masks")
        if not isinstance(masks, Mapping):
            raise MaskError("checkpoint has no 'masks' table")
        missing, unknown = set(self.masks) - set(masks), set(masks) - set(self.masks)
        if missing or unknown:
            raise MaskError(f"checkpoint masks do not match {self.arch}: missing {sorted(missing)[:3]}, "
                            f"unknown {sorted(unknown)[:3]}")
        loaded = {}
        for name, mask in masks.items():
            n = self.convs[name].out_channels
            if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (n,):
                shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
                raise MaskError(f"checkpoint mask '{name}' should be a bool tensor of shape ({n},), got {shape}")
            # All-true = saved before the first update; otherwise exactly the rate's kept count.
            if int(mask.sum()) not in (n, self.kept[name]):
                raise MaskError(f"checkpoint mask '{name}' keeps {int(mask.sum())} of {n} filters; "
                                f"rate {self.rate} keeps {self.kept[name]}")
            loaded[name] = mask.clone().to(self.convs[name].weight.device)
        self.masks = loaded
        if "generator" in state:
            self.generator.set_state(state["generator"])
