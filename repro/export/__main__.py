"""python -m repro.export RUN_DIR [--format torchscript|onnx|all] [--out DIR] [--align 8] [--force]

Exit codes: 0 exported, 1 refused (an exported graph differs from the delivered model), 2 bad
input (not a finished run folder, a model.pt of another format version, an existing output
folder without --force, onnx/onnxruntime missing for the onnx format); 1 and 2 end with one line
on stderr and write nothing.
"""
from __future__ import annotations

import argparse
import json
import sys

from tabulate import tabulate

from repro.config import EXPORT_FORMATS

from . import ExportError, ExportRefused, Options, deployed_speedup, export, formats_of, prepare, read_run
from .make import LATENCY, THROUGHPUT_BATCH


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m repro.export", description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder (result.json says done)")
    ap.add_argument("--format", choices=(*EXPORT_FORMATS, "all"), default="all")
    ap.add_argument("--out", help="output folder (default RUN_DIR/export)")
    ap.add_argument("--align", type=int, default=1, help="round every pruned width up to a multiple of this "
                    "with zero filters (exact; 8 suits the fast kernels); 1 = exact widths")
    ap.add_argument("--force", action="store_true", help="replace an existing output folder")
    ap.add_argument("--batch", type=int, default=THROUGHPUT_BATCH, help="the throughput batch timed beside batch 1")
    ap.add_argument("--resolution", type=int, help="timing resolution (default: the paper table's, 224 for "
                    "ImageNet nets, 32 for CIFAR)")
    ap.add_argument("--threads", type=int, help="torch and onnxruntime threads (default: torch's)")
    ap.add_argument("--repeats", type=int, default=7, help="timed interleaved rounds (median reported)")
    return ap


def _summary(record: dict, latency: dict) -> str:
    variants = ["delivered"] + (["aligned"] if latency["align"] > 1 else [])
    rows = []
    for batch, per_backend in latency["batches"].items():
        for backend, r in per_backend.items():
            rows.append([batch, backend, r["dense_ms"], *[r[f"{v}_ms"] for v in variants], r["speedup"],
                         *([r["speedup_aligned"]] if "aligned" in variants else [])])
    head = ["batch", "backend", "dense ms", *[f"{v} ms" for v in variants], "speed-up",
            *(["speed-up (aligned)"] if "aligned" in variants else [])]
    checks = ", ".join(f"{fmt} {f['file']} rel. diff {f['rel_diff']:.2g}" for fmt, f in record["files"].items())
    theory = ", ".join(f"{v} {s:.2f}x" for v, s in latency["theoretical_speedup"].items())
    return (f"{record['run_name']}: {checks} (<= {record['check']['tolerance']:g}; BN folded)\n"
            f"latency at {latency['resolution']} px, {latency['threads']} thread(s), median of "
            f"{latency['repeats']} interleaved rounds; conv-MAC speed-up {theory}\n"
            + tabulate(rows, headers=head, floatfmt=".3g"))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    say = lambda msg: print(f"[export] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    try:
        d = read_run(args.run_dir)
        opts = prepare(d, Options(formats=formats_of([args.format]), out=args.out, align=args.align,
                                  force=args.force, batches=tuple(sorted({1, args.batch})), resolution=args.resolution,
                                  threads=args.threads, repeats=args.repeats))
        record = export(d, opts, say)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ExportRefused as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    latency = json.loads((opts.out / LATENCY).read_text())
    print(_summary(record, latency))
    print(f"deployed speed-up: {deployed_speedup(d.run_dir, out=opts.out):.3g}x; files in {opts.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
