"""Test instrumentation (loaded by tests/plugins/site/sitecustomize.py; ``conftest.compile_stats``
makes the environment): after every optimizer step, appends to the file named by
PRUNEREPRO_TEST_COMPILE_STATS one line "STEP GRAPHS", GRAPHS being the number of graphs
torch.compile has compiled in this process so far (dynamo's own counter). A recompile - a guard
that failed, a graph break - shows as GRAPHS growing after the first compiled step. It wraps
``loop.train_step`` only."""
from __future__ import annotations

import os

from torch._dynamo.utils import counters

from repro.engine import loop

_path = os.environ["PRUNEREPRO_TEST_COMPILE_STATS"]
_train_step = loop.train_step


def train_step(a, t, pos, x, y):
    out = _train_step(a, t, pos, x, y)
    with open(_path, "a") as f:
        f.write(f"{pos.step} {counters['stats']['unique_graphs']}\n")
    return out


loop.train_step = train_step
