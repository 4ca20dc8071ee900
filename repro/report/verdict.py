"""Whether a cell was reproduced: one rule, computed from the numbers, stated in `RULE` under every table.

The rule (its constants are below; `RULE` is built from them, so the text cannot drift from the code):
- no confirmed paper number for the cell → "no paper value";
- fewer than MIN_RUNS finished runs of ours (a drop needs them on both its rows) → "too few runs";
- the paper gives mean ± std over n_p ≥ 2 runs and we have ≥ 2 runs → Welch's two-sided t-test
  (unequal variances, `scipy.stats.ttest_ind_from_stats`): "reproduced" when p ≥ ALPHA;
- the paper gives mean ± std and we have one run → "reproduced" when |ours − paper| ≤
  STD_FACTOR × the paper's std (one run should fall there if it came from the paper's spread);
- the paper gives a single number without a std (ImageNet cells, every drop, SNF's abstract) →
  "reproduced" when |ours − paper| ≤ TOLERANCE points: this suite's stated choice, not a paper's;
- otherwise "not reproduced". A miniature (smoke) table gets no verdict: it is not comparable.
Only accuracy and drop cells are judged; FLOPs are deterministic and flagged with "!" instead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from repro.papers.spec import PaperValue

ALPHA = 0.05       # level of Welch's two-sided test
STD_FACTOR = 2.0   # one run against a paper mean ± std: within this many paper std
TOLERANCE = 0.5    # points, where the paper gives no std
MIN_RUNS = 1       # finished runs of ours a cell needs before it is judged

REPRODUCED, NOT_REPRODUCED, TOO_FEW, NO_PAPER = "reproduced", "not reproduced", "too few runs", "no paper value"

RULE = (f"Verdict rule (computed from the numbers, never typed): '{NO_PAPER}' where no source confirms "
        f"the paper's number; '{TOO_FEW}' below {MIN_RUNS} finished run of ours (a drop needs one on both "
        f"its rows); where the paper gives mean ± std over n ≥ 2 runs and we have ≥ 2 runs, '{REPRODUCED}' "
        f"when Welch's two-sided t-test (unequal variances) does not reject equal means at "
        f"{ALPHA:.0%} (p ≥ {ALPHA:g}); with one run of ours against a paper mean ± std, '{REPRODUCED}' when "
        f"|ours − paper| ≤ {STD_FACTOR:g} × the paper's std; where the paper gives a single number without "
        f"a std (ImageNet cells, drops, abstracts), '{REPRODUCED}' when |ours − paper| ≤ {TOLERANCE:.2f} "
        f"points (this suite's stated tolerance, not a paper's); '{NOT_REPRODUCED}' otherwise. Only "
        f"accuracy and drop cells are judged (FLOPs: the '!' flags). Miniature tables get no verdict.")


@dataclass(frozen=True)
class Verdict:
    label: str
    detail: str = ""  # the figures behind it (the p-value, or |Δ| against the allowance)

    @property
    def checked(self) -> bool:
        return self.label in (REPRODUCED, NOT_REPRODUCED)

    def text(self) -> str:
        return self.label + (f" ({self.detail})" if self.detail else "")


def _p_text(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def welch_p(mean: float, std: float, n: int, p_mean: float, p_std: float, p_n: int) -> float:
    """Two-sided p-value of Welch's t-test from summary statistics (1.0 / 0.0 when both spreads are 0)."""
    from scipy.stats import ttest_ind_from_stats
    if std == 0 and p_std == 0:  # the test is undefined; identical numbers agree, others do not
        return 1.0 if mean == p_mean else 0.0
    p = float(ttest_ind_from_stats(mean, std, n, p_mean, p_std, p_n, equal_var=False).pvalue)
    return p if math.isfinite(p) else 0.0


def judge(pv: PaperValue | None, mean: float | None, std: float | None, n: int,
          paper_runs: int | None) -> Verdict | None:
    """The verdict on one cell (None: the row has no paper cell for this metric, nothing to judge).

    mean, std, n: ours (std None below two runs; for a drop, n = the fewer runs of its two rows).
    paper_runs: how many runs the paper's mean ± std is over (TableSpec.paper_runs)."""
    if pv is None:
        return None
    if not pv.confirmed or pv.value is None:
        return Verdict(NO_PAPER)
    if n < MIN_RUNS or mean is None:
        return Verdict(TOO_FEW, f"{n} finished")
    diff = abs(mean - pv.value)
    if pv.std is not None and paper_runs and paper_runs >= 2 and n >= 2 and std is not None:
        p = welch_p(mean, std, n, pv.value, pv.std, paper_runs)
        return Verdict(REPRODUCED if p >= ALPHA else NOT_REPRODUCED, f"Welch {_p_text(p)}")
    allow = STD_FACTOR * pv.std if pv.std is not None else TOLERANCE
    ok = diff <= allow + 1e-9  # the papers print two decimals; a float's last bit decides nothing
    return Verdict(REPRODUCED if ok else NOT_REPRODUCED, f"off by {diff:.2f}, {'within' if ok else 'beyond'} {allow:.2f}")


def summary(verdicts: list[Verdict], smoke: bool) -> str:
    """The line at the top of a table: how many checked cells were reproduced."""
    if smoke:
        return "none: a miniature run is not comparable to the paper"
    count = {lab: sum(v.label == lab for v in verdicts) for lab in (REPRODUCED, NOT_REPRODUCED, TOO_FEW, NO_PAPER)}
    checked = count[REPRODUCED] + count[NOT_REPRODUCED]
    return (f"{count[REPRODUCED]} of {checked} checked cells reproduced ({NOT_REPRODUCED} "
            f"{count[NOT_REPRODUCED]}, {TOO_FEW} {count[TOO_FEW]}, {NO_PAPER} {count[NO_PAPER]}; rule below the table)")
