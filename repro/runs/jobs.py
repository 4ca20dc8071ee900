"""Job bookkeeping: RUN_DIR/jobs.json (written by the launcher only) and what the scheduler says.

jobs.json: ``{"jobs": [{"job_id", "cluster" (slurm|local|debug), "wave", "submitted", "stdout",
"stderr", "retry_of"?, "final_state"?}]}``, oldest first. ``final_state`` records a job that ended
without result.json (its SLURM state, e.g. CANCELLED, OUT_OF_MEMORY).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Sequence

from repro.io import atomic_write_json

from .errors import LaunchError

JOBS_FILE = "jobs.json"
JOBS_DIR = "_jobs"  # submitit's pickles and logs, ROOT/<table>/_jobs/<job id>/
ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED",
                 "CONFIGURING", "COMPLETING", "RESIZING", "SIGNALING", "STAGE_OUT"}


def read_jobs(run_dir: Path) -> list[dict]:
    """The jobs that ever worked on a run, oldest first."""
    p = Path(run_dir) / JOBS_FILE
    if not p.exists():
        return []
    try:
        jobs = json.loads(p.read_text()).get("jobs")
    except (OSError, ValueError, AttributeError) as e:
        raise LaunchError(f"{p} is not a readable jobs record ({type(e).__name__}); repair it or move it "
                          "away (it only lists the jobs that worked on the run)") from None
    if not isinstance(jobs, list) or not all(isinstance(j, dict) and "job_id" in j for j in jobs):
        raise LaunchError(f"{p}: 'jobs' is not a list of job records; repair it or move it away")
    return jobs


def write_jobs(run_dir: Path, jobs: list[dict]) -> None:
    atomic_write_json(Path(run_dir) / JOBS_FILE, {"jobs": jobs})


def append_job(run_dir: Path, entry: dict) -> None:
    write_jobs(run_dir, read_jobs(run_dir) + [entry])


def job_entry(job, cluster: str, wave: int) -> dict:
    return {"job_id": str(job.job_id), "cluster": cluster, "wave": wave,
            "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr)}


def _read_states(cmd: list[str], header: str = "") -> dict[str, dict]:
    from submitit.slurm.slurm import SlurmInfoWatcher
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    return SlurmInfoWatcher().read_info(header + out.stdout) if out.returncode == 0 else {}


def slurm_states(job_ids: Sequence[str]) -> dict[str, str]:
    """{job id: SLURM state} for the given ids (array tasks as ARRAY_TASK): squeue, then sacct."""
    ids = sorted({j for j in job_ids if j})
    if not ids or shutil.which("squeue") is None:
        return {}
    # squeue knows pending array tasks that sacct may not list yet (it prints them as A_[1-3]).
    info = _read_states(["squeue", "-h", "-o", "%i|%T"], "JobID|State\n")
    states = {k: v["State"] for k, v in info.items()}
    missing = [j for j in ids if j not in states]
    if missing and shutil.which("sacct"):
        cmd = ["sacct", "-X", "-o", "JobID,State", "--parsable2"]
        for master in sorted({j.split("_")[0] for j in missing}):
            cmd += ["-j", master]
        info = _read_states(cmd)
        for j in missing:
            if j in info:
                states[j] = info[j]["State"].split()[0]  # "CANCELLED by 0" -> CANCELLED
    return {j: states[j] for j in ids if j in states}


def local_alive(pid: str) -> bool:
    """A local-executor job is a child process; its id is the pid."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, OSError):
        return False
    try:
        return "submitit" in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return True
