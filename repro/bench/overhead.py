"""Cost of one SFP mask update relative to one training epoch (ResNet-56, 10k CIFAR-sized images).

    python -m repro.bench.overhead [--arch resnet56] [--images 10000] [--batch 128] [--steps 10]
                                   [--full-epoch] [--updates 20] [--threads 1] [--json]

The epoch is a plain SGD loop (momentum 0.9, Nesterov, weight decay 5e-4: SFP's CIFAR recipe)
over RANDOM tensors of CIFAR shape on this CPU, no data loading: a lower bound on a real epoch,
so the reported ratio is an upper bound on the real overhead. By default ``--steps`` steps are
timed and the epoch time is extrapolated to ceil(images / batch) steps; ``--full-epoch`` times
every step. One mask update = ``SoftFilterPruner.update()`` (L2 scores, ranking and zeroing of
every prunable conv), timed ``--updates`` times; medians are reported.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import torch
from torch import nn

from ..models import arch_info, build_model
from ..prune.sfp import SoftFilterPruner


def measure(arch: str = "resnet56", images: int = 10_000, batch: int = 128, steps: int = 10,
            full_epoch: bool = False, updates: int = 20, threads: int = 1, rate: float = 0.4,
            progress=None) -> dict:
    info = arch_info(arch)
    if min(images, batch, steps, updates, threads) < 1:
        raise ValueError("--images, --batch, --steps, --updates and --threads must be >= 1")
    torch.set_num_threads(threads)
    say = progress or (lambda _m: None)
    torch.manual_seed(0)
    model = build_model(arch).train()
    pruner = SoftFilterPruner(model, arch, rate)
    pruner.update()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    res = info.resolution
    epoch_steps = math.ceil(images / batch)
    timed = epoch_steps if full_epoch else min(steps, epoch_steps)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, res, res, generator=gen)
    y = torch.randint(0, info.num_classes, (batch,), generator=gen)
    step_s = []
    for i in range(timed + 1):  # step 0 is warm-up (allocator, first-call costs)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if i:
            step_s.append(time.perf_counter() - t0)
        say(f"train step {i}/{timed}")
    update_s = []
    for _ in range(updates):
        t0 = time.perf_counter()
        pruner.update()
        update_s.append(time.perf_counter() - t0)
    step = statistics.median(step_s)
    epoch = sum(step_s) if full_epoch else step * epoch_steps
    update = statistics.median(update_s)
    return {"arch": arch, "images": images, "batch": batch, "threads": threads, "rate": rate,
            "epoch_steps": epoch_steps, "timed_steps": timed, "epoch_extrapolated": not full_epoch,
            "step_s_median": step, "epoch_s": epoch, "update_ms_median": update * 1e3,
            "update_ms_min": min(update_s) * 1e3, "update_over_epoch_percent": 100 * update / epoch,
            "data": "random tensors of CIFAR shape, plain SGD loop, no data loading"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m repro.bench.overhead", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 2)[2],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet56")
    ap.add_argument("--images", type=int, default=10_000, help="images per epoch (default 10000)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10, help="steps timed to extrapolate the epoch")
    ap.add_argument("--full-epoch", action="store_true", help="time every step of the epoch instead")
    ap.add_argument("--updates", type=int, default=20, help="mask updates timed (median)")
    ap.add_argument("--rate", type=float, default=0.4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        r = measure(args.arch, args.images, args.batch, args.steps, args.full_epoch, args.updates, args.threads,
                    args.rate, progress=None if args.json else lambda m: print(m, file=sys.stderr, flush=True))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(r))
        return 0
    how = (f"extrapolated from {r['timed_steps']} timed steps" if r["epoch_extrapolated"]
           else "every step timed")
    print(f"{r['arch']}, {r['images']} images/epoch = {r['epoch_steps']} steps of batch {r['batch']}, "
          f"{r['threads']} thread(s); {r['data']}")
    print(f"  one training step (median): {r['step_s_median'] * 1e3:.1f} ms; epoch: {r['epoch_s']:.1f} s ({how})")
    print(f"  one SFP mask update at rate {r['rate']} (median of {args.updates}): {r['update_ms_median']:.2f} ms "
          f"(min {r['update_ms_min']:.2f} ms)")
    print(f"  update / epoch = {r['update_over_epoch_percent']:.4f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
