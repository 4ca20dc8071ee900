"""Formatting helpers for a table's cells (numbers, paper values, FLOPs flags, speed-ups, status) and
the notes under it. Pure functions of the collected rows, shared by ``layout`` and the renderers."""
from __future__ import annotations

import math
from dataclasses import dataclass

from repro.papers.spec import METRIC_LABELS, PaperValue, TableSpec

from .collect import ALIGNED_TO, RowResult

FLOPS_TOLERANCE = 0.05  # points; a printed FLOPs value further than this from the count is flagged
SNF_TOLERANCE = 0.1     # points; an SNF run must meet its FLOPs target this closely (docs/papers.md)
CHANCE = "at chance"    # after an accuracy whose runs sit within chance level (collect.at_chance)

LEGEND = ("ours = mean ± sample std of the finished runs (their number: the run details); drop = "
          "baseline − pruned (points, positive = worse; ours paired by seed where the pruned run starts "
          "from that seed's baseline); FLOPs↓ in percent of conv multiply-accumulates: 'paper' as printed, "
          "'ours' = what the delivered models keep (the integer filter counts; SNF: measured), 'float conv.' "
          "(run details) = the papers' float keep-ratio convention counted correctly; speed-up 'measured "
          "(as delivered)' = dense latency / delivered-model latency as each run timed them, both as delivered "
          "(BN not folded, the pruned widths), 'aligned x8 + BN folded' (shown when runs recorded it) = the "
          "same with BN folded into the convs of both and the delivered convs grown to multiples of 8 filters "
          "with exactly-zero ones (the same function; the form GPU kernels run fast), 'MACs' = baseline conv "
          "MACs / delivered conv MACs (the theoretical speed-up), 'deployed' (shown when runs were exported) = "
          "dense / exported model latency, BN folded, ONNX Runtime on CPU (else TorchScript), at the "
          "throughput batch (`python -m repro.export`); "
          f"'{CHANCE}' = a run's accuracy is within 2 "
          "binomial std of guessing (100/classes).")


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
            parts.append(f"{'not run' if st == 'missing' else st} {rr.count(st)}")
    reasons = sorted({r.detail for r in rr.runs if r.status == "failed" and r.detail})
    text = ", ".join(parts)
    return text + (f" ({'; '.join(reasons)})" if reasons else "")


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
    text = f"Speed-up measured on: {'; '.join(one(*s) for s in settings)}."
    aligned = list(dict.fromkeys(n for rr in rows for n in rr.aligned_repeats))
    if aligned:  # the same device, batch, threads and precision; its own number of rounds
        text += (f" Aligned x{ALIGNED_TO} + BN folded: the same settings, "
                 f"{' / '.join('?' if n is None else str(n) for n in aligned)} repeats.")
    return text


def notes(spec: TableSpec, rows: list[RowResult]) -> list[str]:
    """The table's own notes and what the runs measured that the cells do not say."""
    out = list(spec.notes)
    for rr in rows:
        if rr.row.prune_rate and rr.flops_measured is not None and rr.flops_actual is not None and \
                abs(rr.flops_measured - rr.flops_actual) > FLOPS_TOLERANCE:
            out.append(f"{rr.row.model} {rr.row.variant}: the runs measured FLOPs↓ {rr.flops_measured:.2f}, "
                       f"the count gives {rr.flops_actual:.2f}.")
    if (lat := _latency_note(rows)) is not None:
        out.append(lat)
    return list(dict.fromkeys(out))  # the same note may come from many cells: once, in order
