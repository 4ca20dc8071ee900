"""Where am I running? torchrun, srun (plain or submitit) or a single process — and the collectives
the trainer needs, written so that they are no-ops in a single process.

Detection order (the first complete source wins):
1. torchrun: a process identity (RANK, WORLD_SIZE or LOCAL_RANK) is set; then all of RANK,
   WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT must be, else an error names the missing
   ones (a half-exported env is a launcher bug, not a hint). MASTER_ADDR / MASTER_PORT alone
   identify no process: they are often exported from a login shell and travel into every SLURM
   job, so they never select torchrun.
2. submitit (SUBMITIT_EXECUTOR set): ``submitit.helpers.TorchDistributedEnvironment``.
3. SLURM task (SLURM_PROCID set, i.e. started by srun): SLURM_PROCID, SLURM_NTASKS,
   SLURM_LOCALID, SLURM_JOB_NODELIST, SLURM_JOB_ID must all be there. The master is the first
   host of the node list (``scontrol show hostnames``, else submitit's parser); the port is
   derived from the job id exactly as submitit does, so every task computes the same one.
   The SLURM environment is the source of truth there: a ``MASTER_ADDR`` / ``MASTER_PORT``
   exported in a login shell travels into every job, so two multi-GPU jobs on one node would
   fight over one port; both are ignored, with one warning line (under submitit on SLURM too,
   whose helper would honour MASTER_PORT). The node list is always right, a stray
   ``localhost`` from a login shell is not.
4. a single process.
Backend: nccl when the run uses CUDA, gloo otherwise.
"""
from __future__ import annotations

import datetime
import logging
import os
import random
import shutil
import socket
import subprocess
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.distributed as tdist

log = logging.getLogger(__name__)

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
TORCHRUN_IDENTITY = ("RANK", "WORLD_SIZE", "LOCAL_RANK")  # set only by a launcher, for one process
SLURM_VARS = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_JOB_NODELIST", "SLURM_JOB_ID")


class DistEnvError(RuntimeError):
    """The process environment describes an incomplete or inconsistent distributed launch."""


@dataclass(frozen=True)
class DistEnv:
    source: str          # "torchrun" | "submitit" | "slurm" | "single"
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    job_id: str          # SLURM job id (with array suffix) or "" when there is none

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _int(environ: Mapping[str, str], name: str) -> int:
    try:
        return int(environ[name])
    except ValueError:
        raise DistEnvError(f"{name}={environ[name]!r} is not an integer") from None


def slurm_job_id(environ: Mapping[str, str] = os.environ) -> str:
    """The id that identifies this SLURM job (array jobs: ARRAYID_TASKID), or ''."""
    if environ.get("SLURM_ARRAY_JOB_ID") and environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{environ['SLURM_ARRAY_JOB_ID']}_{environ['SLURM_ARRAY_TASK_ID']}"
    return environ.get("SLURM_JOB_ID", "")


def first_host(nodelist: str) -> str:
    """First host name of a SLURM node list such as ``node[1-3,7],gpu2``."""
    if shutil.which("scontrol"):
        try:
            out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                                 text=True, timeout=30, check=True).stdout.split()
            if out:
                return out[0]
        except (subprocess.SubprocessError, OSError):
            pass  # fall through to the pure-Python parser
    from submitit.slurm.slurm import _parse_node_list  # same grammar, no SLURM binaries needed
    return _parse_node_list(nodelist)[0]


def master_port_for(job_id: str) -> int:
    """Port every task of a job derives alike (submitit's rule: seeded by the job id)."""
    return random.Random(job_id).randint(20000, 60000)


