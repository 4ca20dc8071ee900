"""ImageNet as downloaded, or sorted into class folders: scanner with validation, a decoding
source for the FFCV writer, the .beton writer, and a dry-run check.

Layouts: `ROOT/train/<wnid>/*.JPEG`, and either `ROOT/val/<wnid>/*.JPEG` (validation images
sorted into class folders, as torchvision's ImageFolder and ffcv-imagenet expect) or the flat
`ROOT/val/ILSVRC2012_val_*.JPEG` of the official download, labelled by the devkit or by Kaggle's
LOC_val_solution.csv (see imagenet_labels.py). Classes are the sorted folder names of train/,
labels their positions. Files are taken in sorted order within a class and classes in label
order (flat val too), so sample i of a .beton is file i of the scan on every machine, and a flat
val/ gives the same .beton as the same images in class folders.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import imagenet_labels
from .errors import DataError

EXTENSIONS = (".jpeg", ".jpg", ".png")
SPLIT_DIRS = {"train": "train", "val": "val"}
LABELS_HINT = (f"pass --val-labels with {imagenet_labels.KAGGLE_CSV}, the {imagenet_labels.DEVKIT} "
               f"folder or {imagenet_labels.DEVKIT}.tar.gz (or put one beside train/ and val/)")


def _fix(root) -> str:
    return f"generate a stand-in with `python -m repro.data.synth imagenet --out {root}`"


def list_classes(root: str | Path) -> list[str]:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"ImageNet: folder {root} does not exist ({_fix(root)})")
    train = root / "train"
    if not train.is_dir():
        raise DataError(f"ImageNet: {root} has no train/ folder (expected train/<wnid>/*.JPEG "
                        f"and val/<wnid>/*.JPEG or a flat val/ with the devkit or Kaggle labels)")
    entries = list(os.scandir(train))
    classes = sorted(e.name for e in entries if e.is_dir())
    if not classes:
        tars = sum(e.name.endswith(".tar") for e in entries)
        if tars:  # ILSVRC2012_img_train.tar unpacks into one tar per class
            raise DataError(f"ImageNet: {train} holds {tars} per-class .tar files, not folders: unpack "
                            f"each into train/<wnid>/ (cd {train} && for f in *.tar; do "
                            f"mkdir -p ${{f%.tar}} && tar -xf $f -C ${{f%.tar}} && rm $f; done)")
        raise DataError(f"ImageNet: {train} holds no class folders")
    return classes


def _images(folder: Path) -> list[os.DirEntry]:
    return [e for e in os.scandir(folder) if e.is_file() and e.name.lower().endswith(EXTENSIONS)]


def scan(root: str | Path, split: str, val_labels: str | Path | None = None
         ) -> tuple[list[str], np.ndarray, list[str]]:
    """-> (file paths, int64 labels, class names) for 'train' or 'val', validated. A flat val/ is
    labelled from `val_labels` (a label file, see imagenet_labels.read) or one found in `root`."""
    root = Path(root)
    classes = list_classes(root)
    folder = root / SPLIT_DIRS[split]
    if not folder.is_dir():
        raise DataError(f"ImageNet: {root} has no {SPLIT_DIRS[split]}/ folder")
    have = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    if split == "val" and not have:
        paths, labels = _scan_flat_val(root, folder, classes, val_labels)
        return paths, labels, classes
    if have != classes:
        extra, lacking = sorted(set(have) - set(classes)), sorted(set(classes) - set(have))
        raise DataError(f"ImageNet: {folder} class folders differ from train/ "
                        f"(missing: {lacking[:3]}, extra: {extra[:3]})")
    if split == "val" and _images(folder):
        raise DataError(f"ImageNet: {folder} mixes class folders and loose images; keep one layout")
    paths, labels = [], []
    for label, wnid in enumerate(tqdm(classes, desc=f"scanning {folder}", unit="class",
                                      disable=None, leave=False)):
        files = sorted(e.path for e in _images(folder / wnid))
        if not files:
            raise DataError(f"ImageNet: class folder {folder / wnid} holds no images "
                            f"(*.JPEG/*.jpg/*.png)")
        paths += files
        labels += [label] * len(files)
    return paths, np.asarray(labels, dtype=np.int64), classes


def label_source(root: str | Path, val_labels: str | Path | None = None) -> Path | None:
    """The label file a flat val/ is read with: `val_labels`, else one found in `root`."""
    return Path(val_labels) if val_labels else imagenet_labels.discover(Path(root))


def _scan_flat_val(root: Path, folder: Path, classes: list[str], val_labels
                   ) -> tuple[list[str], np.ndarray]:
    files = _images(folder)
    if not files:
        raise DataError(f"ImageNet: {folder} holds neither class folders nor images")
    source = label_source(root, val_labels)
    if source is None:
        raise DataError(f"ImageNet: {folder} is flat ({len(files)} images, no class folders) and "
                        f"no label file was found: {LABELS_HINT}")
    wnids = imagenet_labels.read(source)
    stems = {e.name.rsplit(".", 1)[0]: e.path for e in files}
    if len(stems) != len(files):  # X.JPEG beside X.png: the labels name images, not files
        seen: dict[str, str] = {}
        twin = next(e for e in files if seen.setdefault(e.name.rsplit(".", 1)[0], e.name) != e.name)
        raise DataError(f"ImageNet: {folder} holds two files named {twin.name.rsplit('.', 1)[0]}.* "
                        f"({seen[twin.name.rsplit('.', 1)[0]]}, {twin.name}); keep one")
    unlabelled = sorted(set(stems) - set(wnids))
    if unlabelled:
        raise DataError(f"ImageNet: {len(unlabelled)} of the {len(stems)} images in {folder} have no "
                        f"label in {source} (first: {Path(stems[unlabelled[0]]).name}); is it the "
                        f"label file of this set?")
    absent = sorted(set(wnids) - set(stems))
    if absent:
        raise DataError(f"ImageNet: {folder} lacks {len(absent)} of the {len(wnids)} images {source} "
                        f"labels (first: {absent[0]}); an incomplete copy?")
    index = {w: i for i, w in enumerate(classes)}
    foreign = sorted({w for w in wnids.values() if w not in index})
    if foreign:
        raise DataError(f"ImageNet: {source} labels val images with WNIDs that are not class folders "
                        f"of train/ ({len(foreign)} of them, first: {foreign[0]})")
    # class by class, files sorted within a class: the order of the class-folder layout
    order = sorted(stems, key=lambda s: (index[wnids[s]], Path(stems[s]).name))
    return [stems[s] for s in order], np.asarray([index[wnids[s]] for s in order], dtype=np.int64)


def decode(path: str) -> np.ndarray:
    """File -> HWC uint8 RGB; a DataError naming the file if it cannot be decoded."""
    return decode_noting(path)[0]


def decode_noting(path: str) -> tuple[np.ndarray, str | None]:
    """File -> (HWC uint8 RGB, what was converted). The train set holds a few CMYK JPEGs and a PNG
    named .JPEG: Pillow reads both by content; the note ('cmyk', or the format's name in lower
    case for a file that is no JPEG) lets the writer count them. Greyscale is not noted."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            note = None
            if im.format != "JPEG" and Path(path).suffix.lower() in (".jpeg", ".jpg"):
                note = str(im.format).lower()
            elif im.mode == "CMYK":
                note = "cmyk"
            return np.asarray(im.convert("RGB")), note
    except Exception as e:
        raise DataError(f"ImageNet: cannot decode {path} ({type(e).__name__}: {e}); "
                        f"replace or remove the file") from None


