"""Test-suite setting (loaded through tests/plugins/site/sitecustomize.py): every process starts
its multiprocessing children - the plain loader's DataLoader workers among them - with the
``forkserver`` start method, Python 3.14's default on Linux, instead of ``fork``. Forkserver
children are forked from a fresh server process: they inherit none of the trainer's signal
handlers (tests/test_preemption.py)."""
from __future__ import annotations

import multiprocessing

multiprocessing.set_start_method("forkserver", force=True)
