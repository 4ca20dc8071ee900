"""Submission with submitit: the job a run becomes, executor parameters as a pure function of the
cluster arguments (in the manner of dinov2's ``get_slurm_executor_parameters``), SLURM waves.

* One submitit job array per table and dependency wave: runs that start from a trained baseline
  (SFP from pre-trained, SNF) go in a second array whose tasks each wait (afterok) for their own
  baseline's job; a baseline that is already done is simply used.
* Preemption and time-outs: the job is a ``submitit.helpers.Checkpointable``; on the signal it
  requeues itself and the new attempt resumes from the run folder. The time-out signal goes to
  every task (submitit's ``--signal=USR2@N``, no ``B:``): submitit's batch script only runs
  ``srun`` and forwards nothing, and the handler that checkpoints and requeues lives in the tasks.
* GPUs: every task sees every GPU of its node (``--gpus-per-node``) and takes ``cuda:LOCAL_RANK``
  (``repro.dist.pick_device``). Narrowing each task to its own GPU (``--gpus-per-task=1``, or
  ``CUDA_VISIBLE_DEVICES`` per rank) keeps NCCL from CUDA IPC between the tasks, so intra-node
  all-reduces fall back from NVLink/P2P to shared memory (NVIDIA/nccl#129; per-task GPU binding
  even fails in NVIDIA/nccl-tests#300). The stray CUDA context FFCV's loader thread could open
  on GPU 0 is prevented where it starts (``repro.data.loaders_ffcv``).
* Memory: requested per node (``--mem``), by default what FFCV's ``os_cache`` needs to keep the
  .beton files in the job's page cache (cgroups charge it to the job) plus ``PER_TASK_GB`` per
  task; ``--mem-gb 0`` = every node's whole memory (SLURM's convention).
"""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from repro import rundir
from repro.config import Config
from repro.data.cpus import CPUS_PER_GPU_TASK

from . import jobs
from .errors import LaunchError
from .plan import Plan, Planned, table_dir


class TrainJob(submitit.helpers.Checkpointable):
    """What each submitit job runs: DDP set-up is repro.dist's job, training is repro.train's.

    On preemption or time-out submitit calls `checkpoint()` and requeues what it returns: this
    same job, which `repro.train.run` resumes from the run folder (checkpoint.pt), so nothing has
    to be carried over in memory.
    """

    def __init__(self, cfg: Config, run_dir: str):
        self.cfg = cfg
        self.run_dir = str(Path(run_dir).resolve())

    def __call__(self):
        from repro.train import Preempted, run
        try:
            return run(self.cfg, Path(self.run_dir))
        except Preempted:
            _requeue_after_preemption()  # a checkpoint was written; requeue (rank 0 exits here)
            raise
        except Exception as e:  # noqa: BLE001 - recorded for the table, then re-raised for SLURM
            # The trainer records its own failures; this covers a crash before it could (import
            # error, bad input found before the folder was touched), so the table shows the reason,
            # not "running" forever. Not recorded: a folder in use by another process (it is that
            # process's to write) and a machine failure (the run resumes once it is fixed).
            from repro.train import RunEnvironmentError
            if isinstance(e, (rundir.FolderInUse, RunEnvironmentError)):
                raise
            run_dir = Path(self.run_dir)
            res = rundir.read_result(run_dir) if run_dir.is_dir() else None
            if _is_main_task() and run_dir.is_dir() and (res is None or res.get("status") != "failed"):
                rundir.write_result(run_dir, {"status": "failed", "reason": f"{type(e).__name__}: {e}"[:500]})
            raise

    def checkpoint(self, *args: Any, **kwargs: Any):
        return submitit.helpers.DelayedSubmission(TrainJob(self.cfg, self.run_dir))


def _requeue_after_preemption() -> None:
    """Make sure a preempted SLURM job is requeued after the trainer's checkpoint.

    The trainer checkpoints on the FIRST stop signal and then hands that signal to the handler
    that was there before. On a preemption SLURM (and submitit's job._interrupt()) sends SIGTERM
    and then USR2; submitit only logs SIGTERM and requeues on USR2, which the trainer swallowed.
    So call submitit's USR2 handler (restored by the trainer) ourselves: on rank 0 it pickles
    `checkpoint()` and requeues the job, then exits; other ranks wait to be stopped by the requeue.
    """
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return
    job = os.environ.get("SLURM_JOB_ID", "")
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, timeout=60)
    if out.returncode == 0 and out.stdout.strip() not in ("", "RUNNING"):
        return  # scancel (CANCELLED/COMPLETING): the user stopped it; the checkpoint stays for a relaunch
    from submitit.slurm.slurm import SlurmJobEnvironment
    usr = getattr(signal, "SIG" + SlurmJobEnvironment.USR_SIG)
    handler = signal.getsignal(usr)
    if callable(handler):
        handler(usr, None)  # rank 0: requeue + sys.exit; returns on other ranks
    if not _is_main_task():
        time.sleep(120)  # scontrol requeue stops every task of the job


