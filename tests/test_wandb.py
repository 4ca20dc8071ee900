"""W&B: mode choice, offline fallback, rank-0 only, run id reuse; real offline run files parsed."""
from __future__ import annotations

import glob
import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from repro.wandb_log import WandbLog, choose_mode, resolve_mode
from tests.wandb_reader import format_known, load_run

KNOWN, WHY_NOT = format_known()


def test_mode_order_setting_then_env_then_offline():
    assert resolve_mode("disabled", {"WANDB_MODE": "online"}) == "disabled"
    assert resolve_mode("offline", {"WANDB_MODE": "online"}) == "offline"
    assert resolve_mode("auto", {"WANDB_MODE": "disabled"}) == "disabled"
    assert resolve_mode("auto", {"WANDB_MODE": "dryrun"}) == "offline"
    assert resolve_mode("auto", {}) == "offline"
    assert resolve_mode("auto", {"WANDB_MODE": "bogus"}) == "offline"


def test_online_needs_a_key_and_a_server(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    mode, why = choose_mode("online", {"WANDB_BASE_URL": "http://127.0.0.1:9"})
    assert mode == "offline" and "no W&B API key" in why
    # a key but nothing listening (loopback discard port): offline, after one short local probe
    mode, why = choose_mode("online", {"WANDB_API_KEY": "x" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9"})
    assert mode == "offline" and "does not answer" in why


def _offline_files(run_dir: Path) -> list[str]:
    return sorted(glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb")))


@pytest.mark.timeout(600)
@pytest.mark.skipif(not KNOWN, reason=WHY_NOT)
def test_offline_run_file_holds_the_logged_epochs_and_id_is_reused(wandb_offline, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    kw = dict(setting="auto", project="prunerepro-test", group="table-x", name="r1", config={"seed": 0})
    # another rank: nothing at all is written
    other = WandbLog(run_dir, is_main=False, **kw)
    other.log({"step": 1, "epoch": 0, "val_top1": 1.0})
    other.finish()
    assert not (run_dir / "wandb").exists() and not (run_dir / "wandb_id.txt").exists()

    first = WandbLog(run_dir, is_main=True, **kw)
    assert first.mode == "offline"
    for epoch in range(2):
        first.log({"step": 10 * (epoch + 1), "epoch": epoch, "val_top1": 50.0 + epoch, "train_loss": 1.0 / (epoch + 1)})
    first.finish()
    run_id = (run_dir / "wandb_id.txt").read_text().strip()
    # resumed: same id, W&B's own step restarts, ours goes on
    second = WandbLog(run_dir, is_main=True, **kw)
    second.log({"step": 30, "epoch": 2, "val_top1": 52.0, "train_loss": 0.3})
    second.finish()
    assert (run_dir / "wandb_id.txt").read_text().strip() == run_id

    files = _offline_files(run_dir)
    assert len(files) == 2 and all(f.endswith(f"run-{run_id}.wandb") for f in files)
    rows = []
    for f in files:
        data = load_run(f)
        assert data["exit_code"] == 0, f"{f} holds no exit record"
        assert data["run"]["id"] == run_id and data["run"]["group"] == "table-x"
        rows += [h for h in data["history"] if "val_top1" in h]
    by_step = {r["step"]: r for r in rows}
    assert sorted(by_step) == [10, 20, 30]
    assert [by_step[s]["val_top1"] for s in (10, 20, 30)] == [50.0, 51.0, 52.0]
    assert by_step[30]["epoch"] == 2


def test_disabled_writes_nothing(tmp_path):
    w = WandbLog(tmp_path, is_main=True, setting="disabled", project="p", group="", name="n", config={})
    w.log({"step": 1})
    w.finish()
    assert list(tmp_path.iterdir()) == []


class SlowFinishRun:
    """A W&B run stand-in whose finish takes long (an online upload), recording the order of calls."""

    def __init__(self, events: list):
        self.events = events

    def mark_preempting(self):
        self.events.append("mark_preempting")

    def finish(self, exit_code=0):
        self.events.append("finish start")
        time.sleep(0.5)
        self.events.append("finish end")


def test_a_stop_hands_the_signal_on_before_wandb_finishes(tmp_path):
    """Issue 25 item 6: submitit's requeue handler (here: one that records the hand-off and exits
    as submitit's does) runs before W&B's slow finish; W&B is only marked preempting before it."""
    from repro.engine.agree import stop_here
    from repro.engine.signals import StopFlag
    from repro.wandb_log import WandbLog
    events: list = []

    def requeue_handler(signum, frame):
        events.append("requeue")
        raise SystemExit(-1)

    previous = signal.signal(signal.SIGUSR2, requeue_handler)
    try:
        stop = StopFlag()
        stop.install()
        os.kill(os.getpid(), signal.SIGUSR2)
        assert stop.signum == signal.SIGUSR2
        w = WandbLog(tmp_path, setting="disabled", project="p", group="", name="n", config={}, is_main=True)
        w.run = SlowFinishRun(events)
        with pytest.raises(SystemExit):
            stop_here(SimpleNamespace(wandb=w, stop=stop), ": test")
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert events == ["mark_preempting", "requeue"]


def test_a_stop_without_a_handler_to_hand_on_finishes_wandb_then_raises_preempted(tmp_path):
    from repro.engine.agree import stop_here
    from repro.engine.errors import Preempted
    from repro.engine.signals import StopFlag
    events: list = []
    stop = StopFlag()
    stop.install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
    finally:
        stop.restore()
    w = WandbLog(tmp_path, setting="disabled", project="p", group="", name="n", config={}, is_main=True)
    w.run = SlowFinishRun(events)
    with pytest.raises(Preempted):
        stop_here(SimpleNamespace(wandb=w, stop=stop), ": test")
    assert events == ["mark_preempting", "finish start", "finish end"]
