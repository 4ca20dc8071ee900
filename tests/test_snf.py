"""SNF, abstract-level reimplementation: MACs model, search, sensitivity curves, prune, CLI."""
import copy
import json
import math
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from repro import flops
from repro.models import ChannelSpec, build_model
from repro.models.graph import prunable_convs
from repro.prune.hard import hard_prune
from repro.prune.compact import build_compact
from repro.prune.sensitivity import BN_MODES, LABEL, measure
from repro.prune.snf import (InfeasibleTargetError, baseline_macs, grid_counts, kept_indices, macs_terms,
                             reachable_reduction, search, spec_macs, uniform_search)
from repro.prune.snf_variants import DEFAULT_VARIANT, VARIANTS, snf_prune
from repro.demos.snf_digits import main


def random_curves(arch, seed, grid=None):
    """Synthetic but plausible curves: rise grows as a layer keeps fewer filters."""
    rng = random.Random(seed)
    counts = grid_counts(arch) if grid is None else grid_counts(arch, grid)
    return {name: {k: rng.uniform(0.1, 1.0) * (1 - k / ks[-1]) ** 2 for k in ks[:-1]}
            for name, ks in counts.items()}


def calibrated(arch, seed=0, num_classes=10):
    """A random-weight dense model with non-trivial BN running statistics, in eval mode."""
    torch.manual_seed(seed)
    model = build_model(arch, num_classes=num_classes)
    model.train()
    with torch.no_grad():
        model(torch.randn(32, 3, 32, 32))
    return model.eval()


@pytest.mark.parametrize("arch,res", [("resnet20", 32), ("resnet56", 32), ("resnet18", 64), ("resnet50", 64)])
def test_macs_model_equals_the_built_skeleton(arch, res):
    rng = random.Random(arch)
    for _ in range(3):
        kept = {c.name: rng.randint(1, c.out_channels) for c in prunable_convs(arch)}
        assert spec_macs(arch, kept, res) == flops.spec_conv_macs(arch, ChannelSpec(convs=kept), res)
    assert baseline_macs(arch, res) == flops.arch_counts(arch, resolution=res).conv_macs


@pytest.mark.parametrize("arch,target", [("resnet56", 52.94),
                                         pytest.param("resnet110", 68.68, marks=pytest.mark.slow)])
def test_reduction_within_a_tenth_counted_on_the_compact_model(arch, target):
    result = search(arch, random_curves(arch, seed=1), target)
    model = calibrated(arch)
    compact = build_compact(model, arch, kept_indices(model, arch, result.kept))
    counted = flops.count(compact, 32).conv_macs
    achieved = 100.0 * (1.0 - counted / flops.arch_counts(arch).conv_macs)
    assert counted == result.conv_macs
    assert abs(achieved - target) <= 0.10
    assert target <= achieved  # the budget is a ceiling on MACs
    assert compact.spec == result.spec
    assert result.to_json()["label"] == LABEL


@pytest.mark.parametrize("target,tolerance", [(30.0, 1.0), (45.0, 0.5), (60.0, 2.0)])
def test_search_matches_brute_force_over_every_resnet20_spec(target, tolerance):
    """All 2^19 specs of resnet20 with two counts per conv, MACs from the skeleton-checked terms:
    the search (groups of coupled convs as knapsack items) finds the true optimum."""
    arch = "resnet20"
    names = [c.name for c in prunable_convs(arch)]
    counts = grid_counts(arch, (0.5,))
    rng = random.Random(int(target))
    rise = {n: {counts[n][0]: rng.uniform(-0.2, 1.0)} for n in names}
    cut = ((np.arange(2 ** len(names))[:, None] >> np.arange(len(names))) & 1).astype(bool)
    kept = np.where(cut, [counts[n][0] for n in names], [counts[n][1] for n in names]).astype(np.int64)
    col = {n: i for i, n in enumerate(names)}
    macs = np.zeros(len(cut), dtype=np.int64)
    for t in macs_terms(arch, 32):
        cin = kept[:, col[t.cin]] if isinstance(t.cin, str) else t.cin
        cout = kept[:, col[t.cout]] if isinstance(t.cout, str) else t.cout
        macs += t.coef * cin * cout
    loss = cut @ np.array([rise[n][counts[n][0]] for n in names])
    base = baseline_macs(arch)
    lower = math.ceil(base * (100 - target - tolerance) / 100)
    upper = math.floor(base * (100 - target) / 100)
    ok = (macs >= lower) & (macs <= upper)
    assert ok.any()
    result = search(arch, rise, target, tolerance=tolerance)
    assert result.predicted_rise == pytest.approx(loss[ok].min(), abs=1e-9)
    assert lower <= result.conv_macs <= upper


