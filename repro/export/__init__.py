"""Take the delivered model away: TorchScript and ONNX files of a run's model.pt, loadable with no
import of this package, checked equal to it, and timed where users deploy it.

    python -m repro.export RUN_DIR [--format torchscript|onnx|all] [--out DIR] [--align 8] [--force]

writes into RUN_DIR/export (or ``--out``): ``model.ts`` (TorchScript, scripted and frozen),
``model.onnx`` (ONNX opset 17), ``export.json`` (the record: the facts, each file's check figure,
sha256 and loader, versions) and ``latency.json`` (``timing``). BatchNorm is folded into the convs
in both graphs. Each file carries the facts a user needs (input size, normalisation constants,
class count, the run's name and config hash; ``graphs``), is read back from its bytes and compared
with the delivered PyTorch model in float32 (``check``: refused beyond 1e-4 relative), before
anything is written. ``--align 8`` exports the model with every pruned width rounded up to a
multiple of 8 with zero filters (``prune.compact.align_kept``; exact); latency.json then times the
exact-width model beside it. A run exports itself at its end when ``export.formats`` is set
(``final_phase``; result.json ``export``).
"""
from __future__ import annotations

import json
from pathlib import Path

from .make import LATENCY, OUT_DIR, ExportRefused, Options, export, formats_of, prepare
from .source import Delivered, ExportError, from_final_phase, read_run


def final_phase(run_dir: Path, cfg) -> dict:
    """The opt-in last step of a run (``export.formats``), after model.pt is written and checked:
    the export into RUN_DIR/export (replacing one a killed earlier attempt wrote) and its summary
    for result.json. Never fails the run: a failure is recorded as ``{"error": one line}`` (the
    model is delivered either way; ``python -m repro.export`` can be run again)."""
    try:
        d = from_final_phase(run_dir, cfg)
        record = export(d, prepare(d, Options(formats=formats_of(cfg.export.formats), force=True)))
    except Exception as e:  # noqa: BLE001 - an optional deliverable: recorded, never fatal
        return {"error": f"{type(e).__name__}: {e}".splitlines()[0]}
    return {"dir": OUT_DIR, "formats": sorted(record["files"]), "exported": record["exported"],
            "rel_diff": {fmt: f["rel_diff"] for fmt, f in record["files"].items()},
            "deployed_speedup": deployed_speedup(Path(run_dir))}


def deployed_speedup(run_dir: str | Path, backend: str | None = None, out: str | Path | None = None) -> float | None:
    """dense ms / exported-model ms at the throughput batch (the largest timed) on ``backend``
    (default onnxruntime-cpu, else torchscript), from RUN_DIR/export/latency.json (or ``out``);
    None when the run has no export or the backend was not timed. The exported model is the
    aligned one when the export was made with --align."""
    path = Path(out or Path(run_dir) / OUT_DIR) / LATENCY
    try:
        lat = json.loads(path.read_text())
        rows = lat["batches"][str(max(int(b) for b in lat["batches"]))]
        backend = backend or next(b for b in ("onnxruntime-cpu", "torchscript") if b in rows)
        row = rows[backend]
        return float(row["dense_ms"] / row[f"{lat['exported']}_ms"])
    except (OSError, ValueError, KeyError, StopIteration, TypeError):
        return None


__all__ = ["Delivered", "ExportError", "ExportRefused", "Options", "deployed_speedup", "export", "final_phase",
           "formats_of", "prepare", "read_run"]
