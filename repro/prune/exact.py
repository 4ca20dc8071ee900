"""The exactness rule's arithmetic: two models that must compute the same function, compared in
strict float32 (autocast off, TF32 off in cuDNN convs and matmuls, restored afterwards, on any
device: TF32's 10-bit mantissa alone would be ~1e-3). The figure is relative, max |Δ| / max
|reference output|, so one tolerance serves a 10-class CIFAR head and a 1000-class ImageNet head
alike. Used by the run's own checks (``repro.engine.exact``) and by exports (``repro.export``).
"""
from __future__ import annotations

import contextlib
import math

import torch
from torch import nn


@contextlib.contextmanager
def exact_float32():
    """Float32 that is float32: no TF32 in cuDNN convolutions and cuBLAS matmuls (torch allows TF32
    for convolutions by default, a 10-bit mantissa), float32 matmul precision "highest" (no
    reduced-precision matmuls on any backend). For the delivered model's reported accuracy and for
    exactness checks; restored afterwards."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
             torch.get_float32_matmul_precision())
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved[:2]
        torch.set_float32_matmul_precision(saved[2])


TOLERANCE = 1e-4  # relative; float32 reorderings of the same sums stay near 1e-6


@contextlib.contextmanager
def strict_float32(device: torch.device):
    """float32 maths only: no autocast, no TF32 (``exact_float32``); the previous
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
    return relative(a, b)


def relative(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(max |Δ|, max |Δ| / max |a|) of two outputs, ``a`` the reference; inf for non-finite
    outputs or a shape mismatch."""
    if a.shape != b.shape or not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return math.inf, math.inf
    diff, scale = (a - b).abs().max().item(), a.abs().max().item()
    return diff, (diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf))
