"""Held-out loss of JOINT cuts: several convs cut at once (SNF search variants, not the default curves).

Part of "SNF, abstract-level reimplementation" (not the authors' code; docs/papers.md §7).

``sensitivity.measure`` cuts one conv at a time, so a search built on it assumes the damages of
single cuts add up. ``measure_cuts`` measures given combinations directly: each cut is a table
``{conv: kept}`` applied together by the hard-prune rule (the same BN-output masks as
``sensitivity.measure``, top-``kept`` filters by the criterion), through the same forward
(``cut_forward``): block inputs are computed once and carried forward, a cut starts at the first
block it touches, and the cuts that start there run batched as copies of that block's input, each
with its own masks.
Not cached: the callers (search variants) measure few combinations, or new ones each step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..models.graph import prunable_convs
from .criteria import get_criterion
from .cut_forward import Chain, check_bn_mode, copy_sums, count_images, cut_chain, ranking, run_from
from .sfp import prunable_modules, unwrap


@dataclass
class CutScores:
    base_loss: float            # held-out mean cross-entropy of the model as given
    base_top1: float            # held-out top-1 (%)
    loss: list[float]           # per cut, same order as given
    top1: list[float]

    @property
    def rise(self) -> list[float]:
        return [v - self.base_loss for v in self.loss]


@torch.no_grad()
def measure_cuts(model: nn.Module, arch: str, batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
                 cuts: Sequence[Mapping[str, int]], *, criterion: str = "l2", bn: str = "eval",
                 max_batch: int | None = None) -> CutScores:
    """Held-out loss and top-1 of ``model`` under each cut (see the module docstring)."""
    check_bn_mode(bn)
    model = unwrap(model)
    convs = prunable_modules(model, arch)
    layers = {c.name: c for c in prunable_convs(arch)}
    for cut in cuts:
        for name, k in cut.items():
            if name not in layers or not 1 <= int(k) <= layers[name].out_channels:
                raise ValueError(f"bad cut {name}={k} for {arch}")
    device = next(model.parameters()).device
    held = [(x.to(device), y.to(device)) for x, y in batches]
    n_images = count_images(held)
    score = get_criterion(criterion)
    orders = {n: ranking(score, c.weight) for n, c in convs.items()}
    with cut_chain(model, bn, max_batch) as chain:
        seg_index = {name: i for i, (name, _) in enumerate(chain.segs)}
        start = [min((seg_index[layers[n].block or "stem"] for n in cut), default=len(chain.segs) - 1) for cut in cuts]
        loss, hits, base_loss, base_hit = _sweep(chain, held, cuts, start, layers, orders)
    return CutScores(base_loss / n_images, 100.0 * base_hit / n_images,
                     [v / n_images for v in loss], [100.0 * v / n_images for v in hits])


def _sweep(chain: Chain, held: Sequence, cuts: Sequence[Mapping[str, int]], start: Sequence[int],
           layers: Mapping, orders: Mapping[str, torch.Tensor]) -> tuple[list[float], list[float], float, float]:
    """Summed cross-entropy and hits of each cut and of the uncut model: the segments in order, each
    running the cuts that start there, the block inputs carried forward once."""
    loss = [0.0] * len(cuts)
    hits = [0.0] * len(cuts)
    base_loss = base_hit = 0.0
    acts = [x for x, _ in held]
    last = len(chain.segs) - 1
    for si in range(len(chain.segs)):
        todo = [i for i, s in enumerate(start) if s == si]
        for (_, y), a in zip(held, acts):
            for a_i, y_i, items in chain.chunks(a, y, len(todo)):
                chunk = todo[items.start:items.stop]
                group = [cuts[i] for i in chunk]
                logits = chain.forward_copies(si, a_i, len(group), _cut_masks(group, layers, orders, a_i.device))
                ce, hit = (t.tolist() for t in copy_sums(logits, y_i, len(group)))
                for j, i in enumerate(chunk):
                    loss[i] += ce[j]
                    hits[i] += hit[j]
        if si == last:
            for (_, y), a in zip(held, acts):  # the head on the uncut model's features
                logits = run_from(chain.segs, si, a)
                base_loss += F.cross_entropy(logits, y, reduction="sum").item()
                base_hit += (logits.argmax(1) == y).sum().item()
        else:
            acts = [chain.segs[si][1](a) for a in acts]
    return loss, hits, base_loss, base_hit


def _cut_masks(cuts: Sequence[Mapping[str, int]], layers: Mapping, orders: Mapping[str, torch.Tensor],
               device: torch.device) -> dict[str, torch.Tensor]:
    """Per BatchNorm that any of ``cuts`` touches, one channel mask per cut (all ones where it is not cut)."""
    masks = {}
    for name in sorted({c for cut in cuts for c in cut}):
        mask = torch.ones(len(cuts), layers[name].out_channels, device=device)
        for j, cut in enumerate(cuts):
            if name in cut:
                mask[j] = 0.0
                mask[j, orders[name][:int(cut[name])].to(device)] = 1.0
        masks[layers[name].bn] = mask
    return masks
