"""Conv MACs and parameters, in the papers' convention and in real integer counts.

Two pruning conventions, side by side:

* ``paper_reduction``: the papers' float keep-ratio count (what their "FLOPs↓" column means).
  With keep ratio r = 1 - prune, each dense conv's MACs are scaled by r or r^2 depending on
  where it sits (docs/papers.md "FLOPs convention"); FC, BN, ReLU, pooling are ignored.
* ``actual_reduction``: the conv MACs of the compact model that SFP's integer masks really
  produce (``kept = N - int(N * prune)`` per layer, full-width residual streams), counted on a
  real model instance with forward hooks.

CLI::

    python -m repro.flops --arch resnet56 --prune 0.4 [--json] [--resolution R]
    python -m repro.flops            # all eight models at 10/20/30/40 %
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from .models import ARCHS, ChannelSpec, arch_info, build_model, check_resolution, kept_filters
from .models.graph import prunable_convs

DEFAULT_RATES = (0.1, 0.2, 0.3, 0.4)


@dataclass(frozen=True)
class Counts:
    conv_macs: int   # multiply-accumulates of all convs for one image
    fc_macs: int     # of the Linear layers, kept apart as the papers ignore them
    params: int      # all parameters (conv, BN affine, FC); buffers excluded


@dataclass(frozen=True)
class ConvGeometry:
    """One conv as the MAC count sees it: MACs = coef * c_in * c_out for one image."""
    coef: int    # H_out * W_out * kh * kw
    c_in: int    # input channels per group
    c_out: int
    area: int = 1  # kh * kw: the conv's weights are area * c_in * c_out (SNF's weight-aware variant)

    @property
    def macs(self) -> int:
        return self.coef * self.c_in * self.c_out


def geometry_of(model: nn.Module, resolution: int) -> tuple[dict[str, ConvGeometry], int]:
    """Every conv's geometry ({module name: ConvGeometry}, forward order) and the Linear layers'
    MACs, from one forward pass with hooks on ``model`` (any instance: dense, masked, compact,
    on any device including meta). The one place convs are walked for counting."""
    names = {m: n for n, m in model.named_modules()}
    convs: dict[str, ConvGeometry] = {}
    fc = 0

    def on_conv(m: nn.Conv2d, _inp, out):
        kh, kw = m.kernel_size
        convs[names[m]] = ConvGeometry(out.shape[2] * out.shape[3] * kh * kw, m.in_channels // m.groups,
                                       out.shape[1], kh * kw)

    def on_fc(m: nn.Linear, _inp, _out):
        nonlocal fc
        fc += m.in_features * m.out_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(on_conv))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(on_fc))
    device = next(model.parameters()).device
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, resolution, resolution, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return convs, fc


def count(model: nn.Module, resolution: int) -> Counts:
    """Count one image's conv/FC MACs and the parameters of any model instance."""
    convs, fc = geometry_of(model, resolution)
    params = sum(p.numel() for p in model.parameters())
    return Counts(sum(g.macs for g in convs.values()), fc, params)


@lru_cache(maxsize=None)
def conv_geometry(arch: str, resolution: int | None = None) -> dict[str, ConvGeometry]:
    """The dense ``arch``'s conv geometry at ``resolution`` (default: its papers' resolution):
    what the papers' float convention, SNF's exact MACs model and the launcher's cost estimate
    all count from. Do not mutate the returned dict (it is cached)."""
    resolution = resolution or arch_info(arch).resolution
    check_resolution(arch, resolution)
    return geometry_of(_skeleton(arch), resolution)[0]


def _skeleton(arch: str, spec: ChannelSpec = ChannelSpec()) -> nn.Module:
    # Shapes are all that matter: build and run on the meta device, no memory, no arithmetic.
    with torch.device("meta"):
        return build_model(arch, spec=spec)


def arch_counts(arch: str, spec: ChannelSpec = ChannelSpec(), resolution: int | None = None) -> Counts:
    """Counts of ``arch`` built to ``spec`` (dense by default) at its papers' resolution."""
    resolution = resolution or arch_info(arch).resolution
    check_resolution(arch, resolution)
    return count(_skeleton(arch, spec), resolution)


def spec_conv_macs(arch: str, spec: ChannelSpec, resolution: int | None = None) -> int:
    return arch_counts(arch, spec, resolution).conv_macs


def uniform_spec(arch: str, prune: float) -> ChannelSpec:
    """SFP's spec: every prunable conv keeps ``N - int(N * prune)`` filters; streams full."""
    return ChannelSpec(convs={c.name: kept_filters(c.out_channels, prune) for c in prunable_convs(arch)})


def paper_scale(conv_name: str, keep: float) -> float:
    """The papers' float factor for one conv (docs/papers.md, "FLOPs convention").

    Stem r; the very first block's first conv r^2 (its input is the pruned stem output); every
    other block-first conv r (its input is the full-width residual stream); every other block
    conv r^2; projection shortcuts 1 (never pruned). The sources state the layer1.0.conv1 rule
    for ImageNet only, but the CIFAR column needs it too: with it, every printed CIFAR value is
    reproduced to the digit (ResNet-20 at 30% gives 42.22, without it 41.00).
    """
    if conv_name == "conv1":
        return keep
    if ".downsample." in conv_name:
        return 1.0
    if conv_name.endswith(".conv1"):
        return keep * keep if conv_name == "layer1.0.conv1" else keep
    return keep * keep


