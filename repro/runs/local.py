"""Running a table's runs on this machine: submitit's local (child processes) or debug (this
process) executor, at most ``--local-jobs`` runs at once, each after its baseline.

(submitit's local executor starts every job of a batch at once, which on a small machine means
every run fighting for the same cores; a small pool is faster and predictable. debug runs in this
process, so one at a time.)
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any

from repro.rundir import read_result

from . import jobs
from .plan import Plan, Planned
from .submit import Cluster, TrainJob, make_executor, prepare_folder


def _start_ready(c: Cluster, p: Plan, cluster: str, waiting: list, running: list, slots: int, bar) -> None:
    for pl in list(waiting):
        if len(running) >= slots:
            break
        if pl.dep is not None and pl.dep.state in ("failed", "blocked"):
            waiting.remove(pl)
            pl.state, pl.detail = "blocked", f"its baseline {pl.dep.run.key} {pl.dep.state}"
            bar.write(f"[launch] {pl.run.key}: skipped, {pl.detail}")
            bar.update(1)
            continue
        if pl.dep is not None and pl.dep.state != "done":
            continue
        waiting.remove(pl)
        extra = prepare_folder(pl)
        ex = make_executor(c, p, cluster, name=f"{p.spec.name}-{pl.run.key}")
        job = ex.submit(TrainJob(pl.cfg, str(pl.run_dir)))
        jobs.append_job(pl.run_dir, {**jobs.job_entry(job, cluster, 1), **extra})
        pl.state, pl.active_job = "running", str(job.job_id)
        running.append((pl, job))
        bar.set_postfix_str(", ".join(r.run.key for r, _ in running))


def _collect_ended(cluster: str, running: list, bar) -> None:
    for pl, job in list(running):
        if cluster != "debug" and not job.done():
            continue
        running.remove((pl, job))
        try:
            job.result()
            pl.state = "done"
        except Exception as e:  # noqa: BLE001 - one failed run must not stop the table
            res = read_result(pl.run_dir) or {}
            pl.state, pl.detail = "failed", str(res.get("reason") or e).splitlines()[0][:200]
            bar.write(f"[launch] {pl.run.key}: FAILED ({pl.detail}); log: {job.paths.stderr}")
        bar.update(1)


def _loop(c: Cluster, p: Plan, cluster: str, waiting: list[Planned], running: list, slots: int, bar) -> None:
    while waiting or running:
        _start_ready(c, p, cluster, waiting, running, slots, bar)
        if waiting and not running:  # left: runs whose baseline runs elsewhere (e.g. an earlier launch)
            for pl in waiting:
                pl.state, pl.detail = "blocked", f"its baseline {pl.dep.run.key} is {pl.dep.state} elsewhere"
                bar.write(f"[launch] {pl.run.key}: not started, {pl.detail}; launch again when it is done")
            waiting.clear()
        _collect_ended(cluster, running, bar)
        if running and not any(cluster == "debug" or j.done() for _, j in running):
            time.sleep(0.5)


def run_locally(c: Cluster, p: Plan, cluster: str, local_jobs: int) -> None:
    from tqdm import tqdm
    # A local job gets --cpus-per-task threads, as SLURM's CPU binding gives a SLURM task: torch
    # otherwise starts one OpenMP thread per core in every job, and two jobs on two cores spin
    # against each other (a ResNet-18 smoke run: 144 s instead of 14 s). The jobs inherit this
    # process's environment when they are started; a value the user set is left alone.
    own_threads = cluster == "local" and "OMP_NUM_THREADS" not in os.environ
    if own_threads:
        os.environ["OMP_NUM_THREADS"] = str(c.cpus_per_task)
    waiting = [pl for pl in p.runs if pl.submit]
    slots = 1 if cluster == "debug" else max(1, local_jobs)
    running: list[tuple[Planned, Any]] = []
    bar = tqdm(total=len(waiting), desc=f"{p.spec.name} runs", unit="run", file=sys.stderr, disable=not waiting)
    try:
        _loop(c, p, cluster, waiting, running, slots, bar)
    except KeyboardInterrupt:  # local jobs are child processes that would outlive us: stop them
        for _, job in running:
            job.cancel(check=False)
        raise
    finally:
        bar.close()
        if own_threads:
            del os.environ["OMP_NUM_THREADS"]
