"""Build a paper table from its run folders: Markdown, booktabs LaTeX, CSV and an accuracy-vs-FLOPs plot.

    python -m repro.tables table2 --root runs --out tables            # writes tables/table2.{md,tex,csv,png}
    python -m repro.tables table2 --root runs --out tables --check    # exit 1 if the files are stale
    python -m repro.tables table2 --smoke                             # the miniature table (runs/smoke)

What a table holds: per row (model x variant) the paper's value, ours as mean ± std (n), Δ = ours -
paper, drops vs the row's baseline, FLOPs reduction three ways (as printed in the paper, the paper's
float keep-ratio convention counted correctly, and the actual integer-filter count), and the status
of its runs (done / running / failed with its reason / missing). A header says how it was made and
a footer lists every run folder with its config hash.

The output depends on the run folders alone (no clock, no scheduler query): rebuilding from the
same folders gives byte-identical .md/.tex/.csv, which is what `--check` relies on. The date shown
is the newest result.json's finish time; the code version is the one the runs recorded.
"""
from __future__ import annotations

import argparse
import csv
import difflib
import io
import math
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from repro.tablespec import METRIC_LABELS, RESULT_KEYS, PaperValue, Row, TableSpec, load_table

FLOPS_TOLERANCE = 0.05  # points; a printed FLOPs value further than this from the count is flagged
SNF_TOLERANCE = 0.1     # points; an SNF run must meet its FLOPs target this closely (papers.md)
TEXT_SUFFIXES = (".md", ".tex", ".csv")  # compared by --check (the .png depends on matplotlib's version)


# ---------------------------------------------------------------------------- collecting
@dataclass
class RunCell:
    key: str
    folder: str           # relative to ROOT
    config_hash: str
    status: str           # done | running | failed | missing
    detail: str = ""
    result: dict = field(default_factory=dict)
    finished: str = ""


@dataclass
class RowResult:
    row: Row
    runs: list[RunCell]
    values: dict[str, list[float]]            # metric -> values of done runs
    flops_float: float | None = None          # paper convention, counted correctly
    flops_actual: float | None = None         # integer filters (SFP: computed; SNF: measured)
    flops_measured: float | None = None       # mean of the runs' result.json flops_reduction

    def mean(self, metric: str) -> float | None:
        v = self.values.get(metric) or []
        return sum(v) / len(v) if v else None

    def std(self, metric: str) -> float | None:
        v = self.values.get(metric) or []
        if len(v) < 2:
            return None
        m = sum(v) / len(v)
        return math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.runs)


