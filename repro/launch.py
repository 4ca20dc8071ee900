"""Plan, submit and requeue a table's runs with submitit; shared by every launch/*.py script.

The launcher knows cluster parameters only; each run's config comes from the TableSpec, and a
run happens in exactly one way: `repro.train.run(cfg, run_dir)` inside a submitit job.

* Run folder = ROOT/<table>/<run_name(cfg)>, never named after a job id, so a requeued or
  re-launched run finds its checkpoint. The job ids that ever worked on a run are appended to
  RUN_DIR/jobs.json; before submitting, the launcher asks SLURM (squeue, then sacct) whether a
  recorded job is still pending or running and never queues that run twice.
* One submitit job array per table and dependency wave: runs that start from a trained baseline
  (SFP from pre-trained, SNF) go in a second array whose tasks each wait (afterok) for their own
  baseline's job; a baseline that is already done is simply used.
* Preemption and time-outs: the job is a `submitit.helpers.Checkpointable`; on the signal it
  requeues itself and the new attempt resumes from the run folder.
* On SLURM the launcher returns after submitting (unless --wait) and queues one small CPU job
  that builds the table when every run has ended (afterany). Locally it waits and builds it.

    python launch/table2.py --smoke             # miniature table, local executor, no SLURM
    python launch/table2.py --dry-run           # what would happen, with a GPU-hours estimate
    python -m repro.launch table2 --help        # same CLI for any table by name
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import submitit

from repro.tablespec import RunSpec, TableSpec, load_table

CLUSTERS = ("auto", "slurm", "local", "debug")
JOBS_FILE = "jobs.json"
JOBS_DIR = "_jobs"  # submitit's pickles and logs, ROOT/<table>/_jobs/<job id>/
ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED",
                 "CONFIGURING", "COMPLETING", "RESIZING", "SIGNALING", "STAGE_OUT"}

# ---------------------------------------------------------------------------- GPU-hours estimate
# Rough cost of ONE training epoch on one A100-class GPU, in GPU-hours (training only, +-50%):
#   images x 3 (forward + backward) x dense conv MACs / effective MAC rate.
# Effective rates: ImageNet ResNets with bf16 + channels_last + FFCV reach ~25 TMAC/s (matches
# the ffcv-imagenet anchors in stack.md: ResNet-50 ~0.17 GPU-h per 224-px epoch); CIFAR ResNets
# are launch-bound at batch 128, ~2 TMAC/s. Pruned runs are priced as dense (SFP trains the
# dense shape; SNF fine-tuning is cheaper, so this is an upper bound). MACs: papers.md, checked
# against repro.flops by tests/test_launch.py.
CONV_MACS = {"resnet20": 40.55e6, "resnet32": 68.86e6, "resnet56": 125.49e6, "resnet110": 252.89e6,
             "resnet18": 1.81e9, "resnet34": 3.66e9, "resnet50": 4.09e9, "resnet101": 7.80e9}
TRAIN_IMAGES = {"cifar10": 50_000, "imagenet": 1_281_167, "digits": 1_797}
EFFECTIVE_MACS_PER_S = {"cifar": 2e12, "imagenet": 25e12}


def gpu_hours_per_epoch(arch: str, dataset: str) -> float:
    from repro.models import arch_info
    rate = EFFECTIVE_MACS_PER_S[arch_info(arch).family]
    return TRAIN_IMAGES[dataset] * 3 * CONV_MACS[arch] / rate / 3600


class LaunchError(RuntimeError):
    """Bad input found before anything was submitted; the message says what to do."""


# ---------------------------------------------------------------------------- the jobs
class TrainJob(submitit.helpers.Checkpointable):
    """What each submitit job runs: DDP set-up is repro.dist's job, training is repro.train's.

    On preemption or time-out submitit calls `checkpoint()` and requeues what it returns: this
    same job, which `repro.train.run` resumes from the run folder (checkpoint.pt), so nothing has
    to be carried over in memory.
    """

    def __init__(self, cfg, run_dir: str, cwd: str | None = None):
        self.cfg = cfg
        self.run_dir = str(Path(run_dir).resolve())
        # prune.init_from may be relative to the launch folder (it keeps run names free of where
        # ROOT lives); SLURM starts jobs there by default, but not every site does.
        self.cwd = cwd or os.getcwd()

    def __call__(self):
        from repro import rundir
        from repro.train import Preempted, run
        os.chdir(self.cwd)
        try:
            return run(self.cfg, Path(self.run_dir))
        except Preempted:
            _requeue_after_preemption()  # a checkpoint was written; requeue (rank 0 exits here)
            raise
        except Exception as e:  # noqa: BLE001 - recorded for the table, then re-raised for SLURM
            # The trainer records its own failures; this covers a crash before it could (import
            # error, unusable run folder), so the table shows the reason, not "running" forever.
            run_dir = Path(self.run_dir)
            res = rundir.read_result(run_dir) if run_dir.is_dir() else None
            if _is_main_task() and run_dir.is_dir() and (res is None or res.get("status") != "failed"):
                rundir.write_result(run_dir, {"status": "failed", "reason": f"{type(e).__name__}: {e}"[:500]})
            raise

    def checkpoint(self, *args: Any, **kwargs: Any):
        return submitit.helpers.DelayedSubmission(TrainJob(self.cfg, self.run_dir, self.cwd))


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
    import signal
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


class TableJob:
    """The small CPU job queued after a table's runs (afterany): record job states, build the table."""

    def __init__(self, table: str, root: str, out: str, smoke: bool):
        self.table, self.root, self.out, self.smoke = table, root, out, smoke

    def __call__(self):
        from repro.tables import build
        spec = load_table(self.table)
        plan(spec, Path(self.root), smoke=self.smoke, record=True)  # notes runs whose job died
        return [str(p) for p in build(spec, self.root, self.out, smoke=self.smoke)]


