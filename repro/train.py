"""The trainer's entry point: one run's config -> one run folder. Same code under torchrun, srun
and submitit.

    python -m repro.train model.arch=resnet20 prune.method=sfp prune.rate=0.3 --run-dir runs/x
    torchrun --nproc_per_node=2 -m repro.train ... --run-dir runs/x
    python -m repro.train --help          # every config key with type, default and help

``run(cfg, run_dir)`` is the only way a run happens. It always continues from what ``run_dir``
holds: a finished run (result.json status done) returns its result at once; a folder with a
checkpoint resumes exactly (model, optimiser, lr schedule position, method state, partial epoch
sums, per-rank RNG, loader position); a folder holding another config is refused. The loop and
the methods are in ``repro.engine``.

Exit codes of the CLI: 0 done, 1 failed (result.json says why, also for damaged data met only while
reading it; or the machine failed it, e.g. a full disk: nothing recorded, the checkpoint kept if
one was written), 2 bad input (config, folder, data, environment; nothing touched) or the folder is in use by another process (its lock names it), 75 stopped by
a signal (checkpoint written, or nothing trained since the last one) - requeue me, 130 Ctrl-C
(the same, then exit).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from repro import dist, rundir
from repro.config import Config, ConfigError, config_hash, help_text, run_name
from repro.data.errors import DataError
from repro.engine import setup
from repro.engine.errors import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, Preempted, RunEnvironmentError,
                                 TrainingFailed, stopped)
from repro.engine.init import StartingPoint
from repro.engine.logs import RunLogging
from repro.engine.loop import execute
from repro.engine.precision import Precision
from repro.engine.signals import StopFlag
from repro.engine.state import Attempt, Position

log = logging.getLogger("repro.train")

__all__ = ["run", "main", "Preempted", "TrainingFailed", "RunEnvironmentError"]


def _record_failure(a: Attempt, pos: Position, e: BaseException) -> None:
    reason = f"{type(e).__name__}: {e}".splitlines()[0]
    log.error("run failed: %s", reason)
    if a.is_main:
        rundir.write_result(a.run_dir, {"status": "failed", "reason": reason, "run_name": run_name(a.cfg),
                                        "config_hash": config_hash(a.cfg), "wall_s": pos.wall()})
    if a.wandb is not None:
        a.wandb.finish(exit_code=EXIT_FAILED)


def _what_is_kept(a: Attempt) -> str:
    """What a run that stopped on a failure of the machine or the data leaves, true to the folder."""
    if (a.run_dir / rundir.CHECKPOINT).exists():
        return "the last good checkpoint is kept - fix this and run again to resume"
    return "no checkpoint was written yet, so there is nothing to resume from - fix this and run again to start over"


def _run_here(cfg: Config, run_dir: Path, denv: dist.DistEnv, device, stop: StopFlag, start: StartingPoint) -> dict:
    """Inside the process group: lock and prepare the folder, then the loop."""
    state, info, held = setup.prepare_folder(cfg, run_dir, denv)
    try:
        if state == "done":
            return info["result"]
        return _train(Attempt(cfg, run_dir, denv, device, Precision(cfg, device), stop), info, start)
    finally:
        if held is not None:
            held.release()


def _train(a: Attempt, info: dict, start: StartingPoint) -> dict:
    logs = RunLogging(a.run_dir, a.denv.rank)
    pos = Position()
    try:
        if info.get("prev"):
            log.warning("previous attempt did not end done (%s); retrying from the last checkpoint",
                        info["prev"].get("reason") or "its model.pt is missing")
        if info.get("removed"):
            log.info("removed partial files of a killed writer: %s", ", ".join(info["removed"]))
        try:
            result = execute(a, pos, info.pop("ckpt", None), start)
        except (Preempted, KeyboardInterrupt, rundir.RunDirError, RunEnvironmentError):  # not a failure of the run
            raise
        except OSError as e:
            # The machine, not the run: a full disk, a vanished mount. No "failed" result is written
            # (it could not be, or would hide a resumable run).
            raise RunEnvironmentError(f"{e.filename or a.run_dir}: {e.strerror or e}; {_what_is_kept(a)}") from None
        except Exception as e:
            _record_failure(a, pos, e)
            if isinstance(e, DataError):
                # Damaged data met while reading (e.g. a corrupt JPEG for the plain loader): the folder is
                # already written, so this is a failed run (exit 1), not bad input (exit 2: nothing touched).
                raise TrainingFailed(f"{e}; {_what_is_kept(a)}") from None
            raise
        if a.wandb is not None:
            a.wandb.finish(exit_code=0)
        return result
    finally:
        logs.close()


def run(cfg: Config, run_dir: str | os.PathLike) -> dict:
    """Train, prune and evaluate one run into ``run_dir``; return its result.json content.

    Raises ConfigError / RunDirError / DataError / DistEnvError for bad input (found before the
    folder is touched wherever possible), TrainingFailed when the run failed (result.json says
    why), RunEnvironmentError when the machine failed it (e.g. a full disk; nothing recorded),
    Preempted (Interrupted for Ctrl-C) after a stop signal: a checkpoint was written at a step
    boundary, or nothing was trained since the last one.
    """
    stop = StopFlag()
    stop.install()  # first: from here on a stop signal never kills the process half-way
    try:
        run_dir = Path(run_dir).resolve()
        denv = dist.detect()
        start = setup.preflight(cfg, run_dir, denv)
        # Finished runs return at once, before any process group or lock.
        res = rundir.done_result(run_dir, cfg) if run_dir.is_dir() else None
        if res is not None:
            rundir.check_config(run_dir, cfg)  # still refuses a folder that holds another config
            return res
        if stop.signum is not None:
            raise stopped(stop.signum, f"{stop.name} during start-up: nothing was written")
        device = dist.pick_device(cfg.device, denv)
        owns_group = denv.distributed and not dist.initialized()
        with setup.process_switches(cfg):
            dist.init(denv, device, cfg.dist_timeout_s)
            try:
                return _run_here(cfg, run_dir, denv, device, stop, start)
            finally:
                if owns_group:
                    dist.teardown()
    finally:
        stop.restore()


# ----------------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m repro.train",
        description="Train (and prune) one run into a run folder; resumes from whatever the folder holds. "
                    "Works as is under torchrun and srun. Exit codes: 0 done, 1 failed (also: damaged data met "
                    "while training, or a full disk; the line names the file), 2 bad input or the folder is in use "
                    "by another process (found before anything is written; nothing created or changed), 75 stopped "
                    "by a signal (checkpoint kept; requeue), 130 Ctrl-C. Each ends with one line on stderr, the last "
                    "thing the process prints (rank 0 only under torchrun/srun); torchrun then adds its own "
                    "report of the failed worker (ChildFailedError) and exits 1: read the line above it.",
        epilog=help_text(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=0.05; "
                   "preset=cifar|imagenet picks a paper recipe (default: by the arch)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--run-dir", help="the run folder")
    where.add_argument("--root", help="parent folder; the run folder is ROOT/<run name> (readable fields + hash)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and run name, then exit")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = Config.from_overrides(args.overrides)
        if args.print_config:
            print(cfg.to_json())
            print(f"# run name: {run_name(cfg)}")
            return 0
        if not (args.run_dir or args.root):
            raise ConfigError("give --run-dir DIR or --root DIR")
        run_dir = Path(args.run_dir) if args.run_dir else Path(args.root) / run_name(cfg)
        result = run(cfg, run_dir)
    except (ConfigError, rundir.RunDirError, DataError, dist.DistEnvError) as e:
        _say(f"error: {e}")
        _outlived_by_rank0()
        return EXIT_USAGE
    except (TrainingFailed, RunEnvironmentError) as e:
        _say(f"failed: {e}")
        return EXIT_FAILED
    except Preempted as e:
        _say(f"{'interrupted' if e.exit_code == EXIT_INTERRUPTED else 'preempted'}: {e}")
        return e.exit_code
    except KeyboardInterrupt:  # before the handlers were installed: nothing was written yet
        _say("interrupted: stopped during start-up; nothing was written")
        return EXIT_INTERRUPTED
    print(f"{run_dir}: val top-1 {result['val_top1']:.2f} top-5 {result['val_top5']:.2f} "
          f"({result['flops_reduction']:.1f}% fewer conv MACs)")
    return 0


def _rank0() -> bool:
    return os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) in ("0", "")


def _say(line: str) -> None:
    """One line on stderr; under torchrun/srun only rank 0 says it (every rank exits the same way)."""
    if _rank0():
        print(line, file=sys.stderr)


RANK0_GRACE_S = 30


def _outlived_by_rank0() -> None:
    """The other ranks of a run refused at start-up wait (up to RANK0_GRACE_S) before exiting: torchrun
    stops every worker as soon as one exits with an error, so a rank that exits first could stop
    rank 0 before it has said why. Rank 0's exit ends the wait (the launcher stops the rest)."""
    if not _rank0():
        import time
        time.sleep(RANK0_GRACE_S)


if __name__ == "__main__":
    sys.exit(main())
