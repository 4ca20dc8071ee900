"""The paper tables this suite reproduces, declared once each, and the papers' recipes.

``load_table(name)`` returns the ``TableSpec`` a table module declares as ``TABLE``. The modules
are imported on first use only, so ``repro.papers.recipes`` (read by the config presets) stays
cheap and nothing here depends on the trainer or the launcher.
"""
from __future__ import annotations

import importlib

from .spec import TableSpec

# table name (the folder ROOT/<name>/) -> (module, attribute holding its TableSpec)
TABLES = {"table1": ("sfp_table1", "TABLE"), "table2": ("sfp_table2", "TABLE"),
          "table2_official": ("sfp_table2", "OFFICIAL"), "table2_tveval": ("sfp_table2", "TVEVAL"),
          "snf_cifar": ("snf_cifar", "TABLE")}
# a table declared under several protocols: launch/<name>.py --protocol P picks the table of protocol P
PROTOCOL_TABLES = {"table2": {"paper": "table2", "official-code": "table2_official",
                        "torchvision-eval": "table2_tveval"}}


def known_tables() -> list[str]:
    return sorted(TABLES)


def load_table(name: str) -> TableSpec:
    """The TableSpec of table ``name`` (one of ``known_tables()``); LookupError otherwise."""
    if name not in TABLES:
        raise LookupError(f"unknown table {name!r}; known: {', '.join(known_tables())}")
    module, attr = TABLES[name]
    table = getattr(importlib.import_module(f"{__name__}.{module}"), attr, None)
    if not isinstance(table, TableSpec) or table.name != name:  # a declaration bug, never user input
        raise LookupError(f"repro.papers.{module}.{attr} is not TableSpec(name={name!r}, ...)")
    return table


def printed_flops(arch: str, rate: float):
    """The FLOPs reduction a paper prints for SFP at ``rate`` on ``arch`` (a PaperValue), or None:
    read from the table declarations, where each printed number is written once."""
    for name in TABLES:  # (protocols repeat the same paper values; the first table has them)
        for row in load_table(name).rows:
            if row.prune_rate and row.arch == arch and abs(row.prune_rate - rate) < 1e-9 and row.flops_paper:
                if row.flops_paper.confirmed:
                    return row.flops_paper
    return None
