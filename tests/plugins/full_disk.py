"""Fault injection (loaded through tests/plugins/site/sitecustomize.py): a full disk on rank 0.

  PRUNEREPRO_TEST_FULL_DISK_AT=N   the Nth checkpoint write of this process (``rundir.save_checkpoint``)
      raises OSError(ENOSPC) before writing anything, and touches RUN_DIR/logs/full-disk first
      (its mtime: when the failure happened). Rank 0 is the only rank that writes it.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

from repro import rundir

_at = int(os.environ.get("PRUNEREPRO_TEST_FULL_DISK_AT", "0") or 0)
if _at:
    _save, _count = rundir.save_checkpoint, [0]

    def save_checkpoint(run_dir, state):
        _count[0] += 1
        if _count[0] == _at:
            (Path(run_dir) / "logs" / "full-disk").touch()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(Path(run_dir) / rundir.CHECKPOINT))
        return _save(run_dir, state)

    rundir.save_checkpoint = save_checkpoint
