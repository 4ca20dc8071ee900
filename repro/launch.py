"""The launch CLI shared by every launch/*.py script: plan a table's runs, submit what is needed with
submitit (SLURM, or this machine), then build the table.

The launcher knows cluster parameters only; each run's config comes from the table's declaration
(``repro.papers``), and a run happens in exactly one way: ``repro.train.run(cfg, run_dir)`` inside
a submitit job (``repro.runs.submit.TrainJob``).

* Run folder = ROOT/<table>/<run_name(cfg)>, never named after a job id, so a requeued or
  re-launched run finds its checkpoint. Before submitting, the launcher asks SLURM (squeue, then
  sacct) whether a recorded job is still pending or running and never queues that run twice.
* On SLURM the launcher returns after submitting (unless --wait) and queues one small CPU job that
  builds the table when every run has ended (afterany). Locally it waits and builds it.

    python launch/table2.py --smoke             # miniature table, local executor, no SLURM
    python launch/table2.py --dry-run           # what would happen, with a GPU-hours estimate
    python -m repro.launch table2 --help        # same CLI for any table by name
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Sequence

from repro.lock import FolderLock, LockHeld, acquire_waiting, holder
from repro.papers import PROTOCOL_TABLES, load_table
from repro.papers.spec import TableSpec
from repro.runs import checks
from repro.runs.errors import LaunchError
from repro.runs.jobs import JOBS_DIR
from repro.runs.plan import Plan, plan, table_dir
from repro.runs.submit import Cluster

CLUSTERS = ("auto", "slurm", "local", "debug")
LAUNCH_LOCK = "launch.lock"  # ROOT/<table>/launch.lock: one launcher per table root (repro/lock.py)


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
              "see repro/runs/cost.py)", file=file)


# ---------------------------------------------------------------------------- command line
def _add_launch_flags(ap: argparse.ArgumentParser, spec: TableSpec | None) -> None:
    """What to launch and how: everything but the cluster resources."""
    ap.add_argument("--cluster", choices=CLUSTERS, default="auto",
                    help="auto = slurm when `sbatch` is on PATH, else local (with --smoke: local); "
                         "debug = in this process")
    ap.add_argument("--root", default=None,
                    help="folder holding the run folders, ROOT/<table>/<run name> (default runs/, "
                         "with --smoke runs/smoke/); on a cluster, a shared file system")
    ap.add_argument("--out", default=None,
                    help="where the table files go (default tables/, with --smoke ROOT/tables/)")
    ap.add_argument("--data", default=None, help="converted data set, the folder with train.beton/val.beton "
                    "(default data/<dataset>); with --smoke, where the generated data is kept (default ROOT/data)")
    ap.add_argument("--smoke", action="store_true",
                    help="the same table in miniature on generated data in the real layout "
                         "(real writer, loader, trainer, launcher); not comparable to the paper")
    ap.add_argument("--all-rows", action="store_true", help="the miniature of every row, also those --smoke "
                    "leaves out (its table's header says why); implies --smoke; default --root runs/smoke-all")
    if spec is not None and spec.name in PROTOCOL_TABLES:
        ap.add_argument("--protocol", choices=list(PROTOCOL_TABLES[spec.name]), default="paper",
                        help="which protocol to reproduce (each has its own run folders and table): "
                             "paper = baselines from scratch as the paper describes; official-code = "
                             "every run starts from torchvision's released weights, as the authors' "
                             "scripts do; torchvision-eval = those weights evaluated as the baseline, no "
                             "baseline training (see repro/papers/sfp_table2.py)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and a GPU-hours estimate; submit nothing")
    ap.add_argument("--only", action="append", default=[], metavar="PATTERN",
                    help="only runs whose key matches this glob (e.g. 'resnet18/*'), plus the baselines "
                         "they start from; repeatable")
    ap.add_argument("--retry-failed", action="store_true", help="resubmit failed runs (resuming from their checkpoint)")
    ap.add_argument("--wait", action="store_true",
                    help="slurm: wait for the runs and build the table here (local/debug always wait)")
    ap.add_argument("--no-table", action="store_true", help="do not build the table after the runs")
    ap.add_argument("--lock-wait", type=float, default=60, metavar="SECONDS",
                    help="how long to wait while another launch of this table (same --root) is planning or "
                         "submitting, or running its local runs (default 60); then say what it is doing and exit 2")
    ap.add_argument("--local-jobs", type=int, default=2,
                    help="local: runs at once on this machine (default 2; each after its baseline)")


def build_parser(spec: TableSpec | None, prog: str) -> argparse.ArgumentParser:
    what = f"{spec.title}: " if spec else ""
    ap = argparse.ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"{what}plan the table's runs, skip those done or queued, submit the rest with "
                    "submitit (one array per dependency wave), then build the table with repro.tables.",
        epilog="States in the plan: done (result.json done), running (a recorded job is pending or "
               "running), to resume (checkpoint.pt, no live job), new, failed (shown with its reason; "
               "resubmitted only with --retry-failed), blocked (its baseline failed).\n"
               "One launch per table root at a time (ROOT/<table>/launch.lock; a second one waits --lock-wait "
               "seconds, then says what the first is doing).\n"
               "Exit codes: 0 ok, 1 a run failed (local/--wait), 2 bad input or another launch of the table "
               "is in progress (nothing submitted).")
    _add_launch_flags(ap, spec)
    g = ap.add_argument_group("cluster resources (per run)")
    g.add_argument("--nodes", type=int, default=1, help="nodes per run (DDP across them; slurm only)")
    gpus = checks.paper_gpus(spec) if spec else None
    g.add_argument("--gpus-per-node", type=int, default=None,
                   help="GPUs per node; one task per GPU (default: " + (f"{gpus}, the paper's layout" if gpus else
                        "the paper's layout where the table's recipe gives one, else 1") + "; 0 with --smoke)")
    g.add_argument("--tasks-per-node", type=int, default=None,
                   help="DDP processes per node (default: --gpus-per-node, at least 1)")
    g.add_argument("--cpus-per-task", type=int, default=None,
                   help=f"default {Cluster.cpus_per_task}: FFCV decoding threads + the training thread "
                        "(1 with --smoke)")
    g.add_argument("--mem-gb", type=float, default=None,
                   help="memory per node in GB; 0 = the whole node (default: the .beton files FFCV keeps in "
                        "the page cache + 8 GB per task, printed with the plan)")
    g.add_argument("--partition", default=None, help="SLURM partition (default: the cluster's default)")
    g.add_argument("--cpu-partition", default=None,
                   help="partition for the table-building job, which needs no GPU (default: --partition)")
    g.add_argument("--allow-other-layout", action="store_true",
                   help="submit even when the per-GPU batch (BatchNorm's batch) is not the paper's")
    g.add_argument("--account", default=None, help="SLURM account")
    g.add_argument("--time", type=int, default=None,
                   help="time limit per job in minutes (default 1440, with --smoke 30); a run that "
                        "hits it is requeued and resumes")
    g.add_argument("--slurm-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch option for the runs' jobs (not the CPU job that builds the "
                        "table), e.g. --slurm-arg qos=high --slurm-arg constraint=a100")
    g.add_argument("--stage-data", type=_stage_dir, default="", metavar="DIR",
                   help="node-local folder (e.g. /local/scratch/$USER; $VARS expand on the node): each node "
                        "copies the .beton files there once, verified, and later jobs reuse them, instead of "
                        "reading shared storage by page faults (data.stage_dir; default: off)")
    g.add_argument("--array-parallelism", type=int, default=64, help="most array tasks running at once")
    g.add_argument("--max-requeue", type=int, default=20, help="most time-out requeues per run")
    g.add_argument("--signal-delay", type=int, default=120,
                   help="seconds before the time limit at which the job is told to requeue")
    return ap


def _stage_dir(value: str) -> str:
    """--stage-data: checked as the config key data.stage_dir is (argparse says what is wrong, exit 2)."""
    from repro.config import Config, ConfigError
    try:
        return Config.from_overrides({"data.stage_dir": value}).data.stage_dir
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _staged(p: Plan, args, file) -> Plan:
    """Every run reads its data from a node-local copy under --stage-data (repro/data/stage.py)."""
    if args.stage_data:
        for pl in p.runs:
            pl.cfg = pl.cfg.replace({"data.stage_dir": args.stage_data})
        print(f"data: staged on each node to {args.stage_data} (--stage-data; data.stage_dir)", file=file)
    return p


def _fill_folders(args, spec: TableSpec) -> TableSpec:
    """Fill in --root and --out (defaults: by --smoke, --all-rows); the table to launch (--all-rows: every row)."""
    args.root = args.root or ("runs/smoke-all" if args.all_rows else "runs/smoke" if args.smoke else "runs")
    args.out = args.out or (str(Path(args.root) / "tables") if args.smoke else "tables")
    return spec.every_row() if args.all_rows else spec


def _cluster_args(args, spec: TableSpec) -> Cluster:
    """The cluster arguments, checked, with the defaults that depend on --smoke or the table."""
    smoke = args.smoke
    for name in ("nodes", "array_parallelism", "max_requeue"):
        if getattr(args, name) < 1:
            raise LaunchError(f"--{name.replace('_', '-')} must be >= 1")
    if (args.mem_gb is not None and args.mem_gb < 0) or (args.gpus_per_node or 0) < 0:
        raise LaunchError("--mem-gb and --gpus-per-node must be >= 0")
    gpus = (0 if smoke else checks.paper_gpus(spec) or 1) if args.gpus_per_node is None else args.gpus_per_node
    return Cluster(nodes=args.nodes, gpus_per_node=gpus, tasks_per_node=args.tasks_per_node,
                   cpus_per_task=args.cpus_per_task or (1 if smoke else Cluster.cpus_per_task), mem_gb=args.mem_gb,
                   partition=args.partition, cpu_partition=args.cpu_partition, account=args.account,
                   time_min=args.time or (30 if smoke else 1440),
                   slurm_args=tuple(args.slurm_arg), array_parallelism=args.array_parallelism,
                   max_requeue=args.max_requeue, signal_delay_s=args.signal_delay)


def _layout(spec: TableSpec, args, c: Cluster) -> list[str]:
    """Lines stating each run's per-process batch. Refuses (LaunchError) an indivisible global
    batch, and - unless --allow-other-layout - a per-GPU batch that is not the paper's; a dry run
    only warns about the latter."""
    from repro.runs.submit import resources_line
    lines, departs = checks.check_layout(spec, c.processes, smoke=args.smoke)
    lines.append(resources_line(c))
    if departs and not (args.dry_run or args.allow_other_layout):
        raise LaunchError(departs)
    if departs:
        lines.append("WARNING: " + departs + ("" if args.allow_other_layout else "; a launch is refused without it"))
    return lines


def _memory(p: Plan, c: Cluster, file) -> Cluster:
    """The memory each node requests on SLURM: --mem-gb, else the default (runs.submit)."""
    from repro.runs.submit import PER_TASK_GB, cached_data_bytes, memory_request_gb
    if c.mem_gb is not None:
        print(f"memory per node: {'the whole node' if c.mem_gb == 0 else f'{c.mem_gb:g} GB'} (--mem-gb)", file=file)
        return c
    cached = cached_data_bytes(p)
    tasks = f"{PER_TASK_GB} GB x {c.tasks} task(s) (--mem-gb to change; 0 = the whole node)"
    if cached is None:  # dry run before the data is converted (a launch checks the data first)
        print(f"memory per node: the .beton files FFCV keeps in the page cache, once converted, + {tasks}", file=file)
        return c
    gb = memory_request_gb(cached, c.tasks)
    print(f"memory per node: {gb} GB = {cached / 2**30:.1f} GiB of .beton files kept in the page cache + {tasks}",
          file=file)
    return dataclasses.replace(c, mem_gb=gb)


def _dry_run(spec: TableSpec, args, c: Cluster) -> int:
    from repro.config import ConfigError
    from repro.data.errors import DataError
    data_dir = Path(args.data).resolve() if args.data else None
    if data_dir is None and not args.smoke:
        data_dir = Path("data", spec.dataset).resolve()
    layout = _layout(spec, args, c)
    p = plan(spec, Path(args.root), smoke=args.smoke, data_dir=data_dir, only=args.only,
             retry_failed=args.retry_failed)
    print_plan(p)
    print("\n".join(layout))
    _staged(p, args, sys.stdout)
    _memory(p, c, sys.stdout)
    who = holder(table_dir(Path(args.root), spec) / LAUNCH_LOCK)
    if who:
        print(f"note: a launch of {spec.name} is in progress: {who}")
    for check, what in ((checks.check_data_for, "the data is not ready"),
                        (checks.check_starting_points, "a starting point is missing")):
        try:
            check(p)
        except (DataError, ConfigError) as e:  # a plan is still useful before everything is in place
            print(f"note: {what}: {e}")
    return 0


def _prepare(spec: TableSpec, args) -> tuple[Plan, Path, Path | None]:
    """Everything checked before anything is submitted; returns the plan and the data folders."""
    from repro.runs.smoke import prepare_smoke_data
    root = Path(args.root)
    checks.check_root(root)
    if args.only:  # --only is checked before the data step writes anything (the plan reads, never writes)
        plan(spec, root, smoke=args.smoke, only=args.only, query=False)
    if args.smoke:
        data_dir, raw_dir = prepare_smoke_data(spec, Path(args.data or root / "data").resolve())
    else:
        data_dir, raw_dir = Path(args.data or Path("data", spec.dataset)).resolve(), None
    p = plan(spec, root, smoke=args.smoke, data_dir=data_dir, raw_dir=raw_dir,
             only=args.only, retry_failed=args.retry_failed, record=True)
    checks.check_folders(p)
    checks.check_data_for(p)
    checks.check_starting_points(p)
    return _staged(p, args, sys.stderr), data_dir, raw_dir


def _lock_table(spec: TableSpec, args, cluster: str) -> tuple[list[Path], FolderLock]:
    """One launcher per table root: planning and submitting hold ROOT/<table>/launch.lock (on this
    machine's clusters, also while the runs run: they are submitted as slots free up). A second
    launch waits up to --lock-wait seconds, then says what the first is doing. Returns the folders
    this call created, deepest first (removed again if the launch leaves them empty), and the lock."""
    folder = table_dir(Path(args.root), spec)
    created = [f for f in (folder, *folder.parents) if not f.exists()]  # before check_root makes the root
    checks.check_root(Path(args.root))
    folder.mkdir(parents=True, exist_ok=True)
    what = f"launch {spec.name} --cluster {cluster}{' --smoke' if args.smoke else ''}"
    try:
        return created, acquire_waiting(folder / LAUNCH_LOCK, what, args.lock_wait, on_wait=lambda who: print(
            f"[launch] another launch of {spec.name} holds {folder}: {who}; waiting up to "
            f"{args.lock_wait:.0f} s", file=sys.stderr))
    except LockHeld as e:
        raise LaunchError(f"{folder} is being launched by {e}; wait for it to finish (watch it with "
                          f"`python launch/{spec.name}.py --dry-run --root {args.root}`), or raise --lock-wait") from None
    except OSError as e:
        raise LaunchError(f"cannot lock {folder} ({e.strerror or e}); give a --root you can write to") from None


def _submit_to_slurm(spec: TableSpec, args, c: Cluster, p: Plan, held: FolderLock) -> bool:
    """Submit the waves (and the table job); True when the launcher should return now."""
    from repro.runs.submit import make_executor, submit_slurm, wait_slurm
    from repro.tables import TableJob
    submitted = submit_slurm(c, p)
    if args.wait:
        held.release()  # every job is recorded: another launch now sees them as running
        wait_slurm(p)
        return False
    if not args.no_table:
        ex = make_executor(c, p, "slurm", name=f"{spec.name}-table", small=True,
                           dependency="afterany:" + ":".join(sorted({j.job_id for j in submitted})))
        tj = ex.submit(TableJob(spec.name, args.root, args.out, args.smoke, args.all_rows))
        print(f"[launch] job {tj.job_id} builds the table into {args.out}/ when every run has ended", file=sys.stderr)
    print(f"[launch] monitor: squeue -u $USER; python launch/{spec.name}.py --dry-run{' --smoke' * args.smoke}"
          f"{' --all-rows' * args.all_rows} --root {args.root}; logs: {table_dir(Path(args.root), spec) / JOBS_DIR}/",
          file=sys.stderr)
    return True


def _finish(spec: TableSpec, args, data_dir, raw_dir) -> int:
    from repro.tables import build
    final = plan(spec, Path(args.root), smoke=args.smoke, data_dir=data_dir, raw_dir=raw_dir, only=args.only,
                 record=True)
    if not args.no_table:
        paths = build(spec, args.root, args.out, smoke=args.smoke, all_rows=args.all_rows)
        print(f"[launch] table written: {', '.join(str(x) for x in paths)}", file=sys.stderr)
    bad = [pl for pl in final.runs if pl.state in ("failed", "blocked")]
    for pl in bad:
        print(f"[launch] {pl.run.key}: {pl.state} ({pl.detail}); resubmit with --retry-failed", file=sys.stderr)
    return 1 if bad else 0


def main(spec: TableSpec | str, argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """CLI of every launch script: `main("table2")`. Returns the exit code."""
    from repro.config import ConfigError
    from repro.data.errors import DataError
    from repro.rundir import RunDirError
    if isinstance(spec, str):
        spec = load_table(spec)
    args = build_parser(spec, prog or f"launch/{spec.name}.py").parse_args(argv)
    args.smoke |= args.all_rows
    try:
        if getattr(args, "protocol", "paper") != "paper":
            if args.smoke:
                raise LaunchError(f"--smoke runs the paper protocol only: --protocol {args.protocol} starts "
                                  "from torchvision's 1000-class ImageNet weights, which the miniature data "
                                  "cannot use")
            spec = load_table(PROTOCOL_TABLES[spec.name][args.protocol])
        spec = _fill_folders(args, spec)
        c = _cluster_args(args, spec)
        # --smoke is meant to run here, with no SLURM; an explicit --cluster slurm still works
        cluster = checks.resolve_cluster("local" if (args.smoke and args.cluster == "auto") else args.cluster)
        if args.nodes > 1 and cluster != "slurm":
            raise LaunchError(f"--nodes {args.nodes} needs --cluster slurm ({cluster} runs on this machine)")
        if args.dry_run:
            return _dry_run(spec, args, c)
        layout = _layout(spec, args, c)  # before anything is created or submitted
        created, held = _lock_table(spec, args, cluster)
    except (LaunchError, DataError, ConfigError, RunDirError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        return _launch(spec, args, c, cluster, held, layout)
    except KeyboardInterrupt:  # local runs were told to stop (they checkpoint); SLURM jobs stay queued
        print(f"interrupted: launch of {spec.name} stopped; launch again to resume its runs", file=sys.stderr)
        return 130
    finally:
        held.release()
        for f in created:  # deepest first: a launch refused before it did anything leaves no trace
            if any(f.iterdir()):
                break
            f.rmdir()


def _launch(spec: TableSpec, args, c: Cluster, cluster: str, held: FolderLock, layout: list[str]) -> int:
    from repro.config import ConfigError
    from repro.data.errors import DataError
    from repro.rundir import RunDirError
    try:
        p, data_dir, raw_dir = _prepare(spec, args)
        print("\n".join(layout), file=sys.stderr)
        if cluster == "slurm":
            c = _memory(p, c, sys.stderr)
    except (LaunchError, DataError, ConfigError, RunDirError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_plan(p, file=sys.stderr)
    if not any(pl.submit for pl in p.runs):
        print("[launch] nothing to submit", file=sys.stderr)
    elif cluster == "slurm":
        if _submit_to_slurm(spec, args, c, p, held):
            return 0
    else:
        from repro.runs.local import run_locally
        run_locally(c, p, cluster, args.local_jobs)
    return _finish(spec, args, data_dir, raw_dir)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        print("usage: python -m repro.launch TABLE [options]   (TABLE: one of the tables in repro/papers; "
              "`python -m repro.launch TABLE --help` for the options)", file=sys.stderr)
        raise SystemExit(2)
    try:
        _spec = load_table(sys.argv[1])
    except LookupError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(main(_spec, sys.argv[2:], prog=f"python -m repro.launch {sys.argv[1]}"))
