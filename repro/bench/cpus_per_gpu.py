"""How many CPUs a GPU needs: images/s per core of the real FFCV ImageNet training pipeline.

    python -m repro.bench.cpus_per_gpu [--workers 1,2] [--seconds 20] [--repeats 3] [--work DIR]

The pipeline is the one a Table 2 run trains from (``repro.data.build_loaders``, FFCV, 224 px
random-resized crop + flip, normalised float output), reading a .beton written as the README says
(``repro.data.write imagenet``: JPEG, longest side <= 512, quality 90) from a generated stand-in
in ImageNet's layout (``repro.data.synth``; sides around --jpeg-size px, ImageNet's are ~400-500).
Each measurement runs in its own process, warms up one epoch (FFCV compiles), then times whole
epochs for at least --seconds, counting both wall time and the process's CPU time (every thread).

Images per CPU-second is the figure that does not depend on how busy the machine is: it is what
one fully used core decodes. The CPUs per GPU it implies for a training rate R are
ceil(R / per-core rate) decoding threads + 1 for the training process's own thread (the one that
launches the CUDA kernels; ``repro.data.cpus`` gives FFCV the task's CPUs - 1 on CUDA).
Wall-clock images/s is printed too: on a shared machine it moves with other people's work.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

# ResNet-50 training demand per GPU the issue names (A100-class, and a fast H100/H200 with the
# engine at its best): the rates the CPUs must keep up with
DEMANDS = (2000, 3500)
RES = 224


def prepare(work: Path, images: int, jpeg_size: int) -> Path:
    """A stand-in ImageNet under `work`, converted by the real writer (reused when present)."""
    from repro.bench.loaders import _converted
    from repro.data import imagenet, synth
    src, out = work / f"imagenet-{jpeg_size}-src", work / f"imagenet-{jpeg_size}-ffcv"
    per_class = max(1, images // 10)
    if not _converted(out, 10 * per_class):
        print(f"[bench] generating 10 classes x {per_class} JPEGs, sides ~{jpeg_size} px, in {src}", flush=True)
        synth.make_imagenet(src, classes=10, train_per_class=per_class, val_per_class=2, size=jpeg_size, force=True)
        imagenet.write(src, out, max_res=512, quality=90)  # the README's command: write imagenet defaults
    return out


def measure(ffcv_dir: str, batch: int, workers: int, seconds: float) -> dict:
    """Wall and CPU time of whole training epochs after a warm-up epoch (this process only)."""
    from repro.config import DataConfig
    from repro.data import build_loaders
    cfg = DataConfig(name="imagenet", ffcv_dir=ffcv_dir, loader="ffcv", batch_size=batch, workers=workers,
                     train_res=RES, val_res=RES, val_resize=256)
    train = build_loaders(cfg, rank=0, world_size=1, device="cpu", seed=0).train
    for _ in train.iterate():  # warm-up: compilation, page cache
        pass
    images, epochs = 0, 0
    t0, c0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds or epochs < 2:
        train.set_epoch(epochs + 1)
        for x, _ in train.iterate():
            images += len(x)
        epochs += 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"workers": workers, "images": images, "epochs": epochs, "wall_s": wall, "cpu_s": cpu,
            "images_per_s": images / wall, "images_per_cpu_s": images / cpu, "shape": list(x.shape)}


def _child(ffcv_dir: Path, batch: int, workers: int, seconds: float) -> dict:
    cmd = [sys.executable, "-m", "repro.bench.cpus_per_gpu", "--_measure", str(ffcv_dir), "--batch", str(batch),
           "--workers", str(workers), "--seconds", str(seconds)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(f"measurement with {workers} worker(s) failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def cpus_for(demand: float, per_core: float) -> int:
    """CPUs per GPU task: enough decoding threads for `demand` images/s, + 1 training thread."""
    return math.ceil(demand / per_core) + 1


def _parse(argv):
    p = argparse.ArgumentParser(prog="python -m repro.bench.cpus_per_gpu", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--workers", default="1,2", help="FFCV decoding threads to measure, comma-separated (default 1,2)")
    p.add_argument("--batch", type=int, default=32, help="batch size: the paper's per GPU, 256 / 8 (default 32)")
    p.add_argument("--seconds", type=float, default=20.0, help="minimum timed seconds per measurement (default 20)")
    p.add_argument("--repeats", type=int, default=3, help="measurements per thread count; medians (default 3)")
    p.add_argument("--images", type=int, default=1000, help="training images of the stand-in (default 1000)")
    p.add_argument("--jpeg-size", type=int, default=448, help="typical side of the stand-in JPEGs in px (default 448)")
    p.add_argument("--work", default="/tmp/prunerepro-bench",
                   help="cache for the stand-in (default /tmp/prunerepro-bench)")
    p.add_argument("--_measure", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = _parse(argv)
    if a._measure:
        print(json.dumps(measure(a._measure, a.batch, int(a.workers), a.seconds)))
        return 0
    try:
        workers = [int(w) for w in a.workers.split(",") if w.strip()]
    except ValueError:
        workers = []
    if not workers or min(workers) < 1 or a.batch < 1 or a.seconds <= 0 or a.repeats < 1 or a.images < 10:
        print("error: --workers must list counts >= 1; --batch, --seconds, --repeats must be > 0; --images >= 10",
              file=sys.stderr)
        return 2
    out = prepare(Path(a.work), a.images, a.jpeg_size)
    print(f"[bench] {platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} CPU(s) for "
          f"this process, nice {os.nice(0)}, batch {a.batch} at {RES} px, load average before: "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    rows, per_core = [], []
    for w in workers:
        runs = []
        for rep in range(a.repeats):
            r = _child(out, a.batch, w, a.seconds)
            runs.append(r)
            print(f"[bench] {w} thread(s) run {rep + 1}/{a.repeats}: {r['images_per_s']:7.0f} img/s wall, "
                  f"{r['images_per_cpu_s']:7.0f} img per CPU-s ({r['images']} images, {r['wall_s']:.1f} s wall, "
                  f"{r['cpu_s']:.1f} s CPU; batch {r['shape']})", flush=True)
        per_cpu = statistics.median(r["images_per_cpu_s"] for r in runs)
        per_core.append(per_cpu)
        rows.append([w, f"{statistics.median(r['images_per_s'] for r in runs):.0f}", f"{per_cpu:.0f}",
                     f"{statistics.median(r['cpu_s'] / r['wall_s'] for r in runs):.2f}"])
    from tabulate import tabulate
    print(tabulate(rows, headers=["FFCV threads", "img/s wall (median)", "img per CPU-s (median)",
                                  "CPUs busy (CPU-s / s)"], tablefmt="github"))
    core = min(per_core)  # the slower figure: more threads share caches and memory bandwidth
    print(f"per core: {core:.0f} images/s ({1e3 / core:.2f} ms of CPU per {RES}-px image)")
    for d in DEMANDS:
        print(f"{d} img/s per GPU needs {cpus_for(d, core)} CPUs per GPU task "
              f"({math.ceil(d / core)} decoding + 1 training thread)")
    print(f"[bench] load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
