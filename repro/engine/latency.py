"""Measured inference latency of the model a run delivers against the dense model of the same
architecture and head, on the run's own device: result.json ``latency`` (docs/ARCHITECTURE.md).

GPU: batch 64 in the autocast dtype the run trained with, channels_last; CPU: batch 8 at the
threads this process has. The two models run interleaved (dense then delivered, delivered then
dense, ...; ``repro.timing.time_interleaved``), so load from other processes hits both
alike, and the medians over the rounds are recorded. The dense model has fresh random weights
(time does not depend on the values); both run as they are delivered (eval mode, BN not folded),
so the ratio compares the architectures. The theoretical speed-up is result.json's
``baseline_conv_macs / conv_macs``; ``python -m repro.bench.latency`` studies the gap between the two.
"""
from __future__ import annotations

import copy
import statistics

import torch
from torch import nn

from repro.models import build_model
from repro.timing import time_interleaved

from .precision import Precision

BATCH = {"cuda": 64, "cpu": 8}
REPEATS = {"cuda": 20, "cpu": 7}  # timed rounds, after WARMUP untimed ones
WARMUP = 3


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def measure(delivered: nn.Module, arch: str, num_classes: int, device: torch.device, precision: Precision,
            resolution: int) -> dict:
    """{"dense_ms", "delivered_ms", "device", "batch", "threads", "precision", "repeats",
    "resolution"}: median milliseconds per batch of each model. ``delivered`` is not modified."""
    kind = device.type if device.type in BATCH else "cpu"
    batch, repeats = BATCH[kind], REPEATS[kind]
    models = {"dense": build_model(arch, num_classes=num_classes), "delivered": copy.deepcopy(delivered)}
    x = precision.prep(torch.randn(batch, 3, resolution, resolution, device=device))

    def forward(model: nn.Module):
        model = precision.on_device(model, device).eval()

        def run(inp: torch.Tensor) -> torch.Tensor:
            with precision.autocast():
                return model(inp)
        return run

    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    times = time_interleaved({name: (forward(m), x) for name, m in models.items()}, repeats, warmup=WARMUP,
                             sync=sync)
    return {"dense_ms": statistics.median(times["dense"]) * 1e3,
            "delivered_ms": statistics.median(times["delivered"]) * 1e3,
            "device": device_name(device), "batch": batch, "threads": torch.get_num_threads(),
            "precision": precision.delivered_name, "repeats": repeats, "resolution": resolution}
