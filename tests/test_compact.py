"""Compact models: exact vs the hard-pruned model, integer MACs, save/load, jit, the CLI."""
import json
import subprocess
import sys

import pytest
import torch

from repro.demos import compact as compact_cli
from repro import flops
from repro.demos.compact import PIPELINES, demo, fold_bn, prepare, randomize_bn_
from repro.models import ARCHS, arch_info, build_model
from repro.models.graph import prunable_convs
from repro.prune import (MaskError, SoftFilterPruner, align_kept, build_compact, hard_prune, load_compact,
                         save_compact)

TOL = 1e-4



def small_input(arch, batch=2, seed=0):
    res = 32 if arch_info(arch).family == "cifar" else 64  # ImageNet nets kept cheap: 64 px
    return torch.randn(batch, 3, res, res, generator=torch.Generator().manual_seed(seed))


def out(model, x):
    with torch.no_grad():
        return model.eval()(x)


# The ISA matrix (tests/test_isa_matrix.py) reruns one net of each block kind: CIFAR basic,
# ImageNet basic, bottleneck; the other sizes stack the same blocks on the same kernels.
UNDER_EVERY_ISA = {("resnet20", 0.3), ("resnet18", 0.4), ("resnet50", 0.3)}


@pytest.mark.parametrize("arch,prune", [pytest.param(a, p, marks=[pytest.mark.numerics] * ((a, p) in UNDER_EVERY_ISA))
                                        for a in ARCHS for p in (0.3, 0.4)])
def test_compact_is_exact_counts_integer_macs_and_reloads(arch, prune, tmp_path):
    d = demo(arch, prune, seed=1)
    x = small_input(arch)
    ref = out(d.hard, x)
    assert ref.abs().max() > 1e-2  # a meaningful comparison, not 0 == 0
    assert (out(d.compact, x) - ref).abs().max() <= TOL
    # the merely masked model differs: hard pruning is what removes the BN(0) constants
    assert (out(d.soft, x) - ref).abs().max() > TOL

    res = x.shape[-1]  # the integer count must agree at any resolution; 64 px keeps it cheap
    compact_macs = flops.count(d.compact, res).conv_macs
    assert compact_macs == flops.spec_conv_macs(arch, flops.uniform_spec(arch, prune), res)
    assert d.compact.spec == flops.uniform_spec(arch, prune)
    assert d.compact.arch == arch

    path = tmp_path / "compact.pt"
    save_compact(path, d.compact)
    again = load_compact(path)
    assert again.spec == d.compact.spec and again.arch == arch
    assert torch.equal(out(again, x), out(d.compact, x))


@pytest.mark.parametrize("arch", ["resnet20", "resnet18"])
def test_channels_last_and_jit(arch):
    """The channels_last scatter path (repro.models.common) is exact, scripts, traces and trains."""
    d = demo(arch, 0.4, seed=2)
    x = small_input(arch)
    ref = out(d.hard, x)
    cl = d.compact.to(memory_format=torch.channels_last)
    xcl = x.contiguous(memory_format=torch.channels_last)
    assert (out(cl, xcl) - ref).abs().max() <= TOL
    with torch.no_grad():
        traced = torch.jit.trace(cl, xcl)
        scripted = torch.jit.script(cl)
        for m, inp in ((traced, xcl), (scripted, xcl), (scripted, x)):
            assert (m(inp) - ref).abs().max() <= TOL
    assert (out(fold_bn(d.compact), x) - ref).abs().max() <= TOL
    # the timed pipelines (BN folded, in-place residual adds, channels_last / jit) stay exact
    for pipeline in PIPELINES:
        fn, inp = prepare(d.compact, x, pipeline)
        with torch.inference_mode():
            assert (fn(inp) - ref).abs().max() <= TOL, pipeline
    assert not any(getattr(m, "inplace", False) for m in d.compact.modules() if type(m).__name__ == "StreamWrite")
    # gradients through the NHWC scatter equal the NCHW ones (SNF fine-tunes compact models)
    grads = []
    for fmt, inp in ((torch.contiguous_format, x), (torch.channels_last, xcl)):
        m = build_compact(d.hard, arch, d.kept).train().to(memory_format=fmt)
        m(inp).square().sum().backward()
        grads.append(m.fc.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-4, rtol=1e-3)


@pytest.mark.timeout(300)
def test_torch_compile_captures_the_whole_compact_model():
    """Dynamo captures the compact model (scatter paths included) as one graph; aot_eager skips
    the C++ compile of inductor, which would add minutes here and tests nothing of ours."""
    d = demo("resnet20", 0.4, seed=5)
    x = small_input("resnet20")
    ref = out(d.hard, x)
    for fmt in (torch.contiguous_format, torch.channels_last):
        compiled = torch.compile(d.compact.to(memory_format=fmt), backend="aot_eager", fullgraph=True)
        with torch.no_grad():
            assert (compiled(x.contiguous(memory_format=fmt)) - ref).abs().max() <= TOL


