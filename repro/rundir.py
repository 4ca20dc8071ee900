"""One run's folder: config check, checkpoint, metrics, result, environment.

Layout (docs/ARCHITECTURE.md, "Training engine"):
  config.json      resolved config (written once; a different request for the folder is refused)
  env.json         code version + dirty flag, versions, and one entry per attempt (job ids, hosts)
  metrics.jsonl    one line per finished epoch
  checkpoint.pt    everything needed to resume exactly (atomic: a kill leaves the previous one)
  model.pt         the delivered model (compact for pruned runs), ``repro.prune.compact`` format
  wandb_id.txt     W&B run id reused on resume
  logs/rank{N}.log per-rank log
  result.json      written last and atomically; its presence with status "done" means done

Every write goes through ``repro.io``'s atomic writes, so a reader (or a resumed run) sees either
the old or the new file, never a torn one.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from repro.config import Config, ConfigError, identity_diff
from repro.io import atomic_torch_save, atomic_write_bytes, atomic_write_json, read_json

CONFIG, ENV, METRICS, CHECKPOINT, RESULT, MODEL, WANDB_ID = (
    "config.json", "env.json", "metrics.jsonl", "checkpoint.pt", "result.json", "model.pt", "wandb_id.txt")


class RunDirError(RuntimeError):
    """The folder cannot be used for the requested run (the message says why and what to do)."""


# ----------------------------------------------------------------------------- config
def prepare(run_dir: Path, cfg: Config) -> str:
    """Create the folder or check that it holds this run. Returns "new" | "resume" | "done".

    A folder whose config.json differs from ``cfg`` in any key that changes the computation is
    refused: silently mixing two runs' checkpoints and metrics would corrupt both.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    cpath = run_dir / CONFIG
    if cpath.exists():
        try:
            old = Config.from_dict(read_json(cpath))
        except (ValueError, ConfigError) as e:
            raise RunDirError(f"{cpath} is unreadable ({e}); use a new --run-dir") from None
        diff = identity_diff(old, cfg)
        if diff:
            shown = ", ".join(f"{k}: folder has {a!r}, requested {b!r}" for k, a, b in
                              ((k, *v) for k, v in list(diff.items())[:4]))
            raise RunDirError(f"run folder {run_dir} holds a different run ({shown}); refusing to overwrite "
                              "it - use another --run-dir")
    else:
        atomic_write_json(cpath, cfg.to_dict())
    res = read_result(run_dir)
    if res is not None and res.get("status") == "done":
        return "done"
    return "resume" if (run_dir / CHECKPOINT).exists() else "new"


# ----------------------------------------------------------------------------- result
def read_result(run_dir: Path) -> dict | None:
    p = Path(run_dir) / RESULT
    if not p.exists():
        return None
    return read_json(p)


def write_result(run_dir: Path, result: dict) -> None:
    if result.get("status") not in ("done", "failed"):
        raise ValueError(f"result status must be done|failed, got {result.get('status')!r}")
    atomic_write_json(Path(run_dir) / RESULT, result)


# ----------------------------------------------------------------------------- metrics
def append_metrics(run_dir: Path, row: dict) -> None:
    # One short line per epoch: an append is atomic enough on a local/NFS file for a reader,
    # and a torn last line after a kill is dropped by trim_metrics on resume.
    with open(Path(run_dir) / METRICS, "a") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_metrics(run_dir: Path) -> list[dict]:
    p = Path(run_dir) / METRICS
    rows = []
    if p.exists():
        for line in p.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a torn final line from a killed writer
    return rows


def trim_metrics(run_dir: Path, before_epoch: int) -> None:
    """Keep only epochs < ``before_epoch`` (those the checkpoint covers); a resumed run rewrites
    the rest, so no epoch appears twice."""
    rows = [r for r in read_metrics(run_dir) if r.get("epoch", 0) < before_epoch]
    data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    atomic_write_bytes(Path(run_dir) / METRICS, data.encode())


# ----------------------------------------------------------------------------- checkpoint
def save_checkpoint(run_dir: Path, state: dict) -> None:
    atomic_torch_save(Path(run_dir) / CHECKPOINT, state)


def load_checkpoint(run_dir: Path) -> dict | None:
    p = Path(run_dir) / CHECKPOINT
    if not p.exists():
        return None
    try:
        # Our own file (RNG states are plain Python/numpy objects), so full unpickling is fine.
        return torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:  # a checkpoint is only ever replaced atomically, so this is not a torn write
        raise RunDirError(f"{p} cannot be read ({type(e).__name__}: {e}); move it away to restart the run") from None


# ----------------------------------------------------------------------------- environment
def code_version() -> dict:
    """Git commit of the code that runs, and whether the checkout has uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=20, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=20, check=True).stdout.strip() != ""
        return {"commit": commit, "dirty": dirty, "version": commit[:12] + ("-dirty" if dirty else "")}
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import PackageNotFoundError, version
        try:
            v = version("prunerepro")
        except PackageNotFoundError:
            v = "unknown"
        return {"commit": None, "dirty": None, "version": f"prunerepro-{v} (not a git checkout)"}


def job_ids(environ=os.environ) -> dict:
    """Every id by which a scheduler knows this attempt."""
    keys = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT", "SLURM_STEP_ID",
            "SUBMITIT_EXECUTOR", "TORCHELASTIC_RUN_ID")
    return {k.lower(): environ[k] for k in keys if environ.get(k)}


def record_attempt(run_dir: Path, *, hosts: list[str], world_size: int, source: str, device: str,
                   resumed_from: dict | None) -> dict:
    """Append this attempt to env.json (created on the first attempt) and return the whole record."""
    p = Path(run_dir) / ENV
    env = read_json(p) if p.exists() else {}
    code = code_version()
    env.setdefault("code", code)
    env["python"] = sys.version.split()[0]
    env["torch"] = torch.__version__
    env["cuda"] = torch.version.cuda
    env["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    env["platform"] = platform.platform()
    attempt = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "code": code, "hosts": sorted(set(hosts)),
               "world_size": world_size, "launcher": source, "device": device, "jobs": job_ids(),
               "resumed_from": resumed_from}
    env.setdefault("attempts", []).append(attempt)
    env["job_ids"] = sorted({a["jobs"]["slurm_job_id"] for a in env["attempts"] if "slurm_job_id" in a["jobs"]})
    # A run resumed on different code is worth knowing about when reading its numbers.
    env["code_versions"] = sorted({a["code"]["version"] for a in env["attempts"]})
    atomic_write_json(p, env)
    return env
