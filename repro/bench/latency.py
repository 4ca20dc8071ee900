"""Measured CPU latency of dense vs compact SFP models, against the theoretical (MACs) speed-up.

    python -m repro.bench.latency [--archs resnet50,...] [--rates 0.3,0.4] [--batch 8] [--threads 1]
                                  [--repeats 7] [--pipeline eager] [--align 8] [--json]

For every model and rate: random weights with non-trivial BN statistics, SFP masks (L2), hard
pruning, the compact model; then dense, compact and (``--align``) the channel-aligned compact
model are timed INTERLEAVED (one forward of each per round, rotating the order), so load from
other processes hits all of them alike; medians (and minima) over the rounds are reported.

Every model gets the same inference pipeline (``--pipeline``):
  eager       BN folded into the conv, channels_last weights and input, torch.inference_mode,
              residual adds in place (``StreamWrite.inplace``, dense and compact alike)
  eager-nchw  the same in NCHW
  jit         eager's model, torch.jit.trace + torch.jit.freeze (channels_last)
``theoretical_speedup`` = dense conv MACs / compact conv MACs (exact widths, full-width
streams: the FLOPs tool's integer count). ``speedup`` = dense time / compact time;
``speedup_aligned`` = dense time / aligned-compact time, the aligned model keeping a multiple of
``--align`` filters per conv (pruned, exactly-zero filters added back; ``prune.compact.align_kept``)
because oneDNN's channels_last kernels run odd widths up to 2x slower. Its extra MACs are NOT
credited: its ratio is still taken against the exact-width theoretical speed-up.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..flops import count, spec_conv_macs, uniform_spec
from ..models import ARCHS, arch_info, build_model, check_resolution
from ..models.common import StreamWrite
from ..models.spec import kept_filters
from ..prune.compact import align_kept, build_compact
from ..prune.hard import hard_prune
from ..prune.sfp import SoftFilterPruner

PIPELINES = ("eager", "eager-nchw", "jit")


@torch.no_grad()
def randomize_bn_(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Non-trivial BN state, so BN(0) != 0 and every test of exactness means something.

    The ranges keep a random 101-layer ResNet's outputs O(1) in eval mode.
    """
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            m.weight.copy_(torch.rand(n, generator=generator) * 0.5 + 0.25)
            m.bias.copy_(torch.randn(n, generator=generator) * 0.1)
    return model


@dataclass
class Demo:
    arch: str
    prune: float
    soft: nn.Module      # SFP-masked dense model (conv weights zeroed only)
    hard: nn.Module      # hard-pruned dense model: the delivered function
    compact: nn.Module   # exact-width compact model
    kept: dict


def demo(arch: str, prune: float, *, seed: int = 0, masks: dict | None = None) -> Demo:
    """Random dense model -> SFP masks -> hard prune -> compact (all in eval mode).

    ``masks``: a ``SoftFilterPruner.state_dict()`` to use instead of fresh L2 masks.
    """
    kept_filters(1, prune)  # validates the rate: one clear error before any work
    torch.manual_seed(seed)
    dense = randomize_bn_(build_model(arch), torch.Generator().manual_seed(seed)).eval()
    pruner = SoftFilterPruner(dense, arch, prune)
    if masks is None:
        pruner.update()
    else:
        pruner.load_state_dict(masks)
        pruner.apply()
    kept = pruner.kept_indices()
    hard = hard_prune(copy.deepcopy(dense), arch, kept)
    return Demo(arch, prune, dense, hard, build_compact(hard, arch, kept).eval(), kept)


def fold_bn(model: nn.Module) -> nn.Module:
    """An eval-mode copy with every BatchNorm2d folded into the conv registered right before it."""
    model = copy.deepcopy(model).eval()
    prev: tuple[str, nn.Conv2d] | None = None
    for name, m in list(model.named_modules()):
        if isinstance(m, nn.Conv2d):
            prev = (name, m)
        elif isinstance(m, nn.BatchNorm2d):
            if prev is None or prev[1].out_channels != m.num_features:
                raise ValueError(f"cannot fold BN '{name}': no matching conv right before it")
            cname, conv = prev
            for full, new in ((cname, fuse_conv_bn_eval(conv, m)), (name, nn.Identity())):
                parent, _, leaf = full.rpartition(".")
                setattr(model.get_submodule(parent) if parent else model, leaf, new)
            prev = None
    return model


