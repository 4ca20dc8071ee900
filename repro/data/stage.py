"""Opt-in staging of the .beton files to node-local disk (``data.stage_dir``, the launcher's
``--stage-data DIR``).

Without it, FFCV reads the .beton files from shared storage: on every fresh node (and again after
each requeue onto another node) the first epoch pulls ImageNet's ~65 GB in by random page faults.
Staged, each node copies them once, sequentially, to ``DIR/<data folder name>-<hash of its
path>/`` and every later job on that node reads the local copy.

The rules, per file (``train.beton``, ``val.beton``, ``dataset.json``):

* One copier per node and file: a file lock beside the copy (``NAME.lock``, flock: released by
  the kernel if its holder dies). The other ranks of the node wait on it, then reuse the copy.
* Never a torn copy: the copy is written under a temporary name, flushed, read back and compared
  with the source (size, and the sha256 computed while reading the source), and only then
  renamed onto the final name (atomic). A copy killed half-way leaves only its temporary file,
  which the next holder of the lock removes (nobody writes it any more: writing needs the lock).
* Reused when present: the final name exists only after a verified copy, and its record
  (``NAME.staged.json``: the source's path, size, mtime and sha256) still matches the source's
  size and mtime, and the copy's size the recorded one. A changed source is copied again.
* Never deleting what another job uses: a copy is only ever replaced by ``os.replace`` (a job
  still reading the old file keeps its inode), never unlinked; nothing else is removed.
* Not enough room, or a folder that cannot be written: one warning line and the shared copy is
  read, as without staging (a run is never failed for an optimisation).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
from pathlib import Path

from filelock import FileLock

log = logging.getLogger(__name__)

FILES = ("train.beton", "val.beton", "dataset.json")
CHUNK = 16 << 20
TMP_MARK = ".tmp-"


def stage(src: Path, stage_dir: str) -> Path:
    """The folder to read the data from: `src`'s files copied (once per node) under `stage_dir`,
    or `src` itself when staging is off or not possible here."""
    if not stage_dir:
        return src
    src = Path(src).resolve()
    root = Path(os.path.expandvars(stage_dir)).expanduser()
    dest = root / f"{src.name}-{hashlib.sha256(str(src).encode()).hexdigest()[:12]}"
    if not root.is_absolute():  # e.g. a $VARIABLE this node does not set
        log.warning("data not staged: data.stage_dir=%s is %s here, not an absolute path; reading %s",
                    stage_dir, root, src)
        return src
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            if (src / name).is_file():
                what = stage_file(src / name, dest / name)
                log.info("staged data: %s %s (%s)", dest / name, what, src / name)
    except OSError as e:
        log.warning("data not staged to %s (%s): reading %s", dest, e, src)
        return src
    return dest


def stage_file(src: Path, dst: Path) -> str:
    """Make `dst` a verified copy of `src` (under its lock); returns 'reused' or 'copied'."""
    with FileLock(str(dst) + ".lock"):
        st = src.stat()
        record = _read_record(dst)
        same_source = record is not None and (record["size"], record["mtime_ns"]) == (st.st_size, st.st_mtime_ns)
        if same_source and dst.is_file() and dst.stat().st_size == record["size"]:
            return "reused"
        for stale in dst.parent.glob(dst.name + TMP_MARK + "*"):  # a copier killed half-way
            stale.unlink()
        free = shutil.disk_usage(dst.parent).free  # an old copy a job still reads frees nothing
        if free < st.st_size:
            raise OSError(f"{st.st_size / 2**30:.1f} GiB needed for {dst.name}, {free / 2**30:.1f} GiB free")
        tmp = dst.with_name(f"{dst.name}{TMP_MARK}{socket.gethostname()}-{os.getpid()}")
        try:
            digest = _copy_hashing(src, tmp)
            if tmp.stat().st_size != st.st_size or _sha256(tmp) != digest:
                raise OSError(f"the copy of {src} read back differs from it")
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)
        _write_record(dst, {"source": str(src), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest})
        return "copied"


def _record_path(dst: Path) -> Path:
    return dst.with_name(dst.name + ".staged.json")


def _read_record(dst: Path) -> dict | None:
    try:
        record = json.loads(_record_path(dst).read_text())
        return record if isinstance(record.get("size"), int) and isinstance(record.get("mtime_ns"), int) else None
    except (OSError, ValueError, AttributeError):
        return None


def _write_record(dst: Path, record: dict) -> None:
    """Written after the copy is in place: a record always describes the file under its name."""
    path = _record_path(dst)
    tmp = path.with_name(path.name + TMP_MARK + str(os.getpid()))
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)


def _copy_hashing(src: Path, dst: Path) -> str:
    """Copy sequentially (one pass over shared storage), hashing what was read; fsync the copy."""
    h = hashlib.sha256()
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while chunk := fin.read(CHUNK):
            h.update(chunk)
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return h.hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()
