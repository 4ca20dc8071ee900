"""The numbers behind each verdict: ours and the paper's, each with its uncertainty.

Ours (an accuracy): mean of the finished runs, the variance of that mean s²/n with n − 1 degrees of
freedom. Ours (a drop, baseline − pruned): paired by seed where the pruned run starts from that
seed's baseline (the per-seed differences), unpaired otherwise (difference of the means, variances
added, Welch's degrees of freedom).
The paper's side (docs/papers.md, "How sure a paper number is"):
- a source gives mean ± std over n runs: std²/n (a drop: its baseline's and pruned row's added);
- a single number (ImageNet, SNF's abstract): one run's spread, taken from our own run-to-run std
  when we have ≥ 2 runs, else from the stated prior `prior_std` (ImageNet only; a table without a
  prior needs 2 runs of ours).
Sign: a drop the paper states as a gain (< 0) may not be worse than the baseline: the band's upper
edge is then −paper, not +δ.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from repro.papers.spec import PaperValue, TableSpec

from .collect import RowResult
from .verdict import Comparison, Margin, welch_df

# δ per data set, with its reason (printed in every table's rule; docs/papers.md repeats it).
MARGINS = {
    "cifar10": Margin(1.0, "on CIFAR-10 the paper's own run-to-run std reaches 0.70 points, and SFP's rows "
                           "10% of filters apart differ by 0.10-1.04 points (ResNet-32's disputed rows aside): "
                           "a gap under 1 point would not change which rate a reader picks"),
    "imagenet": Margin(1.0, "reproductions of the official ImageNet code land 0.5-1 point short from the "
                            "per-GPU batch alone (docs/papers.md, section 8); a gap under 1 point is "
                            "within what such setup differences produce"),
}
# The prior for one ImageNet run's spread (docs/papers.md): test-set sampling of the 50,000
# validation images, 100·sqrt(a(1 − a)/N) points at accuracy a (K. Jordan, ICLR 2024).
PRIOR_IMAGES = {"imagenet": 50_000}
JUDGED_PROTOCOLS = ("", "paper")  # the papers' numbers describe this protocol; others: context only

BASIS_STD = "the paper's mean ± std over its {n} runs"
BASIS_OURS = "the paper gives one number: its spread taken as our run-to-run std ({n} runs)"
BASIS_PRIOR = ("the paper gives one number: its spread taken as the stated prior, the binomial std of "
               "{images:,} validation images (docs/papers.md)")


@dataclass(frozen=True)
class Estimate:
    """A mean and how sure it is: `spread` = one run's std (of the accuracy, or of one drop)."""
    mean: float
    spread: float | None   # None: unknown (one run, no prior)
    n: int
    df: float              # of spread² (n − 1; Welch's for an unpaired drop)
    prior: bool = False    # spread is the stated prior, not measured


def margin(spec: TableSpec) -> Margin:
    return MARGINS[spec.dataset]


def judged(spec: TableSpec) -> bool:
    return spec.protocol in JUDGED_PROTOCOLS


def min_runs(spec: TableSpec) -> int:
    """Runs of ours before any verdict: the paper's n where it states one; else 1 with a prior, else 2."""
    return spec.paper_runs or (1 if spec.dataset in PRIOR_IMAGES else 2)


def prior_std(spec: TableSpec, accuracy: float | None) -> float | None:
    images = PRIOR_IMAGES.get(spec.dataset)
    if images is None or accuracy is None:
        return None
    a = min(max(accuracy / 100, 0.0), 1.0)
    return 100 * math.sqrt(a * (1 - a) / images)


def _sample(xs: list[float]) -> tuple[float, float | None]:
    m = sum(xs) / len(xs)
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
    return m, s


def ours(spec: TableSpec, rr: RowResult, metric: str) -> Estimate | None:
    """Our estimate of a cell (None: no finished run behind it)."""
    if metric.endswith("_drop"):
        return _drop(spec, rr, metric[:-len("_drop")])
    xs = list(rr.by_seed.get(metric, {}).values())
    if not xs:
        return None
    m, s = _sample(xs)
    if s is None:
        p = prior_std(spec, m)
        return Estimate(m, p, 1, math.inf, prior=p is not None)
    return Estimate(m, s, len(xs), len(xs) - 1)


