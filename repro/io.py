"""The ground floor: atomic file writes, torch files read with one-line errors, one weights digest.

Every module that writes a file a reader (or a resumed run) may see half-way goes through
``atomic_write_bytes``: the bytes go to ``NAME.tmp-PID`` in the same folder, are fsynced and
renamed over ``NAME``, so a reader sees the old file or the new one, never a torn one. A writer
killed with SIGKILL leaves its temp file behind; ``clean_tmp`` removes such leftovers.

Imports nothing from the project: the pruning library, the engine, the launcher and the table
builder all stand on it.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import torch

TMP_MARK = ".tmp-"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def tmp_name(path: Path) -> Path:
    """Where ``atomic_write_bytes`` writes ``path``'s bytes before the rename (one per process)."""
    return path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:  # an error (disk full, ...): leave no partial file; a kill -9 leaves one, see clean_tmp
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:  # a failed write() names no file: name it
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise
    _fsync_dir(path.parent)


def _json_default(o):
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, torch.Tensor) and o.numel() == 1:
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def json_bytes(obj: Any) -> bytes:
    """The one JSON layout of every file we write: sorted keys, 2-space indent, final newline."""
    return (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode()


def atomic_write_json(path, obj: Any) -> None:
    atomic_write_bytes(path, json_bytes(obj))


def atomic_torch_save(path, obj: Any) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def read_json(path) -> Any:
    with open(path) as f:
        return json.load(f)


def clean_tmp(folder: Path) -> list[str]:
    """Remove temporary files a killed writer left behind in ``folder``; return their names."""
    removed = []
    for p in Path(folder).glob(f"*{TMP_MARK}*"):
        p.unlink(missing_ok=True)
        removed.append(p.name)
    return removed


# ----------------------------------------------------------------------------- torch files
def load_torch_file(path, what: str, error: type[Exception] = ValueError) -> Any:
    """``torch.load`` (weights only, to CPU) with one-line errors naming ``what`` was being read."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise error(f"{what}: {path} does not exist") from None
    except Exception as e:  # truncated, foreign or pickled-code file
        raise error(f"{what}: {path} is not a readable torch file ({type(e).__name__})") from None


def dense_state_dict(obj: Any, what: str, error: type[Exception] = ValueError) -> dict:
    """The model weights a loaded checkpoint ``obj`` holds: ``obj`` itself or its 'state_dict' /
    'model' entry, with DDP's 'module.' and torch.compile's '_orig_mod.' prefixes removed."""
    for k in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(k), dict):
            obj = obj[k]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise error(f"{what} holds no model state dict")
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in obj.items()}


def load_dense_weights(model: torch.nn.Module, obj: Any, what: str, error: type[Exception] = ValueError) -> None:
    """Load ``dense_state_dict(obj)`` into ``model`` strictly; errors are one line naming ``what``."""
    state = dense_state_dict(obj, what, error)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        lines = str(e).strip().splitlines()
        raise error(f"{what} does not fit a dense {getattr(model, 'arch', type(model).__name__)}: "
                    f"{lines[1].strip() if len(lines) > 1 else lines[0]}") from None


def weights_digest(model_or_state: torch.nn.Module | dict, length: int = 16) -> str:
    """sha256 over every tensor of a state dict (or a module's), in sorted key order, with the
    names: the one fingerprint of weights (rank agreement checks, sensitivity cache keys)."""
    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k].detach()
        if v.dtype == torch.bfloat16:  # numpy has no bfloat16; float32 holds it exactly
            v = v.float()
        h.update(k.encode())
        h.update(v.cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:length]
