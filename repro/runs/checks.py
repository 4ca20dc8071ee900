"""Checks before anything is submitted: a writable root, converted data, folders that hold this
run and no other, a scheduler that exists. Each failure is one LaunchError/DataError line."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from repro.config import Config, identity_diff

from .errors import LaunchError
from .plan import Plan


def check_root(root: Path) -> None:
    """--root must be a folder we can create files in (checked by writing, not by mode bits)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise LaunchError(f"--root {root} is not a writable folder ({e.strerror or e}); give a folder "
                          "you can write to (on a cluster: one on a shared file system)") from None


def check_data_for(p: Plan) -> None:
    """Every data set a run to be submitted reads must exist and be converted (repro.data.check_data)."""
    from repro.data import check_data
    seen = set()
    for pl in p.runs:
        if pl.submit:
            d = pl.cfg.data
            if (d.name, d.ffcv_dir, d.path, d.loader) not in seen:
                seen.add((d.name, d.ffcv_dir, d.path, d.loader))
                check_data(d)  # DataError: one line that says how to convert the data


def check_starting_points(p: Plan) -> None:
    """A run to be submitted that starts from torchvision's released weights finds them here, before
    a job fails on a compute node (the weights are the one starting point a table names that lives
    outside the table; a baseline run of the table is checked by the plan)."""
    from repro.engine.init import check_exists
    from repro.models.torchvision_weights import is_spec
    for pl in p.runs:
        if pl.submit and is_spec(pl.cfg.prune.init_from):
            check_exists(pl.cfg.prune.init_from, pl.run_dir)  # ConfigError: where the file goes, how to get it


def check_folders(p: Plan) -> None:
    """A run folder that holds another run's config is refused before anything is submitted."""
    for pl in p.runs:
        cpath = pl.run_dir / "config.json"
        if pl.submit and cpath.exists():
            try:
                diff = identity_diff(Config.from_json(cpath.read_text()), pl.cfg)
            except ValueError as e:
                raise LaunchError(f"{cpath} is unreadable ({e}); move the folder away") from None
            if diff:
                raise LaunchError(f"{pl.run_dir} holds a different run ({', '.join(sorted(diff)[:3])} differ); "
                                  "move it away")


def resolve_cluster(cluster: str) -> str:
    if cluster == "auto":
        return "slurm" if shutil.which("sbatch") else "local"
    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise LaunchError("--cluster slurm: no `sbatch` on this machine; run on a SLURM login node, "
                          "or use --cluster local")
    return cluster
