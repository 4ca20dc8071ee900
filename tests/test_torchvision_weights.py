"""torchvision:ARCH weights specs: offline resolution, torchvision's hash check, one-line errors.

No real weights are downloaded: a randomly initialised torchvision ResNet-18 is saved under a
torchvision-style name whose hash prefix is its own sha256.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

from repro.models import build_model
from repro.models import torchvision_weights as tw


def _import_torchvision_models():
    """torchvision.models, or skip (fail under CI=true: setup.sh installs torchvision).

    PyPI's Linux torchvision wheels are CUDA builds. Beside a CPU-only torch their C extension
    (nms, roi_align, image decoding) cannot load, and torchvision 0.28's __init__ then fails in
    `register_fake("torchvision::nms")` on an operator that was never defined. Defining the two
    operator schemas it registers fakes for lets the pure-Python models import; nothing here
    uses the C ops. With a matching build (GPU machines) the extension defines them itself."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None:
        msg = "torchvision is not installed (a test dependency: bash scripts/setup.sh installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but " + msg)
        pytest.skip(msg)
    if "torchvision" not in sys.modules:
        ext = Path(spec.submodule_search_locations[0]) / "_C.so"
        try:
            torch.ops.load_library(str(ext))
        except (OSError, RuntimeError):
            lib = torch.library.Library("torchvision", "DEF")
            for op in ("nms", "qnms"):
                lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            _import_torchvision_models.keep = lib  # a Library object unregisters when collected
    import torchvision.models
    return torchvision.models


def _save_torchvision_style(model: torch.nn.Module, folder: Path, arch: str) -> Path:
    """Save a state dict as torchvision publishes it: NAME-<first 8 hex of its sha256>.pth."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{arch}.tmp"
    torch.save(model.state_dict(), tmp)
    prefix = hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]
    return tmp.rename(folder / f"{arch}-{prefix}.pth")


@pytest.fixture(scope="module")
def tv_models():
    return _import_torchvision_models()


@pytest.fixture(scope="module")
def tv_resnet18(tv_models, tmp_path_factory):
    """torchvision's own resnet18, random weights with non-trivial BN statistics, saved under a
    torchvision-style name."""
    torch.manual_seed(0)
    ref = tv_models.resnet18()
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    ref.eval()
    return ref, _save_torchvision_style(ref, tmp_path_factory.mktemp("tv") / "hub" / "checkpoints",
                                        "resnet18")


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_v1_file_names_are_torchvisions(tv_models):
    for arch, name in tw.V1_FILES.items():
        weights = getattr(tv_models, f"ResNet{arch[len('resnet'):]}_Weights").IMAGENET1K_V1
        assert weights.url == tw.URL_BASE + name


def test_explicit_file_loads_into_our_model_with_torchvisions_outputs(tv_resnet18):
    ref, path = tv_resnet18
    ours = tw.load_model(f"torchvision:{path}")
    assert ours.arch == "resnet18" and ours.fc.out_features == 1000
    ours.eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = ref(x), ours(x)
    assert want.abs().max() > 0.1  # a non-degenerate comparison
    assert torch.equal(got, want)


def test_name_resolves_through_torch_home(tv_resnet18, monkeypatch, tmp_path):
    _, path = tv_resnet18
    torch_home = path.parents[2]
    monkeypatch.setitem(tw.V1_FILES, "resnet18", path.name)  # the generated file plays the V1 file
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    assert tw.resolve("torchvision:resnet18") == path
    state = tw.load_state_dict("torchvision:resnet18")
    assert set(state) == set(build_model("resnet18").state_dict())
    # without TORCH_HOME torch.hub falls back to $XDG_CACHE_HOME/torch
    monkeypatch.delenv("TORCH_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert tw.checkpoints_dir() == tmp_path / "torch" / "hub" / "checkpoints"
    with pytest.raises(tw.WeightsMissing):
        tw.resolve("torchvision:resnet18")


def test_a_file_whose_hash_does_not_match_is_refused(tv_resnet18, tmp_path):
    _, path = tv_resnet18
    bad = tmp_path / "resnet18-0123abcd.pth"
    bad.write_bytes(path.read_bytes())
    with pytest.raises(tw.WeightsHashMismatch) as e:
        tw.load_state_dict(f"torchvision:{bad}")
    assert f"{bad}: sha256 is " in _one_line(e) and "its name says 0123abcd" in str(e.value)
    truncated = tmp_path / path.name
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(tw.WeightsHashMismatch):
        tw.resolve(f"torchvision:{truncated}")
    unnamed = tmp_path / "weights.pth"
    unnamed.write_bytes(path.read_bytes())
    with pytest.raises(tw.WeightsError, match="carries no hash"):
        tw.resolve(f"torchvision:{unnamed}")


def test_a_missing_file_says_where_and_how(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    with pytest.raises(tw.WeightsMissing) as e:
        tw.resolve("torchvision:resnet50")
    msg = _one_line(e)
    where = tmp_path / "th" / "hub" / "checkpoints"
    assert f"expected {where / 'resnet50-0676ba61.pth'}, which does not exist" in msg
    assert "torchvision.models.resnet50(weights='IMAGENET1K_V1')" in msg
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in msg
    with pytest.raises(tw.WeightsMissing, match="does not exist"):
        tw.resolve(f"torchvision:{tmp_path / 'resnet50-0676ba61.pth'}")


def test_bad_specs_and_mismatched_models(tv_resnet18):
    _, path = tv_resnet18
    with pytest.raises(tw.WeightsError, match="no released weights known for 'resnet152'.*resnet101"):
        tw.resolve("torchvision:resnet152")
    with pytest.raises(tw.WeightsError, match="names no model"):
        tw.resolve("torchvision:")
    with pytest.raises(tw.WeightsError, match="not a torchvision weights spec"):
        tw.resolve("runs/table2/base")
    assert tw.is_spec("torchvision:resnet50") and not tw.is_spec("/runs/base")
    assert tw.arch_of(f"torchvision:{path}") == "resnet18"
    with pytest.raises(tw.WeightsError, match="holds a resnet18, this run trains a resnet34"):
        tw.load_model(f"torchvision:{path}", arch="resnet34")
    with pytest.raises(tw.WeightsError, match="1000-class head, this run needs 10"):
        tw.load_model(f"torchvision:{path}", num_classes=10)


def test_prune_init_from_takes_the_spec(tv_resnet18, monkeypatch, tmp_path):
    """The trainer's starting point (repro.engine.init): `prune.init_from=torchvision:resnet18`
    resolves through the hub cache, loads with torchvision's outputs, and its errors are one-line
    ConfigErrors raised before the run folder is touched."""
    from repro.config import ConfigError
    from repro.engine.init import check_exists, load_init
    ref, path = tv_resnet18
    monkeypatch.setitem(tw.V1_FILES, "resnet18", path.name)
    monkeypatch.setenv("TORCH_HOME", str(path.parents[2]))
    run_dir = tmp_path / "runs" / "r"
    check_exists("torchvision:resnet18", run_dir)
    ours = load_init("torchvision:resnet18", run_dir, "resnet18", 1000).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(ours(x), ref(x))
    with pytest.raises(ConfigError) as e:
        check_exists("torchvision:resnet50", run_dir)
    assert _one_line(e).startswith("prune.init_from: torchvision:resnet50: expected ")
    with pytest.raises(ConfigError, match="1000-class head, this run needs 10"):
        load_init("torchvision:resnet18", run_dir, "resnet18", 10)
    assert not run_dir.exists()