def _is_main_task() -> bool:
    for var in ("SLURM_PROCID", "RANK"):
        if os.environ.get(var):
            return os.environ[var] == "0"
    return True


# ---------------------------------------------------------------------------- executor parameters
@dataclass(frozen=True)
class Cluster:
    """The cluster arguments of a launch (per run), as the command line gave them."""
    nodes: int = 1
    gpus_per_node: int = 1
    tasks_per_node: int | None = None
    cpus_per_task: int = CPUS_PER_GPU_TASK
    mem_gb: float | None = None   # per node; None = no request, 0 = the whole node
    partition: str | None = None
    cpu_partition: str | None = None  # for the table job (no GPU); default: partition
    account: str | None = None
    time_min: int = 1440
    slurm_args: tuple[str, ...] = ()  # --slurm-arg: the runs' jobs only, never the table job
    array_parallelism: int = 64
    max_requeue: int = 20
    signal_delay_s: int = 120

    @property
    def tasks(self) -> int:
        """Processes per node: one per GPU unless --tasks-per-node says otherwise."""
        return self.tasks_per_node or max(self.gpus_per_node, 1)

    @property
    def processes(self) -> int:
        """DDP processes of one run (its world size)."""
        return self.nodes * self.tasks


def resources_line(c: Cluster) -> str:
    """What each task is given, as the plan states it (the CPU defaults show in --dry-run)."""
    gpu = (f"; on a GPU, FFCV decodes with {max(1, c.cpus_per_task - 1)} thread(s) beside the training "
           "thread (repro.data.cpus)") if c.gpus_per_node else ""
    return f"CPUs per task: {c.cpus_per_task} (--cpus-per-task){gpu}"


# A training process on the host: torch + CUDA runtime, FFCV's pinned batch slots, numba, with room
# to spare (a ResNet-50 rank holds a few GB).
PER_TASK_GB = 8


def memory_request_gb(cached_bytes: int, tasks_per_node: int) -> int:
    """Default --mem per node: the files FFCV keeps in the page cache (``os_cache``: each node reads
    whole .beton files over an epoch, and the page cache counts against the job's memory limit,
    so a smaller limit evicts them and every epoch reads the disk again) + PER_TASK_GB per task."""
    return math.ceil(cached_bytes * 1.05 / 2**30) + PER_TASK_GB * tasks_per_node


def cached_data_bytes(p: Plan) -> int | None:
    """Bytes of the .beton files FFCV keeps in the page cache (data.in_memory) for the runs to
    submit; None while a data folder has no train.beton yet."""
    folders = {Path(pl.cfg.data.ffcv_dir) for pl in p.runs
               if pl.submit and pl.cfg.data.loader == "ffcv" and pl.cfg.data.in_memory and pl.cfg.data.ffcv_dir}
    if any(not (d / "train.beton").is_file() for d in folders):
        return None
    return sum(f.stat().st_size for d in folders for f in d.glob("*.beton"))


def executor_params(c: Cluster, cluster: str, *, name: str, dependency: str = "", small: bool = False) -> dict:
    """submitit ``update_parameters`` for a run's job (small: the 1-CPU table job). Pure."""
    tasks = 1 if small else c.tasks
    params: dict[str, Any] = {"name": name, "timeout_min": 30 if small else c.time_min,
                              "tasks_per_node": tasks, "cpus_per_task": 1 if small else c.cpus_per_task}
    if c.gpus_per_node and not small:
        params["gpus_per_node"] = c.gpus_per_node
    if cluster != "slurm":
        return params
    extra: dict[str, Any] = {"kill-on-invalid-dep": "yes"}  # dependents of a failed baseline leave the queue
    if dependency:
        extra["dependency"] = dependency
    for kv in () if small else c.slurm_args:  # GPU jobs' options (constraint=a100): none fit the CPU job
        k, _, v = kv.partition("=")
        extra[k.lstrip("-")] = v if v else True
    params.update(nodes=1 if small else c.nodes, slurm_additional_parameters=extra,
                  slurm_signal_delay_s=c.signal_delay_s, slurm_array_parallelism=c.array_parallelism,
                  # one task that exits non-zero ends the step: the others would wait in a
                  # collective until its timeout (dist_timeout_s) with the GPUs idle
                  slurm_srun_args=["--kill-on-bad-exit=1"],
                  # torch threads = the task's CPUs: without a cpuset (a cluster with no task
                  # affinity) torch starts one thread per core of the node in every task
                  slurm_setup=["export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}"])
    partition = (c.cpu_partition or c.partition) if small else c.partition
    if partition:
        params["slurm_partition"] = partition
    if c.account:
        params["slurm_account"] = c.account
    if c.mem_gb is not None and not small:
        params["mem_gb"] = c.mem_gb  # 0 -> --mem=0GB: SLURM gives the whole node (checked with sbatch)
    return params


