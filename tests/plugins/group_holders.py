"""Test plugin (loaded like pause.py, through tests/plugins/site/sitecustomize.py): at
``dist.teardown`` (a public function it wraps) each rank prints how many DistributedDataParallel
wrappers are still alive. DDP's reducer holds the process group; one that outlives teardown
destroys the group later, with the GIL held, which can hang the process at exit
(``repro.engine.loop.release`` says how). Every way a run ends must print 0."""
from __future__ import annotations

import gc
import sys

from torch.nn.parallel import DistributedDataParallel

from repro import dist

LINE = "[group_holders] DDP wrappers alive at teardown:"
_teardown = dist.teardown


def teardown() -> None:
    gc.collect()
    alive = sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects())
    print(f"{LINE} {alive}", file=sys.stderr, flush=True)
    _teardown()


dist.teardown = teardown
