"""Wall time of SNF's sensitivity sweep: 1,024-image forward chunks (the previous fixed setting)
against the CPU default (``cut_forward.default_max_batch``), on the same model and images.

    python -m repro.bench.sensitivity_speed [--arch resnet56] [--images 180] [--repeats 3]
        [--threads 1] [--bn eval] [--max-batch 1024 64]

The model is a randomly initialised ``--arch`` with BN statistics from one batch (timing does not
depend on the weights); the images are digits' held-out split (the first ``--images``), in batches
of 128 like ``python -m repro.demos.snf_digits``. Settings run interleaved, ``--repeats`` times each, and the
fastest time of each is reported (the machine is shared: the minimum is the least disturbed).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m repro.bench.sensitivity_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="resnet56")
    p.add_argument("--images", type=int, default=180)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--bn", default="eval", choices=["eval", "batch"])
    p.add_argument("--max-batch", type=int, nargs="+", default=[1024, 64],
                   help="forward-chunk sizes to compare (default: 1024 = before, 64 = the CPU default)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)

    from ..models import build_model
    from ..prune.sensitivity import measure
    from ..prune.snf import grid_counts
    from ..demos.snf_digits import batches, load_digits

    torch.manual_seed(0)
    model = build_model(a.arch, num_classes=10).train()
    x, y = load_digits(heldout=max(a.images, 10)).heldout
    held = batches((x[:a.images], y[:a.images]), 128)
    with torch.no_grad():
        model(held[0][0])
    model.eval()
    best = {mb: float("inf") for mb in a.max_batch}
    for _ in range(a.repeats):
        for mb in a.max_batch:
            t = time.perf_counter()
            measure(model, a.arch, held, grid_counts(a.arch), use_cache=False, progress=False, max_batch=mb, bn=a.bn)
            best[mb] = min(best[mb], time.perf_counter() - t)
    out = {"arch": a.arch, "images": a.images, "threads": a.threads, "bn": a.bn, "repeats": a.repeats,
           "points": sum(len(v) - 1 for v in grid_counts(a.arch).values()),
           "seconds": {str(mb): round(s, 2) for mb, s in best.items()}}
    if a.json:
        print(json.dumps(out))
    else:
        print(f"{a.arch}, {a.images} held-out images, {out['points']} grid points, {a.threads} thread(s), bn={a.bn}:")
        for mb, s in best.items():
            print(f"  max_batch {mb:>5}: {s:7.2f} s (fastest of {a.repeats})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
