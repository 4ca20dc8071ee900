"""Exact resume: kill -9 (mid-epoch, mid-checkpoint-write) or a stop signal, then run again ->
final result, every epoch's metrics and the delivered weights bit-identical to an uninterrupted run.

SFP is used so the masks are part of what must survive. CPU, deterministic, plain loader (its
augmentation is a pure function of (seed, epoch, sample), see repro/data/augment.py).
"""
from __future__ import annotations

import signal

import pytest
import torch

from repro import io, rundir
from conftest import pause_at_step, pause_in_write
from tests.test_train import TINY, assert_same_run, cli, popen, wait_for

SFP = TINY + ["prune.method=sfp", "prune.rate=0.3"]  # 2 epochs x 3 batches: steps 1..6

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("ref") / "run"
    out = cli(SFP + ["--run-dir", str(d)])
    assert out.returncode == 0, out.stderr[-3000:]
    return d


def _resume(d, env=None):
    out = cli(SFP + ["--run-dir", str(d)], env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def _interrupt_at_step(d, step: int, how) -> str:
    """Start (or resume) the run, let it pause after optimizer step ``step``, then kill or signal it."""
    p = popen(SFP + ["--run-dir", str(d)], env=pause_at_step(step, 120))
    wait_for(lambda: (d / "logs" / f"paused-at-step-{step}").exists(), p)
    (d / "logs" / f"paused-at-step-{step}").unlink()
    if how == "kill9":
        p.kill()
        p.wait(30)
        return p.stdout.read()
    p.send_signal(how)
    assert p.wait(120) == 75  # "requeue me"
    log = p.stdout.read()
    assert "preempted:" in log
    return log


def _ckpt(d):
    ck = torch.load(d / "checkpoint.pt", weights_only=True)
    return ck["epoch"], ck["batch"], ck["step"]


def test_interrupted_five_ways_ends_bit_identical(reference, tmp_path):
    """One run folder interrupted again and again; the final result must equal the reference."""
    d = tmp_path / "run"
    # 1. kill -9 half-way through writing the 2nd checkpoint (end of the last epoch)
    p = popen(SFP + ["--run-dir", str(d)], env=pause_in_write("checkpoint.pt", 120, 2))
    wait_for(lambda: (d / f"checkpoint.pt{io.TMP_MARK}paused").exists(), p)
    torn = [f for f in d.glob(f"checkpoint.pt{io.TMP_MARK}*") if not f.name.endswith("paused")]
    assert len(torn) == 1 and torn[0].stat().st_size > 0
    p.kill()
    p.wait(30)
    assert _ckpt(d) == (1, 0, 3)  # the previous checkpoint, intact and loadable
    assert [r["epoch"] for r in rundir.read_metrics(d)] == [0, 1]  # epoch 1's line came before the kill
    assert rundir.read_result(d) is None

    # 2. SIGUSR1 after step 4 (epoch 1, batch 0): checkpoint at that step boundary, exit 75
    log = _interrupt_at_step(d, 4, signal.SIGUSR1)
    assert "removed partial files of a killed writer" in log  # the torn temp file of (1)
    assert "checkpointing at epoch 1 batch 1 (step 4)" in log
    assert _ckpt(d) == (1, 1, 4)
    ck = torch.load(d / "checkpoint.pt", weights_only=True)
    assert ck["partial"][3] == 8 and ck["pruner"]["masks"]  # one batch in the epoch sums; SFP masks
    assert [r["epoch"] for r in rundir.read_metrics(d)] == [0]  # epoch 1 is not finished any more

    # 3. kill -9 after step 5: resumes from the mid-epoch checkpoint of (2)
    _interrupt_at_step(d, 5, "kill9")
    assert _ckpt(d) == (1, 1, 4)

    # 4. SIGTERM after step 6, the epoch's last batch: checkpoint at batch 3 of 3
    log = _interrupt_at_step(d, 6, signal.SIGTERM)
    assert _ckpt(d) == (1, 3, 6)

    # 5. run to the end
    _resume(d)
    assert not list(d.glob(f"*{io.TMP_MARK}*"))
    assert [r["epoch"] for r in rundir.read_metrics(d)] == [0, 1]
    env = io.read_json(d / "env.json")
    assert [a["resumed_from"] for a in env["attempts"]] == [
        None, {"epoch": 1, "batch": 0, "step": 3}, {"epoch": 1, "batch": 1, "step": 4},
        {"epoch": 1, "batch": 1, "step": 4}, {"epoch": 1, "batch": 3, "step": 6}]
    assert_same_run(reference, d)


@pytest.mark.numerics
def test_stopped_mid_epoch_and_resumed_ends_bit_identical(reference, tmp_path):
    """Resume bit-identity alone, for the ISA matrix (tests/test_isa_matrix.py runs the ``numerics``
    tests under other kernel choices): a kernel that is not deterministic, or that rounds
    differently on its first call, would show here. One stop at a step boundary inside an epoch
    (SFP masks and the epoch's partial sums in the checkpoint), then the rest; the five ways
    above cover the other interruptions on the CPU's own kernels."""
    d = tmp_path / "run"
    _interrupt_at_step(d, 4, signal.SIGUSR1)
    assert _ckpt(d) == (1, 1, 4)
    _resume(d)
    assert_same_run(reference, d)
