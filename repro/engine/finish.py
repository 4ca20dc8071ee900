"""The final phase of a run: the method delivers its model, the loop evaluates and counts it, and
rank 0 writes model.pt and then result.json (written last: its presence with status done means
the run is done).

Everything it needs is in the last checkpoint (weights, method state, the last epoch's metrics in
``last``), so a run stopped anywhere in here - killed, or told to stop (``halt``: before the
phase, and before the files are written) - finishes again from that checkpoint with the same
result."""
from __future__ import annotations

import logging
import time
from typing import Any

from repro import dist, rundir
from repro.config import config_hash, run_name
from repro.flops import arch_counts, count
from repro.io import weights_digest
from repro.models import DENSE
from repro.prune.compact import load_compact, save_compact

from . import exact, latency
from .agree import agreed_flags, stop_here
from .errors import TrainingFailed
from .methods import Context
from .state import Attempt, Position, Training

log = logging.getLogger(__name__)


def _result_fields(a: Attempt, t: Training, pos: Position, delivered, final: dict) -> dict[str, Any]:
    cfg, arch, res = a.cfg, a.cfg.model.arch, a.cfg.data.resolution
    counts = count(delivered, res)
    base = arch_counts(arch, DENSE, res)
    return {
        "val_top1": final["val_top1"], "val_top5": final["val_top5"], "val_loss": final["val_loss"],
        "val_images": final["val_n"], "num_classes": t.num_classes,
        "train_loss": pos.last.get("train_loss"), "train_top1": pos.last.get("train_top1"),
        "data_wait_share": pos.last.get("data_wait_share"),  # the last epoch's, rank 0's
        "conv_macs": counts.conv_macs, "baseline_conv_macs": base.conv_macs,
        "flops_reduction": 100.0 * (1 - counts.conv_macs / base.conv_macs),
        "params": counts.params, "baseline_params": base.params,
        "spec": getattr(delivered, "spec", DENSE).to_json(),
        "epochs": cfg.train_epochs, "steps": pos.step, "world_size": a.denv.world_size,
        "method": t.method.name, "arch": arch, "data": cfg.data.name, "seed": cfg.seed,
        "run_name": run_name(cfg), "config_hash": config_hash(cfg),
        "code_version": rundir.code_version()["version"], "wall_s": pos.wall(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def halt(a: Attempt, where: str) -> None:
    """Collective: if a stop signal arrived, stop here without writing anything. For points where
    nothing was trained since the last checkpoint (start-up, the final phase): the last
    checkpoint and result stay as they are; the next start continues from them."""
    if not agreed_flags(a)[1]:
        return
    log.warning("%s received %s: nothing to save since the last checkpoint; stopping", a.stop.name, where)
    stop_here(a, f" {where}: the last checkpoint is kept as it was; resume by running again")


def _saved_and_timed(a: Attempt, num_classes: int, delivered, x) -> tuple[str | None, dict]:
    """Rank 0: write model.pt, read it back and check that it computes what was evaluated
    (``exact``), time it against the dense model (``latency``). Returns (the failure reason or
    None, result fields)."""
    delivered.spec = getattr(delivered, "spec", DENSE)
    delivered.arch = a.cfg.model.arch
    save_compact(a.run_dir / rundir.MODEL, delivered)
    saved = a.precision.on_device(load_compact(a.run_dir / rundir.MODEL), a.device)
    diff, rel = exact.compare(delivered, saved, x)
    reason = exact.failure("model.pt read back vs the evaluated model", diff, rel)
    if reason:
        (a.run_dir / rundir.MODEL).unlink()  # a failed run delivers nothing; its checkpoint stays
        return reason, {}
    try:
        timing = latency.measure(delivered, a.cfg.model.arch, num_classes, a.device, a.precision,
                                 a.cfg.data.resolution)
    except Exception as e:  # noqa: BLE001 - a measurement, not the result: recorded, never fatal
        log.warning("latency not measured: %s: %s", type(e).__name__, e)
        timing = {"error": f"{type(e).__name__}: {e}".splitlines()[0]}
    return None, {"saved_rel_diff": rel, "latency": timing}


def finish(a: Attempt, t: Training, pos: Position, ctx: Context) -> dict:
    """The final phase (collective): deliver, evaluate, count, write model.pt, then result.json."""
    halt(a, "before the final phase")
    model = dist.revert_sync_bn(t.model).eval().float()  # delivered in float32 whatever dtype trained it
    dist.broadcast_buffers_(model)  # before the digest check and whatever the method does to it
    delivered, fields = t.method.deliver(ctx, model, pos.last)  # raises if not exact
    # DDP keeps replicas equal by construction; verify it, since a silent divergence (e.g. a
    # rank-local mask) would make the saved rank-0 model unrepresentative.
    digests = dist.gather_objects(weights_digest(model))
    if len(set(digests)) > 1:
        log.warning("ranks hold different weights at the end of training: %s", digests)
    # The reported accuracy is the delivered model's in float32, whatever the training precision.
    final = ctx.evaluate(delivered, fp32=True)
    result: dict[str, Any] = {"status": "done", "reason": "", **fields, "rank_weight_sha256": digests,
                              **_result_fields(a, t, pos, delivered, final), "eval_precision": "float32",
                              "train_precision": a.precision.name}
    halt(a, "in the final phase")  # nothing written yet: the next start redoes this phase
    failure, extra = None, {}
    if a.is_main:
        x = a.precision.prep(next(iter(t.loaders.val.iterate()))[0])
        failure, extra = _saved_and_timed(a, t.num_classes, delivered, x)
        if failure is None and a.cfg.export.formats:  # opt-in; records an error, never fails the run
            from repro.export import final_phase
            extra["export"] = final_phase(a.run_dir, a.cfg)
    failure = dist.broadcast_object(failure)
    if failure is not None:
        raise TrainingFailed(failure)  # the checkpoint stays; result.json says failed
    result.update(extra)
    if a.is_main:
        a.wandb.summary({k: v for k, v in result.items() if k != "spec"})
        rundir.write_result(a.run_dir, result)  # last: its presence means done
    dist.barrier()
    log.info("done: val top-1 %.2f top-5 %.2f, conv MACs %.2fM (%.1f%% fewer), %.0fs",
             result["val_top1"], result["val_top5"], result["conv_macs"] / 1e6, result["flops_reduction"],
             result["wall_s"])
    return result
