"""The equality check every exported file passes before it is written: the file's graph, read back
as a user reads it, against the delivered PyTorch model on the same inputs, in float32.

The figure is the run's own exactness figure (``repro.prune.exact``): max |Δ| / max |reference
output|, refused beyond its ``TOLERANCE`` (1e-4). The inputs are ``CHECK_BATCH`` seeded N(0, 1)
images at the run's input size (normalised images are of that scale); a file that had to be
checked on real images would not be exact.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from repro.prune.exact import TOLERANCE, relative, strict_float32

CHECK_BATCH, CHECK_SEED = 4, 0


def check_inputs(size: list[int]) -> torch.Tensor:
    return torch.randn(CHECK_BATCH, *size, generator=torch.Generator().manual_seed(CHECK_SEED))


def reference(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """The delivered model's outputs in strict float32."""
    with strict_float32(x.device), torch.no_grad():
        return model.eval()(x).float().numpy()


def relative_difference(ref: np.ndarray, out: np.ndarray) -> tuple[float, float]:
    """(max |Δ|, max |Δ| / max |ref|): the run's own figure (``prune.exact.relative``) on a
    backend's numpy output; inf for a non-finite output or a shape mismatch."""
    return relative(torch.from_numpy(np.asarray(ref, dtype=np.float32)),
                    torch.from_numpy(np.asarray(out, dtype=np.float32)))


def refusal(what: str, diff: float, rel: float) -> str | None:
    """The one line that refuses an export, or None within TOLERANCE."""
    if rel <= TOLERANCE:
        return None
    return (f"export refused: {what} differs from the delivered PyTorch model: max|Δ|/max|out| = {rel:.3g} > "
            f"{TOLERANCE:g} (max|Δ| {diff:.3g}, float32, {CHECK_BATCH} seeded inputs); nothing written")
