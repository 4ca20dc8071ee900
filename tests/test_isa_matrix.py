"""The numerics-sensitive tests again, under other CPU kernels (issue: a tolerance fitted to one
instruction set fails on the next machine).

Every test marked ``numerics`` (DDP equivalence, compact-model exactness, resume bit-identity,
hard-prune exactness) runs once more in a child pytest per row of MATRIX: ATen's vectorised kernels
capped by ``ATEN_CPU_CAPABILITY`` and oneDNN's (the convolutions) by ``ONEDNN_MAX_CPU_ISA``. The
default suite already runs them with everything the CPU has. A row above what the CPU supports is
skipped, and each child is first asked (tests/isa_probe.py) what it really got, since both
libraries fall back silently.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest
import torch

from tests.test_train import REPO

# (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, what the probe must then report for oneDNN)
MATRIX = [("default", "SSE41", "SSE4.1"), ("avx2", "AVX2", "AVX2"), ("avx512", "AVX512_CORE", "AVX-512")]
ATEN_ORDER = ["DEFAULT", "AVX2", "AVX512"]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def numerics_files() -> list[str]:
    """The test files that mark tests ``numerics`` (the child collects only these: collecting the
    whole suite costs most of a minute on 2 cores)."""
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
                  if "mark.numerics" in p.read_text() and p.name != "test_isa_matrix.py")


def _supported(aten: str) -> str | None:
    """None if this CPU can run ``aten``, else why not."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return f"x86 kernel choices; this is {platform.machine()}"
    native = torch.backends.cpu.get_cpu_capability()
    if native not in ATEN_ORDER or ATEN_ORDER.index(aten.upper()) > ATEN_ORDER.index(native):
        return f"this CPU's ATen capability is {native}"
    return None


@pytest.mark.parametrize("aten,onednn,onednn_name", MATRIX, ids=[f"{a}-{o}" for a, o, _ in MATRIX])
def test_numerics_tests_pass_under_other_kernels(aten, onednn, onednn_name):
    why_not = _supported(aten)
    if why_not:
        pytest.skip(why_not)
    env = {**os.environ, "ATEN_CPU_CAPABILITY": aten, "ONEDNN_MAX_CPU_ISA": onednn}
    probe = subprocess.run([sys.executable, "-m", "tests.isa_probe"], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr[-2000:]
    got = json.loads(probe.stdout.strip().splitlines()[-1])
    assert got["aten"] == aten.upper() and onednn_name in got["onednn"], got
    child = subprocess.run([sys.executable, "-m", "pytest", "-m", "numerics", "-q", "-x", "-p", "no:cacheprovider",
                            *numerics_files()],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=1700)
    summary = child.stdout.strip().splitlines()[-1] if child.stdout.strip() else ""
    assert child.returncode == 0, f"{aten}/{onednn}: {summary}\n{child.stdout[-6000:]}\n{child.stderr[-2000:]}"
    assert " passed" in summary, summary
    print(f"\n{aten}/{onednn} ({got['onednn']}): {summary}")
