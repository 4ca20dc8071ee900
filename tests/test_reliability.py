"""Nothing lost, nothing done twice.

* Kill at random: tiny SFP runs killed or signalled (SIGKILL, SIGTERM, SIGUSR1, SIGINT) at seeded
  random points - during start-up, after an optimizer step, half-way through a checkpoint write,
  after the last epoch's checkpoint, half-way through writing model.pt or result.json - and
  resumed, several times per run folder; every folder must end bit-identical to an uninterrupted
  run (result.json minus timings, every epoch's metrics, every tensor of model.pt).
  PRUNEREPRO_KILL_SEED and PRUNEREPRO_KILL_POINTS vary the draw (defaults: seed 15, 20 points;
  every signal meets every kind of point at least once).
* One writer per run folder: a second trainer exits 2 at once naming the holder, touches
  nothing, and the folder ends as an uninterrupted run's; also when it starts while the first is
  half-way through writing its checkpoint (it used to delete the first's temp file).
* One launcher per table root: two launches of the same table train every run once.
* The lock's stale-holder rules (same host: the kernel lock decides; another host: the heartbeat).
"""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from repro import io, rundir
from repro.lock import STALE_ENV, FolderLock, LockHeld, holder
from conftest import REPO, pause_at_step, pause_in_phase, pause_in_write
from tests.test_train import TINY, assert_same_run, cli, popen, wait_for

SFP = TINY + ["prune.method=sfp", "prune.rate=0.3", "log.wandb=disabled"]  # 2 epochs x 3 steps
# One thread everywhere in the kill test: the reference and every attempt must compute alike (the
# thread count changes float rounding), and on 2 shared cores idle OpenMP threads only spin.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
EPOCHS, STEPS = 2, 6
SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
KINDS = ("startup", "step", "checkpoint write", "after the last epoch")
EXIT = {signal.SIGKILL: -9, signal.SIGTERM: 75, signal.SIGUSR1: 75, signal.SIGINT: 130}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("ref") / "run"
    out = cli(SFP + ["--run-dir", str(d)], env=ONE_THREAD)
    assert out.returncode == 0, out.stderr[-3000:]
    return d


def _position(d):
    """(epoch, batch, step) of the folder's checkpoint; (0, 0, 0) without one."""
    p = d / rundir.CHECKPOINT
    if not p.exists():
        return 0, 0, 0
    ck = torch.load(p, weights_only=False)
    return ck["epoch"], ck["batch"], ck["step"]


def _points(kind: str, pos) -> list[tuple]:
    """The concrete points of ``kind`` that a trainer started on this folder will pass."""
    epoch, _, step = pos
    if kind == "startup":
        return [("phase", "startup"), ("write", "env.json", 1)] + ([("write", "metrics.jsonl", 1)] if step else [])
    if kind == "step":
        return [("step", k) for k in range(step + 1, STEPS + 1)]
    if kind == "checkpoint write":  # one checkpoint per epoch end still to come in this process
        return [("write", "checkpoint.pt", n) for n in range(1, EPOCHS - epoch + 1)]
    return [("phase", "final"), ("write", "model.pt", 1), ("write", "result.json", 1)]


def _env(point) -> tuple[dict, str]:
    """The pause plugin's environment for ``point`` and the marker file that says it was reached."""
    if point[0] == "step":
        return pause_at_step(point[1], 300), f"logs/paused-at-step-{point[1]}"
    if point[0] == "write":
        return pause_in_write(point[1], 300, point[2]), f"{point[1]}{io.TMP_MARK}paused"
    return pause_in_phase(point[1], 300), f"logs/paused-in-{point[1]}"


def _kill_at(z, d, point, sig) -> tuple[int, str]:
    env, marker = _env(point)
    pid, log = z.start(["-m", "repro.train", *SFP, "--run-dir", str(d)], {**ONE_THREAD, **env})
    z.wait_for(lambda: (d / marker).exists(), pid, log)
    (d / marker).unlink()
    before = (d / rundir.CHECKPOINT).read_bytes() if (d / rundir.CHECKPOINT).exists() else None
    os.kill(pid, sig)
    rc = z.wait(pid)
    log = log.read_text()
    if sig != signal.SIGKILL and point[0] == "phase":  # nothing was trained since the last checkpoint
        after = (d / rundir.CHECKPOINT).read_bytes() if (d / rundir.CHECKPOINT).exists() else None
        assert after == before, f"{point}: the checkpoint was rewritten"
    return rc, log


