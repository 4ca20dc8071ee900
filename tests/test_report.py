"""repro.report on constructed run folders (result.json / env.json written as the trainer writes
them, into the folders the real plan names): the verdict rule, chance-level cells, measured and
theoretical speed-ups, and what the runs cost. Fast: no training."""
from __future__ import annotations

import csv
import io

import pytest

from repro import tables
from repro.io import atomic_write_json
from repro.papers import load_table
from repro.report import verdict as V
from repro.report.cost import Cost, measured
from repro.rundir import ENV, write_result
from repro.runs.plan import plan

T1, T2 = load_table("table1"), load_table("table2")


def write_runs(spec, root, results: dict[str, dict], envs: dict[str, dict] | None = None) -> None:
    """results: run key ('resnet20/baseline/seed0') -> result.json fields on top of a done result."""
    folders = {pl.run.key: pl.run_dir for pl in plan(spec, root, query=False).runs}
    for key, fields in results.items():
        d = folders[key]
        d.mkdir(parents=True, exist_ok=True)
        write_result(d, {"status": "done", "val_images": 10_000, "num_classes": 10, "wall_s": 3600.0,
                         "world_size": 1, "finished": "2030-01-01T00:00:00+00:00", "code_version": "test",
                         **fields})
        if envs and key in envs:
            atomic_write_json(d / ENV, envs[key])


def build(spec, root):
    paths = tables.build(spec, root, root / "out", png=False)
    files = {p.suffix: p.read_text() for p in paths}
    files["rows"] = list(csv.DictReader(io.StringIO(files[".csv"])))
    return files


def md_row(md: str, model: str, variant: str) -> dict[str, str]:
    lines = md.splitlines()
    header = [c.strip() for c in next(ln for ln in lines if ln.startswith("| Model")).split("|")[1:-1]]
    for ln in lines:
        cells = [c.strip() for c in ln.split("|")[1:-1]]
        if cells[:2] == [model, variant]:
            return dict(zip(header, cells))
    raise KeyError((model, variant))


def csv_cell(rows, row: str, metric: str) -> dict:
    return next(r for r in rows if r["row"] == row and r["metric"] == metric)


# ---------------------------------------------------------------------------- the rule itself
def test_the_rule_on_numbers():
    pv = T1.row("resnet20/baseline").paper["top1"]  # 92.20 ± 0.18 over 3 runs
    assert V.judge(pv, 92.25, 0.15, 3, 3).label == V.REPRODUCED  # inside the spread: Welch p ~0.7
    far = V.judge(pv, 89.0, 0.1, 3, 3)
    assert far.label == V.NOT_REPRODUCED and far.detail == "Welch p<0.001"
    # one run against the paper's mean ± std: within 2 paper std (0.36)
    assert V.judge(pv, 92.50, None, 1, 3).text() == "reproduced (off by 0.30, within 0.36)"
    assert V.judge(pv, 92.60, None, 1, 3).text() == "not reproduced (off by 0.40, beyond 0.36)"
    single = T2.row("resnet50/sfp-scratch").paper["top1"]  # 74.61, no std: the stated tolerance
    assert V.judge(single, 74.20, None, 1, None).label == V.REPRODUCED
    assert V.judge(single, 74.00, None, 1, None).text() == "not reproduced (off by 0.61, beyond 0.50)"
    assert V.judge(pv, None, None, 0, 3).label == V.TOO_FEW
    assert V.judge(T2.row("resnet101/sfp-scratch").paper["top1"], 77.2, None, 1, None).label == V.NO_PAPER
    assert V.judge(None, 77.2, None, 1, None) is None
    # the printed rule carries the constants the code uses
    assert f"{V.ALPHA:.0%}" in V.RULE and f"{V.TOLERANCE:.2f} points" in V.RULE and f"{V.STD_FACTOR:g} ×" in V.RULE


