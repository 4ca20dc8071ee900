"""ImageNet ResNet-18/34/50/101 with torchvision's module names and state-dict keys.

The bottleneck carries its stride on the 3x3 conv (torchvision's "ResNet v1.5"), so torchvision's
pre-trained weights load unchanged into a dense model. SFP prunes every conv except the
projection shortcuts (``layerX.0.downsample.0``).
"""
from __future__ import annotations

import torch
from torch import nn

from .common import StreamStart, StreamWrite, conv_bn, init_resnet_
from .spec import DENSE, ChannelSpec

STAGE_WIDTHS = (64, 128, 256, 512)


class _Block(nn.Module):
    """What basic and bottleneck blocks share: the identity path and the write into the stream."""

    def _finish(self, stream_in, stream_out, stride, projection, out, place):
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(stream_in, stream_out, stride) if projection else None
        self.place = place  # basic nets' layer1.0: puts the narrow stem output into the stream
        self.write = StreamWrite(out, stream_out)

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            return self.downsample(x)
        if self.place is not None:
            return self.place(x)
        return x


class BasicBlock(_Block):
    expansion = 1

    def __init__(self, name, stream_in, stream_out, planes, stride, projection: bool, spec: ChannelSpec,
                 place: nn.Module | None = None):
        super().__init__()
        full_out = planes * self.expansion
        mid = spec.conv(f"{name}.conv1", planes)
        out = spec.conv(f"{name}.conv2", full_out)
        self.conv1, self.bn1 = conv_bn(stream_in, mid, 3, stride)
        self.conv2, self.bn2 = conv_bn(mid, out, 3)
        self._finish(stream_in, stream_out, stride, projection, out, place)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = self.shortcut(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(self.write(y, identity))


class Bottleneck(_Block):
    expansion = 4

    def __init__(self, name, stream_in, stream_out, planes, stride, projection: bool, spec: ChannelSpec,
                 place: nn.Module | None = None):
        super().__init__()
        full_out = planes * self.expansion
        mid1 = spec.conv(f"{name}.conv1", planes)
        mid2 = spec.conv(f"{name}.conv2", planes)
        out = spec.conv(f"{name}.conv3", full_out)
        self.conv1, self.bn1 = conv_bn(stream_in, mid1, 1)
        self.conv2, self.bn2 = conv_bn(mid1, mid2, 3, stride)
        self.conv3, self.bn3 = conv_bn(mid2, out, 1)
        self._finish(stream_in, stream_out, stride, projection, out, place)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = self.shortcut(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(self.write(y, identity))


def _projection(stream_in: int, stream_out: int, stride: int) -> nn.Module:
    conv = nn.Conv2d(stream_in, stream_out, 1, stride=stride, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(stream_out))


class ImageNetResNet(nn.Module):
    family = "imagenet"

    def __init__(self, block: type, layers: tuple[int, ...], num_classes: int = 1000, spec: ChannelSpec = DENSE):
        super().__init__()
        self.block_type = block.__name__
        stem = spec.conv("conv1", 64)
        self.conv1 = nn.Conv2d(3, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        streams = [spec.stream(f"layer{i + 1}", w * block.expansion) for i, w in enumerate(STAGE_WIDTHS)]
        # layer1.0 reads the stem's kept channels directly (the pruned ones are exactly zero).
        # With basic blocks the stem output also starts the first stream, so layer1.0's identity
        # path places it there (StreamStart); with bottlenecks layer1.0 has a projection instead.
        width = stem
        stages = []
        for s, (planes, n) in enumerate(zip(STAGE_WIDTHS, layers)):
            blocks = []
            for b in range(n):
                stride = 2 if (s > 0 and b == 0) else 1
                # torchvision's rule: a projection where the block changes the shape of the
                # dense stream (stride, or the bottleneck's 4x expansion at layer1.0).
                projection = b == 0 and (stride != 1 or block.expansion != 1)
                place = StreamStart(stem, streams[0]) if (s == 0 and b == 0 and not projection) else None
                blocks.append(block(f"layer{s + 1}.{b}", width, streams[s], planes, stride, projection, spec, place))
                width = streams[s]
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(streams[-1], num_classes)
        init_resnet_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))
