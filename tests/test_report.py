"""repro.report on constructed run folders (result.json / env.json written as the trainer writes
them, into the folders the real plan names): the verdict rule, chance-level cells, measured and
theoretical speed-ups, and what the runs cost. Fast: no training."""
from __future__ import annotations

import csv
import dataclasses
import io
import math
import statistics as st

import numpy as np
import pytest

from repro import tables
from repro.io import atomic_write_json
from repro.papers import load_table
from repro.report import evidence as E
from repro.report import verdict as V
from repro.report.collect import RowResult
from repro.report.cost import Cost, measured
from repro.config import config_hash, run_name
from repro.rundir import ENV, MODEL, write_result
from repro.runs.plan import plan

T1, T2 = load_table("table1"), load_table("table2")


def write_done(pl, fields: dict) -> None:
    """A finished run as the folder reader accepts it (rundir.done_result): a result.json of this
    run (its name and hash, the numbers every done result carries) beside a model.pt."""
    pl.run_dir.mkdir(parents=True, exist_ok=True)
    write_result(pl.run_dir, {"status": "done", "val_top5": 99.0, "flops_reduction": 0.0,
                              "run_name": run_name(pl.cfg), "config_hash": config_hash(pl.cfg), **fields})
    (pl.run_dir / MODEL).write_bytes(b"the report never reads it")


def write_runs(spec, root, results: dict[str, dict], envs: dict[str, dict] | None = None) -> None:
    """results: run key ('resnet20/baseline/seed0') -> result.json fields on top of a done result."""
    planned = {pl.run.key: pl for pl in plan(spec, root, query=False).runs}
    for key, fields in results.items():
        write_done(planned[key], {"val_images": 10_000, "num_classes": 10, "wall_s": 3600.0, "world_size": 1,
                                  "finished": "2030-01-01T00:00:00+00:00", "code_version": "test", **fields})
        if envs and key in envs:
            atomic_write_json(planned[key].run_dir / ENV, envs[key])


def build(spec, root):
    paths = tables.build(spec, root, root / "out", png=False)
    files = {p.suffix: p.read_text() for p in paths}
    files["rows"] = list(csv.DictReader(io.StringIO(files[".csv"])))
    return files


def md_table(md: str, first: str) -> list[dict[str, str]]:
    """The rows of the Markdown table whose header starts with `first` ('Depth': the main table)."""
    lines = md.splitlines()
    i = next(k for k, ln in enumerate(lines) if ln.startswith(f"| {first}"))
    header = [c.strip() for c in lines[i].split("|")[1:-1]]
    out = []
    for ln in lines[i + 2:]:
        if not ln.startswith("|"):
            break
        out.append(dict(zip(header, [c.strip() for c in ln.split("|")[1:-1]])))
    return out


def md_row(md: str, model: str, method: str, fine_tune: str = "N") -> dict[str, str]:
    """A row of the main table (SFP's layout: Depth | Method | Fine-tune? | ...)."""
    for r in md_table(md, "Depth"):
        if (r["Depth"], r["Method"], r["Fine-tune?"]) == (model, method, fine_tune):
            return r
    raise KeyError((model, method, fine_tune))


def detail_row(md: str, model: str, variant: str) -> dict[str, str]:
    """A row of the run-details table (every row of the declaration, baselines included)."""
    details = md.split("## Run details")[1]
    return next(r for r in md_table(details, "Depth") if (r["Depth"], r["Variant"]) == (model, variant))


def csv_cell(rows, row: str, metric: str) -> dict:
    return next(r for r in rows if r["row"] == row and r["metric"] == metric)


def verdict_word(cell: str) -> str:
    return cell.split("<sup>")[0]


# ---------------------------------------------------------------------------- the rule itself
def _rr(spec, key: str, values: dict[str, dict[int, float]], base=None) -> RowResult:
    """A collected row built from per-seed values (metric -> seed -> value), as collect() builds it."""
    rr = RowResult(spec.row(key), [], {m: list(v.values()) for m, v in values.items()}, values)
    rr.base = base
    return rr


