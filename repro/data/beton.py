"""Writing and checking FFCV `.beton` files.

Every file is written under a temporary name in the destination folder and renamed into place
only when FFCV has finished, so an interrupted or failed conversion never leaves a half-written
`.beton` under the final name. `check_beton` validates a file's structure without building a
Loader (FFCV itself may hang or crash on a truncated file).
"""
from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import numpy as np

from .errors import DataError

# FFCV's smallest page (2 MiB). Its default (8 MiB) makes small data sets needlessly large.
SMALL_PAGE = 1 << 21
FIELDS = ("image", "label")

# The .beton layout FFCV writes (ffcv/types.py: CURRENT_VERSION, HeaderType, FieldDescType,
# ALLOC_TABLE_TYPE), restated so that `check_beton` reads a header without importing FFCV: that
# import costs ~7 s of CPU (numba compiles a typed Dict in ffcv.fields.rgb_image), paid by every
# launcher start before any job runs. tests/test_data_ffcv.py asserts these equal FFCV's own.
FFCV_FORMAT_VERSION = 2
HEADER = np.dtype([("version", "<u2"), ("num_fields", "<u2"), ("page_size", "<u4"), ("num_samples", "<u8"),
                   ("alloc_table_ptr", "<u8")], align=True)
FIELD_DESC = np.dtype([("type_id", "<u1"), ("name", ("<u1", 16)), ("arguments", ("<u1", (1024,)))], align=True)
ALLOC_TABLE = np.dtype([("sample_id", "<u8"), ("ptr", "<u8"), ("size", "<u8")])


@contextlib.contextmanager
def atomic_path(final: Path):
    """Yield a temporary sibling of `final`; rename it to `final` on success, delete on error."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _workers(workers: int) -> int:
    return workers if workers and workers > 0 else (os.cpu_count() or 1)


class _ArraySource:
    """Indexable (image HWC uint8, label) pairs for ffcv.writer.DatasetWriter."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i])


def write_raw_split(path: Path, images: np.ndarray, labels: np.ndarray, workers: int = -1) -> int:
    """Raw (uncompressed) RGB images of one size + int labels -> `path`, bit-exact."""
    from . import ffcv_import  # noqa: F401
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter
    with atomic_path(path) as tmp:
        writer = DatasetWriter(str(tmp), {"image": RGBImageField(write_mode="raw"), "label": IntField()},
                               page_size=SMALL_PAGE, num_workers=min(_workers(workers), 4))
        writer.from_indexed_dataset(_ArraySource(images, labels), chunksize=1000)
    return len(images)


def _page_size(max_res: int | None) -> int:
    """Smallest power of two >= 2 MiB that holds one raw image of side `max_res` twice over
    (FFCV's writer processes hang, instead of failing, on a sample larger than a page)."""
    need = 2 * 3 * (max_res or 1024) ** 2
    return max(SMALL_PAGE, 1 << (need - 1).bit_length())


def write_image_split(path: Path, source, *, mode: str, max_res: int | None, quality: int,
                      workers: int = -1) -> int:
    """An indexable `source` of (HWC uint8 RGB, label) of varying sizes -> `path`.
    `mode`: FFCV's write_mode ('jpg' | 'raw'); `max_res`: longest side cap.
    `source.raise_errors()` reports decode failures recorded by the writer processes."""
    from . import ffcv_import  # noqa: F401
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter
    fields = {"image": RGBImageField(write_mode=mode, max_resolution=max_res, jpeg_quality=quality),
              "label": IntField()}
    try:
        with atomic_path(path) as tmp:
            writer = DatasetWriter(str(tmp), fields, page_size=_page_size(max_res),
                                   num_workers=_workers(workers))
            writer.from_indexed_dataset(source, chunksize=64)
            source.raise_errors()  # before the rename: a bad file leaves no .beton behind
    finally:
        source.close()
    return len(source)


