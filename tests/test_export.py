"""`python -m repro.export` and the opt-in export phase of a run, on tiny real runs: a CIFAR net
(ResNet-20, SNF, exported by its own final phase) and an ImageNet net (ResNet-18, SFP, exported by
the CLI with --align 8). Each file is loaded in a fresh Python that cannot import repro and
compared with the delivered PyTorch model; the bad inputs exit 2 with one line and touch nothing.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import sysconfig

import numpy as np
import pytest
import torch

from repro import rundir
from repro.config import Config
from repro.data.stats import STATS
from repro.prune.exact import TOLERANCE
from repro.export import ExportRefused, deployed_speedup, graphs, read_run
from repro.export.check import check_inputs, relative_difference
from repro.export.make import FILES, _checked
from repro.models.graph import prunable_convs
from repro.prune.compact import FORMAT as MODEL_FORMAT
from repro.prune.compact import load_compact
from repro.train import run

from conftest import REPO
from test_train import TINY

# A Python that cannot import repro: -I drops PYTHONPATH, the script's folder and the user site;
# -S skips site-packages' .pth files, among them the editable install's finder. torch, numpy and
# onnxruntime come from site-packages, added by path.
LOADER = r"""
import importlib.util, json, sys
sys.path.append(sys.argv[1])
assert importlib.util.find_spec("repro") is None, "repro is importable"
import numpy as np
path, fmt, inp, out = sys.argv[2:6]
x = np.load(inp)
if fmt == "torchscript":
    import torch
    extra = {"prunerepro.json": ""}
    m = torch.jit.load(path, _extra_files=extra)
    with torch.no_grad():
        y = m(torch.from_numpy(x)).numpy()
    facts = json.loads(extra["prunerepro.json"])
else:
    import onnxruntime as ort
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    y = s.run(None, {"input": x})[0]
    facts = {k: json.loads(v) for k, v in s.get_modelmeta().custom_metadata_map.items()}
