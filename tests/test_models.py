"""The eight ResNets: structure, torchvision compatibility, specs, scripting."""
import pytest
import torch
from torch import nn

from repro.models import ARCHS, ChannelSpec, SpecError, UnknownArchError, build_model, check_resolution
from repro.models.graph import prunable_convs, streams
from repro.flops import uniform_spec

IMAGENET_LAYERS = {"resnet18": ("basic", (2, 2, 2, 2)), "resnet34": ("basic", (3, 4, 6, 3)),
                   "resnet50": ("bottleneck", (3, 4, 6, 3)), "resnet101": ("bottleneck", (3, 4, 23, 3))}


def torchvision_keys_and_shapes(arch):
    """torchvision's state-dict layout, written out independently of repro.models."""
    kind, layers = IMAGENET_LAYERS[arch]
    out = {}

    def conv(name, cout, cin, k):
        out[f"{name}.weight"] = (cout, cin, k, k)

    def bn(name, c):
        for s in ("weight", "bias", "running_mean", "running_var"):
            out[f"{name}.{s}"] = (c,)
        out[f"{name}.num_batches_tracked"] = ()

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    inplanes, exp = 64, (1 if kind == "basic" else 4)
    for s, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
        for b in range(n):
            p = f"layer{s + 1}.{b}"
            stride = 2 if s > 0 and b == 0 else 1
            if kind == "basic":
                conv(f"{p}.conv1", planes, inplanes, 3); bn(f"{p}.bn1", planes)
                conv(f"{p}.conv2", planes, planes, 3); bn(f"{p}.bn2", planes)
            else:
                conv(f"{p}.conv1", planes, inplanes, 1); bn(f"{p}.bn1", planes)
                conv(f"{p}.conv2", planes, planes, 3); bn(f"{p}.bn2", planes)
                conv(f"{p}.conv3", planes * 4, planes, 1); bn(f"{p}.bn3", planes * 4)
            if b == 0 and (stride != 1 or inplanes != planes * exp):
                conv(f"{p}.downsample.0", planes * exp, inplanes, 1); bn(f"{p}.downsample.1", planes * exp)
            inplanes = planes * exp
    out["fc.weight"] = (1000, 512 * exp)
    out["fc.bias"] = (1000,)
    return out


@pytest.mark.parametrize("arch", list(IMAGENET_LAYERS))
def test_imagenet_state_dict_is_torchvision_layout(arch):
    sd = build_model(arch).state_dict()
    expected = torchvision_keys_and_shapes(arch)
    assert list(sd) == list(expected)  # same keys, same order
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected


def test_torchvision_style_weights_load_and_stride_is_on_the_3x3():
    src = build_model("resnet50")
    for p in src.parameters():
        nn.init.normal_(p)
    dst = build_model("resnet50")
    dst.load_state_dict(src.state_dict(), strict=True)
    blk = dst.layer2[0]
    assert blk.conv1.stride == (1, 1) and blk.conv2.stride == (2, 2)  # torchvision "v1.5"


@pytest.mark.parametrize("arch,params", [("resnet20", 269_722), ("resnet32", 464_154), ("resnet56", 853_018),
                                         ("resnet110", 1_727_962), ("resnet18", 11_689_512),
                                         ("resnet34", 21_797_672), ("resnet50", 25_557_032),
                                         ("resnet101", 44_549_160)])
def test_parameter_counts(arch, params):
    with torch.device("meta"):
        model = build_model(arch)
    assert sum(p.numel() for p in model.parameters()) == params


def test_cifar_option_a_shortcut_has_no_convs_and_pads_with_zeros():
    model = build_model("resnet20").eval()
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert len(names) == 19 and not any("shortcut" in n for n in names)
    x = torch.randn(2, 16, 32, 32)
    y = model.layer2[0].shortcut(x)
    assert y.shape == (2, 32, 16, 16)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert y[:, :8].abs().sum() == 0 and y[:, 24:].abs().sum() == 0


def test_cifar_init_follows_papers():
    torch.manual_seed(0)
    model = build_model("resnet110")
    w = model.layer3[5].conv2.weight
    assert abs(w.std().item() - (2.0 / (3 * 3 * 64)) ** 0.5) < 0.01
    assert torch.all(model.layer1[0].bn1.weight == 1) and torch.all(model.layer1[0].bn1.bias == 0)


def test_unknown_arch_lists_known_ones():
    with pytest.raises(UnknownArchError, match="known: resnet20, resnet32"):
        build_model("resnet19")


def test_resolution_checks():
    with pytest.raises(ValueError, match="CIFAR ResNet and takes 32x32"):
        check_resolution("resnet56", 224)
    with pytest.raises(ValueError, match="at least 32x32"):
        check_resolution("resnet50", 16)
    check_resolution("resnet50", 64)


def test_spec_validation():
    with pytest.raises(SpecError, match="keeps 17 filters but has only 16"):
        build_model("resnet20", spec=ChannelSpec(convs={"conv1": 17}))
    with pytest.raises(SpecError, match="at least 1"):
        ChannelSpec(convs={"conv1": 0})
    with pytest.raises(SpecError, match="unknown keys"):
        ChannelSpec.from_json({"convs": {}, "bogus": 1})
    spec = uniform_spec("resnet56", 0.3)
    assert ChannelSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize("arch", list(ARCHS))
def test_graph_lists_every_pruned_conv_and_no_projection(arch):
    model = build_model(arch)
    convs = prunable_convs(arch)
    all_convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert [c.name for c in convs] == [n for n in all_convs if ".downsample." not in n]
    for c in convs:
        assert isinstance(model.get_submodule(c.bn), nn.BatchNorm2d)
        assert model.get_submodule(c.name).out_channels == c.out_channels
    writers = [w for s in streams(arch) for w in s.writers]
    assert sorted(writers) == sorted(c.name for c in convs if c.stream)


@pytest.mark.parametrize("arch", ["resnet20", "resnet18", "resnet50"])
def test_pruned_skeleton_runs_and_scripts(arch):
    model = build_model(arch, spec=uniform_spec(arch, 0.4)).eval()
    res = 32 if arch == "resnet20" else 64
    x = torch.randn(2, 3, res, res)
    scripted = torch.jit.script(model)
    torch.testing.assert_close(scripted(x), model(x))
