"""The trainer end to end on tiny digits runs: run folder contents, finished runs, bad input, NaN.

Also the helpers the other test_train_* files share (tiny config, CLI runner, comparisons).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from repro import io, rundir
from repro.config import Config, config_hash, run_name
from repro.prune.compact import load_compact
from repro.train import TrainingFailed, main, run

REPO = Path(__file__).resolve().parents[1]
# resnet20 (the smallest CIFAR ResNet) on digits, a few batches per epoch, plain deterministic loader.
TINY = ["data.loader=plain", "data.workers=0", "data.batch_size=8", "schedule.train_batches=3",
        "schedule.val_batches=2", "schedule.epochs=2", "schedule.milestones=1", "device=cpu", "deterministic=true"]
METRIC_KEYS = {"step", "epoch", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "epoch_s",
               "imgs_per_s", "data_wait_s", "data_wait_share", "recorded_at"}
# Not results: timings, and the code version (a shared checkout may get a commit mid-test).
TIMING = {"epoch_s", "imgs_per_s", "data_wait_s", "data_wait_share", "recorded_at", "wall_s", "finished", "code_version",
          "latency"}


def _forkable(args: list[str], env: dict | None) -> bool:
    """Whether a trainer run can be forked from the warm Python (conftest.WarmPython) instead of
    started afresh (~5 s of CPU in imports each): one OpenMP thread (what the warm Python's torch
    was imported with) and no W&B (whose service and exit hooks want a process of their own)."""
    full = {**os.environ, **(env or {})}
    return full.get("OMP_NUM_THREADS") == "1" and full.get("WANDB_MODE") == "disabled" and not any(
        a.startswith("log.wandb=") and a != "log.wandb=disabled" for a in args)


def cli(args: list[str], env: dict | None = None, timeout: int = 600, **kw) -> subprocess.CompletedProcess:
    """``python -m repro.train ARGS`` to its end (forked from the warm Python where it can be)."""
    if kw or not _forkable(args, env):
        return subprocess.run([sys.executable, "-m", "repro.train", *args], cwd=REPO, capture_output=True,
                              text=True, timeout=timeout, env={**os.environ, **(env or {})}, **kw)
    from conftest import shared_warm
    z = shared_warm()
    pid, log = z.start(["-m", "repro.train", *args], env, split=True)
    p = WarmProcess(z, pid, log)
    try:
        rc = p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(60)
        raise
    err = Path(f"{log}.err")
    return subprocess.CompletedProcess(args, rc, log.read_text(), err.read_text() if err.exists() else "")


class WarmProcess:
    """What the tests use of a subprocess.Popen (stdout and stderr together, text), for a trainer
    forked from the warm Python."""

    def __init__(self, z, pid: int, log: Path):
        self.z, self.pid, self.log, self.returncode = z, pid, log, None
        self.stdout = self  # .stdout.read(): everything it has written so far

    def read(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def poll(self) -> int | None:
        self.returncode = self.z.ended.get(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        end = None if timeout is None else time.time() + timeout
        while self.poll() is None:
            if end is not None and time.time() > end:
                raise subprocess.TimeoutExpired(["repro.train"], timeout)
            time.sleep(0.02)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


def popen(args: list[str], env: dict | None = None) -> subprocess.Popen | WarmProcess:
    """``python -m repro.train ARGS`` started (forked from the warm Python where it can be), its
    stdout and stderr together."""
    if not _forkable(args, env):
        return subprocess.Popen([sys.executable, "-m", "repro.train", *args], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})})
    from conftest import shared_warm
    z = shared_warm()
    pid, log = z.start(["-m", "repro.train", *args], env)
    return WarmProcess(z, pid, log)


def wait_for(pred, proc: subprocess.Popen, timeout: float = 600) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        if proc.poll() is not None:
            raise AssertionError(f"process ended (rc {proc.returncode}) before the awaited point:\n"
                                 f"{proc.stdout.read()[-3000:]}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("timed out waiting for the awaited point")


def without_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def model_state(run_dir: Path) -> dict:
    return torch.load(run_dir / rundir.MODEL, weights_only=True)["state_dict"]


def assert_same_run(a: Path, b: Path) -> None:
    """Bit-identical: every metric of every epoch, the result, the delivered weights."""
    ra, rb = rundir.read_result(a), rundir.read_result(b)
    assert ra["status"] == rb["status"] == "done"
    assert {k: v for k, v in ra.items() if k not in TIMING} == {k: v for k, v in rb.items() if k not in TIMING}
    assert without_timing(rundir.read_metrics(a)) == without_timing(rundir.read_metrics(b))
    sa, sb = model_state(a), model_state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# ----------------------------------------------------------------------------- tests
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_tiny_run_writes_a_complete_run_folder(tmp_path):
    cfg = Config.from_overrides(TINY)
    d = tmp_path / run_name(cfg)
    res = run(cfg, d)
    assert res["status"] == "done" and res == rundir.read_result(d)
    for key in ("val_top1", "val_top5", "conv_macs", "baseline_conv_macs", "flops_reduction", "params", "spec",
                "epochs", "wall_s", "world_size", "code_version", "reason"):
        assert key in res, key
    assert res["flops_reduction"] == 0.0 and res["conv_macs"] == 40_550_400  # dense ResNet-20 (docs/papers.md)
    assert res["epochs"] == 2 and res["steps"] == 6 and res["world_size"] == 1 and res["val_images"] == 16
    assert (res["eval_precision"], res["train_precision"]) == ("float32", "float32")  # CPU trains in float32
    assert Config.from_dict(json.loads((d / "config.json").read_text())) == cfg
    rows = rundir.read_metrics(d)
    assert [r["epoch"] for r in rows] == [0, 1] and [r["step"] for r in rows] == [3, 6]
    assert all(set(r) == METRIC_KEYS for r in rows)
    # The time spent waiting for the loader (issue 25 item 8), within the epoch's time.
    assert all(0 < r["data_wait_s"] < r["epoch_s"] and r["data_wait_share"] == r["data_wait_s"] / r["epoch_s"]
               for r in rows)
    assert res["data_wait_share"] == rows[-1]["data_wait_share"]
    assert [r["lr"] for r in rows] == pytest.approx([0.01, 0.02])  # warm-up, then 0.1 x0.2 at milestone 1
    assert rows[-1]["val_top1"] == res["val_top1"]  # method none: the delivered model is the trained one
    env = json.loads((d / "env.json").read_text())
    assert env["torch"] == torch.__version__ and "cuda" in env and isinstance(env["code"]["dirty"], (bool, type(None)))
    assert len(env["attempts"]) == 1 and env["attempts"][0]["hosts"] and env["attempts"][0]["launcher"] == "single"
    ck = torch.load(d / "checkpoint.pt", weights_only=True)
    assert (ck["epoch"], ck["batch"], ck["step"]) == (2, 0, 6) and ck["config_hash"] == config_hash(cfg)
    m = load_compact(d / rundir.MODEL)
    assert sum(p.numel() for p in m.parameters()) == res["params"]
    assert (d / "logs" / "rank0.log").read_text().count("epoch 2/2") == 1
    assert not list(d.glob(f"*{io.TMP_MARK}*"))

    # A finished run started again returns at once, touching nothing.
    before = (d / "env.json").read_text()
    t = time.time()
    assert run(cfg, d) == res
    assert time.time() - t < 2 and (d / "env.json").read_text() == before

    # SNF from that baseline folder: search on rank 0, compact model, fine-tune at lr/10.
    snf_cfg = Config.from_overrides(TINY + ["prune.method=snf", f"prune.init_from={d}", "prune.flops_reduction=40",
                                            "prune.finetune_epochs=1", "prune.search_batches=1"])
    s = tmp_path / "snf"
    snf = run(snf_cfg, s)
    assert snf["status"] == "done" and snf["method"] == "snf" and snf["epochs"] == 1
    assert snf["dense_val_top1"] == res["val_top1"]  # the baseline, evaluated on the same images
    assert 40.0 <= snf["flops_reduction"] <= 40.0 + 0.1 + 1e-9 and snf["conv_macs"] < res["conv_macs"]
    assert snf["snf"]["label"] == "SNF, abstract-level reimplementation"
    assert rundir.read_metrics(s)[0]["lr"] == pytest.approx(0.001)  # warm-up lr 0.01 x init_lr_scale 0.1
    compact = load_compact(s / rundir.MODEL)
    assert compact.spec.to_json() == snf["spec"] and compact.spec.convs
    assert (s / "snf_search.json").exists()


def test_cli_bad_input_exit_codes(tmp_path, capsys):
    # In-process main(): the same code path as the CLI, without paying a torch import per case.
    for args, msg in (
        (["optim.lrr=0.1"], "unknown key 'optim.lrr'"),
        (["optim.lr=fast"], "optim.lr: expected float"),
        (["schedule.epochs=-3"], "schedule.epochs: must be >= 1"),
        (["prune.method=sfp", "prune.rate=1.5"], "prune.rate: must be in [0, 1)"),
        (["prune.method=snf", "prune.flops_reduction=50", "prune.init_from=/nonexistent/run"],
         "prune.init_from: /nonexistent/run does not exist"),
        ([], "give --run-dir DIR or --root DIR"),
    ):
        extra = [] if args == [] else ["--run-dir", str(tmp_path / "x")]
        assert main(TINY + args + extra) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and msg in err and err.count("\n") == 1, err


@pytest.mark.timeout(600)
def test_folder_with_another_config_is_refused_untouched(tmp_path):
    d = tmp_path / "run"
    # fails fast: a wrong-type override is caught before anything runs
    out = cli(TINY + ["seed=x", "--run-dir", str(d)])
    assert out.returncode == 2 and "seed: expected int" in out.stderr and not d.exists()
    rundir.prepare(d, Config.from_overrides(TINY))  # a folder holding one config ...
    snapshot = {p.name: p.read_bytes() for p in d.iterdir()}
    out = cli(TINY + ["optim.lr=0.05", "--run-dir", str(d)])  # ... asked to run another
    assert out.returncode == 2, out.stderr
    assert "holds a different run (optim.lr: folder has 0.1, requested 0.05)" in out.stderr
    assert "Traceback" not in out.stderr
    assert {p.name: p.read_bytes() for p in d.iterdir()} == snapshot


@pytest.mark.timeout(600)
def test_nan_loss_fails_clearly_and_keeps_the_checkpoint(tmp_path):
    d = tmp_path / "nan"
    # epoch 0 warms up at 0.01 and is checkpointed; epoch 1's absurd lr makes the loss NaN/inf
    out = cli(TINY + ["optim.lr=1e30", "--run-dir", str(d)])
    assert out.returncode == 1, out.stderr
    assert "failed: training loss became NaN/inf at epoch 1" in out.stderr and "Traceback" not in out.stderr
    res = rundir.read_result(d)
    assert res["status"] == "failed" and "NaN" in res["reason"]
    ck = torch.load(d / "checkpoint.pt", weights_only=True)
    assert ck["epoch"] == 1 and all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    assert [r["epoch"] for r in rundir.read_metrics(d)] == [0]
    # and it stays failed on a retry (deterministic), the checkpoint still the last good one
    with pytest.raises(TrainingFailed):
        run(Config.from_overrides(TINY + ["optim.lr=1e30"]), d)
    assert rundir.read_result(d)["status"] == "failed"


def test_resume_in_another_amp_dtype_is_refused_unless_allowed_then_recorded(tmp_path, capsys):
    """Issue 25 item 11: the checkpoint records the precision it was trained in; a requeue onto
    another GPU type (bf16 <-> fp16) must not switch it silently. On CPU: a checkpoint that says
    bfloat16, resumed under the CPU's float32."""
    one = TINY + ["schedule.epochs=1"]
    d = tmp_path / "run"
    assert main(one + ["--run-dir", str(d)]) == 0
    ck = torch.load(d / "checkpoint.pt", weights_only=True)
    assert ck["precision"] == "float32"
    for name in (rundir.MODEL, rundir.RESULT):  # as if stopped before the final phase: it resumes from the checkpoint
        (d / name).unlink()
    ck["precision"] = "bfloat16"
    torch.save(ck, d / "checkpoint.pt")
    before = {p.name: p.read_bytes() for p in d.iterdir() if p.is_file() and p.name != "lock"}
    capsys.readouterr()
    assert main(one + ["--run-dir", str(d)]) == 2
    err = capsys.readouterr().err.splitlines()[-1]  # (after the log's warning that model.pt is missing)
    assert err.startswith("error: "), err
    assert "trained in bfloat16, this attempt would train in float32" in err and "allow_precision_switch" in err
    assert {p.name: p.read_bytes() for p in d.iterdir() if p.is_file() and p.name != "lock"} == before
    assert main(one + ["allow_precision_switch=true", "--run-dir", str(d)]) == 0
    attempts = json.loads((d / "env.json").read_text())["attempts"]
    assert [a.get("precision_switch") for a in attempts] == [None, {"from": "bfloat16", "to": "float32"}]
    assert [a["precision"] for a in attempts] == ["float32", "float32"]


def test_init_from_accepts_torchvision_style_state_dicts(tmp_path):
    from repro.config import ConfigError
    from repro.models import build_model
    from repro.engine.init import load_init
    torch.manual_seed(1)
    src = build_model("resnet18", num_classes=10)
    # torchvision's keys, as saved by a DDP training script: {"state_dict": {"module.conv1.weight": ...}}
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, tmp_path / "tv.pth")
    m = load_init(str(tmp_path / "tv.pth"), tmp_path, "resnet18", 10)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), src.state_dict().values()))
    with pytest.raises(ConfigError, match="has a 10-class head, this run needs 1000"):
        load_init(str(tmp_path / "tv.pth"), tmp_path, "resnet18", 1000)
    with pytest.raises(ConfigError, match="does not fit a dense resnet34"):
        load_init(str(tmp_path / "tv.pth"), tmp_path, "resnet34", 10)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="is not a readable torch file"):
        load_init(str(tmp_path / "junk.pt"), tmp_path, "resnet18", 10)
    unfinished = tmp_path / "run"
    unfinished.mkdir()
    with pytest.raises(ConfigError, match="has not finished"):
        load_init(str(unfinished), tmp_path, "resnet18", 10)
