"""What happens around the loop before it starts: input checks that need no process group, the run
folder's preparation (rank 0, outcome shared), process-wide switches, and start-up plugins."""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
from pathlib import Path

import torch

from repro import dist, rundir
from repro.config import Config, ConfigError
from repro.io import clean_tmp

from .init import check_exists

log = logging.getLogger(__name__)

# Instrumentation loaded once at start-up, before anything runs: a list of Python files separated
# by os.pathsep. The test suite's fault injection (tests/plugins/) uses it to pause a run at a
# known point; nothing in the production path depends on it.
PLUGINS_ENV = "PRUNEREPRO_PLUGINS"
_loaded: set[str] = set()


def load_plugins() -> None:
    for path in filter(None, os.environ.get(PLUGINS_ENV, "").split(os.pathsep)):
        if path in _loaded:
            continue
        spec = importlib.util.spec_from_file_location(f"_prunerepro_plugin_{len(_loaded)}", path)
        if spec is None or not Path(path).is_file():
            raise ConfigError(f"{PLUGINS_ENV}: {path} is not a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        _loaded.add(path)


def preflight(cfg: Config, run_dir: Path) -> None:
    """Input errors that need no process group: caught before the run folder is touched."""
    from repro.data import check_data
    check_data(cfg.data)
    check_exists(cfg.prune.init_from, run_dir)


def prepare_folder(cfg: Config, run_dir: Path, denv: dist.DistEnv) -> tuple[str, dict | None]:
    """Rank 0 checks/creates the folder; every rank learns the outcome (or the same error)."""
    out: tuple = ("ok", None)
    if denv.is_main:
        try:
            state = rundir.prepare(run_dir, cfg)
            prev = rundir.read_result(run_dir)
            if state != "done" and prev is not None:
                # A failed attempt is retried from its last good checkpoint (the launcher decides
                # whether to start it again); its result.json must go so "done" stays unambiguous.
                (run_dir / rundir.RESULT).unlink()
            removed = clean_tmp(run_dir)
            out = (state, {"prev": prev, "removed": removed})
        except (rundir.RunDirError, ConfigError) as e:
            out = ("error", {"message": str(e), "type": type(e).__name__})
    out = dist.broadcast_object(out)
    if out[0] == "error":
        cls = rundir.RunDirError if out[1]["type"] == "RunDirError" else ConfigError
        raise cls(out[1]["message"])
    return out


@contextlib.contextmanager
def process_switches(cfg: Config):
    """Deterministic kernels and cudnn autotuning for this run; restored afterwards, as run() may
    be called again in the same process."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
             torch.backends.cudnn.deterministic)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = not cfg.deterministic
    torch.backends.cudnn.deterministic = cfg.deterministic
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=True)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[1], saved[2]
