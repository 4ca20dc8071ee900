"""The starting weights named by ``prune.init_from``.

Accepted forms:
  run:NAME    a finished run of the same table: the sibling run folder NAME next to this run's
              folder (what the table declarations write, so a run's name and hash never depend
              on where the runs live); its model.pt is loaded.
  torchvision:ARCH | torchvision:FILE
              torchvision's released V1 ImageNet weights, from torch's hub cache or that file,
              verified by the hash in the file name (``repro.models.torchvision_weights``).
  PATH        a finished run folder (its model.pt), a compact-model file, one of our checkpoints,
              or a plain state dict with torchvision's keys (optionally under "state_dict" /
              "model", with DDP's "module." prefixes).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from repro import rundir
from repro.config import ConfigError
from repro.io import dense_state_dict, load_dense_weights, load_torch_file
from repro.models import DENSE, ChannelSpec, build_model
from repro.models import torchvision_weights as tv



def resolve(init_from: str, run_dir: Path) -> Path:
    """The file or folder ``init_from`` names for the run in ``run_dir``."""
    if tv.is_spec(init_from):
        try:
            return tv.resolve(init_from)
        except tv.WeightsError as e:
            raise ConfigError(f"prune.init_from: {e}") from None
    if init_from.startswith(rundir.RUN_PREFIX):
        name = init_from[len(rundir.RUN_PREFIX):]
        if not name or "/" in name or name in (".", ".."):
            raise ConfigError(f"prune.init_from: {init_from!r} must be run:<run folder name> (a sibling folder)")
        return Path(run_dir).parent / name
    return Path(init_from)


def check_exists(init_from: str, run_dir: Path) -> None:
    """Fail before the run folder is touched when the starting point is not there at all."""
    if init_from and not resolve(init_from, run_dir).exists():
        raise ConfigError(f"prune.init_from: {resolve(init_from, run_dir)} does not exist")


class StartingPoint:
    """The starting model ``prune.init_from`` names for one run, loaded once per process and
    checked once: a dense ``arch`` with a ``num_classes`` head (every method starts from a dense
    model). The pre-flight checks it before the run folder is touched; the method takes it."""

    def __init__(self, init_from: str, run_dir: Path, arch: str, num_classes: int):
        self.init_from, self.run_dir, self.arch, self.num_classes = init_from, run_dir, arch, num_classes
        self._model: nn.Module | None = None

    def check(self) -> None:
        """Load and check it now (ConfigError in one line); kept for ``take``."""
        if self.init_from and self._model is None:
            check_exists(self.init_from, self.run_dir)
            model = load_init(self.init_from, self.run_dir, self.arch, self.num_classes)
            if model.spec != DENSE:
                raise ConfigError(f"prune.init_from: {self.init_from} holds a pruned model "
                                  f"({len(model.spec.convs)} convs narrowed); training starts from a dense one")
            self._model = model

    def take(self) -> nn.Module | None:
        """The checked starting model (None without ``prune.init_from``); not kept afterwards."""
        self.check()
        model, self._model = self._model, None
        return model


def _torchvision(init_from: str, arch: str) -> nn.Module:
    try:
        model = tv.load_model(init_from, arch=arch)
    except tv.WeightsError as e:
        raise ConfigError(f"prune.init_from: {e}") from None
    model.spec = DENSE
    return model


def _from_payload(path: Path, payload: Any, arch: str, num_classes: int) -> nn.Module:
    from repro.prune.compact import FORMAT as COMPACT_FORMAT, load_compact
    if isinstance(payload, dict) and payload.get("format") == COMPACT_FORMAT:
        return load_compact(path)
    if isinstance(payload, dict) and payload.get("format") == rundir.CHECKPOINT_FORMAT:
        spec = ChannelSpec.from_json(payload["spec"]) if payload.get("spec") else DENSE
        model = build_model(payload["arch"], num_classes=payload["num_classes"], spec=spec)
        model.load_state_dict(payload["model"])
        model.spec = spec
        return model
    # A plain state dict (e.g. torchvision's); its head size decides the model's.
    what = f"prune.init_from: {path}"
    sd = dense_state_dict(payload, what, ConfigError)
    fc = sd.get("fc.weight")
    model = build_model(arch, num_classes=fc.shape[0] if fc is not None else num_classes)
    load_dense_weights(model, sd, what, ConfigError)
    model.spec = DENSE
    return model


def _load(init_from: str, path: Path, arch: str, num_classes: int) -> tuple[nn.Module, Path]:
    if tv.is_spec(init_from):
        return _torchvision(init_from, arch), path
    if path.is_dir():
        res = rundir.read_result(path)
        if res is None or res.get("status") != "done":
            raise ConfigError(f"prune.init_from: run folder {path} has not finished (no result.json with "
                              "status done)")
        path = path / rundir.MODEL
        if not path.exists():
            raise ConfigError(f"prune.init_from: {path} is missing; the baseline run delivered no model")
    return _from_payload(path, load_torch_file(path, "prune.init_from", ConfigError), arch, num_classes), path


def load_init(init_from: str, run_dir: Path, arch: str, num_classes: int) -> nn.Module:
    """The starting model named by prune.init_from, as an ``arch`` model with ``.spec``."""
    model, path = _load(init_from, resolve(init_from, run_dir), arch, num_classes)
    if getattr(model, "arch", arch) != arch:
        raise ConfigError(f"prune.init_from: {path} holds a {model.arch}, this run trains a {arch}")
    head = model.fc.out_features
    if head != num_classes:
        raise ConfigError(f"prune.init_from: {path} has a {head}-class head, this run needs {num_classes} "
                          "(set model.num_classes or start from a model trained on this data)")
    return model
