"""The cells of a table, as text: paper value with its source, ours, Δ, verdict, FLOPs three ways,
speed-ups, status; and the notes and legend under it. Pure functions of the collected rows, shared
by the Markdown, LaTeX and CSV renderers (``render``), so the three say the same thing."""
from __future__ import annotations

import math
from dataclasses import dataclass

from repro.papers.spec import METRIC_LABELS, PaperValue, TableSpec

from .collect import RowResult
from .legend import Legend
from .verdict import Verdict, judge

FLOPS_TOLERANCE = 0.05  # points; a printed FLOPs value further than this from the count is flagged
SNF_TOLERANCE = 0.1     # points; an SNF run must meet its FLOPs target this closely (docs/papers.md)
CHANCE = "at chance"    # after an accuracy whose runs sit within chance level (collect.at_chance)

LEGEND = ("ours = mean ± sample std (n finished runs); Δ = ours − paper; drop = baseline − pruned "
          "(points, positive = worse); FLOPs↓ in percent of conv multiply-accumulates: 'paper' as "
          "printed, 'float conv.' = the papers' float keep-ratio convention counted correctly, "
          "'actual' = the integer filter counts the masks really keep (SNF: measured); speed-up "
          "'measured' = dense latency / delivered-model latency as each run timed it, 'MACs' = "
          "baseline conv MACs / delivered conv MACs (the theoretical speed-up); "
          f"'{CHANCE}' = a run's accuracy is within 2 binomial std of guessing (100/classes).")


