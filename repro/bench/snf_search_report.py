"""The Markdown table of ``python -m repro.bench.snf_search``: every search variant against uniform.

Statistics (scipy.stats): per (arch, reduction), each variant is paired with uniform seed by seed
(same baseline, same fine-tuning data order). ``p (t)``: two-sided paired t-test
(``ttest_rel``) on the top-1 differences. ``p (W)``: two-sided Wilcoxon signed-rank test
(``wilcoxon``, exact for these sizes; zero differences dropped, "-" when all are zero). With
n = 5 pairs the Wilcoxon test cannot go below p = 0.0625, so the verdict uses the t-test:
a variant BEATS uniform in a setting when its mean difference is > 0 with p (t) < 0.05, LOSES
when it is < 0 with p (t) < 0.05. The verdict is provisional while a setting has fewer than
``MIN_PAIRS`` seeds for some method. Since every variant is tested in every setting, the report
also says which wins survive Holm's step-down correction over all those tests (family-wise 5%).
"""
from __future__ import annotations

import statistics
from collections import defaultdict

from ..prune.snf_variants import VARIANTS

MIN_PAIRS = 5  # seeds per (setting, method) before the verdict is final (the bar)
ALPHA = 0.05


def setting_order(setting: tuple[str, float]) -> tuple[int, float]:
    """Sort key of an (arch, reduction) setting: shallower ResNet first ("resnet20" < "resnet56")."""
    arch, reduction = setting
    return int(arch.removeprefix("resnet")), reduction


def _ms(values) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def paired_tests(diffs: list[float]) -> tuple[float | None, float | None]:
    """(paired t-test p, Wilcoxon signed-rank p), two-sided, on per-seed differences."""
    import math

    from scipy import stats

    if len(diffs) < 2:
        return None, None
    if all(d == 0 for d in diffs):
        return 1.0, None
    t = stats.ttest_rel(diffs, [0.0] * len(diffs)).pvalue  # = ttest_rel(variant, uniform)
    t = None if math.isnan(t) else float(t)
    nonzero = [d for d in diffs if d != 0]
    w = float(stats.wilcoxon(nonzero).pvalue) if len(nonzero) >= 1 else None
    return t, w