def prepare(model: nn.Module, x: torch.Tensor, pipeline: str) -> tuple[Callable, torch.Tensor]:
    """(callable, input) with the inference pipeline applied (see the module docstring)."""
    if pipeline not in PIPELINES:
        raise ValueError(f"unknown pipeline '{pipeline}'; known: {', '.join(PIPELINES)}")
    folded = fold_bn(model)
    for m in folded.modules():  # in-place residual adds (torchvision's `out += identity`) for all
        if isinstance(m, StreamWrite):
            m.inplace = True
    if pipeline == "eager-nchw":
        return folded, x.contiguous()
    folded = folded.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
    if pipeline == "jit":
        with torch.no_grad():
            folded = torch.jit.freeze(torch.jit.trace(folded, x))
    return folded, x


def time_interleaved(runs: dict[str, tuple[Callable, torch.Tensor]], repeats: int, warmup: int = 2,
                     progress: Callable[[str], None] | None = None,
                     sync: Callable[[], None] = lambda: None) -> dict[str, list[float]]:
    """Seconds per forward for each entry, measured in alternating rounds (A/B/C, B/C/A, ...).
    ``sync``: waits for the device (``torch.cuda.synchronize`` on a GPU) before and after each."""
    names = list(runs)
    times: dict[str, list[float]] = {n: [] for n in names}
    with torch.inference_mode():
        for r in range(warmup + repeats):
            order = names[r % len(names):] + names[:r % len(names)]
            for n in order:
                fn, x = runs[n]
                sync()
                t0 = time.perf_counter()
                fn(x)
                sync()
                dt = time.perf_counter() - t0
                if r >= warmup:
                    times[n].append(dt)
            if progress:
                progress(f"round {r + 1}/{warmup + repeats}")
    return times


def max_abs_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((a.eval()(x) - b.eval()(x)).abs().max())


