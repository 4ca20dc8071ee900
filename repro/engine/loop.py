"""The generic training loop: build, train an epoch, evaluate, run every epoch. No pruning method
is named here: what a method does happens in its hooks (``repro.engine.methods``).

A ``Session`` holds one run's live objects (model, optimizer, loaders, position); the functions
below act on it. Rank 0 writes every file of the run folder; every rank runs every collective.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from repro import dist, rundir
from repro.config import Config, run_name
from repro.metrics import EpochSums

from . import checkpoint
from .agree import stop_check
from .errors import Preempted, stopped
from .logs import Progress
from .methods import Context, Dense, for_config
from .precision import Precision, exact_float32, full
from .signals import StopFlag

log = logging.getLogger(__name__)


@dataclass
class Session:
    cfg: Config
    run_dir: Path
    denv: dist.DistEnv
    device: torch.device
    method: Dense = None
    precision: Precision = None
    stop: StopFlag = field(default_factory=StopFlag)
    wandb: Any = None
    t_start: float = field(default_factory=time.time)
    wall_before: float = 0.0
    epoch: int = 0          # the epoch to run next
    batch: int = 0          # the batch of that epoch to run next
    step: int = 0           # optimizer steps so far
    partial: Any = None     # epoch sums of a mid-epoch checkpoint
    last: dict = field(default_factory=dict)  # the last finished epoch's metrics
    ckpt: Any = None        # the checkpoint the folder's inspection already read (rank 0), if any
    lr: float = 0.0
    # built by build():
    loaders: Any = None
    num_classes: int = 0
    model: nn.Module = None
    ddp: nn.Module = None
    optimizer: torch.optim.Optimizer = None
    scaler: Any = None
    # Steps between two agreements on the stop/NaN flags (stop_check). A .item() per step is free
    # on CPU; on CUDA it stalls the stream, so look less often. The same steps on every rank.
    check_every: int = 1

    def __post_init__(self):
        self.method = self.method or for_config(self.cfg)
        self.precision = self.precision or Precision(self.cfg, self.device)
        self.scaler = self.precision.scaler
        self.check_every = 1 if self.device.type != "cuda" else 20

    @property
    def is_main(self) -> bool:
        return self.denv.is_main

    def wall(self) -> float:
        return self.wall_before + (time.time() - self.t_start)

    def context(self) -> Context:
        return Context(self.cfg, self.run_dir, self.device, self.is_main, self.num_classes, self.loaders,
                       lambda m, **kw: evaluate(self, m, **kw), self.precision.prep,
                       lambda m: self.precision.on_device(m, self.device))


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(s: Session, model: nn.Module, *, fp32: bool = False) -> dict[str, float]:
    """Collective: every rank evaluates rank 0's (the saved) model on its share of the val set.
    In the training precision, or with ``fp32`` in true float32 (no autocast, no TF32)."""
    dist.broadcast_buffers_(model)
    model.eval()
    sums = EpochSums(s.device)
    limit = s.cfg.schedule.val_batches
    dtype = next(model.parameters()).dtype  # the training model's (dtype=float64) or float32
    for i, (x, y) in enumerate(s.loaders.val.iterate()):
        if limit and i >= limit:
            break
        with s.precision.autocast(enabled=not fp32), exact_float32() if fp32 else contextlib.nullcontext():
            out = model(s.precision.prep(x).to(dtype))
        out = full(out)
        sums.add(F.cross_entropy(out, y), out, y)
    r = sums.reduce()
    return {"val_loss": r["loss"], "val_top1": r["top1"], "val_top5": r["top5"], "val_n": r["n"]}


# ----------------------------------------------------------------------------- build
def build(s: Session, ckpt: dict | None) -> None:
    """Loaders, the method's model on its device, optimizer; then resume from ``ckpt`` if given."""
    cfg = s.cfg
    from repro.data import build_loaders
    s.loaders = build_loaders(cfg.data, rank=s.denv.rank, world_size=s.denv.world_size, device=s.device,
                              seed=cfg.seed)
    s.num_classes = cfg.model.num_classes or s.loaders.num_classes
    if ckpt is not None:
        checkpoint.check(ckpt, s)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = s.method.initial_model(s.context(), ckpt)
    s.model = s.precision.on_device(model, s.device).to(s.precision.dtype)
    if cfg.sync_bn and s.denv.distributed:
        dist.convert_sync_bn(s.model, s.device)
    s.optimizer = torch.optim.SGD(s.model.parameters(), lr=cfg.lr_at(0), momentum=cfg.optim.momentum,
                                  nesterov=cfg.optim.nesterov, weight_decay=cfg.optim.weight_decay)
    checkpoint.seed_rank(cfg.seed, s.denv.rank)
    s.method.attach(s.model, fresh=ckpt is None)
    if ckpt is not None:
        checkpoint.restore(ckpt, s)
    s.ddp = s.model
    if s.denv.distributed:
        ids = [s.device.index] if s.device.type == "cuda" else None
        s.ddp = nn.parallel.DistributedDataParallel(s.model, device_ids=ids)


