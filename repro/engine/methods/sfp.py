"""``prune.method=sfp``: soft filter pruning around the generic loop.

Masks are computed before epoch 0 (fresh runs) and recomputed from the current weights at every
epoch end (so an epoch's validation metrics are of the masked model); they live in the checkpoint
under "pruner". The delivered model is the compact one: the trained model is hard-pruned by the
exactness rule (``repro.prune.hard``), compacted, and its evaluation is the run's val_top1/5.
"""
from __future__ import annotations

from torch import nn

from repro.prune.compact import build_compact
from repro.prune.hard import hard_prune
from repro.prune.sfp import SoftFilterPruner

from .. import exact
from .base import Context, Method


class Sfp(Method):
    name = "sfp"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.pruner: SoftFilterPruner | None = None

    def attach(self, model: nn.Module, fresh: bool) -> None:
        p = self.cfg.prune
        self.pruner = SoftFilterPruner(model, self.cfg.model.arch, p.rate, p.criterion, seed=self.cfg.seed)
        if fresh:
            self.pruner.update()  # first masks from the initial weights, before epoch 0

    def after_epoch(self) -> None:
        self.pruner.update()  # re-rank on the current weights at every epoch end

    def state_dict(self) -> dict:
        return {"pruner": self.pruner.state_dict()}

    def load_state_dict(self, ckpt: dict) -> None:
        self.pruner.load_state_dict(ckpt["pruner"])

    def deliver(self, ctx: Context, model: nn.Module, last: dict) -> tuple[nn.Module, dict]:
        kept = self.pruner.kept_indices()
        hard_prune(model, self.cfg.model.arch, kept)
        dense = ctx.evaluate(model, fp32=True)  # as the delivered model is: comparable
        compact = build_compact(model, self.cfg.model.arch, kept).eval()
        x = ctx.prep(next(iter(ctx.loaders.val.iterate()))[0])
        # the delivered model must be the function that was hard-pruned: not done otherwise
        diff, rel = exact.check("compact model vs the hard-pruned model", model, compact, x)
        return compact, {"soft_val_top1": last.get("val_top1"), "dense_val_top1": dense["val_top1"],
                         "dense_val_top5": dense["val_top5"], "compact_max_abs_diff": diff,
                         "compact_rel_diff": rel}
