"""The trainer: one run's config -> one run folder. Same code under torchrun, srun and submitit.

    python -m repro.train model.arch=resnet20 prune.method=sfp prune.rate=0.3 --run-dir runs/x
    torchrun --nproc_per_node=2 -m repro.train ... --run-dir runs/x
    python -m repro.train --help          # every config key with type, default and help

``run(cfg, run_dir)`` is the only way a run happens. It always continues from what ``run_dir``
holds: a finished run (result.json status done) returns its result at once; a folder with a
checkpoint resumes exactly (model, optimiser, lr schedule position, SFP masks, partial epoch
sums, per-rank RNG, loader position); a folder holding another config is refused.

Methods (``prune.method``):
  none  plain training (the baselines); the delivered model is the dense one.
  sfp   soft filter pruning: masks applied before epoch 0 and recomputed at every epoch end;
        then hard prune -> compact model -> its evaluation is the run's val_top1/val_top5.
  snf   search the kept filters per layer under a FLOPs target on a trained baseline (rank 0;
        the compact model is shared through the run folder), then fine-tune the compact model
        for prune.finetune_epochs at lr * prune.init_lr_scale.

Exit codes of the CLI (docs/ARCHITECTURE.md): 0 done, 1 failed (result.json says why),
2 bad input (config, folder, data, environment), 75 preempted after a checkpoint - requeue me.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from repro import dist, rundir
from repro.config import Config, ConfigError, config_hash, help_text, run_name
from repro.metrics import EpochSums
from repro.models import DENSE, ChannelSpec, arch_info, build_model

log = logging.getLogger("repro.train")

EXIT_FAILED, EXIT_USAGE, EXIT_REQUEUE = 1, 2, 75
CKPT_FORMAT = "prunerepro-checkpoint-v1"
# Test hook: "STEP:SECONDS" pauses rank 0 after optimizer step STEP (and touches
# logs/paused-at-step-STEP) so a test can kill -9 the run at a known point.
PAUSE_STEP_ENV = "REPRO_TEST_PAUSE_AT_STEP"
STOP_SIGNALS = tuple(s for s in (getattr(signal, "SIGUSR1", None), getattr(signal, "SIGUSR2", None),
                                 signal.SIGTERM) if s is not None)


class TrainingFailed(RuntimeError):
    """The run cannot go on (e.g. the loss became NaN); result.json is marked failed."""


class Preempted(RuntimeError):
    """A stop signal arrived; a checkpoint was written at a step boundary. Requeue the run."""

    exit_code = EXIT_REQUEUE


# ----------------------------------------------------------------------------- signals
class StopFlag:
    """Signal handlers only set a flag; the loop checkpoints at the next step boundary.

    Whatever handler was installed before (submitit's requeue handler for its preemption signal)
    is called after our checkpoint, so the scheduler integration keeps working.
    """

    def __init__(self):
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}
        self.replaced: dict[int, Any] = {}  # what restore() put back, for chain()

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            log.warning("not in the main thread: stop signals are not caught (no checkpoint on preemption)")
            return
        for s in STOP_SIGNALS:
            self.previous[s] = signal.signal(s, self._handler)

    def _handler(self, signum, _frame) -> None:
        if self.signum is None:
            self.signum = signum

    def restore(self) -> None:
        for s, h in self.previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        if self.previous:
            self.replaced = self.previous
        self.previous = {}

    def chain(self) -> None:
        """Hand the signal to the handler that was there before us (after restore())."""
        prev = self.replaced.get(self.signum)
        if callable(prev):
            prev(self.signum, None)


# ----------------------------------------------------------------------------- RNG
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


# ----------------------------------------------------------------------------- logging / progress
class RunLogging:
    """Every rank logs to run_dir/logs/rank{N}.log; rank 0 also prints to stderr."""

    def __init__(self, run_dir: Path, rank: int):
        self.logger = logging.getLogger("repro")
        self.logger.setLevel(logging.INFO)
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        fmt = logging.Formatter(f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        self.handlers = [logging.FileHandler(run_dir / "logs" / f"rank{rank}.log")]
        if rank == 0:
            self.handlers.append(logging.StreamHandler(sys.stderr))
        for h in self.handlers:
            h.setFormatter(fmt)
            self.logger.addHandler(h)
        self.logger.propagate = False

    def close(self) -> None:
        for h in self.handlers:
            self.logger.removeHandler(h)
            h.close()


class Progress:
    """tqdm bar on an interactive stderr (rank 0), plain log lines every ``every`` steps otherwise."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool, every: int):
        self.bar = None
        self.every, self.desc, self.total, self.i = every, desc, total, initial
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True)
        self.enabled = enabled

    def update(self, loss: float | None = None) -> None:
        self.i += 1
        if self.bar is not None:
            self.bar.update(1)
            if loss is not None and self.i % 10 == 0:
                self.bar.set_postfix(loss=f"{loss:.4f}")
        elif self.enabled and self.i % self.every == 0:
            log.info("%s batch %d/%d%s", self.desc, self.i, self.total, "" if loss is None else f" loss {loss:.4f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------- models
def _load_state(path: Path) -> Any:
    return rundir.load_torch_file(path, "prune.init_from", ConfigError)


def load_init(path_str: str, arch: str, num_classes: int) -> nn.Module:
    """The starting model named by prune.init_from, as an ``arch`` model with ``.spec``.

    Accepts: a finished run folder (its model.pt), a compact-model file, one of our checkpoints,
    or a plain state dict with torchvision's keys (optionally under "state_dict"/"model", with
    DDP's "module." prefixes).
    """
    from repro.prune.compact import FORMAT as COMPACT_FORMAT, load_compact
    path = Path(path_str)
    if path.is_dir():
        res = rundir.read_result(path)
        if res is None or res.get("status") != "done":
            raise ConfigError(f"prune.init_from: run folder {path} has not finished (no result.json with "
                              "status done)")
        path = path / rundir.MODEL
        if not path.exists():
            raise ConfigError(f"prune.init_from: {path} is missing; the baseline run delivered no model")
    payload = _load_state(path)
    if isinstance(payload, dict) and payload.get("format") == COMPACT_FORMAT:
        model = load_compact(path)
    elif isinstance(payload, dict) and payload.get("format") == CKPT_FORMAT:
        spec = ChannelSpec.from_json(payload["spec"]) if payload.get("spec") else DENSE
        model = build_model(payload["arch"], num_classes=payload["num_classes"], spec=spec)
        model.load_state_dict(payload["model"])
        model.spec = spec
    else:
        # A plain state dict (e.g. torchvision's); its head size decides the model's.
        what = f"prune.init_from: {path}"
        sd = rundir.dense_state_dict(payload, what, ConfigError)
        fc = sd.get("fc.weight")
        model = build_model(arch, num_classes=fc.shape[0] if fc is not None else num_classes)
        rundir.load_dense_weights(model, sd, what, ConfigError)
        model.spec = DENSE
    if getattr(model, "arch", arch) != arch:
        raise ConfigError(f"prune.init_from: {path} holds a {model.arch}, this run trains a {arch}")
    head = model.fc.out_features
    if head != num_classes:
        raise ConfigError(f"prune.init_from: {path} has a {head}-class head, this run needs {num_classes} "
                          "(set model.num_classes or start from a model trained on this data)")
    return model


# ----------------------------------------------------------------------------- the run
class Trainer:
    def __init__(self, cfg: Config, run_dir: Path, denv: dist.DistEnv, device: torch.device):
        self.cfg, self.run_dir, self.denv, self.device = cfg, run_dir, denv, device
        self.main = denv.is_main
        self.arch = cfg.model.arch
        self.stop = StopFlag()
        self.wandb = None
        self.t_start = time.time()
        self.wall_before = 0.0
        self.extra: dict[str, Any] = {}      # results computed once and carried in the checkpoint
        self.pruner = None
        self.spec: ChannelSpec | None = None
        cuda = device.type == "cuda"
        self.amp_dtype = None
        if cuda and cfg.amp:
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16) if cuda else None
        self.channels_last = cuda and cfg.channels_last
        # A .item() per step is free on CPU; on CUDA it would stall the stream, so look less often.
        self.check_every = 1 if not cuda else 20

    # ---------------------------------------------------------------- helpers
    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.amp_dtype)

    def prep(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def on_device(self, model: nn.Module) -> nn.Module:
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        dist.broadcast_buffers_(model)  # every rank evaluates rank 0's (the saved) model
        model.eval()
        sums = EpochSums(self.device)
        limit = self.cfg.schedule.val_batches
        for i, (x, y) in enumerate(self.loaders.val.iterate()):
            if limit and i >= limit:
                break
            with self.autocast():
                out = model(self.prep(x))
            out = out.float()
            sums.add(F.cross_entropy(out, y), out, y)
        r = sums.reduce()
        return {"val_loss": r["loss"], "val_top1": r["top1"], "val_top5": r["top5"], "val_n": r["n"]}

    def first_val_batch(self) -> torch.Tensor:
        for x, _y in self.loaders.val.iterate():
            return self.prep(x)
        raise TrainingFailed("the validation loader yielded no batch")

    # ---------------------------------------------------------------- setup
    def build(self, ckpt: dict | None) -> None:
        cfg = self.cfg
        from repro.data import build_loaders
        self.loaders = build_loaders(cfg.data, rank=self.denv.rank, world_size=self.denv.world_size,
                                     device=self.device, seed=cfg.seed)
        self.num_classes = cfg.model.num_classes or self.loaders.num_classes
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        if cfg.prune.method == "snf":
            model = self.snf_model(ckpt)
        else:
            model = build_model(self.arch, num_classes=self.num_classes)
            model.spec = DENSE
            if ckpt is None and cfg.prune.init_from:
                init = load_init(cfg.prune.init_from, self.arch, self.num_classes)
                if init.spec != DENSE:
                    raise ConfigError(f"prune.init_from: {cfg.prune.init_from} holds a pruned model "
                                      f"({len(init.spec.convs)} convs narrowed); {cfg.prune.method} needs a dense one")
                model.load_state_dict(init.state_dict())
                log.info("initialised from %s", cfg.prune.init_from)
        self.model = self.on_device(model)
        if cfg.sync_bn and self.denv.distributed:
            dist.convert_sync_bn(self.model)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr_at(0), momentum=cfg.optim.momentum,
                                         nesterov=cfg.optim.nesterov, weight_decay=cfg.optim.weight_decay)
        if cfg.prune.method == "sfp":
            from repro.prune.sfp import SoftFilterPruner
            self.pruner = SoftFilterPruner(self.model, self.arch, cfg.prune.rate, cfg.prune.criterion, seed=cfg.seed)
        seed_rank(cfg.seed, self.denv.rank)
        self.epoch, self.batch, self.step = 0, 0, 0
        self.partial = None
        if ckpt is not None:
            self.restore(ckpt)
        elif self.pruner is not None:
            self.pruner.update()  # SFP: first masks from the initial weights, before epoch 0
        self.ddp = self.model
        if self.denv.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

    def snf_model(self, ckpt: dict | None) -> nn.Module:
        """The compact model to fine-tune: from the checkpoint, or searched now on rank 0."""
        cfg = self.cfg
        if ckpt is not None:
            spec = ChannelSpec.from_json(ckpt["spec"])
            model = build_model(self.arch, num_classes=self.num_classes, spec=spec)
            model.spec = spec
            return model  # weights come from restore()
        pruned_file = self.run_dir / "snf_pruned.pt"
        base = self.on_device(load_init(cfg.prune.init_from, self.arch, self.num_classes))
        if base.spec != DENSE:
            raise ConfigError(f"prune.init_from: {cfg.prune.init_from} is already pruned; SNF starts "
                              "from a dense baseline")
        self.extra["baseline_val_top1"] = self.evaluate(base)["val_top1"]  # collective
        log.info("SNF baseline: val top-1 %.2f", self.extra["baseline_val_top1"])
        failure = None
        if self.main:
            try:
                self.snf_search(base, pruned_file)
            except Exception as e:  # tell the other ranks instead of leaving them in the barrier
                failure = e
        err = dist.broadcast_object(None if failure is None else f"{type(failure).__name__}: {failure}")
        if failure is not None:
            raise failure
        if err is not None:
            raise TrainingFailed(f"SNF search failed on rank 0: {err}")
        from repro.prune.compact import load_compact
        model = load_compact(pruned_file)
        self.extra = dist.broadcast_object(self.extra)
        return model.train()

    def snf_search(self, base: nn.Module, pruned_file: Path) -> None:
        """Rank 0: sensitivity search + compact model, written to the run folder."""
        cfg = self.cfg
        from repro.prune.compact import save_compact
        from repro.prune.snf import snf_prune
        batches = []
        self.loaders.train.set_epoch(0)
        for i, (x, y) in enumerate(self.loaders.train.iterate()):
            if i >= cfg.prune.search_batches:
                break
            batches.append((self.prep(x), y))
        log.info("SNF: searching kept filters for a %.2f%% conv-MACs reduction on %d batches%s",
                 cfg.prune.flops_reduction, len(batches), " (uniform baseline)" if cfg.prune.uniform else "")
        compact, _spec, report = snf_prune(base, self.arch, batches, cfg.prune.flops_reduction,
                                           criterion=cfg.prune.criterion, uniform=cfg.prune.uniform,
                                           resolution=cfg.data.resolution, progress=False)
        rundir.atomic_write_json(self.run_dir / "snf_search.json", report)
        save_compact(pruned_file, compact)
        snf = {k: v for k, v in report.items() if k not in ("kept", "spec")}
        self.extra["snf"] = json.loads(json.dumps(snf, default=str))  # plain types only
        log.info("SNF: spec found, %.2f%% reduction", report.get("flops_reduction", float("nan")))

    # ---------------------------------------------------------------- checkpoint
    def checkpoint(self, epoch: int, batch: int, partial: EpochSums | None) -> None:
        """Rank 0 writes everything; every rank contributes its RNG state (collective)."""
        rngs = dist.gather_objects(rng_state(self.device))
        if self.main:
            state = {
                "format": CKPT_FORMAT, "config_hash": config_hash(self.cfg), "arch": self.arch,
                "num_classes": self.num_classes, "epoch": epoch, "batch": batch, "step": self.step,
                "world_size": self.denv.world_size,
                "spec": self.model_spec().to_json() if self.cfg.prune.method == "snf" else None,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "pruner": self.pruner.state_dict() if self.pruner is not None else None,
                "partial": partial.state() if partial is not None else None,
                "rng": rngs, "wall_s": self.wall(), "extra": self.extra,
            }
            rundir.save_checkpoint(self.run_dir, state)
        dist.barrier()

    def model_spec(self) -> ChannelSpec:
        return getattr(self.model, "spec", DENSE)

    def restore(self, ckpt: dict) -> None:
        if ckpt.get("format") != CKPT_FORMAT:
            raise rundir.RunDirError(f"{self.run_dir / rundir.CHECKPOINT} is not a {CKPT_FORMAT} file")
        if ckpt["config_hash"] != config_hash(self.cfg):
            raise rundir.RunDirError(f"{self.run_dir / rundir.CHECKPOINT} belongs to config {ckpt['config_hash']}, "
                                     f"not {config_hash(self.cfg)}; use another --run-dir")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.pruner is not None:
            self.pruner.load_state_dict(ckpt["pruner"])
        self.epoch, self.batch, self.step = ckpt["epoch"], ckpt["batch"], ckpt["step"]
        self.wall_before = ckpt["wall_s"]
        self.extra = ckpt.get("extra") or {}
        same_world = ckpt["world_size"] == self.denv.world_size
        if self.batch and not same_world:
            raise rundir.RunDirError(f"the checkpoint was taken mid-epoch with {ckpt['world_size']} processes; "
                                     f"resume it with {ckpt['world_size']}, not {self.denv.world_size}")
        if ckpt["partial"] is not None:
            self.partial = ckpt["partial"]
        if same_world:
            set_rng_state(ckpt["rng"][self.denv.rank], self.device)
        else:  # epoch boundary: nothing random is in flight, reseed per rank
            log.warning("resuming with %d processes (checkpoint: %d); per-rank RNG reseeded",
                        self.denv.world_size, ckpt["world_size"])
            seed_rank(self.cfg.seed + self.epoch, self.denv.rank)
        log.info("resumed from checkpoint: epoch %d, batch %d, step %d", self.epoch, self.batch, self.step)

    def wall(self) -> float:
        return self.wall_before + (time.time() - self.t_start)

    # ---------------------------------------------------------------- training
    def stop_check(self, loss_sum: torch.Tensor, where: str) -> bool:
        """Collective: agree on NaN (fail) or a stop signal (checkpoint, then Preempted)."""
        flags = torch.tensor([0.0 if torch.isfinite(loss_sum).all() else 1.0,
                              1.0 if self.stop.signum is not None else 0.0], device=self.device)
        if dist.active():
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        nan, stop = flags.tolist()
        if nan:
            raise TrainingFailed(f"training loss became NaN/inf {where} (lr {self.lr:g}); stopped, the last "
                                 "good checkpoint is kept - lower optim.lr or check the data")
        return bool(stop)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg = self.cfg
        self.lr = cfg.lr_at(epoch)
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr
        loader = self.loaders.train
        loader.set_epoch(epoch)
        total = len(loader) if not cfg.schedule.train_batches else min(len(loader), cfg.schedule.train_batches)
        sums = EpochSums(self.device)
        start = self.batch if epoch == self.epoch else 0
        if start and self.partial is not None:
            sums.load(self.partial)
        self.partial = None
        self.ddp.train()
        progress = Progress(total, start, f"epoch {epoch}", self.main, cfg.log.every)
        pause = os.environ.get(PAUSE_STEP_ENV, "")
        t0, seen = time.time(), 0
        i = start
        try:
            for i, (x, y) in enumerate(loader.iterate(start_batch=start), start=start):
                if i >= total:
                    break
                with self.autocast():
                    out = self.ddp(self.prep(x))
                    loss = F.cross_entropy(out.float(), y)
                self.optimizer.zero_grad(set_to_none=True)
                if self.scaler is not None and self.scaler.is_enabled():
                    self.scaler.scale(loss).backward()
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                else:
                    loss.backward()
                    self.optimizer.step()
                sums.add(loss, out.detach().float(), y)
                self.step += 1
                seen += y.shape[0]
                progress.update(loss.item() if self.device.type == "cpu" else None)
                if pause and self.main and int(pause.split(":")[0]) == self.step:
                    self.test_pause(float(pause.split(":")[1]))
                if (i + 1) % self.check_every == 0 or self.stop.signum is not None:
                    if self.stop_check(sums.t, f"at epoch {epoch} batch {i}"):
                        self.preempt(epoch, i + 1, sums)
        finally:
            progress.close()
        self.stop_check(sums.t, f"in epoch {epoch}")
        r = sums.reduce()
        dt = time.time() - t0
        return {"train_loss": r["loss"], "train_top1": r["top1"], "epoch_s": dt,
                "imgs_per_s": seen * self.denv.world_size / dt if dt > 0 else float("nan")}

    def test_pause(self, seconds: float) -> None:
        (self.run_dir / "logs" / f"paused-at-step-{self.step}").touch()
        end = time.time() + seconds
        while time.time() < end and self.stop.signum is None:
            time.sleep(0.05)

    def preempt(self, epoch: int, batch: int, sums: EpochSums | None) -> None:
        name = signal.Signals(self.stop.signum).name if self.stop.signum else "signal"
        log.warning("%s received: checkpointing at epoch %d batch %d (step %d)", name, epoch, batch, self.step)
        self.checkpoint(epoch, batch, sums)
        if self.wandb is not None:
            self.wandb.finish(exit_code=EXIT_REQUEUE)
        self.stop.restore()
        self.stop.chain()  # e.g. submitit's requeue handler (it exits the process itself)
        raise Preempted(f"{name}: checkpoint written at epoch {epoch} batch {batch}; resume by running again")

    # ---------------------------------------------------------------- the whole run
    def execute(self) -> dict:
        cfg = self.cfg
        ckpt = rundir.load_checkpoint(self.run_dir) if self.main else None
        has_ckpt = dist.broadcast_object(ckpt is not None)
        if has_ckpt and not self.main:
            ckpt = rundir.load_checkpoint(self.run_dir)
        hosts = dist.gather_objects(dist.hostname())
        if self.main:
            rundir.record_attempt(self.run_dir, hosts=hosts, world_size=self.denv.world_size, source=self.denv.source,
                                  device=str(self.device),
                                  resumed_from=None if ckpt is None else {"epoch": ckpt["epoch"],
                                                                          "batch": ckpt["batch"], "step": ckpt["step"]})
            if ckpt is not None:
                rundir.trim_metrics(self.run_dir, ckpt["epoch"])
            elif (self.run_dir / rundir.METRICS).exists():
                rundir.trim_metrics(self.run_dir, 0)
        self.build(ckpt)
        del ckpt
        from repro.wandb_log import WandbLog
        self.wandb = WandbLog(self.run_dir, setting=cfg.log.wandb, project=cfg.log.project, group=cfg.log.group,
                              name=run_name(cfg), config=cfg.to_dict(), is_main=self.main)
        self.stop.install()
        E = cfg.train_epochs
        log.info("run %s: %s, %d epoch(s), %d process(es) on %s, %d train batches/epoch/rank",
                 run_name(cfg), cfg.prune.method, E, self.denv.world_size, self.device,
                 min(len(self.loaders.train), cfg.schedule.train_batches or len(self.loaders.train)))
        if cfg.prune.method == "snf" and "pruned_val_top1" not in self.extra:
            self.extra["pruned_val_top1"] = self.evaluate(self.model)["val_top1"]
            log.info("SNF compact model before fine-tuning: val top-1 %.2f", self.extra["pruned_val_top1"])
            self.checkpoint(0, 0, None)  # the search is never redone on resume
        last: dict[str, float] = {}
        for epoch in range(self.epoch, E):
            tr = self.train_epoch(epoch)
            if self.pruner is not None:
                self.pruner.update()  # SFP: re-rank on the current weights at every epoch end
            va = self.evaluate(self.model)
            last = {"step": self.step, "epoch": epoch, "lr": self.lr, **{k: tr[k] for k in ("train_loss", "train_top1")},
                    **{k: va[k] for k in ("val_loss", "val_top1", "val_top5")},
                    "epoch_s": tr["epoch_s"], "imgs_per_s": tr["imgs_per_s"]}
            if self.main:
                rundir.append_metrics(self.run_dir, last)
                self.wandb.log(last)
            log.info("epoch %d/%d lr %g train loss %.4f top1 %.2f | val loss %.4f top1 %.2f top5 %.2f | %.1fs",
                     epoch + 1, E, self.lr, tr["train_loss"], tr["train_top1"], va["val_loss"], va["val_top1"],
                     va["val_top5"], tr["epoch_s"])
            self.epoch, self.batch = epoch + 1, 0
            self.checkpoint(epoch + 1, 0, None)
            if self.stop.signum is not None:
                self.preempt(epoch + 1, 0, None)
        return self.finish(last)

    def finish(self, last: dict) -> dict:
        from repro.flops import arch_counts, count
        cfg = self.cfg
        model = dist.revert_sync_bn(self.model).eval()
        dist.broadcast_buffers_(model)  # before the digest check and the hard prune
        res = cfg.data.resolution
        result: dict[str, Any] = {"status": "done", "reason": ""}
        if self.pruner is not None:
            from repro.prune.compact import build_compact
            from repro.prune.hard import hard_prune
            kept = self.pruner.kept_indices()
            result["soft_val_top1"] = last.get("val_top1")
            hard_prune(model, self.arch, kept)
            dense = self.evaluate(model)
            result["dense_val_top1"], result["dense_val_top5"] = dense["val_top1"], dense["val_top5"]
            delivered = build_compact(model, self.arch, kept).eval()
            with torch.no_grad():
                x = self.first_val_batch()
                with self.autocast():
                    diff = (model(x).float() - delivered(x).float()).abs().max().item()
            result["compact_max_abs_diff"] = diff
        else:
            delivered = model
            if cfg.prune.method == "snf":
                result["dense_val_top1"] = self.extra.get("baseline_val_top1")
                result["pruned_val_top1"] = self.extra.get("pruned_val_top1")
        # DDP keeps replicas equal by construction; verify it, since a silent divergence (e.g. a
        # rank-local mask) would make the saved rank-0 model unrepresentative.
        digests = dist.gather_objects(weights_digest(model))
        result["rank_weight_sha256"] = digests
        if len(set(digests)) > 1:
            log.warning("ranks hold different weights at the end of training: %s", digests)
        final = self.evaluate(delivered)
        counts = count(delivered, res)
        base = arch_counts(self.arch, DENSE, res)
        spec = getattr(delivered, "spec", DENSE)
        result.update({
            "val_top1": final["val_top1"], "val_top5": final["val_top5"], "val_loss": final["val_loss"],
            "val_images": final["val_n"],
            "train_loss": last.get("train_loss"), "train_top1": last.get("train_top1"),
            "conv_macs": counts.conv_macs, "baseline_conv_macs": base.conv_macs,
            "flops_reduction": 100.0 * (1 - counts.conv_macs / base.conv_macs),
            "params": counts.params, "baseline_params": base.params, "spec": spec.to_json(),
            "epochs": cfg.train_epochs, "steps": self.step, "world_size": self.denv.world_size,
            "method": cfg.prune.method, "arch": self.arch, "data": cfg.data.name, "seed": cfg.seed,
            "run_name": run_name(cfg), "config_hash": config_hash(cfg),
            "code_version": rundir.code_version()["version"], "wall_s": self.wall(),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })
        if "snf" in self.extra:
            result["snf"] = self.extra["snf"]
        if self.main:
            from repro.prune.compact import save_compact
            delivered.spec = spec
            delivered.arch = self.arch
            save_compact(self.run_dir / rundir.MODEL, delivered)
            self.wandb.summary({k: v for k, v in result.items() if k != "spec"})
            rundir.write_result(self.run_dir, result)  # last: its presence means done
        dist.barrier()
        log.info("done: val top-1 %.2f top-5 %.2f, conv MACs %.2fM (%.1f%% fewer), %.0fs",
                 result["val_top1"], result["val_top5"], counts.conv_macs / 1e6, result["flops_reduction"],
                 result["wall_s"])
        return result


