"""Collecting a table's numbers from its run folders (through ``repro.runs``'s plan, never asking a
scheduler): per row the finished runs' values, mean and std, drops vs the baseline row, the FLOPs
reduction three ways, the measured and theoretical speed-ups, which runs sit at chance level, and
what each run cost.

Reads result.json (status, reason, val_top1/5, val_images, num_classes, flops_reduction, conv_macs,
baseline_conv_macs, latency {dense_ms, delivered_ms, device, batch, threads, precision, repeats,
resolution, folded_dense_ms, aligned_folded_ms, align, aligned_repeats}, wall_s, world_size,
code_version, finished) and env.json (attempts); every key may be missing from an older run, and
then the cell it feeds says nothing rather than guessing."""
from __future__ import annotations

import math
from functools import lru_cache
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from repro.config import config_hash
from repro.flops import actual_reduction, paper_reduction
from repro.io import read_json
from repro.export import deployed_speedup
from repro.papers.spec import RESULT_KEYS, Row, TableSpec
from repro.rundir import ENV, read_result
from repro.runs.plan import plan

from . import cost

# The integer count builds two model skeletons; rows and tables repeat (arch, rate) pairs.
_actual_reduction = lru_cache(maxsize=None)(actual_reduction)
LATENCY_SETTINGS = ("device", "batch", "threads", "precision", "resolution", "repeats")
# The alignment the aligned + folded speed-up column is labelled with: the engine's latency.ALIGN
# (this room may not import the engine; tests/test_report.py checks they agree). A run that
# recorded another alignment is left out of that column rather than mixed in.
ALIGNED_TO = 8


@dataclass
class RunCell:
    key: str
    folder: str           # relative to ROOT
    config_hash: str
    status: str           # done | running | failed | missing
    detail: str = ""
    result: dict = field(default_factory=dict)
    finished: str = ""
    cost: cost.Cost = cost.Cost(None)   # measured from the folder
    estimate: float | None = None       # the launcher's GPU-hours estimate (None: a miniature run)
    seed: int = 0

    def at_chance(self, metric: str) -> bool | None:
        """Is this run's accuracy within chance level? None when the run does not say enough."""
        return at_chance(self.result, metric) if self.status == "done" else None


@dataclass
class RowResult:
    row: Row
    runs: list[RunCell]
    values: dict[str, list[float]]            # metric -> values of done runs (accuracies only)
    by_seed: dict[str, dict[int, float]] = field(default_factory=dict)  # metric -> seed -> value
    base: "RowResult | None" = None           # the row its drops are measured against
    flops_float: float | None = None          # paper convention, counted correctly
    flops_actual: float | None = None         # integer filters (SFP: computed; SNF: measured)
    flops_measured: float | None = None       # mean of the runs' result.json flops_reduction
    n: dict[str, int] = field(default_factory=dict)  # runs behind each metric (a drop: its fewer row)
    speedup_measured: list[float] = field(default_factory=list)  # latency dense_ms / delivered_ms (as delivered)
    speedup_aligned_folded: list[float] = field(default_factory=list)  # folded_dense_ms / aligned_folded_ms
    speedup_macs: list[float] = field(default_factory=list)      # baseline_conv_macs / conv_macs
    speedup_deployed: list[float] = field(default_factory=list)  # exported: dense / delivered (repro.export)
    latency_settings: list[tuple] = field(default_factory=list)  # distinct LATENCY_SETTINGS seen
    aligned_repeats: list[int] = field(default_factory=list)     # distinct aligned_repeats seen

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

    def chance_runs(self, metric: str) -> int:
        return sum(bool(r.at_chance(metric)) for r in self.runs)


def at_chance(result: dict, metric: str) -> bool | None:
    """True when a run's top-k accuracy is not above chance: at most 100·k/K + 2σ, σ the binomial
    standard deviation of a guesser's accuracy on the run's `val_images` images of K =
    `num_classes` classes. None without those keys (older runs) or for another metric."""
    k = {"top1": 1, "top5": 5}.get(metric)
    classes, images, acc = result.get("num_classes"), result.get("val_images"), result.get(RESULT_KEYS.get(metric, ""))
    if k is None or not classes or not images or acc is None:
        return None
    p = min(k, classes) / classes
    sigma = 100 * math.sqrt(p * (1 - p) / images)
    return float(acc) <= 100 * p + 2 * sigma


def _ratio(num, den) -> float | None:
    return float(num) / float(den) if num is not None and den else None


def _speedups(rr: RowResult, done: list[dict]) -> None:
    for d in done:
        lat = d.get("latency") or {}
        if (m := _ratio(lat.get("dense_ms"), lat.get("delivered_ms"))) is not None:
            rr.speedup_measured.append(m)
            setting = tuple(lat.get(k) for k in LATENCY_SETTINGS)
            if setting not in rr.latency_settings:
                rr.latency_settings.append(setting)
        if lat.get("align") == ALIGNED_TO and \
                (a := _ratio(lat.get("folded_dense_ms"), lat.get("aligned_folded_ms"))) is not None:
            rr.speedup_aligned_folded.append(a)
            if lat.get("aligned_repeats") not in rr.aligned_repeats:
                rr.aligned_repeats.append(lat.get("aligned_repeats"))
        if (t := _ratio(d.get("baseline_conv_macs"), d.get("conv_macs"))) is not None:
            rr.speedup_macs.append(t)


def _env(run_dir: Path) -> dict:
    p = run_dir / ENV
    return read_json(p) if p.is_file() else {}


def _finish_time(run_dir: Path, res: dict) -> str:
    """When the run finished: result.json's own field if the trainer wrote one, else its mtime (UTC)."""
    if res.get("finished"):
        return str(res["finished"])
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
                       _finish_time(pl.run_dir, res) if status == "done" else "",
                       cost.measured(res, _env(pl.run_dir)) if res else cost.Cost(None),
                       None if smoke else pl.gpu_hours, pl.run.seed)  # a miniature's epochs are not the estimate's
        cells.setdefault(pl.run.row.key, []).append(cell)
    out = []
    for row in spec.rows:
        if row.key not in cells:  # a miniature of a big table runs only its smoke_rows
            continue
        runs = cells[row.key]
        done = [r.result for r in runs if r.status == "done"]
        by_seed = {m: {r.seed: float(r.result[k]) for r in runs if r.status == "done" and r.result.get(k) is not None}
                   for m, k in RESULT_KEYS.items()}
        values = {m: list(v.values()) for m, v in by_seed.items()}
        rr = RowResult(row, runs, values, by_seed, n={m: len(v) for m, v in values.items()})
        _speedups(rr, done)
        rr.speedup_deployed = [x for r in runs if r.status == "done"
                               and (x := deployed_speedup(root / r.folder)) is not None]
        res_px = next((pl.cfg.data.resolution for pl in p.runs if pl.run.row.key == row.key), None)
        measured = [float(d["flops_reduction"]) for d in done if d.get("flops_reduction") is not None]
        rr.flops_measured = sum(measured) / len(measured) if measured else None
        if row.prune_rate:
            rr.flops_float = paper_reduction(row.arch, row.prune_rate, res_px)
            rr.flops_actual = _actual_reduction(row.arch, row.prune_rate, res_px)
        elif row.flops_target is not None:
            rr.flops_float = None  # SNF: a searched structure, not a uniform keep ratio
            rr.flops_actual = rr.flops_measured
        out.append(rr)
    by_key = {rr.row.key: rr for rr in out}
    for rr in out:  # drops (baseline - pruned) are built from both rows by repro.report.evidence
        rr.base = by_key.get(rr.row.baseline) if rr.row.baseline else None
    return out