def test_search_is_optimal_against_alternatives():
    """No uniform spec at the same or lower MACs has a smaller summed rise under the curves."""
    arch = "resnet20"
    curves = random_curves(arch, seed=3)
    result = search(arch, curves, 40.0)
    counts = grid_counts(arch)
    for f in (0.875, 0.75, 0.625, 0.5):
        kept = {n: min(ks, key=lambda k: abs(k - f * ks[-1])) for n, ks in counts.items()}
        if spec_macs(arch, kept) <= result.conv_macs:
            rise = sum(curves[n].get(k, 0.0) for n, k in kept.items())
            assert rise >= result.predicted_rise - 1e-12


@pytest.mark.parametrize("target", [100.0, 150.0, 0.0, -3.0, float("nan")])
def test_out_of_range_targets_error(target):
    with pytest.raises(InfeasibleTargetError, match="must be in"):
        search("resnet20", random_curves("resnet20", 0), target)
    with pytest.raises(InfeasibleTargetError):
        uniform_search("resnet20", target)


def test_targets_beyond_the_smallest_model_error():
    best = reachable_reduction("resnet56")
    assert 90 < best < 100
    with pytest.raises(InfeasibleTargetError, match="beyond the smallest model"):
        search("resnet56", random_curves("resnet56", 0), best + 0.5)
    with pytest.raises(InfeasibleTargetError, match="beyond uniform"):
        uniform_search("resnet56", reachable_reduction("resnet56", None) + 0.1)


def test_grid_too_coarse_for_the_window_errors():
    counts = grid_counts("resnet20", (0.25,))
    rise = {n: {k: 1.0 for k in ks[:-1]} for n, ks in counts.items()}
    with pytest.raises(InfeasibleTargetError, match="use a finer grid"):
        search("resnet20", rise, 50.0)


def test_uniform_baseline_is_one_rate_and_the_smallest_that_meets_the_target():
    arch, target = "resnet56", 52.94
    u = uniform_search(arch, target)
    assert u.reduction >= target
    widths = {c.name: c.out_channels for c in prunable_convs(arch)}
    assert all(k == widths[n] - int(widths[n] * u.rate) for n, k in u.kept.items())
    # A slightly smaller rate keeps more filters somewhere and misses the target.
    below = {n: widths[n] - int(widths[n] * (u.rate - 1e-9)) for n in widths}
    assert 100 * (1 - spec_macs(arch, below) / baseline_macs(arch)) < target