def _verdict(spec, rr, metric):
    est = E.ours(spec, rr, metric)
    return V.judge(E.comparison_at(spec, rr, metric), est.n if est else 0, E.min_runs(spec))


def test_tost_interval_is_welchs_with_scipys_t_quantile():
    """One cell by hand: d, se and df are Welch's, the interval uses scipy.stats.t."""
    from scipy.stats import t
    rr = _rr(T1, "resnet20/baseline", {"top1": {0: 92.1, 1: 92.4, 2: 92.0}})
    c = E.comparison_at(T1, rr, "top1")(3)
    va, vb = st.variance([92.1, 92.4, 92.0]) / 3, 0.18 ** 2 / 3
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
    assert (c.diff, c.se, c.df) == pytest.approx((st.mean([92.1, 92.4, 92.0]) - 92.20, math.sqrt(va + vb), df))
    assert V.interval(c) == pytest.approx((c.diff - t.ppf(0.95, df) * c.se, c.diff + t.ppf(0.95, df) * c.se))
    assert (c.lo, c.hi) == (-1.0, 1.0) and E.margin(T1).delta == 1.0


# CIFAR rows of the paper (std over 3 runs): the smallest and the largest std, and two between.
SIM_ROWS = [("resnet32/sfp30", 0.08), ("resnet20/baseline", 0.18), ("resnet110/sfp30", 0.30), ("resnet32/baseline", 0.70)]
DRAWS = 2000


def _simulated_labels(key: str, sigma: float, gap: float, seed: int) -> np.ndarray:
    """DRAWS seeded experiments: the paper's 3 runs and ours ~ N(mu, sigma) and N(mu + gap, sigma);
    each judged through the real evidence and rule (the paper's printed mean ± std replaced by the
    simulated paper's)."""
    rng = np.random.default_rng(seed)
    row = T1.row(key)
    paper_runs = rng.normal(92.0, sigma, (DRAWS, 3))
    ours_runs = rng.normal(92.0 + gap, sigma, (DRAWS, 3))
    diff, se, df = [], [], []
    for p, o in zip(paper_runs, ours_runs):
        pv = dataclasses.replace(row.paper["top1"], value=float(p.mean()), std=float(p.std(ddof=1)))
        rr = RowResult(dataclasses.replace(row, paper={"top1": pv}), [], {}, {"top1": dict(enumerate(map(float, o)))})
        c = E.comparison_at(T1, rr, "top1")(3)
        diff.append(c.diff), se.append(c.se), df.append(c.df)
    return V.decide(diff, se, df, -E.margin(T1).delta, E.margin(T1).delta)


@pytest.mark.parametrize("key,sigma", SIM_ROWS)
def test_error_rates_by_simulation(key, sigma):
    """A true gap of 0 is called not reproduced in <= 5% of draws; a true gap of 2 delta is called
    reproduced in <= 5% (the rule's two error rates, over 2,000 seeded draws each)."""
    delta = E.margin(T1).delta
    same = _simulated_labels(key, sigma, 0.0, seed=1)
    off = _simulated_labels(key, sigma, 2 * delta, seed=2)
    assert (same == V.NOT_REPRODUCED).mean() <= 0.05
    assert (off == V.REPRODUCED).mean() <= 0.05
    # and the rule is not vacuous: with the smallest std it does decide most draws
    if sigma <= 0.18:
        assert (same == V.REPRODUCED).mean() > 0.5 and (off == V.NOT_REPRODUCED).mean() > 0.5


def test_imagenet_single_numbers_use_the_prior_then_our_spread():
    pv = T2.row("resnet50/sfp-scratch").paper["top1"]  # 74.61, one number
    one = E.comparison_at(T2, _rr(T2, "resnet50/sfp-scratch", {"top1": {0: 74.0}}), "top1")(1)
    prior = E.prior_std(T2, 74.0)
    assert prior == pytest.approx(100 * math.sqrt(0.74 * 0.26 / 50_000))
    assert one.se == pytest.approx(prior * math.sqrt(2)) and one.df == math.inf and "prior" in one.basis
    two = E.comparison_at(T2, _rr(T2, "resnet50/sfp-scratch", {"top1": {0: 74.0, 1: 74.4}}), "top1")(2)
    assert two.se == pytest.approx(st.stdev([74.0, 74.4]) * math.sqrt(1 / 2 + 1)) and two.df == 1
    assert "our run-to-run std (2 runs)" in two.basis and pv.value == 74.61


