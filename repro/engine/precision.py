"""Device-specific numerics: AMP dtype, GradScaler, channels_last, one place for each choice."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from repro.config import Config
from repro.prune.exact import exact_float32  # noqa: F401 - the training loop's fp32 evaluation uses it


def amp_dtype_for(bf16_native: bool) -> torch.dtype:
    """bf16 where the GPU computes it natively (compute capability >= 8: A100, H100, L4, ...),
    else fp16 with a GradScaler. Pre-Ampere GPUs (V100, T4) only emulate bf16: far slower, and
    ``torch.cuda.is_bf16_supported()`` still says yes there unless ``including_emulation=False``."""
    return torch.bfloat16 if bf16_native else torch.float16


def bf16_native() -> bool:
    """Does the current CUDA device compute bf16 natively (not emulated)?"""
    return torch.cuda.is_bf16_supported(including_emulation=False)


def full(t: torch.Tensor) -> torch.Tensor:
    """At least float32: autocast's bf16/fp16 logits go up to float32 for the loss and the metrics,
    float64 (``dtype=float64``) stays float64."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


class Precision:
    """CUDA: bf16 autocast where the GPU supports it natively, else fp16 with a GradScaler, and
    channels_last when asked. CPU: float32 (or float64 with ``dtype=float64``), contiguous, no
    scaler. ``dtype`` is the training model's parameter dtype; every model is fed its own dtype."""

    def __init__(self, cfg: Config, device: torch.device):
        cuda = device.type == "cuda"
        self.dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
        self.amp_dtype = None
        if cuda and cfg.amp:
            self.amp_dtype = amp_dtype_for(bf16_native())
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16) if cuda else None
        self.channels_last = cuda and cfg.channels_last

    def autocast(self, enabled: bool = True):
        if self.amp_dtype is None or not enabled:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.amp_dtype)

    def prep(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def on_device(self, model: nn.Module, device: torch.device) -> nn.Module:
        model = model.to(device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    @property
    def name(self) -> str:
        """What the training ran in."""
        return str(self.amp_dtype or self.dtype).removeprefix("torch.")

    @property
    def delivered_name(self) -> str:
        """What the delivered (float32) model runs in under this precision's autocast."""
        return str(self.amp_dtype or torch.float32).removeprefix("torch.")