def paired(rr: RowResult) -> bool:
    return rr.base is not None and rr.row.init_from == rr.base.row.key


def _drop(spec: TableSpec, rr: RowResult, metric: str) -> Estimate | None:
    if rr.base is None:
        return None
    b, p = rr.base.by_seed.get(metric, {}), rr.by_seed.get(metric, {})
    if paired(rr):
        diffs = [b[s] - p[s] for s in sorted(set(b) & set(p))]
        if not diffs:
            return None
        m, s = _sample(diffs)
        if s is not None:
            return Estimate(m, s, len(diffs), len(diffs) - 1)
        return _drop_prior(spec, m, b, p)
    if not b or not p:
        return None
    (mb, sb), (mp, sp) = _sample(list(b.values())), _sample(list(p.values()))
    if sb is None or sp is None:
        return _drop_prior(spec, mb - mp, b, p)
    n = min(len(b), len(p))  # spread² / n stands for sb²/nb + sp²/np: exact when nb = np
    var = sb * sb / len(b) + sp * sp / len(p)
    return Estimate(mb - mp, math.sqrt(var * n), n, welch_df(sb * sb / len(b), len(b) - 1, sp * sp / len(p), len(p) - 1))


def _drop_prior(spec, diff, b, p) -> Estimate:
    sb = prior_std(spec, sum(b.values()) / len(b))
    sp = prior_std(spec, sum(p.values()) / len(p))
    spread = math.hypot(sb, sp) if sb is not None and sp is not None else None
    return Estimate(diff, spread, 1, math.inf, prior=spread is not None)


def paper_side(spec: TableSpec, rr: RowResult, metric: str) -> tuple[float | None, float, str]:
    """(variance of the paper's number or None if it must come from ours, its df, the basis text)."""
    if metric.endswith("_drop"):
        base = rr.base.row.paper.get(metric[:-len("_drop")]) if rr.base else None
        pruned = rr.row.paper.get(metric[:-len("_drop")])
        if base is not None and pruned is not None and base.std is not None and pruned.std is not None \
                and pruned.confirmed and (spec.paper_runs or 0) >= 2:
            k = spec.paper_runs
            va, vb = base.std ** 2 / k, pruned.std ** 2 / k
            return va + vb, welch_df(va, k - 1, vb, k - 1), BASIS_STD.format(n=k)
        return None, math.inf, ""
    pv = rr.row.paper.get(metric)
    if pv is not None and pv.std is not None and (spec.paper_runs or 0) >= 2:
        k = spec.paper_runs
        return pv.std ** 2 / k, k - 1, BASIS_STD.format(n=k)
    return None, math.inf, ""


def band(pv: PaperValue, metric: str, m: Margin) -> tuple[float, float]:
    """The equivalence band for d = ours − paper; sign-aware for a drop stated as a gain."""
    if metric.endswith("_drop") and pv.value < 0:
        return -m.delta, min(m.delta, -pv.value)
    return -m.delta, m.delta


def comparison_at(spec: TableSpec, rr: RowResult, metric: str):
    """k -> the Comparison with k runs of ours (k = the runs we have: as measured), or None."""
    pv, est = rr.row.paper[metric], ours(spec, rr, metric)
    p_var, p_df, basis = paper_side(spec, rr, metric)
    lo, hi = band(pv, metric, margin(spec))

    def at(k: int) -> Comparison | None:
        if est is None or est.spread is None or k < 1:
            return None
        df_ours = math.inf if est.prior else (est.df if k == est.n else k - 1)
        v_ours = est.spread ** 2 / k
        if p_var is not None:
            return Comparison(est.mean - pv.value, math.sqrt(v_ours + p_var), welch_df(v_ours, df_ours, p_var, p_df),
                              lo, hi, basis)
        # one paper number: one run drawn with our spread (the same estimate on both sides)
        how = (BASIS_PRIOR.format(images=PRIOR_IMAGES[spec.dataset]) if est.prior
               else BASIS_OURS.format(n=est.n))
        return Comparison(est.mean - pv.value, est.spread * math.sqrt(1 / k + 1), df_ours, lo, hi, how)
    return at