def detect(environ: Mapping[str, str] | None = None) -> DistEnv:
    env = os.environ if environ is None else environ
    job = slurm_job_id(env)
    present = [v for v in TORCHRUN_VARS if v in env]
    if any(v in env for v in TORCHRUN_IDENTITY):
        missing = [v for v in TORCHRUN_VARS if v not in env]
        if missing:
            raise DistEnvError(f"incomplete torchrun environment: {', '.join(missing)} missing "
                               f"(found {', '.join(present)}); launch with torchrun or unset them")
        return _checked(DistEnv("torchrun", _int(env, "RANK"), _int(env, "WORLD_SIZE"), _int(env, "LOCAL_RANK"),
                                env["MASTER_ADDR"], _int(env, "MASTER_PORT"), job))
    if env.get("SUBMITIT_EXECUTOR") and environ is None:
        from submitit.helpers import TorchDistributedEnvironment
        t = TorchDistributedEnvironment()
        job = job or str(t._job_env.job_id)
        port = t.master_port
        if env["SUBMITIT_EXECUTOR"] == "slurm":  # submitit's helper honours a stray MASTER_PORT
            port = master_port_for(job)
            _ignored_master_vars(env, t.master_addr, port, job)
        return _checked(DistEnv("submitit", t.rank, t.world_size, t.local_rank, t.master_addr, port, job))
    if "SLURM_PROCID" in env:
        missing = [v for v in SLURM_VARS if v not in env]
        if missing:
            raise DistEnvError(f"incomplete SLURM task environment: {', '.join(missing)} missing "
                               "(start the tasks with srun)")
        world = _int(env, "SLURM_NTASKS")
        addr = first_host(env["SLURM_JOB_NODELIST"]) if world > 1 else "127.0.0.1"
        port = master_port_for(env["SLURM_JOB_ID"])
        _ignored_master_vars(env, addr, port, env["SLURM_JOB_ID"])
        return _checked(DistEnv("slurm", _int(env, "SLURM_PROCID"), world, _int(env, "SLURM_LOCALID"),
                                addr, port, job))
    return DistEnv("single", 0, 1, 0, "127.0.0.1", 0, job)


def _ignored_master_vars(env: Mapping[str, str], addr: str, port: int, job_id: str) -> None:
    """One warning line when a login shell's MASTER_ADDR / MASTER_PORT differ from what SLURM's
    environment gives (the first host of the node list; the port derived from the job id)."""
    stray = [f"{k}={env[k]}" for k, mine in (("MASTER_ADDR", addr), ("MASTER_PORT", str(port)))
             if env.get(k) and env[k] != mine]
    if stray:
        log.warning("%s ignored under SLURM: the master is %s:%d (the first host of the node list; the port "
                    "derived from job id %s, the same in every task)", " ".join(stray), addr, port, job_id)


def _checked(d: DistEnv) -> DistEnv:
    if d.world_size < 1 or not 0 <= d.rank < d.world_size or d.local_rank < 0:
        raise DistEnvError(f"inconsistent {d.source} environment: rank {d.rank}, world size {d.world_size}, "
                           f"local rank {d.local_rank}")
    return d


def pick_device(requested: str, d: DistEnv) -> torch.device:
    """cuda:local_rank when CUDA is asked for (or auto and present), else cpu."""
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise DistEnvError("device=cuda but torch sees no CUDA device (CPU build or no GPU)")
        n = torch.cuda.device_count()
        # One task per GPU: either each task sees all GPUs (pick by local rank) or SLURM/submitit
        # narrowed CUDA_VISIBLE_DEVICES to one.
        dev = torch.device("cuda", d.local_rank % n)
        torch.cuda.set_device(dev)
        return dev
    return torch.device("cpu")


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def init(d: DistEnv, device: torch.device, timeout_s: int = 1800, *, single: bool = False) -> None:
    """Join the process group (no-op for one process, unless ``single``: the GPU check joins a
    one-process group to prove the backend works)."""
    if not (d.distributed or single) or tdist.is_initialized():
        return
    tdist.init_process_group(backend_for(device), init_method=f"tcp://{d.master_addr}:{d.master_port}",
                             rank=d.rank, world_size=d.world_size, timeout=datetime.timedelta(seconds=timeout_s))


def teardown() -> None:
    if tdist.is_initialized():
        tdist.destroy_process_group()


# ----------------------------------------------------------------------------- collectives
def initialized() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def active() -> bool:
    return tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1


