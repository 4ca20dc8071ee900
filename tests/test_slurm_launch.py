"""The launcher on the real local SLURM cluster, with the real trainer, writers and loaders.

- table2 in smoke form, every row (--all-rows: the miniature itself has no pre-trained row): one
  run as a 2-node x 1-task DDP job; a table slice as a job array whose pre-trained run waits
  (afterok) for its own baseline; the table is built; a second launch submits nothing and leaves
  the table byte-identical.
- a run preempted with job._interrupt() requeues itself and resumes from its checkpoint.
- a run whose job dies without a result (scancel) shows as failed, with the SLURM state, in the table.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from pathlib import Path

import pytest
import submitit

from repro import launch
from repro.papers import load_table
from repro.runs.jobs import ACTIVE_STATES
from repro.tables import build

from conftest import pause_at_step

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _wait_for(cond, timeout: float, what: str, poll: float = 0.3):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _run_dirs(root: Path, table: str) -> dict[str, Path]:
    """{run name: folder} of the run folders a launch created."""
    return {p.name: p for p in (root / table).iterdir() if (p / "config.json").exists()}


def _sacct(job_id: str, field: str) -> str:
    return subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", field], capture_output=True,
                          text=True, check=True).stdout.split("\n")[0].strip()


def _sacct_ended(job_id: str, field: str) -> str:
    """``field`` of a job that has ended, once accounting knows it has: slurmctld hands job records
    to slurmdbd asynchronously, and on a loaded machine sacct can lag behind a finished job."""
    _wait_for(lambda: _sacct(job_id, "State") not in ACTIVE_STATES | {""},  # "": not recorded yet
              120, f"accounting to record the end of job {job_id}", poll=1)
    return _sacct(job_id, field)


def _argv(root, data, partition, *extra):
    return ["--smoke", "--cluster", "slurm", "--root", str(root), "--data", str(data),
            "--partition", partition, *extra]


@pytest.mark.timeout(360)
def test_table2_smoke_on_slurm_ddp_array_dependency_and_rerun(tmp_path, slurm_cluster, imagenet_smoke_data, capsys):
    # The miniature's schedule cut to 1 epoch: this test is about SLURM (DDP across nodes, arrays,
    # afterok, the rerun), not accuracy; tests/test_launch_smoke.py runs the miniature as shipped.
    table2 = load_table("table2")
    spec = dataclasses.replace(table2, smoke={**table2.smoke, "schedule.epochs": 1, "schedule.milestones": ()})
    root, part = tmp_path / "runs", slurm_cluster["partition"]
    argv = lambda *extra: _argv(root, imagenet_smoke_data, part, "--all-rows", *extra)  # noqa: E731

    # 1. one run as a 2-node x 1-task DDP job through the real trainer (not waited for: the
    #    cluster has room for it and the array below at the same time)
    assert launch.main(spec, argv("--only", "resnet34/baseline/*", "--nodes", "2", "--no-table")) == 0
    (base34,) = _run_dirs(root, "table2").values()
    job34 = json.loads((base34 / "jobs.json").read_text())["jobs"][-1]["job_id"]

    # 2. a slice of the table as an array: baseline + scratch in wave 1, pre-trained in wave 2 after its baseline
    #    (ResNet-18's rows, with --all-rows)
    assert launch.main(spec, argv("--only", "resnet18/*", "--wait", "--no-table")) == 0
    runs = {p.name.split("-imagenet-")[1].rsplit("-", 3)[0] + "/" + p.name.split("-")[0]: p
            for p in _run_dirs(root, "table2").values()}
    jobs = {k: json.loads((p / "jobs.json").read_text())["jobs"] for k, p in runs.items()}
    base, scratch, pre = jobs["base/resnet18"][-1], jobs["sfp0.3/resnet18"][-1], jobs["sfp0.3-ft/resnet18"][-1]
    assert base["wave"] == scratch["wave"] == 1 and pre["wave"] == 2
    assert base["job_id"].split("_")[0] == scratch["job_id"].split("_")[0]  # one array
    assert pre["job_id"].split("_")[0] != base["job_id"].split("_")[0]  # its own submission (a 1-task batch is a plain job)
    for k in ("base/resnet18", "sfp0.3/resnet18", "sfp0.3-ft/resnet18"):
        assert json.loads((runs[k] / "result.json").read_text())["status"] == "done", k
    # the pre-trained run started only after its baseline had finished (afterok held)
    pre_env = json.loads((runs["sfp0.3-ft/resnet18"] / "env.json").read_text())
    assert _sacct_ended(pre["job_id"], "Start") >= _sacct_ended(base["job_id"], "End")
    assert pre["job_id"].split("_")[0] in pre_env["attempts"][0]["jobs"].values()

    _wait_for(lambda: (base34 / "result.json").exists(), 180, "the 2-node run", poll=1)
    res = json.loads((base34 / "result.json").read_text())
    assert res["status"] == "done" and res["world_size"] == 2
    assert _sacct_ended(job34, "NNodes") == "2"

    # 3. a launch of both slices submits nothing and builds the table; again: byte-identical
    both = ("--only", "resnet18/*", "--only", "resnet34/baseline/*", "--wait")
    capsys.readouterr()
    assert launch.main(spec, argv(*both)) == 0
    assert "nothing to submit" in capsys.readouterr().err
    out = root / "tables"
    md = (out / "table2.md").read_text()
    n = len(spec.rows)
    assert "SMOKE TABLE" in md and f"Runs found: 4 of {n} expected (done 4, running 0, failed 0, missing {n - 4})" in md
    assert "Miniature rows" not in md and "--smoke --all-rows`" in md  # every row shown; rebuilt with the flag
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert launch.main(spec, argv(*both)) == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def _one_run_spec(name: str, epochs: int):
    """table1's ResNet-20 baseline alone, trained longer (a TableSpec is plain data)."""
    t1 = load_table("table1")
    return dataclasses.replace(t1, name=name, rows=(t1.rows[0],), smoke={**t1.smoke, "schedule.epochs": epochs},
                               smoke_rows=None)


