"""Sensitivity curves for SNF: the held-out loss rise when one layer alone is cut.

Part of "SNF, abstract-level reimplementation" (not the authors' code; docs/papers.md).

For every prunable conv of a trained dense model and every kept count ``k`` of a grid, the
conv's ``k`` best filters by the criterion (L2 by default) are kept and the others cut by the
hard-prune rule (conv filter AND the following BN's gamma/beta zeroed, so the channel is exactly
0). The curve value is ``loss(cut) - loss(dense)`` (mean cross-entropy over the held-out set).

Why it is cheap enough for a ResNet-110 sweep on a CPU (the forward is ``cut_forward``'s, shared
with ``joint.measure_cuts``):
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
from .cut_forward import (BN_MODES, Chain, check_bn_mode, check_segments, copy_sums, count_images, cut_chain,
                          ranking)
from .sfp import prunable_modules, unwrap

LABEL = "SNF, abstract-level reimplementation"
CACHE_VERSION = 3  # 2: weights keyed by repro.io.weights_digest; 3: the BN mode in the key


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


def _grid(arch: str, convs: Mapping[str, nn.Module], counts: Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
    """The kept counts to measure per prunable conv, sorted, without the full width (rise 0)."""
    unknown = set(counts) - set(convs)
    if unknown:
        raise ValueError(f"counts name convs that {arch} does not prune: {sorted(unknown)[:3]}")
    grid = {}
    for layer in prunable_convs(arch):
        ks = sorted({int(k) for k in counts.get(layer.name, ())} - {layer.out_channels})
        if ks and not (1 <= ks[0] and ks[-1] < layer.out_channels):
            raise ValueError(f"kept counts for '{layer.name}' must lie in 1..{layer.out_channels}, got {ks}")
        grid[layer.name] = ks
    return grid


def _cache_key(model: nn.Module, arch: str, criterion: str, bn: str, held: Sequence, grid: Mapping) -> str:
    return hashlib.sha256(json.dumps({
        "v": CACHE_VERSION, "arch": arch, "criterion": criterion, "bn": bn, "weights": weights_digest(model, 64),
        "data": data_hash(held), "grid": grid}, sort_keys=True).encode()).hexdigest()[:32]


def _read_cache(path: Path) -> Sensitivity | None:
    """The cached curves, or None when there are none (an unreadable entry is recomputed and overwritten)."""
    if not path.exists():
        return None
    try:
        sens = Sensitivity.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError):
        return None
    sens.cached = True
    return sens


def _dense_scores(model: nn.Module, held: Sequence, n_images: int) -> tuple[float, float]:
    """Held-out mean cross-entropy and top-1 (%) of the uncut model."""
    loss = hits = 0.0
    for x, y in held:
        logits = model(x)
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        hits += (logits.argmax(1) == y).sum().item()
    return loss / n_images, 100.0 * hits / n_images


def _layer_sums(chain: Chain, start: int, layer, ks: Sequence[int], order: torch.Tensor, held: Sequence,
                acts: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed held-out cross-entropy and hits of ``layer`` cut to each kept count of ``ks`` (its
    ``order``'s first k filters kept), from segment ``start`` whose inputs are ``acts``."""
    loss_sum = torch.zeros(len(ks), dtype=torch.float64)
    hit_sum = torch.zeros(len(ks), dtype=torch.float64)
    for (_, y), a in zip(held, acts):
        for a_i, y_i, items in chain.chunks(a, y, len(ks)):
            chunk = ks[items.start:items.stop]
            masks = torch.zeros(len(chunk), layer.out_channels, device=a.device)
            for j, k in enumerate(chunk):
                masks[j, order[:k].to(a.device)] = 1.0
            logits = chain.forward_copies(start, a_i, len(chunk), {layer.bn: masks})
            ce, hit = copy_sums(logits, y_i, len(chunk))
            loss_sum[items.start:items.start + len(chunk)] += ce
            hit_sum[items.start:items.start + len(chunk)] += hit
    return loss_sum, hit_sum


def _curves(chain: Chain, arch: str, convs: Mapping[str, nn.Module], grid: Mapping[str, list[int]], score: Callable,
            held: Sequence, base_loss: float, progress: bool | None) -> tuple[dict, dict]:
    """``rise`` and ``top1`` curves: each conv cut alone, the block inputs carried forward once."""
    n_images = count_images(held)
    layers = prunable_convs(arch)
    rise: dict[str, dict[int, float]] = {}
    top1: dict[str, dict[int, float]] = {}
    acts = [x for x, _ in held]          # input of the current segment, per held-out batch
    bar = tqdm(total=sum(len(v) for v in grid.values()), desc=f"SNF sensitivity {arch}",
               unit="point", disable=(not progress) if progress is not None else None)
    for si, (seg_name, seg) in enumerate(chain.segs[:-1]):
        for layer in [l for l in layers if (l.block or "stem") == seg_name and grid[l.name]]:
            ks = grid[layer.name]
            loss_sum, hit_sum = _layer_sums(chain, si, layer, ks, ranking(score, convs[layer.name].weight), held, acts)
            bar.update(len(ks))
            rise[layer.name] = {k: float(loss_sum[j] / n_images - base_loss) for j, k in enumerate(ks)}
            top1[layer.name] = {k: float(100.0 * hit_sum[j] / n_images) for j, k in enumerate(ks)}
        acts = [seg(a) for a in acts]
    bar.close()
    return rise, top1


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
    images per forward pass (default ``cut_forward.default_max_batch``). ``bn``: ``"eval"`` or
    ``"batch"`` (see the module docstring). A model whose pruned filters are already zero
    (hard-pruned) can be measured too: zero filters rank last, so counts below its kept counts cut
    among the kept.
    """
    check_bn_mode(bn)
    model = unwrap(model)
    convs = prunable_modules(model, arch)  # MaskError unless it is a dense `arch`
    score = get_criterion(criterion)
    grid = _grid(arch, convs, counts)
    device = next(model.parameters()).device
    held = [(x.to(device), y.to(device)) for x, y in batches]
    if not held:
        raise ValueError("sensitivity needs at least one held-out batch")
    key = _cache_key(model, arch, criterion, bn, held, grid)
    path = Path(cache_dir or default_cache_dir()) / f"{arch}-{key}.json"
    if use_cache and (sens := _read_cache(path)) is not None:
        return sens
    start = time.perf_counter()
    n_images = count_images(held)
    with cut_chain(model, bn, max_batch) as chain:
        check_segments(model, chain.segs, held[0][0])
        base_loss, base_top1 = _dense_scores(model, held, n_images)
        rise, top1 = _curves(chain, arch, convs, grid, score, held, base_loss, progress)
    sens = Sensitivity(arch, criterion, base_loss, base_top1, n_images, rise, top1, key,
                       time.perf_counter() - start, False, BN_MODES[bn])
    if use_cache:
        atomic_write_json(path, sens.to_json())
    return sens
