"""FFCV vs the plain PyTorch DataLoader path: training-pipeline throughput, side by side.

    python -m repro.bench.loaders [--workers 2] [--batch 256] [--seconds 8] [--work DIR]

Rows: CIFAR-10 raw 32x32 (pad-crop + flip), and ImageNet-style JPEG at 160 px and 224 px
(random-resized crop + flip). Both columns are the real training loaders of
`repro.data.build_loaders` (seeded augmentation, normalised float NCHW output), fed by
stand-in data sets generated in the real layouts and converted with the real writers (cached
under --work). Each measurement runs in its own process (FFCV threads and a forking
DataLoader are kept apart), warms up for one epoch (FFCV compiles, workers start), then times
whole epochs for at least --seconds. FFCV and plain runs alternate --repeats times; the table
gives medians, their ratio, and the range of the run-by-run ratios. The machine's load average
is printed: on a shared machine the numbers move with other people's work.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROWS = {
    "cifar10-raw-32": dict(name="cifar10", train_res=32),
    "jpeg-160": dict(name="imagenet", train_res=160),
    "jpeg-224": dict(name="imagenet", train_res=224),
}


def _converted(out: Path, n_train: int) -> bool:
    """Both .beton files exist and train holds `n_train` images (a cache from the same flags)."""
    from repro.data import DataError
    from repro.data.beton import check_beton
    try:
        return check_beton(out / "train.beton") == n_train and check_beton(out / "val.beton") > 0
    except DataError:
        return False


def prepare(work: Path, cifar_images: int, jpeg_images: int, jpeg_size: int) -> dict:
    """Stand-in sources and their .beton files under `work` (reused when present)."""
    from repro.data import cifar10, imagenet, synth
    c_src, c_out = work / "cifar10-src", work / "cifar10-ffcv"
    i_src, i_out = work / f"imagenet-{jpeg_size}-src", work / f"imagenet-{jpeg_size}-ffcv"
    if not _converted(c_out, cifar_images):
        print(f"[bench] generating a CIFAR-10 stand-in ({cifar_images} train images) in {c_src}", flush=True)
        synth.make_cifar10(c_src, train=cifar_images, val=1000, force=True)
        cifar10.write(c_src, c_out)
    per_class = max(1, jpeg_images // 10)
    if not _converted(i_out, 10 * per_class):
        print(f"[bench] generating an ImageNet-layout stand-in (10 classes x {per_class} JPEGs, "
              f"sides ~{jpeg_size} px) in {i_src}", flush=True)
        synth.make_imagenet(i_src, classes=10, train_per_class=per_class, val_per_class=2,
                            size=jpeg_size, force=True)
        imagenet.write(i_src, i_out, max_res=512, quality=90)
    return {"cifar10": (c_src, c_out), "imagenet": (i_src, i_out)}


def measure(row: str, loader: str, src: str, ffcv_dir: str, batch: int, workers: int,
            seconds: float) -> dict:
    """Images/s of one training loader, whole epochs after a warm-up epoch."""
    from repro.config import DataConfig
    from repro.data import build_loaders
    spec = ROWS[row]
    cfg = DataConfig(name=spec["name"], path=src, ffcv_dir=ffcv_dir, loader=loader, batch_size=batch,
                     workers=workers, train_res=spec["train_res"], val_res=spec["train_res"],
                     val_resize=max(spec["train_res"], round(spec["train_res"] * 256 / 224)))
    train = build_loaders(cfg, rank=0, world_size=1, device="cpu", seed=0).train
    t0 = time.perf_counter()
    for _ in train.iterate():  # warm-up: compilation, worker start, page cache
        pass
    warm = time.perf_counter() - t0
    images, epochs, t0 = 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or epochs < 2:
        train.set_epoch(epochs + 1)
        for x, _ in train.iterate():
            images += len(x)
        epochs += 1
    dt = time.perf_counter() - t0
    return {"row": row, "loader": loader, "images_per_s": images / dt, "images": images,
            "epochs": epochs, "seconds": dt, "warmup_s": warm, "shape": list(x.shape)}


def _child(args) -> dict:
    cmd = [sys.executable, "-m", "repro.bench.loaders", "--_measure", args[0], args[1], "--_src", args[2],
           "--_ffcv", args[3], "--batch", str(args[4]), "--workers", str(args[5]),
           "--seconds", str(args[6])]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(f"measurement {args[0]}/{args[1]} failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m repro.bench.loaders", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--workers", type=int, default=2, help="loader workers: FFCV threads / DataLoader processes (default 2)")
    p.add_argument("--batch", type=int, default=256, help="batch size (default 256)")
    p.add_argument("--seconds", type=float, default=8.0, help="minimum timed seconds per measurement (default 8)")
    p.add_argument("--repeats", type=int, default=3,
                   help="interleaved FFCV/plain measurements per row; medians are reported (default 3)")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {', '.join(ROWS)}")
    p.add_argument("--work", default="/tmp/prunerepro-bench", help="cache for the stand-in data (default /tmp/prunerepro-bench)")
    p.add_argument("--cifar-images", type=int, default=20000, help="CIFAR stand-in training images (default 20000)")
    p.add_argument("--jpeg-images", type=int, default=2000, help="JPEG stand-in training images (default 2000)")
    p.add_argument("--jpeg-size", type=int, default=320, help="typical side of the JPEG stand-ins in px (default 320)")
    p.add_argument("--_measure", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--_src", help=argparse.SUPPRESS)
    p.add_argument("--_ffcv", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a._measure:
        print(json.dumps(measure(*a._measure, a._src, a._ffcv, a.batch, a.workers, a.seconds)))
        return 0
    rows = [r.strip() for r in a.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown or a.batch < 1 or a.workers < 0 or a.seconds <= 0 or a.repeats < 1:
        print(f"error: bad arguments (unknown rows {unknown}; batch, seconds, repeats must be > 0, workers >= 0)",
              file=sys.stderr)
        return 2
    from tabulate import tabulate
    import torch
    data = prepare(Path(a.work), a.cifar_images, a.jpeg_images, a.jpeg_size)
    print(f"[bench] {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads), batch {a.batch}, {a.workers} workers, "
          f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    table = []
    for row in rows:
        src, out = data[ROWS[row]["name"]]
        res = {"ffcv": [], "plain": []}
        for rep in range(a.repeats):  # interleaved, so both see the same spells of machine load
            for loader in ("ffcv", "plain"):
                r = _child((row, loader, str(src), str(out), a.batch, a.workers, a.seconds))
                res[loader].append(r["images_per_s"])
                print(f"[bench] {row:15s} {loader:5s} run {rep + 1}/{a.repeats} {r['images_per_s']:10.0f} img/s "
                      f"({r['images']} images, {r['epochs']} epochs, {r['seconds']:.1f} s; warm-up "
                      f"{r['warmup_s']:.1f} s; batch shape {r['shape']})", flush=True)
        f, pl = statistics.median(res["ffcv"]), statistics.median(res["plain"])
        pairs = [x / y for x, y in zip(res["ffcv"], res["plain"])]  # run k vs run k (adjacent)
        table.append([row, f"{f:.0f}", f"{pl:.0f}", f"{f / pl:.2f}x", f"{min(pairs):.2f}x - {max(pairs):.2f}x"])
    print(tabulate(table, headers=["training pipeline", "FFCV img/s (median)", "plain img/s (median)",
                                   "FFCV / plain (medians)", "per-run ratios"], tablefmt="github"))
    print(f"[bench] load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