# ---------------------------------------------------------------------------- planning
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
               raw_dir: Path | None = None, init_dir: Path | None = None):
    """The run's full config: preset (by arch family) <- table base <- smoke <- row <- row smoke <- seed/paths."""
    from repro.config import Config
    values: dict[str, Any] = {**spec.base, **(spec.smoke if smoke else {}), **run.row.overrides,
                              **(run.row.smoke if smoke else {}),
                              "seed": run.seed, "log.group": spec.name + ("-smoke" if smoke else "")}
    if data_dir is not None:
        values["data.ffcv_dir"] = str(data_dir)
    if raw_dir is not None:
        values["data.path"] = str(raw_dir)
    if init_dir is not None:
        values["prune.init_from"] = str(init_dir)
    return Config.from_overrides(values)


def read_jobs(run_dir: Path) -> list[dict]:
    """The jobs that ever worked on a run, oldest first (RUN_DIR/jobs.json, written by the launcher)."""
    p = Path(run_dir) / JOBS_FILE
    if not p.exists():
        return []
    try:
        return json.loads(p.read_text()).get("jobs", [])
    except (OSError, ValueError):
        return []


def _write_jobs(run_dir: Path, jobs: list[dict]) -> None:
    from repro.rundir import atomic_write_json
    atomic_write_json(Path(run_dir) / JOBS_FILE, {"jobs": jobs})


def slurm_states(job_ids: Sequence[str]) -> dict[str, str]:
    """{job id: SLURM state} for the given ids (array tasks as ARRAY_TASK): squeue, then sacct."""
    ids = sorted({j for j in job_ids if j})
    if not ids or shutil.which("squeue") is None:
        return {}
    from submitit.slurm.slurm import SlurmInfoWatcher
    watcher = SlurmInfoWatcher()
    states: dict[str, str] = {}
    # squeue knows pending array tasks that sacct may not list yet (it prints them as A_[1-3]).
    out = subprocess.run(["squeue", "-h", "-o", "%i|%T"], capture_output=True, text=True, timeout=60)
    if out.returncode == 0:
        info = watcher.read_info("JobID|State\n" + out.stdout)
        states.update({k: v["State"] for k, v in info.items()})
    missing = [j for j in ids if j not in states]
    if missing and shutil.which("sacct"):
        cmd = ["sacct", "-X", "-o", "JobID,State", "--parsable2"]
        for master in sorted({j.split("_")[0] for j in missing}):
            cmd += ["-j", master]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if out.returncode == 0:
            info = watcher.read_info(out.stdout)
            for j in missing:
                if j in info:
                    states[j] = info[j]["State"].split()[0]  # "CANCELLED by 0" -> CANCELLED
    return {j: states[j] for j in ids if j in states}


