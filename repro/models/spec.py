"""The channel spec: how many channels each prunable conv and each residual stream keeps.

It is the one currency between SFP, SNF, the compact-model builder and the FLOPs counter.

* ``convs``   maps a prunable conv's module name (``"layer1.0.conv1"``) to its kept output
  filters. A conv missing from the map keeps all of them.
* ``streams`` maps a residual stream (one per stage: ``"layer1"`` .. ``"layer4"``) to the
  number of channels the stream physically carries. Missing means full width, which is what
  SFP's compact models use: a block's pruned output conv writes its kept channels into the
  full-width stream by index (an exact scatter-add). SNF can narrow a stream when every
  writer of it keeps the same channels.

A spec says nothing about *which* filters are kept; the compact builder stores those as index
buffers inside the model, so a compact model saves and loads as a plain state dict + its spec.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Mapping


class SpecError(ValueError):
    """A channel spec that does not fit the architecture it is applied to."""


@dataclass(frozen=True)
class ChannelSpec:
    convs: Mapping[str, int] = field(default_factory=dict)
    streams: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self):
        # Freeze into plain sorted dicts so equal specs compare and serialise identically.
        object.__setattr__(self, "convs", dict(sorted((str(k), int(v)) for k, v in self.convs.items())))
        object.__setattr__(self, "streams", dict(sorted((str(k), int(v)) for k, v in self.streams.items())))
        for where, table in (("conv", self.convs), ("stream", self.streams)):
            for name, kept in table.items():
                if kept < 1:
                    raise SpecError(f"{where} '{name}' would keep {kept} channels; at least 1 is needed")

    def conv(self, name: str, full: int) -> int:
        kept = self.convs.get(name, full)
        if kept > full:
            raise SpecError(f"conv '{name}' keeps {kept} filters but has only {full}")
        return kept

    def stream(self, name: str, full: int) -> int:
        width = self.streams.get(name, full)
        if width > full:
            raise SpecError(f"stream '{name}' is {width} channels wide but the stage has only {full}")
        return width

    def to_json(self) -> dict:
        return {"convs": dict(self.convs), "streams": dict(self.streams)}

    @classmethod
    def from_json(cls, data: Mapping) -> "ChannelSpec":
        unknown = set(data) - {"convs", "streams"}
        if unknown:
            raise SpecError(f"unknown keys in channel spec: {sorted(unknown)}")
        return cls(convs=data.get("convs", {}), streams=data.get("streams", {}))

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)


DENSE = ChannelSpec()


def kept_filters(n: int, prune: float) -> int:
    """Filters SFP keeps in a layer of ``n`` when pruning the fraction ``prune``.

    ``int(n * prune)`` filters are zeroed (the official code's floor); e.g. 16 -> 12 at 0.3.
    """
    if not 0.0 <= prune < 1.0:
        raise SpecError(f"prune rate must be in [0, 1), got {prune}")
    return n - int(n * prune)
