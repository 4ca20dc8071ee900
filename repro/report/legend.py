"""Where each paper number of a table comes from, and the footnotes under it: each source document
gets a letter (the cell's mark, e.g. "a"), each caveat and each note a table's cells point to gets
a number ("a,3"); under the table the legend names each document in full and spells out each
footnote."""
from __future__ import annotations

from string import ascii_lowercase

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
    """The sources and footnotes of one table (of the rows it shows: a miniature may show a subset).
    Caveats are numbered 1, 2, ... by first appearance; notes added while rendering follow them."""

    def __init__(self, spec: TableSpec, rows: list[Row] | None = None):
        cells = _cells(spec, rows)
        used = {pv.source for _, _, pv in cells if pv.source}
        self.sources = [s for k, s in SOURCES.items() if k in used]  # in the order of trust
        self.letter = {s.key: ascii_lowercase[i] for i, s in enumerate(self.sources)}
        self.caveats: dict[str, dict[str, list[str]]] = {}  # caveat text -> row label -> its metrics
        for row, label, pv in cells:
            if pv.caveat:
                self.caveats.setdefault(pv.caveat, {}).setdefault(f"{row.model} {row.variant}", []).append(label)
        self._number = {text: str(i) for i, text in enumerate(self.caveats, 1)}
        self.notes: dict[str, str] = {}  # note text -> its number (after the caveats)

    def marks(self, pv: PaperValue | None) -> list[str]:
        """The cell's footnote marks: its source's letter, then its caveat's number."""
        if pv is None or not pv.source:
            return []
        return [self.letter[pv.source]] + ([self._number[pv.caveat]] if pv.caveat else [])

    def mark(self, pv: PaperValue | None) -> str:
        return ",".join(self.marks(pv))

    def caveat_id(self, pv: PaperValue | None) -> str:
        return self._number.get(pv.caveat, "") if pv is not None else ""

    def note(self, text: str) -> str:
        """The number of a footnote a cell points to (registered on first use)."""
        if text not in self.notes:
            self.notes[text] = str(len(self._number) + len(self.notes) + 1)
        return self.notes[text]

    def source_items(self) -> list[str]:
        """Each source the table's cells cite, named in full, in the order of trust."""
        return [s.legend() for s in self.sources] or ["(none: no paper cell here has a source)"]

    def source_letters(self) -> list[str]:
        return [self.letter[s.key] for s in self.sources]

    def caveat_items(self) -> list[str]:
        """Each caveat once, with the cells it applies to, then each note."""
        return [f"{self._number[text]}: {text}. Cells: "
                + "; ".join(f"{r} ({', '.join(ms)})" for r, ms in by_row.items()) + "."
                for text, by_row in self.caveats.items()] + [f"{n}: {t}" for t, n in self.notes.items()]


SOURCES_HEADING = "Sources of the paper cells (the letter after each number)"
CAVEATS_HEADING = "Footnotes (the numbers after a cell)"
