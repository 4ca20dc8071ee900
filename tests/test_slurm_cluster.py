"""The local SLURM test cluster itself: submitit can submit to it, see states, run multi-node jobs.

These exercise the cluster that .ci/run starts (scripts/slurm/start_slurm.sh); the launcher's own
SLURM behaviour (arrays, dependencies, requeue, DDP through the trainer) is in test_slurm_launch.py.
"""
from __future__ import annotations

import os
import socket
import sys
import time

import cloudpickle
import pytest
import submitit

from repro.runs.jobs import ACTIVE_STATES

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(180)]

# The job callables live in this test module; SLURM jobs cannot import it by name, so ship it by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _where_am_i():
    return {"host": socket.gethostname(), "node": os.environ.get("SLURMD_NODENAME"),
            "python": sys.executable}


def _allreduce_rank():
    """2-node gloo all-reduce: every rank contributes rank+1; all must see the sum."""
    import torch
    import torch.distributed as dist

    env = submitit.JobEnvironment()
    port = 20000 + int(env.job_id.split("_")[0]) % 20000
    dist.init_process_group("gloo", init_method=f"tcp://{env.hostnames[0]}:{port}",
                            rank=env.global_rank, world_size=env.num_tasks)
    t = torch.tensor([float(env.global_rank + 1)])
    dist.all_reduce(t)
    dist.destroy_process_group()
    return {"rank": env.global_rank, "world": env.num_tasks, "sum": t.item(),
            "node": os.environ.get("SLURMD_NODENAME")}


def _executor(tmp_path, partition, **params):
    ex = submitit.AutoExecutor(folder=tmp_path / "%j", cluster="slurm")
    ex.update_parameters(slurm_partition=partition, timeout_min=5, cpus_per_task=1, **params)
    return ex


def test_trivial_job_runs_the_project_python(tmp_path, slurm_cluster):
    job = _executor(tmp_path, slurm_cluster["partition"]).submit(_where_am_i)
    out = job.result()
    assert out["python"] == sys.executable  # jobs must run the project's .venv python
    assert out["node"] in ("node1", "node2")
    # The result file is written before the job ends, and slurmctld hands job records to slurmdbd
    # asynchronously: on a loaded machine sacct can still say PENDING or RUNNING (or not know the
    # job) after it has run. Wait until accounting shows an ended state, then ask.
    unfinished = ACTIVE_STATES | {"", "UNKNOWN"}  # "": not in accounting yet
    end = time.time() + 120
    while job.get_info(mode="force").get("State", "") in unfinished and time.time() < end:
        time.sleep(1)
    assert job.get_info(mode="force")["State"] == "COMPLETED"  # sacct answers: accounting works


def test_two_node_gloo_job(tmp_path, slurm_cluster):
    ex = _executor(tmp_path, slurm_cluster["partition"], nodes=2, tasks_per_node=1)
    job = ex.submit(_allreduce_rank)
    results = job.results()
    assert sorted(r["rank"] for r in results) == [0, 1]
    assert all(r["world"] == 2 and r["sum"] == 3.0 for r in results)
    assert {r["node"] for r in results} == {"node1", "node2"}  # one task per node


def _allreduce_through_repro_dist():
    """What a run's job does: repro.dist finds the group from the SLURM/submitit environment."""
    import torch
    from repro import dist
    d = dist.detect()
    dist.init(d, torch.device("cpu"), timeout_s=60)
    t = dist.all_sum(torch.tensor([float(d.rank + 1)]))
    dist.teardown()
    return {"source": d.source, "rank": d.rank, "port": d.master_port, "job": d.job_id, "sum": t.item()}


def test_a_login_shells_master_port_is_not_used_under_slurm(tmp_path, slurm_cluster, monkeypatch):
    """MASTER_PORT exported where the job was submitted travels into the job (sbatch exports the
    environment); another job already listens on that port. The two tasks meet on the port derived
    from their job id instead, and each says so in one line."""
    from repro.dist import master_port_for
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        stray = taken.getsockname()[1]
        monkeypatch.setenv("MASTER_PORT", str(stray))
        ex = _executor(tmp_path, slurm_cluster["partition"], nodes=2, tasks_per_node=1)
        job = ex.submit(_allreduce_through_repro_dist)
        results = job.results()
    assert sorted(r["rank"] for r in results) == [0, 1] and all(r["sum"] == 3.0 for r in results)
    assert {(r["source"], r["port"]) for r in results} == {("submitit", master_port_for(results[0]["job"]))}
    assert results[0]["port"] != stray
    assert f"MASTER_PORT={stray} ignored under SLURM" in job.stderr()
