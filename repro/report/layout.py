"""The paper's own layout: the main table in SFP's column order (one line per pruned row, its
baseline beside it, ImageNet cells as top-1 / top-5 pairs, at most 12 columns, sources and caveats
as footnote marks) and the run-details table (everything else, one line per row, its columns
declared once in RUN_DETAILS). Pure functions of the collected rows, shared by every renderer."""
from __future__ import annotations

from dataclasses import dataclass, field

from repro.papers.spec import METRIC_LABELS, PaperValue, TableSpec

from . import evidence as E
from .cells import (CHANCE, flops_mismatch, fmt_paper, fmt_printed, fmt_speedup, is_baseline, num,
                    status_text, target_missed)
from .collect import ALIGNED_TO, RowResult
from .legend import Legend
from .verdict import CONTEXT, NO_PAPER, NOT_RUN, Verdict, judge, row_verdict

NOT_RUN_TEXT = "not run"
UNCONFIRMED = "—"   # a paper cell no source confirms: its footnote says so
PAIR = "/"          # between top-1 and top-5 in one cell
CONTEXT_PROTOCOL = ("this table's protocol is not the one the paper's numbers were measured under; no "
                    "source gives a value for it")


@dataclass
class Cell:
    text: str
    marks: list[str] = field(default_factory=list)


def acc_metrics(spec: TableSpec) -> list[str]:
    return [m for m in spec.metrics if not m.endswith("_drop")]


def drop_metrics(spec: TableSpec) -> list[str]:
    return [m for m in spec.metrics if m.endswith("_drop")]


def main_columns(spec: TableSpec) -> list[str]:
    pair = " (" + " / ".join(METRIC_LABELS[m].lower() for m in acc_metrics(spec)) + ")" if len(acc_metrics(spec)) > 1 else ""
    return ["Depth", "Method", "Fine-tune?", f"Baseline{pair} paper", "Baseline ours", f"Pruned{pair} paper",
            "Pruned ours", "Drop paper", "Drop ours", "FLOPs↓ paper", "FLOPs↓ ours", "Verdict"]


# column groups of the LaTeX header: (label, first column, last column), 0-based
GROUPS = (("Baseline acc. (\\%)", 3, 4), ("Pruned acc. (\\%)", 5, 6), ("Drop", 7, 8), ("FLOPs$\\downarrow$ (\\%)", 9, 10))


def pruned_rows(rows: list[RowResult]) -> list[RowResult]:
    return [rr for rr in rows if not is_baseline(rr)]


def method(rr: RowResult) -> str:
    if rr.row.prune_rate:
        return f"SFP {round(rr.row.prune_rate * 100)}%"
    return rr.row.variant.split(" ")[0]


def fine_tune(rr: RowResult) -> str:
    """Y: started from a pre-trained model (FPGM's caption for its 'Fine-tune?' column)."""
    return "Y" if rr.row.init_from or rr.row.overrides.get("prune.init_from") else "N"


# ---------------------------------------------------------------------------- verdicts
def cell_verdict(spec: TableSpec, rr: RowResult | None, metric: str, smoke: bool) -> Verdict | None:
    """The verdict on one cell (None: nothing to judge, or a miniature)."""
    pv = rr.row.paper.get(metric) if rr is not None else None
    if smoke or pv is None:
        return None
    if not E.judged(spec):
        return Verdict(CONTEXT, reason=CONTEXT_PROTOCOL)
    if pv.context:
        return Verdict(CONTEXT, reason=pv.context)
    if not pv.confirmed or pv.value is None:
        return Verdict(NO_PAPER, reason=pv.note)
    est = E.ours(spec, rr, metric)
    return judge(E.comparison_at(spec, rr, metric), est.n if est else 0, E.min_runs(spec))


def row_cells_verdicts(spec: TableSpec, rr: RowResult, smoke: bool) -> list[Verdict]:
    cells = [cell_verdict(spec, rr.base, m, smoke) for m in acc_metrics(spec)]
    cells += [cell_verdict(spec, rr, m, smoke) for m in spec.metrics]
    return [v for v in cells if v is not None]


def verdict_of_row(spec: TableSpec, rr: RowResult, smoke: bool) -> Verdict | None:
    if smoke:
        return None
    own = [v for m in spec.metrics if (v := cell_verdict(spec, rr, m, smoke)) is not None]
    if own and all(v.label == CONTEXT for v in own):  # the row's own numbers are context: so is the row
        return own[0]
    return row_verdict(row_cells_verdicts(spec, rr, smoke), ran=rr.count("done") > 0)


