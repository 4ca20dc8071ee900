"""Distributed environment detection and the CPU-capable synchronised BatchNorm."""
from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp

from repro import dist
from repro.dist import DistEnvError, detect

TORCHRUN = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}
SLURM = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1", "SLURM_JOB_NODELIST": "gpu[07-08],cpu1",
         "SLURM_JOB_ID": "4242"}


def test_single_process():
    d = detect({})
    assert (d.source, d.rank, d.world_size, d.local_rank, d.distributed) == ("single", 0, 1, 0, False)


def test_torchrun_complete_wins_over_slurm():
    d = detect({**SLURM, **TORCHRUN})
    assert (d.source, d.rank, d.world_size, d.local_rank) == ("torchrun", 1, 2, 1)
    assert (d.master_addr, d.master_port, d.job_id) == ("10.0.0.1", 29500, "4242")


def test_torchrun_partial_names_missing_vars():
    env = dict(TORCHRUN)
    del env["MASTER_PORT"], env["LOCAL_RANK"]
    with pytest.raises(DistEnvError, match="incomplete torchrun environment: LOCAL_RANK, MASTER_PORT missing"):
        detect(env)


def test_slurm_task(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no scontrol: the node list is parsed in Python
    d = detect(SLURM)
    assert (d.source, d.rank, d.world_size, d.local_rank) == ("slurm", 3, 4, 1)
    assert d.master_addr == "gpu07"
    assert d.master_port == dist.master_port_for("4242") and 20000 <= d.master_port <= 60000
    # every task of the job derives the same port; another job another one (almost surely)
    assert detect({**SLURM, "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}).master_port == d.master_port
    assert dist.master_port_for("4243") != d.master_port


def test_slurm_with_stray_master_vars_from_the_login_shell(monkeypatch, caplog):
    """MASTER_ADDR/MASTER_PORT exported in a login shell travel into every SLURM job: still a SLURM
    task, and SLURM's environment wins: the address from the node list, the port from the job id
    (two multi-GPU jobs on one node would otherwise fight over the login shell's port), said in
    one warning line."""
    monkeypatch.setenv("PATH", "/nonexistent")
    port = dist.master_port_for("4242")
    with caplog.at_level("WARNING", logger="repro.dist"):
        d = detect({**SLURM, "MASTER_PORT": "29511"})
    assert (d.source, d.rank, d.world_size, d.master_addr, d.master_port) == ("slurm", 3, 4, "gpu07", port)
    assert [r.getMessage() for r in caplog.records] == [
        f"MASTER_PORT=29511 ignored under SLURM: the master is gpu07:{port} (the first host of the node list; "
        "the port derived from job id 4242, the same in every task)"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="repro.dist"):
        d = detect({**SLURM, "MASTER_ADDR": "localhost", "MASTER_PORT": "29511"})
    assert (d.source, d.master_addr, d.master_port) == ("slurm", "gpu07", port)
    assert len(caplog.records) == 1 and "MASTER_ADDR=localhost MASTER_PORT=29511 ignored" in caplog.text
    # two jobs on one node with the same login shell's port: two ports
    other = detect({**SLURM, "SLURM_JOB_ID": "4243", "MASTER_PORT": "29511"})
    assert other.master_port == dist.master_port_for("4243") != d.master_port
    # one process without SLURM: the stray variables select nothing either
    assert detect({"MASTER_ADDR": "localhost", "MASTER_PORT": "29511"}).source == "single"
    # a process identity without the rest is still a broken torchrun environment
    with pytest.raises(DistEnvError, match="incomplete torchrun environment: WORLD_SIZE, LOCAL_RANK missing"):
        detect({**SLURM, "RANK": "0", "MASTER_ADDR": "localhost", "MASTER_PORT": "29511"})


def test_submitit_on_slurm_ignores_a_stray_master_port_too(monkeypatch):
    """submitit's own helper honours MASTER_PORT; under its SLURM executor the job id decides."""
    monkeypatch.setenv("PATH", "/nonexistent")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"):
        monkeypatch.delenv(k, raising=False)
    for k, v in {**SLURM, "SUBMITIT_EXECUTOR": "slurm", "SLURM_NODEID": "0", "SLURM_JOB_NUM_NODES": "2",
                 "MASTER_PORT": "29511"}.items():
        monkeypatch.setenv(k, v)
    d = detect()
    assert (d.source, d.rank, d.world_size, d.master_addr) == ("submitit", 3, 4, "gpu07")
    assert d.master_port == dist.master_port_for("4242") != 29511


_SLURM_WORKER = """
import torch
from repro import dist
d = dist.detect()
dist.init(d, torch.device("cpu"), timeout_s=60)
t = dist.all_sum(torch.tensor([float(d.rank + 1)]))
print(d.source, d.rank, d.world_size, d.master_addr, d.master_port, int(t.item()), flush=True)
dist.teardown()
"""


@pytest.mark.timeout(120)
def test_two_slurm_tasks_with_a_stray_master_port_form_a_group(tmp_path):
    """Two real processes in a SLURM task environment (srun's variables) with a stray MASTER_ADDR
    that does not resolve and a stray MASTER_PORT that is taken (another job listens there): they
    detect SLURM, meet on the port derived from the job id, all-reduce (gloo)."""
    import os
    import subprocess
    import sys
    job = next(j for j in range(777, 10**6) if _port_is_free(dist.master_port_for(str(j))))
    port = dist.master_port_for(str(job))
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SUBMITIT_")) and k not in
            ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    procs = [subprocess.Popen([sys.executable, "-c", _SLURM_WORKER], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**base, "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r),
                                              "SLURM_NTASKS": "2", "SLURM_JOB_NODELIST": "localhost",
                                              "SLURM_JOB_ID": str(job), "MASTER_ADDR": "login1.invalid",
                                              "MASTER_PORT": str(taken.getsockname()[1])}) for r in (0, 1)]
    try:
        outs = [p.communicate(timeout=100) for p in procs]
    finally:
        taken.close()
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outs]
    assert sorted(o.split() for o, _ in outs) == [["slurm", str(r), "2", "localhost", str(port), "3"] for r in (0, 1)]


def test_slurm_array_job_id():
    d = detect({**SLURM, "SLURM_NTASKS": "1", "SLURM_PROCID": "0", "SLURM_ARRAY_JOB_ID": "100",
                "SLURM_ARRAY_TASK_ID": "7"})
    assert d.job_id == "100_7" and not d.distributed


def test_slurm_partial_names_missing_vars():
    env = dict(SLURM)
    del env["SLURM_NTASKS"], env["SLURM_JOB_NODELIST"]
    with pytest.raises(DistEnvError, match="SLURM_NTASKS, SLURM_JOB_NODELIST missing"):
        detect(env)


def test_inconsistent_rank_and_non_integer():
    with pytest.raises(DistEnvError, match="rank 2, world size 2"):
        detect({**TORCHRUN, "RANK": "2"})
    with pytest.raises(DistEnvError, match="WORLD_SIZE='two' is not an integer"):
        detect({**TORCHRUN, "WORLD_SIZE": "two"})


def test_cpu_device_and_no_group_for_one_process():
    d = detect({})
    assert dist.pick_device("cpu", d) == torch.device("cpu")
    dist.init(d, torch.device("cpu"))
    assert not torch.distributed.is_initialized()
    assert dist.any_flag(True, torch.device("cpu")) and dist.gather_objects(5) == [5]


# ----------------------------------------------------------------------------- SyncBatchNorm2d
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _sbn_worker(rank: int, port: int, x: torch.Tensor, w: torch.Tensor, out: dict) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        bn = dist.SyncBatchNorm2d(3)
        with torch.no_grad():
            bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
            bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
        mine = x.chunk(2)[rank].clone().requires_grad_(True)
        y = bn(mine)
        # the global objective is the mean over the global batch: each rank's share is half of it
        (y * w.chunk(2)[rank]).sum().div(x.shape[0]).backward()
        grads = [bn.weight.grad.clone(), bn.bias.grad.clone()]
        for g in grads:
            torch.distributed.all_reduce(g)  # what DDP does (sum; DDP then divides by world size)
        out[rank] = {"y": y.detach(), "dx": mine.grad, "dw": grads[0], "db": grads[1],
                     "rm": bn.running_mean.clone(), "rv": bn.running_var.clone()}
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.timeout(600)
def test_sync_bn_over_two_ranks_equals_bn_over_the_global_batch():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 5, 5) * 3 + 1
    w = torch.randn(8, 3, 5, 5)
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        out = manager.dict()
        mp.start_processes(_sbn_worker, args=(_free_port(), x, w, out), nprocs=2, start_method="spawn")
        out = dict(out)
    ref = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        ref.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    xr = x.clone().requires_grad_(True)
    y = ref(xr)
    (y * w).sum().div(x.shape[0]).backward()
    torch.testing.assert_close(torch.cat([out[0]["y"], out[1]["y"]]), y.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([out[0]["dx"], out[1]["dx"]]), xr.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out[0]["dw"], ref.weight.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(out[0]["db"], ref.bias.grad, rtol=1e-4, atol=1e-6)
    for r in (0, 1):
        torch.testing.assert_close(out[r]["rm"], ref.running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out[r]["rv"], ref.running_var, rtol=1e-5, atol=1e-6)


def test_sync_bn_conversion_keeps_state_and_falls_back_without_group():
    from repro.models import build_model
    m = build_model("resnet20")
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    dist.convert_sync_bn(m)
    assert isinstance(m.bn1, dist.SyncBatchNorm2d) and isinstance(m.bn1, torch.nn.BatchNorm2d)
    assert m.state_dict().keys() == sd.keys()
    x = torch.randn(2, 3, 32, 32)
    y = m(x)  # no process group: plain BN
    dist.revert_sync_bn(m)
    assert type(m.bn1) is torch.nn.BatchNorm2d
    m.load_state_dict(sd)
    assert y.shape == (2, 10)
