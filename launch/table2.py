#!/usr/bin/env python
"""SFP (IJCAI 2018) Table 2: ImageNet ResNet-18/34/50/101, baseline, SFP 30% scratch and pre-trained.
The runs and the paper's values are declared in repro/papers/ (see repro.papers.TABLES).

    python launch/table2.py --smoke            # the miniature table, here, no SLURM
    python launch/table2.py --all-rows         # the miniature of every row (runs/smoke-all)
    python launch/table2.py --dry-run          # the full plan with a GPU-hours estimate
    python launch/table2.py --help             # every flag
"""
from repro.launch import main

if __name__ == "__main__":
    raise SystemExit(main("table2"))