def measure(arch: str, prune: float, *, batch: int = 8, resolution: int | None = None, repeats: int = 7,
            threads: int = 1, pipeline: str = "eager", align: int = 8, seed: int = 0, masks: dict | None = None,
            models: Demo | None = None, progress: Callable[[str], None] | None = None) -> dict:
    """Everything ``python -m repro.demos.compact`` reports, as a JSON-ready dict.

    ``models``: an already built ``demo(arch, prune, seed=seed, masks=masks)`` to measure.
    """
    resolution = resolution or arch_info(arch).resolution
    check_resolution(arch, resolution)
    if batch < 1 or repeats < 1 or threads < 1:
        raise ValueError("--batch, --repeats and --threads must be >= 1")
    torch.set_num_threads(threads)
    say = progress or (lambda _msg: None)
    if models is None:
        say(f"{arch} @ {prune:.0%}: building dense, hard-pruned and compact models")
    d = models or demo(arch, prune, seed=seed, masks=masks)
    x = torch.randn(batch, 3, resolution, resolution, generator=torch.Generator().manual_seed(seed + 1))
    dense_c, compact_c = count(d.hard, resolution), count(d.compact, resolution)
    out = {
        "arch": arch, "prune": prune, "batch": batch, "resolution": resolution, "threads": threads,
        "repeats": repeats, "pipeline": pipeline, "align": align,
        "max_abs_diff": max_abs_diff(d.hard, d.compact, x),
        # How far the merely masked (soft) model is from the delivered one: the BN(0) constants.
        "soft_vs_hard_max_abs_diff": max_abs_diff(d.soft, d.hard, x),
        "dense_conv_macs": dense_c.conv_macs, "compact_conv_macs": compact_c.conv_macs,
        "integer_count_conv_macs": spec_conv_macs(arch, uniform_spec(arch, prune), resolution)
        if masks is None else None,
        "dense_params": dense_c.params, "compact_params": compact_c.params,
        "theoretical_speedup": dense_c.conv_macs / compact_c.conv_macs,
    }
    models = {"dense": d.hard, "compact": d.compact}
    if align > 1:
        aligned = build_compact(d.hard, arch, align_kept(arch, d.kept, align)).eval()
        out["max_abs_diff_aligned"] = max_abs_diff(d.hard, aligned, x)
        out["aligned_conv_macs"] = count(aligned, resolution).conv_macs
        models["aligned"] = aligned
    say(f"{arch} @ {prune:.0%}: preparing the '{pipeline}' pipeline")
    runs = {name: prepare(m, x, pipeline) for name, m in models.items()}
    with torch.no_grad():  # the pipeline itself must not change the function
        ref = d.hard(x)
        out["pipeline_max_abs_diff"] = max(float((fn(xx) - ref).abs().max()) for fn, xx in runs.values())
    load_before = os.getloadavg()[0]
    times = time_interleaved(runs, repeats, progress=lambda m: say(f"{arch} @ {prune:.0%}: timing {m}"))
    out["loadavg_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    for name, ts in times.items():
        out[f"{name}_ms"] = statistics.median(ts) * 1e3
        out[f"{name}_ms_min"] = min(ts) * 1e3
    out["speedup"] = out["dense_ms"] / out["compact_ms"]
    out["speedup_over_theoretical"] = out["speedup"] / out["theoretical_speedup"]
    if align > 1:
        out["speedup_aligned"] = out["dense_ms"] / out["aligned_ms"]
        out["speedup_aligned_over_theoretical"] = out["speedup_aligned"] / out["theoretical_speedup"]
    return out


def _table(rows: list[dict]) -> str:
    from tabulate import tabulate
    cols = [("arch", "arch"), ("prune", "prune"), ("theoretical_speedup", "theory"),
            ("dense_ms", "dense ms"), ("compact_ms", "compact ms"), ("speedup", "speedup"),
            ("speedup_over_theoretical", "ratio"), ("aligned_ms", "aligned ms"),
            ("speedup_aligned", "speedup(al)"), ("speedup_aligned_over_theoretical", "ratio(al)"),
            ("max_abs_diff", "max|diff|"), ("loadavg_1min", "load")]
    cols = [(k, h) for k, h in cols if any(k in r for r in rows)]
    return tabulate([[r.get(k) for k, _ in cols] for r in rows], headers=[h for _, h in cols],
                    floatfmt=".3g")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m repro.bench.latency", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", default=",".join(ARCHS), help="comma-separated (default: all eight)")
    ap.add_argument("--rates", default="0.3,0.4", help="comma-separated prune rates (default 0.3,0.4)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=7, help="timed rounds per model (median reported)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    ap.add_argument("--pipeline", choices=PIPELINES, default="eager")
    ap.add_argument("--align", type=int, default=8, help="also time the compact model aligned to this "
                    "many filters per conv (1 = off)")
    ap.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    args = ap.parse_args(argv)
    try:
        archs = [a.strip() for a in args.archs.split(",") if a.strip()]
        for a in archs:
            arch_info(a)
        rates = [float(r) for r in args.rates.split(",")]
        for r in rates:
            kept_filters(1, r)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = []
    for arch in archs:
        for rate in rates:
            row = measure(arch, rate, batch=args.batch, repeats=args.repeats, threads=args.threads,
                          pipeline=args.pipeline, align=args.align,
                          progress=lambda m: print(m, file=sys.stderr, flush=True))
            rows.append(row)
            if args.json:
                print(json.dumps(row), flush=True)
    if not args.json:
        print(f"batch {args.batch}, {args.threads} thread(s), pipeline '{args.pipeline}', medians of "
              f"{args.repeats} interleaved rounds; CIFAR models at 32 px, ImageNet at 224 px")
        print(_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