def release(s: Session) -> None:
    """Let go of DDP while the process group is still registered; call before leaving the group.

    DDP's reducer holds the group. When a run ends by an exception (a stop, a failure), its
    traceback keeps the Session - and so the reducer - alive past ``dist.teardown``, so the
    group's last reference went when the exception was freed, from the reducer's destructor,
    which keeps the GIL: ProcessGroupGloo's destructor then joins its worker thread while that
    thread waits for the GIL to free the tensors of the last collective. Measured: rank 1 of a
    preempted 2-rank run hung at exit in 2 of 23 runs under load (pytorch/pytorch#56297). Dropped
    here, the reducer is not the last holder; teardown frees the group from Python, which
    releases the GIL first."""
    s.ddp = None
    gc.collect()  # in case a reference cycle holds the wrapper


# ----------------------------------------------------------------------------- training
def train_step(s: Session, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on one batch; returns (loss, logits). Counts the step."""
    with s.precision.autocast():
        out = s.ddp(s.precision.prep(x).to(s.precision.dtype))
        loss = F.cross_entropy(full(out), y)
    s.optimizer.zero_grad(set_to_none=True)
    if s.scaler is not None and s.scaler.is_enabled():
        s.scaler.scale(loss).backward()
        s.scaler.step(s.optimizer)
        s.scaler.update()
    else:
        loss.backward()
        s.optimizer.step()
    s.step += 1
    return loss, out


def preempt(s: Session, epoch: int, batch: int, sums: EpochSums | None, *, written: bool = False) -> None:
    """Checkpoint at this step boundary (unless ``written``), hand the signal on, raise Preempted.

    Every rank comes here together (the stop was agreed); a rank that saw no signal itself
    has nothing to hand on."""
    log.warning("%s received: checkpointing at epoch %d batch %d (step %d)", s.stop.name, epoch, batch, s.step)
    if not written:
        checkpoint.write(s, epoch, batch, sums)
    if s.wandb is not None:
        # Never fails: the preemption signal reaches wandb's service process too (SLURM signals
        # every process of the step) and a dead service must not turn a requeue into a failure.
        s.wandb.finish(exit_code=Preempted.exit_code)
    name, signum = s.stop.name, s.stop.signum
    s.stop.restore()
    s.stop.chain()  # e.g. submitit's requeue handler (it exits the process itself)
    raise stopped(signum, f"{name}: checkpoint written at epoch {epoch} batch {batch}; resume by running again")


def train_epoch(s: Session, epoch: int) -> dict[str, float]:
    cfg = s.cfg
    s.lr = cfg.lr_at(epoch)
    for g in s.optimizer.param_groups:
        g["lr"] = s.lr
    loader = s.loaders.train
    loader.set_epoch(epoch)
    total = len(loader) if not cfg.schedule.train_batches else min(len(loader), cfg.schedule.train_batches)
    sums = EpochSums(s.device)
    start = s.batch if epoch == s.epoch else 0
    if start and s.partial is not None:
        sums.load(s.partial)
    s.partial = None
    s.ddp.train()
    progress = Progress(total, start, f"epoch {epoch}", s.is_main, cfg.log.every)
    t0, seen = time.time(), 0
    try:
        for i, (x, y) in enumerate(loader.iterate(start_batch=start), start=start):
            if i >= total:
                break
            loss, out = train_step(s, x, y)
            sums.add(loss, full(out.detach()), y)
            seen += y.shape[0]
            progress.update(loss.item() if s.device.type == "cpu" else None)
            if (i + 1) % s.check_every == 0:  # the same steps on every rank (agree.agreed_flags)
                if stop_check(s, sums.t, f"at epoch {epoch} batch {i}"):
                    preempt(s, epoch, i + 1, sums)
    finally:
        progress.close()
    # NaN check of the epoch's last steps. A stop agreed here waits for run_epoch's agreement, after
    # the epoch's evaluation and checkpoint, so that a finished epoch is never trained again.
    stop_check(s, sums.t, f"in epoch {epoch}")
    r = sums.reduce()
    dt = time.time() - t0
    return {"train_loss": r["loss"], "train_top1": r["top1"], "epoch_s": dt,
            "imgs_per_s": seen * s.denv.world_size / dt if dt > 0 else float("nan")}


# ----------------------------------------------------------------------------- the whole run
def start(s: Session) -> dict | None:
    """Load the checkpoint (rank 0 first), record this attempt, trim metrics the checkpoint does
    not cover. Returns the checkpoint (every rank) or None for a fresh run."""
    ckpt = (s.ckpt if s.ckpt is not None else rundir.load_checkpoint(s.run_dir)) if s.is_main else None
    s.ckpt = None  # not kept alive for the whole run
    has_ckpt = dist.broadcast_object(ckpt is not None)
    if has_ckpt and not s.is_main:
        ckpt = rundir.load_checkpoint(s.run_dir)
    hosts = dist.gather_objects(dist.hostname())
    if s.is_main:
        resumed = None if ckpt is None else {k: ckpt[k] for k in ("epoch", "batch", "step")}
        rundir.record_attempt(s.run_dir, hosts=hosts, world_size=s.denv.world_size, source=s.denv.source,
                              device=str(s.device), resumed_from=resumed)
        if ckpt is not None:
            rundir.trim_metrics(s.run_dir, ckpt["epoch"])
        elif (s.run_dir / rundir.METRICS).exists():
            rundir.trim_metrics(s.run_dir, 0)
    return ckpt


def run_epoch(s: Session, epoch: int) -> None:
    tr = train_epoch(s, epoch)
    s.method.after_epoch()
    va = evaluate(s, s.model)
    s.last = {"step": s.step, "epoch": epoch, "lr": s.lr, "train_loss": tr["train_loss"],
              "train_top1": tr["train_top1"], "val_loss": va["val_loss"], "val_top1": va["val_top1"],
              "val_top5": va["val_top5"], "epoch_s": tr["epoch_s"], "imgs_per_s": tr["imgs_per_s"]}
    if s.is_main:
        rundir.append_metrics(s.run_dir, s.last)
        s.wandb.log(s.last)
    log.info("epoch %d/%d lr %g train loss %.4f top1 %.2f | val loss %.4f top1 %.2f top5 %.2f | %.1fs",
             epoch + 1, s.cfg.train_epochs, s.lr, tr["train_loss"], tr["train_top1"], va["val_loss"],
             va["val_top1"], va["val_top5"], tr["epoch_s"])
    s.epoch, s.batch = epoch + 1, 0
    checkpoint.write(s, epoch + 1, 0, None)
    # The agreed flag decides, not this rank's own: a signal that reached one rank during the
    # evaluation or the checkpoint must stop every rank here, or the others train on alone.
    if stop_check(s, None, f"after epoch {epoch}"):
        preempt(s, epoch + 1, 0, None, written=True)


def execute(s: Session) -> dict:
    """The whole run from whatever the folder holds; returns result.json's content."""
    from repro.wandb_log import WandbLog

    from .finish import finish, halt
    cfg = s.cfg
    s.stop.install()  # (repro.train.run installed it already, at start-up)
    build(s, start(s))
    s.wandb = WandbLog(s.run_dir, setting=cfg.log.wandb, project=cfg.log.project, group=cfg.log.group,
                       name=run_name(cfg), config=cfg.to_dict(), is_main=s.is_main)
    log.info("run %s: %s, %d epoch(s), %d process(es) on %s, %d train batches/epoch/rank",
             run_name(cfg), s.method.name, cfg.train_epochs, s.denv.world_size, s.device,
             min(len(s.loaders.train), cfg.schedule.train_batches or len(s.loaders.train)))
    if s.method.before_training(s.context(), s.model):
        checkpoint.write(s, s.epoch, s.batch, None)
    halt(s, "before training")
    for epoch in range(s.epoch, cfg.train_epochs):
        run_epoch(s, epoch)
    return finish(s)
