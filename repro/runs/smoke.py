"""The miniature data a table's --smoke trains on: generated in the real on-disk layout and
converted by the real writer, so the smoke exercises the same code paths as a real run."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from repro.papers.spec import TableSpec

from .errors import LaunchError


def prepare_smoke_data(spec: TableSpec, data_root: Path) -> tuple[Path, Path]:
    """Generate the table's stand-in data and convert it. Returns (converted dir, raw dir);
    reused when already there (a second --smoke does no work)."""
    kind = spec.smoke_data["kind"]
    raw, ffcv = data_root / f"{kind}-raw", data_root / kind
    if all((ffcv / f).exists() for f in ("train.beton", "val.beton", "dataset.json")):
        return ffcv, raw
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in spec.smoke_data.items() if k != "kind"]
    steps = []
    if not raw.exists():
        steps.append([sys.executable, "-m", "repro.data.synth", kind, "--out", str(raw), *flags])
    steps.append([sys.executable, "-m", "repro.data.write", kind, "--src", str(raw), "--out", str(ffcv)])
    for cmd in steps:
        print(f"[launch] {' '.join(cmd[1:])}", file=sys.stderr)
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if done.returncode != 0:
            raise LaunchError(f"smoke data step failed: {' '.join(cmd[1:])}\n{done.stdout[-2000:]}")
    return ffcv, raw
