"""SFP: criteria, soft masks (zeroed filters still learn and can come back), mask state, hard pruning."""
import io

import pytest
import torch
from torch import nn

from repro.models import UnknownArchError, build_model, kept_filters
from repro.models.graph import prunable_convs
from repro.models.spec import SpecError
from repro.prune import CRITERIA, CriterionError, MaskError, SoftFilterPruner, hard_prune, select_kept
from repro.demos.compact import randomize_bn_



def test_criteria_scores_and_selection():
    w = torch.zeros(4, 2, 3, 3)
    w[0] = 1.0          # L2 = sqrt(18) = 4.24, L1 = 18
    w[1, 0, 0, 0] = 5.0  # L2 = 5, L1 = 5
    w[2, :, 0, 0] = 0.5  # small
    assert torch.allclose(CRITERIA["l2"](w), torch.tensor([18 ** 0.5, 5.0, 0.5 ** 0.5, 0.0]))
    assert torch.allclose(CRITERIA["l1"](w), torch.tensor([18.0, 5.0, 1.0, 0.0]))
    assert select_kept(CRITERIA["l2"](w), 1).tolist() == [1]
    assert select_kept(CRITERIA["l1"](w), 1).tolist() == [0]
    assert select_kept(CRITERIA["l2"](w), 3).tolist() == [0, 1, 2]  # sorted indices
    # ties: lower index wins, deterministically
    assert select_kept(torch.zeros(5), 2).tolist() == [0, 1]
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(CRITERIA["random"](w, g1), CRITERIA["random"](w, g2))
    with pytest.raises(CriterionError):
        select_kept(torch.ones(4), 0)
    with pytest.raises(CriterionError):
        select_kept(torch.ones(4), 5)


