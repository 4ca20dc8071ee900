"""Filter-importance criteria: one score per output filter, higher = more important.

Each criterion is a plain callable ``(weight, generator=None) -> Tensor[out]`` so a pruner, the SNF
sensitivity sweep or a test can apply it to any conv weight ``[out, in, kh, kw]``.
"""
from __future__ import annotations

from typing import Callable

import torch


class CriterionError(ValueError):
    """An unknown criterion name or an impossible selection."""


def l2_norm(weight: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """SFP's criterion: the L2 norm of each flattened filter."""
    return weight.detach().flatten(1).float().norm(p=2, dim=1)


def l1_norm(weight: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Li et al.'s criterion (a baseline): the L1 norm of each flattened filter."""
    return weight.detach().flatten(1).float().abs().sum(dim=1)


def random_scores(weight: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Baseline: i.i.d. uniform scores, reproducible through ``generator``.

    Drawn on the generator's device (CPU for the default generator) and moved to the weight's, so
    the same seed gives the same choice on CPU and GPU.
    """
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(weight.shape[0], generator=generator, device=device).to(weight.device)


CRITERIA: dict[str, Callable[..., torch.Tensor]] = {"l2": l2_norm, "l1": l1_norm, "random": random_scores}


def get_criterion(name: str) -> Callable[..., torch.Tensor]:
    try:
        return CRITERIA[name]
    except KeyError:
        raise CriterionError(f"unknown pruning criterion '{name}'; known: {', '.join(CRITERIA)}") from None


def select_kept(scores: torch.Tensor, kept: int) -> torch.Tensor:
    """Sorted indices of the ``kept`` highest scores (a CPU LongTensor).

    Ties are broken towards the lower index (stable sort), so a selection never depends on the
    sort kernel of a device: all-zero layers, e.g. right after masking, always give the same result.
    """
    if scores.dim() != 1:
        raise CriterionError(f"scores must be one value per filter, got shape {tuple(scores.shape)}")
    n = scores.numel()
    if not 1 <= kept <= n:
        raise CriterionError(f"cannot keep {kept} of {n} filters (need 1 <= kept <= {n})")
    order = torch.sort(scores.detach().float().cpu(), descending=True, stable=True).indices
    return order[:kept].sort().values
