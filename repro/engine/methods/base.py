"""``Method``, the protocol between the loop and a pruning method (with the hooks' defaults), and
``NoPruning``, the plain method (``prune.method=none``).

The loop calls a method through these hooks and nothing else (no ``if method == ...`` in the
loop), in the spirit of Torch-Pruning's pruner objects:

  initial_model(ctx, ckpt)  the model to train: built fresh, or the skeleton ``ckpt`` restores into
  attach(model, fresh)      once the model is on its device, before DDP wraps it
  before_training(ctx, m)   once before the first epoch; True = write a checkpoint now
  after_epoch()             at every epoch end, before the epoch's evaluation
  state_dict() / load_state_dict(ckpt)   the method's own checkpoint keys
  deliver(ctx, model, last) the model the run delivers and the result fields it adds (``last``:
                            the last epoch's metrics)
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from repro.config import Config
from repro.models import DENSE, build_model

from ..init import StartingPoint

log = logging.getLogger(__name__)


@dataclass
class Context:
    """What a method may use of the run (read-only for it)."""
    cfg: Config
    run_dir: Path
    device: torch.device
    is_main: bool
    num_classes: int
    loaders: Any
    evaluate: Callable[..., dict]   # (model, fp32=False); collective: every rank calls it
    prep: Callable[[torch.Tensor], torch.Tensor]
    on_device: Callable[[nn.Module], nn.Module]
    start: StartingPoint            # prune.init_from's dense model, checked once (take() it once)


class Method:
    """The hooks a pruning method implements; the defaults train a dense model as it is (a fresh
    one, or ``prune.init_from``'s) and deliver it. A subclass sets ``name`` (its ``prune.method``)."""

    name = ""

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def initial_model(self, ctx: Context, ckpt: dict | None) -> nn.Module:
        model = build_model(self.cfg.model.arch, num_classes=ctx.num_classes)
        model.spec = DENSE
        start = ctx.start.take() if ckpt is None else None  # a resumed run's weights are the checkpoint's
        if start is not None:
            model.load_state_dict(start.state_dict())
            log.info("initialised from %s", self.cfg.prune.init_from)
        return model

    def attach(self, model: nn.Module, fresh: bool) -> None:
        pass

    def before_training(self, ctx: Context, model: nn.Module) -> bool:
        return False

    def after_epoch(self) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, ckpt: dict) -> None:
        pass

    def deliver(self, ctx: Context, model: nn.Module, last: dict) -> tuple[nn.Module, dict]:
        return model, {}


class NoPruning(Method):
    """``prune.method=none``: train the model as it is; the delivered model is the trained one."""

    name = "none"
