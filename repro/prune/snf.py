"""SNF, abstract-level reimplementation: search the number of filters per layer under a FLOPs target.

NOT the authors' code: SNF's paper body and code were not available; this implements the family
its abstract defines (docs/papers.md), and every report it produces says so (``LABEL``):

1. sensitivity curves of a trained model (``sensitivity.measure``): the held-out loss rise when
   one conv alone keeps ``k`` filters (L2 criterion), for a grid of ``k``;
2. an exact multiple-choice knapsack (``knapsack.solve``): one kept count per conv minimising the
   summed rise subject to ``(1 - target - tol) * base <= conv MACs <= (1 - target) * base``;
3. prune to those counts with the criterion and build the compact model with
   ``repro.prune.compact.build_compact`` (the one builder), verifying its counted conv MACs;
4. fine-tuning is the trainer's job (``prune.finetune_epochs`` at a tenth of the learning rate).

Coupling. The compact builder's default keeps every residual stream at full width and scatters a
block-output conv's kept channels into it, so no two convs share channel indices: each conv's
count is free. This module searches in that mode ("independent counts, full-width streams").
Narrowing streams (one shared count for all writers of a stream) is not searched, see
docs/ARCHITECTURE.md "Pruning".

Exact MACs. A conv's MACs are ``coef * cin * cout`` with ``coef = H_out * W_out * k * k``; ``cout``
is its own kept count and ``cin`` is either a constant (a full-width stream, the RGB input) or the
kept count of the conv that feeds it directly (``PrunableConv.consumers``: a block's inner convs,
and the stem feeding ``layer1.0.conv1``). The MACs therefore split exactly into terms over
*connected groups* of convs (a block's chain of convs, joined with the stem for layer1.0). Each
group becomes one knapsack item whose options are all combinations of its convs' grid counts, with
the exact integer MACs of that combination. No approximation is left except the bucket size of
the DP, which is the gcd of all option costs (exact) unless the table would be too large.
Every searched spec is re-counted on the skeleton that ``build_model(arch, spec)`` builds.
"""
from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Mapping, Sequence

import torch
from torch import nn

from ..flops import conv_geometry, spec_conv_macs
from ..models import arch_info
from ..models.graph import prunable_convs
from ..models.spec import ChannelSpec, kept_filters
from .criteria import get_criterion, select_kept
from .knapsack import InfeasibleError, Item, solve
from .sensitivity import LABEL
from .sfp import prunable_modules

DEFAULT_GRID = (0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125)  # keep fractions; 1.0 is implied
COUPLING = "independent counts, full-width residual streams"
DEFAULT_TOLERANCE = 0.10  # percentage points by which the achieved reduction may exceed the target


class InfeasibleTargetError(ValueError):
    """A FLOPs target that no spec on the grid can meet."""


# ---------------------------------------------------------------------------------------------
# The exact MACs model
@dataclass(frozen=True)
class Term:
    conv: str            # module name (prunable conv or projection shortcut)
    coef: int            # H_out * W_out * kh * kw
    cin: str | int       # prunable conv feeding it, or a constant width
    cout: str | int      # the conv itself when prunable, else a constant width
    area: int = 1        # kh * kw: the conv's weights are ``area * cin * cout``


@lru_cache(maxsize=None)
def macs_terms(arch: str, resolution: int) -> tuple[Term, ...]:
    """One term per conv of ``arch`` (see the module docstring), from ``flops.conv_geometry``."""
    layers = {c.name: c for c in prunable_convs(arch)}
    feeder = {consumer: c.name for c in layers.values() for consumer in c.consumers}
    return tuple(Term(conv, g.coef, feeder.get(conv, g.c_in), conv if conv in layers else g.c_out, g.area)
                 for conv, g in conv_geometry(arch, resolution).items())


def _spec_sum(arch: str, kept: Mapping[str, int], resolution: int | None, per_term) -> int:
    """sum over the conv terms of per_term(term) * c_in * c_out, with ``kept[conv]`` filters kept
    (full-width streams)."""
    resolution = resolution or arch_info(arch).resolution
    full = {c.name: c.out_channels for c in prunable_convs(arch)}

    def val(v):
        return v if isinstance(v, int) else int(kept.get(v, full[v]))

    return sum(per_term(t) * val(t.cin) * val(t.cout) for t in macs_terms(arch, resolution))


