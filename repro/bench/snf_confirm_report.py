"""The generated results section of docs/snf_confirm.md: the analysis its plan fixed before any run.

Per net, ``rise-bn`` is paired with uniform seed by seed; d = top-1(rise-bn) - top-1(uniform).
Two-sided paired t-test (``scipy.stats.ttest_rel``), Holm's step-down correction over the nets'
tests, the mean d with its 95% t interval, and the verdict by the plan's rules. Until every net
has its pairs, the section shows only how many runs have finished (the plan allows no interim look).
The exploratory runs (3x fine-tuning) use the confirmation's first accepted seeds of each net and are
shown per net once complete: no verdict or default rides on them.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

from .snf_search_report import kept_rows, rejected_seeds

ALPHA = 0.05
DELTA = 100 / 360  # smallest effect of interest: one validation image of 360, in points
ARMS = ("uniform", "rise-bn")


@dataclass
class NetResult:
    arch: str
    seeds: list[int]
    uniform: list[float]
    rise_bn: list[float]
    p: float = 1.0
    p_holm: float = 1.0
    wall_s: float = 0.0

    @property
    def diffs(self) -> list[float]:
        return [b - u for u, b in zip(self.uniform, self.rise_bn)]

    def interval(self) -> tuple[float, float]:
        """Mean d ± t(0.975, n-1) · sd / √n."""
        from scipy import stats

        d = self.diffs
        half = stats.t.ppf(0.975, len(d) - 1) * statistics.stdev(d) / math.sqrt(len(d))
        return statistics.mean(d) - half, statistics.mean(d) + half

    def verdict(self) -> str:
        mean = statistics.mean(self.diffs)
        if self.p_holm < ALPHA:
            return "confirmed" if mean > 0 else "reversed" if mean < 0 else "not confirmed"
        return "not confirmed" if self.interval()[1] < DELTA else "inconclusive"


def paired_p(uniform: list[float], rise_bn: list[float]) -> float:
    """Two-sided paired t-test; identical arms (t undefined) give p = 1."""
    from scipy import stats

    if all(b == u for u, b in zip(uniform, rise_bn)):
        return 1.0
    return float(stats.ttest_rel(rise_bn, uniform).pvalue)


def holm(pvalues: list[float]) -> list[float]:
    """Holm step-down adjusted p-values, in the input order."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * len(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def pairs(rows: list[dict], arch: str) -> dict[int, dict[str, dict]]:
    """seed -> {arm: row} for the accepted seeds of one net that have both arms."""
    by: dict[int, dict[str, dict]] = {}
    for r in kept_rows(rows):
        if r["arch"] == arch and r["method"] in ARMS:
            by.setdefault(r["seed"], {})[r["method"]] = r
    return {s: arms for s, arms in sorted(by.items()) if len(arms) == len(ARMS)}


def explore_seeds(confirm_rows: list[dict], arch: str, n: int, explore_rows: list[dict] = ()) -> list[int]:
    """The plan's exploratory seeds: the confirmation's first n accepted seeds of the net, passing
    over one whose baseline, trained again for these runs, fell below the bar (the baseline rule,
    which looks at the dense model only; the plan assumed the confirmation's baselines, which a
    retrained one need not equal)."""
    left = rejected_seeds(list(explore_rows))
    return [s for s in sorted(pairs(confirm_rows, arch)) if (arch, s) not in left][:n]


def net_results(rows: list[dict], archs, n: int, confirmatory: bool) -> list[NetResult] | None:
    """The first n pairs (by seed) of every net, or None while some net has fewer. Confirmatory:
    Holm over the nets' tests, and the dense baselines' training counts in the run time (the
    exploratory runs reuse those baselines)."""
    out = []
    for arch in archs:
        got = pairs(rows, arch)
        if len(got) < n:
            return None
        seeds = sorted(got)[:n]
        res = NetResult(arch, seeds, [got[s]["uniform"]["top1"] for s in seeds],
                        [got[s]["rise-bn"]["top1"] for s in seeds])
        res.p = paired_p(res.uniform, res.rise_bn)
        res.wall_s = sum(got[s][m]["search_s"] + got[s][m]["finetune_s"] for s in seeds for m in ARMS)
        if confirmatory:
            res.wall_s += sum(got[s]["uniform"].get("baseline_train_s") or 0.0 for s in seeds)
        out.append(res)
    for res, adjusted in zip(out, holm([r.p for r in out]) if confirmatory else [r.p for r in out]):
        res.p_holm = adjusted
    return out