def test_the_flip_case_no_longer_flips():
    """Against 92.08 ± 0.08 (3 runs): one run at 92.40, then a worse second one at 93.40, never
    turns 'not reproduced' into 'reproduced'; with 3 runs, adding a worse one moves away from it."""
    key = "resnet32/sfp30"
    labels = [_verdict(T1, _rr(T1, key, {"top1": dict(enumerate(v))}), "top1")
              for v in ([92.40], [92.40, 93.40], [92.40, 92.45, 92.35], [92.40, 92.45, 92.35, 93.40])]
    assert [v.short() for v in labels[:2]] == ["inconclusive (1 of 3 runs)", "inconclusive (2 of 3 runs)"]
    assert labels[2].label == V.REPRODUCED and labels[3].label == V.INCONCLUSIVE
    # the other cases: a 3.65-point gap with std 1.5 is not 'reproduced'
    wide = _verdict(T1, _rr(T1, "resnet20/baseline", {"top1": {0: 94.35, 1: 95.85, 2: 96.35}}), "top1")
    assert wide.label != V.REPRODUCED


def test_below_the_minimum_runs_there_is_no_decision():
    assert E.min_runs(T1) == 3 and E.min_runs(T2) == 1 and E.min_runs(load_table("snf_cifar")) == 2
    v = _verdict(T1, _rr(T1, "resnet20/baseline", {"top1": {0: 92.2, 1: 92.2}}), "top1")
    assert (v.label, v.n, v.min_runs, v.runs_needed) == (V.INCONCLUSIVE, 2, 3, 3)


def test_snf_sign_is_respected():
    """SNF's -0.14 drop is a gain: a pruned model 0.36 points worse than its baseline is not
    reproduced, though |d| = 0.50 is inside +-delta; 0.30 better is reproduced."""
    snf = load_table("snf_cifar")
    base = {0: 93.0, 1: 93.2, 2: 93.4}
    for drop, label in ((0.36, V.NOT_REPRODUCED), (-0.30, V.REPRODUCED)):
        b = _rr(snf, "resnet56/baseline", {"top1": base})
        pruned = {s: v - drop + 0.03 * (s - 1) for s, v in base.items()}
        rr = _rr(snf, "resnet56/snf52.94", {"top1": pruned}, base=b)
        assert E.paired(rr)  # SNF starts from the same seed's baseline
        v = _verdict(snf, rr, "top1_drop")
        assert v.label == label, v.detail()
        assert (v.comparison.lo, v.comparison.hi) == (-1.0, pytest.approx(0.14))


def test_paired_drop_uses_the_per_seed_differences():
    base = _rr(T1, "resnet56/baseline", {"top1": {0: 93.0, 1: 94.0, 2: 93.5}})
    pre = _rr(T1, "resnet56/sfp30-pretrained", {"top1": {0: 92.5, 1: 93.6, 2: 93.0}}, base=base)
    scratch = _rr(T1, "resnet56/sfp30", {"top1": {0: 92.5, 1: 93.6, 2: 93.0}}, base=base)
    e, u = E.ours(T1, pre, "top1_drop"), E.ours(T1, scratch, "top1_drop")
    assert E.paired(pre) and not E.paired(scratch)
    assert e.mean == pytest.approx(0.4667, abs=1e-4) and e.spread == pytest.approx(st.stdev([0.5, 0.4, 0.5]))
    assert u.mean == pytest.approx(e.mean) and u.spread > 5 * e.spread  # unpaired: the seeds' spread stays