def _plan(rng: random.Random, n: int) -> list[tuple[str, int]]:
    """Every (kind, signal) pair once, then random pairs up to ``n``, in random order."""
    pairs = [(k, s) for k in KINDS for s in SIGNALS]
    pairs += [(rng.choice(KINDS), rng.choice(SIGNALS)) for _ in range(max(0, n - len(pairs)))]
    rng.shuffle(pairs)
    return pairs


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_kill_at_random_resumes_bit_identical(reference, warm, tmp_path):
    seed = int(os.environ.get("PRUNEREPRO_KILL_SEED", "15"))
    rng = random.Random(seed)
    todo = _plan(rng, int(os.environ.get("PRUNEREPRO_KILL_POINTS", "20")))
    done, folders = [], 0
    while todo:
        d = tmp_path / f"run{folders}"
        folders += 1
        finished = False
        for _ in range(6):  # several kill points per run folder
            pos = _position(d)
            pick = next((i for i, (k, _) in enumerate(todo) if _points(k, pos)), None)
            if pick is None:
                break
            kind, sig = todo.pop(pick)
            point = rng.choice(_points(kind, pos))
            rc, log = _kill_at(warm, d, point, sig)
            completes = sig != signal.SIGKILL and point[1] in ("model.pt", "result.json")
            want = 0 if completes else EXIT[sig]  # stopped while writing the last files: it finishes
            assert rc == want, f"seed {seed}, {point}, {sig.name}: exit {rc}, want {want}\n{log[-2000:]}"
            if sig != signal.SIGKILL and not completes:
                last = log.strip().splitlines()[-1]
                assert last.startswith("interrupted: " if sig == signal.SIGINT else "preempted: "), last
                assert "Traceback" not in log
            done.append({"folder": d.name, "from": pos, "point": point, "kind": kind, "signal": sig.name, "exit": rc})
            if completes:
                finished = True
                break
        if not finished:  # the last resume: a real `python -m repro.train`
            out = cli(SFP + ["--run-dir", str(d)], env=ONE_THREAD)
            assert out.returncode == 0, out.stderr[-3000:]
        assert not list(d.glob(f"*{io.TMP_MARK}*")) and not (d / rundir.LOCK).exists()
        assert_same_run(reference, d)
    print(f"\nkill-at-random, seed {seed}: {len(done)} kill points in {folders} run folders, all bit-identical")
    for k in done:
        print(f"  {k['folder']}: from {k['from']} {k['signal']:8s} at {k['point']} -> exit {k['exit']}")
    (tmp_path / "kills.json").write_text(json.dumps(done, indent=1))
    assert len(done) >= 20
    assert {(k["kind"], k["signal"]) for k in done} == {(k, s.name) for k in KINDS for s in SIGNALS}


# ---------------------------------------------------------------------------- one writer per folder
def _snapshot(d):
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_second_trainer_on_a_folder_exits_2_naming_the_holder(reference, tmp_path):
    d = tmp_path / "run"
    # the first trainer is paused half-way through writing its first checkpoint (epoch 0's end)
    first = popen(SFP + ["--run-dir", str(d)], env={**pause_in_write("checkpoint.pt", 300, 1), **ONE_THREAD})
    wait_for(lambda: (d / f"checkpoint.pt{io.TMP_MARK}paused").exists(), first)
    before = _snapshot(d)
    t = time.time()
    second = cli(SFP + ["--run-dir", str(d)])
    assert second.returncode == 2, second.stderr[-3000:]
    line = second.stderr.strip()
    assert line.count("\n") == 0 and line.startswith(f"error: run folder {d} is in use by pid {first.pid} on host "
                                                     f"{socket.gethostname()}"), line
    assert time.time() - t < 120
    assert _snapshot(d) == before  # touched nothing: the first's temp file is still there
    assert holder(d / rundir.LOCK).startswith(f"pid {first.pid} ")
    # a third start while the first is paused after a step: the same
    (d / f"checkpoint.pt{io.TMP_MARK}paused").unlink()
    first.send_signal(signal.SIGTERM)  # ends the pause: the write completes, then checkpoint + exit 75
    assert first.wait(300) == 75
    assert not (d / rundir.LOCK).exists()
    # resumed by two trainers started together: exactly one trains, the other exits 2. (The one
    # that wins the lock pauses after step 4 until released, so the other cannot find it done.)
    go = tmp_path / "go"
    env = {**pause_at_step(4, 600), "PRUNEREPRO_TEST_RELEASE": str(go), **ONE_THREAD}
    a, b = popen(SFP + ["--run-dir", str(d)], env=env), popen(SFP + ["--run-dir", str(d)], env=env)
    while a.poll() is None and b.poll() is None:
        time.sleep(0.1)
    loser, winner = (a, b) if a.poll() is not None else (b, a)
    log = loser.stdout.read()
    assert loser.returncode == 2 and f"is in use by pid {winner.pid} " in log, log[-3000:]
    go.touch()
    assert winner.wait(600) == 0, winner.stdout.read()[-3000:]
    env = io.read_json(d / "env.json")
    assert len(env["attempts"]) == 2  # the first trainer and the one that resumed; the refused one left no trace
    assert [r["epoch"] for r in rundir.read_metrics(d)] == [0, 1]
    assert_same_run(reference, d)


