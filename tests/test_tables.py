"""repro.tables: rendering, determinism, --check, and real run folders (trained by the real trainer).

The run-folder tests launch a two-row miniature table through repro.launch (local executor): a
ResNet-20 baseline that trains, and one told to start from a checkpoint that does not exist, so that a real failure with its real reason reaches the table.
"""
from __future__ import annotations

import csv
import dataclasses
import io

import pytest

from repro import launch, tables
from repro.papers import load_table



# ---------------------------------------------------------------------------- paper side, no runs
@pytest.fixture(scope="module")
def empty_table2(tmp_path_factory):
    d = tmp_path_factory.mktemp("t2")
    paths = tables.build(load_table("table2"), d / "runs", d / "out")
    return d, {p.suffix: p for p in paths}


def test_paper_side_of_table2(empty_table2):
    _, files = empty_table2
    md = files[".md"].read_text()
    assert "Runs found: 0 of 12 expected (done 0, running 0, failed 0, missing 12)" in md
    lines = {ln.split("|")[1].strip() + "|" + ln.split("|")[2].strip(): ln for ln in md.splitlines()
             if ln.startswith("| ResNet")}
    r50 = lines["ResNet-50|SFP 30% scratch"]
    # every paper number with its source key; printed FLOPs vs the correct count, flagged
    assert "| 74.61 [FPGM-T2] " in r50 and "| 41.8 [FPGM-T2] " in r50 and "| 41.15 ! " in r50
    assert "| 41.11 " in lines["ResNet-34|SFP 30% scratch"] and "41.11 !" not in md  # agrees: no flag
    pre = lines["ResNet-50|SFP 30% pre-trained"]
    assert "| 62.14 [FPGM-T2; c1] " in pre and "| 84.60 [FPGM-T2; c1] " in pre
    assert "- c1: the protocol behind this row is not stated in any source here" in md
    assert lines["ResNet-18|SFP 30% pre-trained"].count("| unconfirmed ") == 5  # no source: never guessed
    for variant in ("scratch", "pre-trained"):  # the two transcriptions, assigned to neither row
        r101 = lines[f"ResNet-101|SFP 30% {variant}"]
        assert "| 77.03 or 77.51 (unassigned) [SB] " in r101 and "| 93.46 or 93.71 (unassigned) [SB] " in r101
        assert "| -0.20 (unconfirmed) [SFP-abs] " in r101 and "43.49 !" in r101 and "missing 1" in r101
        assert "77.03 [SB]" not in r101 and "77.51 [SB]" not in r101
    assert "abstract: '+0.2% top-5' on ResNet-101 (variant not stated)" in md
    assert "- [SB] D. Blalock" in md and "repository JJGO/shrinkbench, file analysis/assets/existing-results/" in md
    # footer: every expected run folder with its config hash
    assert md.count("| missing  |") == 12 and "table2/resnet50-imagenet-sfp0.3-e100-s0-" in md
    tex = files[".tex"].read_text()
    assert all(k in tex for k in (r"\toprule", r"\midrule", r"\bottomrule", r"41.15 !", r"$\pm$" if "±" in md else ""))
    rows = list(csv.DictReader(io.StringIO(files[".csv"].read_text())))
    f50 = [r for r in rows if r["row"] == "resnet50/sfp-scratch" and r["metric"] == "flops_reduction_float"][0]
    assert (f50["paper"], f50["ours_mean"], f50["delta"]) == ("41.8000", "41.1538", "-0.6462")
    assert files[".png"].stat().st_size > 10_000


def test_check_cli_passes_then_fails_on_a_hand_edited_cell(empty_table2, capsys):
    d, files = empty_table2
    argv = ["table2", "--root", str(d / "runs"), "--out", str(d / "out"), "--check"]
    assert tables.main(argv) == 0, capsys.readouterr().err
    md = files[".md"]
    original = md.read_text()
    try:
        md.write_text(original.replace("| 74.61 ", "| 75.61 ", 1))
        capsys.readouterr()
        assert tables.main(argv) == 1
        err = capsys.readouterr().err
        assert "-| ResNet-50" in err and "75.61" in err and "STALE or edited" in err
    finally:
        md.write_text(original)
    assert {p.suffix for p in (d / "out").iterdir()} == {".md", ".tex", ".csv", ".png"}  # --check wrote nothing


# ---------------------------------------------------------------------------- real runs
@pytest.fixture(scope="module")
def tiny(tmp_path_factory, cifar_smoke_data):
    """table1's ResNet-20 baseline plus a copy that must start from a checkpoint that does not exist,
    run for real, in miniature."""
    t1 = load_table("table1")
    base = t1.rows[0]
    bad = dataclasses.replace(base, key="resnet20/broken", variant="bad init (fails on purpose)",
                              overrides={**base.overrides, "prune.init_from": "/nonexistent/baseline"}, paper={})
    spec = dataclasses.replace(t1, name="tiny", rows=(base, bad), smoke_rows=None)
    d = tmp_path_factory.mktemp("tiny")
    argv = ["--smoke", "--cluster", "local", "--root", str(d / "runs"), "--data", str(cifar_smoke_data)]
    rc = launch.main(spec, argv)
    return spec, d / "runs", argv, rc


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_failed_run_shows_with_its_reason(tiny):
    spec, root, _, rc = tiny
    assert rc == 1  # the launcher reports the failed run
    md = (root / "tables" / "tiny.md").read_text()
    assert "SMOKE TABLE" in md and "NOT comparable to the paper" in md
    assert "Runs found: 2 of 2 expected (done 1, running 0, failed 1, missing 0)" in md
    row = [ln for ln in md.splitlines() if "fails on purpose" in ln][0]
    assert "failed 1 (ConfigError: prune.init_from: /nonexistent/baseline does not exist)" in row
    done = [ln for ln in md.splitlines() if [c.strip() for c in ln.split("|")[1:3]] == ["ResNet-20", "baseline"]][0]
    assert "done 1/1" in done and " (1) " in done


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_relaunch_submits_nothing_and_table_is_byte_identical(tiny, capsys):
    spec, root, argv, _ = tiny
    out = root / "tables"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert launch.main(spec, argv) == 1  # still one failed run; not retried without --retry-failed
    assert "nothing to submit" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert tables.check(spec, root, out, smoke=True) == []
    # hand-edit one cell: --check notices
    md = out / "tiny.md"
    md.write_text(md.read_text().replace("done 1/1", "done 2/1", 1))
    problems = tables.check(spec, root, out, smoke=True)
    assert len(problems) == 1 and "done 2/1" in problems[0]
    md.write_bytes(before["tiny.md"])
