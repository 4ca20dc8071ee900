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
from typing import TYPE_CHECKING, Any

from repro import dist, rundir
from repro.config import config_hash, run_name
from repro.flops import arch_counts, count
from repro.io import weights_digest
from repro.models import DENSE
from repro.prune.compact import load_compact, save_compact

from . import exact, latency
from .agree import agreed_flags
from .errors import Preempted, TrainingFailed, stopped

if TYPE_CHECKING:
    from .loop import Session

log = logging.getLogger(__name__)


def _result_fields(s: "Session", delivered, final: dict) -> dict[str, Any]:
    cfg, arch, res = s.cfg, s.cfg.model.arch, s.cfg.data.resolution
    counts = count(delivered, res)
    base = arch_counts(arch, DENSE, res)
    return {
        "val_top1": final["val_top1"], "val_top5": final["val_top5"], "val_loss": final["val_loss"],
        "val_images": final["val_n"], "num_classes": s.num_classes,
        "train_loss": s.last.get("train_loss"), "train_top1": s.last.get("train_top1"),
        "conv_macs": counts.conv_macs, "baseline_conv_macs": base.conv_macs,
        "flops_reduction": 100.0 * (1 - counts.conv_macs / base.conv_macs),
        "params": counts.params, "baseline_params": base.params,
        "spec": getattr(delivered, "spec", DENSE).to_json(),
        "epochs": cfg.train_epochs, "steps": s.step, "world_size": s.denv.world_size,
        "method": s.method.name, "arch": arch, "data": cfg.data.name, "seed": cfg.seed,
        "run_name": run_name(cfg), "config_hash": config_hash(cfg),
        "code_version": rundir.code_version()["version"], "wall_s": s.wall(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def halt(s: "Session", where: str) -> None:
    """Collective: if a stop signal arrived, stop here without writing anything. For points where
    nothing was trained since the last checkpoint (start-up, the final phase): the last
    checkpoint and result stay as they are; the next start continues from them."""
    if not agreed_flags(s, None)[1]:
        return
    name, signum = s.stop.name, s.stop.signum
    log.warning("%s received %s: nothing to save since the last checkpoint; stopping", name, where)
    if s.wandb is not None:
        s.wandb.finish(exit_code=Preempted.exit_code)
    s.stop.restore()
    s.stop.chain()  # e.g. submitit's requeue handler (it exits the process itself)
    raise stopped(signum, f"{name} {where}: the last checkpoint is kept as it was; resume by running again")


def _saved_and_timed(s: "Session", delivered, x) -> tuple[str | None, dict]:
    """Rank 0: write model.pt, read it back and check that it computes what was evaluated
    (``exact``), time it against the dense model (``latency``). Returns (the failure reason or
    None, result fields)."""
    delivered.spec = getattr(delivered, "spec", DENSE)
    delivered.arch = s.cfg.model.arch
    save_compact(s.run_dir / rundir.MODEL, delivered)
    saved = s.precision.on_device(load_compact(s.run_dir / rundir.MODEL), s.device)
    diff, rel = exact.compare(delivered, saved, x)
    reason = exact.failure("model.pt read back vs the evaluated model", diff, rel)
    if reason:
        (s.run_dir / rundir.MODEL).unlink()  # a failed run delivers nothing; its checkpoint stays
        return reason, {}
    try:
        timing = latency.measure(delivered, s.cfg.model.arch, s.num_classes, s.device, s.precision,
                                 s.cfg.data.resolution)
    except Exception as e:  # noqa: BLE001 - a measurement, not the result: recorded, never fatal
        log.warning("latency not measured: %s: %s", type(e).__name__, e)
        timing = {"error": f"{type(e).__name__}: {e}".splitlines()[0]}
    return None, {"saved_rel_diff": rel, "latency": timing}


def finish(s: "Session") -> dict:
    halt(s, "before the final phase")
    model = dist.revert_sync_bn(s.model).eval().float()  # delivered in float32 whatever dtype trained it
    dist.broadcast_buffers_(model)  # before the digest check and whatever the method does to it
    delivered, fields = s.method.deliver(s.context(), model, s.last)  # raises if not exact
    # DDP keeps replicas equal by construction; verify it, since a silent divergence (e.g. a
    # rank-local mask) would make the saved rank-0 model unrepresentative.
    digests = dist.gather_objects(weights_digest(model))
    if len(set(digests)) > 1:
        log.warning("ranks hold different weights at the end of training: %s", digests)
    # The reported accuracy is the delivered model's in float32, whatever the training precision.
    final = s.context().evaluate(delivered, fp32=True)
    result: dict[str, Any] = {"status": "done", "reason": "", **fields, "rank_weight_sha256": digests,
                              **_result_fields(s, delivered, final), "eval_precision": "float32",
                              "train_precision": s.precision.name}
    halt(s, "in the final phase")  # nothing written yet: the next start redoes this phase
    failure, extra = None, {}
    if s.is_main:
        x = s.precision.prep(next(iter(s.loaders.val.iterate()))[0])
        failure, extra = _saved_and_timed(s, delivered, x)
        if failure is None and s.cfg.export.formats:  # opt-in; records an error, never fails the run
            from repro.export import final_phase
            extra["export"] = final_phase(s.run_dir, s.cfg)
    failure = dist.broadcast_object(failure)
    if failure is not None:
        raise TrainingFailed(failure)  # the checkpoint stays; result.json says failed
    result.update(extra)
    if s.is_main:
        s.wandb.summary({k: v for k, v in result.items() if k != "spec"})
        rundir.write_result(s.run_dir, result)  # last: its presence means done
    dist.barrier()
    log.info("done: val top-1 %.2f top-5 %.2f, conv MACs %.2fM (%.1f%% fewer), %.0fs",
             result["val_top1"], result["val_top5"], result["conv_macs"] / 1e6, result["flops_reduction"],
             result["wall_s"])
    return result
