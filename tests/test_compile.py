"""``compile``: torch.compile around the training step, covered by exact resume. A compiled run
stopped after step 4 (of 6) and resumed eager, and an eager run stopped there and resumed
compiled, both end bit-identical to an uninterrupted eager run (result, every epoch's metrics,
model.pt); a compiled attempt compiles its graphs at its first step and never again; env.json's
attempts say which ran compiled.

The backend is aot_eager: the compiler's whole path (dynamo's graph capture and guards,
AOTAutograd's joint forward/backward graphs) running the ATen kernels eager runs, so bit-identity
is the claim to check. inductor generates its own kernels, equal to eager only up to float
rounding, and its cold compile of ResNet-20 took about 115 s on this 2-core machine, far over a
test's budget: the GPU check (python -m repro.bench.gpu) measures it.

Commands are forked from the warm Python (tests/zygote.py), one OpenMP thread each, the two
interrupted folders side by side."""
from __future__ import annotations

import json
import os
import signal
import time

import pytest

from repro import rundir
from conftest import PAUSE_PLUGIN, compile_stats
from tests.test_train import TINY, assert_same_run

SFP = TINY + ["prune.method=sfp", "prune.rate=0.3", "log.wandb=disabled"]  # 2 epochs x 3 steps
STOP_AT = 4  # epoch 1, after its first batch: a mid-epoch checkpoint

pytestmark = [pytest.mark.timeout(300)]


def _start(warm, d, backend: str, stats, pause: bool):
    """Start a trainer on folder ``d``; ``stats``: where it logs its compiled graphs after each step."""
    env = compile_stats(stats, PAUSE_PLUGIN)
    if pause:
        env["PRUNEREPRO_TEST_PAUSE_AT_STEP"] = f"{STOP_AT}:120"
    return warm.start(["-m", "repro.train", *SFP, f"compile={backend}", "--run-dir", str(d)], env)


def _graphs_per_step(path) -> dict[int, int]:
    """{optimizer step: graphs compiled so far in that process}"""
    return dict(tuple(map(int, ln.split())) for ln in path.read_text().splitlines())


def test_compiled_and_eager_attempts_resume_each_other_bit_identically(warm, tmp_path):
    ref = tmp_path / "ref"
    # backend of the first attempt -> its folder; the second attempt runs the other backend
    folders = {"aot_eager": tmp_path / "compiled-then-eager", "off": tmp_path / "eager-then-compiled"}
    other = {"aot_eager": "off", "off": "aot_eager"}
    reference = warm.start(["-m", "repro.train", *SFP, "--run-dir", str(ref)])
    paused = {b: _start(warm, d, b, tmp_path / f"{b}-first.stats", pause=True) for b, d in folders.items()}
    resumed, end = [], time.time() + 240
    while paused:  # each folder is stopped, then resumed with the other backend, as soon as it is at step 4
        for backend, (pid, log) in list(paused.items()):
            marker = folders[backend] / "logs" / f"paused-at-step-{STOP_AT}"
            if not marker.exists():
                assert pid not in warm.ended, log.read_text()[-3000:]
                continue
            marker.unlink()
            os.kill(pid, signal.SIGUSR1)
            assert warm.wait(pid) == 75, log.read_text()[-3000:]  # checkpointed at step 4: requeue me
            del paused[backend]
            resumed.append(_start(warm, folders[backend], other[backend], tmp_path / f"{backend}-second.stats",
                                  pause=False))
        assert time.time() < end, "the interrupted runs did not reach step 4"
        time.sleep(0.02)
    for pid, log in [reference, *resumed]:
        assert warm.wait(pid) == 0, log.read_text()[-3000:]
    for backend, d in folders.items():
        assert_same_run(ref, d)
        used = [a["compile"] for a in json.loads((d / rundir.ENV).read_text())["attempts"]]
        assert used == [backend, other[backend]], used
    # the compiled attempts: graphs compiled at their first step, none after (no recompiles)
    for stats, steps in ((tmp_path / "aot_eager-first.stats", range(1, STOP_AT + 1)),
                         (tmp_path / "off-second.stats", range(STOP_AT + 1, 7))):
        graphs = _graphs_per_step(stats)
        assert list(graphs) == list(steps) and len(set(graphs.values())) == 1 and graphs[steps[0]] > 0, graphs
    # the eager attempts compile nothing
    for stats in (tmp_path / "off-first.stats", tmp_path / "aot_eager-second.stats"):
        assert set(_graphs_per_step(stats).values()) == {0}


def test_inductor_on_a_cpu_without_a_cpp_compiler_is_refused_before_anything_runs(monkeypatch, tmp_path):
    """Inductor builds its CPU kernels with the C++ compiler its own setting names; none there, the
    run is refused in one line before the folder is touched (aot_eager and off need none)."""
    from torch._inductor import config as inductor

    from repro.config import Config, ConfigError
    from repro.train import run
    monkeypatch.setattr(inductor.cpp, "cxx", (None, "no-such-compiler-here"))
    d = tmp_path / "run"
    with pytest.raises(ConfigError, match="compile=inductor: no C.. compiler found"):
        run(Config.from_overrides(SFP + ["compile=inductor"]), d)
    assert not d.exists()
    from repro.engine import compiling
    for backend in ("off", "aot_eager"):
        compiling.check(Config.from_overrides(SFP + [f"compile={backend}"]))
