"""The generic training loop: build, one epoch, evaluate, the whole run. No pruning method is
named here: what a method does happens in its hooks (``repro.engine.methods``).

Read ``run_epoch`` for what happens in one epoch, top to bottom, and ``execute`` for the whole
run. The run's state lives in ``repro.engine.state`` (Attempt, Position, Training); each function
takes the parts it needs. Rank 0 writes every file of the run folder; every rank runs every
collective.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import time

import torch
import torch.nn.functional as F
from torch import nn

from repro import dist, rundir
from repro.config import Config, run_name
from repro.metrics import EpochSums

from . import checkpoint, compiling, finish
from .agree import stop_check, stop_here
from .init import StartingPoint
from .logs import Progress
from .methods import Context, for_config
from .precision import exact_float32, full
from .state import Attempt, Position, Training

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(a: Attempt, loaders, model: nn.Module, *, fp32: bool = False) -> dict[str, float]:
    """Collective: every rank evaluates rank 0's (the saved) model on its share of the val set.
    In the training precision, or with ``fp32`` in true float32 (no autocast, no TF32)."""
    dist.broadcast_buffers_(model)
    model.eval()
    sums = EpochSums(a.device)
    limit = a.cfg.schedule.val_batches
    dtype = next(model.parameters()).dtype  # the training model's (dtype=float64) or float32
    for i, (x, y) in enumerate(loaders.val.iterate()):
        if limit and i >= limit:
            break
        with a.precision.autocast(enabled=not fp32), exact_float32() if fp32 else contextlib.nullcontext():
            out = model(a.precision.prep(x).to(dtype))
        out = full(out)
        sums.add(F.cross_entropy(out, y), out, y)
    r = sums.reduce()
    return {"val_loss": r["loss"], "val_top1": r["top1"], "val_top5": r["top5"], "val_n": r["n"]}


# ----------------------------------------------------------------------------- build
def begin(a: Attempt, pos: Position, ckpt: dict | None) -> dict | None:
    """Every rank gets the checkpoint (rank 0: ``ckpt``, the one its inspection of the folder read
    and checked; the others load and check it), rank 0 records this attempt and trims metrics the
    checkpoint does not cover, and ``pos`` moves to where the checkpoint resumes. Returns the
    checkpoint, or None for a fresh run."""
    ckpt = ckpt if a.is_main else None
    if dist.broadcast_object(ckpt is not None) and not a.is_main:
        ckpt = rundir.load_checkpoint(a.run_dir)
        checkpoint.validate(ckpt, a.cfg, a.run_dir, a.denv.world_size)
    # Every rank holds the checkpoint now and refuses alike, before anything is recorded.
    precision = checkpoint.precision_record(ckpt, a) if ckpt is not None else {"precision": a.precision.name}
    hosts = dist.gather_objects(dist.hostname())
    if a.is_main:
        resumed = None if ckpt is None else {k: ckpt[k] for k in ("epoch", "batch", "step")}
        rundir.record_attempt(a.run_dir, hosts=hosts, world_size=a.denv.world_size, source=a.denv.source,
                              device=str(a.device), resumed_from=resumed, compile=a.cfg.compile, **precision)
        if ckpt is not None:
            rundir.trim_metrics(a.run_dir, ckpt["epoch"])
        elif (a.run_dir / rundir.METRICS).exists():
            rundir.trim_metrics(a.run_dir, 0)
    if ckpt is not None:
        checkpoint.resume_position(ckpt, pos)
    return ckpt


def method_context(a: Attempt, loaders, num_classes: int, start: StartingPoint) -> Context:
    return Context(a.cfg, a.run_dir, a.device, a.is_main, num_classes, loaders,
                   lambda m, **kw: evaluate(a, loaders, m, **kw), a.precision.prep,
                   lambda m: a.precision.on_device(m, a.device), start)


def build(a: Attempt, ckpt: dict | None, start: StartingPoint) -> tuple[Training, Context]:
    """Loaders, the method's model on its device, optimizer; restored from ``ckpt`` if given;
    DDP-wrapped when distributed. Returns what training acts on, and the method's view of the run."""
    cfg = a.cfg
    from repro.data import build_loaders
    loaders = build_loaders(cfg.data, rank=a.denv.rank, world_size=a.denv.world_size, device=a.device,
                            seed=cfg.seed)
    num_classes = cfg.model.num_classes or loaders.num_classes
    ctx = method_context(a, loaders, num_classes, start)
    method = for_config(cfg)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = a.precision.on_device(method.initial_model(ctx, ckpt), a.device).to(a.precision.dtype)
    if cfg.sync_bn and a.denv.distributed:
        dist.convert_sync_bn(model, a.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr_at(0), momentum=cfg.optim.momentum,
                                nesterov=cfg.optim.nesterov, weight_decay=cfg.optim.weight_decay)
    checkpoint.seed_rank(cfg.seed, a.denv.rank)
    method.attach(model, fresh=ckpt is None)
    t = Training(method, loaders, num_classes, model, model, optimizer, a.precision.scaler)
    if ckpt is not None:
        checkpoint.restore(ckpt, a, t)
    if a.denv.distributed:
        ids = [a.device.index] if a.device.type == "cuda" else None
        t.ddp = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    t.ddp = compiling.wrap(t.ddp, cfg.compile)  # the steps only; evaluation uses t.model
    return t, ctx


