"""What a run cost, read from its folder: device-hours = wall time x devices, over every attempt.

result.json `wall_s` is the run's wall time summed over its attempts (each attempt resumes the
clock from the checkpoint it starts from, so time spent after an attempt's last checkpoint is not
in it: the figure is what the run folder records, a slight undercount for preempted runs).
env.json `attempts` lists each attempt with its `world_size` (processes = devices) and `device`.
When every attempt ran on the same number of devices the cost is exact; when the number changed,
the folder does not record each attempt's share of the wall time, so the cost is shown as an
upper bound (wall time x the largest world size) and marked "≤".
The launcher's estimate beside it comes from ``repro.runs.cost`` (through the plan).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cost:
    hours: float | None   # None: the folder does not say (no result.json, or no wall time / world size)
    kind: str = ""        # GPU | CPU | device (attempts on both, or the device is not recorded)
    attempts: int = 0
    exact: bool = True    # False: an upper bound (the world size changed between attempts)

    def text(self) -> str:
        if self.hours is None:
            return "—"
        bound = "" if self.exact else "≤ "
        n = f" ({self.attempts} attempts)" if self.attempts > 1 else ""
        return f"{bound}{hours_text(self.hours)} {self.kind}-h{n}"


def hours_text(h: float) -> str:
    return "<0.01" if 0 < h < 0.005 else f"{h:.2f}"


def _kind(device: str) -> str:
    return "GPU" if device.startswith("cuda") else "CPU" if device.startswith("cpu") else "device"


def measured(result: dict, env: dict) -> Cost:
    """The device-hours a run took, from its result.json and env.json (both may be partial)."""
    wall = result.get("wall_s")
    attempts = [a for a in (env.get("attempts") or []) if isinstance(a, dict)]
    sizes = [int(a["world_size"]) for a in attempts if a.get("world_size")]
    if not sizes and result.get("world_size"):
        sizes = [int(result["world_size"])]
    if wall is None or not sizes:
        return Cost(None, attempts=len(attempts))
    kinds = {_kind(str(a.get("device", ""))) for a in attempts} or {"device"}
    kind = kinds.pop() if len(kinds) == 1 else "device"
    return Cost(float(wall) * max(sizes) / 3600, kind, max(len(attempts), 1), exact=len(set(sizes)) == 1)


def total(costs: list[Cost]) -> str:
    """The table's measured total, per kind of device: '1.23 GPU-h + <0.01 CPU-h over 5 runs'."""
    known = [c for c in costs if c.hours is not None]
    if not known:
        return "— (no run recorded its wall time)"
    by_kind: dict[str, float] = {}
    for c in known:
        by_kind[c.kind] = by_kind.get(c.kind, 0.0) + c.hours
    parts = " + ".join(f"{hours_text(h)} {k}-h" for k, h in sorted(by_kind.items()))
    bounds = sum(not c.exact for c in known)
    bound = (f"; an upper bound: {bounds} run{'s' if bounds > 1 else ''} changed world size between attempts"
             if bounds else "")
    return f"{'≤ ' if bounds else ''}{parts} over {len(known)} run{'s' if len(known) > 1 else ''}{bound}"
