"""The SNF search engine (SNF, abstract-level reimplementation): exact multiple-choice knapsack."""
import random

import pytest

from repro.prune.knapsack import InfeasibleError, Item, brute_force, solve


def random_instance(rng: random.Random, unit: int):
    items = []
    for i in range(rng.randint(1, 5)):
        n = rng.randint(1, 4)
        items.append(Item(f"i{i}", tuple(unit * rng.randint(0, 40) for _ in range(n)),
                          tuple(rng.uniform(-1.0, 3.0) for _ in range(n))))
    total_max = sum(max(i.costs) for i in items)
    upper = rng.randint(0, total_max)
    lower = rng.randint(0, upper)
    return items, lower, upper


@pytest.mark.parametrize("seed", range(5))
def test_dp_matches_brute_force_exactly(seed):
    rng = random.Random(seed)
    checked = 0
    for _ in range(200):
        items, lower, upper = random_instance(rng, unit=rng.choice([1, 3, 576]))
        try:
            ref = brute_force(items, upper, lower)
        except InfeasibleError:
            with pytest.raises(InfeasibleError):
                solve(items, upper, lower)
            continue
        sol = solve(items, upper, lower)
        assert sol.exact
        assert sol.loss == pytest.approx(ref.loss, abs=1e-9)
        assert lower <= sol.cost <= upper
        # the reported cost and loss are those of the returned choice
        assert sol.cost == sum(it.costs[o] for it, o in zip(items, sol.choices))
        assert sol.loss == pytest.approx(sum(it.losses[o] for it, o in zip(items, sol.choices)))
        checked += 1
    assert checked > 50  # most instances are feasible; the infeasible ones are checked above


def test_coarse_buckets_stay_feasible_and_near_optimal():
    """With too many buckets the DP rounds costs up: never infeasible, never better than exact."""
    rng = random.Random(7)
    for _ in range(100):
        items, lower, upper = random_instance(rng, unit=1)
        lower = 0  # rounding tightens the lower bound; test the upper side here
        try:
            ref = brute_force(items, upper, lower)
        except InfeasibleError:
            continue
        try:
            sol = solve(items, upper, lower, max_buckets=8)
        except InfeasibleError:
            continue  # coarse rounding may lose the only solutions; that is allowed
        assert sol.cost <= upper
        assert sol.loss >= ref.loss - 1e-9


def test_infeasible_windows_raise():
    items = [Item("a", (10, 20), (1.0, 0.0)), Item("b", (5, 7), (0.5, 0.0))]
    with pytest.raises(InfeasibleError, match="cheapest"):
        solve(items, upper=14)
    with pytest.raises(InfeasibleError, match="dearest"):
        solve(items, upper=100, lower=28)
    with pytest.raises(InfeasibleError, match="no choice"):
        solve(items, upper=16, lower=16)  # reachable totals: 15, 17, 25, 27
    assert solve(items, upper=17, lower=16).choices == (0, 1)
