"""Whether a cell was reproduced: equivalence, not a failure to reject. One rule, stated in `rule()`
under every table, computed from the numbers (``repro.report.evidence`` builds them).

Per cell, d = ours − paper, with a standard error `se` that holds both sides' uncertainty and its
degrees of freedom `df` (Welch–Satterthwaite; infinite for a stated prior). With the equivalence
band [lo, hi] (±δ, the table's margin; for a drop the paper states as a gain, hi stops where ours
would be worse than the baseline):
- *reproduced* when the 90% interval d ± t(0.95, df)·se lies inside the band: two one-sided tests
  at 5% (TOST), so a true difference at the band's edge is called reproduced in ≤ 5% of cases;
- *not reproduced* when the whole 95% interval d ± t(0.975, df)·se lies outside the band, so a
  true d = 0 is called not reproduced in ≤ 5% of cases;
- *inconclusive* otherwise, with how many runs of ours would decide it if our mean and spread
  stayed as they are (`runs_needed`; None: no number of our runs can, the paper's side is too wide).
Below the table's minimum number of runs (at least the paper's n) a cell is inconclusive too, and
needs that minimum. The t quantiles are scipy.stats.t's. Tests: tests/test_report.py simulates the
error rates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05      # level of each one-sided test (the 90% interval); the 'not reproduced' interval is 95%
MAX_RUNS = 30     # runs of ours the 'runs needed' search looks up to

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
NOT_RUN, CONTEXT, NO_PAPER = "not run", "context only", "no paper value"
JUDGED = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)


@dataclass(frozen=True)
class Margin:
    """The equivalence margin δ of a table (points) and why it is that wide."""
    delta: float
    reason: str


@dataclass(frozen=True)
class Comparison:
    """ours − paper for one cell: the difference, its standard error and degrees of freedom, the band."""
    diff: float
    se: float
    df: float
    lo: float
    hi: float
    basis: str = ""   # where the paper side's uncertainty came from (the cell's footnote)


def welch_df(var_a: float, df_a: float, var_b: float, df_b: float) -> float:
    """Welch–Satterthwaite degrees of freedom of var_a + var_b (an infinite df adds no term)."""
    den = sum(v * v / d for v, d in ((var_a, df_a), (var_b, df_b)) if v > 0 and math.isfinite(d))
    tot = var_a + var_b
    return math.inf if den == 0 else tot * tot / den


def decide(diff, se, df, lo, hi):
    """The rule, vectorised (numpy arrays or scalars): an array of labels."""
    from scipy.stats import t
    diff, se, df = np.asarray(diff, float), np.asarray(se, float), np.asarray(df, float)
    t90, t95 = t.ppf(1 - ALPHA, df), t.ppf(1 - ALPHA / 2, df)
    inside = (diff - t90 * se >= lo) & (diff + t90 * se <= hi)
    outside = (diff - t95 * se > hi) | (diff + t95 * se < lo)
    return np.where(inside, REPRODUCED, np.where(outside, NOT_REPRODUCED, INCONCLUSIVE))


def interval(c: Comparison, level: float = 1 - 2 * ALPHA) -> tuple[float, float]:
    from scipy.stats import t
    h = float(t.ppf(0.5 + level / 2, c.df)) * c.se
    return c.diff - h, c.diff + h


@dataclass(frozen=True)
class Verdict:
    label: str
    comparison: Comparison | None = None
    runs_needed: int | None = None   # inconclusive: runs of ours that would likely decide it
    n: int = 0                       # runs of ours behind it
    min_runs: int = 0
    reason: str = ""                 # context only / no paper value: why

    @property
    def judged(self) -> bool:
        return self.label in JUDGED

    def short(self) -> str:
        """The text in a table's verdict column."""
        if self.label != INCONCLUSIVE:
            return self.label
        if self.n < self.min_runs:
            return f"{INCONCLUSIVE} ({self.n} of {self.min_runs} runs)"
        return f"{INCONCLUSIVE} (" + (f"≈{self.runs_needed} runs" if self.runs_needed else "undecidable") + ")"

    def detail(self) -> str:
        """The figures behind it: d, its 90% interval, the band."""
        c = self.comparison
        if c is None:
            return self.short() + (f": {self.reason}" if self.reason else "")
        lo, hi = interval(c)
        return (f"{self.short()}: d = {c.diff:+.2f}, 90% CI [{lo:+.2f}, {hi:+.2f}], "
                f"band [{c.lo:+.2f}, {c.hi:+.2f}], n = {self.n}")


