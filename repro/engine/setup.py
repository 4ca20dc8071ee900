"""What happens around the loop before it starts: input checks that need no process group and
touch nothing (``preflight``), the run folder's lock, inspection and preparation (rank 0, outcome
shared: ``prepare_folder``), and process-wide switches."""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import torch

from repro import dist, rundir
from repro.config import Config, ConfigError
from repro.io import clean_tmp
from repro.lock import FolderLock, LockHeld
from repro.rundir import FolderInUse, RunDirError

from . import checkpoint, compiling
from .init import StartingPoint

log = logging.getLogger(__name__)

def preflight(cfg: Config, run_dir: Path, denv: dist.DistEnv) -> StartingPoint:
    """Every input error that can be found without touching the run folder (and without a process
    group): the data set and its identity, the head size, the batch split and that one batch fits
    in the training set, the starting weights, the folder path. Raises ConfigError / DataError / RunDirError (one line). Returns the starting
    point, checked (loaded) here unless the run resumes from its checkpoint."""
    from repro.data import check_batch_fits, check_data, data_classes, per_process_batch
    compiling.check(cfg)
    check_data(cfg.data)
    per_process_batch(cfg.data.batch_size, denv.world_size)
    check_batch_fits(cfg.data)
    classes = data_classes(cfg.data)
    if cfg.model.num_classes and cfg.model.num_classes < classes:
        raise ConfigError(f"model.num_classes={cfg.model.num_classes} is fewer than the {classes} classes of "
                          f"{cfg.data.name}; leave it 0 to take the data's count")
    rundir.check_path(run_dir)
    start = StartingPoint(cfg.prune.init_from, run_dir, cfg.model.arch, cfg.model.num_classes or classes)
    if not (run_dir / rundir.CHECKPOINT).exists():  # a resumed run starts from its checkpoint instead
        start.check()
    return start


def inspect_folder(cfg: Config, run_dir: Path, world_size: int) -> tuple[dict | None, dict | None]:
    """Read every file the run folder holds and refuse what is not this run's or is damaged,
    before anything is written. Returns (the checkpoint, the result if the run is done), None
    for what is not there."""
    rundir.check_config(run_dir, cfg)
    done = rundir.done_result(run_dir, cfg)  # a malformed or foreign result.json is refused
    rundir.read_env(run_dir)
    ckpt = rundir.load_checkpoint(run_dir)
    if ckpt is not None:
        checkpoint.validate(ckpt, cfg, run_dir, world_size)
    rundir.read_metrics(run_dir, covered=ckpt["epoch"] if ckpt is not None else 0)  # rows it covers must be whole
    return ckpt, done


def _lock_and_prepare(cfg: Config, run_dir: Path, world_size: int) -> tuple[FolderLock, str, dict]:
    rundir.make_folder(run_dir)
    try:
        held = FolderLock(run_dir / rundir.LOCK, f"python -m repro.train, {world_size} process(es)").acquire()
    except LockHeld as e:
        raise FolderInUse(f"run folder {run_dir} is in use by {e}; one process trains a folder at a time - "
                          "wait for it to end or stop it") from None
    except OSError as e:
        raise RunDirError(f"run folder {run_dir} is not writable ({e.strerror or e}); give a folder you "
                          "can write to") from None
    try:
        # From here on this process is the folder's only writer: nothing below races another start.
        ckpt, done = inspect_folder(cfg, run_dir, world_size)
        rundir.write_config(run_dir, cfg)
        prev = None if done is not None else rundir.read_result(run_dir)
        if prev is not None:
            # A failed attempt (or a done one whose model.pt is gone) is retried from its last good
            # checkpoint (the launcher decides whether to start it again); its result.json must go
            # so "done" stays unambiguous.
            (run_dir / rundir.RESULT).unlink()
        removed = clean_tmp(run_dir)  # only a dead writer's leftovers: a live one would hold the lock
    except BaseException:
        held.release()
        raise
    state = "done" if done is not None else "resume" if ckpt is not None else "new"
    return held, state, {"prev": prev, "removed": removed, "result": done, "ckpt": ckpt}


def prepare_folder(cfg: Config, run_dir: Path, denv: dist.DistEnv) -> tuple[str, dict | None, FolderLock | None]:
    """Rank 0 takes the folder's lock (for the whole run), checks and prepares the folder; every
    rank learns the outcome (or the same one-line error). Returns (state, info, lock)."""
    out: tuple = ("ok", None)
    held = None
    if denv.is_main:
        try:
            held, state, info = _lock_and_prepare(cfg, run_dir, denv.world_size)
            out = (state, {k: v for k, v in info.items() if k != "ckpt"})
            ckpt = info["ckpt"]
        except (RunDirError, ConfigError) as e:  # (FolderInUse is a RunDirError)
            out = ("error", {"message": str(e), "type": type(e).__name__})
        except OSError as e:  # e.g. the disk is full: name the file, keep what is there
            out = ("error", {"message": f"{e.filename or run_dir}: {e.strerror or e}", "type": "RunDirError"})
    out = dist.broadcast_object(out)
    if out[0] == "error":
        cls = {"RunDirError": RunDirError, "FolderInUse": FolderInUse}.get(out[1]["type"], ConfigError)
        raise cls(out[1]["message"])
    if denv.is_main:
        out[1]["ckpt"] = ckpt
    return out[0], out[1], held


@contextlib.contextmanager
def process_switches(cfg: Config):
    """Deterministic kernels and cudnn autotuning for this run; restored afterwards, as run() may
    be called again in the same process."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
             torch.backends.cudnn.deterministic)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = not cfg.deterministic
    torch.backends.cudnn.deterministic = cfg.deterministic
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=True)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[1], saved[2]
