"""Fault injection for the test suite, loaded by the trainer at start-up through
PRUNEREPRO_PLUGINS (repro/engine/setup.py). Two pause points, each configured by an env variable:

  PRUNEREPRO_TEST_PAUSE_AT_STEP="STEP:SECONDS"   rank 0 pauses after optimizer step STEP and
      touches RUN_DIR/logs/paused-at-step-STEP, until SECONDS pass or a stop signal arrives, so a
      test can kill or signal the run at a known point.
  PRUNEREPRO_TEST_PAUSE_IN_WRITE="NAME:SECONDS[:NTH]"   the NTH (default 1st) atomic write of file
      NAME in this process pauses for SECONDS after writing half of its bytes (and touches
      NAME.tmp-paused), so a test can kill -9 the process in the middle of a write.
"""
from __future__ import annotations

import os
import time

from repro import io
from repro.engine import loop

STEP_ENV, WRITE_ENV = "PRUNEREPRO_TEST_PAUSE_AT_STEP", "PRUNEREPRO_TEST_PAUSE_IN_WRITE"
_step_spec = os.environ.get(STEP_ENV, "")
_write_spec = os.environ.get(WRITE_ENV, "")
_writes: dict[str, int] = {}

if _step_spec:
    _pause_step, _pause_s = int(_step_spec.split(":")[0]), float(_step_spec.split(":")[1])
    _train_step = loop.train_step

    def train_step(s, x, y):
        out = _train_step(s, x, y)
        if s.is_main and s.step == _pause_step:
            (s.run_dir / "logs" / f"paused-at-step-{s.step}").touch()
            end = time.time() + _pause_s
            while time.time() < end and s.stop.signum is None:
                time.sleep(0.05)
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
            time.sleep(_seconds)
            f.write(data[half:])
            f.flush()
            os.fsync(f.fileno())

    io.write_tmp = write_tmp