# ---------------------------------------------------------------------------- verdicts in the tables
@pytest.fixture(scope="module")
def t1_runs(tmp_path_factory):
    """table1 with three rows decided three ways: ResNet-20 SFP 30% reproduced, ResNet-56 SFP 40%
    not reproduced, ResNet-110 SFP 30% inconclusive; ResNet-32 with fewer runs than the paper's 3."""
    root = tmp_path_factory.mktemp("t1") / "runs"
    runs = {"resnet20/baseline": (92.15, 92.25, 92.20), "resnet20/sfp30": (90.80, 90.85, 90.90),
            "resnet56/baseline": (93.5, 93.6, 93.7), "resnet56/sfp40": (88.0, 88.1, 88.2),
            "resnet110/baseline": (93.0, 94.5, 93.6), "resnet110/sfp30": (92.0, 94.0, 93.5),
            "resnet32/baseline": (93.50,), "resnet32/sfp30": (92.40,)}
    write_runs(T1, root, {f"{k}/seed{s}": {"val_top1": v} for k, vs in runs.items() for s, v in enumerate(vs)})
    return root, build(T1, root)


def test_the_table_shows_each_verdict_the_summary_and_the_footnotes(t1_runs):
    _, f = t1_runs
    md = f[".md"]
    assert verdict_word(md_row(md, "ResNet-20", "SFP 30%")["Verdict"]) == "reproduced"
    assert verdict_word(md_row(md, "ResNet-56", "SFP 40%")["Verdict"]) == "not reproduced"
    assert verdict_word(md_row(md, "ResNet-110", "SFP 30%")["Verdict"]).startswith("inconclusive (")
    assert verdict_word(md_row(md, "ResNet-32", "SFP 30%")["Verdict"]) == "inconclusive (1 of 3 runs)"
    assert verdict_word(md_row(md, "ResNet-20", "SFP 10%")["Verdict"]) == "not run"
    # the summary comes first, then the rule with its delta and minimum runs
    head = md.split("| Depth")[0]
    line = "- Verdict: 16 rows: reproduced 1, not reproduced 1, inconclusive 2, not run 12"
    assert line in head and head.index(line) < head.index("- Verdict rule:") < head.index("- Paper:")
    assert "±δ = 1.0 points" in head and "below 3 runs of ours" in head
    # footnotes: the source letters, the caveats and the paper's uncertainty a verdict used
    r = md_row(md, "ResNet-20", "SFP 30%")
    assert r["Pruned paper"] == "90.83 ± 0.31<sup>a</sup>" and r["Pruned ours"] == "90.85 ± 0.05"
    n = r["Verdict"].split("<sup>")[1].removesuffix("</sup>")
    assert f"- {n}: Paper's uncertainty: the paper's mean ± std over its 3 runs" in md
    assert "(mark a)" in md and "- 1: not printed: the transcribed baseline minus" in md
    assert "\\textsuperscript{a}" in f[".tex"]
    c = csv_cell(f["rows"], "resnet56/sfp40", "top1")
    assert c["verdict"] == "not reproduced" and float(c["ci90_hi"]) < -1.0 and c["band_lo"] == "-1.0000"
    assert csv_cell(f["rows"], "resnet20/sfp30", "row_verdict")["verdict"] == "reproduced"
    assert csv_cell(f["rows"], "", "verdict_summary")["note"] == line[len("- Verdict: "):]


def test_a_table_with_runs_compiles_and_fits_the_page(t1_runs, tmp_path):
    from test_tables import assert_compiles_and_fits  # tests/ is on sys.path (pytest's rootdir import)
    root, _ = t1_runs
    assert_compiles_and_fits(root / "out" / "table1.tex", tmp_path)
    r2 = tmp_path / "t2"
    write_runs(T2, r2, {"resnet18/baseline/seed0": {"val_top1": 70.1, "val_top5": 89.5},
                        "resnet18/sfp-scratch/seed0": {"val_top1": 65.0, "val_top5": 86.9},
                        "resnet101/baseline/seed0": {"val_top1": 77.4, "val_top5": 93.6},
                        "resnet101/sfp-pretrained/seed0": {"val_top1": 77.0, "val_top5": 93.5}})
    build(T2, r2)
    assert_compiles_and_fits(r2 / "out" / "table2.tex", tmp_path)


