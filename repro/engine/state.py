"""One run's state while it trains, in three parts by lifetime; the engine's functions take the
parts they need (``repro.engine.loop`` and the modules it calls).

  Attempt    this attempt at the run: config, folder, where it runs (rank, device), numerics, the
             stop flag, W&B. Fixed for the attempt (W&B is started once the model is built).
  Position   where training stands: epoch, batch and step, the partial sums of a mid-epoch stop,
             the last finished epoch's metrics, the wall time. What a checkpoint records besides
             the weights; a resumed run takes it from the checkpoint.
  Training   what training acts on, built once per attempt (``loop.build``): the method, the
             loaders, the model and its DDP wrapper, optimizer, GradScaler.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from repro import dist
from repro.config import Config

from .methods.base import Method
from .precision import Precision
from .signals import StopFlag

# Steps between two agreements on the stop/NaN flags when ``stop_check_every`` is 0 (auto). A
# .item() per step is free on CPU; on CUDA it stalls the stream, so look less often there.
AUTO_CHECK_EVERY = {"cuda": 20}


@dataclass
class Attempt:
    cfg: Config
    run_dir: Path
    denv: dist.DistEnv
    device: torch.device
    precision: Precision
    stop: StopFlag
    wandb: Any = None  # repro.wandb_log.WandbLog, started by loop.execute after the model is built

    @property
    def is_main(self) -> bool:
        return self.denv.is_main

    @property
    def check_every(self) -> int:
        """Steps between two agreements on the stop/NaN flags: the same steps on every rank."""
        return self.cfg.stop_check_every or AUTO_CHECK_EVERY.get(self.device.type, 1)


@dataclass
class Position:
    epoch: int = 0          # the epoch to run next
    batch: int = 0          # the batch of that epoch to run next
    step: int = 0           # optimizer steps so far
    partial: Any = None     # the epoch sums of a mid-epoch checkpoint (EpochSums.state())
    last: dict = field(default_factory=dict)  # the last finished epoch's metrics
    wall_before: float = 0.0  # wall time of the earlier attempts
    started: float = field(default_factory=time.time)

    def wall(self) -> float:
        return self.wall_before + (time.time() - self.started)


@dataclass
class Training:
    method: Method
    loaders: Any            # repro.data.Loaders
    num_classes: int
    model: nn.Module        # the bare model: checkpointed, delivered
    ddp: nn.Module | None   # what the steps run: the model, DDP-wrapped when distributed, compiled (`compile`)
    optimizer: torch.optim.Optimizer
    scaler: Any = None      # the GradScaler (fp16 on CUDA), else None
