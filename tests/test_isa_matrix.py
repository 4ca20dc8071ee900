"""The numerics-sensitive tests again, under other CPU kernels (issue: a tolerance fitted to one
instruction set fails on the next machine).

Every test marked ``numerics`` (DDP equivalence, compact-model exactness, resume bit-identity,
hard-prune exactness) runs once more in a child pytest per row of MATRIX: ATen's vectorised kernels
capped by ``ATEN_CPU_CAPABILITY`` and oneDNN's (the convolutions) by ``ONEDNN_MAX_CPU_ISA``. The
main suite already runs them with the CPU's own capability, so the rows below it are run here; the
row of the CPU's own capability and rows above it are skipped, saying so. Each child is first asked
(tests/isa_probe.py) what it really got, since both libraries fall back silently.

Under pytest-xdist (the README's test command) each row is a test like any other, scheduled first
on whichever worker is free (conftest.py). Without xdist the children run in a background thread
started right after collection (``start``, called from conftest.py), so the matrix runs beside a
serial suite instead of adding its minutes to it; each test then waits for its row.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading

import pytest
import torch

from tests.test_train import REPO

# (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, what the probe must then report for oneDNN)
MATRIX = [("default", "SSE41", "SSE4.1"), ("avx2", "AVX2", "AVX2"), ("avx512", "AVX512_CORE", "AVX-512")]
ATEN_ORDER = ["DEFAULT", "AVX2", "AVX512"]
_results: dict[str, dict] = {}
_done = threading.Event()

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def numerics_files() -> list[str]:
    """The test files that mark tests ``numerics`` (the child collects only these: collecting the
    whole suite costs most of a minute on 2 cores)."""
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
                  if "mark.numerics" in p.read_text() and p.name != "test_isa_matrix.py")


def why_not(aten: str) -> str | None:
    """None if this row is to run here, else why not."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return f"x86 kernel choices; this is {platform.machine()}"
    native = torch.backends.cpu.get_cpu_capability()
    if native not in ATEN_ORDER or ATEN_ORDER.index(aten.upper()) > ATEN_ORDER.index(native):
        return f"this CPU's ATen capability is {native}"
    if aten.upper() == native:
        return f"{native} is this CPU's own capability: the main suite runs the numerics tests with it"
    return None


def _run_row(aten: str, onednn: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}  # a plain child pytest
    env.update(ATEN_CPU_CAPABILITY=aten, ONEDNN_MAX_CPU_ISA=onednn)
    probe = subprocess.run([sys.executable, "-m", "tests.isa_probe"], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=120)
    if probe.returncode != 0:
        return {"probe": None, "error": probe.stderr[-2000:]}
    child = subprocess.run([sys.executable, "-m", "pytest", "-m", "numerics", "-q", "-x", "-p", "no:cacheprovider",
                            *numerics_files()], cwd=REPO, env=env, capture_output=True, text=True, timeout=1700)
    return {"probe": json.loads(probe.stdout.strip().splitlines()[-1]), "rc": child.returncode,
            "stdout": child.stdout, "stderr": child.stderr}


def _run_all() -> None:
    try:
        for aten, onednn, _ in MATRIX:
            if why_not(aten) is None:
                try:
                    _results[aten] = _run_row(aten, onednn)
                except Exception as e:  # noqa: BLE001 - reported by the row's test
                    _results[aten] = {"probe": None, "error": f"{type(e).__name__}: {e}"}
    finally:
        _done.set()


def start() -> None:
    """Start the matrix in the background (once)."""
    if not getattr(start, "started", False):
        start.started = True
        threading.Thread(target=_run_all, name="isa-matrix", daemon=True).start()


@pytest.mark.parametrize("aten,onednn,onednn_name", MATRIX, ids=[f"{a}-{o}" for a, o, _ in MATRIX])
def test_numerics_tests_pass_under_other_kernels(aten, onednn, onednn_name):
    reason = why_not(aten)
    if reason:
        pytest.skip(reason)
    if os.environ.get("PYTEST_XDIST_WORKER"):  # a worker of its own runs this row beside the rest
        r = _run_row(aten, onednn)
    else:
        start()  # (already started after collection, unless this module was imported some other way)
        assert _done.wait(1750), "the ISA matrix did not finish in time"
        r = _results[aten]
    assert r["probe"] is not None, r.get("error")
    got = r["probe"]
    assert got["aten"] == aten.upper() and onednn_name in got["onednn"], got
    summary = r["stdout"].strip().splitlines()[-1] if r["stdout"].strip() else ""
    assert r["rc"] == 0, f"{aten}/{onednn}: {summary}\n{r['stdout'][-6000:]}\n{r['stderr'][-2000:]}"
    assert " passed" in summary, summary
    print(f"\n{aten}/{onednn} ({got['onednn']}): {summary}")