def _local_alive(pid: str) -> bool:
    """A local-executor job is a child process; its id is the pid."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, OSError):
        return False
    try:
        return "submitit" in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return True


def plan(spec: TableSpec, root: Path, *, smoke: bool = False, data_dir: Path | None = None,
         raw_dir: Path | None = None, only: Sequence[str] = (), retry_failed: bool = False,
         record: bool = False, query: bool = True) -> Plan:
    """Decide for every run of the table: nothing to do (done / running / failed / blocked) or submit.

    record=True writes what the scheduler says about dead jobs into their jobs.json (a job that
    ended without result.json shows as failed, with the SLURM state, in the table).
    query=False never asks the scheduler: a recorded job that has not been seen to end counts as
    running (what the table builder uses, so a table depends on the run folders alone).
    """
    from repro.config import run_name
    from repro.rundir import read_result
    tdir = table_dir(root, spec)
    by_key: dict[tuple[str, int], Planned] = {}
    p = Plan(spec, Path(root), smoke)
    for run in spec.runs(smoke):
        dep = by_key.get((run.row.init_from, run.seed)) if run.row.init_from else None
        cfg = config_for(spec, run, smoke=smoke, data_dir=data_dir, raw_dir=raw_dir,
                         init_dir=dep.run_dir if dep else None)
        pl = Planned(run, cfg, _run_dir(tdir, cfg, run_name(cfg)), dep=dep,
                     gpu_hours=cfg.train_epochs * gpu_hours_per_epoch(cfg.model.arch, cfg.data.name))
        by_key[(run.row.key, run.seed)] = pl
        p.runs.append(pl)

    # 1. what the run folders say
    last_job: dict[int, dict] = {}
    for pl in p.runs:
        res = read_result(pl.run_dir) if pl.run_dir.is_dir() else None
        jobs = read_jobs(pl.run_dir)
        if res and res.get("status") == "done":
            pl.state = "done"
            continue
        if res and res.get("status") == "failed":
            pl.state, pl.detail = "failed", str(res.get("reason", "")).splitlines()[0][:200] if res.get("reason") else ""
        elif jobs and jobs[-1].get("final_state"):
            pl.state, pl.detail = "failed", f"job {jobs[-1]['job_id']} ended {jobs[-1]['final_state']} without a result"
        elif (pl.run_dir / "checkpoint.pt").exists():
            pl.state = "resume"
        if jobs and not jobs[-1].get("final_state") and pl.state != "failed":
            last_job[id(pl)] = jobs[-1]

    # 2. what the scheduler says about the last recorded job of every unfinished run
    slurm_ids = [j["job_id"] for j in last_job.values() if j.get("cluster") == "slurm"]
    states = slurm_states(slurm_ids) if (slurm_ids and query) else {}
    for pl in p.runs:
        job = last_job.get(id(pl))
        if job is None:
            continue
        jid, cluster = job["job_id"], job.get("cluster")
        if not query:
            st, alive = "", True
        elif cluster == "slurm":
            st = states.get(jid, "")
            alive = st in ACTIVE_STATES
        else:
            st, alive = "", cluster == "local" and _local_alive(jid)
        if alive:
            pl.state, pl.detail, pl.active_job = "running", f"job {jid} {st.lower() or 'submitted'}", jid
        elif pl.state != "failed" and (st or cluster != "slurm"):
            # the job is over and left no result: the run did not finish
            final = st or "ENDED"
            pl.state, pl.detail = "failed", f"job {jid} ended {final} without a result"
            if record:
                jobs = read_jobs(pl.run_dir)
                jobs[-1]["final_state"] = final
                _write_jobs(pl.run_dir, jobs)
        # (a SLURM job unknown to both squeue and sacct: accounting lag right after submission,
        # or a purged database; it stays in its folder state and is shown as such)

    if retry_failed:
        for pl in p.runs:
            if pl.state == "failed":
                pl.state = "resume" if (pl.run_dir / "checkpoint.pt").exists() else "new"
                pl.detail = "retry"

    # 3. --only: the selected runs plus the runs they start from; the others are left alone
    if only:
        import fnmatch
        wanted = {id(pl) for pl in p.runs if any(fnmatch.fnmatch(pl.run.key, pat) for pat in only)}
        if not wanted:
            keys = ", ".join(pl.run.key for pl in p.runs[:4])
            raise LaunchError(f"--only {' '.join(only)} matches no run of {spec.name} "
                              f"(run keys look like: {keys}, ...)")
        for pl in p.runs:
            if id(pl) in wanted and pl.dep is not None:
                wanted.add(id(pl.dep))
        p.runs = [pl for pl in p.runs if id(pl) in wanted]

    # 4. a run cannot start from a baseline that failed
    for pl in p.runs:
        if pl.submit and pl.dep is not None and pl.dep.state in ("failed", "blocked"):
            pl.state, pl.detail = "blocked", f"its baseline {pl.dep.run.key} {pl.dep.state}"
    return p


def _run_dir(tdir: Path, cfg, name: str) -> Path:
    """ROOT/<table>/<run name>; or the folder holding this run after ROOT was moved.

    prune.init_from (a baseline's run folder) is part of a run's identity, so its absolute path
    is in the run name's hash: after `mv runs elsewhere` the dependent runs' names change. Such a
    run is found by comparing configs with init_from reduced to the baseline's folder name.
    """
    direct = tdir / name
    if direct.exists() or not cfg.prune.init_from or not tdir.is_dir():
        return direct
    from repro.config import Config, identity_diff
    for cpath in sorted(tdir.glob("*/config.json")):
        try:
            other = Config.from_json(cpath.read_text())
        except (OSError, ValueError):
            continue
        diff = identity_diff(other, cfg)
        if set(diff) == {"prune.init_from"} and Path(diff["prune.init_from"][0]).name == \
                Path(diff["prune.init_from"][1]).name:
            return cpath.parent
    return direct


def print_plan(p: Plan, file=None) -> None:
    from tabulate import tabulate
    file = file or sys.stdout
    rows = []
    for pl in p.runs:
        state = {"resume": "to resume"}.get(pl.state, pl.state)
        detail = pl.detail
        if pl.submit and pl.dep is not None and pl.dep.state != "done":
            detail = f"after {pl.dep.run.key}"
        rows.append([pl.run.key, state, detail, pl.cfg.train_epochs,
                     "-" if p.smoke else f"{pl.gpu_hours:.1f}", pl.run_dir.name])
    print(tabulate(rows, headers=["run", "state", "detail", "epochs", "GPU-h", "run folder"]), file=file)
    counts = ", ".join(f"{s} {p.count(s)}" for s in ("done", "running", "resume", "new", "failed", "blocked")
                       if p.count(s))
    todo = [pl for pl in p.runs if pl.submit]
    print(f"\n{p.spec.name}{' (smoke)' if p.smoke else ''}: {len(p.runs)} runs ({counts}); "
          f"to submit: {len(todo)}", file=file)
    if not p.smoke:
        print(f"estimated cost of what would be submitted: {sum(pl.gpu_hours for pl in todo):.1f} "
              f"GPU-hours (A100-class, rough +-50%; full table: {sum(pl.gpu_hours for pl in p.runs):.1f}; "
              "see repro/launch.py gpu_hours_per_epoch)", file=file)


# ---------------------------------------------------------------------------- checks before submitting
def check_root(root: Path) -> None:
    """--root must be a folder we can create files in (checked by writing, not by mode bits)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise LaunchError(f"--root {root} is not a writable folder ({e.strerror or e}); give a folder "
                          "you can write to (on a cluster: one on a shared file system)") from None


def check_data_for(p: Plan) -> None:
    """Every data set a run to be submitted reads must exist and be converted (repro.data.check_data)."""
    from repro.data import check_data
    seen = set()
    for pl in p.runs:
        if pl.submit:
            d = pl.cfg.data
            if (d.name, d.ffcv_dir, d.path, d.loader) not in seen:
                seen.add((d.name, d.ffcv_dir, d.path, d.loader))
                check_data(d)  # DataError: one line that says how to convert the data


def check_folders(p: Plan) -> None:
    """A run folder that holds another run's config is refused before anything is submitted."""
    from repro.config import Config, identity_diff
    for pl in p.runs:
        cpath = pl.run_dir / "config.json"
        if pl.submit and cpath.exists():
            try:
                diff = identity_diff(Config.from_json(cpath.read_text()), pl.cfg)
            except ValueError as e:
                raise LaunchError(f"{cpath} is unreadable ({e}); move the folder away") from None
            if diff:
                raise LaunchError(f"{pl.run_dir} holds a different run ({', '.join(sorted(diff)[:3])} differ); "
                                  "move it away")


def resolve_cluster(cluster: str) -> str:
    if cluster == "auto":
        return "slurm" if shutil.which("sbatch") else "local"
    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise LaunchError("--cluster slurm: no `sbatch` on this machine; run on a SLURM login node, "
                          "or use --cluster local")
    return cluster


# ---------------------------------------------------------------------------- smoke data
def prepare_smoke_data(spec: TableSpec, data_root: Path) -> tuple[Path, Path]:
    """Generate the table's stand-in data in the real layout and convert it with the real writer.

    Returns (converted dir, raw dir). Reused when already there (a second --smoke does no work).
    """
    kind = spec.smoke_data["kind"]
    raw, ffcv = data_root / f"{kind}-raw", data_root / kind
    if (ffcv / "train.beton").exists() and (ffcv / "val.beton").exists():
        return ffcv, raw
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in spec.smoke_data.items() if k != "kind"]
    steps = []
    if not raw.exists():
        steps.append([sys.executable, "-m", "repro.data.synth", kind, "--out", str(raw), *flags])
    steps.append([sys.executable, "-m", "repro.data.write", kind, "--src", str(raw), "--out", str(ffcv)])
    for cmd in steps:
        print(f"[launch] {' '.join(cmd[1:])}", file=sys.stderr)
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if done.returncode != 0:
            raise LaunchError(f"smoke data step failed: {' '.join(cmd[1:])}\n{done.stdout[-2000:]}")
    return ffcv, raw


