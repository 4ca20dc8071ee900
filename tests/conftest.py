"""Shared test fixtures.

- W&B never touches the network in tests: WANDB_MODE=disabled unless a test opts into the offline
  fixture (`wandb_offline`), which follows stack.md's recipe (no key, black-holed base URL, every
  W&B directory under tmp).
- `slurm_cluster`: the local two-node SLURM test cluster (scripts/slurm/start_slurm.sh). Tests that
  use it FAIL when CI=true and the cluster is down (CI must have started it), and skip otherwise.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable  # the project's .venv python: SLURM jobs run it too (submitit uses it)
PAUSE_PLUGIN = REPO / "tests" / "plugins" / "pause.py"


def pause_at_step(step: int, seconds: float) -> dict:
    """Environment that makes a trainer pause after optimizer step ``step`` (tests/plugins/pause.py)."""
    return {"PRUNEREPRO_PLUGINS": str(PAUSE_PLUGIN), "PRUNEREPRO_TEST_PAUSE_AT_STEP": f"{step}:{seconds}"}


def pause_in_write(name: str, seconds: float, nth: int = 1) -> dict:
    """Environment that makes the ``nth`` atomic write of file ``name`` pause half-way."""
    return {"PRUNEREPRO_PLUGINS": str(PAUSE_PLUGIN), "PRUNEREPRO_TEST_PAUSE_IN_WRITE": f"{name}:{seconds}:{nth}"}

_WANDB_VARS = ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR",
               "WANDB_DATA_DIR", "WANDB_BASE_URL", "WANDB_ERROR_REPORTING", "WANDB_SILENT",
               "WANDB__DISABLE_STATS")


# Session-wide too: module/session fixtures that train run before the per-test fixture below.
os.environ["WANDB_MODE"] = "disabled"
os.environ["WANDB_SILENT"] = "true"


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread in the test process. On 2 cores a 2-thread OpenMP op stalls whenever its
    other thread is descheduled (tests start trainer/DDP subprocesses beside it), which made tiny
    ops take milliseconds; measured several times faster with one thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _wandb_disabled(monkeypatch):
    """Default for every test: W&B off, so nothing waits on a login prompt or the network."""
    for var in _WANDB_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_SILENT", "true")


@pytest.fixture
def wandb_offline(monkeypatch, tmp_path):
    """Opt-in: W&B offline with every directory under tmp and no way to reach a server."""
    d = tmp_path / "wandb-home"
    d.mkdir()
    monkeypatch.setenv("WANDB_MODE", "offline")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(d))
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")
    monkeypatch.setenv("WANDB__DISABLE_STATS", "true")
    return d


def slurm_up() -> bool:
    """True when a SLURM controller answers `scontrol ping` on this machine."""
    if shutil.which("scontrol") is None:
        return False
    try:
        out = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "UP" in out.stdout


@pytest.fixture(scope="session")
def slurm_cluster():
    """The local SLURM test cluster; fail under CI=true when it is down, skip otherwise."""
    if not slurm_up():
        msg = ("the local SLURM test cluster is not up; start it with "
               "`bash scripts/slurm/start_slurm.sh` (as root)")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but " + msg)
        pytest.skip(msg)
    partition = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True,
                               check=True).stdout.split()[0].rstrip("*")
    return {"partition": partition}


@pytest.fixture(scope="session")
def shared_tmp(tmp_path_factory):
    """A session-wide scratch folder on the shared file system (SLURM jobs see /tmp here)."""
    return tmp_path_factory.mktemp("shared")


def _smoke_data(root, table: str):
    from repro.papers import load_table
    from repro.runs.smoke import prepare_smoke_data
    prepare_smoke_data(load_table(table), root)
    return root


@pytest.fixture(scope="session")
def cifar_smoke_data(shared_tmp):
    """Generated CIFAR-10 stand-in in the real pickle layout, converted by the real writer (what
    table1/snf_cifar --smoke use). Returns the folder to pass as `--data`."""
    return _smoke_data(shared_tmp / "smoke-data", "table1")


@pytest.fixture(scope="session")
def imagenet_smoke_data(shared_tmp):
    """Generated ImageNet-layout JPEG tree, converted by the real writer (what table2 --smoke uses)."""
    return _smoke_data(shared_tmp / "smoke-data", "table2")