def barrier() -> None:
    if active():
        tdist.barrier()


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (in place and returned)."""
    if active():
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t


def any_flag(flag: bool, device: torch.device) -> bool:
    """True on every rank if it is true on any (used to agree on stopping at one step)."""
    if not active():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather_objects(obj: Any) -> list:
    """Every rank's ``obj`` on every rank (picklable objects; small ones only)."""
    if not active():
        return [obj]
    out: list = [None] * tdist.get_world_size()
    tdist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not active():
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_buffers_(module: torch.nn.Module, src: int = 0) -> None:
    """Give every rank ``src``'s buffers (BN running statistics), in place.

    DDP re-broadcasts rank 0's buffers at the start of each training forward only, so after the
    last step every rank holds statistics from its own batch. Evaluation must use one model on
    every rank — the one rank 0 saves — or the reported accuracy is not that model's.
    """
    if not active():
        return
    for buf in module.buffers():
        tdist.broadcast(buf, src=src)


def hostname() -> str:
    return socket.gethostname()


# ----------------------------------------------------------------------------- synchronised BN
class SyncBatchNorm2d(torch.nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are taken over the global batch of all ranks.

    torch's SyncBatchNorm only runs on accelerators; this one is a few all-reduces through the
    differentiable ``torch.distributed.nn.all_reduce``, so it also runs on CPU/gloo. It stays a
    BatchNorm2d subclass with the same state-dict keys, so pruning code that looks for BN layers
    and checkpoints are unaffected. Outside training or with one rank it is plain BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and active()):
            return super().forward(x)
        from torch.distributed.nn import all_reduce as diff_all_reduce
        c = x.shape[1]
        n_local = x.numel() // c
        # Sums in float64: E[x^2] - E[x]^2 in float32 loses most digits for channels with a large
        # mean and a small variance (e.g. after ReLU on images with flat backgrounds).
        xd = x.double()
        stats = torch.cat([xd.sum((0, 2, 3)), (xd * xd).sum((0, 2, 3)),
                           torch.full((1,), float(n_local), dtype=torch.float64, device=x.device)])
        stats = diff_all_reduce(stats)
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0)
        # float32 for float32/bf16/fp16 input, float64 for a float64 run (dtype=float64)
        cdt = torch.promote_types(x.dtype, torch.float32)
        xf = x.to(cdt)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach().to(self.running_mean.dtype), alpha=m)
                self.running_var.mul_(1 - m).add_((var.detach() * (n / (n - 1))).to(self.running_var.dtype), alpha=m)
        mean, inv = mean.to(cdt), torch.rsqrt(var + self.eps).to(cdt)
        y = (xf - mean[None, :, None, None]) * inv[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def convert_sync_bn(module: torch.nn.Module, device: torch.device | None = None) -> torch.nn.Module:
    """Synchronise every BatchNorm2d over the ranks, in place (same objects, parameters, buffers and
    state-dict keys, so optimizer, pruner and checkpoints are unaffected).

    CUDA: torch's ``SyncBatchNorm`` (fused kernels, float32 statistics; it refuses CPU input).
    CPU: ``SyncBatchNorm2d`` above (gloo, float64 sums, a few times the memory traffic). Both are
    swapped in by class, as their fields are BatchNorm2d's (plus SyncBatchNorm's process group).
    """
    cuda = device is not None and torch.device(device).type == "cuda"
    for m in module.modules():
        if type(m) is torch.nn.BatchNorm2d:
            if cuda:
                m.__class__ = torch.nn.SyncBatchNorm
                m.process_group = None  # None = the default (world) group
            else:
                m.__class__ = SyncBatchNorm2d  # same fields, only forward differs
    return module


def revert_sync_bn(module: torch.nn.Module) -> torch.nn.Module:
    """Back to plain BatchNorm2d (what pruning, compaction and model.pt expect)."""
    for m in module.modules():
        if type(m) is SyncBatchNorm2d:
            m.__class__ = torch.nn.BatchNorm2d
        elif type(m) is torch.nn.SyncBatchNorm:
            m.__class__ = torch.nn.BatchNorm2d
            del m.process_group
    return module