# ---------------------------------------------------------------------------- submitting
def make_executor(args, spec: TableSpec, root: Path, cluster: str, *, name: str, dependency: str = "",
                  small: bool = False):
    """submitit executor with the run resources from the command line (small: 1 CPU, no GPU)."""
    folder = table_dir(root, spec) / JOBS_DIR / "%j"
    ex = submitit.AutoExecutor(folder=folder, cluster=cluster, slurm_max_num_timeout=args.max_requeue)
    tasks = 1 if small else (args.tasks_per_node or max(args.gpus_per_node, 1))
    params: dict[str, Any] = {"name": name, "timeout_min": 30 if small else args.time,
                              "tasks_per_node": tasks, "cpus_per_task": 1 if small else args.cpus_per_task}
    if args.gpus_per_node and not small:
        params["gpus_per_node"] = args.gpus_per_node
    if cluster == "slurm":
        extra: dict[str, Any] = {"kill-on-invalid-dep": "yes"}  # dependents of a failed baseline leave the queue
        if dependency:
            extra["dependency"] = dependency
        for kv in args.slurm_arg:
            k, _, v = kv.partition("=")
            extra[k.lstrip("-")] = v if v else True
        params.update(nodes=1 if small else args.nodes, slurm_additional_parameters=extra,
                      slurm_signal_delay_s=args.signal_delay, slurm_array_parallelism=args.array_parallelism)
        if args.partition:
            params["slurm_partition"] = args.partition
        if args.account:
            params["slurm_account"] = args.account
        if args.mem_gb and not small:
            params["mem_gb"] = args.mem_gb
    ex.update_parameters(**params)
    return ex