def spec_macs(arch: str, kept: Mapping[str, int], resolution: int | None = None) -> int:
    """Conv MACs of the compact model keeping ``kept[conv]`` filters (full-width streams)."""
    return _spec_sum(arch, kept, resolution, lambda t: t.coef)


def baseline_macs(arch: str, resolution: int | None = None) -> int:
    return spec_macs(arch, {}, resolution)


def spec_weights(arch: str, kept: Mapping[str, int], resolution: int | None = None) -> int:
    """Conv weights of the compact model keeping ``kept[conv]`` filters (full-width streams)."""
    return _spec_sum(arch, kept, resolution, lambda t: t.area)


def grid_counts(arch: str, grid: Sequence[float] = DEFAULT_GRID) -> dict[str, list[int]]:
    """Kept counts per prunable conv: ``max(1, round(N * f))`` for each keep fraction ``f``."""
    if not grid or any(not 0.0 < f <= 1.0 for f in grid):
        raise ValueError(f"grid must be keep fractions in (0, 1], got {list(grid)}")
    return {c.name: sorted({max(1, round(c.out_channels * f)) for f in grid} | {c.out_channels})
            for c in prunable_convs(arch)}


def check_target(target_percent: float) -> None:
    if not math.isfinite(target_percent) or not 0.0 < target_percent < 100.0:
        raise InfeasibleTargetError(
            f"FLOPs reduction target must be in (0, 100) percent, got {target_percent}")


def reachable_reduction(arch: str, grid: Sequence[float] | None = DEFAULT_GRID, resolution: int | None = None) -> float:
    """Largest reduction (percent) a search can reach: every conv at its smallest grid count, or,
    with ``grid=None``, at one filter (uniform pruning's limit)."""
    if grid is None:
        kept = {c.name: 1 for c in prunable_convs(arch)}
    else:
        kept = {n: ks[0] for n, ks in grid_counts(arch, grid).items()}
    return 100.0 * (1.0 - spec_macs(arch, kept, resolution) / baseline_macs(arch, resolution))


def check_reachable(arch: str, target_percent: float, grid: Sequence[float] | None = DEFAULT_GRID,
                    resolution: int | None = None) -> None:
    """Fail fast (before any training or sensitivity sweep) on a target no spec can meet."""
    check_target(target_percent)
    best = reachable_reduction(arch, grid, resolution)
    if target_percent > best:
        what = "uniform pruning (one filter per conv)" if grid is None else \
            f"the search grid (keep fractions down to {min(grid)})"
        raise InfeasibleTargetError(f"{arch}: a {target_percent}% FLOPs reduction is beyond the smallest "
                                    f"model {what} reaches: {best:.2f}%")


def _window(base: int, target: float, tol: float) -> tuple[int, int]:
    upper = math.floor(base * (100.0 - target) / 100.0)
    lower = math.ceil(base * (100.0 - target - tol) / 100.0)
    return lower, upper


# ---------------------------------------------------------------------------------------------
# The search
@dataclass
class SearchResult:
    kept: dict[str, int]           # kept filters per prunable conv (all of them)
    spec: ChannelSpec
    conv_macs: int                 # counted on the skeleton build_model(arch, spec) builds
    baseline_conv_macs: int
    target: float                  # requested reduction, percent
    reduction: float               # achieved reduction, percent
    predicted_rise: float | None   # summed sensitivity of the choice (SNF only)
    method: str                    # "snf" | "uniform"
    rate: float | None = None      # uniform: the one prune rate
    wall_s: float = 0.0
    exact: bool = True             # DP without cost rounding
    label: str = LABEL
    coupling: str = COUPLING

    def to_json(self) -> dict:
        return {"label": self.label, "method": self.method, "coupling": self.coupling,
                "target_reduction": self.target, "flops_reduction": round(self.reduction, 4),
                "conv_macs": self.conv_macs, "baseline_conv_macs": self.baseline_conv_macs,
                "predicted_loss_rise": self.predicted_rise, "uniform_rate": self.rate,
                "search_wall_s": round(self.wall_s, 4), "dp_exact": self.exact,
                "kept": dict(self.kept), "spec": self.spec.to_json()}


