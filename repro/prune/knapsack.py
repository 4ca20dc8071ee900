"""Exact multiple-choice knapsack over integer costs (the engine of the SNF search).

Part of "SNF, abstract-level reimplementation" (not the authors' code; docs/papers.md).

Problem: items ``i = 1..n``, each with options ``o`` of integer cost ``c[i][o]`` (conv MACs) and
real loss ``l[i][o]`` (loss rise). Choose exactly one option per item minimising ``sum l`` subject
to ``lower <= sum c <= upper``.

Method: dynamic programming over cost buckets. ``D[b]`` = least loss of the items seen so far
whose costs sum to exactly ``b`` buckets; one pass per item, vectorised over buckets with numpy.
The bucket is ``q = gcd`` of every option cost, so costs are represented *without rounding* and
the result is the exact optimum over the integers. Only when ``upper / q`` exceeds ``max_buckets``
(e.g. ImageNet resolutions) is ``q`` coarsened; costs are then rounded *up*, so every solution the
DP accepts truly satisfies ``sum c <= upper``, the lower bound is tightened by the worst total
rounding, and the optimum is exact with respect to the rounded costs (``Solution.exact`` says
which case applied). The returned ``cost`` is always the true integer sum.

The lower bound exists because sensitivity curves are noisy and not strictly monotone: without
it, a solution may leave budget unused and land visibly below the requested FLOPs target.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import reduce
from typing import Sequence

import numpy as np


class InfeasibleError(ValueError):
    """No choice of options meets the cost window."""


@dataclass(frozen=True)
class Item:
    name: str
    costs: tuple[int, ...]     # integer cost of each option
    losses: tuple[float, ...]  # loss of each option

    def __post_init__(self):
        if not self.costs or len(self.costs) != len(self.losses):
            raise ValueError(f"item '{self.name}' needs one loss per cost and at least one option")
        if min(self.costs) < 0:
            raise ValueError(f"item '{self.name}' has a negative cost")


@dataclass(frozen=True)
class Solution:
    choices: tuple[int, ...]   # option index per item
    cost: int                  # true integer cost of the choice
    loss: float
    bucket: int                # bucket size used by the DP
    exact: bool                # True when no cost was rounded


def cost_range(items: Sequence[Item]) -> tuple[int, int]:
    """Smallest and largest total cost any choice can have."""
    return sum(min(i.costs) for i in items), sum(max(i.costs) for i in items)


def solve(items: Sequence[Item], upper: int, lower: int = 0, *, max_buckets: int = 1 << 18) -> Solution:
    """Least-loss choice with ``lower <= total cost <= upper`` (see the module docstring)."""
    items = list(items)
    if not items:
        raise ValueError("nothing to choose from: no items")
    lo_reach, hi_reach = cost_range(items)
    if upper < lo_reach:
        raise InfeasibleError(f"the cheapest choice costs {lo_reach}, above the upper bound {upper}")
    if lower > hi_reach:
        raise InfeasibleError(f"the dearest choice costs {hi_reach}, below the lower bound {lower}")
    costs = [np.asarray(i.costs, dtype=np.int64) for i in items]
    losses = [np.asarray(i.losses, dtype=np.float64) for i in items]

    q = reduce(math.gcd, (int(c) for cs in costs for c in cs if c > 0), 0) or 1
    exact = True
    if upper // q + 1 > max_buckets:
        q = -(-upper // (max_buckets - 1))
        exact = False
    cb = [-(-cs // q) for cs in costs]              # ceil; equal to cs // q when q divides
    slack = sum(int((b * q - c).max()) for b, c in zip(cb, costs))  # worst total rounding up
    top = upper // q                                # DP cost <= top  =>  true cost <= upper
    bottom = max(0, -(-(lower + slack) // q))       # DP cost >= bottom => true cost >= lower
    if bottom > top:
        raise InfeasibleError(f"the cost window [{lower}, {upper}] is narrower than the DP's rounding "
                              f"({slack}); raise max_buckets")

    table = np.full(top + 1, np.inf)
    table[0] = 0.0
    # One byte per (item, bucket) would cap options at 255; int16 allows the 4096 options of a
    # bottleneck block with an 8-point grid.
    choice = np.full((len(items), top + 1), -1, dtype=np.int16 if max(map(len, cb)) < 32767 else np.int32)
    for i, (cost, loss) in enumerate(zip(cb, losses)):
        new = np.full(top + 1, np.inf)
        pick = choice[i]
        for o in np.argsort(cost, kind="stable"):
            c = int(cost[o])
            if c > top:
                continue
            cand = table[: top + 1 - c] + loss[o]
            seg = new[c:]
            better = cand < seg
            seg[better] = cand[better]
            pick[c:][better] = o
        table = new
    window = table[bottom: top + 1]
    if not np.isfinite(window).any():
        raise InfeasibleError(f"no choice has a total cost in [{lower}, {upper}]")
    # Ties (common with flat curves) go to the dearest solution: it keeps more filters.
    b = bottom + (len(window) - 1 - int(np.argmin(window[::-1])))
    best = float(table[b])
    picks = []
    for i in range(len(items) - 1, -1, -1):
        o = int(choice[i][b])
        picks.append(o)
        b -= int(cb[i][o])
    assert b == 0, "DP backtrack did not return to zero cost"  # a bug, not user input
    picks.reverse()
    true_cost = sum(int(items[i].costs[o]) for i, o in enumerate(picks))
    assert lower <= true_cost <= upper, "DP solution violates the cost window"
    return Solution(tuple(picks), true_cost, best, q, exact)


def brute_force(items: Sequence[Item], upper: int, lower: int = 0) -> Solution:
    """Exhaustive reference for tests (exponential: small instances only)."""
    best = None
    for picks in itertools.product(*(range(len(i.costs)) for i in items)):
        cost = sum(items[i].costs[o] for i, o in enumerate(picks))
        if not lower <= cost <= upper:
            continue
        loss = sum(items[i].losses[o] for i, o in enumerate(picks))
        if best is None or loss < best.loss:
            best = Solution(tuple(picks), cost, loss, 1, True)
    if best is None:
        raise InfeasibleError(f"no choice has a total cost in [{lower}, {upper}]")
    return best
