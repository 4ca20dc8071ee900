"""The exactness checks a run passes before it may be called done: two models that must compute
the same function are compared on one validation batch in strict float32.

* SFP: the compact model the run delivers vs the hard-pruned dense model it was cut from
  (``methods/sfp.py``); both are the same function by construction (``repro.prune.hard``), so
  any disagreement is a bug in the cut (a wrong kept index, a lost stream index).
* Every run: the delivered model as written to model.pt and read back vs the model that was
  evaluated (``finish.py``): what a user loads is what the table reports.

The comparison itself (strict float32, the relative figure, TOLERANCE) is ``repro.prune.exact``;
here: the collective decision and the one-line failure.
"""
from __future__ import annotations

import torch
from torch import nn

from repro import dist

from repro.prune.exact import TOLERANCE, compare, strict_float32  # noqa: F401 - re-exported

from .errors import TrainingFailed


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