def _groups(arch: str, terms: Iterable[Term]) -> list[list[str]]:
    """Prunable convs joined by a term whose input AND output are both searched counts."""
    parent = {c.name: c.name for c in prunable_convs(arch)}

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for t in terms:
        if isinstance(t.cin, str) and isinstance(t.cout, str):
            parent[find(t.cin)] = find(t.cout)
    groups: dict[str, list[str]] = {}
    for c in prunable_convs(arch):  # forward order inside each group
        groups.setdefault(find(c.name), []).append(c.name)
    return list(groups.values())


def _spec(arch: str, kept: Mapping[str, int]) -> ChannelSpec:
    return ChannelSpec(convs={c.name: kept[c.name] for c in prunable_convs(arch) if kept[c.name] < c.out_channels})


def _finish(arch, kept, resolution, base, target, method, **kw) -> SearchResult:
    spec = _spec(arch, kept)
    macs = spec_conv_macs(arch, spec, resolution)
    predicted = spec_macs(arch, kept, resolution)
    if macs != predicted:  # the MACs model and the builder disagree: a bug, never silently
        raise AssertionError(f"SNF MACs model says {predicted} but the built skeleton counts {macs}")
    return SearchResult(dict(kept), spec, macs, base, target, 100.0 * (1.0 - macs / base), method=method, **kw)


def _options(arch: str, rise: Mapping[str, Mapping[int, float]]) -> dict[str, list[tuple[int, float]]]:
    """Per prunable conv, its (kept, rise) choices sorted by kept, the full width (rise 0) included."""
    layers = {c.name: c for c in prunable_convs(arch)}
    unknown = set(rise) - set(layers)
    if unknown:
        raise ValueError(f"sensitivity names convs that {arch} does not prune: {sorted(unknown)[:3]}")
    options = {}
    for name, layer in layers.items():
        curve = {int(k): float(v) for k, v in rise.get(name, {}).items()}
        if any(not 1 <= k <= layer.out_channels for k in curve):
            raise ValueError(f"sensitivity of '{name}' has counts outside 1..{layer.out_channels}")
        curve[layer.out_channels] = 0.0
        options[name] = sorted(curve.items())
    return options


def _items(arch: str, terms: Sequence[Term], options: Mapping[str, list[tuple[int, float]]],
           per_weight: float) -> tuple[list[Item], list[list[dict[str, int]]], int]:
    """The knapsack: one item per group of convs whose widths share MACs terms, an option per
    combination of their kept counts (its MACs and its rise less ``per_weight`` x the weights it
    keeps); the kept counts of each option; the MACs no kept count changes."""
    items, combos, constant = [], [], 0
    grouped = _groups(arch, terms)
    owner = {n: gi for gi, g in enumerate(grouped) for n in g}
    group_terms: list[list[Term]] = [[] for _ in grouped]
    for t in terms:
        var = t.cout if isinstance(t.cout, str) else t.cin if isinstance(t.cin, str) else None
        if var is None:
            constant += t.coef * t.cin * t.cout
        else:
            group_terms[owner[var]].append(t)
    for gi, names in enumerate(grouped):
        costs, losses, picks = [], [], []
        for choice in itertools.product(*(options[n] for n in names)):
            kept = {n: k for n, (k, _) in zip(names, choice)}
            val = lambda v: v if isinstance(v, int) else kept[v]  # noqa: E731
            costs.append(sum(t.coef * val(t.cin) * val(t.cout) for t in group_terms[gi]))
            losses.append(sum(r for _, r in choice)
                          - per_weight * sum(t.area * val(t.cin) * val(t.cout) for t in group_terms[gi]))
            picks.append(kept)
        items.append(Item("+".join(names), tuple(costs), tuple(losses)))
        combos.append(picks)
    return items, combos, constant


