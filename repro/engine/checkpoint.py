"""checkpoint.pt: its format, writing it (rank 0, every rank's RNG gathered) and restoring from it.

Everything a resumed run needs to continue exactly where it stopped: model, optimizer, GradScaler,
the position (epoch + next batch + step), the partial epoch sums of a mid-epoch stop, every rank's
RNG state, the wall time so far, the last finished epoch's metrics (what the final phase reports),
and the method's own state under the method's own keys (SFP: "pruner"; SNF: "spec", "extra").
Mid-epoch checkpoints resume only with the same world size (the loader position is per rank).
"""
from __future__ import annotations

import logging
import random

import numpy as np
import torch

from repro import dist, rundir
from repro.config import config_hash

from .errors import RunEnvironmentError
from .state import Attempt, Position, Training

log = logging.getLogger(__name__)

FORMAT = rundir.CHECKPOINT_FORMAT


def rng_state(device: torch.device) -> dict:
    kind, key, pos, has_gauss, cached = np.random.get_state()
    st = {"python": random.getstate(), "numpy": [kind, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, cached],
          "torch": torch.get_rng_state()}
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def set_rng_state(st: dict, device: torch.device) -> None:
    random.setstate(st["python"])
    kind, key, pos, has_gauss, cached = st["numpy"]
    np.random.set_state((kind, key.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(st["torch"])
    if device.type == "cuda" and "cuda" in st:
        torch.cuda.set_rng_state(st["cuda"], device)


def seed_rank(seed: int, rank: int) -> None:
    s = seed * 1000 + rank
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)


def write(a: Attempt, t: Training, pos: Position, partial=None) -> None:
    """Collective: every rank contributes its RNG state; rank 0 writes the file. ``pos`` is the
    position to resume at; ``partial``: the epoch sums so far when that is mid-epoch."""
    rngs = dist.gather_objects(rng_state(a.device))
    failed: OSError | None = None
    if a.is_main:
        state = {
            "format": FORMAT, "config_hash": config_hash(a.cfg), "arch": a.cfg.model.arch,
            "num_classes": t.num_classes, "epoch": pos.epoch, "batch": pos.batch, "step": pos.step,
            "world_size": a.denv.world_size, "method": t.method.name, "precision": a.precision.name,
            "model": t.model.state_dict(), "optimizer": t.optimizer.state_dict(),
            "scaler": t.scaler.state_dict() if t.scaler is not None else None,
            "partial": partial.state() if partial is not None else None,
            "rng": rngs, "wall_s": pos.wall(), "last": pos.last,
            **t.method.state_dict(),
        }
        try:
            rundir.save_checkpoint(a.run_dir, state)
        except OSError as e:  # a full disk: every rank ends now, not after the collective timeout
            failed = e
    if dist.broadcast_object(failed is not None if a.is_main else None):
        if failed is not None:
            raise failed
        why = f"rank 0 could not write {a.run_dir / rundir.CHECKPOINT}; the last good checkpoint is kept"
        log.error("%s", why)  # this rank's own log says why it ended (only rank 0 prints the one line)
        raise RunEnvironmentError(f"{why} - see rank 0's log")


def validate(ckpt: dict, cfg, run_dir, world_size: int) -> None:
    """The checkpoint is ours, of this run, and resumable with ``world_size`` processes (a
    mid-epoch position is per rank). Read only; RunDirError in one line."""
    where = run_dir / rundir.CHECKPOINT
    if ckpt.get("format") != FORMAT:
        raise rundir.RunDirError(f"{where} is not a {FORMAT} file; move it away to restart the run from scratch")
    if ckpt.get("config_hash") != config_hash(cfg):
        raise rundir.RunDirError(f"{where} belongs to config {ckpt.get('config_hash')}, not {config_hash(cfg)}; "
                                 "use another --run-dir")
    if ckpt.get("batch") and ckpt.get("world_size") != world_size:
        raise rundir.RunDirError(f"{where} was taken mid-epoch with {ckpt.get('world_size')} processes; resume it "
                                 f"with {ckpt.get('world_size')}, not {world_size}")


def precision_record(ckpt: dict, a: Attempt) -> dict:
    """What env.json records of this attempt's precision against the checkpoint's (Precision.name,
    e.g. bfloat16): the same (or a checkpoint that predates the field) resumes; another one - a
    requeue onto another GPU type switches bf16 <-> fp16 - is refused in one line (RunDirError)
    unless ``allow_precision_switch``, and then recorded as a switch."""
    was, now = ckpt.get("precision"), a.precision.name
    if was is None or was == now:
        return {"precision": now}
    if not a.cfg.allow_precision_switch:
        raise rundir.RunDirError(f"{a.run_dir / rundir.CHECKPOINT} was trained in {was}, this attempt would train in "
                                 f"{now} (another GPU type?); resume where it computes {was}, or set "
                                 "allow_precision_switch=true to switch")
    log.warning("precision switched from %s to %s on resume (allow_precision_switch)", was, now)
    return {"precision": now, "precision_switch": {"from": was, "to": now}}


def resume_position(ckpt: dict, pos: Position) -> None:
    """Move ``pos`` to where the (validated) checkpoint resumes."""
    pos.epoch, pos.batch, pos.step, pos.partial = ckpt["epoch"], ckpt["batch"], ckpt["step"], ckpt["partial"]
    pos.last, pos.wall_before = ckpt.get("last") or {}, ckpt["wall_s"]


def restore(ckpt: dict, a: Attempt, t: Training) -> None:
    """Continue where the (validated) checkpoint stopped: weights, optimizer, method state, RNG."""
    t.model.load_state_dict(ckpt["model"])
    t.optimizer.load_state_dict(ckpt["optimizer"])
    if t.scaler is not None and ckpt.get("scaler"):
        t.scaler.load_state_dict(ckpt["scaler"])
    t.method.load_state_dict(ckpt)
    if ckpt["world_size"] == a.denv.world_size:
        set_rng_state(ckpt["rng"][a.denv.rank], a.device)
    else:  # an epoch boundary (validate): nothing random is in flight, reseed per rank
        log.warning("resuming with %d processes (checkpoint: %d); per-rank RNG reseeded",
                    a.denv.world_size, ckpt["world_size"])
        seed_rank(a.cfg.seed + ckpt["epoch"], a.denv.rank)
    log.info("resumed from checkpoint: epoch %d, batch %d, step %d", ckpt["epoch"], ckpt["batch"], ckpt["step"])
