"""scikit-learn's digits (1,797 real 8x8 greyscale scans, 10 classes) as a CIFAR-shaped set.

Rendering: grey levels 0..16 scaled to 0..255, bilinear-upsampled to 32x32 with Pillow and
replicated to 3 channels (uint8 RGB). Split: stratified 80/20 with
`sklearn.model_selection.train_test_split(test_size=0.2, stratify=y, random_state=0)`:
1,437 training and 360 validation images, always the same ones.

With `data.ffcv_dir` empty the .beton files are written on demand to a cache folder
(`$PRUNEREPRO_CACHE` or `~/.cache/prunerepro`, sub-folder `digits-v2`), under a file lock so that
several ranks starting at once convert once and never see a half-written file. The rendered
arrays and the split are kept there too (`rendered.npz`), so that later processes skip importing
scikit-learn.
"""
from __future__ import annotations

import fcntl
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

NUM_CLASSES = 10
SPLIT_SEED = 0
VAL_FRACTION = 0.2
CACHE_VERSION = "digits-v2"  # bump when the rendering, the split or the files written change (v2: dataset.json)
SPLIT_SIZES = {"train": 1437, "val": 360}


RENDERED = "rendered.npz"  # beside the .beton files: images, labels and the split, as rendered below


def _render() -> dict[str, np.ndarray]:
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    grey = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    up = np.stack([np.asarray(Image.fromarray(g).resize((32, 32), Image.BILINEAR)) for g in grey])
    labels = d.target.astype(np.int64)
    tr, va = train_test_split(np.arange(len(labels)), test_size=VAL_FRACTION, stratify=labels,
                              random_state=SPLIT_SEED)
    return {"images": np.ascontiguousarray(np.repeat(up[..., None], 3, axis=3)), "labels": labels,
            "train": np.sort(tr), "val": np.sort(va)}


def _sound(r: dict[str, np.ndarray]) -> bool:
    n = len(r["labels"])
    return (r["images"].shape == (n, 32, 32, 3) and r["images"].dtype == np.uint8 and
            {s: len(r[s]) for s in SPLIT_SIZES} == SPLIT_SIZES and n == sum(SPLIT_SIZES.values()))


@lru_cache(maxsize=None)
def _rendered() -> dict[str, np.ndarray]:
    """The rendering and the split, kept in the cache folder after the first process made them:
    importing scikit-learn (for its data and its split) costs ~2.5 s of CPU in every process that
    reads digits (each trainer, each DDP rank); the file is the same arrays, checked on load."""
    path = cache_dir() / RENDERED
    try:
        with np.load(path) as f:
            r = {k: f[k] for k in ("images", "labels", "train", "val")}
        if _sound(r):
            return r
    except (OSError, KeyError, ValueError):
        pass  # absent, or unreadable: render again and replace it
    r = _render()
    try:
        import io
        from repro.io import atomic_write_bytes
        buf = io.BytesIO()
        np.savez(buf, **r)
        atomic_write_bytes(path, buf.getvalue())  # concurrent first readers write the same bytes
    except OSError:
        pass  # a read-only cache folder: render in every process, as before
    return r


def read_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """'train' or 'val' -> (uint8 N x 32 x 32 x 3, int64 labels)."""
    r = _rendered()
    idx = r["train" if split == "train" else "val"]
    return r["images"][idx], r["labels"][idx]


def write(out: str | Path, workers: int = -1) -> dict:
    from .beton import write_identity, write_raw_split
    counts = {split: write_raw_split(Path(out) / f"{split}.beton", *read_split(split), workers=workers)
              for split in ("train", "val")}
    write_identity(Path(out), "digits", "python -m repro.data.write digits")
    return counts


def cache_dir() -> Path:
    root = os.environ.get("PRUNEREPRO_CACHE") or Path.home() / ".cache" / "prunerepro"
    return Path(root) / CACHE_VERSION


def ensure_cached() -> Path:
    """Write the digits betons to the cache folder unless present; safe for concurrent ranks."""
    out = cache_dir()
    from .beton import IDENTITY
    done = lambda: all((out / f).is_file() for f in ("train.beton", "val.beton", IDENTITY))  # noqa: E731
    if done():
        return out
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first rank converts, the others wait here
        try:
            if not done():
                write(out, workers=1)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return out
