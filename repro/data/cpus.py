"""How many loader workers a rank gets: ``data.workers``, or (-1, the default) the CPUs this task
really has.

"The CPUs this task has" is its CPU affinity mask (``os.sched_getaffinity``: what SLURM's task
binding / cgroups or ``taskset`` leave it), capped by ``SLURM_CPUS_PER_TASK`` where SLURM booked a
number per task (without task binding the mask is the whole node, shared by every task on it),
else shared out by ``LOCAL_WORLD_SIZE`` (torchrun's processes on this node). ``os.cpu_count()``
counts the whole machine and is never used.

What a worker is differs by loader: FFCV decodes with that many threads (the training process's
own thread mostly waits on the GPU, as in ffcv-imagenet, which gives ~12 per GPU); the plain
DataLoader starts that many processes beside the training process, which keeps one CPU.
"""
from __future__ import annotations

import os
from typing import Mapping

AUTO = -1


def task_cpus(environ: Mapping[str, str] | None = None, affinity: int | None = None) -> int:
    """CPUs this process may use (at least 1)."""
    env = os.environ if environ is None else environ
    n = affinity if affinity is not None else len(os.sched_getaffinity(0))
    booked = env.get("SLURM_CPUS_PER_TASK", "")
    local = env.get("LOCAL_WORLD_SIZE", "")
    if booked.isdigit() and int(booked) > 0:
        n = min(n, int(booked))
    elif local.isdigit() and int(local) > 1:
        n //= int(local)
    return max(1, n)


def resolve_workers(setting: int, loader: str, environ: Mapping[str, str] | None = None,
                    affinity: int | None = None) -> int:
    """``data.workers`` -> the number of loader workers. N >= 0 is taken as given (0 = the plain
    loader loads in the training process; FFCV runs at least one thread); -1 = auto."""
    if setting != AUTO:
        return setting
    n = task_cpus(environ, affinity)
    return n if loader == "ffcv" else n - 1