def judge(comparison_at, n: int, min_runs: int) -> Verdict:
    """The verdict of one cell. comparison_at(k): the Comparison with k runs of ours (k = n: as
    measured; k > n: our mean and spread as they are), None when k runs cannot give one."""
    if n < min_runs:
        return Verdict(INCONCLUSIVE, comparison_at(n) if n else None, min_runs, n, min_runs)
    c = comparison_at(n)
    label = str(decide(c.diff, c.se, c.df, c.lo, c.hi))
    needed = runs_needed(comparison_at, n) if label == INCONCLUSIVE else None
    return Verdict(label, c, needed, n, min_runs)


def runs_needed(comparison_at, n: int) -> int | None:
    for k in range(n + 1, MAX_RUNS + 1):
        c = comparison_at(k)
        if c is not None and str(decide(c.diff, c.se, c.df, c.lo, c.hi)) != INCONCLUSIVE:
            return k
    return None


def row_verdict(cells: list[Verdict], ran: bool) -> Verdict:
    """A row of the main table from its cells: not reproduced if any cell is, reproduced if every
    judged cell is (and one is), inconclusive otherwise (with the most runs any cell needs)."""
    judged = [v for v in cells if v.judged]
    if not ran:
        return Verdict(NOT_RUN)
    if not judged:
        return next((v for v in cells if v.label == CONTEXT), Verdict(NO_PAPER))
    if any(v.label == NOT_REPRODUCED for v in judged):
        return Verdict(NOT_REPRODUCED)
    if all(v.label == REPRODUCED for v in judged):
        return Verdict(REPRODUCED)
    incon = [v for v in judged if v.label == INCONCLUSIVE]
    short = [v for v in incon if v.n < v.min_runs]
    if short:
        return Verdict(INCONCLUSIVE, n=min(v.n for v in short), min_runs=max(v.min_runs for v in short))
    need = [v.runs_needed for v in incon]
    return Verdict(INCONCLUSIVE, runs_needed=None if None in need else max(need), n=1, min_runs=1)


SUMMARY_LABELS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_RUN, CONTEXT, NO_PAPER)


def summary(rows: list[Verdict], smoke: bool) -> str:
    """The line a reviewer reads first: how many rows of the main table went which way."""
    if smoke:
        return "none: a miniature run is not comparable to the paper"
    count = {lab: sum(v.label == lab for v in rows) for lab in SUMMARY_LABELS}
    return f"{len(rows)} rows: " + ", ".join(f"{lab} {count[lab]}" for lab in SUMMARY_LABELS if count[lab]
                                              or lab in SUMMARY_LABELS[:4])


def rule(margin: Margin | None, min_runs: int, judged: bool) -> str:
    """The rule in one sentence, with this table's δ and minimum runs."""
    if not judged:
        return ("Verdict rule: none for this table; the paper's values are shown for context only (they "
                "were measured under another protocol, and no source gives a value for this one).")
    return (f"Verdict rule: d = ours − paper per cell; '{REPRODUCED}' when its 90% interval lies within "
            f"±δ = {margin.delta:.1f} points (two one-sided tests at {ALPHA:.0%}), '{NOT_REPRODUCED}' when its "
            f"whole 95% interval lies outside, '{INCONCLUSIVE}' otherwise (with the runs of ours that would "
            f"likely decide it), and below {min_runs} run{'s' if min_runs > 1 else ''} of ours; a row is "
            f"reproduced when all its cells are. δ: {margin.reason}. A drop the paper states as a gain "
            f"must not be worse than the baseline.")
