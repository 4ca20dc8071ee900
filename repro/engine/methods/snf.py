"""``prune.method=snf``: search the kept filters per layer on a trained baseline, then fine-tune.

Rank 0 runs the search (``repro.prune.snf_variants.snf_prune``) on ``prune.search_batches`` epoch-0
training batches and writes ``snf_search.json`` and ``snf_pruned.pt`` into the run folder; every
rank then loads that compact model, which the loop fine-tunes. The spec and the numbers measured
once (baseline accuracy, accuracy right after pruning, the search report) are checkpointed, so
the search is never redone on resume.
"""
from __future__ import annotations

import json
import logging

from torch import nn

from repro import dist
from repro.io import atomic_write_json
from repro.models import DENSE, ChannelSpec, build_model
from repro.prune.compact import load_compact, save_compact

from ..errors import TrainingFailed
from .base import Context, Method

log = logging.getLogger(__name__)

SEARCH_FILE, PRUNED_FILE = "snf_search.json", "snf_pruned.pt"


class Snf(Method):
    name = "snf"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.spec: ChannelSpec = DENSE
        self.extra: dict = {}

    def initial_model(self, ctx: Context, ckpt: dict | None) -> nn.Module:
        if ckpt is not None:  # the weights come from the checkpoint
            self.spec = ChannelSpec.from_json(ckpt["spec"])
            model = build_model(self.cfg.model.arch, num_classes=ctx.num_classes, spec=self.spec)
            model.spec = self.spec
            return model
        base = ctx.on_device(ctx.start.take())  # the trained dense baseline (prune.init_from)
        self.extra["baseline_val_top1"] = ctx.evaluate(base)["val_top1"]  # collective
        log.info("SNF baseline: val top-1 %.2f", self.extra["baseline_val_top1"])
        failure = None
        if ctx.is_main:
            try:
                self._search(ctx, base)
            except Exception as e:  # tell the other ranks instead of leaving them in the barrier
                failure = e
        err = dist.broadcast_object(None if failure is None else f"{type(failure).__name__}: {failure}")
        if failure is not None:
            raise failure
        if err is not None:
            raise TrainingFailed(f"SNF search failed on rank 0: {err}")
        model = load_compact(ctx.run_dir / PRUNED_FILE)
        self.spec = model.spec
        self.extra = dist.broadcast_object(self.extra)
        return model.train()

    def _search(self, ctx: Context, base: nn.Module) -> None:
        """Rank 0: sensitivity search + compact model, written to the run folder."""
        from repro.prune.snf_variants import snf_prune
        p = self.cfg.prune
        batches = []
        ctx.loaders.train.set_epoch(0)
        for i, (x, y) in enumerate(ctx.loaders.train.iterate()):
            if i >= p.search_batches:
                break
            batches.append((ctx.prep(x), y))
        log.info("SNF: searching kept filters for a %.2f%% conv-MACs reduction on %d batches (%s)",
                 p.flops_reduction, len(batches), "uniform baseline" if p.uniform else f"variant {p.snf_variant}")
        compact, _spec, report = snf_prune(base, self.cfg.model.arch, batches, p.flops_reduction,
                                           criterion=p.criterion, uniform=p.uniform, variant=p.snf_variant,
                                           resolution=self.cfg.data.resolution, progress=False)
        atomic_write_json(ctx.run_dir / SEARCH_FILE, report)
        save_compact(ctx.run_dir / PRUNED_FILE, compact)
        snf = {k: v for k, v in report.items() if k not in ("kept", "spec")}
        self.extra["snf"] = json.loads(json.dumps(snf, default=str))  # plain types only
        log.info("SNF: spec found, %.2f%% reduction", report.get("flops_reduction", float("nan")))

    def before_training(self, ctx: Context, model: nn.Module) -> bool:
        if "pruned_val_top1" in self.extra:
            return False
        self.extra["pruned_val_top1"] = ctx.evaluate(model)["val_top1"]
        log.info("SNF compact model before fine-tuning: val top-1 %.2f", self.extra["pruned_val_top1"])
        return True  # checkpoint now: the search is never redone on resume

    def state_dict(self) -> dict:
        return {"spec": self.spec.to_json(), "extra": self.extra}

    def load_state_dict(self, ckpt: dict) -> None:
        self.extra = ckpt.get("extra") or {}

    def deliver(self, ctx: Context, model: nn.Module, last: dict) -> tuple[nn.Module, dict]:
        fields = {"dense_val_top1": self.extra.get("baseline_val_top1"),
                  "pruned_val_top1": self.extra.get("pruned_val_top1")}
        if "snf" in self.extra:
            fields["snf"] = self.extra["snf"]
        return model, fields
