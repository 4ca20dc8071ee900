"""Latency where users deploy: every backend, dense vs delivered (and aligned), interleaved.

Backends: ``eager`` (the nn.Module as ``load_compact`` rebuilds it: BN not folded), ``torchscript``
and ``onnxruntime-cpu`` (the exported graphs: BN folded), and ``onnxruntime-cuda`` where
onnxruntime's CUDA provider is installed (numpy input from the host, copies included). All NCHW
float32. The dense model of the same arch and head (random weights: time does not depend on the
values) goes through the same backends, so each ratio compares architectures on one backend.
Every (backend, model) pair of one batch size runs in the same interleaved rounds
(``repro.bench.latency.time_interleaved``: A/B/C, B/C/A, ...), so load from other processes hits
all alike; medians are recorded. torch and onnxruntime get the same thread count.
"""
from __future__ import annotations

import os
import statistics

import numpy as np
import torch

from repro.timing import time_interleaved
from repro.flops import count

from . import graphs

ORT_PROVIDERS = {"onnxruntime-cpu": "CPUExecutionProvider", "onnxruntime-cuda": "CUDAExecutionProvider"}
WHAT = {"eager": "the nn.Module from model.pt, BN not folded",
        "torchscript": "the exported file: BN folded, scripted, frozen",
        "onnxruntime-cpu": f"the exported file: BN folded, opset {graphs.OPSET}",
        "onnxruntime-cuda": "the exported file on the CUDA provider, numpy input from the host"}


def ort_backends() -> list[str]:
    import onnxruntime as ort
    return [b for b, p in ORT_PROVIDERS.items() if p in ort.get_available_providers()]


def _runner(backend: str, model: torch.nn.Module, files: dict[str, bytes], threads: int):
    """A callable taking a numpy batch, for ``model`` on ``backend``."""
    if backend == "eager":
        model = model.eval()
        return lambda a: model(torch.from_numpy(a))
    if backend == "torchscript":
        module, _facts = graphs.load_torchscript(files["torchscript"])
        return lambda a: module(torch.from_numpy(a))
    session = graphs.ort_session(files["onnx"], threads, ORT_PROVIDERS[backend])
    return lambda a: session.run(None, {graphs.INPUT: a})


def _round_batch(runs: dict, batch: int, resolution: int, repeats: int, warmup: int) -> dict[str, float]:
    x = torch.randn(batch, 3, resolution, resolution, generator=torch.Generator().manual_seed(batch)).numpy()
    times = time_interleaved({k: (fn, x) for k, fn in runs.items()}, repeats, warmup=warmup)
    return {k: statistics.median(ts) * 1e3 for k, ts in times.items()}


def _by_backend(medians: dict[str, float], backends: list[str], variants: list[str]) -> dict:
    out = {}
    for b in backends:
        row = {f"{v}_ms": medians[f"{b}/{v}"] for v in variants}
        for v in variants[1:]:
            row["speedup" if v == "delivered" else f"speedup_{v}"] = row["dense_ms"] / row[f"{v}_ms"]
        out[b] = row
    return out


def measure(models: dict[str, torch.nn.Module], files: dict[str, dict[str, bytes]], backends: list[str], *,
            resolution: int, batches: tuple[int, ...], threads: int, repeats: int, warmup: int = 2) -> dict:
    """``models``: {"dense", "delivered"[, "aligned"]} nn.Modules; ``files``: their exported bytes
    per format. Returns the latency record (JSON-ready), medians in ms per batch."""
    before_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        variants = list(models)
        runs = {f"{b}/{v}": _runner(b, models[v], files[v], threads) for b in backends for v in variants}
        load = os.getloadavg()[0]
        per_batch = {str(n): _by_backend(_round_batch(runs, n, resolution, repeats, warmup), backends, variants)
                     for n in batches}
    finally:
        torch.set_num_threads(before_threads)
    macs = {v: count(m, resolution).conv_macs for v, m in models.items()}
    return {"resolution": resolution, "batches": per_batch, "threads": threads, "repeats": repeats,
            "warmup": warmup, "statistic": "median ms per batch", "layout": "float32 NCHW",
            "backends": {b: WHAT[b] for b in backends},
            "conv_macs": macs, "theoretical_speedup": {v: macs["dense"] / macs[v] for v in variants[1:]},
            "loadavg_1min": [round(load, 2), round(os.getloadavg()[0], 2)],
            "numpy": np.__version__, "torch": torch.__version__}
