"""Fault injection for the test suite (loaded into a process by tests/plugins/site/sitecustomize.py;
``conftest.pause_at_step`` / ``pause_in_write`` / ``pause_in_phase`` make the environment). Pause
points, each configured by an env variable; a paused process marks where it is with a file, so a
test can kill or signal it at a known point. It wraps public functions only (``loop.train_step``,
``loop.build``, ``finish.finish``, ``io.atomic_write_bytes``). Every pause ends early when a stop
signal (SIGTERM, SIGUSR1, SIGUSR2, SIGINT) reaches the trainer, or when the file named by
PRUNEREPRO_TEST_RELEASE (if set) exists.

  PRUNEREPRO_TEST_PAUSE_AT_STEP="STEP:SECONDS"   rank 0 pauses after optimizer step STEP and
      touches RUN_DIR/logs/paused-at-step-STEP.
  PRUNEREPRO_TEST_PAUSE_IN_WRITE="NAME:SECONDS[:NTH]"   the NTH (default 1st) atomic write of file
      NAME in this process pauses after writing half of its bytes into its temporary file (and
      touches NAME.tmp-paused in the run folder), so a test can kill -9 the process in the middle
      of a write; after the pause the write is done as usual.
  PRUNEREPRO_TEST_PAUSE_IN_PHASE="PHASE:SECONDS"   rank 0 pauses at the start of a phase and
      touches RUN_DIR/logs/paused-in-PHASE:
        startup  the run folder is locked and prepared; loaders and model not built yet
        final    after the last epoch's checkpoint, before the final phase (deliver, evaluate,
                 write model.pt and result.json)
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

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


def _replace_everywhere(old, new) -> None:
    """``new`` wherever a module of the project holds ``old`` under its name (a module that did
    ``from repro.io import atomic_write_bytes`` holds its own reference)."""
    for name, module in list(sys.modules.items()):
        if (name == "repro" or name.startswith("repro.")) and getattr(module, old.__name__, None) is old:
            setattr(module, old.__name__, new)


if _step_spec:
    _pause_step, _pause_s = int(_step_spec.split(":")[0]), float(_step_spec.split(":")[1])
    _train_step = loop.train_step

    def train_step(a, t, pos, x, y):
        out = _train_step(a, t, pos, x, y)
        if a.is_main and pos.step == _pause_step:
            (a.run_dir / "logs" / f"paused-at-step-{pos.step}").touch()
            _pause(_pause_s)
        return out

    loop.train_step = train_step

if _write_spec:
    _parts = _write_spec.split(":")
    _name, _seconds, _nth = _parts[0], float(_parts[1]), int(_parts[2]) if len(_parts) > 2 else 1
    _atomic_write_bytes = io.atomic_write_bytes

    def atomic_write_bytes(path, data: bytes) -> None:
        path = Path(path)
        _writes[path.name] = _writes.get(path.name, 0) + 1
        if path.name == _name and _writes[path.name] == _nth:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(io.tmp_name(path), "wb") as f:  # where the write puts its bytes before the rename
                f.write(data[:len(data) // 2])
                f.flush()
            path.with_name(f"{path.name}{io.TMP_MARK}paused").touch()  # tells the test where we are
            _pause(_seconds)
        _atomic_write_bytes(path, data)

    _replace_everywhere(_atomic_write_bytes, atomic_write_bytes)

if _phase_spec:
    _phase, _phase_s = _phase_spec.split(":")[0], float(_phase_spec.split(":")[1])

    def _at(phase: str, a) -> None:
        if phase == _phase and a.is_main:
            (a.run_dir / "logs" / f"paused-in-{phase}").touch()
            _pause(_phase_s)

    _build, _finish = loop.build, finish.finish

    def build(a, *args, **kwargs):
        _at("startup", a)
        return _build(a, *args, **kwargs)

    def finish_(a, *args, **kwargs):
        _at("final", a)
        return _finish(a, *args, **kwargs)

    loop.build = build
    finish.finish = finish_  # loop.execute calls it as finish.finish
