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
from typing import TYPE_CHECKING

import numpy as np
import torch

from repro import dist, rundir
from repro.config import config_hash

if TYPE_CHECKING:
    from .loop import Session

log = logging.getLogger(__name__)

FORMAT = "prunerepro-checkpoint-v1"


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


def write(s: "Session", epoch: int, batch: int, partial) -> None:
    """Collective: every rank contributes its RNG state; rank 0 writes the file."""
    rngs = dist.gather_objects(rng_state(s.device))
    if s.is_main:
        state = {
            "format": FORMAT, "config_hash": config_hash(s.cfg), "arch": s.cfg.model.arch,
            "num_classes": s.num_classes, "epoch": epoch, "batch": batch, "step": s.step,
            "world_size": s.denv.world_size, "method": s.method.name,
            "model": s.model.state_dict(), "optimizer": s.optimizer.state_dict(),
            "scaler": s.scaler.state_dict() if s.scaler is not None else None,
            "partial": partial.state() if partial is not None else None,
            "rng": rngs, "wall_s": s.wall(), "last": s.last,
            **s.method.state_dict(),
        }
        rundir.save_checkpoint(s.run_dir, state)
    dist.barrier()


def check(ckpt: dict, s: "Session") -> None:
    """Refuse a checkpoint of another format or another run (before anything is built from it)."""
    validate(ckpt, s.cfg, s.run_dir, s.denv.world_size)


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


def restore(ckpt: dict, s: "Session") -> None:
    """Continue where the checkpoint stopped: weights, optimizer, position, RNG, method state."""
    s.model.load_state_dict(ckpt["model"])
    s.optimizer.load_state_dict(ckpt["optimizer"])
    if s.scaler is not None and ckpt.get("scaler"):
        s.scaler.load_state_dict(ckpt["scaler"])
    s.method.load_state_dict(ckpt)
    s.epoch, s.batch, s.step = ckpt["epoch"], ckpt["batch"], ckpt["step"]
    s.wall_before = ckpt["wall_s"]
    s.last = ckpt.get("last") or {}
    same_world = ckpt["world_size"] == s.denv.world_size
    if s.batch and not same_world:
        raise rundir.RunDirError(f"the checkpoint was taken mid-epoch with {ckpt['world_size']} processes; "
                                 f"resume it with {ckpt['world_size']}, not {s.denv.world_size}")
    s.partial = ckpt["partial"]
    if same_world:
        set_rng_state(ckpt["rng"][s.denv.rank], s.device)
    else:  # epoch boundary: nothing random is in flight, reseed per rank
        log.warning("resuming with %d processes (checkpoint: %d); per-rank RNG reseeded",
                    s.denv.world_size, ckpt["world_size"])
        seed_rank(s.cfg.seed + s.epoch, s.denv.rank)
    log.info("resumed from checkpoint: epoch %d, batch %d, step %d", s.epoch, s.batch, s.step)
