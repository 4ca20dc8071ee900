"""CLI: SNF, abstract-level reimplementation (not the authors' code) on scikit-learn's digits.

    python -m repro.demos.snf_digits --arch resnet56 --flops-reduction 52.94 --data digits [--json]
        [--checkpoint PATH] [--seed S] [--epochs E] [--finetune-epochs F] [--uniform | --compare] [--variant V]

Trains a dense baseline briefly on digits (``repro.data.digits``: 8x8 scans upsampled to 32x32 RGB; or loads
``--checkpoint``), measures sensitivity curves on a held-out split that training never sees,
searches the kept counts under the FLOPs target (``repro.prune.snf``), builds the compact model,
fine-tunes it at a tenth of the learning rate and reports accuracies, the achieved reduction,
per-layer kept counts and wall times. ``--uniform`` runs the uniform-rate baseline instead;
``--compare`` runs uniform first, then SNF at the reduction uniform actually achieved (so SNF never
gets more MACs than uniform), both from the same baseline and with the same fine-tuning.

Training here is a small self-contained SGD loop (Nesterov, weight decay, cosine schedule) so
the search can be tried in a minute on a CPU; real runs go through ``repro.train`` with
``prune.method=snf``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..models import ARCHS, build_model
from ..prune.knapsack import InfeasibleError
from ..prune.sensitivity import LABEL
from ..prune.snf import DEFAULT_GRID, DEFAULT_TOLERANCE, InfeasibleTargetError, check_reachable
from ..prune.snf_variants import DEFAULT_VARIANT, VARIANTS, snf_prune

RESOLUTION = 32


# --------------------------------------------------------------------------------------------
# Data: digits, fixed split (independent of --seed so every seed is scored on the same images)
@dataclass
class Digits:
    train: tuple[torch.Tensor, torch.Tensor]
    heldout: tuple[torch.Tensor, torch.Tensor]   # for the sensitivity curves only
    val: tuple[torch.Tensor, torch.Tensor]       # for the reported accuracies only


def load_digits(heldout: int = 180) -> Digits:
    """The suite's digits rendering and split (``repro.data.digits``: 32x32 RGB, 1,437 train / 360
    val, the trainer's own val set), normalised with ``repro.data.stats``. ``heldout`` images are
    taken out of the training split (stratified, fixed seed 0) for the sensitivity curves only."""
    from sklearn.model_selection import train_test_split

    from ..data.digits import read_split
    from ..data.stats import DIGITS_MEAN, DIGITS_STD

    mean = torch.tensor(DIGITS_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(DIGITS_STD).view(1, 3, 1, 1)

    def tensors(split):
        images, labels = read_split(split)
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0)
        return ((x - mean) / std).contiguous(), torch.from_numpy(labels).long()

    x, y = tensors("train")
    if not 10 <= heldout <= len(y) // 2:
        raise ValueError(f"--heldout must be between 10 and {len(y) // 2} images, got {heldout}")
    train_idx, held_idx = train_test_split(torch.arange(len(y)).numpy(), test_size=heldout,
                                           stratify=y.numpy(), random_state=0)
    train_idx, held_idx = torch.from_numpy(train_idx), torch.from_numpy(held_idx)
    return Digits((x[train_idx], y[train_idx]), (x[held_idx], y[held_idx]), tensors("val"))


def batches(data: tuple[torch.Tensor, torch.Tensor], size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    x, y = data
    return [(x[i:i + size], y[i:i + size]) for i in range(0, len(y), size)]


# --------------------------------------------------------------------------------------------
# A small SGD loop (the suite's trainer is repro.train; this keeps the CLI self-contained)
def _shift(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Random translation by up to ``pad`` pixels (pad with zeros, random crop); no flips: digits."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def train(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], *, epochs: int, lr: float,
          batch_size: int, seed: int, weight_decay: float = 5e-4, desc: str = "train",
          progress: bool | None = None) -> None:
    """SGD (momentum 0.9, Nesterov, weight decay) with a per-step cosine schedule from ``lr``."""
    if epochs <= 0:
        return
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(seed)
    x, y = data
    steps = epochs * math.ceil(len(y) / batch_size)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    model.train()
    with tqdm(total=steps, desc=desc, unit="step", disable=(not progress) if progress is not None else None) as bar:
        for _ in range(epochs):
            order = torch.randperm(len(y), generator=gen)
            for i in range(0, len(y), batch_size):
                idx = order[i:i + batch_size]
                loss = F.cross_entropy(model(_shift(x[idx], 2, gen)), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
                bar.update()
    model.eval()


def train_baseline(arch: str, data: Digits, *, seed: int, epochs: int, lr: float, batch_size: int,
                   progress: bool | None = None) -> nn.Module:
    """The dense baseline: seeded init, then ``train``."""
    torch.manual_seed(seed)
    model = build_model(arch, num_classes=10)
    train(model, data.train, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
          desc=f"baseline {arch}", progress=progress)
    return model


def save_state(model: nn.Module, path: str) -> None:
    """The dense state dict, written atomically (temp file in the same folder, then rename)."""
    from ..io import atomic_torch_save

    atomic_torch_save(path, model.state_dict())


@torch.no_grad()
def accuracy(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], batch_size: int = 256) -> float:
    model.eval()
    hits = sum((model(x).argmax(1) == y).sum().item() for x, y in batches(data, batch_size))
    return 100.0 * hits / len(data[1])


@torch.no_grad()
def recalibrated_accuracy(model: nn.Module, train_data, val_data, batch_size: int = 128) -> float:
    """Val accuracy of a copy of ``model`` whose BN running statistics were re-estimated on the
    training images (exact average over one pass, no weight change). Right after pruning, the stale
    statistics alone can ruin accuracy; this separates the choice of filters from that effect."""
    import copy

    twin = copy.deepcopy(model)
    for m in twin.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the pass
    twin.train()
    for x, _ in batches(train_data, batch_size):
        twin(x)
    return accuracy(twin, val_data)


def load_checkpoint(model: nn.Module, path: str) -> None:
    """A dense state dict, or a dict holding one under 'model' / 'state_dict' (DDP prefixes ok)."""
    from ..io import load_dense_weights, load_torch_file

    load_dense_weights(model, load_torch_file(path, "checkpoint"), f"checkpoint {path}")


# --------------------------------------------------------------------------------------------
def _parse(argv):
    p = argparse.ArgumentParser(
        prog="python -m repro.demos.snf_digits",
        description=f"{LABEL} (not the authors' code): search the number of filters per layer under a "
                    "conv-MACs target, prune with the L2 criterion, build the compact model and fine-tune, "
                    "on scikit-learn's digits (upsampled to 32x32 RGB). Prints the achieved reduction, "
                    "per-layer kept counts and the search's wall time.")
    p.add_argument("--arch", required=True, choices=list(ARCHS), metavar="ARCH", help=f"one of {', '.join(ARCHS)}")
    p.add_argument("--flops-reduction", type=float, required=True, metavar="PCT",
                   help="target conv-MACs reduction in percent, in (0, 100); SNF lands within "
                        f"[PCT, PCT + {DEFAULT_TOLERANCE}]")
    p.add_argument("--data", default="digits", choices=["digits"],
                   help="data set (only digits here; CIFAR/ImageNet runs use python -m repro.train "
                        "prune.method=snf)")
    p.add_argument("--checkpoint", help="dense baseline to load instead of training one "
                                        "(state dict, or a dict with 'model'/'state_dict')")
    p.add_argument("--save-checkpoint", metavar="PATH",
                   help="write the trained baseline's state dict here (atomically) for reuse with --checkpoint")
    p.add_argument("--seed", type=int, default=0, help="seed for init, data order and augmentation (default 0)")
    p.add_argument("--epochs", type=int, default=10, help="baseline training epochs (default 10; ignored with --checkpoint)")
    p.add_argument("--finetune-epochs", type=int, default=3,
                   help="fine-tuning epochs after pruning, at lr/10 (config key prune.finetune_epochs; default 3)")
    p.add_argument("--lr", type=float, default=0.05, help="baseline peak learning rate, cosine schedule (default 0.05)")
    p.add_argument("--batch-size", type=int, default=64, help="training batch size (default 64)")
    p.add_argument("--heldout", type=int, default=180,
                   help="digits images held out from training for the sensitivity curves (default 180)")
    p.add_argument("--grid", type=float, nargs="+", default=list(DEFAULT_GRID), metavar="F",
                   help="keep fractions measured per layer (default %(default)s; the full width is implied)")
    p.add_argument("--cache-dir", help="sensitivity cache (default $PRUNEREPRO_CACHE/snf or ~/.cache/prunerepro/snf)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--uniform", action="store_true",
                      help="uniform-rate baseline instead of SNF: one prune rate for every conv, the "
                           "smallest meeting the target (bisection on the real integer MACs)")
    mode.add_argument("--compare", action="store_true",
                      help="uniform first, then SNF at the reduction uniform achieved; same baseline "
                           "and fine-tuning")
    p.add_argument("--variant", choices=list(VARIANTS), default=DEFAULT_VARIANT,
                   help="the SNF search (default %(default)s; docs/snf_search.md compares them)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def run(args) -> dict:
    # Every target error is raised here, before minutes of training and sensitivity sweeps.
    if args.uniform or args.compare:
        check_reachable(args.arch, args.flops_reduction, None, RESOLUTION)
    if not args.uniform:
        check_reachable(args.arch, args.flops_reduction, args.grid, RESOLUTION)
    if args.epochs < 0 or args.finetune_epochs < 0:
        raise ValueError("--epochs and --finetune-epochs must be >= 0")
    progress = False if args.no_progress else None
    data = load_digits(heldout=args.heldout)
    t0 = time.perf_counter()
    if args.checkpoint:
        model = build_model(args.arch, num_classes=10)
        load_checkpoint(model, args.checkpoint)
    else:
        model = train_baseline(args.arch, data, seed=args.seed, epochs=args.epochs, lr=args.lr,
                               batch_size=args.batch_size, progress=progress)
        if args.save_checkpoint:
            save_state(model, args.save_checkpoint)
    out = {"label": LABEL, "arch": args.arch, "data": "digits", "seed": args.seed,
           "target_reduction": args.flops_reduction, "checkpoint": args.checkpoint,
           "baseline_epochs": None if args.checkpoint else args.epochs,
           "finetune_epochs": args.finetune_epochs, "lr": args.lr, "finetune_lr": args.lr / 10,
           "train_images": len(data.train[1]), "heldout_images": len(data.heldout[1]),
           "val_images": len(data.val[1]), "baseline_train_s": round(time.perf_counter() - t0, 1),
           "baseline_val_top1": accuracy(model, data.val), "runs": []}
    methods = ["uniform", "snf"] if args.compare else ["uniform"] if args.uniform else ["snf"]
    target = args.flops_reduction
    for method in methods:
        compact, spec, report = snf_prune(
            model, args.arch, batches(data.heldout, 128), target, grid=args.grid, uniform=method == "uniform",
            resolution=RESOLUTION, cache_dir=args.cache_dir, progress=progress, variant=args.variant)
        report["pruned_val_top1"] = accuracy(compact, data.val)
        report["pruned_bn_recal_val_top1"] = recalibrated_accuracy(compact, data.train, data.val)
        t1 = time.perf_counter()
        train(compact, data.train, epochs=args.finetune_epochs, lr=args.lr / 10, batch_size=args.batch_size,
              seed=args.seed + 1, desc=f"fine-tune {method}", progress=progress)
        report["finetune_s"] = round(time.perf_counter() - t1, 1)
        report["val_top1"] = accuracy(compact, data.val)
        report["top1_drop"] = out["baseline_val_top1"] - report["val_top1"]
        out["runs"].append(report)
        if method == "uniform" and args.compare:
            # SNF gets at most the MACs uniform actually used (it lands in [r, r + tol]).
            exact = 100.0 * (1.0 - report["conv_macs"] / report["baseline_conv_macs"])
            target = math.ceil(exact * 1e4) / 1e4
    return out


def _print(out: dict) -> None:
    from tabulate import tabulate

    print(f"{out['label']} (not the authors' code) -- {out['arch']} on digits, seed {out['seed']}")
    origin = f"loaded from {out['checkpoint']}" if out["checkpoint"] else f"{out['baseline_epochs']} epochs"
    print(f"baseline: {origin}, val top-1 {out['baseline_val_top1']:.2f}% "
          f"({out['val_images']} val images; {out['heldout_images']} held out for the sensitivity curves)")
    runs = out["runs"]
    kept = [[name] + [r["kept"][name] for r in runs] for name in runs[0]["kept"]]
    print(tabulate(kept, headers=["conv"] + [f"kept ({r['method']})" for r in runs], disable_numparse=True))
    rows = []
    for r in runs:
        rows.append([r["method"], f"{r['target_reduction']:.2f}", f"{r['flops_reduction']:.2f}",
                     f"{r['conv_macs']:,}", "" if r["uniform_rate"] is None else f"{r['uniform_rate']:.4f}",
                     f"{r['search_wall_s']:.2f}", "" if "sensitivity_wall_s" not in r else
                     f"{r['sensitivity_wall_s']:.1f}{' (cached)' if r['sensitivity_cached'] else ''}",
                     f"{r['pruned_val_top1']:.2f}", f"{r['pruned_bn_recal_val_top1']:.2f}", f"{r['val_top1']:.2f}",
                     f"{r['top1_drop']:+.2f}"])
    print()
    print(tabulate(rows, headers=["method", "target %", "achieved %", "conv MACs", "rate", "search s",
                                  "sensitivity s", "top-1 pruned", "pruned, BN re-estimated",
                                  f"top-1 +{out['finetune_epochs']} ep ft",
                                  "drop"], disable_numparse=True))
    print(f"\nbaseline conv MACs {runs[0]['baseline_conv_macs']:,} at 32x32; reduction counted on the built "
          "compact model; search s = DP + MACs verification, sensitivity s = the curves (cached on rerun).")


def main(argv=None) -> int:
    args = _parse(argv)
    try:
        out = run(args)
    except (InfeasibleTargetError, InfeasibleError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        _print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
