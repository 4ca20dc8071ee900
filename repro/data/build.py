"""`check_data` and `build_loaders`: the data part's public entry points."""
from __future__ import annotations

import functools
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..choices import DATASETS, LOADERS
from .cpus import resolve_workers, task_cpus
from .stage import stage
from .errors import DataError
from .stats import STATS

log = logging.getLogger(__name__)
NO_FFCV = ("FFCV is not importable here: install it (`pip install -e .[ffcv]`, see scripts/setup.sh) or set "
           "data.loader=plain")


@dataclass
class Loaders:
    train: Any            # EpochLoader: len(), set_epoch(e), iterate(start_batch=0)
    val: Any
    num_classes: int
    num_train: int        # images in the whole training set (all ranks)
    num_val: int          # images in the whole validation set (all ranks)


def _write_cmd(cfg) -> str:
    out = cfg.ffcv_dir or "DIR"
    if cfg.name == "digits":
        return f"python -m repro.data.write digits --out {out}"
    return f"python -m repro.data.write {cfg.name} --src {cfg.path or '<SRC>'} --out {out}"


def _check_cfg(cfg) -> None:
    # DataConfig validates these already; repeated for configs built some other way.
    if cfg.name not in DATASETS:
        raise DataError(f"data.name='{cfg.name}' is not one of {', '.join(DATASETS)}")
    if cfg.loader not in LOADERS:
        raise DataError(f"data.loader='{cfg.loader}' is not one of {', '.join(LOADERS)}")
    if cfg.batch_size < 1 or cfg.workers < -1:
        raise DataError(f"data.batch_size must be >= 1 and data.workers >= -1 (auto) "
                        f"(got {cfg.batch_size}, {cfg.workers})")
    if cfg.name == "imagenet" and not (8 <= cfg.val_res <= cfg.val_resize and cfg.train_res >= 8):
        raise DataError(f"data.val_res ({cfg.val_res}) must be >= 8 and <= data.val_resize "
                        f"({cfg.val_resize}), data.train_res ({cfg.train_res}) >= 8")


def check_data(cfg) -> None:
    """Cheap pre-flight check of a `repro.config.DataConfig`; raises DataError (one line)."""
    _check_cfg(cfg)
    if cfg.loader == "ffcv":
        if importlib.util.find_spec("ffcv") is None:  # (importing it costs seconds: build_loaders does)
            raise DataError(NO_FFCV)
        if not cfg.ffcv_dir:
            if cfg.name == "digits":
                return  # converted on demand into the cache folder
            raise DataError(f"data.ffcv_dir is empty: convert the data with `{_write_cmd(cfg)}` "
                            f"and set data.ffcv_dir=DIR (or use data.loader=plain)")
        _check_betons(Path(cfg.ffcv_dir), cfg)
        return
    if cfg.name == "cifar10":
        from . import cifar10
        if not cfg.path:
            raise DataError("data.path is empty: set it to the folder of CIFAR-10 python pickles "
                            "(or make a stand-in with `python -m repro.data.synth cifar10 --out DIR`)")
        cifar10.check_layout(cfg.path)
    elif cfg.name == "imagenet":
        from . import imagenet
        if not cfg.path:
            raise DataError("data.path is empty: set it to the ImageNet root holding train/ and val/ "
                            "(or make a stand-in with `python -m repro.data.synth imagenet --out DIR`)")
        imagenet.list_classes(cfg.path)
        if not (Path(cfg.path) / "val").is_dir():
            raise DataError(f"ImageNet: {cfg.path} has no val/ folder (expected val/<wnid>/*.JPEG)")


def _check_betons(folder: Path, cfg) -> dict:
    """Both .beton files sound, and the data set they hold is ``cfg.name``; returns the identity.
    Checked once per process for the same files (a start-up asks several times, every rank)."""
    from .beton import IDENTITY
    files = [folder / "train.beton", folder / "val.beton", folder / IDENTITY]
    return _checked_betons(folder, cfg.name, f"rebuild with `{_write_cmd(cfg)}`", tuple(map(_file_version, files)))


