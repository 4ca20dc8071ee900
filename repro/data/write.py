"""Convert a data set to FFCV .beton files: `OUT/train.beton` and `OUT/val.beton`.

    python -m repro.data.write cifar10  --src CIFAR_DIR  --out OUT
    python -m repro.data.write imagenet --src IMAGENET_ROOT --out OUT [--max-res 512 --quality 90]
                                        [--val-labels LOC_val_solution.csv | DEVKIT] [--dry-run]
    python -m repro.data.write digits   --out OUT
    python -m repro.data.write identify {cifar10,imagenet,digits} --out OUT   (older conversions)

Beside them, OUT/dataset.json records which data set they hold (name, images, classes and image
sides per split); every reader checks it. Each file is written under a temporary name and renamed when complete; a malformed source is
refused with a one-line message naming the bad file, and nothing is left under the final name.
ImageNet's val/ may be flat, as downloaded: its labels come from the devkit or from Kaggle's
LOC_val_solution.csv (--val-labels, or found beside train/ and val/). `--dry-run` validates the
tree (classes, images per split, label coverage) without decoding or writing.
"""
from __future__ import annotations

import argparse
import sys
import time

from ..choices import DATASETS
from .errors import DataError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m repro.data.write", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="kind", required=True)
    c = sub.add_parser("cifar10", help="from the python-pickle layout (data_batch_1..5, test_batch, batches.meta); raw 32x32")
    c.add_argument("--src", required=True, help="folder holding the pickles")
    i = sub.add_parser("imagenet", help="from train/<wnid>/*.JPEG and val/ (class folders, or flat as "
                                         "downloaded with the devkit's or Kaggle's labels)")
    i.add_argument("--src", required=True, help="root holding train/ and val/")
    i.add_argument("--val-labels", default=None, metavar="FILE",
                   help="labels of a flat val/: Kaggle's LOC_val_solution.csv, the "
                        "ILSVRC2012_devkit_t12 folder or its .tar.gz (default: one of these found in --src)")
    i.add_argument("--dry-run", action="store_true",
                   help="only check the source tree (classes, images per split, label coverage); "
                        "decodes and writes nothing, --out not needed")
    i.add_argument("--max-res", type=int, default=512, help="cap on the longest side in pixels (default 512)")
    i.add_argument("--quality", type=int, default=90, help="JPEG quality of the stored images (default 90)")
    i.add_argument("--mode", choices=("jpg", "raw"), default="jpg",
                   help="FFCV write_mode: jpg (default; re-encoded at --quality) or raw pixels "
                        "(bigger files, no decoding cost)")
    d = sub.add_parser("digits", help="scikit-learn's digits, 32x32 RGB, fixed stratified 80/20 split")
    for s in (c, i, d):
        s.add_argument("--out", required=s is not i, help="folder for train.beton and val.beton")
        s.add_argument("--workers", type=int, default=-1, help="writer processes (default: all cores)")
    idf = sub.add_parser("identify", help="record which data set an existing conversion holds (its "
                                          "dataset.json), for .beton files written before the writer recorded it")
    idf.add_argument("name", choices=DATASETS)
    idf.add_argument("--out", required=True, help="the folder holding train.beton and val.beton")
    return p


def main(argv=None) -> int:
    a = _parser().parse_args(argv)
    t0 = time.time()
    try:
        if a.kind == "identify":
            return _identify(a.name, a.out)
        if not getattr(a, "dry_run", False):
            _check_out(a.out)
        if a.kind == "cifar10":
            from . import cifar10
            counts = cifar10.write(a.src, a.out, workers=a.workers)
        elif a.kind == "imagenet":
            from . import imagenet
            if a.dry_run:
                info = imagenet.check(a.src, a.val_labels)
                print("\n".join(imagenet.describe_check(a.src, info)))
                print(f"ok: nothing written; convert with `python -m repro.data.write imagenet --src "
                      f"{a.src}{f' --val-labels {a.val_labels}' if a.val_labels else ''} --out DIR`")
                return 0
            if not a.out:
                raise DataError("--out is required (or pass --dry-run to only check the source)")
            if a.max_res < 16 or not 1 <= a.quality <= 100:
                raise DataError("--max-res must be >= 16 and --quality within 1..100")
            counts = imagenet.write(a.src, a.out, max_res=a.max_res, quality=a.quality, mode=a.mode,
                                    workers=a.workers, val_labels=a.val_labels)
        else:
            from . import digits
            counts = digits.write(a.out, workers=a.workers)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. the disk filled up while writing: name the file, leave nothing half-written
        print(f"error: writing {e.filename or a.out} failed: {e.strerror or e}; free space or choose "
              "another --out and run again", file=sys.stderr)
        return 1
    print(f"wrote {a.out}/train.beton ({counts['train']} images) and {a.out}/val.beton "
          f"({counts['val']} images) in {time.time() - t0:.1f} s")
    if counts.get("converted"):
        from .imagenet import describe_converted
        print(describe_converted(counts["converted"]))
    return 0


def _check_out(out) -> None:
    """--out must be (or be creatable as) a folder we can write to; checked before any work, and
    without creating anything (a refused command leaves everything as it was)."""
    import os
    from pathlib import Path
    if out is None:
        return
    probe = Path(out).absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise DataError(f"--out {out} is not a folder path ({probe} is a file); give a folder path")
    if not os.access(probe, os.W_OK | os.X_OK):  # EROFS for a read-only file system, root included
        raise DataError(f"--out {out} is not a writable folder ({probe} is read-only or not yours); give a "
                        "folder you can write to")


def _identity_problem(name: str, splits: dict) -> str:
    """Why these summaries cannot be data set `name` ('' if they can)."""
    side = {"cifar10": 32, "digits": 32}.get(name)  # raw sets: every image is this square size
    for split, rec in splits.items():
        if side and (rec["min_side"], rec["max_side"]) != (side, side):
            return f"its {split} images are {rec['min_side']}..{rec['max_side']} px, {name} images are {side}x{side}"
        if side and rec["label_max"] >= 10:
            return f"its {split} labels go up to {rec['label_max']}, {name} has 10 classes"
    if name == "digits":
        from .digits import SPLIT_SIZES
        got = {s: splits[s]["images"] for s in ("train", "val")}
        if got != SPLIT_SIZES:
            return f"it has {got['train']}/{got['val']} train/val images, the digits split has " \
                   f"{SPLIT_SIZES['train']}/{SPLIT_SIZES['val']}"
    return ""


def _identify(name: str, out: str) -> int:
    from pathlib import Path
    from .beton import IDENTITY, check_beton, split_summary, write_identity
    for s in ("train", "val"):
        check_beton(Path(out) / f"{s}.beton")
    why = _identity_problem(name, {s: split_summary(Path(out) / f"{s}.beton") for s in ("train", "val")})
    if why:
        raise DataError(f"{out} cannot hold {name}: {why}")
    write_identity(Path(out), name, f"python -m repro.data.write identify {name}")
    print(f"wrote {Path(out) / IDENTITY}: {out} holds {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
