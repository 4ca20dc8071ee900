"""The plain loader's worker processes and the trainer's stop signals.

SLURM signals every process of a job step (SIGTERM on preemption, the ``--signal`` warning); the
trainer turns the signal into a checkpoint at its next stop check (every 20 steps on CUDA) and
its DataLoader workers must keep serving batches until then. Under ``fork`` they inherit the
trainer's flag-setting handler; under ``forkserver`` (Python 3.14's default on Linux) or
``spawn`` they start with the default action and die, and so does the forkserver process whose
children they are (torch's workers exit when their parent goes), turning a preemption into a
failed run. So: workers ignore the stop signals (``ignore_stop_signals``, their worker_init_fn),
and a forkserver imports this module first (``loader_context``), which ignores them there too.
A forkserver exits by itself when the trainer does (multiprocessing's "alive" pipe).
"""
from __future__ import annotations

import multiprocessing
import signal
import sys

# The trainer's stop signals (repro.engine.signals.STOP_SIGNALS; data may not import the engine,
# tests/test_preemption.py checks the two lists agree).
WORKER_IGNORED_SIGNALS = tuple(s for s in (getattr(signal, "SIGUSR1", None), getattr(signal, "SIGUSR2", None),
                                           signal.SIGTERM, signal.SIGINT) if s is not None)


# How long a worker keeps serving after a SIGTERM. multiprocessing itself ends a daemonic worker
# that is still alive when the trainer exits with SIGTERM and then joins it without a timeout: a
# worker that ignored SIGTERM for good would hang that exit (and a trainer that fails with its
# workers alive waits this long at exit). 10 s covers the trainer's next stop check after SLURM's
# SIGTERM (20 steps on CUDA: ~0.3 s at ResNet-50's 16 ms/step, 10 s at 0.5 s/step) and stays well
# inside SLURM's default KillWait of 30 s.
TERM_GRACE_S = 10


def _term_later(_signum, _frame) -> None:
    signal.alarm(TERM_GRACE_S)  # SIGALRM's default action ends the worker then


def ignore_stop_signals(_worker_id: int | None = None) -> None:
    """Ignore the stop signals in this process (a DataLoader worker's worker_init_fn); SIGTERM
    only for TERM_GRACE_S seconds."""
    for s in WORKER_IGNORED_SIGNALS:
        signal.signal(s, _term_later if s == signal.SIGTERM else signal.SIG_IGN)


def loader_context():
    """The default multiprocessing context for the DataLoader workers; a forkserver one imports
    this module first, so the server ignores the stop signals (below) before it forks a worker.
    (A forkserver that something else started earlier keeps its handlers.)"""
    ctx = multiprocessing.get_context()
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload([__name__])
    return ctx


def _imported_by_forkserver() -> bool:
    """Is this import the forkserver's preload (``multiprocessing.forkserver.main`` on the stack)?"""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "main" and frame.f_globals.get("__name__") == "multiprocessing.forkserver":
            return True
        frame = frame.f_back
    return False


if _imported_by_forkserver():  # the server exits by itself with the trainer: ignore them for good
    for _s in WORKER_IGNORED_SIGNALS:
        signal.signal(_s, signal.SIG_IGN)
