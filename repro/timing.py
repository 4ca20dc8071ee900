"""The interleaved timer every latency figure of the project is measured with (the trainer's
result.json ``latency``, ``python -m repro.demos.compact``, the benchmarks, the GPU check).

Entries are timed in alternating rounds (A/B/C, B/C/A, ...), so load from other processes hits all
of them alike. Nothing of the project is imported here: the engine, the demos and the benchmarks
all sit above it.
"""
from __future__ import annotations

import time
from typing import Callable

import torch


def time_interleaved(runs: dict[str, tuple[Callable, torch.Tensor]], repeats: int, warmup: int = 2,
                     progress: Callable[[str], None] | None = None,
                     sync: Callable[[], None] = lambda: None, iters: int = 1) -> dict[str, list[float]]:
    """Seconds per forward ``fn(x)`` of each entry ``name: (fn, x)``, one value per timed round, after
    ``warmup`` untimed rounds. ``sync``: waits for the device (``torch.cuda.synchronize`` on a GPU)
    before and after each entry's turn; ``iters``: forwards per turn (the value is their mean)."""
    names = list(runs)
    times: dict[str, list[float]] = {n: [] for n in names}
    with torch.inference_mode():
        for r in range(warmup + repeats):
            order = names[r % len(names):] + names[:r % len(names)]
            for n in order:
                fn, x = runs[n]
                sync()
                t0 = time.perf_counter()
                for _ in range(iters):
                    fn(x)
                sync()
                dt = (time.perf_counter() - t0) / iters
                if r >= warmup:
                    times[n].append(dt)
            if progress:
                progress(f"round {r + 1}/{warmup + repeats}")
    return times
