"""The way back from a compact model: the hard-pruned dense model it was cut from, and its kept
indices, so that what works on (dense, kept) - ``compact.align_kept``, a different cut - works on
a delivered model.pt too.

Filters whose position is recorded in the compact model (block outputs and a stem that write into
a residual stream: the ``StreamWrite`` / ``StreamStart`` index buffers) go back to that position;
any other kept filter feeds only the convs right after it, so its position inside the dense layer
is free and the first ``k`` are used. The pruned filters follow ``hard.py``'s rule (zero conv
weights, zero BN gamma and beta), so ``build_compact(dense, arch, kept)`` is the same function as
the compact model again. Compact models with narrowed streams (``narrow_streams=True``) are not
expanded: which dense stream channels they dropped is not recorded in them.
"""
from __future__ import annotations

import torch
from torch import nn

from ..models import build_model
from ..models.graph import prunable_convs, streams
from .compact import _wiring, align_kept, build_compact
from .hard import check_kept
from .sfp import MaskError, unwrap


def _placement(compact: nn.Module, stream: str, writer: str) -> torch.Tensor:
    """The stream positions ``writer``'s kept filters land at (build_compact's placement, read back)."""
    if writer == "conv1":
        first = compact.get_submodule(f"{stream}.0")
        place = first.place if isinstance(getattr(first, "place", None), nn.Module) else first.shortcut
        return place.index.detach().cpu().clone()
    return compact.get_submodule(writer.rsplit(".", 1)[0]).write.index.detach().cpu().clone()


def _kept(compact: nn.Module, arch: str) -> dict[str, torch.Tensor]:
    placed = {w: _placement(compact, s.name, w) for s in streams(arch) for w in s.writers}
    return check_kept(arch, {c.name: placed.get(c.name, torch.arange(compact.spec.conv(c.name, c.out_channels)))
                             for c in prunable_convs(arch)})


def _put(dst: torch.Tensor, value: torch.Tensor, rows, cols) -> None:
    """dst[rows][:, cols] = value (None = every row / column)."""
    r = rows if rows is not None else torch.arange(dst.shape[0])
    if dst.dim() == 1:
        dst[r] = value
        return
    c = cols if cols is not None else torch.arange(dst.shape[1])
    dst[r[:, None], c[None, :]] = value


@torch.no_grad()
def expand_compact(compact: nn.Module, arch: str) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """(the hard-pruned dense model, its kept indices) of a compact model with full-width streams
    (eval mode, on the CPU); ``build_compact`` of the pair computes what ``compact`` computes."""
    compact = unwrap(compact)
    if compact.spec.streams:
        raise MaskError(f"a compact model with narrowed streams ({sorted(compact.spec.streams)}) cannot be "
                        "expanded: the dense positions of its stream channels are not recorded")
    kept = _kept(compact, arch)
    rows, cols = _wiring(arch, kept, {s.name: torch.arange(s.width) for s in streams(arch)})
    dense = build_model(arch, num_classes=compact.fc.out_features).eval()
    src = dict(compact.named_modules())
    for name, dst in dense.named_modules():
        if not isinstance(dst, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
            continue
        for pname, t in list(dst.named_parameters(recurse=False)) + list(dst.named_buffers(recurse=False)):
            value = getattr(src[name], pname).detach().cpu()
            if pname == "num_batches_tracked":
                t.copy_(value)
                continue
            t.fill_(1.0 if pname == "running_var" else 0.0)  # pruned: zero filter, BN gamma = beta = 0
            _put(t, value, rows.get(name), None if isinstance(dst, nn.Linear) else cols.get(name))
    return dense, kept


def expand_aligned(compact: nn.Module, arch: str, multiple: int) -> nn.Module:
    """The compact model with every conv grown to a multiple of ``multiple`` filters: its dense
    twin (``expand_compact``) rebuilt with the kept filters plus exactly-zero ones
    (``align_kept``), so it computes the same function; eval mode. Raises MaskError as
    ``expand_compact`` does."""
    hard, kept = expand_compact(compact, arch)
    return build_compact(hard, arch, align_kept(arch, kept, multiple)).eval()