def row_verdicts(spec: TableSpec, rows: list[RowResult], smoke: bool) -> list[Verdict]:
    return [v for rr in pruned_rows(rows) if (v := verdict_of_row(spec, rr, smoke)) is not None]


# ---------------------------------------------------------------------------- cells
def _paper_cell(pvs: list[PaperValue | None], legend: Legend, above: str | None = None) -> Cell:
    pvs = [pv for pv in pvs if pv is not None]
    if not pvs:
        return Cell("")
    marks = list(dict.fromkeys(m for pv in pvs for m in legend.marks(pv)))
    if any(pv.candidates for pv in pvs):  # a source's rows assigned to no variant: each row's pair
        rows = zip(*[pv.candidates for pv in pvs])
        text = "\nor ".join(PAIR.join(num(c) for c in row) for row in rows)
        marks.append(legend.note(pvs[0].note))
        return Cell("as above" if above == text else text, marks)
    if all(not pv.confirmed and pv.value is None for pv in pvs):
        return Cell(UNCONFIRMED, marks + [legend.note(pvs[0].note)])
    texts = [fmt_paper(pv) for pv in pvs]
    marks += [legend.note(pv.note) for pv in pvs if not pv.confirmed and pv.note]
    return Cell(PAIR.join(texts), list(dict.fromkeys(marks)))


def _ours_acc(spec: TableSpec, rr: RowResult | None, legend: Legend) -> Cell:
    if rr is None or not any(rr.values.get(m) for m in acc_metrics(spec)):
        return Cell(NOT_RUN_TEXT)
    parts = []
    for m in acc_metrics(spec):
        v = rr.values.get(m) or []
        s = rr.std(m)
        parts.append("—" if not v else num(rr.mean(m)) + (f" ± {num(s)}" if s is not None else ""))
    chance = [m for m in acc_metrics(spec) if rr.chance_runs(m)]
    marks = [legend.note(f"{CHANCE}: {rr.row.model} {rr.row.variant}, {METRIC_LABELS[m]}: {rr.chance_runs(m)} of "
                         f"{len(rr.values.get(m) or [])} finished runs within chance level (a broken run, not a result)")
             for m in chance]
    return Cell(PAIR.join(parts), marks)


def _ours_drop(spec: TableSpec, rr: RowResult) -> Cell:
    ests = [E.ours(spec, rr, m) for m in drop_metrics(spec)]
    if all(e is None for e in ests):
        return Cell(NOT_RUN_TEXT)
    return Cell(PAIR.join("—" if e is None else num(e.mean) + (f" ± {num(e.spread)}" if e.n > 1 else "")
                           for e in ests))


def _flops_paper(rr: RowResult, legend: Legend) -> Cell:
    pv = rr.row.flops_paper
    if pv is None:
        return Cell("")
    cell = Cell(fmt_printed(pv) if pv.confirmed else UNCONFIRMED, legend.marks(pv))
    if not pv.confirmed and pv.note:
        cell.marks.append(legend.note(pv.note))
    if flops_mismatch(rr):
        cell.marks.append(legend.note(
            f"{rr.row.model} {method(rr)}: printed FLOPs↓ {pv.value:g}, but the paper's own float convention "
            f"counted correctly gives {rr.flops_float:.2f}"))
    return cell


def _flops_ours(rr: RowResult, legend: Legend) -> Cell:
    x = rr.flops_measured if rr.flops_measured is not None else rr.flops_actual
    if x is None:
        return Cell("")
    marks = []
    if target_missed(rr):
        marks.append(legend.note(f"{rr.row.model} {method(rr)}: the runs reached FLOPs↓ {rr.flops_measured:.2f}, "
                                 f"off the target {rr.row.flops_target:g}"))
    return Cell(num(x), marks)


def _verdict_cell(spec: TableSpec, rr: RowResult, smoke: bool, legend: Legend) -> Cell:
    if smoke:
        return Cell("none (miniature)")
    cells = row_cells_verdicts(spec, rr, smoke)
    v = verdict_of_row(spec, rr, smoke)
    marks = [legend.note(f"Context only: {c.reason}") for c in cells if c.label == CONTEXT and c.reason]
    if v.label != NOT_RUN:
        marks += [legend.note(f"Paper's uncertainty: {c.comparison.basis}") for c in cells
                  if c.comparison is not None and c.comparison.basis]
    text = v.short().replace(" (", "\n(").replace("not reproduced", "not\nreproduced")  # lines in LaTeX
    return Cell(text, list(dict.fromkeys(marks)))