def _check_prune(prune: float) -> None:
    if not 0.0 <= prune < 1.0:
        raise ValueError(f"--prune must be in [0, 1), got {prune}")


def paper_reduction(arch: str, prune: float, resolution: int | None = None) -> float:
    """FLOPs reduction in percent by the papers' float keep-ratio convention."""
    _check_prune(prune)
    resolution = resolution or arch_info(arch).resolution
    check_resolution(arch, resolution)
    geometry = conv_geometry(arch, resolution)
    keep = 1.0 - prune
    pruned = sum(g.macs * paper_scale(name, keep) for name, g in geometry.items())
    return 100.0 * (1.0 - pruned / sum(g.macs for g in geometry.values()))


def actual_reduction(arch: str, prune: float, resolution: int | None = None) -> float:
    """FLOPs reduction in percent of the compact model SFP's integer masks produce."""
    _check_prune(prune)
    dense = arch_counts(arch, resolution=resolution).conv_macs
    compact = arch_counts(arch, uniform_spec(arch, prune), resolution).conv_macs
    return 100.0 * (1.0 - compact / dense)


def report(arch: str, prune: float, resolution: int | None = None) -> dict:
    """Everything the CLI prints for one (arch, prune)."""
    _check_prune(prune)
    info = arch_info(arch)
    resolution = resolution or info.resolution
    check_resolution(arch, resolution)
    dense = arch_counts(arch, resolution=resolution)
    compact = arch_counts(arch, uniform_spec(arch, prune), resolution)
    row = {
        "arch": arch,
        "prune": prune,
        "resolution": resolution,
        "baseline_conv_macs": dense.conv_macs,
        "baseline_fc_macs": dense.fc_macs,
        "baseline_params": dense.params,
        "paper_reduction": round(paper_reduction(arch, prune, resolution), 2),
        "actual_reduction": round(100.0 * (1.0 - compact.conv_macs / dense.conv_macs), 2),
        "compact_conv_macs": compact.conv_macs,
        "compact_params": compact.params,
        "paper_printed": None,
        "paper_printed_note": None,
    }
    from .papers import printed_flops  # the printed values live in the table declarations
    pv = printed_flops(arch, prune)
    printed = pv.value if pv is not None else None
    if printed is not None and resolution == info.resolution:
        row["paper_printed"] = printed
        if abs(printed - row["paper_reduction"]) >= 0.05:
            row["paper_printed_note"] = (
                f"MISMATCH: the paper prints {printed}% but its own float convention, counted "
                f"correctly, gives {row['paper_reduction']:.2f}%; the authors' ImageNet FLOPs script "
                "has counting slips, so no single correct count reproduces that column (docs/papers.md)")
    return row


def _human(n: int) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def _parse(argv):
    p = argparse.ArgumentParser(
        prog="python -m repro.flops",
        description="Conv MACs, parameters and FLOPs reduction of the papers' ResNets under SFP's "
                    "uniform pruning: the papers' float convention beside the real integer count.")
    p.add_argument("--arch", help=f"one of {', '.join(ARCHS)}; omit for the full table")
    p.add_argument("--prune", type=float, action="append",
                   help="fraction of filters pruned per layer, in [0, 1); repeatable "
                        f"(default with --arch: 0.3; without: {', '.join(map(str, DEFAULT_RATES))})")
    p.add_argument("--resolution", type=int, help="input side in pixels (default: 32 CIFAR, 224 ImageNet)")
    p.add_argument("--json", action="store_true", help="print JSON (one object, or a list for several rows)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = _parse(argv)
    archs = [args.arch] if args.arch else list(ARCHS)
    rates = args.prune or ([0.3] if args.arch else list(DEFAULT_RATES))
    try:
        rows = [report(a, r, args.resolution) for a in archs for r in rates]
    except ValueError as e:  # unknown arch, bad rate, bad resolution: user errors, one line
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows[0] if len(rows) == 1 else rows, indent=2))
        return 0
    from tabulate import tabulate

    table = [[r["arch"], f"{r['prune']:.0%}", _human(r["baseline_conv_macs"]), f"{r['baseline_params']:,}",
              f"{r['paper_reduction']:.2f}", f"{r['actual_reduction']:.2f}", f"{r['compact_params']:,}",
              "" if r["paper_printed"] is None else f"{r['paper_printed']:.1f}" + (" (!)" if r["paper_printed_note"] else "")]
             for r in rows]
    print(tabulate(table, headers=["arch", "prune", "conv MACs", "params", "paper conv. %", "actual %",
                                   "compact params", "paper prints %"], disable_numparse=True))
    notes = sorted({r["paper_printed_note"] for r in rows if r["paper_printed_note"]})
    if notes:
        print("\n(!) the paper's printed value differs from the computed one:")
        for r in rows:
            if r["paper_printed_note"]:
                print(f"  {r['arch']} {r['prune']:.0%}: {r['paper_printed_note']}")
    print("\npaper conv. % = the papers' float keep-ratio convention; actual % = conv MACs of the compact "
          "model built from SFP's integer masks (kept = N - int(N * prune)), full-width residual streams.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
