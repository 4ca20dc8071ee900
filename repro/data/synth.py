"""Stand-in data sets written in the exact on-disk layouts of the real ones.

    python -m repro.data.synth cifar10  --out DIR [--train 5000 --val 1000 --seed 0]
    python -m repro.data.synth imagenet --out DIR [--classes 10 --train-per-class 50
                                                   --val-per-class 10 --size 160 --seed 0]
                                                  [--as-downloaded devkit|devkit-tar|kaggle]

The class signal is learnable but not trivial: every class owns a smooth random colour
template; an image is a randomly shifted (and, for ImageNet, randomly sized and shaped) window
of its class template, with random brightness and strong pixel noise. The output folder is
built under a temporary name and renamed into place when complete. `--as-downloaded` gives the
ImageNet stand-in the layout of the official download instead (flat val/ with the devkit's or
Kaggle's label file, a CMYK JPEG and a PNG named .JPEG in train/; see synth_dist.py).
"""
from __future__ import annotations

import argparse
import colorsys
import os
import pickle
import shutil
import sys
import uuid
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from .errors import DataError

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def class_colour_of(k: int, classes: int) -> np.ndarray:
    """Class k's own colour (RGB, 0..255): the classes' hues evenly spaced round the colour wheel."""
    return np.array(colorsys.hsv_to_rgb(k / classes, 0.8, 0.85), np.float64) * 255


def _template(rng: np.random.Generator, side: int, cells: int = 4, tint: np.ndarray | None = None,
              strength: float = 0.0) -> np.ndarray:
    """A smooth random RGB field, side x side, values in [30, 225], mixed with the colour `tint`
    in the proportion `strength` (0: the random field alone, the same numbers as before)."""
    coarse = rng.uniform(30, 225, size=(cells, cells, 3))
    if strength:
        coarse = (1 - strength) * coarse + strength * tint
    coarse = coarse.astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((side, side), Image.BICUBIC), dtype=np.float32)