def check_beton(path: str | Path, fix: str = "") -> int:
    """Validate the structure of a .beton; return its number of samples. `fix` is appended to
    the error message (the command that rebuilds the file)."""
    path = Path(path)
    hint = f"; {fix}" if fix else ""
    if not path.is_file():
        raise DataError(f"missing {path}{hint}")
    size = path.stat().st_size
    if size < HEADER.itemsize:
        raise DataError(f"{path} is truncated ({size} bytes, shorter than a .beton header){hint}")
    header = np.fromfile(path, dtype=HEADER, count=1)[0]
    if header["version"] != FFCV_FORMAT_VERSION:
        raise DataError(f"{path} is not an FFCV v{FFCV_FORMAT_VERSION} .beton (version field "
                        f"{header['version']}){hint}")
    n, nf, table = int(header["num_samples"]), int(header["num_fields"]), int(header["alloc_table_ptr"])
    desc_end = HEADER.itemsize + nf * FIELD_DESC.itemsize
    if nf != len(FIELDS) or size < desc_end:
        raise DataError(f"{path} is truncated or has {nf} fields instead of image, label{hint}")
    descs = np.fromfile(path, dtype=FIELD_DESC, count=nf, offset=HEADER.itemsize)
    names = tuple(d["name"].tobytes().split(b"\0")[0].decode("ascii", "replace") for d in descs)
    if names != FIELDS:
        raise DataError(f"{path} has fields {names}, expected {FIELDS}{hint}")
    if table == 0 or table > size or (size - table) % ALLOC_TABLE.itemsize:
        raise DataError(f"{path} is truncated ({size} bytes; its allocation table starts at "
                        f"byte {table}){hint}")
    alloc = np.fromfile(path, dtype=ALLOC_TABLE, offset=table)
    if n == 0:
        raise DataError(f"{path} holds no samples{hint}")
    if len(alloc) < n or np.any(alloc["ptr"] + alloc["size"] > table) or \
            len(np.unique(alloc["sample_id"])) != n or alloc["sample_id"].max() >= n:
        raise DataError(f"{path} is truncated or corrupt: its allocation table does not cover "
                        f"all {n} samples inside the file{hint}")
    return n


# ----------------------------------------------------------------------------- data-set identity
# Which data set a folder of .beton files holds, recorded by the writer beside them and checked
# by every reader: a digits conversion given as data.name=cifar10 would otherwise train without a
# word (both are 32x32 RGB with 10 classes). Counts and sizes also catch a .beton swapped later.
IDENTITY = "dataset.json"
IDENTITY_FORMAT = "prunerepro-dataset-v1"


def split_summary(path: Path) -> dict:
    """Images, classes (distinct labels), and the smallest/largest image side of one .beton."""
    from . import ffcv_import  # noqa: F401
    from ffcv.reader import Reader
    meta = Reader(str(path)).metadata
    labels, img = np.asarray(meta["f1"]), meta["f0"]
    sides = np.concatenate([np.asarray(img["width"]), np.asarray(img["height"])])
    return {"images": int(len(labels)), "classes": int(len(np.unique(labels))),
            "label_max": int(labels.max()), "min_side": int(sides.min()), "max_side": int(sides.max())}


def write_identity(out: Path, name: str, how: str) -> dict:
    """Record `out/dataset.json` for the two .beton files just written (atomic)."""
    from repro.io import atomic_write_json
    ident = {"format": IDENTITY_FORMAT, "name": name, "written_by": how,
             "splits": {s: split_summary(Path(out) / f"{s}.beton") for s in ("train", "val")}}
    atomic_write_json(Path(out) / IDENTITY, ident)
    return ident


def read_identity(folder: Path, fix: str) -> dict:
    """The folder's dataset.json, validated; DataError (one line, with `fix`) if missing or malformed."""
    import json
    p = Path(folder) / IDENTITY
    if not p.is_file():
        raise DataError(f"{folder} has no {IDENTITY} (which data set its .beton files hold); {fix}, or, if "
                        f"they are right, record it: `python -m repro.data.write identify NAME --out {folder}`")
    try:
        ident = json.loads(p.read_text())
        ok = ident.get("format") == IDENTITY_FORMAT and all(
            isinstance(ident["splits"][s][k], int) for s in ("train", "val")
            for k in ("images", "classes", "label_max", "min_side", "max_side"))
    except (ValueError, KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise DataError(f"{p} is malformed (not a {IDENTITY_FORMAT} record); {fix}")
    return ident


def check_identity(folder: Path, name: str, counts: dict[str, int], fix: str) -> dict:
    """The .beton files in `folder` are the data set `name` (as recorded when they were written)
    and still the files that were written (`counts`: images per split from their headers)."""
    ident = read_identity(folder, fix)
    if ident["name"] != name:
        raise DataError(f"{folder} holds {ident['name']} (its {IDENTITY}), not {name}: set "
                        f"data.name={ident['name']} or point data.ffcv_dir at a {name} conversion")
    for split, n in counts.items():
        rec = ident["splits"][split]
        if rec["images"] != n:
            raise DataError(f"{folder}/{split}.beton has {n} images but {IDENTITY} records {rec['images']}: "
                            f"the file was replaced after conversion; {fix}")
    return ident
