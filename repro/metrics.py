"""Top-k accuracy and exact, resumable running sums for one epoch."""
from __future__ import annotations

import torch

from repro import dist


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[torch.Tensor]:
    """Number of samples whose label is among the top-k logits, for each k (k capped at #classes)."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hit = top.eq(target.view(-1, 1))
    return [hit[:, :min(k, kmax)].any(dim=1).sum() for k in ks]


class EpochSums:
    """Sums of loss, top-1/top-5 hits and samples, kept as float64 on the device.

    Summing per batch in a fixed order (and saving the partial sums in a mid-epoch checkpoint)
    makes the epoch's averages bit-identical whether or not the run was interrupted.
    """

    FIELDS = ("loss", "top1", "top5", "n")

    def __init__(self, device: torch.device):
        self.t = torch.zeros(len(self.FIELDS), dtype=torch.float64, device=device)

    @torch.no_grad()
    def add(self, loss: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> None:
        n = target.shape[0]
        c1, c5 = topk_correct(logits, target)
        self.t[:3] += torch.stack([loss.detach().double() * n, c1.double(), c5.double()])
        # a Python number, not a new tensor: torch.tensor(..., device="cuda") is a blocking copy,
        # which waits for every queued kernel and so stops the CPU from running ahead
        self.t[3] += float(n)

    def state(self) -> torch.Tensor:
        return self.t.detach().cpu().clone()

    def load(self, state: torch.Tensor) -> None:
        self.t.copy_(state.to(self.t.device))

    def reduce(self) -> dict[str, float]:
        """Global averages over all ranks (a collective: every rank must call it)."""
        t = dist.all_sum(self.t.clone())
        loss, c1, c5, n = t.tolist()
        if n == 0:
            return {"loss": float("nan"), "top1": float("nan"), "top5": float("nan"), "n": 0}
        return {"loss": loss / n, "top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "n": int(n)}
