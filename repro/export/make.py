"""One export, start to end: check the request, build the graphs, check them, time them, write.

Nothing is written until every file has passed its check and been timed: the files go into a
hidden folder beside the output folder, which is renamed into place at the end (``--force``
replaces an existing one the same way), so a refused or failed export leaves nothing.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from repro.config import EXPORT_FORMATS
from repro.io import json_bytes
from repro.models import arch_info, build_model, check_resolution
from repro.prune.expand import expand_aligned
from repro.prune.sfp import MaskError

from . import check, graphs, timing
from .source import Delivered, ExportError

FORMAT = "prunerepro-export-v1"
RECORD, LATENCY, OUT_DIR = "export.json", "latency.json", "export"
FILES = {"torchscript": "model.ts", "onnx": "model.onnx"}
LOADERS = {"torchscript": "torch.jit.load(path, _extra_files={'prunerepro.json': ''})",
           "onnx": "onnxruntime.InferenceSession(path); .get_modelmeta().custom_metadata_map"}
THROUGHPUT_BATCH = 8  # the run's own CPU latency batch (result.json latency)


class ExportRefused(RuntimeError):
    """An exported graph does not compute what the delivered model computes (one line, with the figure)."""


@dataclass(frozen=True)
class Options:
    formats: tuple[str, ...] = EXPORT_FORMATS
    out: Path | None = None        # default RUN_DIR/export
    align: int = 1                 # > 1: export widths rounded up to a multiple of this with zero filters
    force: bool = False
    batches: tuple[int, ...] = (1, THROUGHPUT_BATCH)
    resolution: int | None = None  # timing resolution; default the paper table's (arch_info)
    threads: int | None = None     # default torch's current count
    repeats: int = 7


def formats_of(names) -> tuple[str, ...]:
    """("all",) and the like -> the formats in EXPORT_FORMATS order."""
    names = set(names)
    return tuple(f for f in EXPORT_FORMATS if f in names or "all" in names)


def prepare(d: Delivered, opts: Options) -> Options:
    """Every check of the request that touches nothing; the options completed."""
    if opts.align < 1 or opts.repeats < 1 or (opts.threads or 1) < 1 or any(b < 1 for b in opts.batches):
        raise ExportError("--align, --repeats, --threads and the batch sizes must be >= 1")
    try:
        check_resolution(d.arch, opts.resolution or arch_info(d.arch).resolution)
    except ValueError as e:
        raise ExportError(f"--resolution: {e}") from None
    out = Path(opts.out) if opts.out is not None else d.run_dir / OUT_DIR
    if out.exists() and not opts.force:
        raise ExportError(f"{out} exists; give --force to replace it, or another --out")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file, not a folder; give another --out")
    graphs.require(opts.formats)
    return replace(opts, out=out, resolution=opts.resolution or arch_info(d.arch).resolution,
                   threads=opts.threads or torch.get_num_threads())


def _models(d: Delivered, align: int) -> dict[str, torch.nn.Module]:
    with torch.random.fork_rng(devices=[]):  # the caller's (a run's) random state stays as it was
        torch.manual_seed(0)
        dense = build_model(d.arch, num_classes=d.num_classes).eval()  # random weights: only timed
    models = {"dense": dense, "delivered": d.model}
    if align > 1:
        try:
            models["aligned"] = expand_aligned(d.model, d.arch, align)
        except MaskError as e:
            raise ExportError(f"--align: {e}") from None
    return models


def _checked(d: Delivered, fmt: str, data: bytes, threads: int) -> dict:
    """Read the file's bytes back as a user would, compare with the delivered model; its record."""
    x = check.check_inputs(d.facts()["input_size"])
    if fmt == "torchscript":
        module, _facts = graphs.load_torchscript(data)
        with torch.no_grad():
            out = module(x).numpy()
    else:
        out = graphs.ort_session(data, threads).run(None, {graphs.INPUT: x.numpy()})[0]
    diff, rel = check.relative_difference(check.reference(d.model, x), out)
    reason = check.refusal(f"the {fmt} file", diff, rel)
    if reason:
        raise ExportRefused(reason)
    return {"file": FILES[fmt], "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "max_abs_diff": diff, "rel_diff": rel, "load": LOADERS[fmt],
            **({"opset": graphs.OPSET} if fmt == "onnx" else {})}


def _graphs(models: dict, facts: dict, formats: tuple[str, ...]) -> dict[str, dict[str, bytes]]:
    example = torch.zeros(1, *facts["input_size"])
    build = {"torchscript": lambda m, f: graphs.torchscript_bytes(m, f),
             "onnx": lambda m, f: graphs.onnx_bytes(m, f, example)}
    return {v: {fmt: build[fmt](m, {**facts, "model": v}) for fmt in formats} for v, m in models.items()}


def _versions() -> dict:
    out = {"torch": torch.__version__}
    for name in ("onnx", "onnxruntime"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            pass
    return out


def _place(staged: Path, out: Path) -> None:
    """Rename the staged folder into place; an existing one (--force) goes only once it is there."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}-replaced-{os.getpid()}")
        out.rename(old)
    staged.rename(out)
    if old is not None:
        shutil.rmtree(old)


def export(d: Delivered, opts: Options, say=lambda _msg: None) -> dict:
    """Export ``d`` as ``opts`` asks (``prepare`` first); returns the record written to export.json."""
    exported = "aligned" if opts.align > 1 else "delivered"
    facts = {**d.facts(), "bn_folded": True, "align": opts.align, "export_format": FORMAT}
    say(f"{facts['run_name']}: building {', '.join(opts.formats)} graphs (BN folded)")
    models = _models(d, opts.align)
    files = _graphs(models, facts, opts.formats)
    checks = {fmt: _checked(d, fmt, files[exported][fmt], opts.threads) for fmt in opts.formats}
    backends = ["eager"] + (["torchscript"] if "torchscript" in opts.formats else []) + \
        (timing.ort_backends() if "onnx" in opts.formats else [])
    say(f"timing {', '.join(backends)} at {opts.resolution} px, batches {opts.batches}, {opts.threads} thread(s)")
    latency = timing.measure(models, files, backends, resolution=opts.resolution, batches=opts.batches,
                             threads=opts.threads, repeats=opts.repeats)
    latency.update(exported=exported, align=opts.align)
    record = {**facts, "exported": exported, "spec": models[exported].spec.to_json(),
              "files": checks, "latency": LATENCY, "versions": _versions(),
              "check": {"reference": "model.pt as an nn.Module, strict float32", "tolerance": check.TOLERANCE,
                        "inputs": f"{check.CHECK_BATCH} seeded N(0, 1) images of input_size"},
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{opts.out.name}-partial-", dir=opts.out.parent))
    mask = os.umask(0)
    os.umask(mask)
    staged.chmod(0o777 & ~mask)  # mkdtemp's 0700 would hide the export from the user's group
    try:
        for fmt in opts.formats:
            (staged / FILES[fmt]).write_bytes(files[exported][fmt])
        (staged / RECORD).write_bytes(json_bytes(record))
        (staged / LATENCY).write_bytes(json_bytes(latency))
        _place(staged, opts.out)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return record