def test_welch_matches_scipy_definition():
    from scipy.stats import ttest_ind
    a, b = [92.1, 92.4, 92.0], [92.3, 92.5, 91.9]
    import statistics as st
    p = V.welch_p(st.mean(a), st.stdev(a), 3, st.mean(b), st.stdev(b), 3)
    assert p == pytest.approx(ttest_ind(a, b, equal_var=False).pvalue, rel=1e-9)
    assert V.welch_p(1.0, 0.0, 3, 1.0, 0.0, 3) == 1.0 and V.welch_p(1.0, 0.0, 3, 2.0, 0.0, 3) == 0.0


# ---------------------------------------------------------------------------- verdicts in the tables
@pytest.fixture(scope="module")
def t1_runs(tmp_path_factory):
    """table1 with: ResNet-20 baseline x3 inside the paper's spread, ResNet-20 SFP 30% x3 far below,
    ResNet-32 baseline x1 within 2 paper std, ResNet-32 SFP 30% x1 outside it."""
    root = tmp_path_factory.mktemp("t1") / "runs"
    res = {f"resnet20/baseline/seed{s}": {"val_top1": v} for s, v in enumerate((92.10, 92.30, 92.25))}
    res |= {f"resnet20/sfp30/seed{s}": {"val_top1": v} for s, v in enumerate((88.0, 88.2, 87.9))}
    res |= {"resnet32/baseline/seed0": {"val_top1": 93.50}, "resnet32/sfp30/seed0": {"val_top1": 92.40}}
    write_runs(T1, root, res)
    return root, build(T1, root)


def test_a_cell_inside_the_spread_is_reproduced_and_one_far_outside_is_not(t1_runs):
    _, f = t1_runs
    base, sfp = md_row(f[".md"], "ResNet-20", "baseline"), md_row(f[".md"], "ResNet-20", "SFP 30% scratch")
    assert base["Top-1 ours"] == "92.22 ± 0.10 (3)" and base["Top-1 verdict"].startswith("reproduced (Welch p=0.")
    assert sfp["Top-1 verdict"] == "not reproduced (Welch p<0.001)"
    # the drop (paper 1.37, no std): ours 92.22 - 88.03 = 4.18, beyond the stated tolerance
    assert sfp["Top-1 drop verdict"] == "not reproduced (off by 2.81, beyond 0.50)"
    rows = f["rows"]
    assert csv_cell(rows, "resnet20/baseline", "top1")["verdict"] == "reproduced"
    c = csv_cell(rows, "resnet20/sfp30", "top1")
    assert (c["verdict"], c["verdict_detail"], c["ours_n"], c["paper_source"]) == \
           ("not reproduced", "Welch p<0.001", "3", "FPGM-T1")
    assert "reproduced (Welch p=0." in f[".tex"] and "not reproduced (Welch p$<$0.001)" in f[".tex"]


def test_one_run_against_a_paper_std_follows_the_stated_rule(t1_runs):
    _, f = t1_runs
    # ResNet-32 baseline: paper 92.63 ± 0.70; one run 93.50: |Δ| 0.87 ≤ 1.40
    assert md_row(f[".md"], "ResNet-32", "baseline")["Top-1 verdict"] == "reproduced (off by 0.87, within 1.40)"
    # ResNet-32 SFP 30%: paper 92.08 ± 0.08; one run 92.40: |Δ| 0.32 > 0.16
    assert md_row(f[".md"], "ResNet-32", "SFP 30% scratch")["Top-1 verdict"] == "not reproduced (off by 0.32, beyond 0.16)"
    assert md_row(f[".md"], "ResNet-56", "baseline")["Top-1 verdict"] == "too few runs (0 finished)"


def test_summary_line_counts_the_verdicts(t1_runs):
    _, f = t1_runs
    # judged: R20 base (yes), R20 sfp30 top-1 (no) + drop (no), R32 base (yes), R32 sfp30 top-1 (no)
    # + drop (|0.55 - 1.10| = 0.55 > 0.50: no)
    line = "Verdict: 2 of 6 checked cells reproduced (not reproduced 4, too few runs 30, no paper value 0"
    assert f"- {line}" in f[".md"]
    assert line in f[".tex"]
    assert csv_cell(f["rows"], "", "verdict_summary")["note"].startswith(line[len("Verdict: "):])
    assert V.RULE in f[".md"] and csv_cell(f["rows"], "", "verdict_rule")["note"] == V.RULE
    assert "Welch" in f[".tex"].split(r"\end{tabular}")[1]  # the rule is printed under the LaTeX table too


