"""SNF search variants: how the per-layer kept counts are chosen under the FLOPs target.

Part of "SNF, abstract-level reimplementation" (not the authors' code; docs/papers.md §7). The abstract
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
``snf_prune`` (the entry point the trainer, the digits demo and the harness call) runs a variant,
prunes by the criterion and builds the compact model.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from ..choices import SNF_VARIANTS
from ..flops import count
from ..models import arch_info
from ..models.graph import prunable_convs
from ..models.spec import ChannelSpec
from .compact import build_compact
from .joint import measure_cuts
from .sensitivity import Sensitivity, measure
from .sfp import unwrap
from .snf import (DEFAULT_GRID, DEFAULT_TOLERANCE, check_target, grid_counts, kept_indices, search, spec_weights,
                  uniform_search)


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
    sens = measure(ctx.model, ctx.arch, ctx.need_batches(), grid_counts(ctx.arch, ctx.grid), criterion=ctx.criterion,
                   cache_dir=ctx.cache_dir, progress=ctx.progress, bn=bn)
    ctx.info.update({"sensitivity_wall_s": round(sens.wall_s, 3), "sensitivity_cached": sens.cached,
                     "sensitivity_key": sens.key, "heldout_images": sens.num_images,
                     "heldout_base_loss": sens.base_loss, "heldout_base_top1": sens.base_top1,
                     "bn_recalibration": sens.bn_recalibration})
    return sens


def _search(ctx: Context, rise, **kw):
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
DEFAULT_VARIANT = SNF_VARIANTS[0]  # rise; why: repro/choices.py


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown SNF variant '{name}'; known: {', '.join(VARIANTS)}") from None


def snf_prune(model: nn.Module, arch: str, heldout_batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None,
              target_percent: float, *, grid: Sequence[float] = DEFAULT_GRID, criterion: str = "l2",
              uniform: bool = False, resolution: int | None = None, tolerance: float = DEFAULT_TOLERANCE,
              cache_dir=None, progress: bool | None = None, generator: torch.Generator | None = None,
              variant: str | None = None) -> tuple[nn.Module, ChannelSpec, dict]:
    """Search, prune and build the compact model (no fine-tuning; that is the trainer's part).

    ``model``: the trained dense ``arch`` (not modified). ``heldout_batches``: ``(images,
    labels)`` pairs NOT used for training (ignored when ``uniform`` or by data-free variants).
    ``target_percent``: conv-MACs reduction in percent. ``uniform=True`` gives the uniform-rate
    baseline at the same FLOPs (``uniform_search``); otherwise the search ``variant`` (a key of
    ``VARIANTS``; None = ``DEFAULT_VARIANT``).
    Returns ``(compact_model, spec, report)``; ``report`` is JSON-ready and carries ``label``.
    The compact model's conv MACs are counted with ``repro.flops.count`` and must equal the
    searched value (AssertionError otherwise).
    """
    resolution = resolution or arch_info(arch).resolution
    check_target(target_percent)
    model = unwrap(model)
    chosen = None if uniform else get_variant(variant or DEFAULT_VARIANT)
    info: dict = {}
    if chosen is None:
        result = uniform_search(arch, target_percent, resolution=resolution)
    else:
        batches = None if heldout_batches is None else list(heldout_batches)
        if chosen.needs_data and not batches:
            raise ValueError("SNF needs held-out batches for its sensitivity curves")
        ctx = Context(model, arch, batches, target_percent, tuple(grid), criterion, resolution, tolerance,
                      cache_dir, progress)
        start = time.perf_counter()
        result = chosen.run(ctx)
        info = dict(ctx.info, variant=chosen.name, variant_summary=chosen.summary,
                    variant_wall_s=round(time.perf_counter() - start, 3))
    indices = kept_indices(model, arch, result.kept, criterion, generator)
    compact = build_compact(model, arch, indices)
    counted = count(compact, resolution).conv_macs
    if counted != result.conv_macs:
        raise AssertionError(f"compact model counts {counted} conv MACs, the search promised {result.conv_macs}")
    report = result.to_json()
    report.update({"arch": arch, "criterion": criterion, "grid": list(grid) if not uniform else None,
                   "compact_conv_macs": counted, **info})
    return compact, compact.spec, report