@pytest.mark.timeout(240)
def test_preempted_run_requeues_and_resumes(tmp_path, slurm_cluster, cifar_smoke_data, monkeypatch):
    spec = _one_run_spec("preempt", epochs=3)
    root = tmp_path / "runs"
    # the trainer's test hook: rank 0 pauses 8 s after optimizer step 5 (epoch 2 of 3) and says so;
    # sbatch passes the environment on to the job
    for k, v in pause_at_step(5, 8).items():
        monkeypatch.setenv(k, v)
    assert launch.main(spec, _argv(root, cifar_smoke_data, slurm_cluster["partition"], "--no-table")) == 0
    (run_dir,) = _run_dirs(root, "preempt").values()
    entry = json.loads((run_dir / "jobs.json").read_text())["jobs"][-1]
    job = submitit.SlurmJob(folder=Path(entry["stdout"]).parent, job_id=entry["job_id"])
    _wait_for(lambda: (run_dir / "logs" / "paused-at-step-5").exists(), 120, "the run to reach step 5")
    job._interrupt()  # preemption: SIGTERM then USR2, as SLURM does
    _wait_for(lambda: (run_dir / "result.json").exists(), 180, "the requeued run to finish", poll=1)
    res = json.loads((run_dir / "result.json").read_text())
    assert res["status"] == "done" and res["epochs"] == 3
    attempts = json.loads((run_dir / "env.json").read_text())["attempts"]
    assert len(attempts) == 2
    assert attempts[1]["jobs"].get("slurm_restart_count") == "1"
    assert attempts[1]["resumed_from"] is not None and attempts[1]["resumed_from"]["step"] >= 5
    # requeued under the same job id: the launcher's record still names the live job
    assert json.loads((run_dir / "jobs.json").read_text())["jobs"][-1]["job_id"] == entry["job_id"]
    assert [m["epoch"] for m in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())] == [0, 1, 2]


@pytest.mark.timeout(180)
def test_job_that_dies_without_result_shows_failed_in_table(tmp_path, slurm_cluster, cifar_smoke_data, monkeypatch):
    spec = _one_run_spec("killed", epochs=3)
    root = tmp_path / "runs"
    for k, v in pause_at_step(2, 30).items():
        monkeypatch.setenv(k, v)
    assert launch.main(spec, _argv(root, cifar_smoke_data, slurm_cluster["partition"], "--no-table")) == 0
    (run_dir,) = _run_dirs(root, "killed").values()
    job_id = json.loads((run_dir / "jobs.json").read_text())["jobs"][-1]["job_id"]
    _wait_for(lambda: (run_dir / "logs" / "paused-at-step-2").exists(), 120, "the run to start training")
    subprocess.run(["scancel", job_id], check=True)
    _wait_for(lambda: _sacct(job_id, "State").startswith("CANCELLED") and not subprocess.run(
        ["squeue", "-h", "-j", job_id], capture_output=True, text=True).stdout.strip(), 60, "the job to end")
    # a relaunch notices, records it and does not resubmit a failed run by itself
    assert launch.main(spec, _argv(root, cifar_smoke_data, slurm_cluster["partition"], "--no-table")) == 1
    entry = json.loads((run_dir / "jobs.json").read_text())["jobs"]
    assert len(entry) == 1 and entry[0]["final_state"] == "CANCELLED"
    (md,) = [p for p in build(spec, root, tmp_path / "tables", smoke=True) if p.suffix == ".md"]
    assert f"failed 1 (job {job_id} ended CANCELLED without a result)" in md.read_text()
