"""Hard pruning: the exactness rule that turns SFP's soft masks into the delivered model.

SFP zeroes only a pruned filter's conv weights, so in eval mode its channel still carries
``BN(0) = beta - gamma * running_mean / sqrt(running_var + eps)``, a per-channel constant that
is generally not zero (the official converter kept it for block outputs and dropped it elsewhere,
which is not exact). Rule used here: zero the pruned filters' conv weights AND the following
BN's gamma and beta. Then the channel is exactly 0 in eval and in train mode, whatever the
running statistics, so removing it physically (``compact.py``) changes nothing. The accuracy of a
run is measured on this model (or its compact twin, which computes the same function).
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from ..models import arch_info
from ..models.graph import prunable_convs
from .sfp import MaskError, unwrap


def check_kept(arch: str, kept_indices: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Validate a kept-index table against ``arch`` and complete it.

    Returns every prunable conv's sorted, unique CPU LongTensor of kept filters; convs missing
    from ``kept_indices`` keep all their filters. Raises ``MaskError`` with one line otherwise.
    """
    arch_info(arch)
    layers = prunable_convs(arch)
    unknown = set(kept_indices) - {layer.name for layer in layers}
    if unknown:
        raise MaskError(f"kept indices name convs that {arch} does not prune: {sorted(unknown)[:3]}")
    out = {}
    for layer in layers:
        idx = kept_indices.get(layer.name)
        if idx is None:
            out[layer.name] = torch.arange(layer.out_channels)
            continue
        idx = torch.as_tensor(idx).cpu()
        if idx.dim() != 1 or idx.dtype not in (torch.int64, torch.int32) or idx.numel() == 0:
            raise MaskError(f"kept indices of '{layer.name}' must be a non-empty 1-D integer tensor")
        idx = idx.long()
        if int(idx.min()) < 0 or int(idx.max()) >= layer.out_channels:
            raise MaskError(f"kept indices of '{layer.name}' fall outside 0..{layer.out_channels - 1}")
        uniq = torch.unique(idx)  # sorted
        if uniq.numel() != idx.numel():
            raise MaskError(f"kept indices of '{layer.name}' repeat a filter")
        out[layer.name] = uniq
    return out


@torch.no_grad()
def hard_prune(model: nn.Module, arch: str, kept_indices: Mapping[str, torch.Tensor]) -> nn.Module:
    """Apply the exactness rule in place (see the module docstring) and return the model."""
    kept = check_kept(arch, kept_indices)
    model = unwrap(model)
    modules = dict(model.named_modules())
    for layer in prunable_convs(arch):
        conv, bn = modules.get(layer.name), modules.get(layer.bn)
        if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d) \
                or conv.out_channels != layer.out_channels or bn.num_features != layer.out_channels:
            raise MaskError(f"model does not look like a dense {arch} at '{layer.name}'")
        if kept[layer.name].numel() == layer.out_channels:
            continue
        pruned = torch.ones(layer.out_channels, dtype=torch.bool)
        pruned[kept[layer.name]] = False
        pruned = pruned.to(conv.weight.device)
        conv.weight[pruned] = 0.0
        if conv.bias is not None:
            conv.bias[pruned] = 0.0
        bn.weight[pruned] = 0.0
        bn.bias[pruned] = 0.0
    return model
