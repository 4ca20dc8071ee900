"""CIFAR ResNet-20/32/56/110 (He et al. 2016, §4.2) with option-A shortcuts.

Option A: a stage change subsamples the stream with stride 2 and pads the new channels with
zeros, so the network has no shortcut convs; SFP prunes every conv, stem included.
Module names: ``conv1``/``bn1`` (stem), ``layer{1,2,3}.{i}.conv{1,2}``/``bn{1,2}``, ``fc``.
"""
from __future__ import annotations

import torch
from torch import nn

from .common import StreamStart, StreamWrite, conv_bn, init_resnet_
from .spec import DENSE, ChannelSpec

STAGE_WIDTHS = (16, 32, 64)


class OptionAShortcut(nn.Module):
    """Stride-2 subsample and place the channels inside the wider next stream (zeros elsewhere)."""

    def __init__(self, cin: int, cout: int, full_in: int, full_out: int):
        super().__init__()
        # Dense: the old channels sit in the middle, (full_out - full_in) / 2 zeros either side.
        self.place = StreamStart(cin, cout, offset=(full_out - full_in) // 2 if cin == full_in and cout == full_out else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.place(x[:, :, ::2, ::2])


class BasicBlock(nn.Module):
    def __init__(self, name: str, stream_in: int, stream_out: int, full_out: int, stride: int,
                 shortcut: nn.Module | None, spec: ChannelSpec):
        super().__init__()
        mid = spec.conv(f"{name}.conv1", full_out)
        out = spec.conv(f"{name}.conv2", full_out)
        self.conv1, self.bn1 = conv_bn(stream_in, mid, 3, stride)
        self.conv2, self.bn2 = conv_bn(mid, out, 3)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = shortcut if shortcut is not None else nn.Identity()
        self.write = StreamWrite(out, stream_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(self.write(y, self.shortcut(x)))


class CifarResNet(nn.Module):
    family = "cifar"

    def __init__(self, depth: int, num_classes: int = 10, spec: ChannelSpec = DENSE):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        blocks = (depth - 2) // 6
        self.depth = depth
        streams = [spec.stream(f"layer{i + 1}", w) for i, w in enumerate(STAGE_WIDTHS)]
        stem = spec.conv("conv1", STAGE_WIDTHS[0])
        self.conv1, self.bn1 = conv_bn(3, stem, 3)
        self.relu = nn.ReLU(inplace=True)
        stages = []
        for s, full in enumerate(STAGE_WIDTHS):
            layer = []
            for b in range(blocks):
                name = f"layer{s + 1}.{b}"
                first_of_stage = b == 0 and s > 0
                if s == 0 and b == 0:
                    # The stem's output starts the first stream. layer1.0.conv1 reads the stem's
                    # kept channels directly (the others are exactly zero), and the shortcut
                    # places them into the full-width stream.
                    stream_in = stem
                    shortcut = StreamStart(stem, streams[0])
                elif first_of_stage:
                    stream_in = streams[s - 1]
                    shortcut = OptionAShortcut(stream_in, streams[s], STAGE_WIDTHS[s - 1], full)
                else:
                    stream_in, shortcut = streams[s], None
                layer.append(BasicBlock(name, stream_in, streams[s], full, 2 if first_of_stage else 1, shortcut, spec))
            stages.append(nn.Sequential(*layer))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(streams[-1], num_classes)
        init_resnet_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))