def num(x: float | None, nd: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    s = f"{x:.{nd}f}"
    return "0." + "0" * nd if s == "-0." + "0" * nd else s


def fmt_paper(pv: PaperValue | None, nd: int = 2) -> str:
    """A paper number without its source: '92.08 ± 0.08', 'unconfirmed', '77.03 or 77.51 (unassigned)'."""
    if pv is None:
        return ""
    if not pv.confirmed:
        if pv.candidates:
            return " or ".join(num(c, nd) for c in pv.candidates) + " (unassigned)"
        return "unconfirmed" if pv.value is None else f"{num(pv.value, nd)} (unconfirmed)"
    return num(pv.value, nd) + (f" ± {num(pv.std, nd)}" if pv.std is not None else "")


def with_source(text: str, pv: PaperValue | None, legend: Legend) -> str:
    mark = legend.mark(pv)
    return f"{text} {mark}" if text and mark else text


def fmt_ours(rr: RowResult, metric: str) -> str:
    if metric.endswith("_drop"):
        return num(rr.mean(metric)) if rr.values.get(metric) else "—"
    n = len(rr.values.get(metric) or [])
    if n == 0:
        return "—"
    s = rr.std(metric)
    text = num(rr.mean(metric)) + (f" ± {num(s)}" if s is not None else "") + f" ({n})"
    k = rr.chance_runs(metric)
    return text + (f" {CHANCE}" + (f" ({k} of {n})" if k != n else "") if k else "")


def delta(rr: RowResult, metric: str) -> float | None:
    pv = rr.row.paper.get(metric)
    ours = rr.mean(metric)
    if pv is None or pv.value is None or not pv.confirmed or ours is None:
        return None
    return ours - pv.value


def verdict_of(spec: TableSpec, rr: RowResult, metric: str, smoke: bool) -> Verdict | None:
    if smoke:  # a miniature run is not comparable to the paper: no verdict at all
        return None
    return judge(rr.row.paper.get(metric), rr.mean(metric), rr.std(metric), rr.n.get(metric, 0), spec.paper_runs)


def all_verdicts(spec: TableSpec, rows: list[RowResult], smoke: bool) -> list[Verdict]:
    return [v for rr in rows for m in spec.metrics if (v := verdict_of(spec, rr, m, smoke)) is not None]


def flops_mismatch(rr: RowResult) -> bool:
    fp = rr.row.flops_paper
    return (fp is not None and fp.confirmed and rr.flops_float is not None
            and abs(rr.flops_float - fp.value) > FLOPS_TOLERANCE)


def target_missed(rr: RowResult) -> bool:
    """SNF: the searched structure must meet its FLOPs target to within SNF_TOLERANCE points."""
    return (rr.row.flops_target is not None and rr.flops_measured is not None
            and abs(rr.flops_measured - rr.row.flops_target) > SNF_TOLERANCE)


def is_baseline(rr: RowResult) -> bool:
    return rr.row.baseline is None and not rr.row.prune_rate and rr.row.flops_target is None


def mean_of(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def fmt_speedup(rr: RowResult, xs: list[float]) -> str:
    if is_baseline(rr):
        return ""
    m = mean_of(xs)
    return "—" if m is None else f"{m:.2f}×"


def status_text(rr: RowResult) -> str:
    n = len(rr.runs)
    parts = [f"done {rr.count('done')}/{n}"] if rr.count("done") else []
    for st in ("running", "failed", "missing"):
        if rr.count(st):
            parts.append(f"{st} {rr.count(st)}")
    reasons = sorted({r.detail for r in rr.runs if r.status == "failed" and r.detail})
    text = ", ".join(parts)
    return text + (f" ({'; '.join(reasons)})" if reasons else "")


def columns(spec: TableSpec) -> list[str]:
    cols = ["Model", "Variant"]
    for m in spec.metrics:
        lab = METRIC_LABELS[m]
        cols += [f"{lab} paper", f"{lab} ours"] + ([f"{lab} Δ"] if not m.endswith("_drop") else [])
        cols.append(f"{lab} verdict")
    return cols + ["FLOPs↓ paper", "FLOPs↓ float conv.", "FLOPs↓ actual", "Speed-up measured",
                   "Speed-up MACs", "Status"]


def row_cells(spec: TableSpec, rr: RowResult, smoke: bool, legend: Legend) -> list[str]:
    cells = [rr.row.model, rr.row.variant]
    for m in spec.metrics:
        pv = rr.row.paper.get(m)
        cells += [with_source(fmt_paper(pv), pv, legend), fmt_ours(rr, m)]
        if not m.endswith("_drop"):
            d = None if smoke else delta(rr, m)  # a miniature run is not comparable: no Δ
            cells.append("" if d is None else f"{d:+.2f}")
        v = verdict_of(spec, rr, m, smoke)
        cells.append("" if v is None else v.text())
    fpv = rr.row.flops_paper
    fp = with_source(fmt_printed(fpv), fpv, legend) if fpv else ("0" if is_baseline(rr) else "")
    ff = "" if rr.flops_float is None else num(rr.flops_float) + (" !" if flops_mismatch(rr) else "")
    fa = "" if rr.flops_actual is None else num(rr.flops_actual) + (" !" if target_missed(rr) else "")
    if is_baseline(rr):
        ff, fa = "0", "0"
    return cells + [fp, ff, fa, fmt_speedup(rr, rr.speedup_measured), fmt_speedup(rr, rr.speedup_macs),
                    status_text(rr)]


def fmt_printed(pv: PaperValue) -> str:
    """A printed FLOPs value with the decimals the paper used (41.8, 52.94)."""
    if pv.confirmed and pv.value is not None:
        return f"{pv.value:g}"
    return fmt_paper(pv)


def title_of(spec: TableSpec, smoke: bool) -> str:
    if smoke:
        return (f"SMOKE TABLE — miniature {spec.name} on generated data, NOT comparable to the paper: "
                f"{spec.title}")
    return f"{spec.name}: {spec.title}"


@dataclass(frozen=True)
class Chance:
    label: str
    metric: str
    runs: int
    of: int


def chance_cells(spec: TableSpec, rows: list[RowResult]) -> list[Chance]:
    return [Chance(f"{rr.row.model} {rr.row.variant}", METRIC_LABELS[m], rr.chance_runs(m), len(rr.values.get(m) or []))
            for rr in rows for m in spec.metrics if not m.endswith("_drop") and rr.chance_runs(m)]


def _latency_note(rows: list[RowResult]) -> str | None:
    settings = list(dict.fromkeys(s for rr in rows for s in rr.latency_settings))
    if not settings:
        return None
    def one(d, b, t, p, r, n) -> str:  # a key a run did not record is left out, never guessed
        parts = [f"device {d}" if d is not None else "", f"batch {b}" if b is not None else "",
                 f"{t} thread{'s' if t != 1 else ''}" if t is not None else "", str(p) if p is not None else "",
                 f"{r} px" if r is not None else "", f"{n} repeats" if n is not None else ""]
        return ", ".join(x for x in parts if x) or "settings not recorded"
    return f"Speed-up measured on: {'; '.join(one(*s) for s in settings)}."


def notes(spec: TableSpec, rows: list[RowResult]) -> list[str]:
    out = list(spec.notes)
    unconf: dict[str, dict[str, list[str]]] = {}  # note -> row label -> metric labels
    for rr in rows:
        label = f"{rr.row.model} {rr.row.variant}"
        cells = [(METRIC_LABELS[m], pv) for m, pv in rr.row.paper.items()]
        if rr.row.flops_paper is not None:
            cells.append(("FLOPs↓", rr.row.flops_paper))
        for mlabel, pv in cells:
            if not pv.confirmed:
                unconf.setdefault(pv.note or "not confirmed", {}).setdefault(label, []).append(mlabel)
    for note, by_row in unconf.items():
        where = "; ".join(f"{r} ({', '.join(ms)})" for r, ms in by_row.items())
        out.append(f"Unconfirmed paper cells — {note}: {where}.")
    for rr in rows:
        if flops_mismatch(rr):
            out.append(f"{rr.row.model} {rr.row.variant}: FLOPs↓ printed {rr.row.flops_paper.value:.1f} but the "
                       f"paper's own convention gives {rr.flops_float:.2f} (flagged !).")
        if target_missed(rr):
            out.append(f"{rr.row.model} {rr.row.variant}: the runs reached FLOPs↓ {rr.flops_measured:.2f}, "
                       f"more than {SNF_TOLERANCE} points from the target {rr.row.flops_target:g} (flagged !).")
        if rr.row.prune_rate and rr.flops_measured is not None and rr.flops_actual is not None and \
                abs(rr.flops_measured - rr.flops_actual) > FLOPS_TOLERANCE:
            out.append(f"{rr.row.model} {rr.row.variant}: the runs measured FLOPs↓ {rr.flops_measured:.2f}, "
                       f"the count gives {rr.flops_actual:.2f}.")
    for c in chance_cells(spec, rows):
        out.append(f"{c.label}, {c.metric}: {c.runs} of {c.of} finished runs within chance level "
                   f"(a broken run, not a result).")
    if (lat := _latency_note(rows)) is not None:
        out.append(lat)
    return list(dict.fromkeys(out))  # the same note may come from many cells: once, in order
