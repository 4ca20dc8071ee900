"""How many CPUs a task gets and how many loader workers a rank runs: ``data.workers``, or (-1, the
default) the CPUs this task really has.

"The CPUs this task has" is its CPU affinity mask (``os.sched_getaffinity``: what SLURM's task
binding / cgroups or ``taskset`` leave it), capped by ``SLURM_CPUS_PER_TASK`` where SLURM booked a
number per task (without task binding the mask is the whole node, shared by every task on it).
When torchrun started this process (its own variable ``TORCHELASTIC_RUN_ID`` is set), its
``LOCAL_WORLD_SIZE`` processes share what is left: under ``srun -c 64 torchrun --nproc_per_node 8``
the SLURM task is torchrun's, and each of its 8 ranks gets 8 CPUs, not 64 (512 threads on 64
CPUs). A process SLURM started itself (submitit, ``srun --ntasks-per-node``) is its own task and
keeps its booking, even where submitit exports ``LOCAL_WORLD_SIZE`` too. Without SLURM, a
``LOCAL_WORLD_SIZE`` from any launcher shares the mask out. ``os.cpu_count()`` counts the whole
machine and is never used.

What a worker is differs by loader: FFCV decodes with that many threads; the training process's
own thread launches the CUDA kernels, so on CUDA FFCV gets the task's CPUs - 1 (ffcv-imagenet
and dinov2 book 10-12 CPUs per GPU, which ``CPUS_PER_GPU_TASK`` follows; measured:
``python -m repro.bench.cpus_per_gpu``). The plain DataLoader starts that many processes beside
the training process, which keeps one CPU.
"""
from __future__ import annotations

import os
from typing import Mapping

AUTO = -1
# CPUs the launcher books per GPU task (``--cpus-per-task``) and the GPU check pins itself to:
# 11 FFCV decoding threads + the training thread. README, "Checking a GPU node", gives the
# images/s per core behind it (repro.bench.cpus_per_gpu).
CPUS_PER_GPU_TASK = 12


def _positive(env: Mapping[str, str], name: str) -> int:
    value = env.get(name, "")
    return int(value) if value.isdigit() and int(value) > 0 else 0


def task_cpus(environ: Mapping[str, str] | None = None, affinity: int | None = None) -> int:
    """CPUs this process may use (at least 1)."""
    env = os.environ if environ is None else environ
    n = affinity if affinity is not None else len(os.sched_getaffinity(0))
    booked, local = _positive(env, "SLURM_CPUS_PER_TASK"), _positive(env, "LOCAL_WORLD_SIZE")
    if booked:
        n = min(n, booked)
    if local > 1 and (not booked or "TORCHELASTIC_RUN_ID" in env):
        n //= local
    return max(1, n)


def resolve_workers(setting: int, loader: str, environ: Mapping[str, str] | None = None,
                    affinity: int | None = None, cuda: bool = False) -> int:
    """``data.workers`` -> the number of loader workers. N >= 0 is taken as given (0 = the plain
    loader loads in the training process; FFCV runs at least one thread); -1 = auto: the task's
    CPUs, less one for the training process where it needs one (the plain loader's process; the
    thread that drives the GPU)."""
    if setting != AUTO:
        return setting
    n = task_cpus(environ, affinity)
    return max(1, n - 1) if loader == "ffcv" and cuda else n if loader == "ffcv" else n - 1


if __name__ == "__main__":  # what a launched process gets: python -m repro.data.cpus
    print(f"task_cpus={task_cpus()} ffcv_workers={resolve_workers(AUTO, 'ffcv')}")
