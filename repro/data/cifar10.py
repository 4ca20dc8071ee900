"""CIFAR-10 in its official python-pickle layout: reader with validation, and the .beton writer.

Layout (https://www.cs.toronto.edu/~kriz/cifar.html, "python version"): a folder holding
`data_batch_1` .. `data_batch_5`, `test_batch` and `batches.meta`. Each batch is a pickled dict
with `data` (uint8 array, N x 3072: 1024 red, 1024 green, 1024 blue values, row-major 32x32)
and `labels` (N ints in 0..9); `batches.meta` holds `label_names`. The files were written by
Python 2, so keys come back as bytes with `encoding="bytes"`; str keys are accepted too.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from .errors import DataError

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
VAL_FILES = ("test_batch",)
META_FILE = "batches.meta"
NUM_CLASSES = 10
SIDE = 32


def _get(d: dict, key: str):
    if key.encode() in d:
        return d[key.encode()]
    return d.get(key)


def _load_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="bytes")
    except FileNotFoundError:
        raise DataError(f"CIFAR-10: missing file {path} (expected the python-pickle layout: "
                        f"{', '.join(TRAIN_FILES)}, {VAL_FILES[0]}, {META_FILE})") from None
    except Exception as e:  # truncated or not a pickle at all
        raise DataError(f"CIFAR-10: {path} is not a readable pickle ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR-10: {path} holds a {type(obj).__name__}, expected a dict")
    return obj


def check_layout(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"CIFAR-10: folder {root} does not exist (generate a stand-in with "
                        f"`python -m repro.data.synth cifar10 --out {root}`)")
    missing = [n for n in (*TRAIN_FILES, *VAL_FILES, META_FILE) if not (root / n).is_file()]
    if missing:
        raise DataError(f"CIFAR-10: {root} lacks {', '.join(missing)} (the python-pickle layout "
                        f"of cifar-10-python.tar.gz is expected)")
    return root


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickle -> (uint8 N x 32 x 32 x 3 RGB, int64 N labels), validated."""
    d = _load_pickle(path)
    data, labels = _get(d, "data"), _get(d, "labels")
    if data is None or labels is None:
        raise DataError(f"CIFAR-10: {path} lacks the 'data' or 'labels' entry")
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * SIDE * SIDE:
        raise DataError(f"CIFAR-10: {path} 'data' is {data.dtype} of shape {data.shape}, "
                        f"expected uint8 of shape (N, {3 * SIDE * SIDE})")
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"CIFAR-10: {path} has {len(data)} images but 'labels' is "
                        f"{labels.dtype} of shape {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(f"CIFAR-10: {path} has labels outside 0..{NUM_CLASSES - 1}")
    images = data.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels.astype(np.int64)


def read_split(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """'train' (data_batch_1..5) or 'val' (test_batch) as (images NHWC uint8, labels int64)."""
    root = check_layout(root)
    meta = _load_pickle(root / META_FILE)
    names = _get(meta, "label_names")
    if names is None or len(names) != NUM_CLASSES:
        raise DataError(f"CIFAR-10: {root / META_FILE} must list {NUM_CLASSES} label_names")
    parts = [read_batch(root / n) for n in (TRAIN_FILES if split == "train" else VAL_FILES)]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if len(images) == 0:
        raise DataError(f"CIFAR-10: the {split} split in {root} holds no images")
    return images, labels


def write(src: str | Path, out: str | Path, workers: int = -1) -> dict:
    """Convert the pickles under `src` to `out/train.beton` and `out/val.beton` (raw pixels)."""
    from .beton import write_identity, write_raw_split
    splits = {split: read_split(src, split) for split in ("train", "val")}  # validate all first
    counts = {split: write_raw_split(Path(out) / f"{split}.beton", *arrays, workers=workers)
              for split, arrays in splits.items()}
    write_identity(Path(out), "cifar10", f"python -m repro.data.write cifar10 --src {src}")
    return counts
