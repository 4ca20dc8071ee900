"""Build an SFP compact model from random weights, check it is exact, and time it against the dense one.

    python -m repro.demos.compact --arch resnet50 --prune 0.3 [--json] [--batch 8] [--resolution 224]
                            [--repeats 7] [--threads 1] [--pipeline eager] [--align 8]
                            [--masks FILE] [--save FILE]

Steps: random weights with non-trivial BN statistics (so BN(0) != 0); SFP masks by the L2
criterion (or the masks in --masks); hard pruning (zero the pruned filters' conv weights and BN
gamma/beta); the compact model. Reports ``max_abs_diff`` (compact vs hard-pruned, eval mode, on
random input), dense/compact conv MACs and parameters, and CPU latency of both (median of
``--repeats`` interleaved rounds, ``repro.timing``) with ``speedup`` and ``theoretical_speedup``.

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
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..flops import count, spec_conv_macs, uniform_spec
from ..models import ARCHS, arch_info, build_model, check_resolution
from ..models.common import StreamWrite
from ..models.fold import fold_bn  # noqa: F401 - part of this demo's API (tests, bench)
from ..models.spec import kept_filters
from ..prune.compact import align_kept, build_compact, save_compact
from ..prune.hard import hard_prune
from ..prune.sfp import SoftFilterPruner
from ..timing import time_interleaved

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


def _load_masks(path: str) -> dict:
    """A ``SoftFilterPruner.state_dict()``: saved alone, or under 'pruner' in a training checkpoint."""
    from ..io import load_torch_file

    state = load_torch_file(path, "--masks")
    if isinstance(state, dict) and isinstance(state.get("pruner"), dict):
        state = state["pruner"]
    if not isinstance(state, dict) or "masks" not in state:
        raise ValueError(f"--masks: {path} holds no SFP mask state (expected a pruner state dict)")
    return state


def _print_human(r: dict) -> None:
    g = 1e9
    print(f"{r['arch']} pruned {r['prune']:.0%}: batch {r['batch']}, {r['resolution']} px, "
          f"{r['threads']} thread(s), pipeline '{r['pipeline']}', load avg {r['loadavg_1min']}")
    print(f"  max_abs_diff (compact vs hard-pruned, eval): {r['max_abs_diff']:.3g}")
    print(f"  soft-masked vs hard-pruned (the BN(0) constants): {r['soft_vs_hard_max_abs_diff']:.3g}")
    print(f"  conv MACs: dense {r['dense_conv_macs'] / g:.4f} G, compact {r['compact_conv_macs'] / g:.4f} G"
          + (f" (FLOPs tool integer count {r['integer_count_conv_macs'] / g:.4f} G)"
             if r.get("integer_count_conv_macs") else ""))
    print(f"  params: dense {r['dense_params'] / 1e6:.3f} M, compact {r['compact_params'] / 1e6:.3f} M")
    print(f"  latency (median): dense {r['dense_ms']:.1f} ms, compact {r['compact_ms']:.1f} ms")
    print(f"  speedup {r['speedup']:.3f} vs theoretical_speedup {r['theoretical_speedup']:.3f} "
          f"(ratio {r['speedup_over_theoretical']:.3f})")
    if "aligned_ms" in r:
        print(f"  aligned to {r['align']} filters: {r['aligned_ms']:.1f} ms, {r['aligned_conv_macs'] / g:.4f} G MACs, "
              f"max_abs_diff {r['max_abs_diff_aligned']:.3g}; speedup {r['speedup_aligned']:.3f} "
              f"(ratio to the exact-width theoretical {r['speedup_aligned_over_theoretical']:.3f})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m repro.demos.compact", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 2)[2],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", required=True, help=f"one of: {', '.join(ARCHS)}")
    ap.add_argument("--prune", type=float, required=True, help="fraction of filters pruned per layer, in [0, 1)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--resolution", type=int, default=None, help="input size (default: 32 CIFAR, 224 ImageNet)")
    ap.add_argument("--repeats", type=int, default=7, help="timed rounds (median reported)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared machine "
                    "disturbs one thread less than two)")
    ap.add_argument("--pipeline", choices=PIPELINES, default="eager",
                    help="inference optimisations applied to dense and compact alike (default eager: "
                         "BN folded, channels_last, inference_mode, in-place residual adds)")
    ap.add_argument("--align", type=int, default=8, help="also time the compact model with each conv's width "
                    "rounded up to this multiple by exactly-zero filters (1 = off; default 8)")
    ap.add_argument("--masks", help="a SoftFilterPruner state dict (or a checkpoint with it under 'pruner') "
                    "to use instead of fresh L2 masks")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", help="also write the compact model here (repro.prune.compact.save_compact)")
    args = ap.parse_args(argv)
    try:
        check_resolution(args.arch, args.resolution or arch_info(args.arch).resolution)
        kept_filters(1, args.prune)
        for flag in ("batch", "repeats", "threads", "align"):
            if getattr(args, flag) < 1:
                raise ValueError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
        masks = _load_masks(args.masks) if args.masks else None
        torch.set_num_threads(args.threads)  # building, too: see measure() for why 1 is the default
        models = demo(args.arch, args.prune, seed=args.seed, masks=masks)
        if args.save:
            save_compact(args.save, models.compact)
        report = measure(args.arch, args.prune, batch=args.batch, resolution=args.resolution,
                         repeats=args.repeats, threads=args.threads, pipeline=args.pipeline, align=args.align,
                         seed=args.seed, masks=masks, models=models,
                         progress=None if args.json else lambda m: print(m, file=sys.stderr, flush=True))
    except ValueError as e:  # UnknownArchError, SpecError, MaskError are ValueErrors with one-line messages
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report))
    else:
        _print_human(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
