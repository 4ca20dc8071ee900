"""ImageNet in the standard folder layout: scanner with validation, a decoding source for the
FFCV writer, and the .beton writer.

Layout: `ROOT/train/<wnid>/*.JPEG` and `ROOT/val/<wnid>/*.JPEG` (validation images sorted
into class folders, as torchvision's ImageFolder and ffcv-imagenet expect). Classes are the
sorted folder names of train/, labels their positions; val/ must have the same folders. Files
are taken in sorted order, so sample i of a .beton is file i of the scan, on every machine.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .errors import DataError

EXTENSIONS = (".jpeg", ".jpg", ".png")
SPLIT_DIRS = {"train": "train", "val": "val"}


def _fix(root) -> str:
    return f"generate a stand-in with `python -m repro.data.synth imagenet --out {root}`"


def list_classes(root: str | Path) -> list[str]:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"ImageNet: folder {root} does not exist ({_fix(root)})")
    train = root / "train"
    if not train.is_dir():
        raise DataError(f"ImageNet: {root} has no train/ folder (expected train/<wnid>/*.JPEG "
                        f"and val/<wnid>/*.JPEG)")
    classes = sorted(e.name for e in os.scandir(train) if e.is_dir())
    if not classes:
        raise DataError(f"ImageNet: {train} holds no class folders")
    return classes


def scan(root: str | Path, split: str) -> tuple[list[str], np.ndarray, list[str]]:
    """-> (file paths, int64 labels, class names) for 'train' or 'val', validated."""
    root = Path(root)
    classes = list_classes(root)
    folder = root / SPLIT_DIRS[split]
    if not folder.is_dir():
        raise DataError(f"ImageNet: {root} has no {SPLIT_DIRS[split]}/ folder")
    have = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    if have != classes:
        extra, lacking = sorted(set(have) - set(classes)), sorted(set(classes) - set(have))
        raise DataError(f"ImageNet: {folder} class folders differ from train/ "
                        f"(missing: {lacking[:3]}, extra: {extra[:3]})")
    paths, labels = [], []
    for label, wnid in enumerate(classes):
        files = sorted(e.path for e in os.scandir(folder / wnid)
                       if e.is_file() and e.name.lower().endswith(EXTENSIONS))
        if not files:
            raise DataError(f"ImageNet: class folder {folder / wnid} holds no images "
                            f"(*.JPEG/*.jpg/*.png)")
        paths += files
        labels += [label] * len(files)
    return paths, np.asarray(labels, dtype=np.int64), classes


def decode(path: str) -> np.ndarray:
    """File -> HWC uint8 RGB; a DataError naming the file if it cannot be decoded."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as e:
        raise DataError(f"ImageNet: cannot decode {path} ({type(e).__name__}: {e}); "
                        f"replace or remove the file") from None


class FolderSource:
    """Indexable (image, label) over a scanned split, for ffcv's DatasetWriter.

    FFCV's writer processes hang the conversion when an item raises, so a failed decode is
    recorded as a file under `errors/` and a tiny placeholder is written instead; the caller
    then runs `raise_errors()` before the temporary .beton is renamed into place.
    """

    def __init__(self, paths: list[str], labels: np.ndarray):
        self.paths, self.labels = paths, labels
        self.errors = tempfile.mkdtemp(prefix="prunerepro-decode-errors-")

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            img = decode(self.paths[i])
        except DataError as e:
            Path(self.errors, f"{i:09d}").write_text(str(e))
            img = np.zeros((8, 8, 3), np.uint8)
        return img, int(self.labels[i])

    def raise_errors(self):
        found = sorted(Path(self.errors).iterdir())
        if found:
            more = f" (and {len(found) - 1} more bad files)" if len(found) > 1 else ""
            raise DataError(found[0].read_text() + more)

    def close(self):
        shutil.rmtree(self.errors, ignore_errors=True)


def write(src: str | Path, out: str | Path, *, max_res: int = 512, quality: int = 90,
          mode: str = "jpg", workers: int = -1) -> dict:
    """Convert the tree under `src` to `out/train.beton` and `out/val.beton`. Images are stored
    as JPEG (`mode`='jpg', re-encoded at `quality`) or raw, longest side capped at `max_res`."""
    from .beton import write_image_split
    splits = {split: scan(src, split) for split in ("train", "val")}  # validate both first
    counts = {}
    for split, (paths, labels, _) in splits.items():
        print(f"[repro.data.write] imagenet {split}: {len(paths)} images -> {Path(out) / split}.beton",
              flush=True)
        counts[split] = write_image_split(Path(out) / f"{split}.beton", FolderSource(paths, labels),
                                          mode=mode, max_res=max_res, quality=quality, workers=workers)
    return counts
