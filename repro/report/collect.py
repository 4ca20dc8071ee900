"""Collecting a table's numbers from its run folders (through ``repro.runs``'s plan, never asking a
scheduler): per row the finished runs' values, mean and std, drops vs the baseline row, and the
FLOPs reduction three ways."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from repro.config import config_hash
from repro.flops import actual_reduction, paper_reduction
from repro.papers.spec import RESULT_KEYS, Row, TableSpec
from repro.rundir import read_result
from repro.runs.plan import plan


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
    """Read every expected run folder (the plan of repro.runs, without asking any scheduler)."""
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
