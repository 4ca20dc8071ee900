"""The exactness checks a run passes before it may be called done: two models that must compute
the same function are compared on one validation batch in strict float32.

* SFP: the compact model the run delivers vs the hard-pruned dense model it was cut from
  (``methods/sfp.py``); both are the same function by construction (``repro.prune.hard``), so
  any disagreement is a bug in the cut (a wrong kept index, a lost stream index).
* Every run: the delivered model as written to model.pt and read back vs the model that was
  evaluated (``finish.py``): what a user loads is what the table reports.

The figure is relative, max |Δ| / max |reference output|, so one tolerance serves a 10-class CIFAR
head and a 1000-class ImageNet head alike. Strict float32: autocast off and TF32 off (cuDNN convs
and matmuls), restored afterwards, on any device: TF32's 10-bit mantissa alone would be ~1e-3.
"""
from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from repro import dist

from .errors import TrainingFailed
from .precision import exact_float32

TOLERANCE = 1e-4  # relative; float32 reorderings of the same sums stay near 1e-6


@contextlib.contextmanager
def strict_float32(device: torch.device):
    """float32 maths only: no autocast, no TF32 (``precision.exact_float32``); the previous
    settings come back afterwards."""
    with exact_float32(), torch.autocast(device.type, enabled=False):
        yield


@torch.no_grad()
def compare(reference: nn.Module, model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """(max |Δ|, max |Δ| / max |reference output|) of the two models' outputs on ``x``, both in
    eval mode and strict float32. Non-finite outputs give inf."""
    with strict_float32(x.device):
        a = reference.eval()(x.float()).float()
        b = model.eval()(x.float()).float()
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return math.inf, math.inf
    diff, scale = (a - b).abs().max().item(), a.abs().max().item()
    return diff, (diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf))


def failure(what: str, diff: float, rel: float) -> str | None:
    """The one-line reason a comparison fails the run, or None within TOLERANCE."""
    if rel <= TOLERANCE:
        return None
    return (f"exactness check failed: {what}: max|Δ|/max|out| = {rel:.3g} > {TOLERANCE:g} "
            f"(max|Δ| {diff:.3g}, float32, one val batch); the run is not done")


def check(what: str, reference: nn.Module, model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """Collective: compare on every rank's ``x``, take the worst over ranks (so every rank makes
    the same decision), raise TrainingFailed with a one-line reason beyond TOLERANCE."""
    diff, rel = max(dist.gather_objects(compare(reference, model, x)), key=lambda d: d[1])
    reason = failure(what, diff, rel)
    if reason:
        raise TrainingFailed(reason)
    return diff, rel
