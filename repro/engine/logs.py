"""Per-rank log files and progress output: every rank logs to run_dir/logs/rank{N}.log, rank 0
also to stderr; a tqdm bar on an interactive terminal, plain lines every N steps otherwise."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from repro.rundir import LOGS

log = logging.getLogger("repro.engine")


class RunLogging:
    def __init__(self, run_dir: Path, rank: int):
        self.logger = logging.getLogger("repro")
        self.logger.setLevel(logging.INFO)
        (run_dir / LOGS).mkdir(parents=True, exist_ok=True)
        fmt = logging.Formatter(f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        self.handlers = [logging.FileHandler(run_dir / LOGS / f"rank{rank}.log")]
        if rank == 0:
            self.handlers.append(logging.StreamHandler(sys.stderr))
        for h in self.handlers:
            h.setFormatter(fmt)
            self.logger.addHandler(h)
        self.logger.propagate = False

    def close(self) -> None:
        for h in self.handlers:
            self.logger.removeHandler(h)
            h.close()


class Progress:
    """tqdm bar on an interactive stderr (rank 0), plain log lines every ``every`` steps otherwise."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool, every: int):
        self.bar = None
        self.every, self.desc, self.total, self.i = every, desc, total, initial
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True)
        self.enabled = enabled

    def update(self, loss: float | None = None) -> None:
        self.i += 1
        if self.bar is not None:
            self.bar.update(1)
            if loss is not None and self.i % 10 == 0:
                self.bar.set_postfix(loss=f"{loss:.4f}")
        elif self.enabled and self.i % self.every == 0:
            log.info("%s batch %d/%d%s", self.desc, self.i, self.total, "" if loss is None else f" loss {loss:.4f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
