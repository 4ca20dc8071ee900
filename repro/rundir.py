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

from repro.config import Config, ConfigError, config_hash, identity_diff, run_name
from repro.io import atomic_torch_save, atomic_write_bytes, atomic_write_json

CONFIG, ENV, METRICS, CHECKPOINT, RESULT, MODEL, WANDB_ID, LOCK, LOGS = (
    "config.json", "env.json", "metrics.jsonl", "checkpoint.pt", "result.json", "model.pt", "wandb_id.txt", "lock",
    "logs")
# prune.init_from naming a finished sibling run folder: "run:<its folder name>" (repro.engine.init
# resolves it; the table planner writes it, so names and hashes never depend on where runs live)
RUN_PREFIX = "run:"
CHECKPOINT_FORMAT = "prunerepro-checkpoint-v1"  # checkpoint.pt's "format" (repro.engine.checkpoint)
# result.json keys that must be numbers when present (the table builder computes with them)
NUMERIC = ("val_top1", "val_top5", "val_loss", "flops_reduction", "dense_val_top1", "dense_val_top5",
           "soft_val_top1", "pruned_val_top1", "train_loss", "train_top1", "wall_s")


class RunDirError(RuntimeError):
    """The folder cannot be used for the requested run (the message says why and what to do)."""


class FolderInUse(RunDirError):
    """Another process holds the run folder's lock (the message names it); nothing was touched."""


def read_json_file(path: Path, what: str = "a JSON object") -> dict:
    """A JSON object from ``path``; RunDirError naming the file when it is not one."""
    try:
        obj = json.loads(Path(path).read_text())
    except UnicodeDecodeError:
        obj = None
    except ValueError as e:
        raise RunDirError(f"{path} is not valid JSON ({e}); repair it or move it away") from None
    except OSError as e:
        raise RunDirError(f"{path} cannot be read ({e.strerror or e})") from None
    if not isinstance(obj, dict):
        raise RunDirError(f"{path} does not hold {what}; repair it or move it away")
    return obj


# ----------------------------------------------------------------------------- config
def prepare(run_dir: Path, cfg: Config) -> str:
    """Create the folder or check that it holds this run. Returns "new" | "resume" | "done".

    A folder whose config.json differs from ``cfg`` in any key that changes the computation is
    refused: silently mixing two runs' checkpoints and metrics would corrupt both.
    """
    check_config(run_dir, cfg)
    write_config(run_dir, cfg)
    if done_result(run_dir, cfg) is not None:
        return "done"
    return "resume" if (run_dir / CHECKPOINT).exists() else "new"


def write_config(run_dir: Path, cfg: Config) -> None:
    """Create the folder and write config.json unless it is there (``check_config`` said whose)."""
    make_folder(run_dir)
    if not (run_dir / CONFIG).exists():
        atomic_write_json(run_dir / CONFIG, cfg.to_dict())


def check_config(run_dir: Path, cfg: Config) -> None:
    """The folder's config.json (if any) is this run's; read only."""
    cpath = Path(run_dir) / CONFIG
    if not cpath.exists():
        return
    try:
        old = Config.from_dict(read_json_file(cpath))
    except (ValueError, ConfigError) as e:
        raise RunDirError(f"{cpath} is unreadable ({e}); use a new --run-dir") from None
    diff = identity_diff(old, cfg)
    if diff:
        shown = ", ".join(f"{k}: folder has {a!r}, requested {b!r}" for k, a, b in
                          ((k, *v) for k, v in list(diff.items())[:4]))
        raise RunDirError(f"run folder {run_dir} holds a different run ({shown}); refusing to overwrite "
                          "it - move it away or use another --run-dir")


def make_folder(run_dir: Path) -> None:
    """Create the run folder (and its parents); one line when the path cannot be a folder."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RunDirError(f"--run-dir {run_dir} is a file, not a folder; give a folder path") from None
    except NotADirectoryError:
        raise RunDirError(f"--run-dir {run_dir} lies below a file ({_file_above(run_dir)}); give a folder "
                          "path") from None
    except OSError as e:
        raise RunDirError(f"cannot create the run folder {run_dir} ({e.strerror or e}); give a folder you "
                          "can write to") from None


def _file_above(path: Path) -> Path:
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            return parent
    return path


def check_path(run_dir: Path) -> None:
    """Before anything is created: the run folder path can be (or is) a folder. Read only."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"--run-dir {run_dir} is a file, not a folder; give a folder path")
    above = _file_above(run_dir)
    if above != run_dir:
        raise RunDirError(f"--run-dir {run_dir} lies below a file ({above}); give a folder path")