def _p(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def rejected_seeds(rows: list[dict]) -> dict[tuple[str, int], float]:
    """(arch, seed) -> baseline top-1 of the seeds left out for a diverged baseline."""
    return {(r["arch"], r["seed"]): r["baseline_top1"] for r in rows if r.get("rejected")}


def kept_rows(rows: list[dict]) -> list[dict]:
    out = rejected_seeds(rows)
    return [r for r in rows if r["method"] != "baseline" and (r["arch"], r["seed"]) not in out]


def summarise(rows: list[dict]) -> tuple[list[dict], dict]:
    """One entry per (arch, reduction, method) and the verdict per variant."""
    by = defaultdict(dict)
    for r in kept_rows(rows):
        by[(r["arch"], r["reduction"], r["method"])][r["seed"]] = r
    settings = sorted({(a, red) for a, red, _ in by}, key=setting_order)
    methods = ["uniform"] + [m for m in VARIANTS if any((a, red, m) in by for a, red in settings)]
    out, verdict = [], {m: {"beats": [], "loses": [], "worse_mean": [], "p": {}} for m in methods[1:]}
    for arch, red in settings:
        uni = by.get((arch, red, "uniform"), {})
        for m in methods:
            runs = by.get((arch, red, m), {})
            if not runs:
                continue
            seeds = sorted(runs)
            paired = [s for s in seeds if s in uni]
            diffs = [runs[s]["top1"] - uni[s]["top1"] for s in paired] if m != "uniform" else []
            t, w = paired_tests(diffs) if diffs else (None, None)
            gap = [runs[s]["flops_reduction"] - uni[s]["flops_reduction"] for s in paired] if m != "uniform" else []
            entry = {"arch": arch, "reduction": red, "method": m, "n": len(seeds),
                     "flops": [runs[s]["flops_reduction"] for s in seeds], "flops_gap": gap,
                     "top1": [runs[s]["top1"] for s in seeds], "diff": diffs, "p_t": t, "p_w": w,
                     "recal": [runs[s]["pruned_recal_top1"] for s in seeds],
                     "loss": [runs[s]["val_loss"] for s in seeds], "baseline": [runs[s]["baseline_top1"] for s in seeds],
                     "search_s": [runs[s]["search_s"] for s in seeds],
                     "finetune_s": [runs[s]["finetune_s"] for s in seeds]}
            out.append(entry)
            if m != "uniform" and diffs:
                label = f"{arch} {red:g}%"
                mean = statistics.mean(diffs)
                verdict[m]["p"][label] = (t, len(diffs))
                if t is not None and t < 0.05 and mean > 0:
                    verdict[m]["beats"].append(label)
                if t is not None and t < 0.05 and mean < 0:
                    verdict[m]["loses"].append(label)
                if mean < 0:
                    verdict[m]["worse_mean"].append(label)
    return out, verdict


def table(entries: list[dict]) -> str:
    head = ("| arch | FLOPs↓ nominal | method | n | FLOPs↓ achieved | Δ FLOPs vs uniform (max abs) | "
            "top-1 pruned, BN re-est. | top-1 fine-tuned | Δ top-1 vs uniform | p (t) | p (W) | val loss | "
            "search s | fine-tune s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for e in entries:
        gap = f"{max(abs(g) for g in e['flops_gap']):.3f}" if e["flops_gap"] else "-"
        lines.append(
            f"| {e['arch']} | {e['reduction']:g}% | {e['method']} | {e['n']} | {_ms(e['flops'])} | {gap} | "
            f"{_ms(e['recal'])} | {_ms(e['top1'])} | {_ms(e['diff']) if e['diff'] else '-'} | {_p(e['p_t'])} | "
            f"{_p(e['p_w'])} | {statistics.mean(e['loss']):.3f} | {statistics.mean(e['search_s']):.1f} | "
            f"{statistics.mean(e['finetune_s']):.1f} |")
    return "\n".join(lines)


def versus(entries: list[dict], rows: list[dict], reference: str) -> str:
    """Each other variant against ``reference`` (paired by seed), e.g. against the original curves."""
    top1 = {(r["arch"], r["reduction"], r["method"], r["seed"]): r["top1"] for r in rows}
    lines = [f"| arch | FLOPs↓ nominal | method | n | Δ top-1 vs {reference} | p (t) | p (W) |", "|---|---|---|---|---|---|---|"]
    for e in entries:
        if e["method"] in ("uniform", reference):
            continue
        seeds = sorted(s for (a, red, m, s) in top1 if (a, red, m) == (e["arch"], e["reduction"], e["method"])
                       and (a, red, reference, s) in top1)
        diffs = [top1[(e["arch"], e["reduction"], e["method"], s)] - top1[(e["arch"], e["reduction"], reference, s)]
                 for s in seeds]
        t, w = paired_tests(diffs)
        lines.append(f"| {e['arch']} | {e['reduction']:g}% | {e['method']} | {len(diffs)} | {_ms(diffs)} | "
                     f"{_p(t)} | {_p(w)} |")
    return "\n".join(lines)


def holm_survivors(verdict: dict) -> set[tuple[str, str]]:
    """(variant, setting) pairs whose p (t) stays below ALPHA after Holm's step-down correction
    over every variant-vs-uniform test in the report."""
    tests = sorted((t, m, label) for m, v in verdict.items() for label, (t, _n) in v["p"].items() if t is not None)
    survivors = set()
    for i, (t, m, label) in enumerate(tests):
        if t >= ALPHA / (len(tests) - i):
            break
        survivors.add((m, label))
    return survivors


def incomplete(entries: list[dict], settings) -> list[str]:
    """'method in setting (n = k)' for every (setting, method) of the sweep with fewer than
    MIN_PAIRS seeds (0 where it has not run yet)."""
    n = {(e["arch"], e["reduction"], e["method"]): len(e["diff"]) if e["method"] != "uniform" else e["n"]
         for e in entries}
    methods = ["uniform", *VARIANTS]
    return [f"{m} in {a} {red:g}% (n = {n.get((a, red, m), 0)})" for a, red in settings for m in methods
            if n.get((a, red, m), 0) < MIN_PAIRS]


def verdict_text(verdict: dict, entries: list[dict], settings) -> str:
    lines = []
    winners = [m for m, v in verdict.items() if v["beats"] and not v["loses"]]
    short = incomplete(entries, settings)
    holm = holm_survivors(verdict)
    n_tests = sum(t is not None for v in verdict.values() for t, _n in v["p"].values())
    for m, v in verdict.items():
        lines.append(f"- `{m}`: beats uniform in {', '.join(v['beats']) or 'no setting'}; loses in "
                     f"{', '.join(v['loses']) or 'no setting'}; mean below uniform in "
                     f"{', '.join(v['worse_mean']) or 'no setting'}.")
    if winners:
        lines.insert(0, f"**Criterion met** (beats uniform with p (t) < 0.05 in at least one setting, loses in "
                        f"none) by: {', '.join(f'`{m}`' for m in winners)}.")
    else:
        lines.insert(0, "**Criterion not met**: no variant beats uniform with p (t) < 0.05 in at least one "
                        "setting while losing in none.")
    wins = sorted((m, label) for m in winners for label in verdict[m]["beats"])
    if wins:
        kept = [f"`{m}` in {label}" for m, label in wins if (m, label) in holm]
        lines.append(f"- Multiple comparisons: of these wins, {', '.join(kept) if kept else 'none'} "
                     f"survive{'s' if len(kept) == 1 else ''} Holm's correction over all {n_tests} "
                     f"variant-vs-uniform tests (family-wise {ALPHA:g}).")
    if short:
        lines.insert(0, f"**Provisional** (fewer than {MIN_PAIRS} seeds: {'; '.join(short)}); the sweep "
                        "continues where it stopped when run again.")
    return "\n".join(lines)


def write_report(rows: list[dict], a) -> None:
    from ..io import atomic_write_bytes

    entries, verdict = summarise(rows)
    left_out = rejected_seeds(rows)
    rows = kept_rows(rows)
    base = defaultdict(list)
    for r in rows:
        if r["method"] == "uniform" and r["reduction"] == min(a.reductions):
            base[r["arch"]].append(r["baseline_top1"])
    proto = rows[0]["protocol"] if rows else {}
    text = f"""# SNF search variants vs uniform pruning at equal FLOPs (digits)

Reproduce with `python -m repro.bench.snf_search` (all defaults; resumable: rerun to continue;
several processes may share the results file, e.g. one per `--archs`). This file was written by
`{a.command.strip()}` from `{a.results.name}` ({len(rows)} runs); do not edit by hand. SNF is an
abstract-level reimplementation, not the authors' code.

Protocol: {', '.join(f'{k} = {v}' for k, v in proto.items())}. Baselines (val top-1 on 360
images): {'; '.join(f'{k} {_ms(v)}' for k, v in base.items()) or '-'}. Seeds left out because their dense
baseline stayed below {a.min_baseline:g}% (a rule on the dense model only, the same for every method):
{', '.join(f'{k[0]} seed {k[1]} ({v:.2f}%)' for k, v in sorted(left_out.items())) or 'none'}. Uniform runs first at the
nominal reduction; every variant then gets the reduction uniform achieved as its target (column
"Δ FLOPs": how far above uniform's it lands, in points; at most 0.1). Same baseline, fine-tuning
schedule and data order for every method of a seed. "top-1 pruned, BN re-est.": before fine-tuning,
with BN statistics re-estimated on the training images. Wall times: this machine, one thread,
measured over several sittings while other work shared its two cores: compare them roughly only.

{table(entries)}

Tests: paired t-test (`scipy.stats.ttest_rel`, two-sided) = p (t); Wilcoxon signed-rank
(`scipy.stats.wilcoxon`, two-sided, exact) = p (W); both on the per-seed top-1 differences
variant - uniform. With 5 pairs the Wilcoxon test cannot reach p < 0.0625.

## Verdict

{verdict_text(verdict, entries, a.settings)}

## Variants against the original curves (`rise`)

{versus(entries, rows, "rise")}

Variants: {'; '.join(f'`{v.name}` = {v.summary}' for v in VARIANTS.values())}.
"""
    atomic_write_bytes(a.report, text.encode())
