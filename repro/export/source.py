"""The model a run delivered, and the facts a user needs to feed it, read from its run folder.

Every check here only reads: a folder that is not a finished run, a model.pt of another format
version, is refused with one line (``ExportError``) before anything is written.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from repro import rundir
from repro.config import Config, ConfigError, config_hash, run_name
from repro.data.stats import STATS
from repro.prune.compact import FORMAT as MODEL_FORMAT
from repro.prune.compact import load_compact
from repro.prune.sfp import MaskError


class ExportError(ValueError):
    """Bad input to an export (the message is one line saying what and what to do)."""


@dataclass
class Delivered:
    model: nn.Module   # the delivered model as load_compact rebuilds it (eval mode, BN not folded)
    cfg: Config
    run_dir: Path

    @property
    def arch(self) -> str:
        return self.cfg.model.arch

    @property
    def num_classes(self) -> int:
        return self.model.fc.out_features

    def facts(self) -> dict:
        """What travels inside every exported file: how to feed the model and whose it is."""
        data = self.cfg.data
        mean, std = STATS[data.name]
        res = data.resolution
        facts = {"run_name": run_name(self.cfg), "config_hash": config_hash(self.cfg), "arch": self.arch,
                 "num_classes": self.num_classes, "data": data.name,
                 "input_size": [3, res, res], "input": "float32 NCHW, RGB in [0, 1], then (x - mean) / std",
                 "mean": list(mean), "std": list(std)}
        if data.name == "imagenet":
            facts["resize"] = data.val_resize  # shorter side, then the centre crop of input_size
        return facts


def _config(run_dir: Path) -> Config:
    path = run_dir / rundir.CONFIG
    if not run_dir.is_dir():
        raise ExportError(f"{run_dir} is not a folder; give a run folder (RUN_DIR)")
    if not path.is_file():
        raise ExportError(f"{run_dir} is not a run folder (no {rundir.CONFIG}); give the folder a run wrote")
    try:
        return Config.from_dict(rundir.read_json_file(path))
    except (rundir.RunDirError, ConfigError) as e:
        raise ExportError(f"{path} is unreadable ({e})") from None


def _check_done(run_dir: Path, cfg: Config) -> None:
    try:
        res = rundir.done_result(run_dir, cfg)
    except rundir.RunDirError as e:
        raise ExportError(str(e)) from None
    if res is not None:
        return
    got = rundir.read_result(run_dir)
    if got is None:
        why = "no result.json yet: it has not finished"
    elif got["status"] == "failed":
        why = f"it failed ({got.get('reason') or 'no reason recorded'})"
    else:
        why = f"its {rundir.MODEL} is missing"
    raise ExportError(f"{run_dir} is not a finished run: {why}; export a run whose result.json says done")


def _model(path: Path) -> nn.Module:
    """model.pt of this package's format version, or one line naming the version found."""
    try:  # mmap: the format field without reading every weight twice
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file: one line
        raise ExportError(f"{path} is not a readable model file ({type(e).__name__}); run the training "
                          "again to rewrite it") from None
    found = payload.get("format") if isinstance(payload, dict) else None
    if found != MODEL_FORMAT:
        raise ExportError(f"{path} is format {found!r}, not {MODEL_FORMAT!r}: it was written by another "
                          "version of this package; export it with that version")
    try:
        return load_compact(path).eval()
    except MaskError as e:
        raise ExportError(str(e)) from None


def read_run(run_dir: str | Path) -> Delivered:
    """The delivered model of a finished run folder (read only; ExportError when it is not one)."""
    run_dir = Path(run_dir)
    cfg = _config(run_dir)
    _check_done(run_dir, cfg)
    return Delivered(_model(run_dir / rundir.MODEL), cfg, run_dir)


def from_final_phase(run_dir: Path, cfg: Config) -> Delivered:
    """The model.pt the final phase has just written and checked (result.json comes after)."""
    return Delivered(_model(Path(run_dir) / rundir.MODEL), cfg, Path(run_dir))
