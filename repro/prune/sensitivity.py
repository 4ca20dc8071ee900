"""Sensitivity curves for SNF: the held-out loss rise when one layer alone is cut.

Part of "SNF, abstract-level reimplementation" (not the authors' code; docs/papers.md).

For every prunable conv of a trained dense model and every kept count ``k`` of a grid, the
conv's ``k`` best filters by the criterion (L2 by default) are kept and the others cut by the
hard-prune rule (conv filter AND the following BN's gamma/beta zeroed, so the channel is exactly
0). The curve value is ``loss(cut) - loss(dense)`` (mean cross-entropy over the held-out set).

Why it is cheap enough for a ResNet-110 sweep on a CPU:
* Nothing is rebuilt or copied per point: the cut is a channel mask multiplied onto the output of
  the conv's BatchNorm (a forward hook). That equals the hard-prune rule exactly, because a
  zeroed filter with zeroed BN affine outputs exactly 0 in eval mode.
* Only the part of the network at and after the cut is re-run: the input of every residual block
  is computed once per held-out batch and carried forward block by block (one activation per
  batch in memory, never one per block).
* All grid points of one layer run batched: the block input is repeated G times along the
  batch dimension and each copy gets its own mask, so the rest of the network runs on a G x B
  batch, chunked to ``max_batch`` images. On a CPU the chunk is small (64 images): a ResNet's
  activations then stay in the cache, and a forward pass runs about twice as many images per
  second as with 1,024-image chunks (measured with one thread); on an accelerator, large chunks.
* Results are cached on disk, keyed by (arch, weights hash, held-out data hash, grid, criterion,
  code version): a rerun is a file read.

BatchNorm, ``bn="eval"`` (the default): the model runs in eval mode with its trained running
statistics and is NOT recalibrated after a cut. The hard-prune rule already makes a cut channel
exactly 0, so the cut layer itself needs no new statistics; the shift the cut causes downstream is
part of the damage the curve measures.

``bn="batch"``: every BatchNorm normalises with the statistics of the held-out batch it sees,
computed separately for each grid point's copy (a train-mode BN per copy, running statistics
untouched), for the dense reference too. This is BN re-estimation after the cut on the held-out
batch itself: the downstream shift a cut causes is removed, as fine-tuning's first steps remove
it, and the curve measures what is left. Each held-out batch then has to stay whole within a
chunk (its statistics are over the batch), so chunks hold whole batches of one or more copies.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..models.graph import prunable_convs
from ..io import atomic_write_json, weights_digest
from .criteria import get_criterion
from .sfp import prunable_modules, unwrap

LABEL = "SNF, abstract-level reimplementation"
CACHE_VERSION = 3  # 2: weights keyed by repro.io.weights_digest; 3: the BN mode in the key
BN_MODES = {"eval": "none (eval-mode BN with the trained running statistics)",
            "batch": "per cut: BN statistics of each held-out batch, per grid point (train-mode BN per copy)"}


def default_cache_dir() -> Path:
    """``$PRUNEREPRO_CACHE/snf``, else ``~/.cache/prunerepro/snf``."""
    root = os.environ.get("PRUNEREPRO_CACHE") or Path.home() / ".cache" / "prunerepro"
    return Path(root) / "snf"


@dataclass
class Sensitivity:
    """Curves ``rise[layer][kept]`` (loss rise) and ``top1[layer][kept]`` (held-out accuracy, %)."""
    arch: str
    criterion: str
    base_loss: float
    base_top1: float
    num_images: int
    rise: dict[str, dict[int, float]]
    top1: dict[str, dict[int, float]]
    key: str = ""
    wall_s: float = 0.0
    cached: bool = False
    bn_recalibration: str = BN_MODES["eval"]
    label: str = LABEL

    def to_json(self) -> dict:
        d = asdict(self)
        d["rise"] = {n: {str(k): v for k, v in c.items()} for n, c in self.rise.items()}
        d["top1"] = {n: {str(k): v for k, v in c.items()} for n, c in self.top1.items()}
        return d

    @classmethod
    def from_json(cls, d: Mapping) -> "Sensitivity":
        d = dict(d)
        d["rise"] = {n: {int(k): float(v) for k, v in c.items()} for n, c in d["rise"].items()}
        d["top1"] = {n: {int(k): float(v) for k, v in c.items()} for n, c in d["top1"].items()}
        return cls(**d)


def data_hash(batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> str:
    h = hashlib.sha256()
    for x, y in batches:
        h.update(str(tuple(x.shape)).encode())
        h.update(x.detach().cpu().float().contiguous().numpy().tobytes())
        h.update(y.detach().cpu().long().contiguous().numpy().tobytes())
    return h.hexdigest()


def _segments(model: nn.Module) -> list[tuple[str, Callable]]:
    """The forward pass as a chain: stem, every residual block in order, head.

    Mirrors ``CifarResNet.forward`` / ``ImageNetResNet.forward``; ``measure`` checks on the first
    batch that the chain reproduces ``model(x)``, so a drift in the models cannot go unnoticed.
    """
    def stem(x):
        x = model.relu(model.bn1(model.conv1(x)))
        return model.maxpool(x) if hasattr(model, "maxpool") else x

    segs: list[tuple[str, Callable]] = [("stem", stem)]
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        if hasattr(model, stage):
            for i, block in enumerate(getattr(model, stage)):
                segs.append((f"{stage}.{i}", block))
    segs.append(("head", lambda x: model.fc(torch.flatten(model.avgpool(x), 1))))
    return segs


class _BatchStats:
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


def default_max_batch(device: torch.device) -> int:
    """Images per forward pass: small on a CPU (cache-resident activations), large elsewhere."""
    return 64 if device.type == "cpu" else 1024


def _run(segs, start: int, x: torch.Tensor) -> torch.Tensor:
    for _, f in segs[start:]:
        x = f(x)
    return x


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


@torch.no_grad()
def measure(model: nn.Module, arch: str, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
            counts: Mapping[str, Sequence[int]], *, criterion: str = "l2",
            cache_dir: str | os.PathLike | None = None, use_cache: bool = True,
            max_batch: int | None = None, progress: bool | None = None, bn: str = "eval") -> Sensitivity:
    """Sensitivity curves of the dense ``model`` (see the module docstring).

    ``batches``: held-out ``(images, labels)`` pairs, materialised once in memory on the model's
    device. ``counts``: for each prunable conv, the kept counts to measure (the full width is
    implied and has rise 0). ``cache_dir``: default ``default_cache_dir()``; ``use_cache=False``
    neither reads nor writes it. ``progress``: tqdm bar (None = only on a terminal). ``max_batch``:
    images per forward pass (default ``default_max_batch``). ``bn``: ``"eval"`` or ``"batch"`` (see
    the module docstring). A model whose pruned filters are already zero (hard-pruned) can be
    measured too: zero filters rank last, so counts below its kept counts cut among the kept.
    """
    if bn not in BN_MODES:
        raise ValueError(f"bn must be one of {sorted(BN_MODES)}, got {bn!r}")
    model = unwrap(model)
    convs = prunable_modules(model, arch)  # MaskError unless it is a dense `arch`
    layers = prunable_convs(arch)
    score = get_criterion(criterion)
    unknown = set(counts) - set(convs)
    if unknown:
        raise ValueError(f"counts name convs that {arch} does not prune: {sorted(unknown)[:3]}")
    grid = {}
    for layer in layers:
        ks = sorted({int(k) for k in counts.get(layer.name, ())} - {layer.out_channels})
        if ks and not (1 <= ks[0] and ks[-1] < layer.out_channels):
            raise ValueError(f"kept counts for '{layer.name}' must lie in 1..{layer.out_channels}, got {ks}")
        grid[layer.name] = ks

    device = next(model.parameters()).device
    held = [(x.to(device), y.to(device)) for x, y in batches]
    if not held:
        raise ValueError("sensitivity needs at least one held-out batch")
    n_images = sum(int(y.numel()) for _, y in held)

    key = hashlib.sha256(json.dumps({
        "v": CACHE_VERSION, "arch": arch, "criterion": criterion, "bn": bn, "weights": weights_digest(unwrap(model), 64),
        "data": data_hash(held), "grid": grid}, sort_keys=True).encode()).hexdigest()[:32]
    path = Path(cache_dir or default_cache_dir()) / f"{arch}-{key}.json"
    if use_cache and path.exists():
        try:
            sens = Sensitivity.from_json(json.loads(path.read_text()))
            sens.cached = True
            return sens
        except (ValueError, KeyError, TypeError):
            pass  # an unreadable cache entry is recomputed and overwritten

    start = time.perf_counter()
    max_batch = max_batch or default_max_batch(device)
    was_training = model.training
    model.eval()
    stats = _BatchStats(model) if bn == "batch" else None
    try:
        segs = _segments(model)
        x0, _ = held[0]
        ref = model(x0)
        # Loose on purpose: a structural drift changes the logits wholesale, while GPU kernels
        # (TF32, algorithm choice) may legitimately differ in the last bits between two calls.
        if not torch.allclose(_run(segs, 0, x0), ref, rtol=1e-2, atol=1e-2 * float(ref.abs().max()) + 1e-5):
            raise AssertionError("the block chain does not reproduce model.forward; update _segments")

        def loss_top1(logits, y):
            return (F.cross_entropy(logits, y, reduction="sum").item(),
                    (logits.argmax(1) == y).sum().item())

        base_loss = base_hit = 0.0
        for x, y in held:
            l, h = loss_top1(model(x), y)
            base_loss += l
            base_hit += h
        base_loss /= n_images
        base_top1 = 100.0 * base_hit / n_images

        rise: dict[str, dict[int, float]] = {}
        top1: dict[str, dict[int, float]] = {}
        acts = [x for x, _ in held]          # input of the current segment, per held-out batch
        bar = tqdm(total=sum(len(v) for v in grid.values()), desc=f"SNF sensitivity {arch}",
                   unit="point", disable=(not progress) if progress is not None else None)
        for si, (seg_name, seg) in enumerate(segs[:-1]):
            here = [l for l in layers if (l.block or "stem") == seg_name and grid[l.name]]
            for layer in here:
                ks = grid[layer.name]
                # select_kept's rule (stable descending sort, ties to the lower index): the k
                # kept filters are the first k of this ranking, for every k of the grid.
                ranking = torch.sort(score(convs[layer.name].weight).float().cpu(), descending=True,
                                     stable=True).indices
                loss_sum = torch.zeros(len(ks), dtype=torch.float64)
                hit_sum = torch.zeros(len(ks), dtype=torch.float64)
                norm = model.get_submodule(layer.bn)
                for (_, y), a in zip(held, acts):
                    for a_i, y_i, items in chunks(a, y, len(ks), stats is not None, max_batch):
                        n, c0 = int(a_i.shape[0]), items.start
                        chunk = ks[items.start:items.stop]
                        g = len(chunk)
                        masks = torch.zeros(g, layer.out_channels, device=device)
                        for j, k in enumerate(chunk):
                            masks[j, ranking[:k].to(device)] = 1.0
                        m = masks.repeat_interleave(n, dim=0)[:, :, None, None]
                        handle = norm.register_forward_hook(lambda _m, _i, out, m=m: out * m)
                        if stats is not None:
                            stats.copies = g
                        try:
                            logits = _run(segs, si, a_i.repeat(g, *([1] * (a_i.dim() - 1))))
                        finally:
                            handle.remove()
                            if stats is not None:
                                stats.copies = 1
                        yy = y_i.repeat(g)
                        ce = F.cross_entropy(logits, yy, reduction="none").view(g, n)
                        hit = (logits.argmax(1) == yy).view(g, n)
                        loss_sum[c0:c0 + g] += ce.sum(1).double().cpu()
                        hit_sum[c0:c0 + g] += hit.sum(1).double().cpu()
                bar.update(len(ks))
                rise[layer.name] = {k: float(loss_sum[j] / n_images - base_loss) for j, k in enumerate(ks)}
                top1[layer.name] = {k: float(100.0 * hit_sum[j] / n_images) for j, k in enumerate(ks)}
            acts = [seg(a) for a in acts]
        bar.close()
    finally:
        if stats is not None:
            stats.remove()
        model.train(was_training)

    sens = Sensitivity(arch, criterion, base_loss, base_top1, n_images, rise, top1, key,
                       time.perf_counter() - start, False, BN_MODES[bn])
    if use_cache:
        atomic_write_json(path, sens.to_json())
    return sens
