"""Measured inference latency of the model a run delivers against the dense model of the same
architecture and head, on the run's own device: result.json ``latency`` (docs/ARCHITECTURE.md).

GPU: batch 64 in the autocast dtype the run trained with, channels_last; CPU: batch 8 at the
threads this process has. The models run interleaved (dense then delivered, delivered then
dense, ...; ``repro.timing.time_interleaved``), so load from other processes hits both
alike, and the medians over the rounds are recorded. The dense model has fresh random weights
(time does not depend on the values). Two comparisons:

* as delivered (``dense_ms``, ``delivered_ms``): both models as they are (eval mode, BN not
  folded, the delivered widths, e.g. 45/90/180/359 filters), so the ratio compares the
  architectures as a user of model.pt meets them;
* aligned x8 + BN folded (``folded_dense_ms``, ``aligned_folded_ms``): BN folded into the convs of
  both, the delivered model's convs grown to a multiple of ``ALIGN`` filters with exactly-zero
  ones (``prune.compact.align_kept``; the same function), the form the GPU check and the exports
  time. Odd widths run far slower than the next multiple of 8 in cuDNN's and oneDNN's kernels, so
  this is the speed-up a deployment gets. Fewer rounds (``ALIGNED_REPEATS``): growing the model
  back needs its dense twin (``prune.expand``; measured 1-2 s of CPU for a ResNet-50/101), and
  the figure is the secondary one. ``aligned_error`` instead when the aligned model cannot be
  built.

The theoretical speed-up is result.json's ``baseline_conv_macs / conv_macs``; ``python -m
repro.bench.latency`` studies the gap between the two.
"""
from __future__ import annotations

import copy
import statistics

import torch
from torch import nn

from repro.models import build_model
from repro.models.fold import fold_bn
from repro.prune.expand import expand_aligned
from repro.timing import time_interleaved

from .precision import Precision

BATCH = {"cuda": 64, "cpu": 8}
REPEATS = {"cuda": 20, "cpu": 7}  # timed rounds, after WARMUP untimed ones
WARMUP = 3
ALIGN = 8
# The aligned + folded pair: on a GPU as many rounds as above (cheap there); on a CPU 1 warm-up
# and 3 rounds, enough for a median that says which side of 1 the ratio is on.
ALIGNED_REPEATS = {"cuda": 20, "cpu": 3}
ALIGNED_WARMUP = {"cuda": 3, "cpu": 1}


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def aligned(delivered: nn.Module, arch: str, multiple: int = ALIGN) -> nn.Module:
    """The delivered model with every conv grown to a multiple of ``multiple`` filters (exactly-zero
    ones added back; the same function), eval mode, on the CPU. A model whose convs are all
    multiples already (a dense one) is returned as a copy without building its dense twin."""
    convs = [m for m in delivered.modules() if isinstance(m, nn.Conv2d)]
    if all(m.out_channels % multiple == 0 for m in convs):
        return copy.deepcopy(delivered).cpu().eval()
    return expand_aligned(delivered, arch, multiple)


def _medians(times: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(ts) * 1e3 for name, ts in times.items()}


def measure(delivered: nn.Module, arch: str, num_classes: int, device: torch.device, precision: Precision,
            resolution: int) -> dict:
    """{"dense_ms", "delivered_ms", "device", "batch", "threads", "precision", "repeats",
    "resolution", "folded_dense_ms", "aligned_folded_ms" (or "aligned_error"), "align",
    "aligned_repeats"}: median milliseconds per batch of each model. ``delivered`` is not modified."""
    kind = device.type if device.type in BATCH else "cpu"
    batch, repeats = BATCH[kind], REPEATS[kind]
    dense = build_model(arch, num_classes=num_classes)
    x = precision.prep(torch.randn(batch, 3, resolution, resolution, device=device))

    def forward(model: nn.Module):
        model = precision.on_device(model, device).eval()

        def run(inp: torch.Tensor) -> torch.Tensor:
            with precision.autocast():
                return model(inp)
        return run

    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    ms = _medians(time_interleaved({"dense": (forward(copy.deepcopy(dense)), x),
                                    "delivered": (forward(copy.deepcopy(delivered)), x)},
                                   repeats, warmup=WARMUP, sync=sync))
    out = {"dense_ms": ms["dense"], "delivered_ms": ms["delivered"], "device": device_name(device), "batch": batch,
           "threads": torch.get_num_threads(), "precision": precision.delivered_name, "repeats": repeats,
           "resolution": resolution, "align": ALIGN, "aligned_repeats": ALIGNED_REPEATS[kind]}
    try:
        grown = aligned(delivered, arch)
    except Exception as e:  # noqa: BLE001 - the secondary figure: recorded, never fatal
        out["aligned_error"] = f"{type(e).__name__}: {e}".splitlines()[0]
        return out
    ms = _medians(time_interleaved({"dense": (forward(fold_bn(dense)), x), "aligned": (forward(fold_bn(grown)), x)},
                                   ALIGNED_REPEATS[kind], warmup=ALIGNED_WARMUP[kind], sync=sync))
    out.update(folded_dense_ms=ms["dense"], aligned_folded_ms=ms["aligned"])
    return out