@pytest.mark.parametrize("arch", ["resnet20", "resnet50"])
def test_update_zeroes_int_n_rate_filters_per_layer_and_nothing_else(arch):
    torch.manual_seed(0)
    model = randomize_bn_(build_model(arch), torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruner = SoftFilterPruner(model, arch, 0.3)
    pruner.update()
    convs = {c.name for c in prunable_convs(arch)}
    for layer in prunable_convs(arch):
        w = model.get_submodule(layer.name).weight
        zero = (w.flatten(1).abs().sum(1) == 0)
        assert int(zero.sum()) == int(layer.out_channels * 0.3)
        assert torch.equal(~zero, pruner.masks[layer.name])
        # the zeroed ones are the smallest L2 norms of the weights before the update
        norms = before[f"{layer.name}.weight"].flatten(1).norm(dim=1)
        assert norms[zero].max() <= norms[~zero].min()
    for key, value in model.state_dict().items():
        if key.endswith(".weight") and key[: -len(".weight")] in convs:
            continue
        assert torch.equal(value, before[key]), f"{key} changed: SFP must touch only conv weights"
    spec = pruner.spec()
    assert spec.convs["conv1"] == kept_filters(model.conv1.out_channels, 0.3)
    assert all(torch.equal(idx, pruner.masks[n].nonzero().flatten()) for n, idx in pruner.kept_indices().items())


def test_imagenet_projection_shortcuts_are_never_pruned():
    model = build_model("resnet18")
    pruner = SoftFilterPruner(model, "resnet18", 0.4)
    pruner.update()
    assert not any("downsample" in n for n in pruner.masks)
    assert (model.layer2[0].downsample[0].weight.flatten(1).abs().sum(1) > 0).all()


def test_zeroed_filter_gets_gradient_and_regrows_into_the_kept_set():
    """The 'soft' part: train-mode BN passes gradient to an all-zero filter (no gradient or
    momentum masking), it regrows during the next epoch, and the next ranking keeps it."""
    torch.manual_seed(0)
    arch, name = "resnet20", "layer1.0.conv2"  # a block-output conv: BN output feeds the residual add
    model = build_model(arch).train()
    pruner = SoftFilterPruner(model, arch, 0.4)
    pruner.update()                                     # "end of epoch t"
    conv = model.get_submodule(name)
    pruned_t = ~pruner.masks[name]
    assert conv.weight[pruned_t].abs().sum() == 0
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(1)
    for step in range(3):                               # "epoch t+1"
        x, y = torch.randn(16, 3, 32, 32, generator=gen), torch.randint(0, 10, (16,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        if step == 0:
            # A channel that the stem ALSO zeroed sums to exactly 0 before the ReLU: on the kink,
            # no gradient (see the next test). Every other zeroed filter must get gradient.
            live = pruned_t & pruner.masks["conv1"]
            assert live.any()
            grad = conv.weight.grad.flatten(1).abs().sum(1)
            assert (grad[live] > 0).all(), "a zeroed filter must receive gradient"
        opt.step()
    assert (conv.weight[live].flatten(1).abs().sum(1) > 0).all()
    pruner.update()                                     # "end of epoch t+1"
    back = pruned_t & pruner.masks[name]
    assert back.any(), "a filter zeroed at epoch t must be able to survive the ranking at t+1"
    assert int(pruner.masks[name].sum()) == kept_filters(16, 0.4)


def test_zeroed_inner_filter_is_stuck_while_its_bn_beta_is_zero():
    """Documents a property of SFP itself (and of the official code): a zeroed filter whose BN is
    followed directly by ReLU outputs exactly ReLU(beta); with beta == 0 (its init value) it sits on
    the ReLU kink, whose derivative PyTorch takes as 0, so neither the filter nor beta gets gradient.
    Once beta != 0 the gradient flows."""
    torch.manual_seed(0)
    model = build_model("resnet20").train()
    pruner = SoftFilterPruner(model, "resnet20", 0.4)
    pruner.update()
    victim = int((~pruner.masks["layer1.0.conv1"]).nonzero()[0])
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    nn.functional.cross_entropy(model(x), y).backward()
    assert model.layer1[0].conv1.weight.grad[victim].abs().sum() == 0
    model.zero_grad()
    with torch.no_grad():
        model.layer1[0].bn1.bias[victim] = 0.1
    nn.functional.cross_entropy(model(x), y).backward()
    assert model.layer1[0].conv1.weight.grad[victim].abs().sum() > 0


def test_mask_state_round_trip_is_bit_exact_and_validated():
    arch = "resnet32"
    model = build_model(arch)
    pruner = SoftFilterPruner(model, arch, 0.3, "random", seed=7)
    pruner.update()
    buf = io.BytesIO()
    torch.save({"pruner": pruner.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)["pruner"]
    other = SoftFilterPruner(build_model(arch), arch, 0.3, "random", seed=123)
    other.load_state_dict(state)
    assert other.masks.keys() == pruner.masks.keys()
    for name in pruner.masks:
        assert torch.equal(other.masks[name], pruner.masks[name]) and other.masks[name].dtype == torch.bool
    # the random criterion's generator resumes exactly: both draw the same next masks
    pruner.update()
    other.update()
    assert all(torch.equal(other.masks[n], pruner.masks[n]) for n in pruner.masks)

    with pytest.raises(MaskError, match="arch"):
        SoftFilterPruner(build_model("resnet20"), "resnet20", 0.3, "random").load_state_dict(state)
    with pytest.raises(MaskError, match="rate"):
        SoftFilterPruner(build_model(arch), arch, 0.4, "random").load_state_dict(state)
    bad = dict(state, masks=dict(state["masks"]))
    bad["masks"]["conv1"] = torch.ones(17, dtype=torch.bool)
    with pytest.raises(MaskError, match="conv1"):
        other.load_state_dict(bad)
    bad["masks"]["conv1"] = torch.ones(16, dtype=torch.bool).index_fill(0, torch.tensor([0]), False)
    with pytest.raises(MaskError, match="keeps 15 of 16"):
        other.load_state_dict(bad)
    del bad["masks"]["conv1"]
    with pytest.raises(MaskError, match="missing"):
        other.load_state_dict(bad)


def test_bad_inputs():
    with pytest.raises(SpecError):
        SoftFilterPruner(build_model("resnet20"), "resnet20", 1.0)
    with pytest.raises(SpecError):
        SoftFilterPruner(build_model("resnet20"), "resnet20", -0.1)
    with pytest.raises(UnknownArchError):
        SoftFilterPruner(build_model("resnet20"), "resnet21", 0.3)
    with pytest.raises(CriterionError):
        SoftFilterPruner(build_model("resnet20"), "resnet20", 0.3, "l3")
    with pytest.raises(MaskError, match="dense resnet56"):
        SoftFilterPruner(build_model("resnet20"), "resnet56", 0.3)


def test_works_through_a_wrapper():
    model = build_model("resnet20")
    pruner = SoftFilterPruner(nn.DataParallel(model), "resnet20", 0.3)
    pruner.update()
    assert int((model.conv1.weight.flatten(1).abs().sum(1) == 0).sum()) == int(16 * 0.3)


@pytest.mark.numerics
@pytest.mark.parametrize("arch,res", [("resnet56", 32), ("resnet34", 64)])
def test_hard_prune_makes_pruned_channels_exactly_zero(arch, res):
    torch.manual_seed(0)
    model = randomize_bn_(build_model(arch), torch.Generator().manual_seed(1)).eval()
    pruner = SoftFilterPruner(model, arch, 0.4)
    pruner.update()
    seen = {}
    hooks = [model.get_submodule(c.bn).register_forward_hook(
        lambda m, i, o, name=c.name: seen.__setitem__(name, o.detach())) for c in prunable_convs(arch)]
    x = torch.randn(2, 3, res, res)
    with torch.no_grad():
        model(x)
    # soft-masked model in eval: a pruned channel carries the constant BN(0), not 0
    assert any(seen[n][:, ~pruner.masks[n]].abs().max() > 1e-3 for n in seen)
    hard_prune(model, arch, pruner.kept_indices())
    for mode in ("eval", "train"):
        getattr(model, mode)()
        with torch.no_grad():
            model(x)
        for name, out in seen.items():
            assert out[:, ~pruner.masks[name]].abs().max() == 0, f"{name} ({mode})"
    for h in hooks:
        h.remove()
    with pytest.raises(MaskError, match="outside"):
        hard_prune(model, arch, {"conv1": torch.tensor([0, 99])})
    with pytest.raises(MaskError, match="does not prune"):
        hard_prune(model, arch, {"fc": torch.tensor([0])})