def _job_entry(job, cluster: str, wave: int) -> dict:
    return {"job_id": str(job.job_id), "cluster": cluster, "wave": wave,
            "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr)}


def _prepare_folder(pl: Planned) -> dict:
    """Create the run folder before submitting; returns extra fields for the jobs.json entry."""
    from repro.rundir import prepare, read_result
    prepare(pl.run_dir, pl.cfg)  # writes config.json (so the table can list queued runs)
    res = read_result(pl.run_dir)
    if res is not None and res.get("status") == "failed":
        # --retry-failed: the failure becomes history (kept in jobs.json), so that a failed
        # result.json always means "the latest attempt failed"
        (pl.run_dir / "result.json").unlink()
        return {"retry_of": str(res.get("reason", ""))[:500]}
    return {}


def submit_slurm(args, p: Plan) -> list:
    """Wave 1: every run that needs nothing unfinished, as one array. Wave 2: runs that start
    from a baseline still queued or running, as a second array; each of its tasks waits
    (afterok) for its own baseline's job only."""
    todo = [pl for pl in p.runs if pl.submit]
    extra = {id(pl): _prepare_folder(pl) for pl in todo}
    wave1 = [pl for pl in todo if pl.dep is None or pl.dep.state == "done"]
    wave2 = [pl for pl in todo if pl.dep is not None and pl.dep.state != "done"]
    jobs_out = []
    for wave, group in ((1, wave1), (2, wave2)):
        if not group:
            continue
        deps = [pl.dep.active_job for pl in group] if wave == 2 else []
        if any(not d for d in deps):  # cannot happen: wave 1 sets active_job for what it submits
            raise LaunchError("internal: a dependent run's baseline has no job")
        ex = make_executor(args, p.spec, p.root, "slurm", name=f"{p.spec.name}-w{wave}",
                           dependency="afterok:" + ":".join(sorted(set(deps))) if deps else "")
        with ex.batch():
            jobs = [ex.submit(TrainJob(pl.cfg, str(pl.run_dir))) for pl in group]
        for pl, job, dep in zip(group, jobs, deps or [None] * len(group)):
            if dep is not None and len(set(deps)) > 1:
                # The array was queued waiting for all of this wave's baselines; narrow each task
                # to its own (possible while it is pending: it cannot start before this).
                subprocess.run(["scontrol", "update", f"JobId={job.job_id}", f"Dependency=afterok:{dep}"],
                               check=True, capture_output=True, text=True, timeout=60)
            _write_jobs(pl.run_dir, read_jobs(pl.run_dir) + [{**_job_entry(job, "slurm", wave), **extra[id(pl)]}])
            pl.active_job = str(job.job_id)
        jobs_out += jobs
        what = f"array {jobs[0].job_id.split('_')[0]}" if len(jobs) > 1 else f"job {jobs[0].job_id}"
        print(f"[launch] submitted wave {wave}: {len(jobs)} run(s) as {what}"
              + (" (each task after its own baseline)" if wave == 2 else ""), file=sys.stderr)
    return jobs_out


def run_locally(args, p: Plan, cluster: str) -> None:
    """local / debug executors: at most --local-jobs runs at once, each after its baseline.

    (submitit's local executor starts every job of a batch at once, which on a small machine
    means every run fighting for the same cores; a small pool is faster and predictable.
    debug runs in this process, so one at a time.)
    """
    from tqdm import tqdm
    waiting = [pl for pl in p.runs if pl.submit]
    slots = 1 if cluster == "debug" else max(1, args.local_jobs)
    running: list[tuple[Planned, Any]] = []
    bar = tqdm(total=len(waiting), desc=f"{p.spec.name} runs", unit="run", file=sys.stderr, disable=not waiting)
    try:
        _local_loop(args, p, cluster, waiting, running, slots, bar)
    except KeyboardInterrupt:  # local jobs are child processes that would outlive us: stop them
        for _, job in running:
            job.cancel(check=False)
        raise
    finally:
        bar.close()


def _local_loop(args, p: Plan, cluster: str, waiting: list, running: list, slots: int, bar) -> None:
    from repro.rundir import read_result
    while waiting or running:
        for pl in list(waiting):  # start what may start
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
            extra = _prepare_folder(pl)
            ex = make_executor(args, p.spec, p.root, cluster, name=f"{p.spec.name}-{pl.run.key}")
            job = ex.submit(TrainJob(pl.cfg, str(pl.run_dir)))
            _write_jobs(pl.run_dir, read_jobs(pl.run_dir) + [{**_job_entry(job, cluster, 1), **extra}])
            pl.state, pl.active_job = "running", str(job.job_id)
            running.append((pl, job))
            bar.set_postfix_str(", ".join(r.run.key for r, _ in running))
        if waiting and not running:  # left: runs whose baseline runs elsewhere (e.g. an earlier launch)
            for pl in waiting:
                pl.state, pl.detail = "blocked", f"its baseline {pl.dep.run.key} is {pl.dep.state} elsewhere"
                bar.write(f"[launch] {pl.run.key}: not started, {pl.detail}; launch again when it is done")
            waiting = []
        for pl, job in list(running):  # collect what ended
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
        if running and not any(cluster == "debug" or j.done() for _, j in running):
            time.sleep(0.5)


def wait_slurm(p: Plan, poll_s: float = 2.0) -> None:
    """Block until no run of the plan has a pending/running job; progress on stderr."""
    from tqdm import tqdm
    ids = {pl.active_job for pl in p.runs if pl.active_job}
    with tqdm(total=len(ids), desc=f"{p.spec.name} jobs ended", unit="job", file=sys.stderr) as bar:
        while True:
            states = slurm_states(sorted(ids))
            ended = sum(1 for j in ids if j in states and states[j] not in ACTIVE_STATES)
            bar.n = ended
            bar.refresh()
            if ended == len(ids):
                return
            time.sleep(poll_s)


# ---------------------------------------------------------------------------- command line
def build_parser(spec: TableSpec | None, prog: str) -> argparse.ArgumentParser:
    what = f"{spec.title}: " if spec else ""
    ap = argparse.ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"{what}plan the table's runs, skip those done or queued, submit the rest with "
                    "submitit (one array per dependency wave), then build the table with repro.tables.",
        epilog="States in the plan: done (result.json done), running (a recorded job is pending or "
               "running), to resume (checkpoint.pt, no live job), new, failed (shown with its reason; "
               "resubmitted only with --retry-failed), blocked (its baseline failed).\n"
               "Exit codes: 0 ok, 1 a run failed (local/--wait), 2 bad input (nothing submitted).")
    ap.add_argument("--cluster", choices=CLUSTERS, default="auto",
                    help="auto = slurm when `sbatch` is on PATH, else local (with --smoke: local); "
                         "debug = in this process")
    ap.add_argument("--root", default=None,
                    help="folder holding the run folders, ROOT/<table>/<run name> (default runs/, "
                         "with --smoke runs/smoke/); on a cluster, a shared file system")
    ap.add_argument("--out", default=None,
                    help="where the table files go (default tables/, with --smoke ROOT/tables/)")
    ap.add_argument("--data", default=None,
                    help="converted data set, the folder with train.beton/val.beton (default "
                         "data/<dataset>); with --smoke, where the generated data is kept (default ROOT/data)")
    ap.add_argument("--smoke", action="store_true",
                    help="the same table in miniature on generated data in the real layout "
                         "(real writer, loader, trainer, launcher); not comparable to the paper")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and a GPU-hours estimate; submit nothing")
    ap.add_argument("--only", action="append", default=[], metavar="PATTERN",
                    help="only runs whose key matches this glob (e.g. 'resnet18/*'), plus the baselines "
                         "they start from; repeatable")
    ap.add_argument("--retry-failed", action="store_true", help="resubmit failed runs (resuming from their checkpoint)")
    ap.add_argument("--wait", action="store_true",
                    help="slurm: wait for the runs and build the table here (local/debug always wait)")
    ap.add_argument("--no-table", action="store_true", help="do not build the table after the runs")
    ap.add_argument("--local-jobs", type=int, default=2,
                    help="local: runs at once on this machine (default 2; each after its baseline)")
    g = ap.add_argument_group("cluster resources (per run)")
    g.add_argument("--nodes", type=int, default=1, help="nodes per run (DDP across them; slurm only)")
    g.add_argument("--gpus-per-node", type=int, default=None,
                   help="GPUs per node (default 1; 0 with --smoke); one task per GPU")
    g.add_argument("--tasks-per-node", type=int, default=None,
                   help="DDP processes per node (default: --gpus-per-node, at least 1)")
    g.add_argument("--cpus-per-task", type=int, default=None, help="default 8 (1 with --smoke)")
    g.add_argument("--mem-gb", type=float, default=None, help="memory per node (default: the partition's)")
    g.add_argument("--partition", default=None, help="SLURM partition (default: the cluster's default)")
    g.add_argument("--account", default=None, help="SLURM account")
    g.add_argument("--time", type=int, default=None,
                   help="time limit per job in minutes (default 1440, with --smoke 30); a run that "
                        "hits it is requeued and resumes")
    g.add_argument("--slurm-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch option, e.g. --slurm-arg qos=high --slurm-arg constraint=a100")
    g.add_argument("--array-parallelism", type=int, default=64, help="most array tasks running at once")
    g.add_argument("--max-requeue", type=int, default=20, help="most time-out requeues per run")
    g.add_argument("--signal-delay", type=int, default=120,
                   help="seconds before the time limit at which the job is told to requeue")
    return ap