def release(t: Training) -> None:
    """Let go of DDP while the process group is still registered; call before leaving the group.

    DDP's reducer holds the group. When a run ends by an exception (a stop, a failure), its
    traceback keeps the run's state - and so the reducer - alive past ``dist.teardown``, so the
    group's last reference went when the exception was freed, from the reducer's destructor,
    which keeps the GIL: ProcessGroupGloo's destructor then joins its worker thread while that
    thread waits for the GIL to free the tensors of the last collective. Measured: rank 1 of a
    preempted 2-rank run hung at exit in 2 of 23 runs under load (pytorch/pytorch#56297). Dropped
    here, the reducer is not the last holder; teardown frees the group from Python, which
    releases the GIL first."""
    t.ddp = None
    gc.collect()  # in case a reference cycle holds the wrapper


# ----------------------------------------------------------------------------- training
def train_step(a: Attempt, t: Training, pos: Position, x: torch.Tensor,
               y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on one batch; returns (loss, logits). Counts the step."""
    with a.precision.autocast():
        out = t.ddp(a.precision.prep(x).to(a.precision.dtype))
        loss = F.cross_entropy(full(out), y)
    t.optimizer.zero_grad(set_to_none=True)
    if t.scaler is not None and t.scaler.is_enabled():
        t.scaler.scale(loss).backward()
        t.scaler.step(t.optimizer)
        t.scaler.update()
    else:
        loss.backward()
        t.optimizer.step()
    pos.step += 1
    return loss, out


def preempt(a: Attempt, t: Training, pos: Position, sums: EpochSums | None = None, *, written: bool = False) -> None:
    """Every rank, after an agreed stop: checkpoint at ``pos`` (unless ``written``; ``sums``: the
    epoch so far), then stop (``agree.stop_here``)."""
    log.warning("%s received: checkpointing at epoch %d batch %d (step %d)", a.stop.name, pos.epoch, pos.batch,
                pos.step)
    if not written:
        checkpoint.write(a, t, pos, sums)
    stop_here(a, f": checkpoint written at epoch {pos.epoch} batch {pos.batch}; resume by running again")


class DataWait:
    """The wall time this rank spent waiting for the loader's next batch (``over`` wraps the batch
    iterator): with the epoch's time, it tells an input-bound run from a compute-bound one. On CUDA
    the steps run ahead asynchronously, so the wait shows where the GPU would starve (as in
    torchvision's reference script, which logs the same)."""

    def __init__(self):
        self.s = 0.0

    def over(self, batches):
        it = iter(batches)
        while True:
            t = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            self.s += time.perf_counter() - t
            yield batch


def epoch_batches(cfg: Config, loader) -> int:
    """Training batches per epoch and rank (``schedule.train_batches`` caps them; 0 = all)."""
    return min(len(loader), cfg.schedule.train_batches or len(loader))


def record_epoch(a: Attempt, row: dict) -> None:
    """An epoch's metrics: metrics.jsonl and W&B (rank 0), one log line (every rank). The row is
    stamped with the time it is recorded (``recorded_at``, Unix seconds): from one row to the next,
    less the next one's ``epoch_s``, is what an epoch costs outside its training loop (checkpoint,
    the method's hook, evaluation; python -m repro.bench.gpu reports it)."""
    row["recorded_at"] = time.time()
    if a.is_main:
        rundir.append_metrics(a.run_dir, row)
        a.wandb.log(row)
    log.info("epoch %d/%d lr %g train loss %.4f top1 %.2f | val loss %.4f top1 %.2f top5 %.2f | %.1fs, "
             "%.0f%% waiting for data", row["epoch"] + 1, a.cfg.train_epochs, row["lr"], row["train_loss"],
             row["train_top1"], row["val_loss"], row["val_top1"], row["val_top5"], row["epoch_s"],
             100 * row["data_wait_share"])


def run_epoch(a: Attempt, t: Training, pos: Position) -> None:
    """The epoch at ``pos``, top to bottom: set its lr; train from ``pos``'s batch on (every
    ``check_every`` steps the ranks agree on divergence and stop signals: a stop checkpoints here
    and ends the run); the method's epoch-end hook; evaluate; record the metrics; checkpoint at
    the next epoch's start; stop there if any rank was signalled meanwhile."""
    cfg, epoch = a.cfg, pos.epoch
    lr = cfg.lr_at(epoch)
    for g in t.optimizer.param_groups:
        g["lr"] = lr
    loader = t.loaders.train
    loader.set_epoch(epoch)
    total, start, sums = epoch_batches(cfg, loader), pos.batch, EpochSums(a.device)
    if start and pos.partial is not None:
        sums.load(pos.partial)  # the sums of the batches before a mid-epoch checkpoint
    pos.partial = None
    t.ddp.train()
    progress = Progress(total, start, f"epoch {epoch}", a.is_main, cfg.log.every)
    t0, seen, wait = time.time(), 0, DataWait()
    try:
        for i, (x, y) in enumerate(wait.over(loader.iterate(start_batch=start)), start=start):
            if i >= total:
                break
            loss, out = train_step(a, t, pos, x, y)
            sums.add(loss, full(out.detach()), y)
            seen += y.shape[0]
            progress.update(loss.item() if a.device.type == "cpu" else None)
            if (i + 1) % a.check_every == 0:  # the same steps on every rank (agree.agreed_flags)
                if stop_check(a, sums.t, t.num_classes, f"at epoch {epoch} batch {i}", lr):
                    pos.batch = i + 1
                    preempt(a, t, pos, sums)
    finally:
        progress.close()
    # NaN check of the epoch's last steps. A stop agreed here waits for the agreement below, after
    # the epoch's evaluation and checkpoint, so that a finished epoch is never trained again.
    stop_check(a, sums.t, t.num_classes, f"in epoch {epoch}", lr)
    tr, dt = sums.reduce(), time.time() - t0
    t.method.after_epoch()
    va = evaluate(a, t.loaders, t.model)
    pos.last = {"step": pos.step, "epoch": epoch, "lr": lr, "train_loss": tr["loss"], "train_top1": tr["top1"],
                "val_loss": va["val_loss"], "val_top1": va["val_top1"], "val_top5": va["val_top5"], "epoch_s": dt,
                "imgs_per_s": seen * a.denv.world_size / dt if dt > 0 else float("nan"),
                "data_wait_s": wait.s, "data_wait_share": wait.s / dt if dt > 0 else float("nan")}
    record_epoch(a, pos.last)
    pos.epoch, pos.batch = epoch + 1, 0
    checkpoint.write(a, t, pos)
    # The agreed flag decides, not this rank's own: a signal that reached one rank during the
    # evaluation or the checkpoint must stop every rank here, or the others train on alone.
    if stop_check(a, None, t.num_classes, f"after epoch {epoch}", lr):
        preempt(a, t, pos, written=True)


# ----------------------------------------------------------------------------- the whole run
def execute(a: Attempt, pos: Position, ckpt: dict | None, start: StartingPoint) -> dict:
    """The whole run from whatever the folder holds (``ckpt``: the checkpoint rank 0's inspection
    of the folder read); returns result.json's content. Leaves ``pos`` where the run stands."""
    from repro.wandb_log import WandbLog
    cfg = a.cfg
    a.stop.install()  # (repro.train.run installed it already, at start-up)
    t, ctx = build(a, begin(a, pos, ckpt), start)
    del ckpt  # not kept alive for the whole run
    try:
        a.wandb = WandbLog(a.run_dir, setting=cfg.log.wandb, project=cfg.log.project, group=cfg.log.group,
                           name=run_name(cfg), config=cfg.to_dict(), is_main=a.is_main)
        log.info("run %s: %s, %d epoch(s), %d process(es) on %s, %d train batches/epoch/rank",
                 run_name(cfg), t.method.name, cfg.train_epochs, a.denv.world_size, a.device,
                 epoch_batches(cfg, t.loaders.train))
        if t.method.before_training(ctx, t.model):
            checkpoint.write(a, t, pos)
        finish.halt(a, "before training")
        while pos.epoch < cfg.train_epochs:
            run_epoch(a, t, pos)
        return finish.finish(a, t, pos, ctx)
    finally:
        release(t)  # before run() leaves the process group