np.save(out, y)
print(json.dumps(facts))
"""
pytestmark = pytest.mark.slow  # three tiny runs and a dozen Python starts: about a minute on a quiet 2-core CPU
FAST = ["--resolution", "32", "--repeats", "1", "--batch", "2", "--threads", "1"]  # latency in seconds


def export_cli(args: list[str], pre: str = "") -> subprocess.CompletedProcess:
    """``python -m repro.export ARGS``; ``pre``: Python run first in the same process."""
    code = f"{pre}\nimport runpy, sys\nsys.argv = ['repro.export', *{args!r}]\n" \
           "runpy.run_module('repro.export', run_name='__main__')"
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("export-runs")
    base = root / "r20-base"
    run(Config.from_overrides(TINY), base)
    snf = root / "r20-snf"
    run(Config.from_overrides(TINY + ["prune.method=snf", f"prune.init_from={base}", "prune.flops_reduction=40",
                                      "prune.finetune_epochs=1", "prune.search_batches=1", "export.formats=all"]), snf)
    sfp = root / "r18-sfp"
    run(Config.from_overrides(["preset=cifar", "model.arch=resnet18", *TINY, "prune.method=sfp", "prune.rate=0.3"]),
        sfp)
    done = export_cli([str(sfp), "--align", "8", *FAST])
    assert done.returncode == 0, done.stderr[-3000:]
    return {"base": base, "snf": snf, "sfp": sfp, "sfp_stdout": done.stdout}


def load_isolated(path, fmt: str, x: torch.Tensor, tmp_path) -> tuple[np.ndarray, dict]:
    work = tmp_path / f"iso-{fmt}"
    work.mkdir()
    np.save(work / "x.npy", x.numpy())
    done = subprocess.run([sys.executable, "-I", "-S", "-c", LOADER, sysconfig.get_paths()["purelib"], str(path),
                           fmt, "x.npy", "y.npy"], cwd=work, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return np.load(work / "y.npy"), json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("name", ["snf", "sfp"])
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_exported_file_loads_without_repro_and_equals_the_delivered_model(runs, name, fmt, tmp_path):
    d = runs[name]
    cfg = Config.from_dict(json.loads((d / rundir.CONFIG).read_text()))
    result = rundir.read_result(d)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    y, facts = load_isolated(d / "export" / FILES[fmt], fmt, x, tmp_path)
    with torch.no_grad():
        ref = load_compact(d / rundir.MODEL)(x).numpy()
    _diff, rel = relative_difference(ref, y)
    assert rel <= TOLERANCE, rel
    assert (facts["run_name"], facts["config_hash"]) == (result["run_name"], result["config_hash"])
    assert facts["num_classes"] == result["num_classes"] == 10 and facts["input_size"] == [3, 32, 32]
    assert (tuple(facts["mean"]), tuple(facts["std"])) == STATS[cfg.data.name]
    assert facts["bn_folded"] is True
    record = json.loads((d / "export" / "export.json").read_text())
    assert record["files"][fmt]["rel_diff"] <= TOLERANCE
    assert record["files"].get("onnx", {}).get("opset", graphs.OPSET) == graphs.OPSET


def test_a_runs_final_phase_exports_and_records_it_in_result_json(runs):
    res = rundir.read_result(runs["snf"])
    assert res["status"] == "done" and res["method"] == "snf"
    ex = res["export"]
    assert ex["formats"] == ["onnx", "torchscript"] and ex["exported"] == "delivered", ex
    assert all(0 <= r <= TOLERANCE for r in ex["rel_diff"].values())
    lat = json.loads((runs["snf"] / "export" / "latency.json").read_text())
    assert lat["resolution"] == 32 and set(lat["batches"]) == {"1", "8"}
    assert set(lat["batches"]["8"]) == {"eager", "torchscript", "onnxruntime-cpu"}
    row = lat["batches"]["8"]["onnxruntime-cpu"]
    assert ex["deployed_speedup"] == pytest.approx(row["dense_ms"] / row["delivered_ms"])
    assert "export" not in rundir.read_result(runs["base"])  # opt-in: the baseline did not export


def test_align_exports_widths_rounded_up_and_times_both(runs):
    d = runs["sfp"]
    record = json.loads((d / "export" / "export.json").read_text())
    assert record["exported"] == "aligned" and record["align"] == 8
    full = {c.name: c.out_channels for c in prunable_convs("resnet18")}
    delivered = load_compact(d / rundir.MODEL).spec.convs
    assert delivered and any(k % 8 for k in delivered.values())  # something to align
    for conv, kept in delivered.items():
        assert record["spec"]["convs"].get(conv, full[conv]) == min(full[conv], -(-kept // 8) * 8), conv
    lat = json.loads((d / "export" / "latency.json").read_text())
    for backend, row in lat["batches"]["2"].items():
        assert {"dense_ms", "delivered_ms", "aligned_ms", "speedup", "speedup_aligned"} <= set(row), backend
    assert deployed_speedup(d) == pytest.approx(lat["batches"]["2"]["onnxruntime-cpu"]["dense_ms"]
                                                / lat["batches"]["2"]["onnxruntime-cpu"]["aligned_ms"])
    assert "onnxruntime-cpu" in runs["sfp_stdout"] and "deployed speed-up" in runs["sfp_stdout"]


def test_a_graph_that_differs_is_refused_with_its_figure(runs):
    d = read_run(runs["sfp"])
    other = load_compact(runs["sfp"] / rundir.MODEL)
    with torch.no_grad():
        other.fc.bias.add_(1.0)  # a different function: the check must see it
    data = graphs.torchscript_bytes(other, {})
    with pytest.raises(ExportRefused, match=r"^export refused: the torchscript file differs .* > 0.0001") as e:
        _checked(d, "torchscript", data, 1)
    assert "\n" not in str(e.value)
    assert check_inputs([3, 32, 32]).shape == (4, 3, 32, 32)


def _snapshot(root) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def _bad_cases(runs, tmp_path):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(runs["base"] / rundir.CONFIG, unfinished / rundir.CONFIG)
    old = tmp_path / "old-format"
    shutil.copytree(runs["base"], old)
    payload = torch.load(old / rundir.MODEL, weights_only=True)
    torch.save({**payload, "format": "prunerepro-compact-v0"}, old / rundir.MODEL)
    return [
        ("not done", unfinished, [str(unfinished)], "", r"is not a finished run: no result.json yet"),
        ("old model.pt", old, [str(old)], "", rf"format 'prunerepro-compact-v0', not '{MODEL_FORMAT}'"),
        ("out exists", runs["snf"], [str(runs["snf"])], "", r"export exists; give --force"),
        ("no onnxruntime", runs["base"], [str(runs["base"]), "--format", "onnx"],
         "import sys; sys.modules['onnxruntime'] = None  # as if it were not installed",
         r"onnxruntime is not installed: .*pip install 'prunerepro\[export\]'"),
    ]


def test_bad_input_is_one_line_exit_2_and_writes_nothing(runs, tmp_path):
    for what, folder, args, pre, line in _bad_cases(runs, tmp_path):
        before = _snapshot(folder)
        done = export_cli(args, pre)
        assert done.returncode == 2, (what, done.stderr[-2000:])
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (what, done.stderr)
        assert re.search(line, lines[0]), (what, lines[0])
        assert _snapshot(folder) == before, what
        assert not list(folder.parent.glob(".export-partial-*")), what


@pytest.mark.parametrize("arch, res", [("resnet56", 32), ("resnet50", 64)])
def test_a_compact_model_expands_back_and_aligns_exactly(arch, res):
    """prune.expand: compact -> (hard-pruned dense, kept) -> build_compact gives the same function,
    also with the kept indices aligned to 8 (random BN statistics: a lost BN(0) constant would show)."""
    from repro.demos.compact import demo
    from repro.prune.compact import align_kept, build_compact
    from repro.prune.expand import expand_compact
    d = demo(arch, 0.3)
    dense, kept = expand_compact(d.compact, arch)
    x = torch.randn(2, 3, res, res, generator=torch.Generator().manual_seed(1))
    aligned = build_compact(dense, arch, align_kept(arch, kept, 8)).eval()
    assert all(k % 8 == 0 or k == c.out_channels for c in prunable_convs(arch)
               for k in [aligned.spec.convs.get(c.name, c.out_channels)])
    with torch.no_grad():
        ref = d.compact(x).numpy()
        for model in (dense, build_compact(dense, arch, kept).eval(), aligned):
            assert relative_difference(ref, model(x).numpy())[1] <= TOLERANCE