def test_unconfirmed_cell_gets_no_verdict_and_smoke_none_at_all(tmp_path):
    root = tmp_path / "runs"
    write_runs(T2, root, {"resnet101/baseline/seed0": {"val_top1": 77.3, "val_top5": 93.5},
                          "resnet101/sfp-scratch/seed0": {"val_top1": 77.2, "val_top5": 93.4}}, )
    f = build(T2, root)
    r101 = md_row(f[".md"], "ResNet-101", "SFP 30% scratch")
    assert r101["Top-1 paper"] == "77.03 or 77.51 (unassigned) [SB]" and r101["Top-1 verdict"] == "no paper value"
    assert r101["Top-1 Δ"] == "" and r101["Top-5 drop verdict"] == "no paper value"
    c = csv_cell(f["rows"], "resnet101/sfp-scratch", "top1")
    assert (c["verdict"], c["paper"], c["paper_candidates"], c["paper_confirmed"]) == ("no paper value", "", "77.03|77.51", "0")
    assert md_row(f[".md"], "ResNet-101", "baseline")["Top-1 verdict"] == "reproduced (off by 0.07, within 0.50)"
    # the miniature: no verdict anywhere
    smoke_root = tmp_path / "smoke"
    key = T2.runs(smoke=True)[0].key
    folders = {pl.run.key: pl.run_dir for pl in plan(T2, smoke_root, smoke=True, query=False).runs}
    folders[key].mkdir(parents=True)
    write_result(folders[key], {"status": "done", "val_top1": 70.28, "val_top5": 89.63, "wall_s": 1.0})
    paths = tables.build(T2, smoke_root, smoke_root / "out", smoke=True, png=False)
    md = paths[0].read_text()
    assert "Verdict: none: a miniature run is not comparable to the paper" in md
    assert md_row(md, "ResNet-18", "baseline")["Top-1 verdict"] == ""
    rows = list(csv.DictReader(io.StringIO(paths[2].read_text())))
    assert all(r["verdict"] == "" for r in rows)


def test_check_fails_on_a_hand_edited_verdict(t1_runs):
    root, f = t1_runs
    out = root / "out"
    assert tables.check(T1, root, out) == []
    for suffix, old, new in ((".md", "not reproduced (Welch p<0.001)", "reproduced (Welch p=0.400)"),
                             (".csv", "not reproduced,Welch p<0.001", "reproduced,Welch p=0.400")):
        p = out / f"table1{suffix}"
        text = p.read_text()
        assert old in text
        p.write_text(text.replace(old, new, 1))
        problems = tables.check(T1, root, out)
        assert len(problems) == 1 and new in problems[0]
        p.write_text(text)
    assert tables.check(T1, root, out) == []


# ---------------------------------------------------------------------------- chance, speed-up, cost
def test_a_cell_at_chance_is_flagged_in_md_tex_and_csv(tmp_path):
    root = tmp_path / "runs"
    # 10 classes, 10,000 images: chance 10%, 2 sigma = 0.6 points; 10.4 is at chance, 11.0 is not
    write_runs(T1, root, {"resnet20/baseline/seed0": {"val_top1": 10.4},
                          "resnet20/baseline/seed1": {"val_top1": 11.0},
                          "resnet32/baseline/seed0": {"val_top1": 92.0, "num_classes": None}})
    f = build(T1, root)
    assert md_row(f[".md"], "ResNet-20", "baseline")["Top-1 ours"] == "10.70 ± 0.42 (2) at chance (1 of 2)"
    assert "ResNet-20 baseline, Top-1: 1 of 2 finished runs within chance level" in f[".md"]
    assert "at chance (1 of 2)" in f[".tex"] and "1 of 2 finished runs within chance level" in f[".tex"]
    assert csv_cell(f["rows"], "resnet20/baseline", "top1")["at_chance_runs"] == "1"
    assert csv_cell(f["rows"], "resnet32/baseline", "top1")["at_chance_runs"] == "0"  # unknown classes: no flag
    assert "at chance" not in md_row(f[".md"], "ResNet-32", "baseline")["Top-1 ours"]


