"""`python launch/table2.py --smoke` end to end (no SLURM): the README's first command, on a slice.

A slice of the table (ResNet-18: baseline, SFP from scratch, SFP from the smoke baseline) keeps
this test near a minute; .ci/run times the whole miniature (9 runs) against its budget. The
miniature learns: the baseline reaches at least 3x chance, no run is at chance, and every pruned
run recorded its measured latency beside the dense model's. Running the same command again
submits nothing and leaves every table file byte-identical.
"""
from __future__ import annotations

import json
import subprocess

import pytest

from repro.report.collect import at_chance

from conftest import PYTHON, REPO


def _launch(root, data, out):
    return subprocess.run([PYTHON, str(REPO / "launch" / "table2.py"), "--smoke", "--root", str(root),
                           "--data", str(data), "--out", str(out), "--only", "resnet18/*"],
                          capture_output=True, text=True, timeout=540, cwd=REPO)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_table2_smoke_then_rerun_is_a_no_op(tmp_path, imagenet_smoke_data):
    root, out = tmp_path / "runs", tmp_path / "tables"
    first = _launch(root, imagenet_smoke_data, out)
    assert first.returncode == 0, first.stderr[-3000:]
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(files) == {"table2.md", "table2.tex", "table2.csv", "table2.png"}
    md = files["table2.md"].decode()
    assert md.startswith("# SMOKE TABLE — miniature table2 on generated data, NOT comparable to the paper")
    assert "Runs found: 3 of 9 expected (done 3, running 0, failed 0, missing 6)" in md
    runs = {p.name: p for p in (root / "table2").iterdir() if (p / "result.json").exists()}
    assert len(runs) == 3
    (pre,) = [p for n, p in runs.items() if "-sfp0.3-ft-" in n]
    (base,) = [p for n, p in runs.items() if "-base-" in n]
    cfg = json.loads((pre / "config.json").read_text())
    assert cfg["prune"]["init_from"].endswith(base.name)  # the pre-trained row started from the smoke baseline
    assert json.loads((pre / "result.json").read_text())["flops_reduction"] > 20  # a compact model was delivered
    results = {n: json.loads((p / "result.json").read_text()) for n, p in runs.items()}
    for name, r in results.items():
        assert r["status"] == "done" and r["num_classes"] == 8 and r["val_images"] == 160, name
        assert not at_chance(r, "top1"), (name, r["val_top1"])
        assert r["latency"]["dense_ms"] > 0 and r["latency"]["delivered_ms"] > 0, name
    assert results[base.name]["val_top1"] >= 3 * 100 / 8

    second = _launch(root, imagenet_smoke_data, out)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "nothing to submit" in second.stderr and "submitted" not in second.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files
    assert all(len(json.loads((p / "jobs.json").read_text())["jobs"]) == 1 for p in runs.values())
