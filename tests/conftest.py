"""Shared test fixtures.

- W&B never touches the network in tests: WANDB_MODE=disabled unless a test opts into the offline
  fixture (`wandb_offline`), which follows stack.md's recipe (no key, black-holed base URL, every
  W&B directory under tmp).
- `slurm_cluster`: the local two-node SLURM test cluster (scripts/slurm/start_slurm.sh). Tests that
  use it FAIL when CI=true and the cluster is down (CI must have started it), and skip otherwise.
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable  # the project's .venv python: SLURM jobs run it too (submitit uses it)
PLUGINS = REPO / "tests" / "plugins"
PAUSE_PLUGIN = PLUGINS / "pause.py"


def with_plugins(*plugins: Path) -> dict:
    """Environment that loads the test plugins (tests/plugins/*.py) into every Python process
    started with it - the trainer, torchrun's workers, the launcher and its jobs - through
    tests/plugins/site/sitecustomize.py (on PYTHONPATH) and PRUNEREPRO_TEST_PLUGINS. The product
    has no hook for them: they wrap its public functions."""
    path = os.pathsep.join(filter(None, [str(PLUGINS / "site"), os.environ.get("PYTHONPATH", "")]))
    return {"PYTHONPATH": path, "PRUNEREPRO_TEST_PLUGINS": os.pathsep.join(map(str, plugins))}


def pause_at_step(step: int, seconds: float) -> dict:
    """Environment that makes a trainer pause after optimizer step ``step`` (tests/plugins/pause.py)."""
    return {**with_plugins(PAUSE_PLUGIN), "PRUNEREPRO_TEST_PAUSE_AT_STEP": f"{step}:{seconds}"}


def compile_stats(path: Path, *also: Path) -> dict:
    """Environment that makes a trainer log, after every optimizer step, how many graphs
    torch.compile has compiled so far into ``path`` (tests/plugins/compile_stats.py); ``also``:
    more plugins to load with it (their own variables are the caller's to add)."""
    return {**with_plugins(PLUGINS / "compile_stats.py", *also), "PRUNEREPRO_TEST_COMPILE_STATS": str(path)}


def pause_in_write(name: str, seconds: float, nth: int = 1) -> dict:
    """Environment that makes the ``nth`` atomic write of file ``name`` pause half-way."""
    return {**with_plugins(PAUSE_PLUGIN), "PRUNEREPRO_TEST_PAUSE_IN_WRITE": f"{name}:{seconds}:{nth}"}


def pause_in_phase(phase: str, seconds: float) -> dict:
    """Environment that makes rank 0 pause at the start of ``phase`` (startup | final)."""
    return {**with_plugins(PAUSE_PLUGIN), "PRUNEREPRO_TEST_PAUSE_IN_PHASE": f"{phase}:{seconds}"}

_WANDB_VARS = ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR",
               "WANDB_DATA_DIR", "WANDB_BASE_URL", "WANDB_ERROR_REPORTING", "WANDB_SILENT",
               "WANDB__DISABLE_STATS")


# Session-wide too: module/session fixtures that train run before the per-test fixture below.
os.environ["WANDB_MODE"] = "disabled"
os.environ["WANDB_SILENT"] = "true"
# One OpenMP thread in every process the tests start (trainers, torchrun workers, launcher jobs,
# the ISA matrix's child pytest), as in the test process itself (`_one_thread` below). The suite
# runs several things at once on 2 cores (xdist workers, or a trainer beside its test): a 2-thread
# op then spins while its other thread waits for a core. Measured on a loaded 2-core machine: a
# ResNet-20 forward of 8 images took 25 ms of CPU at 1 thread and 242 ms at 2.
os.environ["OMP_NUM_THREADS"] = "1"


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
    """A session-wide scratch folder on the shared file system (SLURM jobs see /tmp here). Under
    pytest-xdist it is one folder for all workers (their base folders' parent), so data that a
    fixture generates once is generated once per session, not once per worker."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    (root / "shared").mkdir(exist_ok=True)
    return root / "shared"


def _smoke_data(root, table: str):
    from filelock import FileLock

    from repro.papers import load_table
    from repro.runs.smoke import prepare_smoke_data
    root.mkdir(exist_ok=True)
    with FileLock(root / f".{table}.lock"):  # another worker may be writing it: wait, then reuse
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


class WarmPython:
    """Commands forked from a warm Python (tests/zygote.py): `python -m MODULE ...` / `python
    SCRIPT ...` with the imports already done, so dozens of short commands fit the CI budget. The
    zygote runs with one OpenMP thread (its children inherit that: the thread count changes float
    rounding, so every trainer of a bit-exactness test must run alike; and on 2 shared cores idle
    OpenMP threads only spin)."""

    def __init__(self, logs: Path):
        self.logs, self.n, self.ended, self.started = logs, 0, {}, queue.Queue()
        self.p = subprocess.Popen([PYTHON, str(REPO / "tests" / "zygote.py")], cwd=REPO, text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            msg = json.loads(line)
            if "rc" in msg:
                self.ended[msg["pid"]] = msg["rc"]
            else:
                self.started.put(msg["pid"])

    def start(self, argv: list[str], env: dict | None = None, split: bool = False) -> tuple[int, Path]:
        """Start a command (its environment: this process's plus ``env``); returns (pid, log file).
        ``split``: its stderr goes to the log file's name + ".err" instead."""
        self.n += 1
        log = self.logs / f"command-{self.n}.log"
        full = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
        req = {"argv": argv, "env": full, "log": str(log), **({"err": f"{log}.err"} if split else {})}
        self.p.stdin.write(json.dumps(req) + "\n")
        self.p.stdin.flush()
        return self.started.get(timeout=300), log

    def wait_for(self, pred, pid: int, log: Path, timeout: float = 600) -> None:
        end = time.time() + timeout
        while not pred():
            assert pid not in self.ended, f"command ended (rc {self.ended.get(pid)}) early:\n{log.read_text()[-3000:]}"
            assert time.time() < end, "timed out waiting for the awaited point"
            time.sleep(0.02)

    def wait(self, pid: int, timeout: float = 600) -> int:
        end = time.time() + timeout
        while pid not in self.ended:
            assert time.time() < end, f"command {pid} did not end"
            time.sleep(0.02)
        return self.ended[pid]

    def run(self, argv: list[str], env: dict | None = None, timeout: float = 600) -> tuple[int, str]:
        """Run a command to its end: (exit code, its stdout and stderr)."""
        pid, log = self.start(argv, env)
        rc = self.wait(pid, timeout)
        return rc, log.read_text()

    def close(self):
        self.p.stdin.close()
        self.p.wait(60)


_SHARED: list[WarmPython] = []


def shared_warm() -> WarmPython:
    """This process's warm Python, started on first use (the ``warm`` fixture, and the trainer
    runs of tests/test_train.py's ``cli``/``popen``); closed when the session ends."""
    if not _SHARED:
        import tempfile
        _SHARED.append(WarmPython(Path(tempfile.mkdtemp(prefix="prunerepro-warm-"))))
    return _SHARED[0]


def pytest_sessionfinish(session, exitstatus):
    while _SHARED:
        z = _SHARED.pop()
        z.close()
        shutil.rmtree(z.logs, ignore_errors=True)


@pytest.fixture(scope="session")
def warm():
    return shared_warm()


# Files whose tests share one resource and must not run side by side on two xdist workers.
SERIAL_GROUPS = {"tests/test_slurm_cluster.py": "slurm-cluster", "tests/test_slurm_launch.py": "slurm-cluster"}


# The longest groups, longest first (fresh-clone run of the README command on a 2-core machine,
# seconds: ISA rows 100-180 each, two launchers 137 (with its data 163), launch smoke 126, the
# SLURM files together ~230): started first, so that the run does not end on one of them while
# the other workers idle. The other groups with slow tests follow in file order, then the rest.
LONGEST = ("tests/test_isa_matrix.py", "slurm-cluster", "tests/test_reliability.py", "tests/test_launch_smoke.py",
           "tests/test_preemption.py", "tests/test_train_ddp.py", "tests/test_export.py", "tests/test_gpu_check.py")


def xdist_group(nodeid: str) -> str:
    """The group a test runs in under pytest-xdist: its file; both SLURM files as one (one test
    cluster); each ISA-matrix row on its own."""
    path = nodeid.split("::")[0]
    return nodeid if path == "tests/test_isa_matrix.py" else SERIAL_GROUPS.get(path, path)


def pytest_collection_modifyitems(session, config, items):
    """Order: the longest groups (LONGEST), then the other groups with `slow` tests, so that no long
    test starts last while the other workers idle (xdist hands groups out in this order: `pytest_xdist_make_scheduler`). Without
    xdist the order is the same and the ISA matrix starts in a background thread right after
    collection (tests/test_isa_matrix.py)."""
    slow = {xdist_group(i.nodeid) for i in items if i.get_closest_marker("slow")}

    def rank(item) -> tuple:
        g = xdist_group(item.nodeid)
        first = next((n for n, prefix in enumerate(LONGEST) if g.startswith(prefix)), len(LONGEST))
        return g not in slow, first

    items.sort(key=rank)  # stable: within a group the file's order stays
    matrix = [i for i in items if i.nodeid.startswith("tests/test_isa_matrix.py")]
    if matrix and not config.option.collectonly and not os.environ.get("PYTEST_XDIST_WORKER"):
        matrix[0].module.start()  # the module instance the tests will read their results from


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`-n 3 --dist loadgroup` (the README's test command): whole groups (``xdist_group``) to a
    worker, handed out in collection order. A file's module fixtures are then built once, not once
    per worker. xdist's own loadgroup cannot group here: it renames node ids to carry the group,
    which pytest 9 no longer allows (each test became a group of its own), and it would reorder
    groups by their number of tests."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Groups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group(nodeid)

    config.option.loadscopereorder = False
    return Groups(config, log)