@pytest.mark.numerics
@pytest.mark.parametrize("arch", ["resnet20", "resnet18"])
def test_narrowed_streams_stay_exact_and_reload(arch, tmp_path):
    torch.manual_seed(3)
    dense = randomize_bn_(build_model(arch), torch.Generator().manual_seed(3)).eval()
    # Coupled selections: every writer of a stream keeps the same channels, as a narrowing search would.
    kept = {}
    for c in prunable_convs(arch):
        n = c.out_channels
        kept[c.name] = torch.arange(0, n, 2) if c.stream else torch.randperm(n)[: n // 2].sort().values
    hard_prune(dense, arch, kept)
    x = small_input(arch)
    compact = build_compact(dense, arch, kept, narrow_streams=True)
    assert compact.spec.streams, "streams must actually be narrowed in this test"
    assert (out(compact, x) - out(dense, x)).abs().max() <= TOL
    full = build_compact(dense, arch, kept)
    res = x.shape[-1]
    assert flops.count(compact, res).conv_macs < flops.count(full, res).conv_macs
    save_compact(tmp_path / "n.pt", compact)
    assert torch.equal(out(load_compact(tmp_path / "n.pt"), x), out(compact, x))
    cl = compact.to(memory_format=torch.channels_last)
    assert (out(cl, x.contiguous(memory_format=torch.channels_last)) - out(dense, x)).abs().max() <= TOL


@pytest.mark.numerics
def test_aligned_compact_is_exact_with_widths_a_multiple_of_8():
    d = demo("resnet18", 0.4, seed=4)
    aligned = align_kept("resnet18", d.kept, 8)
    for c in prunable_convs("resnet18"):
        assert aligned[c.name].numel() % 8 == 0 or aligned[c.name].numel() == c.out_channels
        assert set(d.kept[c.name].tolist()) <= set(aligned[c.name].tolist())
    assert any(aligned[n].numel() > d.kept[n].numel() for n in d.kept)
    model = build_compact(d.hard, "resnet18", aligned)
    x = small_input("resnet18")
    assert (out(model, x) - out(d.hard, x)).abs().max() <= TOL


def test_bad_inputs(tmp_path):
    d = demo("resnet20", 0.3)
    with pytest.raises(MaskError, match="outside"):
        build_compact(d.hard, "resnet20", {"conv1": torch.tensor([3, 16])})
    with pytest.raises(MaskError, match="repeat"):
        build_compact(d.hard, "resnet20", {"conv1": torch.tensor([3, 3])})
    with pytest.raises(MaskError):  # a model of another architecture
        build_compact(build_model("resnet32"), "resnet56", d.kept)
    with pytest.raises(MaskError, match="does not prune"):
        build_compact(d.hard, "resnet18", d.kept)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(MaskError, match="not a readable"):
        load_compact(junk)
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(MaskError, match="not a compact-model file"):
        load_compact(tmp_path / "other.pt")


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "repro.demos.compact", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.timeout(300)
def test_cli_reports_exact_compact_and_timings(tmp_path):
    r = run_cli("--arch", "resnet20", "--prune", "0.4", "--json", "--repeats", "2", "--batch", "4",
                "--save", str(tmp_path / "c.pt"))
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["max_abs_diff"] <= TOL and rep["max_abs_diff_aligned"] <= TOL and rep["pipeline_max_abs_diff"] <= TOL
    assert rep["compact_conv_macs"] == rep["integer_count_conv_macs"] < rep["dense_conv_macs"]
    assert rep["theoretical_speedup"] == pytest.approx(rep["dense_conv_macs"] / rep["compact_conv_macs"])
    assert rep["speedup"] == pytest.approx(rep["dense_ms"] / rep["compact_ms"])
    assert rep["dense_ms"] > 0 and rep["compact_ms"] > 0 and rep["compact_params"] < rep["dense_params"]
    assert load_compact(tmp_path / "c.pt").spec == flops.uniform_spec("resnet20", 0.4)


@pytest.mark.timeout(300)
def test_cli_bad_input_gives_one_line_and_nonzero_exit(tmp_path, capsys):
    pruner = SoftFilterPruner(build_model("resnet32"), "resnet32", 0.3)
    pruner.update()
    torch.save({"pruner": pruner.state_dict()}, tmp_path / "ckpt.pt")
    (tmp_path / "junk.pt").write_text("junk")
    cases = [(["--arch", "resnet50", "--prune", "1.0"], "prune"),
             (["--arch", "resnet50", "--prune", "-0.1"], "prune"),
             (["--arch", "resnet51", "--prune", "0.3"], "unknown arch"),
             (["--arch", "resnet20", "--prune", "0.3", "--masks", str(tmp_path / "ckpt.pt")], "arch"),
             (["--arch", "resnet20", "--prune", "0.3", "--masks", str(tmp_path / "junk.pt")], "not a readable"),
             (["--arch", "resnet20", "--prune", "0.3", "--masks", str(tmp_path / "nope.pt")], "does not exist"),
             (["--arch", "resnet20", "--prune", "0.3", "--resolution", "64"], "32x32"),
             (["--arch", "resnet20", "--prune", "0.3", "--batch", "0"], "--batch")]
    for args, words in cases:
        assert compact_cli.main(args) != 0, args
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], (args, lines)
    # and through the real entry point: the exit status reaches the shell
    r = run_cli("--arch", "resnet51", "--prune", "0.3")
    assert r.returncode == 2 and r.stderr.strip().startswith("error: unknown arch")
