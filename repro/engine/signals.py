"""Stop signals only set a flag; the loop checkpoints at the next step boundary.

Whatever handler was installed before (submitit's requeue handler for its preemption signal) is
called after our checkpoint (``chain``), so the scheduler integration keeps working.
"""
from __future__ import annotations

import logging
import signal
import threading
from typing import Any

log = logging.getLogger(__name__)

STOP_SIGNALS = tuple(s for s in (getattr(signal, "SIGUSR1", None), getattr(signal, "SIGUSR2", None),
                                 signal.SIGTERM) if s is not None)


class StopFlag:
    def __init__(self):
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}
        self.replaced: dict[int, Any] = {}  # what restore() put back, for chain()

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            log.warning("not in the main thread: stop signals are not caught (no checkpoint on preemption)")
            return
        for s in STOP_SIGNALS:
            self.previous[s] = signal.signal(s, self._handler)

    def _handler(self, signum, _frame) -> None:
        if self.signum is None:
            self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "signal"

    def restore(self) -> None:
        for s, h in self.previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        if self.previous:
            self.replaced = self.previous
        self.previous = {}

    def chain(self) -> None:
        """Hand the signal to the handler that was there before us (after restore())."""
        prev = self.replaced.get(self.signum)
        if callable(prev):
            prev(self.signum, None)