def _defaults(args) -> None:
    smoke = args.smoke
    args.root = args.root or ("runs/smoke" if smoke else "runs")
    args.out = args.out or (str(Path(args.root) / "tables") if smoke else "tables")
    if args.gpus_per_node is None:
        args.gpus_per_node = 0 if smoke else 1
    if args.cpus_per_task is None:
        args.cpus_per_task = 1 if smoke else 8
    if args.time is None:
        args.time = 30 if smoke else 1440
    for name in ("nodes", "array_parallelism", "max_requeue"):
        if getattr(args, name) < 1:
            raise LaunchError(f"--{name.replace('_', '-')} must be >= 1")


def main(spec: TableSpec | str, argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """CLI of every launch script: `main(TABLE)`. Returns the exit code."""
    from repro.config import ConfigError
    from repro.data.errors import DataError
    from repro.rundir import RunDirError
    if isinstance(spec, str):
        spec = load_table(spec)
    ap = build_parser(spec, prog or f"launch/{spec.name}.py")
    args = ap.parse_args(argv)
    try:
        _defaults(args)
        # --smoke is meant to run here, with no SLURM; an explicit --cluster slurm still works
        cluster = resolve_cluster("local" if (args.smoke and args.cluster == "auto") else args.cluster)
        if args.nodes > 1 and cluster != "slurm":
            raise LaunchError(f"--nodes {args.nodes} needs --cluster slurm ({cluster} runs on this machine)")
        root = Path(args.root)
        if args.dry_run:
            data_dir = Path(args.data).resolve() if args.data else None
            if data_dir is None and not args.smoke:
                data_dir = Path("data", spec.dataset).resolve()
            p = plan(spec, root, smoke=args.smoke, data_dir=data_dir, only=args.only,
                     retry_failed=args.retry_failed)
            print_plan(p)
            try:
                check_data_for(p)
            except DataError as e:  # a plan is still useful before the data is converted
                print(f"note: the data is not ready: {e}")
            return 0
        check_root(root)
        if args.smoke:
            data_dir, raw_dir = prepare_smoke_data(spec, Path(args.data or root / "data").resolve())
        else:
            data_dir, raw_dir = Path(args.data or Path("data", spec.dataset)).resolve(), None
        p = plan(spec, root, smoke=args.smoke, data_dir=data_dir, raw_dir=raw_dir,
                 only=args.only, retry_failed=args.retry_failed, record=True)
        check_folders(p)
        check_data_for(p)
    except (LaunchError, DataError, ConfigError, RunDirError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_plan(p, file=sys.stderr)
    todo = sum(pl.submit for pl in p.runs)
    if cluster == "slurm" and todo:
        jobs = submit_slurm(args, p)
        if not args.wait:
            if not args.no_table:
                ex = make_executor(args, spec, root, "slurm", name=f"{spec.name}-table", small=True,
                                   dependency="afterany:" + ":".join(sorted({j.job_id for j in jobs})))
                tj = ex.submit(TableJob(spec.name, args.root, args.out, args.smoke))
                print(f"[launch] job {tj.job_id} builds the table into {args.out}/ when every run has ended", file=sys.stderr)
            script = f"launch/{spec.name}.py"
            print(f"[launch] monitor: squeue -u $USER; python {script} --dry-run{' --smoke' if args.smoke else ''} "
                  f"--root {args.root}; logs: {table_dir(root, spec) / JOBS_DIR}/", file=sys.stderr)
            return 0
        wait_slurm(p)
    elif todo:
        run_locally(args, p, cluster)
    else:
        print("[launch] nothing to submit", file=sys.stderr)
    from repro.tables import build
    final = plan(spec, root, smoke=args.smoke, data_dir=data_dir, raw_dir=raw_dir, only=args.only, record=True)
    if not args.no_table:
        paths = build(spec, args.root, args.out, smoke=args.smoke)
        print(f"[launch] table written: {', '.join(str(x) for x in paths)}", file=sys.stderr)
    bad = [pl for pl in final.runs if pl.state in ("failed", "blocked")]
    for pl in bad:
        print(f"[launch] {pl.run.key}: {pl.state} ({pl.detail}); resubmit with --retry-failed", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        print("usage: python -m repro.launch TABLE [options]   (TABLE: a launch/<TABLE>.py; "
              "`python -m repro.launch TABLE --help` for the options)", file=sys.stderr)
        raise SystemExit(2)
    try:
        _spec = load_table(sys.argv[1])
    except LookupError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(main(_spec, sys.argv[2:], prog=f"python -m repro.launch {sys.argv[1]}"))
