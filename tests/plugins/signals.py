"""Fault injection for the test suite (loaded through PRUNEREPRO_PLUGINS, like pause.py): the
CUDA stop-check cadence on CPU, and stop signals that reach the ranks at different steps.

  PRUNEREPRO_TEST_CHECK_EVERY=N   every Session agrees on its stop/NaN flags every N steps (as on
      CUDA, where N is 20) instead of every step (CPU).
  PRUNEREPRO_TEST_SIGNAL_AT="RANK:WHEN:NAME[,RANK:WHEN:NAME...]"   rank RANK sends itself
      signal NAME (e.g. SIGUSR1) right after optimizer step WHEN (a number), or as the evaluation
      at the end of epoch E starts (WHEN = evalE): a preemption whose signal reaches the ranks at
      different points, known exactly.

Loaded at all, it also makes SIGQUIT dump every thread's stack (faulthandler): a test that finds
a rank hung asks it where it is before killing it.
"""
from __future__ import annotations

import faulthandler
import os
import signal

from repro.engine import loop

CHECK_ENV, SIGNAL_ENV = "PRUNEREPRO_TEST_CHECK_EVERY", "PRUNEREPRO_TEST_SIGNAL_AT"
_check_every = os.environ.get(CHECK_ENV, "")
_signal_at = os.environ.get(SIGNAL_ENV, "")
faulthandler.register(signal.SIGQUIT, all_threads=True)

if _check_every:
    _post_init = loop.Session.__post_init__

    def __post_init__(self):
        _post_init(self)
        self.check_every = int(_check_every)

    loop.Session.__post_init__ = __post_init__

if _signal_at:
    _plan = {}
    for item in _signal_at.split(","):
        rank, when, name = item.split(":")
        _plan[(int(rank), when)] = getattr(signal, name)
    _train_step, _evaluate = loop.train_step, loop.evaluate

    def _fire(rank: int, when: str) -> None:
        sig = _plan.pop((rank, when), None)
        if sig is not None:
            os.kill(os.getpid(), sig)

    def train_step(s, x, y):
        out = _train_step(s, x, y)
        _fire(s.denv.rank, str(s.step))
        return out

    def evaluate(s, model, *args, **kwargs):
        _fire(s.denv.rank, f"eval{s.epoch}")
        return _evaluate(s, model, *args, **kwargs)

    loop.train_step, loop.evaluate = train_step, evaluate