def _finish(img: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    img = img * rng.uniform(0.7, 1.3) + rng.normal(0.0, noise, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _staged(out: Path, force: bool):
    """Temporary sibling folder for `out`; refuses to overwrite unless `force`."""
    if out.exists() and any(out.iterdir()) and not force:
        raise DataError(f"{out} exists and is not empty (pass --force to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    return tmp


def _publish(tmp: Path, out: Path):
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


# ------------------------------------------------------------------------------ CIFAR-10
def make_cifar10(out: str | Path, *, train: int = 5000, val: int = 1000, seed: int = 0,
                 noise: float = 40.0, class_colour: float = 0.0, force: bool = False) -> Path:
    """data_batch_1..5 (train images split evenly), test_batch (val images), batches.meta."""
    if train < 5 or val < 1:
        raise DataError("cifar10 stand-in needs --train >= 5 (five batches) and --val >= 1")
    if not 0 <= class_colour <= 1:
        raise DataError("--class-colour must be in [0, 1]")
    out = Path(out)
    rng = np.random.default_rng(seed)
    templates = np.stack([_template(rng, 40, tint=class_colour_of(k, 10), strength=class_colour)
                          for k in range(10)])

    def images(n):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        data = np.empty((n, 32, 32, 3), np.uint8)
        for k, lab in enumerate(labels):
            dy, dx = rng.integers(0, 9, size=2)
            win = templates[lab, dy:dy + 32, dx:dx + 32]
            data[k] = _finish(win[:, ::-1] if rng.random() < 0.5 else win, rng, noise)
        # the official row layout: 1024 R, then 1024 G, then 1024 B values, each row-major
        return data.transpose(0, 3, 1, 2).reshape(n, 3072), labels.tolist()

    tmp = _staged(out, force)
    try:
        sizes = np.diff(np.linspace(0, train, 6).astype(int))
        batches = [(f"data_batch_{i + 1}", f"training batch {i + 1} of 5", s) for i, s in enumerate(sizes)]
        batches.append(("test_batch", "testing batch 1 of 1", val))
        for name, label, n in batches:
            data, labels = images(int(n))
            # bytes keys, as the Python-2 originals load with pickle.load(..., encoding="bytes")
            obj = {b"batch_label": label.encode(), b"labels": labels, b"data": data,
                   b"filenames": [f"synth_{name}_{k}.png".encode() for k in range(len(labels))]}
            with open(tmp / name, "wb") as f:
                pickle.dump(obj, f, protocol=4)
        meta = {b"num_cases_per_batch": int(sizes[0]), b"label_names": [n.encode() for n in CIFAR_NAMES],
                b"num_vis": 3072}
        with open(tmp / "batches.meta", "wb") as f:
            pickle.dump(meta, f, protocol=4)
        _publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# ------------------------------------------------------------------------------ ImageNet
def wnid(k: int) -> str:
    return f"n{k + 1:08d}"


def _imagenet_job(job) -> None:
    path, template, size, jitter, quality, noise, seed = job
    rng = np.random.default_rng(seed)
    side = size * rng.uniform(1 - jitter, 1 + jitter)
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    w, h = max(8, int(side * np.sqrt(aspect))), max(8, int(side / np.sqrt(aspect)))
    t = template.shape[0]
    crop = rng.uniform(0.6, 0.9) * t
    y0, x0 = rng.uniform(0, t - crop, size=2)
    win = Image.fromarray(template.astype(np.uint8)).resize((w, h), Image.BILINEAR,
                                                            box=(x0, y0, x0 + crop, y0 + crop))
    img = np.asarray(win, dtype=np.float32)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    Image.fromarray(_finish(img, rng, noise)).save(path, "JPEG", quality=quality)


def make_imagenet(out: str | Path, *, classes: int = 10, train_per_class: int = 50,
                  val_per_class: int = 10, size: int = 160, jitter: float = 0.25,
                  quality: int = 90, noise: float = 30.0, class_colour: float = 0.0, seed: int = 0,
                  workers: int = 0, force: bool = False, as_downloaded: str | None = None) -> Path:
    """train/<wnid>/<wnid>_<k>.JPEG and val/<wnid>/ILSVRC2012_val_<n>.JPEG, sides around `size`
    (uniform within +-`jitter`), aspect ratios in [3/4, 4/3]. `as_downloaded` (one of
    synth_dist.LAYOUTS): rewrite it into the layout of the official download."""
    from .synth_dist import LAYOUTS, as_downloaded as rewrite
    if as_downloaded is not None and as_downloaded not in LAYOUTS:
        raise DataError(f"--as-downloaded must be one of {', '.join(LAYOUTS)}")
    if not 0 <= class_colour <= 1:
        raise DataError("--class-colour must be in [0, 1]")
    if classes < 1 or train_per_class < 1 or val_per_class < 1 or size < 16:
        raise DataError("imagenet stand-in needs --classes, --train-per-class, --val-per-class >= 1 "
                        "and --size >= 16")
    out = Path(out)
    rng = np.random.default_rng(seed)
    # uint8 (exact: the template holds whole grey levels): every job pickles its template to a
    # worker, and a 400-px stand-in's float32 template is 7.7 MB
    templates = [_template(rng, 2 * size, cells=6, tint=class_colour_of(k, classes),
                           strength=class_colour).astype(np.uint8) for k in range(classes)]
    tmp = _staged(out, force)
    try:
        jobs, val_no = [], 0
        for k in range(classes):
            for split, n in (("train", train_per_class), ("val", val_per_class)):
                folder = tmp / split / wnid(k)
                folder.mkdir(parents=True)
                for i in range(n):
                    if split == "train":
                        name = f"{wnid(k)}_{i}.JPEG"
                    else:
                        val_no += 1
                        name = f"ILSVRC2012_val_{val_no:08d}.JPEG"
                    jobs.append((str(folder / name), templates[k], size, jitter, quality, noise,
                                 int(rng.integers(2**63))))
        workers = workers if workers > 0 else (os.cpu_count() or 1)
        with Pool(workers) as pool:
            for _ in tqdm(pool.imap_unordered(_imagenet_job, jobs, chunksize=16), total=len(jobs),
                          desc=f"imagenet stand-in -> {out}", unit="img", disable=None):
                pass
        if as_downloaded:
            rewrite(tmp, as_downloaded, seed)
        _publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m repro.data.synth",
                                description="Write a stand-in data set in the real on-disk layout "
                                            "(learnable class signal, sized by flags).")
    sub = p.add_subparsers(dest="kind", required=True)
    c = sub.add_parser("cifar10", help="CIFAR-10 python-pickle layout (data_batch_1..5, test_batch, batches.meta)")
    c.add_argument("--out", required=True, help="folder to create")
    c.add_argument("--train", type=int, default=5000, help="training images, split over 5 batches (default 5000)")
    c.add_argument("--val", type=int, default=1000, help="test_batch images (default 1000)")
    c.add_argument("--noise", type=float, default=40.0, help="pixel noise std, 0..255 scale (default 40)")
    i = sub.add_parser("imagenet", help="ImageNet folder layout (train/<wnid>/*.JPEG, val/<wnid>/*.JPEG)")
    i.add_argument("--out", required=True, help="folder to create")
    i.add_argument("--classes", type=int, default=10, help="number of classes (default 10)")
    i.add_argument("--train-per-class", type=int, default=50, help="default 50")
    i.add_argument("--val-per-class", type=int, default=10, help="default 10")
    i.add_argument("--size", type=int, default=160, help="typical image side in pixels (default 160)")
    i.add_argument("--jitter", type=float, default=0.25, help="relative spread of the side (default 0.25)")
    i.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    i.add_argument("--noise", type=float, default=30.0, help="pixel noise std (default 30)")
    i.add_argument("--workers", type=int, default=0, help="processes (default: all cores)")
    i.add_argument("--as-downloaded", choices=("devkit", "devkit-tar", "kaggle"), default=None,
                   help="the official download's layout: flat val/ labelled by the devkit (folder or "
                        ".tar.gz) or Kaggle's LOC_val_solution.csv, CMYK and PNG quirks in train/")
    for s in (c, i):
        s.add_argument("--class-colour", type=float, default=0.0,
                       help="mix each class's template with its own hue in this proportion, 0..1 (default 0: "
                            "random colour fields only; 0.5 makes the class visible in any small crop)")
        s.add_argument("--seed", type=int, default=0, help="seed (default 0)")
        s.add_argument("--force", action="store_true", help="replace --out if it exists")
    a = p.parse_args(argv)
    try:
        if a.kind == "cifar10":
            out = make_cifar10(a.out, train=a.train, val=a.val, seed=a.seed, noise=a.noise,
                               class_colour=a.class_colour, force=a.force)
        else:
            out = make_imagenet(a.out, classes=a.classes, train_per_class=a.train_per_class,
                                val_per_class=a.val_per_class, size=a.size, jitter=a.jitter,
                                quality=a.quality, noise=a.noise, class_colour=a.class_colour, seed=a.seed,
                                workers=a.workers,
                                force=a.force, as_downloaded=a.as_downloaded)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {a.kind} stand-in to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
