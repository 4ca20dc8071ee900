"""Stop signals only set a flag; the loop checkpoints at the next step boundary.

Installed at the very start of ``repro.train.run`` and kept until it returns, so a signal at any
moment (start-up, training, the final phase) ends the run in one of two ways: a checkpoint at a
step boundary, or - when nothing was trained since the last one - no write at all; either way
exit 75 (SIGINT, i.e. Ctrl-C: exit 130). Whatever handler was installed before (submitit's
requeue handler for its preemption signal) is called after our checkpoint (``chain``), so the
scheduler integration keeps working; Python's own SIGINT handler is not (it would raise
KeyboardInterrupt through the clean exit).
"""
from __future__ import annotations

import logging
import signal
import threading
from typing import Any

log = logging.getLogger(__name__)

STOP_SIGNALS = tuple(s for s in (getattr(signal, "SIGUSR1", None), getattr(signal, "SIGUSR2", None),
                                 signal.SIGTERM, signal.SIGINT) if s is not None)


class StopFlag:
    def __init__(self):
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}
        self.replaced: dict[int, Any] = {}  # what restore() put back, for chain()

    def install(self) -> None:
        if self.previous:  # already installed (run() installs it before the loop starts)
            return
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
        if callable(prev) and prev is not signal.default_int_handler:
            prev(self.signum, None)