def make_executor(c: Cluster, p: Plan, cluster: str, *, name: str, dependency: str = "", small: bool = False):
    folder = table_dir(p.root, p.spec) / jobs.JOBS_DIR / "%j"
    ex = submitit.AutoExecutor(folder=folder, cluster=cluster, slurm_max_num_timeout=c.max_requeue)
    ex.update_parameters(**executor_params(c, cluster, name=name, dependency=dependency, small=small))
    return ex


# ---------------------------------------------------------------------------- submitting
def prepare_folder(pl: Planned) -> dict:
    """Create the run folder before submitting; returns extra fields for the jobs.json entry."""
    rundir.prepare(pl.run_dir, pl.cfg)  # writes config.json (so the table can list queued runs)
    res = rundir.read_result(pl.run_dir)
    if res is not None and res.get("status") == "failed":
        # --retry-failed: the failure becomes history (kept in jobs.json), so that a failed
        # result.json always means "the latest attempt failed"
        (pl.run_dir / rundir.RESULT).unlink()
        return {"retry_of": str(res.get("reason", ""))[:500]}
    return {}


def _submit_wave(c: Cluster, p: Plan, wave: int, group: list[Planned], extra: dict) -> list:
    deps = [pl.dep.active_job for pl in group] if wave == 2 else []
    if any(not d for d in deps):  # cannot happen: wave 1 sets active_job for what it submits
        raise LaunchError("internal: a dependent run's baseline has no job")
    ex = make_executor(c, p, "slurm", name=f"{p.spec.name}-w{wave}",
                       dependency="afterok:" + ":".join(sorted(set(deps))) if deps else "")
    with ex.batch():
        submitted = [ex.submit(TrainJob(pl.cfg, str(pl.run_dir))) for pl in group]
    for pl, job, dep in zip(group, submitted, deps or [None] * len(group)):
        if dep is not None and len(set(deps)) > 1:
            # The array was queued waiting for all of this wave's baselines; narrow each task
            # to its own (possible while it is pending: it cannot start before this).
            subprocess.run(["scontrol", "update", f"JobId={job.job_id}", f"Dependency=afterok:{dep}"],
                           check=True, capture_output=True, text=True, timeout=60)
        jobs.append_job(pl.run_dir, {**jobs.job_entry(job, "slurm", wave), **extra[id(pl)]})
        pl.active_job = str(job.job_id)
    what = f"array {submitted[0].job_id.split('_')[0]}" if len(submitted) > 1 else f"job {submitted[0].job_id}"
    print(f"[launch] submitted wave {wave}: {len(submitted)} run(s) as {what}"
          + (" (each task after its own baseline)" if wave == 2 else ""), file=sys.stderr)
    return submitted


def submit_slurm(c: Cluster, p: Plan) -> list:
    """Wave 1: every run that needs nothing unfinished, as one array. Wave 2: runs that start
    from a baseline still queued or running, as a second array; each of its tasks waits
    (afterok) for its own baseline's job only."""
    todo = [pl for pl in p.runs if pl.submit]
    extra = {id(pl): prepare_folder(pl) for pl in todo}
    wave1 = [pl for pl in todo if pl.dep is None or pl.dep.state == "done"]
    wave2 = [pl for pl in todo if pl.dep is not None and pl.dep.state != "done"]
    out = []
    for wave, group in ((1, wave1), (2, wave2)):
        if group:
            out += _submit_wave(c, p, wave, group, extra)
    return out


def wait_slurm(p: Plan, poll_s: float = 2.0) -> None:
    """Block until no run of the plan has a pending/running job; progress on stderr."""
    from tqdm import tqdm
    ids = {pl.active_job for pl in p.runs if pl.active_job}
    with tqdm(total=len(ids), desc=f"{p.spec.name} jobs ended", unit="job", file=sys.stderr) as bar:
        while True:
            states = jobs.slurm_states(sorted(ids))
            ended = sum(1 for j in ids if j in states and states[j] not in jobs.ACTIVE_STATES)
            bar.n = ended
            bar.refresh()
            if ended == len(ids):
                return
            time.sleep(poll_s)
