"""Two-process gloo DDP through torchrun: identical weights on both ranks, equal (within float
tolerance) to one process with the same global batch; W&B written by rank 0 only."""
from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest
import torch

from repro import rundir
from tests.test_train import REPO, TINY, cli, model_state
from tests.wandb_reader import load_run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# sync_bn: BatchNorm statistics over the global batch, so 2 x 4 images == 1 x 8 images.
# A small lr: at lr 0.1 this tiny BN net amplifies float rounding so much that even two
# single-process runs with 1 vs 2 threads end 1e-2 apart; at 0.002 they agree to ~1e-6.
# Plain training (no SFP): train-mode BN multiplies the gradient of an SFP-zeroed filter by
# 1/sqrt(eps) ~ 316, which turns rounding differences into 1e-4 weight differences; the DDP
# property under test is independent of pruning (SFP + resume: test_train_resume.py).
DDP = TINY + ["sync_bn=true", "optim.lr=0.002", "schedule.warmup_lr=0.002", "log.wandb=offline",
              "log.group=ddp-test"]


def test_two_process_ddp_matches_one_process(tmp_path, wandb_offline):
    d2, d1 = tmp_path / "ddp2", tmp_path / "single"
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "repro.train", *DDP, "--run-dir", str(d2)], cwd=REPO, capture_output=True,
                         text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-4000:]
    single = cli(DDP + ["--run-dir", str(d1)], env={"OMP_NUM_THREADS": "1"})
    assert single.returncode == 0, single.stderr[-4000:]

    r2, r1 = rundir.read_result(d2), rundir.read_result(d1)
    assert r2["world_size"] == 2 and r1["world_size"] == 1
    # the same final weights, bit for bit, on both ranks
    assert len(r2["rank_weight_sha256"]) == 2 and len(set(r2["rank_weight_sha256"])) == 1
    # ... and the same model as one process with the same global batch, up to float rounding
    s2, s1 = model_state(d2), model_state(d1)
    assert s2.keys() == s1.keys()
    for k in s1:
        assert torch.allclose(s2[k].float(), s1[k].float(), rtol=1e-4, atol=1e-4), \
            (k, (s2[k].float() - s1[k].float()).abs().max().item())
    for a, b in zip(rundir.read_metrics(d2), rundir.read_metrics(d1)):
        assert a["step"] == b["step"]
        for k in ("train_loss", "val_loss"):
            assert a[k] == pytest.approx(b[k], rel=1e-5), k
    assert r2["val_top1"] == pytest.approx(r1["val_top1"], abs=100 / 16 + 1e-9)  # at most one image flips

    # every rank logs to its own file; only rank 0 prints and talks to W&B
    assert (d2 / "logs" / "rank0.log").exists() and (d2 / "logs" / "rank1.log").exists()
    assert "[rank 1]" not in out.stderr
    files = glob.glob(str(d2 / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(files) == 1, files
    data = load_run(files[0])
    assert data["run"]["group"] == "ddp-test"
    rows = [h for h in data["history"] if "val_top1" in h]
    assert [r["epoch"] for r in rows] == [0, 1]
    assert [r["val_top1"] for r in rows] == [m["val_top1"] for m in rundir.read_metrics(d2)]
    assert data["config"]["sync_bn"] is True