def explore_results(confirm_rows: list[dict], explore_rows: list[dict], archs,
                    n: int) -> tuple[list[dict], dict[str, NetResult | None]]:
    """The exploratory rows of the plan's seeds (and the passed-over ones, which stay listed), and
    each net's result, None while it has fewer than n pairs."""
    mine = {a: set(explore_seeds(confirm_rows, a, n, explore_rows)) for a in archs}
    left = rejected_seeds(explore_rows)
    rows = [r for r in explore_rows if r["seed"] in mine.get(r["arch"], ())  # no stray seed
            or (r["arch"], r["seed"]) in left]
    per_net = {a: (net_results(rows, (a,), n, confirmatory=False) or [None])[0] for a in archs}
    return rows, per_net


def _ms(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def progress(rows: list[dict], archs, n: int) -> str:
    """What has finished, and nothing about the outcome."""
    left = rejected_seeds(rows)
    lines = []
    for arch in archs:
        # (seed, arm), once: two processes that raced on one run both append it
        done = {(r["seed"], r["method"]) for r in kept_rows(rows) if r["arch"] == arch and r["method"] in ARMS}
        lines.append(f"- {arch}: {len(done)} of {2 * n} runs finished, {len(pairs(rows, arch))} of {n} pairs"
                     f"; seeds left out (dense baseline below the bar): "
                     f"{', '.join(str(s) for a, s in sorted(left) if a == arch) or 'none'}.")
    return "\n".join(lines)


def default_after(results: list[NetResult]) -> str:
    """The plan's rule for prune.snf_variant's default."""
    verdicts = [r.verdict() for r in results]
    if "confirmed" in verdicts and "reversed" not in verdicts:
        return "`rise-bn` stays the default (confirmed on at least one net, reversed on none)"
    return "the default becomes `rise` (`rise-bn` confirmed on neither net, or reversed on one)"


def span(rows: list[dict]) -> str:
    stamps = [r["finished_at"] for r in rows if r.get("finished_at")]
    if not stamps:
        return "-"
    fmt = "%Y-%m-%d %H:%M UTC"
    return f"{time.strftime(fmt, time.gmtime(min(stamps)))} to {time.strftime(fmt, time.gmtime(max(stamps)))}"


def confirm_table(results: list[NetResult]) -> str:
    lines = ["| net | n | uniform top-1 | rise-bn top-1 | d = rise-bn − uniform | 95% interval of d | "
             "p (t) | p Holm | verdict | run time (h) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lo, hi = r.interval()
        lines.append(f"| {r.arch} | {len(r.seeds)} | {_ms(r.uniform)} | {_ms(r.rise_bn)} | {_ms(r.diffs)} | "
                     f"[{lo:.2f}, {hi:.2f}] | {r.p:.4f} | {r.p_holm:.4f} | **{r.verdict()}** | "
                     f"{r.wall_s / 3600:.2f} |")
    return "\n".join(lines)


def same_seeds_d(result: NetResult, confirm_rows: list[dict]) -> list[float]:
    """d of an exploratory result's seeds as the confirmation (its shorter fine-tuning) measured them."""
    ten = pairs(confirm_rows, result.arch)
    return [ten[s]["rise-bn"]["top1"] - ten[s]["uniform"]["top1"] for s in result.seeds if s in ten]


def explore_table(results: list[NetResult], explore_rows: list[dict], confirm_rows: list[dict]) -> str:
    lines = ["| net | n | uniform top-1 | rise-bn top-1 | d = rise-bn − uniform | 95% interval of d | "
             "p (t), unadjusted | same seeds' d, confirmation's fine-tuning | run time (h) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lo, hi = r.interval()
        d10 = same_seeds_d(r, confirm_rows)
        lines.append(f"| {r.arch} | {len(r.seeds)} | {_ms(r.uniform)} | {_ms(r.rise_bn)} | {_ms(r.diffs)} | "
                     f"[{lo:.2f}, {hi:.2f}] | {r.p:.4f} | {_ms(d10) if len(d10) > 1 else '-'} | "
                     f"{r.wall_s / 3600:.2f} |")
    return "\n".join(lines) + "\n\n" + same_baselines(results, explore_rows, confirm_rows)


def same_baselines(results: list[NetResult], explore_rows: list[dict], confirm_rows: list[dict]) -> str:
    """Whether the exploratory runs pruned the confirmation's dense models: each harness run trains
    a seed's baseline unless its cache holds it, and another CPU or thread count trains another one."""
    parts = []
    for r in results:
        mine, theirs = pairs(explore_rows, r.arch), pairs(confirm_rows, r.arch)
        gaps = [abs(mine[s]["uniform"]["baseline_top1"] - theirs[s]["uniform"]["baseline_top1"])
                for s in r.seeds if s in theirs]
        same = sum(g == 0 for g in gaps)
        parts.append(f"{r.arch}: {same} of {len(gaps)}" + (f" (mean |Δ| {statistics.mean(gaps):.2f} points)"
                                                           if same < len(gaps) else ""))
    # only seeds the confirmation accepted were passed over; one it left out too is listed above the tables
    accepted = {r.arch: pairs(confirm_rows, r.arch) for r in results}
    passed = [f"{a} seed {s} ({v:.2f}%)" for (a, s), v in sorted(rejected_seeds(explore_rows).items())
              if s in accepted.get(a, ())]
    return ("Dense baselines with the same top-1 as the confirmation's for the same seed: " + "; ".join(parts) +
            ". Where they differ the baseline was trained again (the cache did not hold it), and the last "
            "column compares the same seeds, not the same dense models." +
            (f" Passed over for the next confirmation seed, their baseline trained again below the bar: "
             f"{', '.join(passed)}." if passed else ""))


def section(confirm_rows: list[dict], explore_rows: list[dict], archs, n_confirm: int, n_explore: int,
            command: str) -> str:
    """The text below the plan's marker."""
    confirmed = net_results(confirm_rows, archs, n_confirm, confirmatory=True)
    head = (f"\n## Results (generated by `{command}`; do not edit by hand)\n\n"
            f"Seeds left out by the plan's rule: "
            f"{', '.join(f'{a} seed {s} ({v:.2f}%)' for (a, s), v in sorted(rejected_seeds(confirm_rows).items())) or 'none'}."
            f" Runs finished {span(confirm_rows + explore_rows)}; run time = baseline training + search + "
            "fine-tuning, summed, one thread on a shared 2-core machine.\n")
    if confirmed is None:
        body = ("\n### Confirmation: not complete\n\nNo outcome is shown before every net has its "
                f"{n_confirm} pairs (the plan's no-interim-look rule).\n\n{progress(confirm_rows, archs, n_confirm)}\n")
        return head + body
    body = (f"\n### Confirmation\n\nSeeds: {'; '.join(f'{r.arch} {r.seeds}' for r in confirmed)}. Holm over the "
            f"{len(confirmed)} tests; δ = {DELTA:.2f} points (one validation image).\n\n{confirm_table(confirmed)}\n\n"
            f"Default of `prune.snf_variant` by the plan's rule: {default_after(confirmed)}.\n")
    # Exploratory: each net shown once it has its pairs (no verdict rides on it, so no look to withhold)
    explore_rows, per_net = explore_results(confirm_rows, explore_rows, archs, n_explore)
    explored = [res for res in per_net.values() if res]
    waiting = [a for a, res in per_net.items() if not res]
    if explored:
        body += ("\n### Exploratory: 3× longer fine-tuning (no verdict; no part in the default)\n\n"
                 f"{explore_table(explored, explore_rows, confirm_rows)}\n")
    if waiting:
        body += (f"\n### Exploratory (3× fine-tuning): not complete\n\n{progress(explore_rows, waiting, n_explore)}\n")
    return head + body