class FolderSource:
    """Indexable (image, label) over a scanned split, for ffcv's DatasetWriter.

    FFCV's writer processes hang the conversion when an item raises, so a failed decode is
    recorded as a file under `errors/` and a tiny placeholder is written instead; the caller
    then runs `raise_errors()` before the temporary .beton is renamed into place. Converted
    files (CMYK, PNG in disguise) are recorded the same way, as the writer's processes cannot
    return anything else; `close()` collects them into `converted` [(path, note)].
    """

    def __init__(self, paths: list[str], labels: np.ndarray):
        self.paths, self.labels = paths, labels
        self.scratch = Path(tempfile.mkdtemp(prefix="prunerepro-decode-"))
        (self.scratch / "errors").mkdir()
        (self.scratch / "notes").mkdir()
        self.converted: list[tuple[str, str]] = []

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            img, note = decode_noting(self.paths[i])
            if note:
                (self.scratch / "notes" / f"{i:09d}").write_text(note)
        except DataError as e:
            (self.scratch / "errors" / f"{i:09d}").write_text(str(e))
            img = np.zeros((8, 8, 3), np.uint8)
        return img, int(self.labels[i])

    def raise_errors(self):
        found = sorted((self.scratch / "errors").iterdir())
        if found:
            more = f" (and {len(found) - 1} more bad files)" if len(found) > 1 else ""
            raise DataError(found[0].read_text() + more)

    def close(self):
        notes = sorted((self.scratch / "notes").iterdir()) if self.scratch.is_dir() else []
        self.converted = [(self.paths[int(f.name)], f.read_text()) for f in notes]
        shutil.rmtree(self.scratch, ignore_errors=True)


