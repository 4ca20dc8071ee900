#!/usr/bin/env python
"""SNF (2021, abstract-level reimplementation): CIFAR-10 ResNet-56 @ 52.94% and ResNet-110 @ 68.68% FLOPs.
The runs and the paper's values are declared in repro/papers/ (see repro.papers.TABLES).

    python launch/snf_cifar.py --smoke            # the miniature table, here, no SLURM
    python launch/snf_cifar.py --dry-run          # the full plan with a GPU-hours estimate
    python launch/snf_cifar.py --help             # every flag
"""
from repro.launch import main

if __name__ == "__main__":
    raise SystemExit(main("snf_cifar"))
