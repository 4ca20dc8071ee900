"""Measured CPU latency of dense vs compact SFP models, against the theoretical (MACs) speed-up.

    python -m repro.bench.latency [--archs resnet50,...] [--rates 0.3,0.4] [--batch 8] [--threads 1]
                                  [--repeats 7] [--pipeline eager] [--align 8] [--json]

For every model and rate: random weights with non-trivial BN statistics, SFP masks (L2), hard
pruning, the compact model; then dense, compact and (``--align``) the channel-aligned compact
model are timed INTERLEAVED (one forward of each per round, rotating the order), so load from
other processes hits all of them alike; medians (and minima) over the rounds are reported.
The models, the pipelines (``--pipeline``) and every figure are ``python -m repro.demos.compact``'s
(``repro.demos.compact.measure``); this benchmark runs it over many models and rates.
"""
from __future__ import annotations

import argparse
import json
import sys

from ..demos.compact import PIPELINES, measure
from ..models import ARCHS, arch_info
from ..models.spec import kept_filters


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
