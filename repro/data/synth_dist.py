"""Turn a stand-in ImageNet tree (val/ in class folders) into ImageNet as it is downloaded.

    flat val/ILSVRC2012_val_<k>.JPEG with labels from
      devkit      ILSVRC2012_devkit_t12/data/{meta.mat, ILSVRC2012_validation_ground_truth.txt}
      devkit-tar  the same as ILSVRC2012_devkit_t12.tar.gz (how the devkit is downloaded)
      kaggle      LOC_val_solution.csv (ImageId,PredictionString with the WNID first)
    and the train set's quirks: one CMYK JPEG and one PNG file named .JPEG.

The real files' traps are kept on purpose: val numbers interleave the classes, and the devkit's
ILSVRC2012_IDs are not in sorted-WNID order and sit among non-leaf synsets.
"""
from __future__ import annotations

import csv
import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from .imagenet_labels import DEVKIT, GROUND_TRUTH, KAGGLE_CSV, META, val_name

LAYOUTS = ("devkit", "devkit-tar", "kaggle")
_FIELDS = ("ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children",
           "wordnet_height", "num_train_images")


def interleave_val_names(root: Path, rng: np.random.Generator) -> dict[str, str]:
    """Renumber val/<wnid>/*.JPEG to ILSVRC2012_val_1..N so that numbers interleave the classes,
    keeping the order within each class (so the class-folder scan order is unchanged).
    Returns {new name without extension: WNID}."""
    val = root / "val"
    groups = {d.name: sorted(d.iterdir()) for d in sorted(val.iterdir()) if d.is_dir()}
    numbers = rng.permutation(sum(len(files) for files in groups.values())) + 1
    truth, start = {}, 0
    for wnid, files in groups.items():
        mine = np.sort(numbers[start:start + len(files)])
        start += len(files)
        for f in files:  # two passes: a new name may be an old name of another file
            f.rename(f.with_name(f"tmp-{f.name}"))
        for f, k in zip(files, mine):
            f.with_name(f"tmp-{f.name}").rename(f.with_name(f"{val_name(int(k))}.JPEG"))
            truth[val_name(int(k))] = wnid
    return truth


def flatten_val(root: Path) -> None:
    """val/<wnid>/X.JPEG -> val/X.JPEG (the class folders are removed)."""
    val = root / "val"
    for d in [d for d in val.iterdir() if d.is_dir()]:
        for f in d.iterdir():
            f.rename(val / f.name)
        d.rmdir()


def meta_mat(wnids: list[str], rng: np.random.Generator) -> tuple[bytes, dict[str, int]]:
    """A devkit-style meta.mat: the leaves get ILSVRC2012_IDs 1..n in a shuffled order, two
    non-leaf synsets follow. Returns (file bytes, {WNID: ID})."""
    import scipy.io
    ids = {w: int(i) + 1 for w, i in zip(wnids, rng.permutation(len(wnids)))}
    rows = sorted(((i, w, 0) for w, i in ids.items()), key=lambda r: r[0])
    rows += [(len(wnids) + 1, "n00001740", 2), (len(wnids) + 2, "n00002137", 1)]
    table = np.empty((len(rows), 1), dtype=[(f, "O") for f in _FIELDS])
    for r, (i, w, children) in enumerate(rows):
        table[r, 0] = (np.array([[i]], np.uint16), np.array([w]), np.array([f"synset {w}"]),
                       np.array(["stand-in"]), np.array([[children]], np.uint8), np.zeros((1, 0)),
                       np.array([[0]], np.uint8), np.array([[1300 * (children == 0)]], np.uint16))
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"synsets": table})
    return buf.getvalue(), ids


def write_devkit(root: Path, truth: dict[str, str], rng: np.random.Generator, *, tar: bool) -> Path:
    """ILSVRC2012_devkit_t12/ (or .tar.gz) in `root` labelling the images named in `truth`."""
    meta, ids = meta_mat(sorted(set(truth.values())), rng)
    lines = "".join(f"{ids[truth[val_name(k)]]}\n" for k in range(1, len(truth) + 1)).encode()
    files = {f"{DEVKIT}/{META}": meta, f"{DEVKIT}/{GROUND_TRUTH}": lines,
             f"{DEVKIT}/COPYING": b"stand-in devkit written by repro.data.synth\n"}
    if tar:
        out = root / f"{DEVKIT}.tar.gz"
        with tarfile.open(out, "w:gz") as t:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
        return out
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root / DEVKIT


def write_kaggle_csv(path: Path, truth: dict[str, str], rng: np.random.Generator) -> Path:
    """LOC_val_solution.csv: rows in no particular order, 1-2 boxes per image."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ImageId", "PredictionString"])
        for name in rng.permutation(sorted(truth)):
            boxes = [f"{truth[name]} {' '.join(str(v) for v in rng.integers(0, 200, 4))}"
                     for _ in range(int(rng.integers(1, 3)))]
            w.writerow([name, " ".join(boxes)])
    return path


def add_train_quirks(root: Path) -> list[Path]:
    """Re-save the first train image as a CMYK JPEG and the second as a PNG, both under their
    .JPEG names, as in the real train set."""
    files = (f for d in sorted((root / "train").iterdir()) for f in sorted(d.iterdir()))
    cmyk, png = next(files), next(files)
    with Image.open(cmyk) as im:
        im.convert("CMYK").save(cmyk, "JPEG", quality=95)
    with Image.open(png) as im:
        im.load()
        im.save(png, "PNG")
    return [cmyk, png]


def as_downloaded(root: str | Path, layout: str, seed: int = 0) -> Path:
    """Rewrite a class-folder stand-in in place into `layout` (one of LAYOUTS); returns the
    label file or folder written beside train/ and val/."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got '{layout}'")
    root = Path(root)
    rng = np.random.default_rng([seed, 2012])  # its own stream: the images stay those of `seed`
    truth = interleave_val_names(root, rng)
    flatten_val(root)
    add_train_quirks(root)
    if layout == "kaggle":
        return write_kaggle_csv(root / KAGGLE_CSV, truth, rng)
    return write_devkit(root, truth, rng, tar=layout == "devkit-tar")
