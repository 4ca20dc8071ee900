"""Device-specific numerics: AMP dtype, GradScaler, channels_last, one place for each choice."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from repro.config import Config


class Precision:
    """CUDA: bf16 autocast where the GPU supports it, else fp16 with a GradScaler, and
    channels_last when asked. CPU: float32, contiguous, no scaler (all ignored)."""

    def __init__(self, cfg: Config, device: torch.device):
        cuda = device.type == "cuda"
        self.amp_dtype = None
        if cuda and cfg.amp:
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16) if cuda else None
        self.channels_last = cuda and cfg.channels_last

    def autocast(self):
        if self.amp_dtype is None:
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
        return "float32" if self.amp_dtype is None else str(self.amp_dtype).removeprefix("torch.")