def main_rows(spec: TableSpec, rows: list[RowResult], smoke: bool, legend: Legend) -> list[list[Cell]]:
    out, last_pruned = [], {}
    for rr in pruned_rows(rows):
        base_pvs = [rr.base.row.paper.get(m) if rr.base else None for m in acc_metrics(spec)]
        pruned = _paper_cell([rr.row.paper.get(m) for m in acc_metrics(spec)], legend, last_pruned.get(rr.row.model))
        last_pruned[rr.row.model] = pruned.text
        drop_paper = _paper_cell([rr.row.paper.get(m) for m in drop_metrics(spec)], legend,
                                 last_pruned.get(rr.row.model + "/drop"))
        last_pruned[rr.row.model + "/drop"] = drop_paper.text
        ours_pruned = _ours_acc(spec, rr, legend)
        out.append([Cell(rr.row.model), Cell(method(rr)), Cell(fine_tune(rr)), _paper_cell(base_pvs, legend),
                    _ours_acc(spec, rr.base, legend), pruned, ours_pruned, drop_paper, _ours_drop(spec, rr),
                    _flops_paper(rr, legend), _flops_ours(rr, legend), _verdict_cell(spec, rr, smoke, legend)])
    return out


# ---------------------------------------------------------------------------- run details
@dataclass(frozen=True)
class Detail:
    spec: TableSpec
    rr: RowResult
    smoke: bool


def _checks(d: Detail) -> str:
    """Each judged cell with its figures; cells without figures grouped by their label."""
    if d.rr.count("done") == 0:
        return NOT_RUN_TEXT
    out: dict[str, list[str]] = {}
    for m in d.spec.metrics:
        v = cell_verdict(d.spec, d.rr, m, d.smoke)
        if v is not None:
            out.setdefault(v.detail() if v.comparison is not None else v.short(), []).append(METRIC_LABELS[m])
    return "; ".join(f"{', '.join(ms)} {text}" for text, ms in out.items())


def _n(d: Detail) -> str:
    return ", ".join(f"{METRIC_LABELS[m]} {e.n}" for m in d.spec.metrics if (e := E.ours(d.spec, d.rr, m)))


# The run's own latency (result.json ``latency``, repro/engine/latency.py) two ways: the models as
# delivered (the column every run fills), and aligned to multiples of 8 filters with BN folded.
SPEEDUP_MEASURED = "Speed-up measured (as delivered)"
SPEEDUP_ALIGNED = f"Speed-up aligned x{ALIGNED_TO} + BN folded"

# The run-details table: (header, cell). One line here adds a column to every renderer.
RUN_DETAILS = (
    ("Depth", lambda d: d.rr.row.model),
    ("Variant", lambda d: d.rr.row.variant),
    ("n (runs behind each cell)", _n),
    ("Checks: d = ours − paper, its 90% interval, the band", _checks),
    ("FLOPs↓ float conv.", lambda d: "0" if is_baseline(d.rr) else num(d.rr.flops_float)),
    (SPEEDUP_MEASURED, lambda d: fmt_speedup(d.rr, d.rr.speedup_measured)),
    (SPEEDUP_ALIGNED, lambda d: fmt_speedup(d.rr, d.rr.speedup_aligned_folded)),
    ("Speed-up MACs", lambda d: fmt_speedup(d.rr, d.rr.speedup_macs)),
    ("Speed-up deployed", lambda d: fmt_speedup(d.rr, d.rr.speedup_deployed)),
    ("Cost measured", lambda d: "; ".join(r.cost.text() for r in d.rr.runs if r.cost.hours is not None) or "—"),
    ("Status", lambda d: status_text(d.rr)),
)


# Shown only when some row has a value: the exports are opt-in (``python -m repro.export``), and
# runs finished before the engine timed the aligned + folded models do not have that figure.
OPTIONAL_DETAILS = {"Speed-up deployed": lambda rr: rr.speedup_deployed,
                    SPEEDUP_ALIGNED: lambda rr: rr.speedup_aligned_folded}


def _detail_columns(rows: list[RowResult]) -> list[tuple]:
    return [(h, f) for h, f in RUN_DETAILS if h not in OPTIONAL_DETAILS or any(OPTIONAL_DETAILS[h](r) for r in rows)]


def run_details(spec: TableSpec, rows: list[RowResult], smoke: bool) -> list[list[str]]:
    return [[cell(Detail(spec, rr, smoke)) for _, cell in _detail_columns(rows)] for rr in rows]


def run_detail_headers(rows: list[RowResult]) -> list[str]:
    return [h for h, _ in _detail_columns(rows)]