def test_top5_chance_uses_five_guesses():
    from repro.report.collect import at_chance
    # 1000 classes, 50,000 images: top-1 chance 0.1% + 2σ 0.028; top-5 chance 0.5% + 2σ 0.063
    r = {"num_classes": 1000, "val_images": 50_000, "val_top1": 0.12, "val_top5": 0.55}
    assert at_chance(r, "top1") and at_chance(r, "top5")
    assert not at_chance({**r, "val_top1": 0.13}, "top1") and not at_chance({**r, "val_top5": 0.57}, "top5")
    assert at_chance({"num_classes": 5, "val_images": 100, "val_top5": 100.0}, "top5")  # 5 of 5 classes: trivial
    assert at_chance({"val_images": 100, "val_top1": 1.0}, "top1") is None


LAT = {"device": "cpu", "batch": 1, "threads": 1, "precision": "fp32", "repeats": 50, "resolution": 32}


def test_speedups_measured_and_theoretical_beside_flops(tmp_path):
    root = tmp_path / "runs"
    write_runs(T1, root, {
        "resnet20/sfp30/seed0": {"val_top1": 90.0, "latency": {**LAT, "dense_ms": 2.0, "delivered_ms": 1.6},
                                 "conv_macs": 25_000_000, "baseline_conv_macs": 40_000_000},
        "resnet20/sfp30/seed1": {"val_top1": 90.2, "latency": {**LAT, "dense_ms": 2.2, "delivered_ms": 1.6},
                                 "conv_macs": 25_000_000, "baseline_conv_macs": 40_000_000},
        "resnet20/baseline/seed0": {"val_top1": 92.0, "latency": {**LAT, "dense_ms": 2.0, "delivered_ms": 2.0}}})
    f = build(T1, root)
    row = md_row(f[".md"], "ResNet-20", "SFP 30% scratch")
    assert (row["Speed-up measured"], row["Speed-up MACs"]) == ("1.31×", "1.60×")  # (1.25 + 1.375) / 2
    assert md_row(f[".md"], "ResNet-20", "SFP 20% scratch")["Speed-up measured"] == "—"  # no run yet
    assert md_row(f[".md"], "ResNet-20", "baseline")["Speed-up measured"] == ""  # not a pruned row
    assert "Speed-up measured on: device cpu, batch 1, 1 thread, fp32, 32 px, 50 repeats." in f[".md"]
    assert r"1.31$\times$" in f[".tex"]
    c = csv_cell(f["rows"], "resnet20/sfp30", "speedup_measured")
    assert (c["ours_mean"], c["ours_n"]) == ("1.3125", "2")
    assert csv_cell(f["rows"], "resnet20/sfp30", "speedup_macs")["ours_mean"] == "1.6000"


def test_cost_is_wall_time_times_devices_over_every_attempt():
    two = {"attempts": [{"world_size": 2, "device": "cuda:0"}, {"world_size": 2, "device": "cuda:0"}]}
    assert measured({"wall_s": 7200.0}, two) == Cost(4.0, "GPU", 2, True)
    assert measured({"wall_s": 7200.0}, two).text() == "4.00 GPU-h (2 attempts)"
    mixed = {"attempts": [{"world_size": 2, "device": "cuda:0"}, {"world_size": 4, "device": "cuda:0"}]}
    assert measured({"wall_s": 7200.0}, mixed).text() == "≤ 8.00 GPU-h (2 attempts)"  # shares not recorded
    assert measured({"wall_s": 36.0, "world_size": 2}, {}).text() == "0.02 device-h"
    assert measured({"wall_s": 3.6}, {"attempts": [{"world_size": 1, "device": "cpu"}]}).text() == "<0.01 CPU-h"
    assert measured({"status": "failed"}, {}).hours is None


