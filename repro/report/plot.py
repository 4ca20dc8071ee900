"""The accuracy-vs-FLOPs plot of a table (ours filled with error bars, the paper hollow)."""
from __future__ import annotations

from pathlib import Path

from repro.papers.spec import TableSpec

from .collect import RowResult
from .cells import is_baseline, title_of


def render_png(spec: TableSpec, rows: list[RowResult], path: Path, smoke: bool) -> None:
    """Top-1 vs FLOPs reduction: ours (filled, error bars = std) and the paper (hollow)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    models = list(dict.fromkeys(rr.row.model for rr in rows))
    colors = {m: f"C{i}" for i, m in enumerate(models)}
    markers = {}
    for rr in rows:
        x = 0.0 if is_baseline(rr) else rr.flops_actual
        markers.setdefault(rr.row.variant, "osD^v<>"[len(markers) % 7])
        mk, c = markers[rr.row.variant], colors[rr.row.model]
        if x is not None and rr.mean("top1") is not None:
            ax.errorbar([x], [rr.mean("top1")], yerr=[rr.std("top1") or 0.0], fmt=mk, color=c, capsize=3)
        pv = rr.row.paper.get("top1")
        px = 0.0 if is_baseline(rr) else (rr.row.flops_paper.value if rr.row.flops_paper and
                                          rr.row.flops_paper.confirmed else rr.flops_float)
        if pv is not None and pv.confirmed and px is not None:
            ax.plot([px], [pv.value], mk, mfc="none", color=c)
    for m in models:
        ax.plot([], [], "s", color=colors[m], label=m)
    for v, mk in markers.items():
        ax.plot([], [], mk, color="0.4", label=v)
    ax.plot([], [], "o", color="0.4", mfc="none", label="paper (hollow)")
    ax.set_xlabel("FLOPs reduction, % of conv MACs (ours: actual; paper: printed)")
    ax.set_ylabel("top-1 accuracy, %")
    title = title_of(spec, smoke)
    ax.set_title(title if len(title) < 90 else title[:87] + "...", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})  # no version string: same runs -> same bytes
    plt.close(fig)
