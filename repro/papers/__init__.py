"""The paper tables this suite reproduces, declared once each, and the papers' recipes.

``load_table(name)`` returns the ``TableSpec`` a table module declares as ``TABLE``. The modules
are imported on first use only, so ``repro.papers.recipes`` (read by the config presets) stays
cheap and nothing here depends on the trainer or the launcher.
"""
from __future__ import annotations

import importlib

from .spec import TableSpec

# table name (the folder ROOT/<name>/ and the launch script launch/<name>.py) -> module
TABLES = {"table1": "sfp_table1", "table2": "sfp_table2", "snf_cifar": "snf_cifar"}


def known_tables() -> list[str]:
    return sorted(TABLES)


def load_table(name: str) -> TableSpec:
    """The TableSpec of table ``name`` (one of ``known_tables()``); LookupError otherwise."""
    if name not in TABLES:
        raise LookupError(f"unknown table {name!r}; known: {', '.join(known_tables())}")
    table = importlib.import_module(f"{__name__}.{TABLES[name]}").TABLE
    if not isinstance(table, TableSpec) or table.name != name:  # a declaration bug, never user input
        raise LookupError(f"repro.papers.{TABLES[name]} does not declare TABLE = TableSpec(name={name!r}, ...)")
    return table


def printed_flops(arch: str, rate: float):
    """The FLOPs reduction a paper prints for SFP at ``rate`` on ``arch`` (a PaperValue), or None:
    read from the table declarations, where each printed number is written once."""
    for name in TABLES:
        for row in load_table(name).rows:
            if row.prune_rate and row.arch == arch and abs(row.prune_rate - rate) < 1e-9 and row.flops_paper:
                if row.flops_paper.confirmed:
                    return row.flops_paper
    return None