def write(src: str | Path, out: str | Path, *, max_res: int = 512, quality: int = 90,
          mode: str = "jpg", workers: int = -1, val_labels: str | Path | None = None) -> dict:
    """Convert the tree under `src` to `out/train.beton` and `out/val.beton`. Images are stored
    as JPEG (`mode`='jpg', re-encoded at `quality`) or raw, longest side capped at `max_res`.
    Returns {'train': n, 'val': n, 'converted': [(path, 'cmyk' | 'png' | ...), ...]}."""
    from .beton import write_image_split
    # validate both splits (layout, labels) before anything is written
    splits = {split: scan(src, split, val_labels) for split in ("train", "val")}
    counts: dict = {"converted": []}
    for split, (paths, labels, _) in splits.items():
        print(f"[repro.data.write] imagenet {split}: {len(paths)} images -> {Path(out) / split}.beton",
              flush=True)
        source = FolderSource(paths, labels)
        counts[split] = write_image_split(Path(out) / f"{split}.beton", source, mode=mode,
                                          max_res=max_res, quality=quality, workers=workers)
        counts["converted"] += source.converted
    from .beton import write_identity
    write_identity(Path(out), "imagenet", f"python -m repro.data.write imagenet --src {src} --max-res {max_res} "
                                          f"--quality {quality} --mode {mode}")
    return counts


def describe_converted(converted: list[tuple[str, str]]) -> str:
    """One line for the writer's summary: 'converted to RGB: 2 CMYK JPEGs, 1 PNG file with a JPEG
    name (a.JPEG, b.JPEG, c.JPEG)'."""
    kinds: dict[str, int] = {}
    for _, note in converted:
        kinds[note] = kinds.get(note, 0) + 1
    parts = [f"{n} CMYK JPEG{'s' * (n > 1)}" if k == "cmyk"
             else f"{n} {k.upper()} file{'s' * (n > 1)} with a JPEG name" for k, n in sorted(kinds.items())]
    names = ", ".join(Path(p).name for p, _ in converted[:3]) + (", ..." if len(converted) > 3 else "")
    return f"converted to RGB: {', '.join(parts)} ({names})"


# ILSVRC-2012 as published: a tree that differs is reported (a subset or a stand-in is fine).
OFFICIAL = {"classes": 1000, "train": 1281167, "val": 50000}


def check(src: str | Path, val_labels: str | Path | None = None) -> dict:
    """Validate a source tree without decoding or writing anything: layout, classes, images per
    split and, for a flat val/, that labels and images match one to one. DataError if not."""
    info: dict = {}
    for split in ("train", "val"):
        paths, labels, classes = scan(src, split, val_labels)
        per_class = np.bincount(labels, minlength=len(classes))
        info[split] = {"images": len(paths), "min": int(per_class.min()), "max": int(per_class.max()),
                       "empty": int((per_class == 0).sum())}
    info["classes"] = len(classes)
    flat = not any(e.is_dir() for e in os.scandir(Path(src) / "val"))
    info["val_labels"] = str(label_source(src, val_labels)) if flat else None
    return info


def describe_check(src: str | Path, info: dict) -> list[str]:
    lines = [f"ImageNet source {src}: {info['classes']} classes"]
    for split in ("train", "val"):
        s = info[split]
        lines.append(f"  {split}: {s['images']} images, {s['min']}..{s['max']} per class"
                     + (f" ({s['empty']} classes without images)" if s["empty"] else ""))
    lines[-1] += (f"; flat val/ labelled by {info['val_labels']}, every image labelled and every "
                  f"label's image present" if info["val_labels"] else "; val/ in class folders")
    got = {"classes": info["classes"], "train": info["train"]["images"], "val": info["val"]["images"]}
    if got != OFFICIAL:
        lines.append(f"  note: ILSVRC-2012 has {OFFICIAL['classes']} classes, {OFFICIAL['train']} train "
                     f"and {OFFICIAL['val']} val images; this tree differs (a subset or a stand-in?)")
    return lines
