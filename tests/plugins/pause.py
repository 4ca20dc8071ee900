"""Fault injection for the test suite, loaded by the trainer at start-up through
PRUNEREPRO_PLUGINS (repro/engine/setup.py). Pause points, each configured by an env variable; a
paused process marks where it is with a file, so a test can kill or signal it at a known point.
Every pause ends early when a stop signal (SIGTERM, SIGUSR1, SIGUSR2, SIGINT) reaches the trainer,
or when the file named by PRUNEREPRO_TEST_RELEASE (if set) exists.

  PRUNEREPRO_TEST_PAUSE_AT_STEP="STEP:SECONDS"   rank 0 pauses after optimizer step STEP and
      touches RUN_DIR/logs/paused-at-step-STEP.
  PRUNEREPRO_TEST_PAUSE_IN_WRITE="NAME:SECONDS[:NTH]"   the NTH (default 1st) atomic write of file
      NAME in this process pauses after writing half of its bytes (and touches NAME.tmp-paused
      in the run folder), so a test can kill -9 the process in the middle of a write.
  PRUNEREPRO_TEST_PAUSE_IN_PHASE="PHASE:SECONDS"   rank 0 pauses at the start of a phase and
      touches RUN_DIR/logs/paused-in-PHASE:
        startup  the run folder is locked and prepared; loaders and model not built yet
        final    after the last epoch's checkpoint, before the final phase (deliver, evaluate,
                 write model.pt and result.json)
"""
from __future__ import annotations

import os
import signal
import time

from repro import io
from repro.engine import finish, loop

STEP_ENV, WRITE_ENV, PHASE_ENV = ("PRUNEREPRO_TEST_PAUSE_AT_STEP", "PRUNEREPRO_TEST_PAUSE_IN_WRITE",
                                  "PRUNEREPRO_TEST_PAUSE_IN_PHASE")
_release = os.environ.get("PRUNEREPRO_TEST_RELEASE", "")
_step_spec = os.environ.get(STEP_ENV, "")
_write_spec = os.environ.get(WRITE_ENV, "")
_phase_spec = os.environ.get(PHASE_ENV, "")
_writes: dict[str, int] = {}


def _stop_signalled() -> bool:
    """Whether the trainer's stop flag is up (its handler is the bound method of a StopFlag)."""
    flag = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return getattr(flag, "signum", None) is not None


def _pause(seconds: float) -> None:
    end = time.time() + seconds
    while time.time() < end and not _stop_signalled() and not (_release and os.path.exists(_release)):
        time.sleep(0.02)


if _step_spec:
    _pause_step, _pause_s = int(_step_spec.split(":")[0]), float(_step_spec.split(":")[1])
    _train_step = loop.train_step

    def train_step(s, x, y):
        out = _train_step(s, x, y)
        if s.is_main and s.step == _pause_step:
            (s.run_dir / "logs" / f"paused-at-step-{s.step}").touch()
            _pause(_pause_s)
        return out

    loop.train_step = train_step

if _write_spec:
    _parts = _write_spec.split(":")
    _name, _seconds, _nth = _parts[0], float(_parts[1]), int(_parts[2]) if len(_parts) > 2 else 1
    _write_tmp = io.write_tmp

    def write_tmp(tmp, data: bytes) -> None:
        name = tmp.name.split(io.TMP_MARK)[0]
        _writes[name] = _writes.get(name, 0) + 1
        if name != _name or _writes[name] != _nth:
            return _write_tmp(tmp, data)
        with open(tmp, "wb") as f:
            half = len(data) // 2
            f.write(data[:half])
            f.flush()
            tmp.with_name(f"{name}{io.TMP_MARK}paused").touch()  # tells the test where we are
            _pause(_seconds)
            f.write(data[half:])
            f.flush()
            os.fsync(f.fileno())

    io.write_tmp = write_tmp

if _phase_spec:
    _phase, _phase_s = _phase_spec.split(":")[0], float(_phase_spec.split(":")[1])

    def _at(phase: str, s) -> None:
        if phase == _phase and s.is_main:
            (s.run_dir / "logs" / f"paused-in-{phase}").touch()
            _pause(_phase_s)

    _build, _finish = loop.build, finish.finish

    def build(s, ckpt):
        _at("startup", s)
        return _build(s, ckpt)

    def finish_(s):
        _at("final", s)
        return _finish(s)

    loop.build = build
    finish.finish = finish_  # loop.execute imports it at call time