def _file_version(path: Path) -> tuple | None:
    """What tells one version of a file from another: a replaced or rewritten file differs."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=16)
def _checked_betons(folder: Path, name: str, fix: str, versions: tuple) -> dict:
    from .beton import check_beton, check_identity
    counts = {s: check_beton(folder / f"{s}.beton", fix=fix) for s in ("train", "val")}
    return check_identity(folder, name, counts, fix)


def data_classes(cfg) -> int:
    """How many classes the configured data set has, without building a loader (after check_data)."""
    if cfg.loader == "ffcv" and cfg.ffcv_dir:
        return _check_betons(Path(cfg.ffcv_dir), cfg)["splits"]["train"]["label_max"] + 1
    if cfg.name == "imagenet" and cfg.loader == "plain":
        from . import imagenet
        return len(imagenet.list_classes(cfg.path))
    return 10  # cifar10, digits


def _beton_labels(path: Path) -> np.ndarray:
    from . import ffcv_import  # noqa: F401
    from ffcv.reader import Reader
    return np.asarray(Reader(str(path)).metadata["f1"])


def per_process_batch(batch_size: int, processes: int) -> int:
    """The images each of ``processes`` ranks gets per step of the global ``batch_size``: the one
    rule that the global batch divides by the process count (DataError in one line otherwise)."""
    if batch_size % processes:
        raise DataError(f"data.batch_size={batch_size} is not divisible by the {processes} processes of this run; "
                        f"use a multiple of {processes}")
    return batch_size // processes


def _train_images(cfg, enough: int) -> int:
    """The training set's size, known cheaply (after check_data): the .beton's checked header, the
    digits split, the CIFAR pickles, ImageNet's train/ files; the last two counted only until
    ``enough`` (reading or listing them all costs seconds to minutes)."""
    if cfg.loader == "ffcv" and cfg.ffcv_dir:
        return _check_betons(Path(cfg.ffcv_dir), cfg)["splits"]["train"]["images"]
    if cfg.name == "digits":
        from .digits import SPLIT_SIZES
        return SPLIT_SIZES["train"]
    n = 0
    if cfg.name == "cifar10":
        from .cifar10 import TRAIN_FILES, read_batch
        files = (Path(cfg.path) / f for f in TRAIN_FILES)
        count = lambda f: len(read_batch(f)[1])  # noqa: E731
    else:
        from .imagenet import _images, list_classes
        files = (Path(cfg.path) / "train" / c for c in list_classes(cfg.path))
        count = lambda f: len(_images(f))  # noqa: E731
    for f in files:
        n += count(f)
        if n >= enough:
            break
    return n


def check_batch_fits(cfg, n: int | None = None) -> None:
    """One global batch must fit in the training set (the last partial batch of an epoch is
    dropped, so a larger one would leave no training step). ``n``: the size when already known."""
    n = _train_images(cfg, cfg.batch_size) if n is None else n
    if n < cfg.batch_size:
        raise DataError(f"data.batch_size={cfg.batch_size} is larger than the {n} training images of "
                        f"{cfg.name}: lower data.batch_size")


def build_loaders(cfg, *, rank: int = 0, world_size: int = 1, device="cpu", seed: int = 0) -> Loaders:
    """Train and val loaders for this rank. `cfg.batch_size` is global: each rank gets
    batch_size // world_size images per batch."""
    check_data(cfg)
    if not 0 <= rank < world_size:
        raise DataError(f"rank {rank} outside 0..{world_size - 1}")
    per_rank = per_process_batch(cfg.batch_size, world_size)
    device = torch.device(device)
    workers = resolve_workers(cfg.workers, cfg.loader, cuda=device.type == "cuda")
    log.info("%s loader: %d worker(s) per rank (data.workers=%d, %d CPU(s) for this task)", cfg.loader,
             workers, cfg.workers, task_cpus())
    mean, std = STATS[cfg.name]
    common = dict(batch_size=per_rank, seed=seed, rank=rank, world=world_size)

    if cfg.loader == "ffcv":
        try:
            from .loaders_ffcv import FfcvLoader
        except ImportError as e:  # installed (check_data) but broken, e.g. a missing libturbojpeg
            raise DataError(f"{NO_FFCV} ({type(e).__name__}: {e})".replace("\n", " ")) from None
        folder = Path(cfg.ffcv_dir) if cfg.ffcv_dir else None
        if folder is None:  # digits only (check_data refused the others)
            from .digits import ensure_cached
            folder = ensure_cached()
        folder = stage(folder, cfg.stage_dir)  # node-local copy when asked for (data.stage_dir)
        n = {s: rec["images"] for s, rec in _check_betons(folder, cfg)["splits"].items()}
        num_classes = 10 if cfg.name != "imagenet" else int(_beton_labels(folder / "train.beton").max()) + 1
        make = lambda split, train, res: FfcvLoader(  # noqa: E731
            str(folder / f"{split}.beton"), n[split], kind=cfg.name, res=res, resize=cfg.val_resize,
            mean=mean, std=std, device=device, workers=workers, in_memory=cfg.in_memory,
            train=train, **common)
        train, val = make("train", True, cfg.train_res), make("val", False, cfg.val_res)
    else:
        from .loaders_plain import ArrayDataset, FolderDataset, PlainLoader
        if cfg.name == "imagenet":
            from . import imagenet
            tr_paths, tr_labels, classes = imagenet.scan(cfg.path, "train")
            va_paths, va_labels, _ = imagenet.scan(cfg.path, "val")
            num_classes = len(classes)
            ds_train = FolderDataset(tr_paths, tr_labels, train=True, seed=seed, res=cfg.train_res,
                                     resize=cfg.val_resize)
            ds_val = FolderDataset(va_paths, va_labels, train=False, seed=seed, res=cfg.val_res,
                                   resize=cfg.val_resize)
        else:
            from . import cifar10, digits
            read = (lambda s: cifar10.read_split(cfg.path, s)) if cfg.name == "cifar10" else digits.read_split
            num_classes = 10
            ds_train = ArrayDataset(*read("train"), train=True, seed=seed)
            ds_val = ArrayDataset(*read("val"), train=False, seed=seed)
        make = lambda ds, train: PlainLoader(ds, mean=mean, std=std, device=device,  # noqa: E731
                                             workers=workers, train=train, **common)
        train, val = make(ds_train, True), make(ds_val, False)

    check_batch_fits(cfg, train.n)  # len(train) == 0 exactly when train.n < per_rank * world_size
    return Loaders(train=train, val=val, num_classes=num_classes, num_train=train.n, num_val=val.n)
