"""Does searching the number of filters per layer beat one uniform rate at equal FLOPs? (issue 17)

    python -m repro.bench.snf_search                      # the full sweep, resumable (hours on a CPU)
    python -m repro.bench.snf_search --quick --out DIR    # a miniature end to end (tests)
    python -m repro.bench.snf_search --report-only        # rebuild docs/snf_search.md from the results

SNF here is an abstract-level reimplementation (not the authors' code; docs/papers.md §7), run on
scikit-learn's digits (``repro.demos.snf_digits.load_digits``: 1,257 training images, 180 held out from them
for the search, the 360 validation images for every reported accuracy).

Protocol, identical for every method: one dense baseline per (arch, seed), trained once and
cached; for each FLOPs reduction, the uniform-rate model first (one rate for every conv, the
smallest meeting the nominal target; it overshoots), then every search variant
(``repro.prune.snf_variants``) at the reduction uniform actually achieved, so no variant gets
more conv MACs than uniform and each lands within 0.1 point above it. Every pruned model is
fine-tuned with the same schedule and data order (seeded by the baseline seed) and scored on the
validation set. One JSON line per (arch, reduction, seed, method) is appended to the results
file as soon as it is done; a rerun skips what is there (same protocol settings), so a crash
loses at most one run. The table (``snf_search_report``) pairs every variant with uniform seed by
seed.
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import itertools
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..models import build_model
from ..prune.sensitivity import LABEL
from ..prune.snf import DEFAULT_GRID, spec_weights
from ..prune.snf_variants import VARIANTS, snf_prune
from ..io import atomic_torch_save, load_torch_file
from .snf_search_report import setting_order, write_report
from ..demos.snf_digits import Digits, accuracy, batches, load_digits, recalibrated_accuracy, train, train_baseline

REPO = Path(__file__).resolve().parents[2]
DEFAULTS = dict(archs=("resnet20", "resnet56"), reductions=(50.0, 70.0), seeds=None, n_seeds=5,
                first_seed=1, variants=tuple(VARIANTS), baseline_epochs=20, finetune_epochs=10, lr=0.05, min_baseline=97.0,
                finetune_lr=0.005, batch_size=64, heldout=180, grid=DEFAULT_GRID)
# --quick: every code path on a slice of the data, seconds per run (the numbers mean nothing)
QUICK = dict(archs=("resnet20",), reductions=(50.0,), seeds=(0,), baseline_epochs=1, finetune_epochs=1,
             heldout=12, train_images=128, min_baseline=0.0)


def cache_root() -> Path:
    root = os.environ.get("PRUNEREPRO_CACHE") or Path.home() / ".cache" / "prunerepro"
    return Path(root) / "snf_search"


def protocol(a) -> dict:
    """The settings a result depends on; results under other settings are neither reused nor shown."""
    return {"baseline_epochs": a.baseline_epochs, "finetune_epochs": a.finetune_epochs, "lr": a.lr,
            "finetune_lr": a.finetune_lr, "batch_size": a.batch_size, "heldout": a.heldout,
            "grid": list(a.grid), "train_images": a.train_images}


def protocol_key(a) -> str:
    return hashlib.sha256(json.dumps(protocol(a), sort_keys=True).encode()).hexdigest()[:12]


def baseline(arch: str, seed: int, data: Digits, a, cache: Path, log) -> tuple[torch.nn.Module, dict]:
    """The dense baseline of one (arch, seed): trained once, then read from the cache."""
    key = hashlib.sha256(json.dumps({"arch": arch, "seed": seed, "epochs": a.baseline_epochs, "lr": a.lr,
                                     "batch": a.batch_size, "train": len(data.train[1]), "heldout": a.heldout},
                                    sort_keys=True).encode()).hexdigest()[:12]
    path = cache / "baselines" / f"{arch}-s{seed}-e{a.baseline_epochs}-{key}.pt"
    model = build_model(arch, num_classes=10)
    if path.exists():
        blob = load_torch_file(path, "cached baseline")
        model.load_state_dict(blob["state_dict"])
        return model.eval(), blob["info"]
    t0 = time.perf_counter()
    model = train_baseline(arch, data, seed=seed, epochs=a.baseline_epochs, lr=a.lr, batch_size=a.batch_size,
                           progress=False)
    info = {"train_s": round(time.perf_counter() - t0, 1), "val_top1": accuracy(model, data.val)}
    atomic_torch_save(path, {"state_dict": model.state_dict(), "info": info})
    log(f"baseline {arch} seed {seed}: val top-1 {info['val_top1']:.2f} ({info['train_s']} s)")
    return model.eval(), info


@torch.no_grad()
def val_loss(model, data: Digits) -> float:
    model.eval()
    x, y = data.val
    return F.cross_entropy(model(x), y).item()


def run_one(model, base_info, arch, reduction, seed, method, target, data: Digits, a, cache: Path) -> dict:
    """Prune (uniform or a search variant), fine-tune, score: one result line."""
    t0 = time.perf_counter()
    compact, _, report = snf_prune(model, arch, batches(data.heldout, 128), target, grid=a.grid,
                                   uniform=method == "uniform", variant=None if method == "uniform" else method,
                                   cache_dir=cache / "sensitivity", progress=False)
    search_s = time.perf_counter() - t0
    pruned = accuracy(compact, data.val)
    recal = recalibrated_accuracy(compact, data.train, data.val)
    t1 = time.perf_counter()
    train(compact, data.train, epochs=a.finetune_epochs, lr=a.finetune_lr, batch_size=a.batch_size,
          seed=seed + 1, progress=False)
    finetune_s = time.perf_counter() - t1
    top1 = accuracy(compact, data.val)
    return {"arch": arch, "reduction": reduction, "seed": seed, "method": method, "target": target,
            "flops_reduction": 100.0 * (1.0 - report["conv_macs"] / report["baseline_conv_macs"]),
            "conv_macs": report["conv_macs"], "conv_weights": spec_weights(arch, report["kept"]),
            "baseline_top1": base_info["val_top1"], "pruned_top1": pruned, "pruned_recal_top1": recal,
            "top1": top1, "val_loss": val_loss(compact, data), "drop": base_info["val_top1"] - top1,
            "search_s": round(search_s, 2), "finetune_s": round(finetune_s, 2),
            "sensitivity_cached": report.get("sensitivity_cached"), "kept": report["kept"],
            "uniform_rate": report.get("uniform_rate"), "label": LABEL,
            "baseline_train_s": base_info.get("train_s"), "finished_at": round(time.time(), 1)}


def read_results(path: Path, key: str | None = None) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
        if key is None or row.get("protocol_key") == key:
            rows.append(row)
    return rows


def append_result(path: Path, row: dict) -> None:
    """One line, appended under an exclusive lock (two sweeps, e.g. one per arch, may share a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps(row, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
        fcntl.flock(f, fcntl.LOCK_UN)


def equal_flops_target(row: dict) -> float:
    """The reduction uniform achieved, rounded up in the 4th decimal: a variant's MACs never exceed uniform's."""
    return math.ceil(row["flops_reduction"] * 1e4) / 1e4


def _log(line: str) -> None:
    print(line, flush=True)  # a sweep runs for hours, usually into a file: each line as it happens


def sweep(a, log=_log) -> list[dict]:
    torch.set_num_threads(a.threads)
    cache = Path(a.cache_dir) if a.cache_dir else cache_root()
    data = load_digits(heldout=a.heldout) if a.heldout >= 10 else None
    if data is None or a.train_images:
        full = load_digits(heldout=max(a.heldout, 10))
        n = a.train_images or len(full.train[1])
        data = Digits((full.train[0][:n], full.train[1][:n]), (full.heldout[0][:a.heldout], full.heldout[1][:a.heldout]),
                      full.val)
    key = protocol_key(a)

    def finished():  # re-read each time: several sweeps (e.g. one per arch or seed) may share the file
        return {(r["arch"], r["reduction"], r["seed"], r["method"]): r for r in read_results(a.results, key)}

    for arch in a.archs:
        accepted = 0
        for seed in (a.seeds or itertools.count(a.first_seed)):
            if not a.seeds and accepted == a.n_seeds:
                break  # default: the first n_seeds seeds (from first_seed) whose baseline is accepted
            done = finished()
            if (arch, None, seed, "baseline") in done:
                continue
            if all((arch, r, seed, m) in done for r in a.reductions for m in ("uniform", *a.variants)):
                accepted += 1
                continue
            model, info = baseline(arch, seed, data, a, cache, log)
            if info["val_top1"] < a.min_baseline:
                # A diverged baseline is no test of pruning: the seed is left out, for every method
                # alike (the rule looks only at the dense model, never at a pruned result).
                if (arch, None, seed, "baseline") not in done:
                    append_result(a.results, {"arch": arch, "reduction": None, "seed": seed, "method": "baseline",
                                              "rejected": True, "baseline_top1": info["val_top1"],
                                              "protocol_key": key, "protocol": protocol(a)})
                log(f"{arch} seed {seed}: baseline val top-1 {info['val_top1']:.2f} < {a.min_baseline}: seed left out")
                continue
            accepted += 1
            for reduction in a.reductions:
                for method in ("uniform", *a.variants):
                    done = finished()
                    if (arch, reduction, seed, method) in done:
                        continue
                    uni = done.get((arch, reduction, seed, "uniform"))
                    target = reduction if method == "uniform" else equal_flops_target(uni)
                    row = run_one(model, info, arch, reduction, seed, method, target, data, a, cache)
                    row.update(protocol_key=key, protocol=protocol(a))
                    append_result(a.results, row)
                    done[(arch, reduction, seed, method)] = row
                    log(f"{arch} {reduction:g}% seed {seed} {method:>12}: FLOPs -{row['flops_reduction']:.2f}% "
                        f"top-1 {row['top1']:.2f} (search {row['search_s']:.0f} s, fine-tune {row['finetune_s']:.0f} s)")
    return read_results(a.results, key)


def parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m repro.bench.snf_search", description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", nargs="+", default=None, help=f"default {' '.join(DEFAULTS['archs'])}")
    p.add_argument("--reductions", nargs="+", type=float, default=None, help="nominal FLOPs reductions, percent")
    p.add_argument("--seeds", nargs="+", type=int, default=None,
                   help="baseline seeds (default: the first --n-seeds from --first-seed whose baseline is accepted)")
    p.add_argument("--first-seed", type=int, default=None,
                   help="where the default seeds start counting (default 1; fresh seeds for a new test)")
    p.add_argument("--n-seeds", type=int, default=None, help="default 5")
    p.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS), help="default: all")
    p.add_argument("--baseline-epochs", type=int, default=None)
    p.add_argument("--finetune-epochs", type=int, default=None)
    p.add_argument("--heldout", type=int, default=None, help="images held out for the search (default 180)")
    p.add_argument("--min-baseline", type=float, default=None,
                   help="leave out a seed whose dense baseline has a lower val top-1 (default 97)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: see the README)")
    p.add_argument("--out", help="folder for results.jsonl and snf_search.md (default: docs/)")
    p.add_argument("--results", help="results file (default OUT/snf_search.jsonl)")
    p.add_argument("--cache-dir", help="baselines and sensitivity curves (default $PRUNEREPRO_CACHE/snf_search)")
    p.add_argument("--quick", action="store_true", help="miniature run of every code path (tests)")
    p.add_argument("--report-only", action="store_true", help="only rebuild the Markdown from the results")
    a = p.parse_args(argv)
    quick = {k: v for k, v in QUICK.items() if k != "seeds" or a.first_seed is None}  # counted from there
    base = {**DEFAULTS, "train_images": 0, **(quick if a.quick else {})}
    for k, v in base.items():
        if getattr(a, k, None) is None:
            setattr(a, k, v)
    a.grid = tuple(a.grid)
    out = Path(a.out) if a.out else REPO / "docs"
    a.results = Path(a.results) if a.results else out / "snf_search.jsonl"
    a.report = out / "snf_search.md"
    a.command = "python -m repro.bench.snf_search " + " ".join(argv if argv is not None else sys.argv[1:])
    # the settings the verdict waits for: the full sweep's, whatever part this invocation runs
    full = () if a.quick else itertools.product(DEFAULTS["archs"], DEFAULTS["reductions"])
    a.settings = sorted({*full, *itertools.product(a.archs, a.reductions)}, key=setting_order)
    return a


def main(argv=None) -> int:
    a = parse(argv)
    rows = read_results(a.results, protocol_key(a)) if a.report_only else sweep(a)
    write_report(rows, a)
    print(f"wrote {a.report} ({len(rows)} results)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
