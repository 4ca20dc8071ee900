"""BatchNorm folded into the conv before it: the inference form the latency figures and the exported
graphs use (same function, one op fewer per layer)."""
from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold_bn(model: nn.Module) -> nn.Module:
    """An eval-mode copy with every BatchNorm2d folded into the conv registered right before it."""
    model = copy.deepcopy(model).eval()
    prev: tuple[str, nn.Conv2d] | None = None
    for name, m in list(model.named_modules()):
        if isinstance(m, nn.Conv2d):
            prev = (name, m)
        elif isinstance(m, nn.BatchNorm2d):
            if prev is None or prev[1].out_channels != m.num_features:
                raise ValueError(f"cannot fold BN '{name}': no matching conv right before it")
            cname, conv = prev
            for full, new in ((cname, fuse_conv_bn_eval(conv, m)), (name, nn.Identity())):
                parent, _, leaf = full.rpartition(".")
                setattr(model.get_submodule(parent) if parent else model, leaf, new)
            prev = None
    return model
