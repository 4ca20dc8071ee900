"""Checks before anything is submitted: a writable root, converted data, folders that hold this
run and no other, a scheduler that exists. Each failure is one LaunchError/DataError line."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from repro.papers.recipes import IMAGENET_PAPER_GPUS
from repro.papers.spec import TableSpec
from repro.rundir import RunDirError, check_config

from .errors import LaunchError
from .plan import Plan, config_for


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
    """A run folder that holds another run's config is refused before anything is submitted (the
    trainer's own rule, ``rundir.check_config``)."""
    for pl in p.runs:
        if pl.submit:
            try:
                check_config(pl.run_dir, pl.cfg)
            except RunDirError as e:
                raise LaunchError(str(e)) from None


def resolve_cluster(cluster: str) -> str:
    if cluster == "auto":
        return "slurm" if shutil.which("sbatch") else "local"
    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise LaunchError("--cluster slurm: no `sbatch` on this machine; run on a SLURM login node, "
                          "or use --cluster local")
    return cluster


def paper_gpus(spec: TableSpec) -> int | None:
    """How many GPUs the paper split its batch over, where its recipe says (ImageNet: 8)."""
    return IMAGENET_PAPER_GPUS if spec.dataset == "imagenet" else None


def check_layout(spec: TableSpec, processes: int, *, smoke: bool) -> tuple[list[str], str | None]:
    """The per-process batch of every run at this layout (``processes`` DDP ranks per run),
    checked before anything is submitted. Returns (lines stating it, what departs from the paper or
    None). Raises LaunchError when a global batch does not divide by the process count. Only
    full-size tables whose recipe names the paper's GPU count are compared: the per-GPU batch is
    BatchNorm's batch (per-GPU BN, as in the papers), so another one changes what is reproduced."""
    # a dependent run's baseline folder does not change its batch: any name validates the config
    cfgs = [config_for(spec, r, smoke=smoke, init_run="baseline" if r.row.init_from else None)
            for r in spec.runs(smoke)]
    from repro.data import DataError, per_process_batch
    batches = sorted({c.data.batch_size for c in cfgs})
    per_process = {}
    for b in batches:
        try:
            per_process[b] = per_process_batch(b, processes)
        except DataError:  # the trainer's rule, said in the launcher's terms
            raise LaunchError(f"global batch {b} (data.batch_size) does not divide by the {processes} processes "
                              "of a run (--nodes x tasks per node); choose a layout that divides it") from None
    bn = " (BatchNorm over the global batch: sync_bn)" if any(c.sync_bn for c in cfgs) else \
        " (= BatchNorm's batch: per-GPU BN)"
    lines = [f"layout: {processes} process(es) per run; global batch "
             + ", ".join(f"{b} -> {per_process[b]} per process" for b in batches) + bn]
    gpus = paper_gpus(spec)
    if gpus is None or smoke:
        return lines, None
    lines.append(f"the paper: {gpus} GPUs, " + ", ".join(f"{b} -> {b // gpus} per GPU" for b in batches))
    departs = [b for b in batches if per_process[b] != b // gpus]
    if not departs:
        return lines, None
    b = departs[0]
    return lines, (f"the per-GPU batch departs from the paper's ({per_process[b]} instead of {b // gpus} "
                   f"images per GPU's BatchNorm); use {gpus} processes per run (e.g. --nodes 1 "
                   f"--gpus-per-node {gpus}) or pass --allow-other-layout")