def test_run_details_hold_the_figures_behind_each_verdict(t1_runs):
    _, f = t1_runs
    d = detail_row(f[".md"], "ResNet-56", "SFP 40% scratch")
    assert d["n (runs behind each cell)"] == "Top-1 3, Top-1 drop 3"
    assert d["Checks: d = ours − paper, its 90% interval, the band"].startswith("Top-1 not reproduced: d = -4.16, 90% CI [")
    assert detail_row(f[".md"], "ResNet-20", "baseline")["Status"] == "done 3/3"


def test_protocol_mismatch_gives_no_verdict(tmp_path):
    tv = load_table("table2_tveval")
    root = tmp_path / "runs"
    write_runs(tv, root, {"resnet18/baseline/seed0": {"val_top1": 69.76, "val_top5": 89.08},
                          "resnet18/sfp-pretrained/seed0": {"val_top1": 67.0, "val_top5": 87.7}})
    f = build(tv, root)
    assert verdict_word(md_row(f[".md"], "ResNet-18", "SFP 30%", "Y")["Verdict"]) == "context only"
    assert "Verdict rule: none for this table" in f[".md"] and "reproduced 0" in f[".md"]
    assert {r["verdict"] for r in f["rows"] if r["metric"] in ("top1", "top5")} <= {"context only", ""}
    # the paper protocol's ResNet-50 row from pre-trained: no source states its protocol
    root2 = tmp_path / "runs2"
    write_runs(T2, root2, {"resnet50/baseline/seed0": {"val_top1": 76.1, "val_top5": 92.9},
                           "resnet50/sfp-pretrained/seed0": {"val_top1": 62.1, "val_top5": 84.6}})
    f2 = build(T2, root2)
    assert verdict_word(md_row(f2[".md"], "ResNet-50", "SFP 30%", "Y")["Verdict"]) == "context only"
    assert "Context only: no source states the protocol behind this row" in f2[".md"]


def test_unconfirmed_cell_gets_no_verdict_and_smoke_none_at_all(tmp_path):
    root = tmp_path / "runs"
    write_runs(T2, root, {"resnet101/baseline/seed0": {"val_top1": 77.3, "val_top5": 93.5},
                          "resnet101/sfp-scratch/seed0": {"val_top1": 77.2, "val_top5": 93.4}})
    f = build(T2, root)
    r101 = md_row(f[".md"], "ResNet-101", "SFP 30%")
    assert r101["Pruned (top-1 / top-5) paper"].startswith("77.03/93.46 or 77.51/93.71<sup>b,")
    c = csv_cell(f["rows"], "resnet101/sfp-scratch", "top1")
    assert (c["verdict"], c["paper"], c["paper_candidates"], c["paper_confirmed"]) == ("no paper value", "", "77.03|77.51", "0")
    # the baseline is judged (one run against one number: the stated prior), the row is not decided by it alone
    assert csv_cell(f["rows"], "resnet101/baseline", "top1")["verdict"] == "reproduced"
    assert verdict_word(r101["Verdict"]) == "reproduced"
    # the miniature: no verdict anywhere
    smoke_root = tmp_path / "smoke"
    key = T2.runs(smoke=True)[0].key
    planned = {pl.run.key: pl for pl in plan(T2, smoke_root, smoke=True, query=False).runs}
    write_done(planned[key], {"val_top1": 70.28, "val_top5": 89.63, "wall_s": 1.0})
    paths = tables.build(T2, smoke_root, smoke_root / "out", smoke=True, png=False)
    md = paths[0].read_text()
    assert "Verdict: none: a miniature run is not comparable to the paper" in md
    assert md_row(md, "ResNet-18", "SFP 30%")["Verdict"] == "none (miniature)"
    rows = list(csv.DictReader(io.StringIO(paths[2].read_text())))
    assert all(r["verdict"] == "" for r in rows)