def _finish_time(run_dir: Path, res: dict) -> str:
    """When the run finished: result.json's own field if the trainer wrote one, else its mtime (UTC)."""
    for k in ("finished", "finished_at", "end_time"):
        if res.get(k):
            return str(res[k])
    ts = (run_dir / "result.json").stat().st_mtime
    return datetime.fromtimestamp(int(ts), timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def collect(spec: TableSpec, root: str | Path, smoke: bool = False) -> list[RowResult]:
    """Read every expected run folder (the plan of repro.launch, without asking any scheduler)."""
    from repro.config import config_hash
    from repro.flops import actual_reduction, paper_reduction
    from repro.launch import plan
    from repro.rundir import read_result
    root = Path(root)  # as given: dependent runs' names hash the baseline path relative to the launch folder
    p = plan(spec, root, smoke=smoke, query=False)
    cells: dict[str, list[RunCell]] = {}
    for pl in p.runs:
        res = (read_result(pl.run_dir) if pl.run_dir.is_dir() else None) or {}
        status = {"done": "done", "failed": "failed", "running": "running"}.get(pl.state, "missing")
        detail = pl.detail
        if status == "missing":
            detail = ("checkpoint, no live job: relaunch to resume" if pl.state == "resume"
                      else "" if pl.state != "blocked" else pl.detail)
        cell = RunCell(pl.run.key, str(pl.run_dir.relative_to(root)) if pl.run_dir.is_relative_to(root)
                       else str(pl.run_dir), config_hash(pl.cfg), status, detail, res,
                       _finish_time(pl.run_dir, res) if status == "done" else "")
        cells.setdefault(pl.run.row.key, []).append(cell)
    out = []
    for row in spec.rows:
        runs = cells[row.key]
        done = [r.result for r in runs if r.status == "done"]
        values = {m: [float(d[k]) for d in done if d.get(k) is not None] for m, k in RESULT_KEYS.items()}
        rr = RowResult(row, runs, values)
        res_px = next((pl.cfg.data.resolution for pl in p.runs if pl.run.row.key == row.key), None)
        measured = [float(d["flops_reduction"]) for d in done if d.get("flops_reduction") is not None]
        rr.flops_measured = sum(measured) / len(measured) if measured else None
        if row.prune_rate:
            rr.flops_float = paper_reduction(row.arch, row.prune_rate, res_px)
            rr.flops_actual = actual_reduction(row.arch, row.prune_rate, res_px)
        elif row.flops_target is not None:
            rr.flops_float = None  # SNF: a searched structure, not a uniform keep ratio
            rr.flops_actual = rr.flops_measured
        out.append(rr)
    by_key = {rr.row.key: rr for rr in out}
    for rr in out:  # drops: baseline mean - this row's mean, per accuracy metric
        base = by_key.get(rr.row.baseline) if rr.row.baseline else None
        for m in ("top1", "top5"):
            if base is not None and base.mean(m) is not None and rr.mean(m) is not None:
                rr.values[f"{m}_drop"] = [base.mean(m) - rr.mean(m)]
    return out


# ---------------------------------------------------------------------------- formatting
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
    fp = _fmt_printed(rr.row.flops_paper) if rr.row.flops_paper else ("0" if _is_baseline(rr) else "")
    ff = "" if rr.flops_float is None else _num(rr.flops_float) + (" !" if flops_mismatch(rr) else "")
    fa = "" if rr.flops_actual is None else _num(rr.flops_actual) + (" !" if target_missed(rr) else "")
    if _is_baseline(rr):
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


def _is_baseline(rr: RowResult) -> bool:
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


def _title(spec: TableSpec, smoke: bool) -> str:
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
    lines = [f"# {_title(spec, smoke)}", "",
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
           r"\caption{" + tex_escape(_title(spec, smoke)) + ". " + tex_escape(spec.source) + "}",
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
        base = _is_baseline(rr)
        fp = rr.row.flops_paper
        for m, val in (("flops_reduction_float", 0.0 if base else rr.flops_float),
                       ("flops_reduction_actual", 0.0 if base else rr.flops_actual)):
            ref = fp if (fp is not None and m == "flops_reduction_float") else None
            w.writerow(common + [m, _csv_num(ref.value if ref else None), "",
                                 "" if ref is None else int(ref.confirmed), _csv_num(val), "", "",
                                 _csv_num(val - ref.value if (ref and ref.confirmed and val is not None) else None)]
                       + counts)
    return buf.getvalue()


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
        x = 0.0 if _is_baseline(rr) else rr.flops_actual
        markers.setdefault(rr.row.variant, "osD^v<>"[len(markers) % 7])
        mk, c = markers[rr.row.variant], colors[rr.row.model]
        if x is not None and rr.mean("top1") is not None:
            ax.errorbar([x], [rr.mean("top1")], yerr=[rr.std("top1") or 0.0], fmt=mk, color=c, capsize=3)
        pv = rr.row.paper.get("top1")
        px = 0.0 if _is_baseline(rr) else (rr.row.flops_paper.value if rr.row.flops_paper and
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
    title = _title(spec, smoke)
    ax.set_title(title if len(title) < 90 else title[:87] + "...", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})  # no version string: same runs -> same bytes
    plt.close(fig)


# ---------------------------------------------------------------------------- build / check
def command_for(name: str, root: str, out: str, smoke: bool) -> str:
    return f"python -m repro.tables {name} --root {root} --out {out}" + (" --smoke" if smoke else "")


def build(spec: TableSpec, root: str | Path, out: str | Path, *, smoke: bool = False,
          write_to: str | Path | None = None, png: bool = True) -> list[Path]:
    """Write OUT/<name>.{md,tex,csv,png}; `write_to` puts the files elsewhere (same header)."""
    rows = collect(spec, root, smoke)
    command = command_for(spec.name, str(root), str(out), smoke)
    dest = Path(write_to if write_to is not None else out)
    dest.mkdir(parents=True, exist_ok=True)
    from repro.rundir import atomic_write_bytes
    texts = {".md": render_md(spec, rows, command, smoke), ".tex": render_tex(spec, rows, command, smoke),
             ".csv": render_csv(spec, rows, smoke)}
    paths = []
    for suffix, text in texts.items():
        p = dest / f"{spec.name}{suffix}"
        atomic_write_bytes(p, text.encode())
        paths.append(p)
    if png:
        p = dest / f"{spec.name}.png"
        tmp = dest / f".{spec.name}.tmp.png"
        render_png(spec, rows, tmp, smoke)
        tmp.replace(p)
        paths.append(p)
    return paths


def check(spec: TableSpec, root: str | Path, out: str | Path, *, smoke: bool = False) -> list[str]:
    """Rebuild in a temporary folder; return the problems (empty = the files in OUT are current)."""
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        build(spec, root, out, smoke=smoke, write_to=tmp, png=False)
        for suffix in TEXT_SUFFIXES:
            fresh = (Path(tmp) / f"{spec.name}{suffix}").read_text()
            committed = Path(out) / f"{spec.name}{suffix}"
            if not committed.exists():
                problems.append(f"{committed} is missing")
                continue
            old = committed.read_text()
            if old != fresh:
                diff = difflib.unified_diff(old.splitlines(), fresh.splitlines(), f"{committed} (on disk)",
                                            f"{committed} (from the run folders)", lineterm="", n=0)
                problems.append("\n".join(list(diff)[:30]))
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m repro.tables", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Build a paper table (NAME.md, .tex, .csv, .png) from its run folders. "
                    "NAME is a launch script: launch/NAME.py declares the runs and the paper's values.",
        epilog="Exit codes: 0 ok, 1 --check found stale or hand-edited files, 2 bad input.")
    ap.add_argument("name", help="table name, e.g. table1, table2, snf_cifar")
    ap.add_argument("--root", default=None, help="folder holding the run folders (default runs/, --smoke: runs/smoke)")
    ap.add_argument("--out", default=None, help="folder for the table files (default tables/, --smoke: ROOT/tables)")
    ap.add_argument("--smoke", action="store_true", help="the miniature table made by `launch/NAME.py --smoke`")
    ap.add_argument("--check", action="store_true",
                    help="rebuild and compare with the .md/.tex/.csv in --out (not the .png, whose pixels "
                         "depend on the matplotlib version); write nothing; exit 1 on any difference")
    a = ap.parse_args(argv)
    try:
        spec = load_table(a.name)
    except LookupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    root = a.root or ("runs/smoke" if a.smoke else "runs")
    out = a.out or (str(Path(root) / "tables") if a.smoke else "tables")
    if not Path(root).is_dir():  # allowed: the table then shows the paper side and "missing" runs
        print(f"warning: --root {root} does not exist; every run shows as missing", file=sys.stderr)
    if a.check:
        problems = check(spec, root, out, smoke=a.smoke)
        for p in problems:
            print(p, file=sys.stderr)
        print(f"{spec.name}: {'STALE or edited: rebuild with ' + command_for(spec.name, root, out, a.smoke) if problems else 'up to date'}",
              file=sys.stderr)
        return 1 if problems else 0
    for p in build(spec, root, out, smoke=a.smoke):
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
