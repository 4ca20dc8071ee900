"""What a task gets from the machine it lands on: loader workers from the CPUs it really has, the
AMP dtype from what the GPU computes natively, SyncBatchNorm by device, float32 that is float32."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from repro import dist
from repro.config import Config, ConfigError
from repro.data.cpus import resolve_workers, task_cpus
from repro.engine.precision import Precision, amp_dtype_for, exact_float32

from conftest import REPO

_PRINT_WORKERS = "from repro.data.cpus import resolve_workers as r; print(r(-1, 'ffcv'), r(-1, 'plain'), r(2, 'ffcv'))"


def _workers(env: dict, prefix: list[str] = ()) -> list[int]:
    base = {k: v for k, v in os.environ.items() if k not in ("SLURM_CPUS_PER_TASK", "LOCAL_WORLD_SIZE")}
    out = subprocess.run([*prefix, sys.executable, "-c", _PRINT_WORKERS], capture_output=True, text=True,
                         cwd=REPO, env={**base, **env}, timeout=120, check=True)
    return [int(v) for v in out.stdout.split()]


@pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset (util-linux)")
def test_auto_workers_follow_the_affinity_mask():
    # a task bound to one CPU (what SLURM's task binding or taskset leaves it): 1 FFCV thread, and
    # the plain DataLoader loads in the training process; an explicit value is kept
    assert _workers({}, ["taskset", "-c", "0"]) == [1, 0, 2]


def test_auto_workers_follow_slurm_and_torchrun_shares():
    n = len(os.sched_getaffinity(0))
    assert _workers({"SLURM_CPUS_PER_TASK": "1"}) == [1, 0, 2]  # booked 1 CPU per task
    assert task_cpus({"SLURM_CPUS_PER_TASK": "64"}, affinity=12) == 12  # never more than the mask
    assert task_cpus({"LOCAL_WORLD_SIZE": "8"}, affinity=96) == 12  # torchrun: the node's CPUs shared out
    assert task_cpus({}, affinity=n) == n and resolve_workers(0, "plain", {}, affinity=n) == 0


def test_torchrun_inside_one_slurm_task_shares_the_booking():
    # srun -c 64 torchrun --nproc_per_node 8: one SLURM task, 8 ranks -> 8 CPUs each, not 64 each
    # (512 threads on 64 CPUs); torchrun's own variable says it started the processes
    torchrun = {"SLURM_CPUS_PER_TASK": "64", "LOCAL_WORLD_SIZE": "8", "TORCHELASTIC_RUN_ID": "none"}
    assert task_cpus(torchrun, affinity=64) == 8
    assert task_cpus(torchrun, affinity=96) == 8  # no task binding: the booking, then shared
    # SLURM started one task per GPU (srun --ntasks-per-node 8 -c 8, submitit): each keeps its booking,
    # even where a launcher exported LOCAL_WORLD_SIZE beside it
    assert task_cpus({"SLURM_CPUS_PER_TASK": "8", "LOCAL_WORLD_SIZE": "8"}, affinity=96) == 8
    assert task_cpus({"SLURM_CPUS_PER_TASK": "8"}, affinity=8) == 8


def test_ffcv_leaves_the_training_thread_one_cpu_on_cuda():
    assert resolve_workers(-1, "ffcv", {"SLURM_CPUS_PER_TASK": "12"}, affinity=96, cuda=True) == 11
    assert resolve_workers(-1, "ffcv", {"SLURM_CPUS_PER_TASK": "12"}, affinity=96) == 12  # CPU: all of them
    assert resolve_workers(-1, "ffcv", {}, affinity=1, cuda=True) == 1  # never no thread at all
    assert resolve_workers(3, "ffcv", {}, affinity=96, cuda=True) == 3  # an explicit value is kept


@pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset (util-linux)")
def test_real_torchrun_under_a_slurm_booking_divides():
    """A real `torchrun --nproc_per_node 2` inside a task booked (and bound) to 2 CPUs: each rank
    gets 1 FFCV thread, not 2."""
    torchrun = Path(sys.executable).with_name("torchrun")
    out = subprocess.run(["taskset", "-c", "0,1", str(torchrun), "--standalone", "--nproc_per_node", "2", "-m",
                          "repro.data.cpus"], capture_output=True, text=True, cwd=REPO, timeout=120,
                         env={**os.environ, "SLURM_CPUS_PER_TASK": "2"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert sorted(re.findall(r"task_cpus=(\d+)", out.stdout)) == ["1", "1"], out.stdout[-2000:]


def test_gpu_check_pins_itself_to_the_launchers_cpus_per_task():
    """The GPU check keeps the first CPUS_PER_GPU_TASK CPUs of its mask (set to 1 here, so that a
    2-core machine shows it), and the launcher books that many per task."""
    from repro.runs.submit import Cluster
    assert Cluster().cpus_per_task == Cluster.cpus_per_task == 12
    code = ("import os, repro.data.cpus as c; c.CPUS_PER_GPU_TASK = 1; from repro.bench.gpu import "
            "pin_to_launcher_cpus as p; r = p(); print(r['launcher_cpus_per_task'], r['cpus_before_pinning'], "
            "len(os.sched_getaffinity(0)), c.task_cpus())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                         check=True)
    assert out.stdout.split() == ["1", str(len(os.sched_getaffinity(0))), "1", "1"]


def test_workers_key_default_auto_and_old_values_kept():
    assert Config().data.workers == -1
    for v in (0, 1, 2, 12):
        assert Config.from_overrides([f"data.workers={v}"]).data.workers == v
    with pytest.raises(ConfigError, match="data.workers: must be >= 0, or -1"):
        Config.from_overrides(["data.workers=-2"])


def test_amp_dtype_is_bf16_only_where_native():
    # torch.cuda.is_bf16_supported() without including_emulation=False says True on a V100 (it
    # only checks that a bf16 tensor can be made); the choice below is fed the native answer
    assert amp_dtype_for(True) is torch.bfloat16 and amp_dtype_for(False) is torch.float16
    p = Precision(Config(), torch.device("cpu"))
    assert p.amp_dtype is None and p.scaler is None and p.name == "float32" and not p.channels_last


def test_exact_float32_turns_tf32_off_and_restores_it():
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    with exact_float32():
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


def test_sync_bn_is_torchs_on_cuda_and_ours_on_cpu():
    from repro.models import build_model
    from repro.prune.hard import hard_prune
    from repro.prune.sfp import SoftFilterPruner
    for device, cls in ((torch.device("cuda"), torch.nn.SyncBatchNorm), (torch.device("cpu"), dist.SyncBatchNorm2d)):
        m = build_model("resnet20")
        bn = m.bn1
        sd = {k: v.clone() for k, v in m.state_dict().items()}
        dist.convert_sync_bn(m, device)
        assert type(m.bn1) is cls and m.bn1 is bn  # the same object: optimizer and pruner keep theirs
        assert m.state_dict().keys() == sd.keys()
        m.eval()(torch.randn(2, 3, 32, 32))  # eval: plain BN statistics, no group needed
        dist.revert_sync_bn(m)
        assert type(m.bn1) is torch.nn.BatchNorm2d and not hasattr(m.bn1, "process_group")
        hard_prune(m, "resnet20", SoftFilterPruner(m, "resnet20", 0.3).kept_indices())  # needs BatchNorm2d
        m.load_state_dict(sd)
