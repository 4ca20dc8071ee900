"""Where each paper number of a table comes from: the per-cell mark ("[FPGM-T1]", "[SB; c2]") and
the legend under the table that names each document in full and spells out each caveat."""
from __future__ import annotations

from repro.papers.sources import SOURCES
from repro.papers.spec import METRIC_LABELS, PaperValue, Row, TableSpec


def _cells(spec: TableSpec, rows: list[Row] | None = None) -> list[tuple[Row, str, PaperValue]]:
    """Every paper cell the table shows, in display order (metrics, then the printed FLOPs)."""
    out = []
    for row in spec.rows if rows is None else rows:
        out += [(row, METRIC_LABELS[m], row.paper[m]) for m in spec.metrics if m in row.paper]
        if row.flops_paper is not None:
            out.append((row, "FLOPs↓", row.flops_paper))
    return out


class Legend:
    """The sources and caveats of one table (of the rows it shows: a miniature may show a subset);
    caveats are numbered c1, c2, ... by first appearance."""

    def __init__(self, spec: TableSpec, rows: list[Row] | None = None):
        cells = _cells(spec, rows)
        used = {pv.source for _, _, pv in cells if pv.source}
        self.sources = [s for k, s in SOURCES.items() if k in used]  # in the order of trust
        self.caveats: dict[str, dict[str, list[str]]] = {}  # caveat text -> row label -> its metrics
        for row, label, pv in cells:
            if pv.caveat:
                self.caveats.setdefault(pv.caveat, {}).setdefault(f"{row.model} {row.variant}", []).append(label)
        self._number = {text: f"c{i}" for i, text in enumerate(self.caveats, 1)}

    def mark(self, pv: PaperValue | None) -> str:
        """'[KEY]' or '[KEY; cN]' for a cell with a source; '' for one without."""
        if pv is None or not pv.source:
            return ""
        return f"[{pv.source}" + (f"; {self._number[pv.caveat]}" if pv.caveat else "") + "]"

    def caveat_id(self, pv: PaperValue | None) -> str:
        return self._number.get(pv.caveat, "") if pv is not None else ""

    def source_items(self) -> list[str]:
        """Each source the table's cells cite, named in full, in the order of trust."""
        return [s.legend() for s in self.sources] or ["(none: no paper cell here has a source)"]

    def caveat_items(self) -> list[str]:
        """Each caveat once, with the cells it applies to."""
        return [f"{self._number[text]}: {text}. Cells: "
                + "; ".join(f"{r} ({', '.join(ms)})" for r, ms in by_row.items()) + "."
                for text, by_row in self.caveats.items()]


SOURCES_HEADING = "Sources of the paper cells (the key in brackets after each number)"
CAVEATS_HEADING = "Caveats (cN after a source key)"
