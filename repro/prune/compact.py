"""Compact models: physically remove pruned filters, exactly.

``build_compact(model, arch, kept)`` takes a (hard-pruned or not) dense model and the kept filter
indices of its prunable convs and returns an ordinary ``nn.Module`` from
``build_model(arch, spec=...)`` that computes exactly what the hard-pruned model computes
(``hard.py``'s rule makes every pruned channel exactly 0, so dropping it changes nothing):

* a pruned conv keeps its kept output rows, its BN keeps the same entries, and the convs reading
  it keep only the matching input columns;
* residual streams stay full width by default: a block-output conv that keeps fewer channels than
  its stream adds them at their indices (``StreamWrite``), the stem / option-A shortcut places
  theirs with ``StreamStart``. This matches the integer FLOPs count of ``repro.flops``;
* ``narrow_streams=True`` (for searched specs, e.g. SNF) also drops every stream channel that is
  provably always 0: written by no kept filter of any writer and by no starter. Streams started by
  a projection shortcut never narrow (the projection is not pruned and writes every channel).
  Its conv MACs can then be below the full-width count.

The compact model carries ``.arch`` and ``.spec`` and saves as a plain state dict plus its spec
(``save_compact`` / ``load_compact``); the kept indices live in the stream index buffers.
"""
from __future__ import annotations

import os
from typing import Mapping

import torch
from torch import nn

from ..models import arch_info, build_model
from ..models.graph import prunable_convs, streams
from ..models.spec import ChannelSpec
from ..io import atomic_torch_save
from .hard import check_kept
from .sfp import MaskError, unwrap

FORMAT = "prunerepro-compact-v1"


def _positions(subset: torch.Tensor, within: torch.Tensor) -> torch.Tensor:
    """Where each element of ``subset`` sits in the sorted ``within`` (all must be present)."""
    pos = torch.searchsorted(within, subset)
    if bool((pos >= within.numel()).any()) or not torch.equal(within[pos.clamp(max=within.numel() - 1)], subset):
        raise AssertionError("a kept channel is missing from its stream")  # a bug, not user input
    return pos


