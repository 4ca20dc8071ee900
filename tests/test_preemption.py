"""Preemption on a cluster, reproduced on CPU with real processes (issue 14, defects 1 and 2):

* stop signals that reach two DDP ranks (gloo) at different steps, with the CUDA stop-check
  cadence forced (every 20 steps): every rank checkpoints together and exits 75, no hang;
* a signal that reaches one rank only while the epoch is being evaluated: the agreed flag decides,
  both ranks stop after the epoch's checkpoint;
* SIGTERM to every process of the run - the trainer and W&B's service, as SLURM signals a job
  step - with an offline W&B run active: checkpoint, exit 75 (requeue), no failed result.json.
"""
from __future__ import annotations

import os
import signal
import socket
import time

import psutil
import pytest
import torch

from repro import rundir
from conftest import PAUSE_PLUGIN, PLUGINS, pause_at_step, with_plugins
from tests.test_train import TINY, cli, popen, wait_for

SIGNALS_PLUGIN = PLUGINS / "signals.py"
START_METHOD_PLUGIN = PLUGINS / "start_method.py"
FULL_DISK_PLUGIN = PLUGINS / "full_disk.py"
GROUP_HOLDERS_PLUGIN = PLUGINS / "group_holders.py"
# signals to chosen ranks, and a count of the DDP wrappers still holding the group at teardown
TWO_PLUGINS = with_plugins(SIGNALS_PLUGIN, GROUP_HOLDERS_PLUGIN)
GROUP_HOLDERS_LINE = "[group_holders] DDP wrappers alive at teardown:"  # as the plugin prints it
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks(warm, args: list[str], env: dict, timeout: float) -> list[tuple[int | None, str]]:
    """Run the trainer as two gloo ranks (torchrun's environment, one process each, forked from the
    warm Python: conftest.WarmPython); returns [(exit code or None if it had to be killed, output)]
    per rank."""
    port = _free_port()
    started = []
    for rank in (0, 1):
        e = {**env, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2",
             "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        started.append(warm.start(["-m", "repro.train", *args], e))
    end = time.time() + timeout
    while time.time() < end and any(pid not in warm.ended for pid, _ in started):
        time.sleep(0.2)
    out = []
    for pid, log in started:
        rc = warm.ended.get(pid)
        if rc is None:  # hung: the defect this file is about; its stacks go into its output
            os.kill(pid, signal.SIGQUIT)  # (tests/plugins/signals.py registers faulthandler for it)
            time.sleep(2)
            os.kill(pid, signal.SIGKILL)
            warm.wait(pid, 30)
        out.append((rc, log.read_text()))
    return out


def _ckpt(d):
    ck = torch.load(d / "checkpoint.pt", weights_only=True)
    return ck["epoch"], ck["batch"], ck["step"]


@pytest.mark.parametrize("case", ["steps-apart", "during-evaluation"])
def test_stop_signal_reaching_ranks_at_different_points_stops_both(case, tmp_path, warm):
    d = tmp_path / "run"
    if case == "steps-apart":
        # rank 0 is signalled after step 5, rank 1 after step 6; the next agreement is at step 20
        args = TINY + ["schedule.train_batches=30", "schedule.epochs=1", "schedule.milestones="]
        plan, where = "0:5:SIGUSR1,1:6:SIGUSR1", (0, 20, 20)
    else:
        # rank 0 only, as epoch 0's evaluation starts (after the epoch's last stop check)
        args = TINY
        plan, where = "0:eval0:SIGTERM", (1, 0, 3)
    env = {**TWO_PLUGINS, "PRUNEREPRO_TEST_SIGNAL_AT": plan}
    t0 = time.time()
    # the CUDA stop-check cadence (every 20 steps), forced on CPU
    ranks = _two_ranks(warm, args + ["stop_check_every=20", "--run-dir", str(d)], env, timeout=240)
    for rank, (rc, log) in enumerate(ranks):
        assert rc == 75, f"rank {rank}: exit {rc} after {time.time() - t0:.0f}s (None = hung)\n{log[-3000:]}"
    assert "preempted:" in ranks[0][1]  # the one line is rank 0's; every rank exits 75 (above)
    # The stop's traceback must not keep DDP (whose reducer holds the group) alive past teardown:
    # the group would then be destroyed with the GIL held, which hung rank 1 at exit in 2 of 23
    # runs under load (repro.engine.loop.release).
    for rank, (_, log) in enumerate(ranks):
        assert f"{GROUP_HOLDERS_LINE} 0\n" in log, f"rank {rank}:\n{log[-3000:]}"
    assert _ckpt(d) == where
    assert rundir.read_result(d) is None  # not failed, not done: to be requeued
    # ... and the requeued run finishes from that checkpoint (no signal planned)
    rest = _two_ranks(warm, args + ["--run-dir", str(d)], TWO_PLUGINS, timeout=240)
    assert [rc for rc, _ in rest] == [0, 0], rest[0][1][-3000:]
    assert rundir.read_result(d)["status"] == "done"
    assert all(f"{GROUP_HOLDERS_LINE} 0\n" in log for _, log in rest), rest[1][1][-3000:]


def test_sigterm_to_every_process_with_wandb_offline_is_a_preemption(tmp_path, wandb_offline):
    d = tmp_path / "run"
    args = TINY + ["log.wandb=offline", "--run-dir", str(d)]
    p = popen(args, env=pause_at_step(2, 120))
    wait_for(lambda: (d / "logs" / "paused-at-step-2").exists(), p)
    # SLURM signals every process of the job step, W&B's service (wandb-core) included; it runs in
    # a process group of its own, so a process-group kill would miss it.
    procs = [psutil.Process(p.pid)] + psutil.Process(p.pid).children(recursive=True)
    assert any("wandb" in q.name() for q in procs), [q.name() for q in procs]
    for q in procs:
        q.send_signal(signal.SIGTERM)
    assert p.wait(120) == 75  # "requeue me"
    log = p.stdout.read()
    assert "preempted:" in log and "checkpointing at epoch 0 batch 2 (step 2)" in log
    # the service really was gone: W&B's first call on the stop path (marking the run preempting,
    # before the hand-off; issue 25 item 6) failed, and W&B was dropped
    assert "W&B mark_preempting failed" in log
    assert _ckpt(d) == (0, 2, 2)
    assert rundir.read_result(d) is None  # the requeue path, not a failure
    # the requeued attempt resumes and finishes
    out = cli(args)
    assert out.returncode == 0, out.stderr[-3000:]
    assert rundir.read_result(d)["status"] == "done"


def test_sigterm_to_every_process_with_forkserver_loader_workers_is_a_preemption(tmp_path):
    """Issue 25 item 9: plain-loader workers started by forkserver inherit no handler from the
    trainer; SIGTERM to every process (as SLURM signals a job step) must not kill them, since the
    trainer keeps fetching batches until its next stop check. Checks every 8 steps, signals after
    step 2: 2 workers x prefetch 2 have sent indices 0..5 by then, so batches 6 and 7 (steps 7, 8)
    are made after the signal. Few steps, since a worker keeps serving only TERM_GRACE_S (10 s)
    after a SIGTERM (CUDA's 20-step cadence is far shorter); 18 steps overran that on a loaded
    2-core machine."""
    from repro.data.worker_signals import WORKER_IGNORED_SIGNALS
    from repro.engine.signals import STOP_SIGNALS
    assert set(WORKER_IGNORED_SIGNALS) == set(STOP_SIGNALS)
    d = tmp_path / "run"
    args = TINY + ["data.workers=2", "schedule.train_batches=30", "schedule.epochs=1", "schedule.milestones=",
                   "stop_check_every=8", "--run-dir", str(d)]
    env = {**with_plugins(PAUSE_PLUGIN, START_METHOD_PLUGIN), "PRUNEREPRO_TEST_PAUSE_AT_STEP": "2:120"}
    p = popen(args, env=env)
    wait_for(lambda: (d / "logs" / "paused-at-step-2").exists(), p)
    procs = [psutil.Process(p.pid)] + psutil.Process(p.pid).children(recursive=True)
    assert any("forkserver" in " ".join(q.cmdline()) for q in procs), [q.cmdline() for q in procs]
    for q in procs:
        q.send_signal(signal.SIGTERM)
    rc = p.wait(180)
    log = p.stdout.read()
    assert rc == 75, log[-3000:]
    assert "checkpointing at epoch 0 batch 8 (step 8)" in log, log[-3000:]
    assert _ckpt(d) == (0, 8, 8) and rundir.read_result(d) is None  # to be requeued, not failed


def test_rank0_checkpoint_write_failure_ends_every_rank_at_once(tmp_path, warm):
    """Issue 25 item 3: rank 0's disk is full at epoch 1's checkpoint while rank 1 waits for it in
    a collective; every rank must end within 60 s (not after dist_timeout_s = 600 s), the last
    good checkpoint (epoch 0's) intact, no result.json (the machine failed, not the run)."""
    d = tmp_path / "run"
    env = {**with_plugins(FULL_DISK_PLUGIN), "PRUNEREPRO_TEST_FULL_DISK_AT": "2"}
    ranks = _two_ranks(warm, TINY + ["--run-dir", str(d)], env, timeout=240)
    ended = time.time()
    for rank, (rc, log) in enumerate(ranks):
        assert rc == 1, f"rank {rank}: exit {rc} (None = still waiting)\n{log[-3000:]}"
    assert ended - (d / "logs" / "full-disk").stat().st_mtime < 60
    assert "failed: " in ranks[0][1] and "No space left on device" in ranks[0][1]  # the one line is rank 0's
    # Rank 1 ended because rank 0 told it, not by a broken connection (gloo notices a peer that
    # exited; NCCL waits in the collective until dist_timeout_s).
    assert "rank 0 could not write" in (d / "logs" / "rank1.log").read_text()
    assert _ckpt(d) == (1, 0, 3) and rundir.read_result(d) is None


assert PAUSE_PLUGIN.exists() and SIGNALS_PLUGIN.exists() and GROUP_HOLDERS_PLUGIN.exists()