def test_check_fails_on_a_hand_edited_verdict(t1_runs):
    root, f = t1_runs
    out = root / "out"
    assert tables.check(T1, root, out) == []
    for suffix, old, new in ((".md", "| not reproduced<sup>", "| reproduced<sup>"),
                             (".csv", "row_verdict,,,,,,,,,,,,,,,,not reproduced", "row_verdict,,,,,,,,,,,,,,,,reproduced"),
                             (".tex", r"{@{}l@{}}not\\reproduced\end{tabular}", r"{@{}l@{}}reproduced\end{tabular}")):
        p = out / f"table1{suffix}"
        text = p.read_text()
        assert old in text, suffix
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
    cell = md_row(f[".md"], "ResNet-20", "SFP 10%")["Baseline ours"]
    assert cell.startswith("10.70 ± 0.42<sup>")
    n = cell.split("<sup>")[1].removesuffix("</sup>")
    assert f"- {n}: at chance: ResNet-20 baseline, Top-1: 1 of 2 finished runs within chance level" in f[".md"]
    assert "1 of 2 finished runs within chance level" in f[".tex"]
    assert csv_cell(f["rows"], "resnet20/baseline", "top1")["at_chance_runs"] == "1"
    assert csv_cell(f["rows"], "resnet32/baseline", "top1")["at_chance_runs"] == "0"  # unknown classes: no flag
    assert md_row(f[".md"], "ResNet-32", "SFP 10%")["Baseline ours"] == "92.00"


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
    folded = {"align": 8, "aligned_repeats": 3}
    write_runs(T1, root, {
        "resnet20/sfp30/seed0": {"val_top1": 90.0, "latency": {**LAT, "dense_ms": 2.0, "delivered_ms": 1.6, **folded,
                                                               "folded_dense_ms": 1.8, "aligned_folded_ms": 1.2},
                                 "conv_macs": 25_000_000, "baseline_conv_macs": 40_000_000},
        # a run from before the aligned figure: the measured column still counts it, the aligned one not
        "resnet20/sfp30/seed1": {"val_top1": 90.2, "latency": {**LAT, "dense_ms": 2.2, "delivered_ms": 1.6},
                                 "conv_macs": 25_000_000, "baseline_conv_macs": 40_000_000},
        "resnet20/baseline/seed0": {"val_top1": 92.0, "latency": {**LAT, "dense_ms": 2.0, "delivered_ms": 2.0}}})
    f = build(T1, root)
    row = detail_row(f[".md"], "ResNet-20", "SFP 30% scratch")
    measured, aligned = "Speed-up measured (as delivered)", "Speed-up aligned x8 + BN folded"
    assert (row[measured], row[aligned], row["Speed-up MACs"]) == ("1.31×", "1.50×", "1.60×")  # (1.25 + 1.375) / 2
    assert detail_row(f[".md"], "ResNet-20", "SFP 20% scratch")[measured] == "—"  # no run yet
    assert detail_row(f[".md"], "ResNet-20", "baseline")[measured] == ""  # not a pruned row
    assert ("Speed-up measured on: device cpu, batch 1, 1 thread, fp32, 32 px, 50 repeats. Aligned x8 + BN folded: "
            "the same settings, 3 repeats.") in f[".md"]
    assert "'measured (as delivered)'" in f[".md"] and "'aligned x8 + BN folded'" in f[".md"]  # the legend
    assert r"1.31$\times$" in f[".tex"]  # the run details, as a comment under the LaTeX table
    c = csv_cell(f["rows"], "resnet20/sfp30", "speedup_measured")
    assert (c["ours_mean"], c["ours_n"]) == ("1.3125", "2")
    c = csv_cell(f["rows"], "resnet20/sfp30", "speedup_aligned_folded")
    assert (c["ours_mean"], c["ours_n"]) == ("1.5000", "1")
    assert csv_cell(f["rows"], "resnet20/sfp30", "speedup_macs")["ours_mean"] == "1.6000"
    # runs with the as-delivered figure only: no aligned column at all
    write_runs(T1, root, {"resnet20/sfp30/seed0": {"val_top1": 90.0, "latency": {**LAT, "dense_ms": 2.0,
                                                                                  "delivered_ms": 1.6}}})
    assert aligned not in build(T1, root)[".md"]


