"""Build an SFP compact model from random weights, check it is exact, and time it against the dense one.

    python -m repro.demos.compact --arch resnet50 --prune 0.3 [--json] [--batch 8] [--resolution 224]
                            [--repeats 7] [--threads 1] [--pipeline eager] [--align 8]
                            [--masks FILE] [--save FILE]

Steps: random weights with non-trivial BN statistics (so BN(0) != 0); SFP masks by the L2
criterion (or the masks in --masks); hard pruning (zero the pruned filters' conv weights and BN
gamma/beta); the compact model. Reports ``max_abs_diff`` (compact vs hard-pruned, eval mode, on
random input), dense/compact conv MACs and parameters, and CPU latency of both (median of
``--repeats`` interleaved rounds, same inference pipeline for both: see repro/bench/latency.py)
with ``speedup`` and ``theoretical_speedup``.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from ..bench.latency import PIPELINES, demo, measure
from ..models import ARCHS, arch_info, check_resolution
from ..models.spec import kept_filters
from ..prune.compact import save_compact


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
