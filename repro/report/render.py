"""Rendering a collected table: the cells (paper, ours, Δ, drops, FLOPs three ways, status), the
notes, and the Markdown, booktabs LaTeX and long-format CSV files. Pure functions of the
collected rows: the same run folders always give byte-identical text."""
from __future__ import annotations

import csv
import io
import math

from repro.papers.spec import METRIC_LABELS, PaperValue, TableSpec

from .collect import RowResult

FLOPS_TOLERANCE = 0.05  # points; a printed FLOPs value further than this from the count is flagged
SNF_TOLERANCE = 0.1     # points; an SNF run must meet its FLOPs target this closely (docs/papers.md)


def _num(x: float | None, nd: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    s = f"{x:.{nd}f}"
    return "0." + "0" * nd if s in ("-0." + "0" * nd,) else s


def fmt_paper(pv: PaperValue | None, nd: int = 2) -> str:
    if pv is None:
        return ""
    if not pv.confirmed:
        return "unconfirmed" if pv.value is None else f"{_num(pv.value, nd)} (unconfirmed)"
    return _num(pv.value, nd) + (f" ± {_num(pv.std, nd)}" if pv.std is not None else "")


def fmt_ours(rr: RowResult, metric: str) -> str:
    if metric.endswith("_drop"):
        return _num(rr.mean(metric)) if rr.values.get(metric) else "—"
    n = len(rr.values.get(metric) or [])
    if n == 0:
        return "—"
    s = rr.std(metric)
    return f"{_num(rr.mean(metric))}" + (f" ± {_num(s)}" if s is not None else "") + f" ({n})"


def delta(rr: RowResult, metric: str) -> float | None:
    pv = rr.row.paper.get(metric)
    ours = rr.mean(metric)
    if pv is None or pv.value is None or not pv.confirmed or ours is None:
        return None
    return ours - pv.value


def flops_mismatch(rr: RowResult) -> bool:
    fp = rr.row.flops_paper
    return (fp is not None and fp.confirmed and rr.flops_float is not None
            and abs(rr.flops_float - fp.value) > FLOPS_TOLERANCE)


def status_text(rr: RowResult) -> str:
    n = len(rr.runs)
    parts = [f"done {rr.count('done')}/{n}"] if rr.count("done") else []
    for st in ("running", "failed", "missing"):
        if rr.count(st):
            parts.append(f"{st} {rr.count(st)}")
    reasons = sorted({r.detail for r in rr.runs if r.status == "failed" and r.detail})
    text = ", ".join(parts)
    return text + (f" ({'; '.join(reasons)})" if reasons else "")


def _columns(spec: TableSpec) -> list[str]:
    cols = ["Model", "Variant"]
    for m in spec.metrics:
        lab = METRIC_LABELS[m]
        cols += [f"{lab} paper", f"{lab} ours"] + ([f"{lab} Δ"] if not m.endswith("_drop") else [])
    return cols + ["FLOPs↓ paper", "FLOPs↓ float conv.", "FLOPs↓ actual", "Status"]


def _row_cells(spec: TableSpec, rr: RowResult, smoke: bool) -> list[str]:
    cells = [rr.row.model, rr.row.variant]
    for m in spec.metrics:
        cells += [fmt_paper(rr.row.paper.get(m)) or "", fmt_ours(rr, m)]
        if not m.endswith("_drop"):
            d = None if smoke else delta(rr, m)  # a miniature run is not comparable: no Δ
            cells.append("" if d is None else f"{d:+.2f}")
    fp = _fmt_printed(rr.row.flops_paper) if rr.row.flops_paper else ("0" if is_baseline(rr) else "")
    ff = "" if rr.flops_float is None else _num(rr.flops_float) + (" !" if flops_mismatch(rr) else "")
    fa = "" if rr.flops_actual is None else _num(rr.flops_actual) + (" !" if target_missed(rr) else "")
    if is_baseline(rr):
        ff, fa = "0", "0"
    return cells + [fp, ff, fa, status_text(rr)]


def _fmt_printed(pv: PaperValue) -> str:
    """A printed FLOPs value with the decimals the paper used (41.8, 52.94)."""
    if pv.confirmed and pv.value is not None:
        return f"{pv.value:g}"
    return fmt_paper(pv)


def target_missed(rr: RowResult) -> bool:
    """SNF: the searched structure must meet its FLOPs target to within SNF_TOLERANCE points."""
    return (rr.row.flops_target is not None and rr.flops_measured is not None
            and abs(rr.flops_measured - rr.row.flops_target) > SNF_TOLERANCE)


def is_baseline(rr: RowResult) -> bool:
    return rr.row.baseline is None and not rr.row.prune_rate and rr.row.flops_target is None


def _summary(rows: list[RowResult]) -> dict:
    runs = [r for rr in rows for r in rr.runs]
    counts = {st: sum(r.status == st for r in runs) for st in ("done", "running", "failed", "missing")}
    versions = sorted({str(r.result.get("code_version")) for r in runs if r.status == "done"
                       and r.result.get("code_version")})
    finished = sorted(r.finished for r in runs if r.finished)
    return {"expected": len(runs), "found": len(runs) - counts["missing"], **counts,
            "code": ", ".join(versions) or "— (no finished run)",
            "date": finished[-1] if finished else "— (no finished run)"}


def title_of(spec: TableSpec, smoke: bool) -> str:
    if smoke:
        return (f"SMOKE TABLE — miniature {spec.name} on generated data, NOT comparable to the paper: "
                f"{spec.title}")
    return f"{spec.name}: {spec.title}"


def _notes(spec: TableSpec, rows: list[RowResult]) -> list[str]:
    notes = list(spec.notes)
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
        notes.append(f"Unconfirmed paper cells — {note}: {where}.")
    for rr in rows:
        if flops_mismatch(rr):
            notes.append(f"{rr.row.model} {rr.row.variant}: FLOPs↓ printed {rr.row.flops_paper.value:.1f} but the "
                         f"paper's own convention gives {rr.flops_float:.2f} (flagged !).")
        if target_missed(rr):
            notes.append(f"{rr.row.model} {rr.row.variant}: the runs reached FLOPs↓ {rr.flops_measured:.2f}, "
                         f"more than {SNF_TOLERANCE} points from the target {rr.row.flops_target:g} (flagged !).")
        if rr.row.prune_rate and rr.flops_measured is not None and rr.flops_actual is not None and \
                abs(rr.flops_measured - rr.flops_actual) > FLOPS_TOLERANCE:
            notes.append(f"{rr.row.model} {rr.row.variant}: the runs measured FLOPs↓ {rr.flops_measured:.2f}, "
                         f"the count gives {rr.flops_actual:.2f}.")
    # de-duplicate while keeping order (the same unconfirmed note appears on many cells)
    seen, out = set(), []
    for n in notes:
        if n not in seen:
            seen.add(n)
            out.append(n)
    return out


LEGEND = ("ours = mean ± sample std (n finished runs); Δ = ours − paper; drop = baseline − pruned "
          "(points, positive = worse); FLOPs↓ in percent of conv multiply-accumulates: 'paper' as "
          "printed, 'float conv.' = the papers' float keep-ratio convention counted correctly, "
          "'actual' = the integer filter counts the masks really keep (SNF: measured).")


# ---------------------------------------------------------------------------- renderers
def render_md(spec: TableSpec, rows: list[RowResult], command: str, smoke: bool) -> str:
    from tabulate import tabulate
    s = _summary(rows)
    lines = [f"# {title_of(spec, smoke)}", "",
             f"<!-- generated by repro.tables; do not edit by hand: `{command} --check` verifies it -->", "",
             f"- Paper: {spec.source}",
             f"- Made with: `{command}`",
             f"- Code version (recorded by the runs): {s['code']}",
             f"- Date (newest finished run): {s['date']}",
             f"- Runs found: {s['found']} of {s['expected']} expected (done {s['done']}, running {s['running']}, "
             f"failed {s['failed']}, missing {s['missing']})", ""]
    body = [_row_cells(spec, rr, smoke) for rr in rows]
    lines.append(tabulate(body, headers=_columns(spec), tablefmt="github", disable_numparse=True))
    lines += ["", LEGEND, ""]
    notes = _notes(spec, rows)
    if notes:
        lines += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["## Run folders", ""]
    foot = [[r.key, r.folder, r.config_hash, r.status, r.detail] for rr in rows for r in rr.runs]
    lines.append(tabulate(foot, headers=["run", "folder (under --root)", "config hash", "status", "detail"],
                          tablefmt="github", disable_numparse=True))
    return "\n".join(lines) + "\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
        "±": r"$\pm$", "Δ": r"$\Delta$", "↓": r"$\downarrow$", "—": "--", "−": "-", "'": "'"}