# ---------------------------------------------------------------------------- one launcher per root
ONE_EPOCH_TABLE1 = ("import dataclasses, sys; from repro import launch; from repro.papers import load_table; "
                    "t = load_table('table1'); t = dataclasses.replace(t, smoke={**t.smoke, 'schedule.epochs': 1}); "
                    "sys.exit(launch.main(t, sys.argv[1:]))")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_launchers_on_one_root_train_every_run_once(tmp_path, cifar_smoke_data):
    root = tmp_path / "runs"
    # table1's miniature cut to its ResNet-20 rows at 1 epoch: the locks are under test, not the
    # training (the launcher's script entry point: tests/test_launch.py)
    cmd = [sys.executable, "-c", ONE_EPOCH_TABLE1, "--smoke", "--cluster", "local", "--root", str(root),
           "--data", str(cifar_smoke_data), "--only", "resnet20/*", "--no-table"]
    # the first launch's runs pause after their first step until released, so it is surely still
    # launching while the others start (its local jobs inherit the environment)
    go = tmp_path / "go"
    paused = {**os.environ, **pause_at_step(1, 600), "PRUNEREPRO_TEST_RELEASE": str(go), **ONE_THREAD}
    first = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=paused)
    lock = root / "table1" / "launch.lock"
    wait_for(lambda: holder(lock) is not None, first)
    second_log = open(root.parent / "second.log", "w")
    second = subprocess.Popen(cmd + ["--lock-wait", "900"], cwd=REPO, stdout=second_log, stderr=subprocess.STDOUT,
                              text=True)
    busy = subprocess.run(cmd + ["--lock-wait", "0"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert busy.returncode == 2, busy.stderr[-2000:]
    assert f"is being launched by pid {first.pid} on host {socket.gethostname()}" in busy.stderr
    assert "Traceback" not in busy.stderr
    wait_for(lambda: "another launch of table1 holds" in (root.parent / "second.log").read_text(), second)
    go.touch()
    assert first.wait(900) == 0, first.stdout.read()[-3000:]
    assert second.wait(900) == 0, (root.parent / "second.log").read_text()[-3000:]
    out = (root.parent / "second.log").read_text()
    assert "nothing to submit" in out and "another launch of table1 holds" in out
    runs = [p for p in (root / "table1").iterdir() if (p / "config.json").exists()]
    assert len(runs) >= 2
    for r in runs:
        assert rundir.read_result(r)["status"] == "done"
        assert len(io.read_json(r / "env.json")["attempts"]) == 1, r  # trained once
        assert len(io.read_json(r / "jobs.json")["jobs"]) == 1, r     # submitted once


# ---------------------------------------------------------------------------- the lock's rules
def test_lock_rules_for_dead_and_foreign_holders(tmp_path, monkeypatch):
    path = tmp_path / "lock"
    with FolderLock(path, "first"):
        with pytest.raises(LockHeld, match=f"pid {os.getpid()} on host {socket.gethostname()} \\(first"):
            FolderLock(path, "second").acquire()
        assert holder(path).startswith(f"pid {os.getpid()} ")
    assert not path.exists() and holder(path) is None
    # a holder on this host that died (kill -9 leaves its record; the kernel dropped its lock): taken over
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "what": "dead"}))
    assert holder(path) is None
    FolderLock(path, "taker").acquire().release()
    # a holder on another host whose file system does not carry flock across hosts: its heartbeat decides
    path.write_text(json.dumps({"host": "node-elsewhere", "pid": 1, "what": "remote", "job": "slurm_job_id=42"}))
    with pytest.raises(LockHeld, match="pid 1 on host node-elsewhere \\(remote, slurm_job_id=42"):
        FolderLock(path, "taker").acquire()
    monkeypatch.setenv(STALE_ENV, "5")
    old = time.time() - 60
    os.utime(path, (old, old))
    FolderLock(path, "taker").acquire().release()  # no heartbeat for a minute: taken over
