"""What stops a run from being called done: divergence (NaN/inf, or a training loss exploding past
10 x ln(classes)) and the exactness checks (compact vs hard-pruned, model.pt vs the evaluated
model); and what every done run records besides: num_classes and the measured latency.

End to end through the real trainer on tiny digits runs (ResNet-20, a few batches); faults are
injected by replacing one function the trainer calls, nothing else.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch

from repro import rundir, tables
from repro.config import Config
from repro.engine import exact
from repro.engine import agree
from repro.engine.agree import EXPLODED, divergence_reason
from repro.engine.methods import sfp as sfp_method
from repro.papers.spec import Row, TableSpec
from repro.runs.plan import plan
from repro.train import TrainingFailed, run

from test_train import TINY

SFP = TINY + ["prune.method=sfp", "prune.rate=0.3", "log.wandb=disabled"]


def _sums(mean_loss: float, n: int = 8) -> torch.Tensor:
    return torch.tensor([mean_loss * n, 1.0, 4.0, float(n)], dtype=torch.float64)


def test_divergence_rule():
    limit = EXPLODED * math.log(8)
    assert divergence_reason(_sums(2.1), 8) is None           # untrained level
    assert divergence_reason(_sums(0.9 * limit), 8) is None   # bad, not exploded
    why = divergence_reason(_sums(1.1 * limit), 8)
    assert why.startswith("training loss exploded (epoch mean 22.87 > 10 x ln(8) = 20.8)")
    assert divergence_reason(_sums(float("nan")), 8) == "training loss became NaN/inf"
    assert divergence_reason(_sums(float("inf")), 10) == "training loss became NaN/inf"
    assert divergence_reason(torch.zeros(4, dtype=torch.float64), 10) is None  # no batch yet


def test_divergence_flag_built_on_the_device_is_the_rule():
    """On a GPU the flag is computed where the sums are (agree.diverged_on_device), not read back
    first: it must say what divergence_reason says for every case, at the limit too. The CPU keeps
    divergence_reason itself. Checked on the CPU's tensors, and on the GPU's where there is one."""
    limit = EXPLODED * math.log(8)
    cases = [_sums(2.1), _sums(0.9 * limit), _sums(1.1 * limit), _sums(float("nan")), _sums(float("inf")),
             _sums(-float("inf")), torch.zeros(4, dtype=torch.float64), torch.tensor([5.0, float("nan"), 0.0, 8.0],
             dtype=torch.float64), _sums(limit), torch.tensor([1e300, 0.0, 0.0, 1e-300], dtype=torch.float64)]
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for t in cases:
        for classes in (8, 1000):
            want = float(divergence_reason(t, classes) is not None)
            for device in devices:
                flag = agree.diverged_on_device(t.to(device), classes)
                assert (flag.device.type, flag.dim(), flag.item()) == (device.type, 0, want), (t, classes, device)
                assert agree.diverged_flag(t.to(device), classes, device).item() == want
    assert [c for c in cases if divergence_reason(c, 8)] and [c for c in cases if not divergence_reason(c, 8)]
    for device in devices:
        assert agree.diverged_flag(None, 8, device).item() == 0.0


def test_strict_float32_turns_tf32_off_and_restores_it():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
              torch.get_float32_matmul_precision())
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    try:
        with exact.strict_float32(torch.device("cpu")):
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
            assert torch.get_float32_matmul_precision() == "highest"
            assert not torch.is_autocast_enabled("cpu")
        assert torch.backends.cudnn.allow_tf32 and torch.get_float32_matmul_precision() == "high"
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before[:2]
        torch.set_float32_matmul_precision(before[2])


@pytest.mark.timeout(300)
def test_diverged_run_fails_keeps_its_checkpoint_and_the_table_says_failed(tmp_path):
    # epoch 0 warms up at 0.01 and is checkpointed; epoch 1 runs at 50 x 0.2 = 10: the loss stays
    # finite but explodes (epoch mean ~350 against 10 x ln 10 = 23)
    smoke = dict(o.split("=", 1) for o in TINY + ["optim.lr=50", "log.wandb=disabled"])
    row = Row("resnet20/baseline", "ResNet-20", "baseline", {"model.arch": "resnet20"})
    spec = TableSpec(name="diverge", title="divergence", source="test", dataset="digits", rows=(row,),
                     seeds=(0,), base={"data.name": "digits"}, smoke=smoke)
    root = tmp_path / "runs"
    (pl,) = plan(spec, root, smoke=True, query=False).runs
    with pytest.raises(TrainingFailed, match=r"training loss exploded \(epoch mean .* > 10 x ln\(10\) = 23\) "
                                             r"at epoch 1 batch \d+ \(lr 10\)"):
        run(pl.cfg, pl.run_dir)
    res = rundir.read_result(pl.run_dir)
    assert res["status"] == "failed" and res["reason"].startswith("TrainingFailed: training loss exploded")
    assert "\n" not in res["reason"]
    ck = torch.load(pl.run_dir / rundir.CHECKPOINT, weights_only=True)
    assert ck["epoch"] == 1  # the last good one: after epoch 0
    assert not (pl.run_dir / rundir.MODEL).exists()
    md = next(p for p in tables.build(spec, root, tmp_path / "out", smoke=True) if p.suffix == ".md").read_text()
    line = next(ln for ln in md.splitlines() if ln.startswith("| ResNet-20"))
    assert "failed 1 (TrainingFailed: training loss exploded (epoch mean" in line and "done" not in line
    assert "(done 0, running 0, failed 1, missing 0)" in md


def _corrupt_one_kept_index(build_compact):
    """build_compact with the first kept filter of layer1.0.conv1 swapped for a pruned one."""
    def corrupted(model, arch, kept, **kw):
        kept = dict(kept)
        k = kept["layer1.0.conv1"]
        pruned = sorted(set(range(16)) - set(k.tolist()))
        kept["layer1.0.conv1"] = torch.cat([k[1:], torch.tensor(pruned[:1])]).sort().values
        return build_compact(model, arch, kept, **kw)
    return corrupted


@pytest.mark.timeout(300)
def test_compact_model_with_a_wrong_kept_index_fails_the_exactness_check(tmp_path, monkeypatch):
    good = run(Config.from_overrides(SFP), tmp_path / "good")
    assert good["status"] == "done" and good["compact_rel_diff"] <= exact.TOLERANCE
    assert good["compact_max_abs_diff"] <= good["compact_rel_diff"] * 1e3  # outputs are O(1..100)

    monkeypatch.setattr(sfp_method, "build_compact", _corrupt_one_kept_index(sfp_method.build_compact))
    d = tmp_path / "bad"
    with pytest.raises(TrainingFailed, match=r"exactness check failed: compact model vs the hard-pruned "
                                             r"model: max\|Δ\|/max\|out\| = \S+ > 0.0001"):
        run(Config.from_overrides(SFP), d)
    res = rundir.read_result(d)
    assert res["status"] == "failed" and "exactness check failed" in res["reason"]
    rel = float(res["reason"].split("= ")[1].split(" ")[0])
    assert rel > 100 * exact.TOLERANCE  # one lost channel is no rounding error
    assert torch.load(d / rundir.CHECKPOINT, weights_only=True)["epoch"] == 2  # training kept
    assert not (d / rundir.MODEL).exists()


@pytest.mark.timeout(300)
def test_model_file_that_reads_back_differently_fails(tmp_path, monkeypatch):
    from repro.engine import finish
    real = finish.load_compact

    def perturbed(path, *a, **kw):
        m = real(path, *a, **kw)
        with torch.no_grad():
            m.fc.bias += 1.0
        return m
    monkeypatch.setattr(finish, "load_compact", perturbed)
    d = tmp_path / "run"
    with pytest.raises(TrainingFailed, match=r"exactness check failed: model.pt read back vs the evaluated model"):
        run(Config.from_overrides(TINY + ["log.wandb=disabled"]), d)
    assert rundir.read_result(d)["status"] == "failed" and not (d / rundir.MODEL).exists()
    assert (d / rundir.CHECKPOINT).exists()


@pytest.mark.timeout(300)
def test_done_runs_record_classes_and_latency(tmp_path):
    for name, extra in (("dense", ["log.wandb=disabled"]), ("sfp", SFP[len(TINY):])):
        res = run(Config.from_overrides(TINY + extra), tmp_path / name)
        assert res["status"] == "done" and res["num_classes"] == 10 and res["val_images"] == 16
        lat = res["latency"]
        assert set(lat) == {"dense_ms", "delivered_ms", "device", "batch", "threads", "precision", "repeats",
                            "resolution", "folded_dense_ms", "aligned_folded_ms", "align", "aligned_repeats"}
        assert lat["dense_ms"] > 0 and lat["delivered_ms"] > 0
        assert lat["folded_dense_ms"] > 0 and lat["aligned_folded_ms"] > 0
        assert (lat["align"], lat["aligned_repeats"]) == (8, 3)  # 1 warm-up + 3 rounds on a CPU
        assert (lat["device"], lat["batch"], lat["precision"], lat["resolution"]) == ("cpu", 8, "float32", 32)
        assert lat["threads"] == torch.get_num_threads() and lat["repeats"] >= 5
        assert res["saved_rel_diff"] == 0.0  # model.pt reads back bit-identical on CPU
    assert res["conv_macs"] < res["baseline_conv_macs"]  # the SFP run delivered a compact model


@pytest.mark.timeout(120)
def test_latency_times_the_aligned_folded_twin_of_the_delivered_function():
    """The aligned model the latency figures time computes what was delivered (the exactness rule),
    with every conv a multiple of 8 filters; a model it cannot be built for records why instead."""
    from repro.demos.compact import demo
    from repro.engine import latency
    from repro.engine.precision import Precision
    from repro.models.graph import prunable_convs
    from repro.prune.compact import build_compact
    from repro.prune.exact import TOLERANCE, compare
    from repro.prune.hard import hard_prune
    d = demo("resnet20", 0.3)
    grown = latency.aligned(d.compact, "resnet20")
    assert all(m.out_channels % latency.ALIGN == 0 for m in grown.modules() if isinstance(m, torch.nn.Conv2d))
    assert any(m.out_channels % latency.ALIGN for m in d.compact.modules() if isinstance(m, torch.nn.Conv2d))
    _diff, rel = compare(d.compact, grown, torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    assert rel <= TOLERANCE
    # narrowed streams keep no record of the dense positions they dropped: no aligned twin (every
    # conv keeping its first 3/4 leaves the last quarter of each stream unwritten, so it is dropped)
    kept = {c.name: torch.arange(c.out_channels - c.out_channels // 4) for c in prunable_convs("resnet20")}
    narrow = build_compact(hard_prune(copy.deepcopy(d.soft), "resnet20", kept), "resnet20", kept,
                           narrow_streams=True).eval()
    assert narrow.spec.streams
    cpu = torch.device("cpu")
    lat = latency.measure(narrow, "resnet20", 10, cpu, Precision(Config.from_overrides(["device=cpu"]), cpu), 32)
    assert lat["delivered_ms"] > 0 and "aligned_folded_ms" not in lat
    assert lat["aligned_error"].startswith("MaskError: a compact model with narrowed streams"), lat