def tex_escape(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in text)


def render_tex(spec: TableSpec, rows: list[RowResult], command: str, smoke: bool) -> str:
    s = _summary(rows)
    cols = _columns(spec)
    out = ["% generated by repro.tables; do not edit by hand",
           f"% made with: {command}",
           f"% code version (recorded by the runs): {s['code']}",
           f"% date (newest finished run): {s['date']}",
           f"% runs found: {s['found']} of {s['expected']} expected (done {s['done']}, running {s['running']}, "
           f"failed {s['failed']}, missing {s['missing']})",
           "% needs \\usepackage{booktabs}",
           r"\begin{table}[t]", r"\centering", r"\scriptsize",
           r"\caption{" + tex_escape(title_of(spec, smoke)) + ". " + tex_escape(spec.source) + "}",
           r"\label{tab:" + spec.name + ("-smoke" if smoke else "") + "}",
           r"\begin{tabular}{ll" + "r" * (len(cols) - 3) + "l}", r"\toprule",
           " & ".join(tex_escape(c) for c in cols) + r" \\", r"\midrule"]
    last_model = None
    for rr in rows:
        if last_model is not None and rr.row.model != last_model:
            out.append(r"\midrule")
        last_model = rr.row.model
        out.append(" & ".join(tex_escape(c) for c in _row_cells(spec, rr, smoke)) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    out += ["% " + tex_escape(n) for n in [LEGEND, *_notes(spec, rows)]]
    out += ["% run folders (under --root):"]
    out += [f"%   {r.key}  {r.folder}  {r.config_hash}  {r.status}  {r.detail}" for rr in rows for r in rr.runs]
    return "\n".join(out) + "\n"


CSV_FIELDS = ["table", "smoke", "row", "model", "variant", "metric", "paper", "paper_std", "paper_confirmed",
              "ours_mean", "ours_std", "ours_n", "delta", "runs_done", "runs_running", "runs_failed",
              "runs_missing"]


def _csv_num(x) -> str:
    return "" if x is None else f"{x:.4f}"


def render_csv(spec: TableSpec, rows: list[RowResult], smoke: bool) -> str:
    """Long format: one line per row and metric (FLOPs conventions as metrics too)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for rr in rows:
        common = [spec.name, int(smoke), rr.row.key, rr.row.model, rr.row.variant]
        counts = [rr.count(s) for s in ("done", "running", "failed", "missing")]
        for m in spec.metrics:
            pv = rr.row.paper.get(m)
            n = len(rr.values.get(m) or [])
            w.writerow(common + [m, _csv_num(pv.value if pv else None), _csv_num(pv.std if pv else None),
                                 "" if pv is None else int(pv.confirmed), _csv_num(rr.mean(m)),
                                 _csv_num(rr.std(m)), n if not m.endswith("_drop") else "",
                                 "" if smoke else _csv_num(delta(rr, m))] + counts)
        base = is_baseline(rr)
        fp = rr.row.flops_paper
        for m, val in (("flops_reduction_float", 0.0 if base else rr.flops_float),
                       ("flops_reduction_actual", 0.0 if base else rr.flops_actual)):
            ref = fp if (fp is not None and m == "flops_reduction_float") else None
            w.writerow(common + [m, _csv_num(ref.value if ref else None), "",
                                 "" if ref is None else int(ref.confirmed), _csv_num(val), "", "",
                                 _csv_num(val - ref.value if (ref and ref.confirmed and val is not None) else None)]
                       + counts)
    return buf.getvalue()