# ----------------------------------------------------------------------------- result
def read_result(run_dir: Path) -> dict | None:
    """result.json, or None if there is none; RunDirError (one line naming the file) if it is
    malformed: not a JSON object, an unknown status, or a non-numeric number field."""
    p = Path(run_dir) / RESULT
    if not p.exists():
        return None
    res = read_json_file(p, "a run result (a JSON object)")
    if res.get("status") not in ("done", "failed"):
        raise RunDirError(f"{p} has status {res.get('status')!r}, not done|failed; move it away to run again")
    for k in NUMERIC:
        v = res.get(k)
        if (res["status"] == "done" and k in ("val_top1", "val_top5", "flops_reduction") and v is None) or \
                (v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)))):
            raise RunDirError(f"{p}: {k} is {v!r}, not a number; the file was edited or damaged - move it "
                              "away and run again")
    return res


def done_result(run_dir: Path, cfg: Config) -> dict | None:
    """The result of a finished run of ``cfg`` in this folder, or None when it is not done: no
    result.json, a failed one, or a done one whose model.pt is missing (the run then finishes
    again from its checkpoint). A result of another run (its config hash or name differ, e.g. a
    file copied from another seed's folder) is refused."""
    res = read_result(run_dir)
    if res is None or res["status"] != "done":
        return None
    want = {"config_hash": config_hash(cfg), "run_name": run_name(cfg)}
    got = {k: res.get(k) for k in want}
    if got != want:
        raise RunDirError(f"{Path(run_dir) / RESULT} belongs to run {got['run_name']} (config hash "
                          f"{got['config_hash']}), not to {want['run_name']}; move it away")
    if not (Path(run_dir) / MODEL).is_file():
        return None
    return res


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


def read_metrics(run_dir: Path, covered: int = 0) -> list[dict]:
    """Every epoch's row. A torn last line (a writer killed mid-line: no final newline) is
    dropped, unless its epoch is one of the first ``covered`` (the checkpoint's): that row was
    written whole before the checkpoint was, so it was cut from outside, and its measured figures
    (throughput, time) cannot be recomputed - an error naming the file and the epoch, as is any
    other line that is not a JSON object."""
    p = Path(run_dir) / METRICS
    if not p.exists():
        return []
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise RunDirError(f"{p} cannot be read ({e}); move it away") from None
    lines = text.split("\n")
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
            epoch = rows[-1]["epoch"] + 1 if rows else 0  # rows are written in epoch order
            if i == len(lines) and epoch >= covered:  # the line being written when the writer died
                break
            if i == len(lines):
                raise RunDirError(f"{p} line {i} (epoch {epoch}) is cut off, but the checkpoint already covers "
                                  "that epoch, so it will not be written again; restore the file from a copy, or delete "
                                  "checkpoint.pt to train again")
            raise RunDirError(f"{p} line {i} is not an epoch's metrics ({line[:40]!r}); delete that line "
                              "(epochs after the checkpoint are rewritten on resume)")
        rows.append(row)
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
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - replaced only atomically, so damaged or foreign, never torn by us
        raise RunDirError(f"{p} cannot be read (truncated, damaged or not a torch file: {type(e).__name__}); "
                          "move it away to restart the run from scratch") from None
    if not isinstance(ckpt, dict):
        raise RunDirError(f"{p} is not a prunerepro checkpoint; move it away to restart the run from scratch")
    return ckpt


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


def read_env(run_dir: Path) -> dict:
    """env.json ({} when absent); RunDirError naming the file when it is malformed."""
    p = Path(run_dir) / ENV
    if not p.exists():
        return {}
    env = read_json_file(p, "the run's environment record (a JSON object)")
    if not isinstance(env.get("attempts", []), list):
        raise RunDirError(f"{p}: attempts is not a list; repair it or move it away")
    return env


def record_attempt(run_dir: Path, *, hosts: list[str], world_size: int, source: str, device: str,
                   resumed_from: dict | None, **facts) -> dict:
    """Append this attempt to env.json (created on the first attempt) and return the whole record.
    ``facts``: more of what this attempt ran with (the engine's precision and a switch of it)."""
    p = Path(run_dir) / ENV
    env = read_env(run_dir)
    code = code_version()
    env.setdefault("code", code)
    env["python"] = sys.version.split()[0]
    env["torch"] = torch.__version__
    env["cuda"] = torch.version.cuda
    env["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    env["platform"] = platform.platform()
    attempt = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "code": code, "hosts": sorted(set(hosts)),
               "world_size": world_size, "launcher": source, "device": device, "jobs": job_ids(),
               "resumed_from": resumed_from, **facts}
    env.setdefault("attempts", []).append(attempt)
    env["job_ids"] = sorted({a["jobs"]["slurm_job_id"] for a in env["attempts"] if "slurm_job_id" in a["jobs"]})
    # A run resumed on different code is worth knowing about when reading its numbers.
    env["code_versions"] = sorted({a["code"]["version"] for a in env["attempts"]})
    atomic_write_json(p, env)
    return env
