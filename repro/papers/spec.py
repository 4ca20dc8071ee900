"""What a paper table contains: its rows, the runs behind each row (grid x seeds) and the paper's values.

Each module of ``repro.papers`` declares one `TableSpec`; the launcher (``repro.runs``) plans and
submits from it and the table builder (``repro.report``) reads the same object, so the two cannot
drift apart. Nothing here imports torch or the trainer: declaring a table is cheap.

Paper values are facts with their sources (docs/papers.md). A cell the sources could not confirm
is `unconfirmed(...)`, never a guess; it renders as "unconfirmed" in every output.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from .sources import SOURCES

# Metrics a row can carry, in display order. Drops are (baseline - pruned) in points, as in the
# papers: positive = the pruned model is worse. A paper's "+0.14% accuracy" is a drop of -0.14.
METRICS = ("top1", "top5", "top1_drop", "top5_drop")
METRIC_LABELS = {"top1": "Top-1", "top5": "Top-5", "top1_drop": "Top-1 drop", "top5_drop": "Top-5 drop"}
# result.json key each accuracy metric is read from (the delivered = compact model's accuracy)
RESULT_KEYS = {"top1": "val_top1", "top5": "val_top5"}


@dataclass(frozen=True)
class PaperValue:
    """One number a source prints (or states) for a paper cell; `value=None` means not known here.

    source: key of the document it comes from (``repro.papers.sources.SOURCES``); every number
            has one, and the tables show it per cell with a legend naming the document in full.
    caveat: what a reader must know about this number (a transcription slip, an unstated protocol).
    candidates: numbers a source prints for this cell without saying which of them belongs to it
            (an unconfirmed cell only; shown as such, never as the cell's value).
    context: why this number is shown for context only, never judged (e.g. no source states the
            protocol behind it); empty: a verdict may compare against it.
    Equality compares the numbers only (value, std, confirmed, note, candidates), not where they
    were read.
    """
    value: float | None
    std: float | None = None
    confirmed: bool = True
    note: str = ""
    source: str = field(default="", compare=False)
    caveat: str = field(default="", compare=False)
    candidates: tuple[float, ...] = ()
    context: str = field(default="", compare=False)

    def __post_init__(self):
        if self.confirmed and self.value is None:
            raise ValueError("a confirmed paper value needs a number")
        if self.confirmed and self.candidates:
            raise ValueError("candidates belong to an unconfirmed cell; a confirmed one has its value")
        if (self.value is not None or self.candidates) and not self.source:
            raise ValueError("a paper number needs its source (a key of repro.papers.sources.SOURCES)")

    @property
    def numbers(self) -> tuple[float, ...]:
        """Every number this cell states (value, std, candidates): each must trace to its source."""
        return tuple(v for v in (self.value, self.std, *self.candidates) if v is not None)


def paper(value: float, std: float | None = None, note: str = "", *, source: str = "",
          caveat: str = "", context: str = "") -> PaperValue:
    """A value a source prints for the cell (the paper, or a reprint / transcription of it);
    `context`: why it is shown for context only (no verdict against it)."""
    return PaperValue(value, std, True, note, source, caveat, context=context)


def unconfirmed(note: str, value: float | None = None, *, source: str = "",
                candidates: tuple[float, ...] = (), caveat: str = "") -> PaperValue:
    """A cell the sources could not confirm; `value` only when some source states a number for it,
    `candidates` when a source prints several numbers without assigning one to this cell."""
    return PaperValue(value, None, False, note, source, caveat, tuple(candidates))


@dataclass(frozen=True)
class Row:
    """One line of the table: one model variant, trained once per seed.

    overrides: dotted config keys on top of the table's `base` (e.g. {"prune.method": "sfp"}).
    baseline:  key of the row the drops are measured against (None for a baseline row).
    init_from: key of the row whose run with the SAME seed is this row's starting checkpoint
               (SFP from a pre-trained baseline, SNF); the launcher adds a SLURM dependency on it.
    smoke:     overrides for --smoke that only this row takes (e.g. SNF's fine-tuning epochs).
    The prune rate and the FLOPs target are read from ``overrides`` (the config the runs train
    with), so the report and the runs cannot disagree on them.
    """
    key: str
    model: str
    variant: str
    overrides: Mapping[str, Any]
    paper: Mapping[str, PaperValue] = field(default_factory=dict)
    baseline: str | None = None
    init_from: str | None = None
    flops_paper: PaperValue | None = None
    smoke: Mapping[str, Any] = field(default_factory=dict)  # this row's own --smoke overrides

    @property
    def arch(self) -> str:
        return self.overrides["model.arch"]

    @property
    def prune_rate(self) -> float:
        """SFP rows: the fraction of filters pruned per layer (``prune.rate``); 0 otherwise."""
        return self.overrides.get("prune.rate", 0.0)

    @property
    def flops_target(self) -> float | None:
        """SNF rows: the FLOPs reduction in percent the search must reach (``prune.flops_reduction``)."""
        return self.overrides.get("prune.flops_reduction")


@dataclass(frozen=True)
class RunSpec:
    """One run: a row at one seed. `name` is stable and is also the W&B run name suffix."""
    table: str
    row: Row
    seed: int

    @property
    def key(self) -> str:
        return f"{self.row.key}/seed{self.seed}"


@dataclass(frozen=True)
class TableSpec:
    """A paper table: rows x seeds, the training recipe, the smoke (miniature) variant.

    base:          dotted overrides every run gets (data set, recipe).
    smoke:         dotted overrides on top, for `--smoke` (tiny images, few epochs).
    smoke_data:    what `--smoke` generates: ("imagenet" | "cifar10", synth kwargs).
    smoke_rows:    the row keys `--smoke` runs (None: every row); a smaller miniature of a big table
                   (`--smoke --all-rows` runs every row anyway).
    smoke_rows_why: why the miniature leaves the other rows out, measured (shown in the smoke
                   table's header); empty: they "run at full size only".
    metrics:       which METRICS the table shows.
    paper_runs:    how many runs each of the paper's mean ± std is over (the verdict's Welch test
                   needs it); None where the paper gives single numbers.
    """
    name: str
    title: str
    source: str
    dataset: str
    rows: tuple[Row, ...]
    seeds: tuple[int, ...]
    base: Mapping[str, Any]
    smoke: Mapping[str, Any]
    smoke_seeds: tuple[int, ...] = (0,)
    smoke_data: Mapping[str, Any] = field(default_factory=dict)
    metrics: tuple[str, ...] = ("top1", "top1_drop")
    notes: tuple[str, ...] = ()
    smoke_rows: tuple[str, ...] | None = None  # rows the miniature runs (None: all)
    smoke_rows_why: str = ""  # why the others are left out of the miniature (its header says so)
    protocol: str = ""  # for tables declared under several protocols (repro.papers.PROTOCOL_TABLES)
    paper_runs: int | None = None

    def __post_init__(self):
        keys = [r.key for r in self.rows]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{self.name}: duplicate row keys in {keys}")
        for r in self.rows:
            for ref in (r.baseline, r.init_from):
                if ref is not None and ref not in keys:
                    raise ValueError(f"{self.name}: row {r.key} refers to unknown row {ref!r}")
            bad = set(r.paper) - set(METRICS)
            if bad:
                raise ValueError(f"{self.name}: row {r.key}: unknown paper metrics {sorted(bad)}")
        bad = set(self.metrics) - set(METRICS)
        if bad:
            raise ValueError(f"{self.name}: unknown metrics {sorted(bad)}")
        for r in self.rows:
            if any(pv.std is not None for pv in r.paper.values()) and not (self.paper_runs or 0) >= 2:
                raise ValueError(f"{self.name}: row {r.key} has a paper std; paper_runs must say over how many "
                                 "runs (>= 2) it was taken")
            for pv in [*r.paper.values(), r.flops_paper]:  # a source the legend cannot name is a bug
                if pv is not None and pv.source and pv.source not in SOURCES:
                    raise ValueError(f"{self.name}: row {r.key}: unknown source {pv.source!r} "
                                     f"(known: {', '.join(SOURCES)})")
        if self.smoke_rows is not None:
            missing = set(self.smoke_rows) - set(keys)
            if missing:
                raise ValueError(f"{self.name}: smoke_rows names unknown rows {sorted(missing)}")
            for r in self.rows:
                if r.key in self.smoke_rows and r.init_from and r.init_from not in self.smoke_rows:
                    raise ValueError(f"{self.name}: smoke row {r.key} starts from {r.init_from}, "
                                     "which is not a smoke row")

    def every_row(self) -> "TableSpec":
        """The same table with a miniature of every row (``--smoke --all-rows``)."""
        return replace(self, smoke_rows=None, smoke_rows_why="")

    def row(self, key: str) -> Row:
        for r in self.rows:
            if r.key == key:
                return r
        raise KeyError(key)

    def runs(self, smoke: bool = False) -> list[RunSpec]:
        """Every run the table needs, rows in order, then seeds; dependencies come after their base."""
        seeds = self.smoke_seeds if smoke else self.seeds
        rows = [r for r in self.rows if not smoke or self.smoke_rows is None or r.key in self.smoke_rows]
        return [RunSpec(self.name, r, s) for r in rows for s in seeds]