def test_cost_per_run_and_total_in_the_footer(tmp_path):
    root = tmp_path / "runs"
    gpu2 = {"attempts": [{"world_size": 2, "device": "cuda:0"}, {"world_size": 2, "device": "cuda:1"}]}
    write_runs(T1, root, {"resnet20/baseline/seed0": {"val_top1": 92.0, "wall_s": 5400.0},
                          "resnet20/baseline/seed1": {"val_top1": 92.1, "wall_s": 1800.0}},
               envs={"resnet20/baseline/seed0": gpu2,
                     "resnet20/baseline/seed1": {"attempts": [{"world_size": 1, "device": "cuda:0"}]}})
    failed = [pl for pl in plan(T1, root, query=False).runs if pl.run.key == "resnet20/sfp10/seed0"][0].run_dir
    failed.mkdir(parents=True)
    write_result(failed, {"status": "failed", "reason": "TrainingFailed: loss is nan", "wall_s": 720.0,
                          "run_name": failed.name, "config_hash": "x"})
    atomic_write_json(failed / ENV, {"attempts": [{"world_size": 1, "device": "cuda:0"}]})
    f = build(T1, root)
    md = f[".md"]
    foot = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[1:-1]] for ln in md.split("## Run folders")[1]
            .splitlines() if ln.startswith("| resnet")}
    assert foot["resnet20/baseline/seed0"][4] == "3.00 GPU-h (2 attempts)"
    assert foot["resnet20/baseline/seed0"][5].endswith(" GPU-h")  # the launcher's estimate (checked in the csv)
    assert foot["resnet20/sfp10/seed1"][4] == "—"
    assert foot["resnet20/sfp10/seed0"][3:5] == ["failed", "0.20 GPU-h"]  # a failed run cost time too
    all_est = sum(pl.gpu_hours for pl in plan(T1, root, query=False).runs)
    total = f"measured 3.70 GPU-h over 3 runs; the launcher's estimate {all_est:.1f} GPU-h for all 60 runs"
    assert f"- Cost: {total}" in md and f"Total cost: {total}" in md
    assert md_row(md, "ResNet-20", "SFP 10% scratch")["Status"] == "failed 1, missing 2 (TrainingFailed: loss is nan)"
    c = csv_cell(f["rows"], "resnet20/baseline/seed0", "cost_hours")
    est = next(pl.gpu_hours for pl in plan(T1, root, query=False).runs if pl.run.key == "resnet20/baseline/seed0")
    assert (c["ours_mean"], c["estimate"]) == ("3.0000", f"{est:.4f}") and "GPU-hours measured" in c["note"]
    assert "3.00 GPU-h (2 attempts)" in f[".tex"]


def test_same_folders_give_byte_identical_files(t1_runs):
    root, f = t1_runs
    again = tables.build(T1, root, root / "out", write_to=root / "again", png=False)
    assert {p.suffix: p.read_text() for p in again} == {k: v for k, v in f.items() if k.startswith(".")}


def test_a_miniature_of_a_subset_of_rows_shows_those_rows(tmp_path):
    """table1's miniature runs only its smoke_rows: the table shows those, says so, and its legend
    names only what they cite."""
    assert T1.smoke_rows is not None and len(T1.smoke_rows) < len(T1.rows)
    root = tmp_path / "smoke"
    pl = plan(T1, root, smoke=True, query=False).runs[0]
    pl.run_dir.mkdir(parents=True)
    write_result(pl.run_dir, {"status": "done", "val_top1": 9.4, "wall_s": 40.0, "world_size": 1})
    paths = tables.build(T1, root, root / "out", smoke=True, png=False)
    md = paths[0].read_text()
    shown = [ln for ln in md.splitlines() if ln.startswith("| ResNet")]
    assert len(shown) == len(T1.smoke_rows)
    assert f"- Miniature rows: {len(T1.smoke_rows)} of the table's {len(T1.rows)}" in md
    assert "Runs found: 1 of 8 expected" in md and "Verdict: none" in md
    legend = md.split("Sources of the paper cells")[1].split("Notes:")[0]
    cited = {pv.source for k in T1.smoke_rows for pv in [*T1.row(k).paper.values(), T1.row(k).flops_paper] if pv}
    assert {k for k in ("FPGM-T1", "SB") if f"[{k}] " in legend} == cited
