"""Build a paper table from its run folders: Markdown, booktabs LaTeX, CSV and an accuracy-vs-FLOPs plot.

    python -m repro.tables table2 --root runs --out tables            # writes tables/table2.{md,tex,csv,png}
    python -m repro.tables table2 --root runs --out tables --check    # exit 1 if the files are stale
    python -m repro.tables table2 --smoke                             # the miniature table (runs/smoke)
    python -m repro.tables table2 --smoke --all-rows                  # its every-row version (runs/smoke-all)

What a table holds: first the verdict summary (rows reproduced / not reproduced / inconclusive /
not run) and the rule in one sentence (repro/report/verdict.py, evidence.py), then the main table
in the paper's layout (repro/report/layout.py: Depth | Method | Fine-tune? | baseline, pruned, drop
and FLOPs↓ as paper / ours | verdict), with sources and caveats as footnote marks and the legend
that names every source in full; then the run details (runs per cell, the figures behind each
verdict, FLOPs in the papers' float convention, measured and theoretical speed-ups, cost, status)
and every run folder with its config hash and its cost (measured, and the launcher's estimate).
The LaTeX file holds one booktabs table (the rest as comments); the plot is a forest plot of the
verdicts beside accuracy vs FLOPs.

The output depends on the run folders alone (no clock, no scheduler query): rebuilding from the
same folders gives byte-identical .md/.tex/.csv, which is what `--check` relies on. The date shown
is the newest result.json's finish time; the code version is the one the runs recorded.
The collecting and rendering live in ``repro.report``; this module is the CLI, the build and the
check, and the small job the launcher queues after a table's runs.
"""
from __future__ import annotations

import argparse
import difflib
import sys
import tempfile
from pathlib import Path

from repro.io import atomic_write_bytes
from repro.papers import load_table
from repro.papers.spec import TableSpec
from repro.report.collect import collect
from repro.report.plot import render_png
from repro.report.csvout import render_csv
from repro.report.render import render_md, render_tex
from repro.rundir import RunDirError
from repro.runs.errors import LaunchError

TEXT_SUFFIXES = (".md", ".tex", ".csv")  # compared by --check (the .png depends on matplotlib's version)


class TableJob:
    """The small CPU job queued after a table's runs (afterany): record job states, build the table."""

    def __init__(self, table: str, root: str, out: str, smoke: bool, all_rows: bool = False):
        self.table, self.root, self.out, self.smoke, self.all_rows = table, root, out, smoke, all_rows

    def __call__(self):
        from repro.runs.plan import plan
        spec = load_table(self.table)
        plan(spec.every_row() if self.all_rows else spec, Path(self.root), smoke=self.smoke,
             record=True)  # notes runs whose job died
        return [str(p) for p in build(spec, self.root, self.out, smoke=self.smoke, all_rows=self.all_rows)]


def smoke_root(smoke: bool, all_rows: bool = False) -> str:
    """The default --root: runs/, the miniature's runs/smoke, its every-row version's runs/smoke-all."""
    return "runs/smoke-all" if all_rows else "runs/smoke" if smoke else "runs"


def command_for(name: str, root: str, out: str, smoke: bool, all_rows: bool = False) -> str:
    return (f"python -m repro.tables {name} --root {root} --out {out}" + (" --smoke" if smoke else "")
            + (" --all-rows" if all_rows else ""))


def build(spec: TableSpec, root: str | Path, out: str | Path, *, smoke: bool = False,
          write_to: str | Path | None = None, png: bool = True, all_rows: bool = False) -> list[Path]:
    """Write OUT/<name>.{md,tex,csv,png}; `write_to` puts the files elsewhere (same header).
    `all_rows`: a miniature of every row, not only the spec's smoke_rows (``--smoke --all-rows``)."""
    spec = spec.every_row() if all_rows else spec
    rows = collect(spec, root, smoke)
    command = command_for(spec.name, str(root), str(out), smoke, all_rows)
    dest = Path(write_to if write_to is not None else out)
    dest.mkdir(parents=True, exist_ok=True)
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


def check(spec: TableSpec, root: str | Path, out: str | Path, *, smoke: bool = False,
          all_rows: bool = False) -> list[str]:
    """Rebuild in a temporary folder; return the problems (empty = the files in OUT are current)."""
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        build(spec, root, out, smoke=smoke, write_to=tmp, png=False, all_rows=all_rows)
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
                    "NAME is a table declared in repro/papers/ (launch/NAME.py launches it).",
        epilog="Exit codes: 0 ok, 1 --check found stale or hand-edited files, 2 bad input (including a "
               "malformed file in a run folder, named).")
    ap.add_argument("name", help="table name, e.g. table1, table2, snf_cifar")
    ap.add_argument("--root", default=None, help="folder holding the run folders (default runs/, --smoke: "
                                                 "runs/smoke, --smoke --all-rows: runs/smoke-all)")
    ap.add_argument("--out", default=None, help="folder for the table files (default tables/, --smoke: ROOT/tables)")
    ap.add_argument("--smoke", action="store_true", help="the miniature table made by `launch/NAME.py --smoke`")
    ap.add_argument("--all-rows", action="store_true",
                    help="the miniature of every row made by `launch/NAME.py --smoke --all-rows` (implies --smoke)")
    ap.add_argument("--check", action="store_true",
                    help="rebuild and compare with the .md/.tex/.csv in --out (not the .png, whose pixels "
                         "depend on the matplotlib version); write nothing; exit 1 on any difference")
    a = ap.parse_args(argv)
    try:
        spec = load_table(a.name)
    except LookupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    a.smoke |= a.all_rows
    root = a.root or smoke_root(a.smoke, a.all_rows)
    out = a.out or (str(Path(root) / "tables") if a.smoke else "tables")
    if not Path(root).is_dir():  # allowed: the table then shows the paper side and "missing" runs
        print(f"warning: --root {root} does not exist; every run shows as missing", file=sys.stderr)
    try:
        return _build_or_check(spec, root, out, a)
    except (RunDirError, LaunchError) as e:  # a run folder's file is malformed: named in one line
        print(f"error: {e}", file=sys.stderr)
        return 2


def _build_or_check(spec: TableSpec, root: str, out: str, a) -> int:
    if a.check:
        problems = check(spec, root, out, smoke=a.smoke, all_rows=a.all_rows)
        for p in problems:
            print(p, file=sys.stderr)
        again = command_for(spec.name, root, out, a.smoke, a.all_rows)
        print(f"{spec.name}: {'STALE or edited: rebuild with ' + again if problems else 'up to date'}", file=sys.stderr)
        return 1 if problems else 0
    for p in build(spec, root, out, smoke=a.smoke, all_rows=a.all_rows):
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
