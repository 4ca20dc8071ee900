"""Every paper number can be traced: it has a source, the source is a document the tables' legend
names in full, and nothing in the project points to a file outside the repository."""
from __future__ import annotations

import csv
import io
import re

import pytest

from repro import tables
from repro.papers import TABLES, load_table
from repro.papers.sources import KINDS, SOURCES
from repro.report.legend import Legend
from repro.report.render import tex_escape

from conftest import REPO


def _cells(spec):
    for row in spec.rows:
        for metric, pv in [*row.paper.items(), ("flops", row.flops_paper)]:
            if pv is not None:
                yield row, metric, pv


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Every table built from no runs (the paper side), as the committed tables are."""
    d = tmp_path_factory.mktemp("paper-side")
    out = {}
    for name in TABLES:
        paths = tables.build(load_table(name), d / "runs", d / "out", png=False)
        out[name] = {p.suffix: p.read_text() for p in paths}
    return out


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_paper_number_has_a_source_in_the_legend(name, built):
    spec, files = load_table(name), built[name]
    legend = Legend(spec)
    rows = list(csv.DictReader(io.StringIO(files[".csv"])))
    csv_sources = {r["note"] for r in rows if r["metric"] == "source"}
    numbers = 0
    for row, metric, pv in _cells(spec):
        if not pv.numbers:
            continue  # "unconfirmed" with no number: nothing to trace
        numbers += 1
        assert pv.source in SOURCES, f"{row.key} {metric}: source {pv.source!r}"
        full = SOURCES[pv.source].legend()
        assert full in legend.source_items()
        assert f"- {full}" in files[".md"] and f"{tex_escape(full)}\\par" in files[".tex"] and full in csv_sources
        # the cell's marks (its source's letter, its caveat's number) in one footnote-mark group; a
        # cell holding a top-1 / top-5 pair carries both numbers' marks in one group
        groups_md = [set(g.split(",")) for g in re.findall(r"<sup>([^<]*)</sup>", files[".md"])]
        groups_tex = [set(g.split(",")) for g in re.findall(r"\\textsuperscript\{([^}]*)\}", files[".tex"])]
        marks = set(legend.marks(pv))
        assert any(marks <= g for g in groups_md) and any(marks <= g for g in groups_tex), (row.key, metric)
        if pv.caveat:  # a caveat is spelled out under the table, numbered as the cell's mark says
            cid = legend.caveat_id(pv)
            assert f"- {cid}: {pv.caveat}." in files[".md"] and f"{cid}: {pv.caveat}" in "".join(
                r["paper_caveat"] for r in rows)
    assert numbers > 0
    # the legend names only documents the table uses
    assert {s.key for s in legend.sources} == {pv.source for _, _, pv in _cells(spec) if pv.source}


def test_sources_are_named_in_full():
    for key, s in SOURCES.items():
        text = s.legend()
        assert text.startswith(f"[{key}] ") and re.search(r"arXiv:\d{4}\.\d{5}", text), key
        assert re.search(r"\"[^\"]{20,}\"", text) and re.search(r"\b(19|20)\d\d\b", text), key  # title, year
        assert s.kind in KINDS and KINDS[s.kind] in text
        if s.repository:  # a file in a repository: both named
            assert f"repository {s.repository}, file {s.path}" in text
    assert SOURCES["SB"].repository == "JJGO/shrinkbench" and not SOURCES["SB"].primary


# Anything that points outside the checkout: a parent-relative path, this machine's work folder, or
# the reference notes the project was built from (the project's own is docs/papers.md).
OUTSIDE = re.compile(r"(?<![.\w])\.\./|/work/|(?<!docs/)\bpapers\.md\b")
TEXT_SUFFIXES = {".py", ".md", ".tex", ".csv", ".sh", ".toml", ".txt", ".cfg", ".yaml", ".yml"}


def _project_files():
    for folder in ("repro", "launch", "scripts", "docs", "tables", "tests"):
        for p in sorted((REPO / folder).rglob("*")):
            if p.is_file() and p.suffix in TEXT_SUFFIXES and "__pycache__" not in p.parts:
                yield p
    yield from (REPO / n for n in ("README.md", "pyproject.toml") if (REPO / n).exists())


def test_nothing_points_outside_the_repository(built):
    hits = [f"{p.relative_to(REPO)}:{i}: {line.strip()[:100]}" for p in _project_files()
            if p.name != "test_sources.py"  # holds the pattern itself
            for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if OUTSIDE.search(line)]
    assert hits == []
    for name, files in built.items():  # and what the tables say, built afresh
        for suffix, text in files.items():
            assert not OUTSIDE.search(text), f"{name}{suffix}"
    assert (REPO / "docs" / "papers.md").is_file()  # what the code and tables refer to exists


def test_the_pattern_catches_what_it_should():
    for bad in ("see ../shared/reference/papers.md", "(values: papers.md)", "/work/shared/x"):
        assert OUTSIDE.search(bad), bad
    for ok in ("docs/papers.md", "'.../resnet50-0676ba61.pth'", "the papers' recipes"):
        assert not OUTSIDE.search(ok), ok


def test_latex_is_ascii(built):
    for name, files in built.items():
        bad = sorted({ch for ch in files[".tex"] if ord(ch) > 127})
        assert bad == [], f"{name}.tex: {bad}"