def weights_digest(model: nn.Module) -> str:
    """sha256 of every parameter and buffer, in state-dict order (bitwise identity check)."""
    import hashlib
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes() if v.dtype != torch.bfloat16 else
                 v.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _prepare(cfg: Config, run_dir: Path, denv: dist.DistEnv) -> tuple[str, dict | None]:
    """Rank 0 checks/creates the folder; every rank learns the outcome (or the same error)."""
    out: tuple = ("ok", None)
    if denv.is_main:
        try:
            state = rundir.prepare(run_dir, cfg)
            prev = rundir.read_result(run_dir)
            if state != "done" and prev is not None:
                # A failed attempt is retried from its last good checkpoint (the launcher decides
                # whether to start it again); its result.json must go so "done" stays unambiguous.
                (run_dir / rundir.RESULT).unlink()
            removed = rundir.clean_tmp(run_dir)
            out = (state, {"prev": prev, "removed": removed})
        except (rundir.RunDirError, ConfigError) as e:
            out = ("error", {"message": str(e), "type": type(e).__name__})
    out = dist.broadcast_object(out)
    if out[0] == "error":
        cls = rundir.RunDirError if out[1]["type"] == "RunDirError" else ConfigError
        raise cls(out[1]["message"])
    return out


def preflight(cfg: Config) -> None:
    """Input errors that need no process group: caught before the run folder is touched."""
    from repro.data import check_data
    check_data(cfg.data)
    if cfg.prune.init_from and not Path(cfg.prune.init_from).exists():
        raise ConfigError(f"prune.init_from: {cfg.prune.init_from} does not exist")


