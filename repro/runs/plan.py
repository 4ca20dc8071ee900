"""Planning: for every run of a table, what its folder and the scheduler say, and what to do.

States: done | failed | running | resume | new | blocked. A run's folder is
ROOT/<table>/<run_name(cfg)>, named from the config, never from a job id; a run that starts from
another (SFP from pre-trained, SNF) names that baseline run in ``prune.init_from`` as
``run:<its folder name>``, so names and hashes never depend on how ROOT was written.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from repro.config import Config, run_name
from repro.papers.spec import RunSpec, TableSpec
from repro.lock import holder
from repro.rundir import CHECKPOINT, LOCK, MODEL, RESULT, RUN_PREFIX, done_result, read_result

from . import cost, jobs
from .errors import LaunchError


@dataclass
class Planned:
    run: RunSpec
    cfg: Any
    run_dir: Path
    state: str = "new"           # done | failed | running | resume | new | blocked
    detail: str = ""
    active_job: str = ""         # job id of a pending/running job, or of the one just submitted
    dep: "Planned | None" = None  # the run whose result this one starts from
    gpu_hours: float = 0.0

    @property
    def submit(self) -> bool:
        return self.state in ("new", "resume")


@dataclass
class Plan:
    spec: TableSpec
    root: Path
    smoke: bool
    runs: list[Planned] = field(default_factory=list)

    def count(self, state: str) -> int:
        return sum(p.state == state for p in self.runs)


def table_dir(root: Path, spec: TableSpec) -> Path:
    return Path(root) / spec.name


def config_for(spec: TableSpec, run: RunSpec, *, smoke: bool, data_dir: Path | None = None,
               raw_dir: Path | None = None, init_run: str | None = None) -> Config:
    """The run's full config: preset (by arch family) <- table base <- smoke <- row <- row smoke <-
    seed, paths and the baseline run it starts from."""
    values: dict[str, Any] = {**spec.base, **(spec.smoke if smoke else {}), **run.row.overrides,
                              **(run.row.smoke if smoke else {}),
                              "seed": run.seed, "log.group": spec.name + ("-smoke" if smoke else "")}
    if data_dir is not None:
        values["data.ffcv_dir"] = str(data_dir)
    if raw_dir is not None:
        values["data.path"] = str(raw_dir)
    if init_run is not None:
        values["prune.init_from"] = RUN_PREFIX + init_run
    return Config.from_overrides(values)


def _declare(spec: TableSpec, root: Path, smoke: bool, data_dir, raw_dir) -> list[Planned]:
    tdir = table_dir(root, spec)
    by_key: dict[tuple[str, int], Planned] = {}
    out = []
    for run in spec.runs(smoke):
        dep = by_key.get((run.row.init_from, run.seed)) if run.row.init_from else None
        cfg = config_for(spec, run, smoke=smoke, data_dir=data_dir, raw_dir=raw_dir,
                         init_run=dep.run_dir.name if dep else None)
        pl = Planned(run, cfg, tdir / run_name(cfg), dep=dep, gpu_hours=cost.estimate(cfg))
        by_key[(run.row.key, run.seed)] = pl
        out.append(pl)
    return out


def _folder_state(pl: Planned) -> dict | None:
    """What the run folder says; returns the last recorded job if it may still be alive."""
    res = read_result(pl.run_dir) if pl.run_dir.is_dir() else None  # RunDirError if malformed
    recorded = jobs.read_jobs(pl.run_dir)
    if res and res.get("status") == "done":
        if done_result(pl.run_dir, pl.cfg) is not None:  # RunDirError if it is another run's result
            pl.state = "done"
            return None
        pl.detail = f"{RESULT} says done but {MODEL} is missing: the final phase runs again"
        res = None
    if res and res.get("status") == "failed":
        pl.state, pl.detail = "failed", str(res.get("reason", "")).splitlines()[0][:200] if res.get("reason") else ""
    elif recorded and recorded[-1].get("final_state"):
        last = recorded[-1]
        pl.state, pl.detail = "failed", f"job {last['job_id']} ended {last['final_state']} without a result"
    elif (pl.run_dir / CHECKPOINT).exists():
        pl.state = "resume"
    who = holder(pl.run_dir / LOCK) if pl.state != "failed" else None
    if who:  # a trainer holds the folder (started by another launch, or by hand): never a second one
        pl.state, pl.detail = "running", f"in use by {who}"
        return None
    if recorded and not recorded[-1].get("final_state") and pl.state != "failed":
        return recorded[-1]
    return None


def _scheduler_state(runs: list[Planned], last_job: dict[int, dict], *, query: bool, record: bool) -> None:
    """What the scheduler says about the last recorded job of every unfinished run."""
    slurm_ids = [j["job_id"] for j in last_job.values() if j.get("cluster") == "slurm"]
    states = jobs.slurm_states(slurm_ids) if (slurm_ids and query) else {}
    for pl in runs:
        job = last_job.get(id(pl))
        if job is None:
            continue
        jid, cluster = job["job_id"], job.get("cluster")
        if not query:
            st, alive = "", True
        elif cluster == "slurm":
            st = states.get(jid, "")
            alive = st in jobs.ACTIVE_STATES
        else:
            st, alive = "", cluster == "local" and jobs.local_alive(jid)
        if alive:
            pl.state, pl.detail, pl.active_job = "running", f"job {jid} {st.lower() or 'submitted'}", jid
        elif pl.state != "failed" and (st or cluster != "slurm"):
            # the job is over and left no result: the run did not finish
            final = st or "ENDED"
            pl.state, pl.detail = "failed", f"job {jid} ended {final} without a result"
            if record:
                recorded = jobs.read_jobs(pl.run_dir)
                recorded[-1]["final_state"] = final
                jobs.write_jobs(pl.run_dir, recorded)
        # (a SLURM job unknown to both squeue and sacct: accounting lag right after submission,
        # or a purged database; it stays in its folder state and is shown as such)


def _select(p: Plan, only: Sequence[str]) -> None:
    """--only: the selected runs plus the runs they start from; the others are left alone."""
    wanted = {id(pl) for pl in p.runs if any(fnmatch.fnmatch(pl.run.key, pat) for pat in only)}
    if not wanted:
        keys = ", ".join(pl.run.key for pl in p.runs[:4])
        raise LaunchError(f"--only {' '.join(only)} matches no run of {p.spec.name} "
                          f"(run keys look like: {keys}, ...)")
    for pl in p.runs:
        if id(pl) in wanted and pl.dep is not None:
            wanted.add(id(pl.dep))
    p.runs = [pl for pl in p.runs if id(pl) in wanted]


def plan(spec: TableSpec, root: Path, *, smoke: bool = False, data_dir: Path | None = None,
         raw_dir: Path | None = None, only: Sequence[str] = (), retry_failed: bool = False,
         record: bool = False, query: bool = True) -> Plan:
    """Decide for every run of the table: nothing to do (done / running / failed / blocked) or submit.

    record=True writes what the scheduler says about dead jobs into their jobs.json (a job that
    ended without result.json shows as failed, with the SLURM state, in the table).
    query=False never asks the scheduler: a recorded job that has not been seen to end counts as
    running (what the table builder uses, so a table depends on the run folders alone).
    """
    p = Plan(spec, Path(root), smoke, _declare(spec, Path(root), smoke, data_dir, raw_dir))
    last_job = {id(pl): job for pl in p.runs if (job := _folder_state(pl)) is not None}
    _scheduler_state(p.runs, last_job, query=query, record=record)
    if retry_failed:
        for pl in p.runs:
            if pl.state == "failed":
                pl.state = "resume" if (pl.run_dir / CHECKPOINT).exists() else "new"
                pl.detail = "retry"
    if only:
        _select(p, only)
    for pl in p.runs:  # a run cannot start from a baseline that failed
        if pl.submit and pl.dep is not None and pl.dep.state in ("failed", "blocked"):
            pl.state, pl.detail = "blocked", f"its baseline {pl.dep.run.key} {pl.dep.state}"
    return p