def test_cli_rejects_bad_targets_in_one_line(capsys):
    for argv in (["--flops-reduction", "100"], ["--flops-reduction", "99.5"],
                 ["--flops-reduction", "99.99", "--uniform"], ["--flops-reduction", "50", "--grid", "1.5"]):
        assert main(["--arch", "resnet20", "--no-progress", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1


def test_cli_rejects_bad_checkpoints_in_one_line(tmp_path, capsys):
    wrong = tmp_path / "resnet32.pt"
    torch.save({"model": build_model("resnet32", num_classes=10).state_dict()}, wrong)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    for path, msg in ((tmp_path / "missing.pt", "does not exist"), (garbage, "not a readable"),
                      (wrong, "does not fit a dense resnet20")):
        assert main(["--arch", "resnet20", "--flops-reduction", "50", "--checkpoint", str(path), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and msg in err and err.count("\n") == 1


# ----------------------------------------------------------------------------------------------
# Sensitivity curves and the full prune path on real components (small data)
def digits_heldout(n):
    from repro.demos.snf_digits import load_digits
    x, y = load_digits(heldout=max(n, 10)).heldout
    return x[:n], y[:n]


@pytest.mark.parametrize("bn", ["eval", "batch"])
def test_sensitivity_and_joint_cuts_build_no_autograd_graph(tmp_path, bn):
    """Every forward of the sweeps runs without autograd: with it, the graphs of the batched grid
    points held 12.7 GB for ResNet-56 (an OOM kill on this machine) and slowed every sweep."""
    from repro.prune.joint import measure_cuts
    arch = "resnet20"
    model = calibrated(arch)
    seen = []
    model.fc.register_forward_hook(lambda _m, _i, out: seen.append(out.requires_grad))
    x, y = digits_heldout(8)
    measure(model, arch, [(x, y)], {"conv1": [4]}, cache_dir=tmp_path, use_cache=False, progress=False, bn=bn)
    measure_cuts(model, arch, [(x, y)], [{"conv1": 4}], bn=bn)
    assert seen and not any(seen)


@pytest.mark.slow
def test_sensitivity_equals_hard_prune_and_is_cached(tmp_path):
    arch = "resnet20"
    model = calibrated(arch)
    x, y = digits_heldout(24)
    held = [(x[:16], y[:16]), (x[16:], y[16:])]
    counts = {"conv1": [4], "layer2.0.conv2": [8], "layer3.2.conv1": [1, 40]}
    sens = measure(model, arch, held, counts, cache_dir=tmp_path, progress=False)
    assert not sens.cached and set(sens.rise) == set(counts)

    def loss(m):
        with torch.no_grad():
            return sum(F.cross_entropy(m(a), b, reduction="sum").item() for a, b in held) / 24

    base = loss(model)
    assert sens.base_loss == pytest.approx(base, rel=1e-5)
    for name, ks in counts.items():
        for k in ks:
            cut = hard_prune(copy.deepcopy(model), arch, kept_indices(model, arch, {name: k}))
            assert sens.rise[name][k] == pytest.approx(loss(cut) - base, abs=2e-5)

    again = measure(model, arch, held, counts, cache_dir=tmp_path, progress=False)
    assert again.cached and again.rise == sens.rise
    with torch.no_grad():
        model.fc.bias.add_(0.1)  # new weights -> new key -> recomputed
    assert not measure(model, arch, held, counts, cache_dir=tmp_path, progress=False).cached


@pytest.mark.slow
def test_insensitive_layers_are_pruned_first(tmp_path):
    """Blocks whose output is scaled to ~0 can be cut for free: at the target they can meet alone,
    the search cuts exactly them and leaves every other conv whole."""
    arch, insensitive = "resnet20", ("layer1.1", "layer2.1", "layer3.1")
    torch.manual_seed(0)
    model = build_model(arch, num_classes=10)
    x, _ = digits_heldout(48)
    with torch.no_grad():
        for b in insensitive:
            block = model.get_submodule(b)
            block.bn2.weight.mul_(1e-6)
            block.bn2.bias.mul_(1e-6)
        model.train()
        model(x)
        model.eval()
        # Labels = the model's own (confident, class-balanced) predictions: the dense model sits at
        # a minimum of the held-out loss, so cutting anything that matters raises it.
        model.fc.bias.sub_(model(x).mean(0))
        z = model(x)
        top2 = z.topk(2, dim=1).values
        scale = 4.0 / (top2[:, 0] - top2[:, 1]).mean()
        model.fc.weight.mul_(scale)
        model.fc.bias.mul_(scale)
        y = model(x).argmax(1)
    grid = (0.125,)
    sens = measure(model, arch, [(x, y)], grid_counts(arch, grid), cache_dir=tmp_path, progress=False)
    cut = {c.name: min(sens.rise[c.name]) for c in prunable_convs(arch) if c.block in insensitive}
    assert all(abs(sens.rise[n][k]) < 1e-4 for n, k in cut.items())
    target = math.floor(1e6 * 100 * (1 - spec_macs(arch, cut) / baseline_macs(arch))) / 1e6
    result = search(arch, sens.rise, target)
    for c in prunable_convs(arch):
        assert result.kept[c.name] == cut.get(c.name, c.out_channels), c.name
    assert result.predicted_rise < 1e-3


@pytest.mark.parametrize("uniform", [False, True])
def test_snf_prune_builds_an_exact_compact_model(tmp_path, uniform):
    arch = "resnet20"
    model = calibrated(arch)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = digits_heldout(8)
    compact, spec, report = snf_prune(model, arch, [(x, y)], 45.0, grid=(0.5, 0.25), uniform=uniform,
                                      cache_dir=tmp_path, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # input untouched
    assert report["label"] == LABEL and report["method"] == ("uniform" if uniform else "snf")
    assert report["compact_conv_macs"] == flops.count(compact, 32).conv_macs == report["conv_macs"]
    assert spec == compact.spec == ChannelSpec.from_json(report["spec"])
    assert report["flops_reduction"] >= 45.0
    if not uniform:
        assert report["flops_reduction"] <= 45.1
        # the default search is the abstract's: curves with the trained (eval-mode) BN statistics
        assert report["variant"] == DEFAULT_VARIANT == "rise" and report["bn_recalibration"] == BN_MODES["eval"]
    json.dumps(report)
    # The compact model computes exactly what the hard-pruned dense model computes.
    hard = hard_prune(copy.deepcopy(model), arch, kept_indices(model, arch, report["kept"])).eval()
    with torch.no_grad():
        torch.testing.assert_close(compact.eval()(x), hard(x), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.timeout(900)  # ~20 s of CPU; generous for a loaded CI machine
def test_cli_json_end_to_end(tmp_path):
    """No training (--epochs 0, --finetune-epochs 0) keeps it short; the path is the real one."""
    cmd = [sys.executable, "-m", "repro.demos.snf_digits", "--arch", "resnet20", "--flops-reduction", "50", "--data", "digits",
           "--epochs", "0", "--finetune-epochs", "0", "--heldout", "10", "--grid", "0.5", "0.25",
           "--cache-dir", str(tmp_path), "--json", "--no-progress"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=850)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["label"] == LABEL
    run = data["runs"][0]
    assert run["method"] == "snf" and 50.0 <= run["flops_reduction"] <= 50.1
    assert set(run["kept"]) == {c.name for c in prunable_convs("resnet20")}
    assert run["search_wall_s"] > 0 and not run["sensitivity_cached"]
    assert 0.0 <= run["val_top1"] <= 100.0 and run["val_top1"] == run["pruned_val_top1"]
    help_text = subprocess.run([sys.executable, "-m", "repro.demos.snf_digits", "--help"], capture_output=True, text=True,
                               timeout=60).stdout
    assert "abstract-level reimplementation" in help_text


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("target", [45.0, 70.0])
def test_every_variant_meets_the_flops_target_within_a_tenth(tmp_path, variant, target):
    """Each search variant's compact model lands in [target, target + 0.1] (counted), like SNF's."""
    arch = "resnet20"
    model = calibrated(arch)
    x, y = digits_heldout(12)
    compact, spec, report = snf_prune(model, arch, [(x[:8], y[:8]), (x[8:], y[8:])], target, variant=variant,
                                      cache_dir=tmp_path, progress=False)
    counted = flops.count(compact, 32).conv_macs
    base = flops.arch_counts(arch).conv_macs
    assert counted == report["conv_macs"] == report["compact_conv_macs"]
    # exact, in integers: base * (1 - (target + 0.1) / 100) <= MACs <= base * (1 - target / 100)
    assert math.ceil(base * (100 - target - 0.10) / 100) <= counted <= math.floor(base * (100 - target) / 100)
    assert report["variant"] == variant and report["label"] == LABEL
    json.dumps(report)


def test_unknown_variant_is_a_one_line_error():
    with pytest.raises(ValueError, match="unknown SNF variant 'nope'; known: rise"):
        snf_prune(calibrated("resnet20"), "resnet20", [digits_heldout(8)], 50.0, variant="nope")


def test_config_names_the_same_variants_as_the_search():
    """config sits below prune, so it names the variants itself; they must be the search's own."""
    from repro.config.schema import SNF_VARIANTS
    assert sorted(SNF_VARIANTS) == sorted(VARIANTS) and SNF_VARIANTS[0] == DEFAULT_VARIANT
