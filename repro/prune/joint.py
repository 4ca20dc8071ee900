"""Held-out loss of JOINT cuts: several convs cut at once (SNF search variants, not the default curves).

Part of "SNF, abstract-level reimplementation" (not the authors' code; docs/papers.md §7).

``sensitivity.measure`` cuts one conv at a time, so a search built on it assumes the damages of
single cuts add up. ``measure_cuts`` measures given combinations directly: each cut is a table
``{conv: kept}`` applied together by the hard-prune rule (the same BN-output masks as
``sensitivity.measure``, top-``kept`` filters by the criterion). The machinery is the same: block
inputs are computed once and carried forward, a cut starts at the first block it touches, and the
cuts that start there run batched as copies of that block's input, each with its own masks.
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
from .sensitivity import BN_MODES, _BatchStats, _run, _segments, chunks, default_max_batch
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
    if bn not in BN_MODES:
        raise ValueError(f"bn must be one of {sorted(BN_MODES)}, got {bn!r}")
    model = unwrap(model)
    convs = prunable_modules(model, arch)
    layers = {c.name: c for c in prunable_convs(arch)}
    for cut in cuts:
        for name, k in cut.items():
            if name not in layers or not 1 <= int(k) <= layers[name].out_channels:
                raise ValueError(f"bad cut {name}={k} for {arch}")
    device = next(model.parameters()).device
    held = [(x.to(device), y.to(device)) for x, y in batches]
    n_images = sum(int(y.numel()) for _, y in held)
    max_batch = max_batch or default_max_batch(device)
    score = get_criterion(criterion)
    ranking = {n: torch.sort(score(c.weight).float().cpu(), descending=True, stable=True).indices
               for n, c in convs.items()}

    was_training = model.training
    model.eval()
    stats = _BatchStats(model) if bn == "batch" else None
    try:
        segs = _segments(model)
        seg_index = {name: i for i, (name, _) in enumerate(segs)}
        start = [min((seg_index[layers[n].block or "stem"] for n in cut), default=len(segs) - 1) for cut in cuts]
        loss = [0.0] * len(cuts)
        hits = [0.0] * len(cuts)
        base_loss = base_hit = 0.0
        acts = [x for x, _ in held]
        for si in range(len(segs)):
            todo = [i for i, s in enumerate(start) if s == si]
            for (_, y), a in zip(held, acts):
                for a_i, y_i, items in chunks(a, y, len(todo), stats is not None, max_batch):
                    chunk = todo[items.start:items.stop]
                    ce, hit = _forward_cuts(model, segs, si, a_i, y_i, [cuts[i] for i in chunk],
                                            layers, ranking, stats, device)
                    for j, i in enumerate(chunk):
                        loss[i] += ce[j]
                        hits[i] += hit[j]
            if si == len(segs) - 1:
                for (_, y), a in zip(held, acts):  # the head on the uncut model's features
                    logits = _run(segs, si, a)
                    base_loss += F.cross_entropy(logits, y, reduction="sum").item()
                    base_hit += (logits.argmax(1) == y).sum().item()
            else:
                acts = [segs[si][1](a) for a in acts]
    finally:
        if stats is not None:
            stats.remove()
        model.train(was_training)
    return CutScores(base_loss / n_images, 100.0 * base_hit / n_images,
                     [v / n_images for v in loss], [100.0 * v / n_images for v in hits])


def _forward_cuts(model, segs, si, a, y, cuts, layers, ranking, stats, device):
    """Summed cross-entropy and hits of each cut on one slice ``a`` (the input of segment ``si``)."""
    g, n = len(cuts), int(a.shape[0])
    handles = []
    for name in sorted({c for cut in cuts for c in cut}):
        mask = torch.ones(g, layers[name].out_channels, device=device)
        for j, cut in enumerate(cuts):
            if name in cut:
                mask[j] = 0.0
                mask[j, ranking[name][:int(cut[name])].to(device)] = 1.0
        m = mask.repeat_interleave(n, dim=0)[:, :, None, None]
        handles.append(model.get_submodule(layers[name].bn).register_forward_hook(lambda _m, _i, out, m=m: out * m))
    if stats is not None:
        stats.copies = g
    try:
        logits = _run(segs, si, a.repeat(g, *([1] * (a.dim() - 1))))
    finally:
        for h in handles:
            h.remove()
        if stats is not None:
            stats.copies = 1
    yy = y.repeat(g)
    ce = F.cross_entropy(logits, yy, reduction="none").view(g, n).sum(1).double().cpu().tolist()
    hit = (logits.argmax(1) == yy).view(g, n).sum(1).double().cpu().tolist()
    return ce, hit
