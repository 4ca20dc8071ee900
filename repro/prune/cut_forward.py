"""The one masked, batched forward that SNF's held-out measurements share (``sensitivity.measure``:
one conv cut at a time; ``joint.measure_cuts``: several at once).

Part of "SNF, abstract-level reimplementation" (not the authors' code; docs/papers.md).

* The forward pass is a chain (``segments``): stem, every residual block in order, head. The input
  of a block is computed once per held-out batch and carried forward; a cut re-runs only the chain
  from the first block it touches (``run_from``).
* A cut is a channel mask multiplied onto the output of a conv's BatchNorm (a forward hook). That
  equals the hard-prune rule exactly: a zeroed filter with zeroed BN affine outputs exactly 0 in
  eval mode. ``Chain.forward_copies`` runs G cuts batched: the block input repeated G times along
  the batch dimension, each copy with its own masks.
* ``bn="batch"`` (``BN_MODES``): every BatchNorm normalises each copy with that copy's own batch
  statistics (``BatchStats``), so a held-out batch must stay whole within a chunk (``chunks``).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

BN_MODES = {"eval": "none (eval-mode BN with the trained running statistics)",
            "batch": "per cut: BN statistics of each held-out batch, per grid point (train-mode BN per copy)"}

Segments = list[tuple[str, Callable]]


def check_bn_mode(bn: str) -> None:
    if bn not in BN_MODES:
        raise ValueError(f"bn must be one of {sorted(BN_MODES)}, got {bn!r}")


def segments(model: nn.Module) -> Segments:
    """The forward pass as a chain: stem, every residual block in order, head.

    Mirrors ``CifarResNet.forward`` / ``ImageNetResNet.forward``; ``check_segments`` compares the
    two on a batch, so a drift in the models cannot go unnoticed.
    """
    def stem(x):
        x = model.relu(model.bn1(model.conv1(x)))
        return model.maxpool(x) if hasattr(model, "maxpool") else x

    segs: Segments = [("stem", stem)]
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        if hasattr(model, stage):
            for i, block in enumerate(getattr(model, stage)):
                segs.append((f"{stage}.{i}", block))
    segs.append(("head", lambda x: model.fc(torch.flatten(model.avgpool(x), 1))))
    return segs


def run_from(segs: Segments, start: int, x: torch.Tensor) -> torch.Tensor:
    """The chain from segment ``start`` (whose input ``x`` is) to the logits."""
    for _, f in segs[start:]:
        x = f(x)
    return x


def check_segments(model: nn.Module, segs: Segments, x: torch.Tensor) -> None:
    ref = model(x)
    # Loose on purpose: a structural drift changes the logits wholesale, while GPU kernels
    # (TF32, algorithm choice) may legitimately differ in the last bits between two calls.
    if not torch.allclose(run_from(segs, 0, x), ref, rtol=1e-2, atol=1e-2 * float(ref.abs().max()) + 1e-5):
        raise AssertionError("the block chain does not reproduce model.forward; update cut_forward.segments")


class BatchStats:
    """Forward hooks that make every BatchNorm normalise each of ``copies`` equal slices of its
    batch with that slice's own statistics (``bn="batch"``); the eval-mode output is discarded."""

    def __init__(self, model: nn.Module):
        self.copies = 1
        self.handles = [m.register_forward_hook(self._hook) for m in model.modules()
                        if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def _hook(self, bn, inputs, _out):
        x = inputs[0]
        g = x.view(self.copies, -1, *x.shape[1:])
        dims = (1, *range(3, g.dim()))
        var, mean = torch.var_mean(g, dim=dims, keepdim=True, correction=0)
        shape = (1, 1, -1) + (1,) * (g.dim() - 3)
        y = (g - mean) * torch.rsqrt(var + bn.eps) * bn.weight.view(shape) + bn.bias.view(shape)
        return y.view_as(x)

    def remove(self):
        for h in self.handles:
            h.remove()


def count_images(held: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> int:
    return sum(int(y.numel()) for _, y in held)


def default_max_batch(device: torch.device) -> int:
    """Images per forward pass: small on a CPU (cache-resident activations), large elsewhere."""
    return 64 if device.type == "cpu" else 1024


def chunks(a: torch.Tensor, y: torch.Tensor, n_items: int, whole_batch: bool, max_batch: int):
    """Split one held-out batch for batched grid points (or cuts): yields (images, labels, range of
    items) with as many items per image slice as fit in ``max_batch`` copies. Slices are the whole
    batch when BN statistics are taken over it (``whole_batch``), else at most ``max_batch`` images."""
    b = int(a.shape[0])
    size = b if whole_batch else min(b, max_batch)
    per_chunk = max(1, max_batch // size)
    for i0 in range(0, b, size):
        for c0 in range(0, n_items, per_chunk):
            yield a[i0:i0 + size], y[i0:i0 + size], range(c0, min(c0 + per_chunk, n_items))


def ranking(score: Callable, weight: torch.Tensor) -> torch.Tensor:
    """Filters best first by the criterion ``score``: select_kept's rule (stable descending sort,
    ties to the lower index), so the ``k`` kept filters are the first ``k``, for every ``k``."""
    return torch.sort(score(weight).float().cpu(), descending=True, stable=True).indices


@dataclass
class Chain:
    """A model in eval mode as its chain of segments, with how its cut copies are batched."""
    model: nn.Module
    segs: Segments
    stats: BatchStats | None   # BN per copy (``bn="batch"``), else None
    max_batch: int             # images per forward pass

    def chunks(self, a: torch.Tensor, y: torch.Tensor, n_items: int):
        """``chunks`` of one held-out batch for ``n_items`` copies, whole batches under ``bn="batch"``."""
        return chunks(a, y, n_items, self.stats is not None, self.max_batch)

    def forward_copies(self, start: int, a: torch.Tensor, copies: int,
                       masks: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Logits of ``copies`` copies of ``a`` (the input of segment ``start``) run batched, copy
        ``j`` with the output of each BatchNorm named in ``masks`` multiplied by ``masks[name][j]``."""
        n = int(a.shape[0])
        handles = []
        for name, mask in masks.items():
            m = mask.repeat_interleave(n, dim=0)[:, :, None, None]
            handles.append(self.model.get_submodule(name).register_forward_hook(lambda _m, _i, out, m=m: out * m))
        if self.stats is not None:
            self.stats.copies = copies
        try:
            return run_from(self.segs, start, a.repeat(copies, *([1] * (a.dim() - 1))))
        finally:
            for h in handles:
                h.remove()
            if self.stats is not None:
                self.stats.copies = 1


@contextmanager
def cut_chain(model: nn.Module, bn: str, max_batch: int | None) -> Iterator[Chain]:
    """``model`` (unwrapped, dense) in eval mode as a ``Chain``, with ``BatchStats`` when
    ``bn="batch"`` (the callers check ``bn`` first); its mode restored and the hooks removed afterwards."""
    was_training = model.training
    model.eval()
    stats = BatchStats(model) if bn == "batch" else None
    try:
        yield Chain(model, segments(model), stats, max_batch or default_max_batch(next(model.parameters()).device))
    finally:
        if stats is not None:
            stats.remove()
        model.train(was_training)


def copy_sums(logits: torch.Tensor, y: torch.Tensor, copies: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per copy: summed cross-entropy and number of correct top-1 predictions (float64, CPU)."""
    yy = y.repeat(copies)
    ce = F.cross_entropy(logits, yy, reduction="none").view(copies, -1)
    hit = (logits.argmax(1) == yy).view(copies, -1)
    return ce.sum(1).double().cpu(), hit.sum(1).double().cpu()