def test_aligned_column_is_labelled_with_the_engines_alignment():
    from repro.engine.latency import ALIGN
    from repro.report.collect import ALIGNED_TO
    assert ALIGNED_TO == ALIGN


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
    assert detail_row(md, "ResNet-20", "SFP 10% scratch")["Status"] == "failed 1, not run 2 (TrainingFailed: loss is nan)"
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
    write_done(pl, {"val_top1": 9.4, "wall_s": 40.0, "world_size": 1})
    paths = tables.build(T1, root, root / "out", smoke=True, png=False)
    md = paths[0].read_text()
    shown = md_table(md, "Depth")  # the main table: the pruned rows; the run details: every row
    assert len(shown) == len([k for k in T1.smoke_rows if "baseline" not in k])
    assert len(md_table(md.split("## Run details")[1], "Depth")) == len(T1.smoke_rows)
    assert f"- Miniature rows: {len(T1.smoke_rows)} of the table's {len(T1.rows)}" in md
    assert "Runs found: 1 of 8 expected" in md and "Verdict: none" in md
    legend = md.split("Sources of the paper cells")[1].split("Footnotes")[0]
    cited = {pv.source for k in T1.smoke_rows for pv in [*T1.row(k).paper.values(), T1.row(k).flops_paper] if pv}
    assert {k for k in ("FPGM-T1", "SB") if f"[{k}] " in legend} == cited


def test_miniature_says_why_rows_are_left_out_and_all_rows_shows_them(tmp_path):
    """table2's miniature names its left-out rows' reason in its header; --all-rows (the same run
    folders) shows every row, and its table is rebuilt and checked with the flag."""
    assert T2.smoke_rows is not None and T2.smoke_rows_why
    root = tmp_path / "smoke"
    every = plan(T2.every_row(), root, smoke=True, query=False).runs
    (pl,) = [p for p in every if p.run.row.key == "resnet34/baseline"]  # not a row of the miniature
    write_done(pl, {"val_top1": 98.0, "val_top5": 100.0, "wall_s": 40.0, "world_size": 1})
    md = tables.build(T2, root, root / "out", smoke=True, png=False)[0].read_text()
    assert f"- Miniature rows: {len(T2.smoke_rows)} of the table's {len(T2.rows)}: {T2.smoke_rows_why}\n" in md
    assert "Runs found: 0 of 2 expected" in md
    out = root / "out-all"
    md = tables.build(T2, root, out, smoke=True, png=False, all_rows=True)[0].read_text()
    assert "Miniature rows" not in md and f"Runs found: 1 of {len(T2.rows)} expected" in md
    assert f"`python -m repro.tables table2 --root {root} --out {out} --smoke --all-rows`" in md
    assert tables.check(T2, root, out, smoke=True, all_rows=True) == []


def test_deployed_speed_up_column_appears_only_with_exports(tmp_path):
    """The run-details column 'Speed-up deployed' (repro.export's latency.json) shows when some run
    was exported, and is absent otherwise (the export is opt-in)."""
    from repro.export import LATENCY, OUT_DIR
    root = tmp_path / "runs"
    write_runs(T2, root, {"resnet18/baseline/seed0": {"val_top1": 70.1, "val_top5": 89.5},
                          "resnet18/sfp-scratch/seed0": {"val_top1": 65.0, "val_top5": 86.9}})
    assert "Speed-up deployed" not in build(T2, root)[".md"]
    pl = next(p for p in plan(T2, root, query=False).runs if p.run.key == "resnet18/sfp-scratch/seed0")
    atomic_write_json(pl.run_dir / OUT_DIR / LATENCY, {  # the fields repro.export.deployed_speedup reads
        "exported": "delivered", "batches": {"1": {"onnxruntime-cpu": {"dense_ms": 3.0, "delivered_ms": 2.0}},
                                             "8": {"onnxruntime-cpu": {"dense_ms": 20.0, "delivered_ms": 16.0}}}})
    md = build(T2, root)[".md"]
    assert detail_row(md, "ResNet-18", "SFP 30% scratch")["Speed-up deployed"] == "1.25×"  # the throughput batch
