#!/usr/bin/env python
"""Table 1 of SFP (IJCAI 2018): CIFAR-10 ResNet-20/32/56/110 at the papers' rates, baseline and
SFP from scratch, three seeds each (mean ± std, as the paper reports). The runs and the paper's
values are declared once, here; `python -m repro.tables table1` reads the same declaration.

    python launch/table1.py --smoke
    python launch/table1.py --data /datasets/cifar10-ffcv --dry-run
    python launch/table1.py --data /datasets/cifar10-ffcv --partition gpu

Run `python launch/table1.py --help` for every flag.
"""
from repro.tablespec import Row, TableSpec, paper

# Recipe (papers.md): 200 epochs, batch 128, SGD 0.9 Nesterov, wd 5e-4, lr 0.01 for one warm-up
# epoch then 0.1, x0.2 at epochs 60, 120, 160.
BASE = {
    "data.name": "cifar10", "data.batch_size": 128,
    "optim.lr": 0.1, "optim.weight_decay": 5e-4,
    "schedule.epochs": 200, "schedule.warmup_epochs": 1, "schedule.warmup_lr": 0.01,
    "schedule.milestones": (60, 120, 160), "schedule.gamma": 0.2,
}
SMOKE = {"data.batch_size": 32, "data.workers": 1, "schedule.epochs": 1, "schedule.warmup_epochs": 0,
         "schedule.milestones": (), "log.wandb": "disabled"}
SMOKE_DATA = {"kind": "cifar10", "train": 128, "val": 64}

# arch: (rate, baseline top-1 mean, std, SFP top-1 mean, std, drop, printed FLOPs reduction)
# CIFAR-10 from scratch, as reprinted by the same authors in FPGM (papers.md).
PAPER = {
    "resnet20": (0.3, 92.20, 0.18, 90.83, 0.31, 1.37, 42.2),
    "resnet32": (0.3, 92.63, 0.70, 92.08, 0.08, 0.55, 41.5),
    "resnet56": (0.4, 93.59, 0.58, 92.26, 0.31, 1.33, 52.6),
    "resnet110": (0.3, 93.68, 0.32, 93.38, 0.30, 0.30, 40.8),
}


def rows():
    out = []
    for arch, (rate, b, bs, s, ss, drop, flops) in PAPER.items():
        model = "ResNet-" + arch[len("resnet"):]
        base = f"{arch}/baseline"
        out.append(Row(base, model, "baseline", {"model.arch": arch}, paper={"top1": paper(b, bs)}))
        out.append(Row(f"{arch}/sfp{round(rate * 100)}", model, f"SFP {round(rate * 100)}% scratch",
                       {"model.arch": arch, "prune.method": "sfp", "prune.rate": rate},
                       paper={"top1": paper(s, ss), "top1_drop": paper(drop)},
                       baseline=base, prune_rate=rate, flops_paper=paper(flops)))
    return tuple(out)


TABLE = TableSpec(
    name="table1",
    title="SFP, CIFAR-10 (ResNet-20/32/56/110, from scratch)",
    source="He et al., Soft Filter Pruning, IJCAI 2018 (CIFAR-10 rows as reprinted in FPGM; papers.md)",
    dataset="cifar10",
    rows=rows(),
    seeds=(0, 1, 2),
    base=BASE, smoke=SMOKE, smoke_data=SMOKE_DATA,
    metrics=("top1", "top1_drop"),
    notes=("Number of runs behind the paper's mean ± std is not stated; this table uses 3 seeds.",),
)

if __name__ == "__main__":
    from repro.launch import main
    raise SystemExit(main(TABLE))
