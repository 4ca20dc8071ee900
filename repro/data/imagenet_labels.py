"""Labels of ImageNet's flat validation folder, read from the files it is distributed with.

The official validation set is one folder of ILSVRC2012_val_00000001.JPEG ... 00050000.JPEG.
Their labels come from either
  * the devkit (ILSVRC2012_devkit_t12/, or its .tar.gz as downloaded): data/meta.mat maps the
    ILSVRC2012_IDs 1..1000 of the leaf synsets to WNIDs (IDs are NOT in sorted-WNID order), and
    data/ILSVRC2012_validation_ground_truth.txt holds the ID of image k on line k; or
  * Kaggle's LOC_val_solution.csv: `ImageId,PredictionString`, where the first token of the
    prediction string is the image's WNID (then its boxes, possibly several).
Both are turned into {image name without extension: WNID}; the class index is decided by the
caller (the WNID's position among the sorted train/ folders).
"""
from __future__ import annotations

import csv
import io
import re
import tarfile
from pathlib import Path

from .errors import DataError

DEVKIT = "ILSVRC2012_devkit_t12"
META = "data/meta.mat"
GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"
KAGGLE_CSV = "LOC_val_solution.csv"
# Looked for beside train/ and val/ when no label file is named, in this order.
DISCOVERABLE = (KAGGLE_CSV, DEVKIT, f"{DEVKIT}.tar.gz", f"{DEVKIT}.tar")
_WNID = re.compile(r"n\d{8}$")


def val_name(k: int) -> str:
    """The devkit's name of the k-th (1-based) validation image, without extension."""
    return f"ILSVRC2012_val_{k:08d}"


def discover(root: Path) -> Path | None:
    """The first label file of DISCOVERABLE found directly in `root`, or None."""
    for name in DISCOVERABLE:
        if (Path(root) / name).exists():
            return Path(root) / name
    return None


def read(source: str | Path) -> dict[str, str]:
    """{image name without extension: WNID} from a Kaggle CSV, a devkit folder, a devkit tarball,
    or the devkit's ground-truth .txt (with meta.mat beside it)."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"ImageNet: validation label file {source} does not exist")
    name = source.name.lower()
    if name.endswith(".csv"):
        return read_kaggle_csv(source)
    if source.is_dir():
        root = source / DEVKIT if (source / DEVKIT).is_dir() else source
        return _from_devkit(_read_file(root / META), _read_file(root / GROUND_TRUTH), root)
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        return _from_devkit(*_read_tar(source), source)
    if name.endswith(".txt"):
        return _from_devkit(_read_file(source.parent / "meta.mat"), _read_file(source), source)
    raise DataError(f"ImageNet: {source} is not a validation label file (expected {KAGGLE_CSV}, "
                    f"the {DEVKIT} folder or {DEVKIT}.tar.gz)")


def _read_file(path: Path) -> bytes:
    if not path.is_file():
        raise DataError(f"ImageNet: devkit file {path} does not exist (expected {DEVKIT}/{META} and "
                        f"{DEVKIT}/{GROUND_TRUTH})")
    return path.read_bytes()


def _read_tar(path: Path) -> tuple[bytes, bytes]:
    """meta.mat and the ground truth straight from the devkit tarball, without extracting it."""
    try:
        with tarfile.open(path) as tar:
            found = {}
            for member in tar:
                for want in (META, GROUND_TRUTH):
                    if member.isfile() and member.name.endswith(want):
                        found[want] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"ImageNet: {path} is not a readable tar archive ({type(e).__name__})") from None
    missing = [w for w in (META, GROUND_TRUTH) if w not in found]
    if missing:
        raise DataError(f"ImageNet: {path} holds no {missing[0]} (is it {DEVKIT}.tar.gz?)")
    return found[META], found[GROUND_TRUTH]


def _leaf_wnids(meta: bytes, where: Path) -> dict[int, str]:
    """ILSVRC2012_ID -> WNID of the leaf synsets (num_children == 0) in meta.mat."""
    import scipy.io
    try:
        synsets = scipy.io.loadmat(io.BytesIO(meta), squeeze_me=True)["synsets"]
        ids = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets.ravel()
               if int(s["num_children"]) == 0}
    except Exception as e:  # not a MATLAB file, or a struct without these fields
        raise DataError(f"ImageNet: {where}: meta.mat is not the devkit's synsets table "
                        f"({type(e).__name__}: {e})") from None
    if not ids:
        raise DataError(f"ImageNet: {where}: meta.mat lists no leaf synsets")
    return ids


def _from_devkit(meta: bytes, truth: bytes, where: Path) -> dict[str, str]:
    ids = _leaf_wnids(meta, where)
    labels = {}
    for k, line in enumerate(truth.decode("ascii", "replace").splitlines(), start=1):
        try:
            labels[val_name(k)] = ids[int(line)]
        except (ValueError, KeyError):
            raise DataError(f"ImageNet: {where}: line {k} of the validation ground truth is "
                            f"'{line.strip()[:20]}', not an ILSVRC2012_ID of meta.mat "
                            f"({min(ids)}..{max(ids)})") from None
    if not labels:
        raise DataError(f"ImageNet: {where}: the validation ground truth is empty")
    return labels


def read_kaggle_csv(path: Path) -> dict[str, str]:
    labels = {}
    with open(path, newline="") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header is None or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
            raise DataError(f"ImageNet: {path} does not start with the header "
                            f"'ImageId,PredictionString' of Kaggle's {KAGGLE_CSV}")
        for line, row in enumerate(rows, start=2):
            wnid = row[1].split()[0] if len(row) >= 2 and row[1].split() else ""
            if not _WNID.match(wnid):
                raise DataError(f"ImageNet: {path} line {line}: expected 'ImageId,WNID ...' "
                                f"(e.g. ILSVRC2012_val_00008726,n02119789 255 142 454 329), "
                                f"got '{','.join(row)[:60]}'")
            image = row[0].strip()
            labels[image.rsplit(".", 1)[0] if "." in image else image] = wnid
    if not labels:
        raise DataError(f"ImageNet: {path} lists no images")
    return labels
