#!/usr/bin/env python
"""SFP (IJCAI 2018) Table 1: CIFAR-10 ResNet-20/32/56/110, baseline and SFP at 10-40%, 3 seeds.
The runs and the paper's values are declared in repro/papers/ (see repro.papers.TABLES).

    python launch/table1.py --smoke            # the miniature table, here, no SLURM
    python launch/table1.py --dry-run          # the full plan with a GPU-hours estimate
    python launch/table1.py --help             # every flag
"""
from repro.launch import main

if __name__ == "__main__":
    raise SystemExit(main("table1"))
