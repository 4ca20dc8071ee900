"""A collected table as long-format CSV: one line per row and metric (with the verdict's figures),
FLOPs conventions and speed-ups as metrics too, one line per main-table row (its verdict), one line
per run (its cost), then the table-wide lines (verdict summary and rule, sources, footnotes, notes)
with their text in `note`."""
from __future__ import annotations

import csv
import io

from repro.papers.spec import TableSpec

from . import evidence as E
from . import layout as L
from .cells import fmt_speedup, is_baseline, mean_of, notes
from .collect import RowResult
from .legend import Legend
from .render import _summary
from .verdict import interval

CSV_FIELDS = ["table", "smoke", "row", "model", "variant", "metric", "paper", "paper_std", "paper_confirmed",
              "paper_candidates", "paper_source", "paper_caveat", "ours_mean", "ours_std", "ours_n", "diff",
              "ci90_lo", "ci90_hi", "band_lo", "band_hi", "paper_uncertainty", "verdict", "runs_needed",
              "at_chance_runs", "estimate", "runs_done", "runs_running", "runs_failed", "runs_missing", "note"]


def _num(x) -> str:
    return "" if x is None else f"{x:.4f}"


def _line(**kw) -> list:
    return [kw.get(f, "") for f in CSV_FIELDS]


def _paper_fields(pv, legend: Legend) -> dict:
    if pv is None:
        return {}
    return dict(paper=_num(pv.value), paper_std=_num(pv.std), paper_confirmed=int(pv.confirmed),
                paper_candidates="|".join(f"{c:.2f}" for c in pv.candidates), paper_source=pv.source,
                paper_caveat=(f"{legend.caveat_id(pv)}: {pv.caveat}" if pv.caveat else ""))


def _verdict_fields(v) -> dict:
    if v is None:
        return {}
    out = dict(verdict=v.label, runs_needed=v.runs_needed or "", note=v.detail())
    if v.comparison is not None:
        c = v.comparison
        lo, hi = interval(c)
        out |= dict(diff=_num(c.diff), ci90_lo=_num(lo), ci90_hi=_num(hi), band_lo=_num(c.lo), band_hi=_num(c.hi),
                    paper_uncertainty=c.basis)
    return out


def _metric_lines(w, spec: TableSpec, rr: RowResult, smoke: bool, legend: Legend, common: dict) -> None:
    for m in spec.metrics:
        pv, est = rr.row.paper.get(m), E.ours(spec, rr, m)
        v = L.cell_verdict(spec, rr, m, smoke)
        w.writerow(_line(**common, metric=m, **_paper_fields(pv, legend),
                         ours_mean=_num(est.mean if est else None),
                         ours_std=_num(est.spread if est and est.n > 1 else None), ours_n=est.n if est else 0,
                         at_chance_runs="" if m.endswith("_drop") else rr.chance_runs(m), **_verdict_fields(v)))
    base, fp = is_baseline(rr), rr.row.flops_paper
    for m, val in (("flops_reduction_float", 0.0 if base else rr.flops_float),
                   ("flops_reduction_actual", 0.0 if base else rr.flops_actual)):
        ref = fp if (fp is not None and m == "flops_reduction_float") else None
        w.writerow(_line(**common, metric=m, **_paper_fields(ref, legend), ours_mean=_num(val),
                         diff=_num(val - ref.value if (ref and ref.confirmed and val is not None) else None)))
    if not base:
        for m, xs in (("speedup_measured", rr.speedup_measured), ("speedup_aligned_folded", rr.speedup_aligned_folded),
                      ("speedup_macs", rr.speedup_macs)):
            w.writerow(_line(**common, metric=m, ours_mean=_num(mean_of(xs)), ours_n=len(xs),
                             note="" if fmt_speedup(rr, xs) != "—" else "no run recorded it"))
        if (v := L.verdict_of_row(spec, rr, smoke)) is not None:
            w.writerow(_line(**common, metric="row_verdict", verdict=v.label, runs_needed=v.runs_needed or "",
                             note=v.short()))


def render_csv(spec: TableSpec, rows: list[RowResult], smoke: bool) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    legend = Legend(spec, [rr.row for rr in rows])
    L.main_rows(spec, rows, smoke, legend)  # numbers the footnotes as the other renderers do
    for rr in rows:
        common = dict(table=spec.name, smoke=int(smoke), row=rr.row.key, model=rr.row.model, variant=rr.row.variant,
                      **dict(zip(("runs_done", "runs_running", "runs_failed", "runs_missing"),
                                 (rr.count(s) for s in ("done", "running", "failed", "missing")))))
        _metric_lines(w, spec, rr, smoke, legend, common)
    for rr in rows:
        for r in rr.runs:
            w.writerow(_line(table=spec.name, smoke=int(smoke), row=r.key, model=rr.row.model,
                             variant=rr.row.variant, metric="cost_hours", ours_mean=_num(r.cost.hours),
                             estimate=_num(r.estimate), note=_cost_note(r)))
    s = _summary(spec, rows, smoke)
    table_lines = [("verdict_summary", s["verdict"]), ("verdict_rule", s["rule"]), ("cost_total", s["cost"])]
    table_lines += [("source", x) for x in legend.source_items()] + [("footnote", x) for x in legend.caveat_items()]
    table_lines += [("note", n) for n in notes(spec, rows)]
    for metric, text in table_lines:
        w.writerow(_line(table=spec.name, smoke=int(smoke), metric=metric, note=text))
    return buf.getvalue()


def _cost_note(r) -> str:
    parts = [f"{r.cost.kind}-hours measured" if r.cost.hours is not None else "not recorded",
             f"{r.cost.attempts} attempt(s)" if r.cost.attempts else "",
             "" if r.cost.exact else "an upper bound: the world size changed between attempts",
             f"status {r.status}", f"folder {r.folder}"]
    return "; ".join(p for p in parts if p)