def run(cfg: Config, run_dir: str | os.PathLike) -> dict:
    """Train, prune and evaluate one run into ``run_dir``; return its result.json content.

    Raises ConfigError / RunDirError / DataError / DistEnvError for bad input, TrainingFailed
    when the run failed (result.json says why), Preempted after a signal-triggered checkpoint.
    """
    run_dir = Path(run_dir).resolve()
    preflight(cfg)
    # Finished runs return at once, before any process group or data is touched.
    res = rundir.read_result(run_dir) if (run_dir / rundir.CONFIG).exists() else None
    if res is not None and res.get("status") == "done":
        rundir.prepare(run_dir, cfg)  # still refuses a folder that holds another config
        return res
    denv = dist.detect()
    device = dist.pick_device(cfg.device, denv)
    # Process-wide switches: restored on return, as run() may be called again in this process.
    saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
             torch.backends.cudnn.deterministic)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = not cfg.deterministic
    torch.backends.cudnn.deterministic = cfg.deterministic
    owns_group = denv.distributed and not torch.distributed.is_initialized()
    dist.init(denv, device)
    logs = None
    trainer = None
    try:
        state, info = _prepare(cfg, run_dir, denv)
        if state == "done":
            return rundir.read_result(run_dir)
        logs = RunLogging(run_dir, denv.rank)
        if info and info.get("prev"):
            log.warning("previous attempt failed (%s); retrying from the last checkpoint", info["prev"].get("reason"))
        if info and info.get("removed"):
            log.info("removed partial files of a killed writer: %s", ", ".join(info["removed"]))
        trainer = Trainer(cfg, run_dir, denv, device)
        try:
            result = trainer.execute()
        except Preempted:
            raise
        except KeyboardInterrupt:
            raise
        except Exception as e:
            reason = f"{type(e).__name__}: {e}".splitlines()[0]
            log.error("run failed: %s", reason)
            if denv.is_main:
                rundir.write_result(run_dir, {"status": "failed", "reason": reason, "run_name": run_name(cfg),
                                              "config_hash": config_hash(cfg), "wall_s": trainer.wall()})
            if trainer.wandb is not None:
                trainer.wandb.finish(exit_code=EXIT_FAILED)
            raise
        if trainer.wandb is not None:
            trainer.wandb.finish(exit_code=0)
        return result
    finally:
        if trainer is not None:
            trainer.stop.restore()
        if logs is not None:
            logs.close()
        if owns_group:
            dist.teardown()
        torch.use_deterministic_algorithms(saved[0], warn_only=True)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[1], saved[2]


# ----------------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m repro.train",
        description="Train (and prune) one run into a run folder; resumes from whatever the folder holds. "
                    "Works as is under torchrun and srun. Exit codes: 0 done, 1 failed, 2 bad input, "
                    "75 preempted after a checkpoint (requeue).",
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
    from repro.data.errors import DataError
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
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except TrainingFailed as e:
        print(f"failed: {e}", file=sys.stderr)
        return EXIT_FAILED
    except Preempted as e:
        print(f"preempted: {e}", file=sys.stderr)
        return EXIT_REQUEUE
    print(f"{run_dir}: val top-1 {result['val_top1']:.2f} top-5 {result['val_top5']:.2f} "
          f"({result['flops_reduction']:.1f}% fewer conv MACs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
