"""Which convs are prunable, which BN follows each, and which channels are coupled.

This is the only place that knows the ResNets' wiring; the pruner, the compact builder, the
FLOPs counter and the SNF search all ask it.

Roles of a prunable conv:
  ``stem``   the first conv. Its kept channels feed layer1.0.conv1 (and layer1.0's projection
             with bottlenecks) directly. With CIFAR nets and basic-block ImageNet nets it also
             starts the first residual stream: layer1.0's shortcut module (``shortcut`` in CIFAR
             nets, ``place`` in ImageNet basic nets, a StreamStart) puts it there.
  ``inner``  a conv inside a block whose output goes only to the next conv of the same block.
  ``output`` a block's last conv: its output is added into the stage's residual stream.
A residual stream (one per stage) is written by its stage's ``output`` convs plus whatever
starts it (the stem, a projection shortcut, or CIFAR's zero-padding shortcut). Channels of a
stream are coupled: a stream channel can only be removed when every writer drops it.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from . import arch_info, build_model


@dataclass(frozen=True)
class PrunableConv:
    name: str                 # e.g. "layer1.0.conv2"
    bn: str                   # the BatchNorm right after it
    role: str                 # "stem" | "inner" | "output"
    out_channels: int         # dense width
    stream: str | None        # stage whose stream it writes ("layer1"), for stem (basic) / output
    consumers: tuple[str, ...]  # convs that read its output directly (empty for block outputs)
    block: str | None         # "layer1.0", or None for the stem


@dataclass(frozen=True)
class Stream:
    name: str                 # "layer1"
    width: int                # dense width
    writers: tuple[str, ...]  # prunable convs that write it (stem / outputs)
    starter: str              # "stem" | "projection" | "pad" | "stem-pad": what sets its initial content


@lru_cache(maxsize=None)
def _graph(arch: str) -> tuple[tuple[PrunableConv, ...], tuple[Stream, ...]]:
    info = arch_info(arch)
    model = build_model(arch)  # dense, only read for its structure
    convs: list[PrunableConv] = []
    streams: list[Stream] = []
    bottleneck = info.family == "imagenet" and model.block_type == "Bottleneck"
    stem_stream = None if bottleneck else "layer1"
    stem_consumers = ("layer1.0.conv1", "layer1.0.downsample.0") if bottleneck else ("layer1.0.conv1",)
    convs.append(PrunableConv("conv1", "bn1", "stem", model.conv1.out_channels, stem_stream, stem_consumers, None))
    stages = [n for n in ("layer1", "layer2", "layer3", "layer4") if hasattr(model, n)]
    for s, stage in enumerate(stages):
        writers = ["conv1"] if (s == 0 and not bottleneck) else []
        width = None
        for b, block in enumerate(getattr(model, stage)):
            prefix = f"{stage}.{b}"
            names = [n for n in ("conv1", "conv2", "conv3") if hasattr(block, n)]
            for i, n in enumerate(names):
                conv = getattr(block, n)
                last = i == len(names) - 1
                convs.append(PrunableConv(
                    f"{prefix}.{n}", f"{prefix}.bn{n[-1]}", "output" if last else "inner", conv.out_channels,
                    stage if last else None, () if last else (f"{prefix}.{names[i + 1]}",), prefix))
            writers.append(f"{prefix}.{names[-1]}")
            width = getattr(block, names[-1]).out_channels
        if s == 0:
            starter = "projection" if bottleneck else "stem"
        else:
            starter = "projection" if info.family == "imagenet" else "pad"
        streams.append(Stream(stage, width, tuple(writers), starter))
    return tuple(convs), tuple(streams)


def prunable_convs(arch: str) -> tuple[PrunableConv, ...]:
    """Every conv SFP prunes, in forward order (projection shortcuts are never among them)."""
    return _graph(arch)[0]


def streams(arch: str) -> tuple[Stream, ...]:
    return _graph(arch)[1]


def conv_by_name(arch: str) -> dict[str, PrunableConv]:
    return {c.name: c for c in prunable_convs(arch)}
