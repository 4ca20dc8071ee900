"""The plot a reviewer reads: a forest plot (per row and cell, ours − paper with its 90% interval
against the ±δ band: reproduced rows sit inside, not-reproduced rows outside, inconclusive ones
straddle it) beside accuracy vs FLOPs↓ (ours filled, the paper hollow, both at the papers' float
convention counted correctly, so one configuration sits at one x). A table with no run of ours
says so on the plot; a miniature shows no paper points (its numbers are not comparable)."""
from __future__ import annotations

import textwrap
from pathlib import Path

from repro.papers.spec import METRIC_LABELS, TableSpec

from . import evidence as E
from . import layout as L
from .cells import is_baseline, title_of
from .collect import RowResult
from .verdict import NOT_REPRODUCED, REPRODUCED, interval

COLOURS = {REPRODUCED: "tab:green", NOT_REPRODUCED: "tab:red"}  # inconclusive: grey


def _forest(ax, spec: TableSpec, rows: list[RowResult], smoke: bool) -> None:
    entries = []
    for rr in rows:
        for m in spec.metrics:
            v = L.cell_verdict(spec, rr, m, smoke)
            if v is not None and v.comparison is not None and v.judged:
                entries.append((f"{rr.row.model} {L.method(rr) if not is_baseline(rr) else 'base'}"
                                f"{' FT' if L.fine_tune(rr) == 'Y' else ''} {METRIC_LABELS[m]}", v))
    if not entries:
        why = ("a miniature: not comparable, no verdict" if smoke else
               "no run of ours yet" if not any(rr.count("done") for rr in rows) else
               "no cell with enough runs, or no judged cell")
        ax.text(0.5, 0.5, f"No verdict to plot:\n{why}", ha="center", va="center", fontsize=10,
                transform=ax.transAxes)
        ax.set_xticks([]), ax.set_yticks([])
        return
    delta = E.margin(spec).delta
    ax.axvspan(-delta, delta, color="0.9", label=f"±δ = {delta:g}")
    ax.axvline(0, color="0.5", lw=0.8)
    for i, (label, v) in enumerate(entries):
        lo, hi = interval(v.comparison)
        c = COLOURS.get(v.label, "0.45")
        ax.plot([lo, hi], [i, i], color=c, lw=2)
        ax.plot([v.comparison.diff], [i], "o", color=c)
    ax.set_yticks(range(len(entries)), [e[0] for e in entries], fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("ours − paper, points (90% interval)")
    ax.set_title("Verdicts: green reproduced, red not, grey inconclusive", fontsize=8)


def _acc_vs_flops(ax, spec: TableSpec, rows: list[RowResult], smoke: bool) -> None:
    models = list(dict.fromkeys(rr.row.model for rr in rows))
    colours = {m: f"C{i}" for i, m in enumerate(models)}
    ours_any = False
    for rr in rows:
        x = 0.0 if is_baseline(rr) else (rr.flops_float if rr.flops_float is not None else rr.flops_measured)
        mk = "s" if L.fine_tune(rr) == "Y" else "o"
        if x is not None and rr.mean("top1") is not None:
            ours_any = True
            ax.errorbar([x], [rr.mean("top1")], yerr=[rr.std("top1") or 0.0], fmt=mk, color=colours[rr.row.model],
                        capsize=3)
        pv = rr.row.paper.get("top1")
        px = 0.0 if is_baseline(rr) else (rr.flops_float if rr.flops_float is not None else rr.row.flops_target)
        if not smoke and pv is not None and pv.confirmed and px is not None:
            ax.plot([px], [pv.value], mk, mfc="none", color=colours[rr.row.model])
    for m in models:
        ax.plot([], [], "s", color=colours[m], label=m)
    ax.plot([], [], "o", color="0.4", label="from scratch"), ax.plot([], [], "s", color="0.4", label="from pre-trained")
    if not smoke:
        ax.plot([], [], "o", color="0.4", mfc="none", label="paper (hollow)")
    if not ours_any:
        ax.text(0.5, 0.04, "no run of ours yet: paper points only" if not smoke else "no run yet",
                transform=ax.transAxes, ha="center", fontsize=9, color="tab:red",
                bbox={"facecolor": "white", "edgecolor": "tab:red"})
    ax.set_xlabel("FLOPs↓, % (papers' float convention, counted correctly)")
    ax.set_ylabel("top-1 accuracy, %")
    ax.set_title("ours filled ± std" + ("" if smoke else ", paper hollow"), fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="best")


def render_png(spec: TableSpec, rows: list[RowResult], path: Path, smoke: bool) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = sum(1 for rr in rows for m in spec.metrics if rr.row.paper.get(m) is not None)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, max(4.5, 0.16 * n + 1.5)), dpi=100,
                                      gridspec_kw={"width_ratios": [1.1, 1]})
    _forest(left, spec, rows, smoke)
    _acc_vs_flops(right, spec, rows, smoke)
    fig.suptitle("\n".join(textwrap.wrap(title_of(spec, smoke), 110)), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})  # no version string: same runs -> same bytes
    plt.close(fig)
