"""Pieces shared by the CIFAR and ImageNet ResNets: init, and writing into a residual stream."""
from __future__ import annotations

import math

import torch
from torch import nn


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)
    return conv, nn.BatchNorm2d(cout)


def init_resnet_(model: nn.Module) -> None:
    """He init used by both papers' code: conv ~ N(0, sqrt(2 / (k*k*out))), BN gamma=1, beta=0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class StreamWrite(nn.Module):
    """Adds a branch output of ``width`` channels into a residual stream of ``stream`` channels.

    When the branch is as wide as the stream this is a plain add. When it is narrower (a pruned
    block-output conv writing into a stream that other layers keep wider), the branch's channels
    land at ``index`` (a buffer, saved in the state dict) by ``index_add``: exact, and one pass
    over the stream, unlike materialising a zero-filled full-width copy first.

    Memory format matters (measured, repro/bench/latency.py): ``index_add`` along dim 1 of a
    channels_last tensor takes PyTorch's strided slow path, 10-20x a dense add, which is what
    makes a naive compact ResNet-50 slower than the dense one. On channels_last tensors the add
    therefore runs along the last dim of the NHWC-contiguous view, which costs about one dense add.
    """

    def __init__(self, width: int, stream: int):
        super().__init__()
        if width > stream:
            raise ValueError(f"a {width}-channel branch cannot write into a {stream}-channel stream")
        self.scatter = width != stream
        # Inference pipelines that own their model copy set this: the add then lands in the
        # stream tensor itself (the block's input or its projection output, dead after the block)
        # instead of a new full-width tensor. Off by default: it mutates the block's input, which
        # autograd, hooks or callers caching block inputs (SNF's sensitivity sweep) must not see.
        self.inplace = False
        # Saved only when it carries information, so dense models keep torchvision's keys.
        self.register_buffer("index", torch.arange(width), persistent=self.scatter)

    def forward(self, branch: torch.Tensor, stream: torch.Tensor) -> torch.Tensor:
        if self.scatter:
            if _nhwc(stream):
                out = stream if self.inplace else stream.clone(memory_format=torch.channels_last)
                out.permute(0, 2, 3, 1).index_add_(3, self.index, branch.permute(0, 2, 3, 1))
                return out
            if self.inplace:
                return stream.index_add_(1, self.index, branch)
            return stream.index_add(1, self.index, branch)
        if self.inplace:
            return stream.add_(branch)
        return stream + branch


def _nhwc(x: torch.Tensor) -> bool:
    """True for a 4-D tensor laid out channels_last (and not also NCHW-contiguous, e.g. 1x1)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class StreamStart(nn.Module):
    """Places a ``width``-channel tensor into a zero ``stream``-channel one (a stem that starts a
    stream, or CIFAR's option-A shortcut). Dense case: identity / constant padding, no copy."""

    def __init__(self, width: int, stream: int, offset: int = 0):
        super().__init__()
        if width + offset > stream:
            raise ValueError(f"{width} channels at offset {offset} do not fit a {stream}-channel stream")
        self.stream = stream
        self.pad_before = offset
        self.pad_after = stream - width - offset
        # Contiguous placement (always true for dense models) is a cheap pad; otherwise index.
        self.scatter = False
        self.register_buffer("index", torch.arange(offset, offset + width), persistent=width != stream)

    def set_index(self, index: torch.Tensor) -> None:
        index = index.to(self.index)
        self.index.copy_(index)
        self._refresh()

    def _refresh(self) -> None:
        idx = self.index
        width = idx.numel()
        contiguous = width > 0 and bool((idx == torch.arange(int(idx[0]), int(idx[0]) + width)).all())
        self.scatter = not contiguous
        if contiguous:
            self.pad_before = int(idx[0])
            self.pad_after = self.stream - width - self.pad_before

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._refresh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scatter:
            if _nhwc(x):  # see StreamWrite: index ops along dim 1 of channels_last are slow
                out = x.new_zeros(x.shape[0], self.stream, x.shape[2], x.shape[3]).contiguous(
                    memory_format=torch.channels_last)
                out.permute(0, 2, 3, 1).index_copy_(3, self.index, x.permute(0, 2, 3, 1))
                return out
            out = x.new_zeros(x.shape[0], self.stream, x.shape[2], x.shape[3])
            return out.index_copy(1, self.index, x)
        if self.pad_before == 0 and self.pad_after == 0:
            return x
        return nn.functional.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))