def search(arch: str, rise: Mapping[str, Mapping[int, float]], target_percent: float, *,
           resolution: int | None = None, tolerance: float = DEFAULT_TOLERANCE,
           max_buckets: int = 1 << 18, weight_bonus: float = 0.0) -> SearchResult:
    """Exact least-rise kept counts with reduction in ``[target, target + tolerance]`` percent.

    ``rise[conv][k]``: loss rise of keeping ``k`` filters of ``conv`` (from ``Sensitivity.rise``);
    the full width is always an option with rise 0. Convs absent from ``rise`` stay dense.
    ``weight_bonus``: subtracted from an option's rise per fraction of the dense model's conv
    weights it keeps (a Lagrange multiplier that favours keeping weights; 0 = plain SNF).
    """
    start = time.perf_counter()
    check_target(target_percent)
    resolution = resolution or arch_info(arch).resolution
    terms = macs_terms(arch, resolution)
    options = _options(arch, rise)
    base = baseline_macs(arch, resolution)
    per_weight = weight_bonus / spec_weights(arch, {}, resolution)
    lower, upper = _window(base, target_percent, tolerance)
    items, combos, constant = _items(arch, terms, options, per_weight)
    smallest = constant + sum(min(i.costs) for i in items)
    if smallest > upper:
        raise InfeasibleTargetError(
            f"{arch}: a {target_percent}% FLOPs reduction is beyond the smallest model the search grid "
            f"reaches ({100.0 * (1 - smallest / base):.2f}%); use a finer grid or a smaller target")
    try:
        sol = solve(items, upper - constant, max(0, lower - constant), max_buckets=max_buckets)
    except InfeasibleError as e:
        raise InfeasibleTargetError(
            f"{arch}: no spec on the search grid has a FLOPs reduction within "
            f"[{target_percent}, {target_percent + tolerance}]% ({e}); use a finer grid") from None
    kept = {}
    for picks, o in zip(combos, sol.choices):
        kept.update(picks[o])
    result = _finish(arch, kept, resolution, base, target_percent, "snf", predicted_rise=sol.loss, exact=sol.exact)
    result.wall_s = time.perf_counter() - start
    return result


def uniform_search(arch: str, target_percent: float, *, resolution: int | None = None) -> SearchResult:
    """The uniform-rate baseline: ONE prune rate ``p`` for every prunable conv (SFP's rule,
    ``kept = N - int(N * p)``), the smallest ``p`` whose real integer conv MACs meet the target,
    found by bisection (MACs never grow with ``p``). Integer counts move in steps, so the achieved
    reduction is at or above the target, usually by more than SNF's tolerance."""
    start = time.perf_counter()
    check_target(target_percent)
    resolution = resolution or arch_info(arch).resolution
    layers = prunable_convs(arch)
    base = baseline_macs(arch, resolution)
    _, upper = _window(base, target_percent, 0.0)

    def kept_at(p):
        return {c.name: kept_filters(c.out_channels, p) for c in layers}

    lo, hi = 0.0, math.nextafter(1.0, 0.0)
    if spec_macs(arch, kept_at(hi), resolution) > upper:
        smallest = spec_macs(arch, kept_at(hi), resolution)
        raise InfeasibleTargetError(
            f"{arch}: a {target_percent}% FLOPs reduction is beyond uniform pruning's smallest model "
            f"(one filter per conv: {100.0 * (1 - smallest / base):.2f}%)")
    for _ in range(64):  # invariant: MACs(lo) > upper >= MACs(hi)
        mid = (lo + hi) / 2
        if spec_macs(arch, kept_at(mid), resolution) <= upper:
            hi = mid
        else:
            lo = mid
    result = _finish(arch, kept_at(hi), resolution, base, target_percent, "uniform", predicted_rise=None, rate=hi)
    result.wall_s = time.perf_counter() - start
    return result


# ---------------------------------------------------------------------------------------------
# Trainer-facing
def kept_indices(model: nn.Module, arch: str, kept: Mapping[str, int], criterion: str = "l2",
                 generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The ``kept[conv]`` best filters of each conv by ``criterion`` (``select_kept``)."""
    score = get_criterion(criterion)
    convs = prunable_modules(model, arch)
    return {name: select_kept(score(conv.weight, generator), int(kept.get(name, conv.out_channels)))
            for name, conv in convs.items()}
