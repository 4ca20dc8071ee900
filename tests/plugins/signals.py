"""Fault injection for the test suite (loaded like pause.py, through
tests/plugins/site/sitecustomize.py): stop signals that reach the ranks at different steps. (The
CUDA stop-check cadence on CPU is a config key, ``stop_check_every=20``.)

  PRUNEREPRO_TEST_SIGNAL_AT="RANK:WHEN:NAME[,RANK:WHEN:NAME...]"   rank RANK sends itself
      signal NAME (e.g. SIGUSR1) right after optimizer step WHEN (a number), or as the evaluation
      at the end of epoch E starts (WHEN = evalE): a preemption whose signal reaches the ranks at
      different points, known exactly. It wraps public functions only (``loop.train_step``,
      ``loop.run_epoch``, ``loop.evaluate``).

Loaded at all, it also makes SIGQUIT dump every thread's stack (faulthandler): a test that finds
a rank hung asks it where it is before killing it.
"""
from __future__ import annotations

import faulthandler
import os
import signal

from repro.engine import loop

SIGNAL_ENV = "PRUNEREPRO_TEST_SIGNAL_AT"
_signal_at = os.environ.get(SIGNAL_ENV, "")
faulthandler.register(signal.SIGQUIT, all_threads=True)

if _signal_at:
    _plan = {}
    for item in _signal_at.split(","):
        rank, when, name = item.split(":")
        _plan[(int(rank), when)] = getattr(signal, name)
    _train_step, _run_epoch, _evaluate = loop.train_step, loop.run_epoch, loop.evaluate
    _epoch: dict = {}  # the rank and the Position of the epoch being run (run_epoch), while it runs

    def _fire(rank: int, when: str) -> None:
        sig = _plan.pop((rank, when), None)
        if sig is not None:
            os.kill(os.getpid(), sig)

    def train_step(a, t, pos, x, y):
        out = _train_step(a, t, pos, x, y)
        _fire(a.denv.rank, str(pos.step))
        return out

    def run_epoch(a, t, pos):
        _epoch.update(rank=a.denv.rank, pos=pos)
        try:
            return _run_epoch(a, t, pos)
        finally:
            _epoch.clear()

    def evaluate(*args, **kwargs):
        if _epoch:  # the epoch's evaluation (not the final phase's)
            _fire(_epoch["rank"], f"eval{_epoch['pos'].epoch}")
        return _evaluate(*args, **kwargs)

    loop.train_step, loop.run_epoch, loop.evaluate = train_step, run_epoch, evaluate
