"""Where the ranks agree: one collective at fixed points of the run decides, on every rank alike,
whether training diverged and whether a stop signal arrived (on any rank). The loop calls it
during and between epochs; ``finish.halt`` calls it before the final phase writes anything.
``stop_here`` is how every rank then stops together."""
from __future__ import annotations

import math

import torch

from repro import dist

from .errors import Preempted, TrainingFailed, stopped
from .state import Attempt

# The divergence rule: a run has diverged when its training loss is NaN/inf, or when the mean
# training loss of the epoch so far is above EXPLODED x ln(num_classes). ln(C) is the loss of a
# uniform guess, about where an untrained net starts; a learning run only goes down from there,
# and even a bad start stays within a few times it (ResNet-101 at 32 px: 2.5-9 per batch), so 10x
# leaves no doubt. The epoch mean (not one batch) keeps a single bad batch from ending a run.
EXPLODED = 10.0


def _exploded_limit(num_classes: int) -> float:
    return EXPLODED * math.log(max(num_classes, 2))


def divergence_reason(loss_sum: torch.Tensor, num_classes: int) -> str | None:
    """Why the epoch's sums (``EpochSums.t``: loss x n, top-1, top-5, n) say the run diverged;
    None when they do not."""
    t = loss_sum.detach().double().cpu()
    if not torch.isfinite(t).all():
        return "training loss became NaN/inf"
    mean = t[0].item() / t[3].item() if t[3].item() else 0.0
    limit = _exploded_limit(num_classes)
    if mean > limit:
        return (f"training loss exploded (epoch mean {mean:.4g} > {EXPLODED:g} x ln({num_classes}) "
                f"= {limit:.3g})")
    return None


def diverged_on_device(loss_sum: torch.Tensor, num_classes: int) -> torch.Tensor:
    """divergence_reason's verdict as a 0-dim float64 tensor (1 = diverged) computed where the sums
    are, without reading them back: the same rule, in the same float64 arithmetic."""
    t = loss_sum.detach().double()
    n = t[3]
    mean = torch.where(n != 0, t[0] / torch.where(n != 0, n, torch.ones_like(n)), torch.zeros_like(n))
    return ((~torch.isfinite(t).all()) | (mean > _exploded_limit(num_classes))).double()


def diverged_flag(loss_sum: torch.Tensor | None, num_classes: int, device: torch.device) -> torch.Tensor:
    """The divergence flag the ranks agree on, a 0-dim float32 tensor on ``device`` (1 = diverged).
    On a GPU it is computed there (``diverged_on_device``): reading the sums back first would wait
    for every queued kernel once more per check, besides the wait the agreement's own read-back
    costs. On the CPU, where a read-back costs nothing, ``divergence_reason`` decides, as it did."""
    if loss_sum is None:
        return torch.zeros((), device=device)
    if device.type == "cuda":
        return diverged_on_device(loss_sum, num_classes).float()
    return torch.tensor(0.0 if divergence_reason(loss_sum, num_classes) is None else 1.0, device=device)


def agreed_flags(a: Attempt, loss_sum: torch.Tensor | None = None, num_classes: int = 2) -> tuple[bool, bool]:
    """Collective: (some rank's training diverged (divergence_reason), some rank has a stop signal),
    the same on every rank.

    Every rank must call this at the same point of the run - same step, or the same place between
    epochs - and never because of its own flag: signals reach the ranks milliseconds apart, and a
    rank that entered this all-reduce while the others were in DDP's gradient all-reduce would hang
    the job. More flags can ride in the same all-reduce (one MAX over a small vector)."""
    flags = diverged_flag(loss_sum, num_classes, a.device).repeat(2)
    flags[1] = 1.0 if a.stop.signum is not None else 0.0  # a Python number: no copy that waits
    if dist.active():
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
    diverged, stop = flags.tolist()
    return bool(diverged), bool(stop)


def stop_check(a: Attempt, loss_sum: torch.Tensor | None, num_classes: int, where: str, lr: float) -> bool:
    """Collective (see agreed_flags): raise TrainingFailed on divergence; True = every rank stops here."""
    diverged, stop = agreed_flags(a, loss_sum, num_classes)
    if diverged:
        why = divergence_reason(loss_sum, num_classes) if loss_sum is not None else None
        raise TrainingFailed(f"{why or 'training diverged on another rank'} {where} (lr {lr:g}); stopped, "
                             "the last good checkpoint is kept - lower optim.lr or check the data")
    return bool(stop)


def stop_here(a: Attempt, message: str) -> None:
    """After an agreed stop (every rank comes here together): hand the signal to the handler that
    was there before ours (e.g. submitit's requeue handler, which requeues and exits the process
    itself), else raise Preempted (SIGINT: Interrupted) with the signal's name + ``message``. A rank
    that saw no signal itself has nothing to hand on.

    W&B only marks its run preempting before the hand-off (one quick message to its service); its
    ``finish`` (online: the upload) comes after, when the hand-off returned: an upload that outlasts
    SLURM's kill window must not cost the requeue."""
    if a.wandb is not None:
        a.wandb.mark_preempting()
    name, signum = a.stop.name, a.stop.signum
    a.stop.restore()
    a.stop.chain()
    if a.wandb is not None:
        # Never fails: the preemption signal reaches wandb's service process too (SLURM signals
        # every process of the step) and a dead service must not turn a requeue into a failure.
        a.wandb.finish(exit_code=Preempted.exit_code)
    raise stopped(signum, f"{name}{message}")
