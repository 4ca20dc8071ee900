"""SNF search variants: how the per-layer kept counts are chosen under the FLOPs target.

Part of "SNF, abstract-level reimplementation" (not the authors' code; papers.md §2). The abstract
fixes the family (search the number of filters per layer under a FLOPs target, prune by a
criterion, fine-tune), not the search; these are the searches compared by
``python -m repro.bench.snf_search`` (results: docs/snf_search.md). Every variant ends in the exact
knapsack of ``snf.search`` (reduction in ``[target, target + tolerance]``) and differs in what the
knapsack minimises:

``rise``       held-out loss rise of one conv cut alone, eval-mode BN (the original SNF curves).
``rise-bn``    the same with BN statistics re-estimated after each cut (``bn="batch"``).
``stage``      curves measured jointly: all inner convs (or all block-output convs) of a stage cut
               together to each keep fraction, BN re-estimated; the joint rise is shared equally
               among the group's convs, so cutting a whole group reproduces its measured damage.
``weights``    ``rise-bn``, constrained to keep at least the conv weights of the uniform-rate model
               at the same target (a Lagrange multiplier found by bisection): the search may
               re-allocate filters but not trade capacity for a smaller immediate loss.

Each ``run`` returns the ``SearchResult`` and a JSON-ready ``info`` dict for the report.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from ..models.graph import prunable_convs
from .joint import measure_cuts
from .sensitivity import Sensitivity, measure


@dataclass
class Context:
    model: nn.Module
    arch: str
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]] | None
    target: float
    grid: Sequence[float]
    criterion: str = "l2"
    resolution: int | None = None
    tolerance: float = 0.10
    cache_dir: object = None
    progress: bool | None = None
    info: dict = field(default_factory=dict)

    def need_batches(self):
        if not self.batches:
            raise ValueError("this SNF variant needs held-out batches for its sensitivity curves")
        return self.batches


@dataclass(frozen=True)
class Variant:
    name: str
    summary: str
    run: Callable[[Context], object]   # -> snf.SearchResult; fills ctx.info
    needs_data: bool = True


def _curves(ctx: Context, bn: str) -> Sensitivity:
    from .snf import grid_counts
    sens = measure(ctx.model, ctx.arch, ctx.need_batches(), grid_counts(ctx.arch, ctx.grid), criterion=ctx.criterion,
                   cache_dir=ctx.cache_dir, progress=ctx.progress, bn=bn)
    ctx.info.update({"sensitivity_wall_s": round(sens.wall_s, 3), "sensitivity_cached": sens.cached,
                     "sensitivity_key": sens.key, "heldout_images": sens.num_images,
                     "heldout_base_loss": sens.base_loss, "heldout_base_top1": sens.base_top1,
                     "bn_recalibration": sens.bn_recalibration})
    return sens


def _search(ctx: Context, rise, **kw):
    from .snf import search
    return search(ctx.arch, rise, ctx.target, resolution=ctx.resolution, tolerance=ctx.tolerance, **kw)


def run_rise(ctx: Context):
    return _search(ctx, _curves(ctx, "eval").rise)


def run_rise_bn(ctx: Context):
    return _search(ctx, _curves(ctx, "batch").rise)


def stage_groups(arch: str) -> dict[str, list]:
    """Prunable convs by (stage, role): ``layer2/inner`` = every block's inner convs of layer2,
    ``layer2/output`` = its block-output convs; the stem joins ``layer1/output`` (it writes that
    stream in the CIFAR nets)."""
    groups: dict[str, list] = {}
    for c in prunable_convs(arch):
        stage = c.block.split(".")[0] if c.block else "layer1"
        groups.setdefault(f"{stage}/{'inner' if c.role == 'inner' else 'output'}", []).append(c)
    return groups


def run_stage(ctx: Context):
    import time
    start = time.perf_counter()
    groups = stage_groups(ctx.arch)
    fractions = sorted(set(ctx.grid) - {1.0})
    cuts, keys = [], []
    for g, convs in groups.items():
        for f in fractions:
            cuts.append({c.name: max(1, round(c.out_channels * f)) for c in convs})
            keys.append((g, f))
    scores = measure_cuts(ctx.model, ctx.arch, ctx.need_batches(), cuts, criterion=ctx.criterion, bn="batch")
    rise: dict[str, dict[int, float]] = {}
    for (g, _f), cut, r in zip(keys, cuts, scores.rise):
        for name, k in cut.items():
            if k < next(c.out_channels for c in groups[g] if c.name == name):
                rise.setdefault(name, {})[k] = r / len(groups[g])
    ctx.info.update({"sensitivity_wall_s": round(time.perf_counter() - start, 3), "sensitivity_cached": False,
                     "heldout_images": sum(int(y.numel()) for _, y in ctx.batches),
                     "heldout_base_loss": scores.base_loss, "heldout_base_top1": scores.base_top1,
                     "bn_recalibration": "per joint cut: BN statistics of each held-out batch",
                     "stage_rise": {f"{g}@{f}": r for (g, f), r in zip(keys, scores.rise)}})
    return _search(ctx, rise)


def run_weights(ctx: Context):
    from .snf import spec_weights, uniform_search
    rise = _curves(ctx, "batch").rise
    floor = spec_weights(ctx.arch, uniform_search(ctx.arch, ctx.target, resolution=ctx.resolution).kept,
                         ctx.resolution)
    result = _search(ctx, rise)
    bonus, steps = 0.0, 0

    def weights(r):
        return spec_weights(ctx.arch, r.kept, ctx.resolution)

    if weights(result) < floor:
        lo, hi = 0.0, 1e-3
        while True:  # grow until the floor is met (the dense-weights bonus always wins eventually)
            r = _search(ctx, rise, weight_bonus=hi)
            steps += 1
            if weights(r) >= floor:
                result, bonus = r, hi
                break
            lo, hi = hi, hi * 4
            if steps > 40:
                raise RuntimeError("weights floor not reached")  # cannot happen: uniform meets it
        for _ in range(10):  # smallest bonus (least distortion of the curves) that meets the floor
            mid = (lo + hi) / 2
            r = _search(ctx, rise, weight_bonus=mid)
            steps += 1
            if weights(r) >= floor:
                result, bonus, hi = r, mid, mid
            else:
                lo = mid
    ctx.info.update({"weights_floor": floor, "conv_weights": weights(result), "weight_bonus": bonus,
                     "weight_bonus_solves": steps})
    return result


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("rise", "per-conv held-out loss rise, eval-mode BN (original SNF curves)", run_rise),
    Variant("rise-bn", "per-conv held-out loss rise, BN re-estimated after each cut", run_rise_bn),
    Variant("stage", "joint per-(stage, role) curves, BN re-estimated, shared among the group's convs",
            run_stage),
    Variant("weights", "rise-bn under a floor: no fewer conv weights than the uniform model", run_weights),
)}
DEFAULT_VARIANT = "rise"


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown SNF variant '{name}'; known: {', '.join(VARIANTS)}") from None