def _stream_channels(arch: str, kept: dict[str, torch.Tensor], narrow: bool) -> dict[str, torch.Tensor]:
    """Full-coordinate channels each residual stream physically carries in the compact model."""
    live: dict[str, torch.Tensor] = {}
    prev = None
    for s in streams(arch):
        full = torch.arange(s.width)
        if not narrow or s.starter == "projection":
            live[s.name] = full
        else:
            used = torch.zeros(s.width, dtype=torch.bool)
            for w in s.writers:  # includes the stem when it starts the stream
                used[kept[w]] = True
            if s.starter == "pad":  # option A: the previous stream's channels, centred
                used[live[prev.name] + (s.width - prev.width) // 2] = True
            live[s.name] = used.nonzero().flatten()
        prev = s
    return live


def _wiring(arch: str, kept: dict[str, torch.Tensor], live: dict[str, torch.Tensor]):
    """(rows, cols) in full coordinates for every conv / BN / fc of the model; None = all."""
    layers = {c.name: c for c in prunable_convs(arch)}
    stage_names = [s.name for s in streams(arch)]

    def block_input(stage: str, block: int):
        s = stage_names.index(stage)
        if block > 0:
            return live[stage]
        if s > 0:
            return live[stage_names[s - 1]]
        return kept["conv1"]  # layer1.0 reads the stem's kept channels directly (graph.py)

    rows, cols = {}, {}
    for layer in layers.values():
        rows[layer.name] = rows[layer.bn] = kept[layer.name]
        if layer.block is None:
            cols[layer.name] = None
        else:
            stage, block = layer.block.split(".")
            k = int(layer.name[-1])
            cols[layer.name] = block_input(stage, int(block)) if k == 1 else kept[f"{layer.block}.conv{k - 1}"]
            if k == 1:
                # The projection shortcut (ImageNet) reads the same input; it is never pruned but
                # its stream may be narrowed (never, in practice: see _stream_channels).
                cols[f"{layer.block}.downsample.0"] = cols[layer.name]
                rows[f"{layer.block}.downsample.0"] = rows[f"{layer.block}.downsample.1"] = live[stage]
    cols["fc"] = live[stage_names[-1]]
    return rows, cols


def _take(t: torch.Tensor, rows, cols) -> torch.Tensor:
    if rows is not None:
        t = t.index_select(0, rows.to(t.device))
    if cols is not None and t.dim() > 1:
        t = t.index_select(1, cols.to(t.device))
    return t


@torch.no_grad()
def build_compact(model: nn.Module, arch: str, kept_indices: Mapping[str, torch.Tensor], *,
                  narrow_streams: bool = False) -> nn.Module:
    """The compact twin of ``model`` (see the module docstring); ``model`` is not modified.

    Exact when ``model`` was hard-pruned with the same ``kept_indices`` (``hard.hard_prune``);
    on a merely masked model the BN(0) constants of pruned channels are dropped.
    """
    model = unwrap(model)
    kept = check_kept(arch, kept_indices)
    live = _stream_channels(arch, kept, narrow_streams)
    full_width = {s.name: s.width for s in streams(arch)}
    spec = ChannelSpec(
        convs={c.name: kept[c.name].numel() for c in prunable_convs(arch) if kept[c.name].numel() < c.out_channels},
        streams={name: ch.numel() for name, ch in live.items() if ch.numel() < full_width[name]})
    src = dict(model.named_modules())
    if not isinstance(src.get("fc"), nn.Linear):
        raise MaskError(f"model has no 'fc' head; is it a dense {arch}?")
    compact = build_model(arch, num_classes=src["fc"].out_features, spec=spec).to(
        device=src["fc"].weight.device, dtype=src["fc"].weight.dtype)
    rows, cols = _wiring(arch, kept, live)

    for name, dst in compact.named_modules():
        if not isinstance(dst, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
            continue
        s = src.get(name)
        if type(s) is not type(dst):
            raise MaskError(f"model does not look like a dense {arch}: no {type(dst).__name__} '{name}'")
        r, c = rows.get(name), cols.get(name)
        for pname, tensor in list(dst.named_parameters(recurse=False)) + list(dst.named_buffers(recurse=False)):
            value = getattr(s, pname)
            if pname == "num_batches_tracked":
                tensor.copy_(value)
            elif isinstance(dst, nn.Linear):
                tensor.copy_(_take(value, None, c) if pname == "weight" else value)
            else:
                tensor.copy_(_take(value, r, c))

    # Stream placements, in the compact stream's own coordinates.
    for s in streams(arch):
        for writer in s.writers:
            if writer == "conv1":  # layer1.0's identity path places the stem output in the stream
                first = compact.get_submodule(f"{s.name}.0")
                place = first.place if isinstance(getattr(first, "place", None), nn.Module) else first.shortcut
                place.set_index(_positions(kept["conv1"], live[s.name]))
            else:
                block = compact.get_submodule(writer.rsplit(".", 1)[0])
                block.write.index.copy_(_positions(kept[writer], live[s.name]))
        if s.starter == "pad":
            prev = streams(arch)[[t.name for t in streams(arch)].index(s.name) - 1]
            placed = live[prev.name] + (s.width - prev.width) // 2
            compact.get_submodule(f"{s.name}.0.shortcut.place").set_index(_positions(placed, live[s.name]))
    compact.spec = spec
    compact.arch = arch
    return compact.train(model.training)


def align_kept(arch: str, kept_indices: Mapping[str, torch.Tensor], multiple: int = 8) -> dict[str, torch.Tensor]:
    """Kept indices grown to a multiple of ``multiple`` per conv by adding pruned filters back.

    An inference-layout option, not a different pruning: on a HARD-PRUNED model the added filters
    are exactly-zero channels (zero weights, zero BN gamma/beta), so the compact model built from
    the result computes the same function with a few more MACs. CPU conv kernels (oneDNN,
    channels_last) run widths that are not a multiple of 8 up to 2x slower than the next multiple
    of 8 (measured in repro/bench/latency.py), which costs more than the added MACs. The lowest-
    index pruned filters are added; dense widths (all multiples of 8) are unchanged.
    """
    if multiple < 1:
        raise ValueError(f"alignment must be >= 1, got {multiple}")
    kept = check_kept(arch, kept_indices)
    out = {}
    for layer in prunable_convs(arch):
        idx = kept[layer.name]
        target = min(layer.out_channels, -(-idx.numel() // multiple) * multiple)
        if target > idx.numel():
            free = torch.ones(layer.out_channels, dtype=torch.bool)
            free[idx] = False
            idx = torch.cat([idx, free.nonzero().flatten()[: target - idx.numel()]]).sort().values
        out[layer.name] = idx
    return out


def save_compact(path: str | os.PathLike, model: nn.Module) -> None:
    """Write ``{format, arch, num_classes, spec, state_dict}`` atomically (temp file, then rename)."""
    model = unwrap(model)
    if not hasattr(model, "spec") or not hasattr(model, "arch"):
        raise MaskError("save_compact needs a model from build_compact / load_compact (.spec and .arch)")
    payload = {"format": FORMAT, "arch": model.arch, "num_classes": model.fc.out_features,
               "spec": model.spec.to_json(),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    atomic_torch_save(path, payload)


def load_compact(path: str | os.PathLike, map_location="cpu") -> nn.Module:
    """Rebuild the skeleton from arch + spec and load the state dict strictly (eval mode)."""
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # a truncated or foreign file: say so in one line
        raise MaskError(f"{path} is not a readable compact-model file ({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise MaskError(f"{path} is not a compact-model file (format {FORMAT})")
    arch = payload["arch"]
    arch_info(arch)
    spec = ChannelSpec.from_json(payload["spec"])
    model = build_model(arch, num_classes=payload["num_classes"], spec=spec)
    model.load_state_dict(payload["state_dict"], strict=True)
    model.spec = spec
    return model.eval()
