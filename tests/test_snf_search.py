"""SNF search variants: BN re-estimated curves, joint cuts, the weights floor, the harness end to end."""
import copy
import json
import math
import re
import statistics
import time

import pytest
import torch
import torch.nn.functional as F

from repro.bench import snf_search
from repro.bench.snf_search_report import paired_tests
from repro.prune.hard import hard_prune
from repro.prune.joint import measure_cuts
from repro.prune.sensitivity import measure
from repro.prune.snf import grid_counts, kept_indices, search, spec_weights, uniform_search
from repro.prune.snf_variants import VARIANTS, Context, run_weights, stage_groups
from tests.test_snf import calibrated, digits_heldout

ARCH = "resnet20"
COUNTS = {"conv1": [4, 8], "layer2.0.conv2": [8], "layer3.2.conv1": [1, 40]}


def held_batches():
    x, y = digits_heldout(24)
    return [(x[:16], y[:16]), (x[16:], y[16:])]


def brute_loss(model, cut, held, batch_stats):
    """Hard-prune a copy and evaluate it; batch_stats: train-mode BN on each held-out batch."""
    m = hard_prune(copy.deepcopy(model), ARCH, kept_indices(model, ARCH, cut))
    total = 0.0
    with torch.no_grad():
        for x, y in held:
            m.train(batch_stats)
            total += F.cross_entropy(m(x), y, reduction="sum").item()
    return total / sum(len(y) for _, y in held)


@pytest.mark.parametrize("bn", ["eval", "batch"])
def test_curves_equal_hard_pruning_in_both_bn_modes_and_any_chunking(tmp_path, bn):
    model = calibrated(ARCH)
    held = held_batches()
    small = measure(model, ARCH, held, COUNTS, bn=bn, use_cache=False, progress=False, max_batch=8)
    big = measure(model, ARCH, held, COUNTS, bn=bn, use_cache=False, progress=False, max_batch=1024)
    base = brute_loss(model, {}, held, bn == "batch")
    assert small.base_loss == pytest.approx(base, rel=1e-5)
    for name, ks in COUNTS.items():
        for k in ks:
            want = brute_loss(model, {name: k}, held, bn == "batch") - base
            assert small.rise[name][k] == pytest.approx(want, abs=5e-5)
            assert big.rise[name][k] == pytest.approx(want, abs=5e-5)
    assert small.bn_recalibration.startswith("none" if bn == "eval" else "per cut")


def test_bn_mode_is_part_of_the_cache_key(tmp_path):
    model, held = calibrated(ARCH), held_batches()
    a = measure(model, ARCH, held, COUNTS, bn="eval", cache_dir=tmp_path, progress=False)
    b = measure(model, ARCH, held, COUNTS, bn="batch", cache_dir=tmp_path, progress=False)
    assert not b.cached and a.key != b.key
    assert measure(model, ARCH, held, COUNTS, bn="batch", cache_dir=tmp_path, progress=False).cached


@pytest.mark.parametrize("bn", ["eval", "batch"])
def test_joint_cuts_equal_hard_pruning(bn):
    model, held = calibrated(ARCH), held_batches()
    cuts = [{}, {"layer3.2.conv1": 40}, {"conv1": 4, "layer2.1.conv1": 3, "layer3.2.conv1": 40},
            {"layer1.0.conv1": 2, "layer1.0.conv2": 5}]
    scores = measure_cuts(model, ARCH, held, cuts, bn=bn, max_batch=20)
    base = brute_loss(model, {}, held, bn == "batch")
    assert scores.base_loss == pytest.approx(base, rel=1e-5)
    for cut, loss in zip(cuts, scores.loss):
        assert loss == pytest.approx(brute_loss(model, cut, held, bn == "batch"), rel=1e-4, abs=1e-5)


def test_stage_groups_cover_every_prunable_conv_once():
    groups = stage_groups("resnet56")
    names = [c.name for g in groups.values() for c in g]
    assert len(names) == len(set(names)) == 55 and len(groups) == 6
    assert "conv1" in {c.name for c in groups["layer1/output"]}


def test_weights_variant_keeps_at_least_the_uniform_models_weights():
    # Curves that make cutting the wide (weight-heavy) stage-3 convs look free: plain SNF guts them.
    counts = grid_counts(ARCH)
    rise = {n: {k: (0.0 if n.startswith("layer3") else 1.0) * (1 - k / ks[-1]) for k in ks[:-1]}
            for n, ks in counts.items()}
    floor = spec_weights(ARCH, uniform_search(ARCH, 50.0).kept)
    assert spec_weights(ARCH, search(ARCH, rise, 50.0).kept) < floor
    ctx = Context(calibrated(ARCH), ARCH, held_batches(), 50.0, (0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125))
    import repro.prune.snf_variants as sv
    original = sv._curves
    sv._curves = lambda _ctx, _bn: type("S", (), {"rise": rise})()
    try:
        result = run_weights(ctx)
    finally:
        sv._curves = original
    assert spec_weights(ARCH, result.kept) >= floor == ctx.info["weights_floor"]
    assert 50.0 <= result.reduction <= 50.1 + 1e-9


def test_paired_tests():
    t, w = paired_tests([1.0, 2.0, 1.5, 0.5, 1.0])
    assert t < 0.05 and w == pytest.approx(0.0625)
    assert paired_tests([0.0, 0.0]) == (1.0, None)


@pytest.mark.timeout(300)  # wall time on a loaded 2-core machine; the budget below is CPU time
def test_harness_quick_end_to_end(tmp_path):
    """--quick runs every method end to end in well under a minute of CPU (one thread, in this
    process: CPU time, unlike wall time, does not depend on what else the machine runs)."""
    torch.set_num_threads(1)
    start = time.process_time()
    argv = ["--quick", "--out", str(tmp_path), "--cache-dir", str(tmp_path / "cache")]
    assert snf_search.main(argv) == 0
    assert time.process_time() - start < 45
    rows = [json.loads(line) for line in (tmp_path / "snf_search.jsonl").read_text().splitlines()]
    assert {r["method"] for r in rows} == {"uniform", *VARIANTS}
    uni = next(r for r in rows if r["method"] == "uniform")
    for r in rows:
        if r["method"] != "uniform":  # equal FLOPs: never more MACs than uniform, within 0.1 point
            assert r["conv_macs"] <= uni["conv_macs"]
            assert 0 <= r["flops_reduction"] - uni["flops_reduction"] <= 0.1
    md = (tmp_path / "snf_search.md").read_text()
    assert "| resnet20 | 50% | uniform | 1 |" in md and "Verdict" in md
    # resumable: a rerun finds everything done and trains nothing
    start = time.process_time()
    assert snf_search.main(argv) == 0
    assert len((tmp_path / "snf_search.jsonl").read_text().splitlines()) == len(rows)
    assert time.process_time() - start < 5
    assert not math.isnan(uni["top1"])
    # a seed whose dense baseline misses the bar is recorded as left out and never pruned
    other = tmp_path / "strict"
    assert snf_search.main(["--quick", "--out", str(other), "--cache-dir", str(tmp_path / "cache"),
                            "--min-baseline", "101"]) == 0
    left = [json.loads(line) for line in (other / "snf_search.jsonl").read_text().splitlines()]
    assert [(r["method"], r["rejected"]) for r in left] == [("baseline", True)]
    assert "resnet20 seed 0" in (other / "snf_search.md").read_text()


def test_verdict_is_provisional_until_every_setting_has_five_seeds_and_says_what_survives_holm():
    from repro.bench.snf_search_report import holm_survivors, incomplete, summarise, verdict_text

    def row(method, seed, top1, arch="resnet20", red=50.0):
        return {"arch": arch, "reduction": red, "method": method, "seed": seed, "top1": top1,
                "flops_reduction": red, "pruned_recal_top1": 0.0, "val_loss": 0.1, "baseline_top1": 99.0,
                "search_s": 1.0, "finetune_s": 1.0}
    # 'stage' beats uniform by ~1 point on every seed (p tiny); 'rise' is even; nothing else ran
    rows = [row("uniform", s, 90.0 + s / 10) for s in range(1, 6)]
    rows += [row("stage", s, 91.0 + s / 10 + (0.01 if s == 3 else 0)) for s in range(1, 6)]
    rows += [row("rise", s, 90.0 + s / 10 + (0.2 if s % 2 else -0.2)) for s in range(1, 6)]
    entries, verdict = summarise(rows)
    assert verdict["stage"]["beats"] == ["resnet20 50%"] and verdict["rise"]["beats"] == []
    assert holm_survivors(verdict) == {("stage", "resnet20 50%")}
    settings = [("resnet20", 50.0), ("resnet20", 70.0)]
    short = incomplete(entries, settings)
    assert "rise-bn in resnet20 50% (n = 0)" in short and "uniform in resnet20 70% (n = 0)" in short
    assert not any(s.startswith(("stage in resnet20 50%", "uniform in resnet20 50%")) for s in short)
    text = verdict_text(verdict, entries, settings)
    assert text.startswith("**Provisional**") and "`stage` in resnet20 50% survives Holm's correction" in text
    # every method with 5 seeds in every setting of the sweep: final
    rows += [row(m, s, 90.0 + s / 10) for m in ("rise-bn", "weights") for s in range(1, 6)]
    entries, verdict = summarise(rows)
    assert incomplete(entries, settings[:1]) == []
    assert verdict_text(verdict, entries, settings[:1]).startswith("**Criterion met**")


# --- the pre-registered confirmation (docs/snf_confirm.md, issue 23) ---

def test_holm_adjusts_in_input_order_and_is_monotone():
    from repro.bench.snf_confirm_report import holm

    assert holm([0.04, 0.01]) == pytest.approx([0.04, 0.02])
    assert holm([0.03, 0.02]) == pytest.approx([0.04, 0.04])  # step-down: never below an earlier one
    assert holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])


def test_confirmation_verdicts_follow_the_plans_rules():
    from scipy import stats

    from repro.bench.snf_confirm_report import DELTA, NetResult, default_after, holm, paired_p

    def net(diffs):
        uni = [98.0 + i / 10 for i in range(len(diffs))]
        r = NetResult("resnet20", list(range(101, 101 + len(diffs))), uni, [u + d for u, d in zip(uni, diffs)])
        r.p = r.p_holm = paired_p(r.uniform, r.rise_bn)
        return r

    up, down = net([0.5, 0.8, 0.6, 0.7, 0.9, 0.5]), net([-0.5, -0.8, -0.6, -0.7, -0.9, -0.5])
    flat, noisy = net([0.0, 0.01, -0.01, 0.02, -0.02, 0.0]), net([3.0, -2.0, 1.5, -1.0, 2.5, -1.5])
    assert [r.verdict() for r in (up, down, flat, noisy)] == ["confirmed", "reversed", "not confirmed", "inconclusive"]
    assert flat.interval()[1] < DELTA <= noisy.interval()[1]
    # the interval is scipy's own for the paired t-test
    ci = stats.ttest_rel(noisy.rise_bn, noisy.uniform).confidence_interval(0.95)
    assert noisy.interval() == pytest.approx((ci.low, ci.high))
    # Holm over the two nets can turn a nominal win into "inconclusive"
    weak = net([0.4, 0.1, 0.5, 0.2, 0.3, -0.1])
    weak.p_holm = holm([weak.p, 0.9])[0]
    assert weak.p < 0.05 <= weak.p_holm and weak.verdict() == "inconclusive"
    assert default_after([up, flat]).startswith("`rise-bn` stays")
    assert default_after([up, down]).startswith("the default becomes `rise`")
    assert default_after([flat, noisy]).startswith("the default becomes `rise`")


def test_confirmation_uses_the_sweeps_protocol_and_fresh_seeds():
    from repro.bench import snf_confirm

    sweep_rows = snf_search.read_results(snf_search.REPO / "docs" / "snf_search.jsonl")
    a = snf_confirm.parse([])
    conf, expl = snf_confirm.harness(a, False, ["resnet20"]), snf_confirm.harness(a, True, ["resnet20"])
    assert snf_search.protocol_key(conf) in {r["protocol_key"] for r in sweep_rows}
    assert (list(conf.reductions), list(conf.variants), conf.seeds, conf.n_seeds) == ([70.0], ["rise-bn"], None, 10)
    assert conf.first_seed > max(r["seed"] for r in sweep_rows)
    assert expl.finetune_epochs == 3 * conf.finetune_epochs and expl.n_seeds == 5
    assert snf_search.protocol(expl) == {**snf_search.protocol(conf), "finetune_epochs": expl.finetune_epochs}
    assert conf.results != expl.results


def test_no_outcome_is_shown_before_every_net_has_its_pairs():
    from repro.bench.snf_confirm_report import section

    def row(method, seed, top1, arch="resnet20"):
        return {"arch": arch, "reduction": 70.0, "method": method, "seed": seed, "top1": top1,
                "search_s": 1.0, "finetune_s": 1.0, "finished_at": 0.0}
    rows = [row(m, s, 90.0 + (m == "rise-bn") * s) for s in (101, 102) for m in ("uniform", "rise-bn")]
    text = section(rows, [], ("resnet20", "resnet56"), 2, 2, "cmd")
    assert "not complete" in text and "p (t)" not in text and "92.00" not in text
    assert "resnet20: 4 of 4 runs finished, 2 of 2 pairs" in text and "resnet56: 0 of 4 runs" in text
    rows += [row(m, s, 90.0 + (m == "rise-bn") * s, "resnet56") for s in (101, 102) for m in ("uniform", "rise-bn")]
    assert "| resnet56 | 2 |" in section(rows, [], ("resnet20", "resnet56"), 2, 2, "cmd")


def test_the_default_and_the_quoted_figures_are_the_confirmations():
    """prune.snf_variant's default is what the plan's rule gives for docs/snf_confirm.jsonl, and the
    README and the snf_cifar table's note quote the figures the report computes from it."""
    from repro.bench.snf_confirm import ARCHS, N_CONFIRM
    from repro.bench.snf_confirm_report import default_after, net_results
    from repro.papers import snf_cifar
    from repro.prune.snf_variants import DEFAULT_VARIANT

    rows = snf_search.read_results(snf_search.REPO / "docs" / "snf_confirm.jsonl")
    results = net_results(rows, ARCHS, N_CONFIRM, confirmatory=True)
    assert results is not None, "the confirmation is complete in docs/snf_confirm.jsonl"
    rule = default_after(results)
    assert DEFAULT_VARIANT == ("rise-bn" if rule.startswith("`rise-bn` stays") else "rise")
    readme = (snf_search.REPO / "README.md").read_text().replace("\u2212", "-")
    note = " ".join(snf_cifar.TABLE.notes)
    for r in results:
        lo, hi = r.interval()
        d = sum(r.diffs) / len(r.diffs)
        for text in (readme, note):
            assert f"{d:+.2f}" in text and f"[{lo:.2f}, {hi:.2f}]" in text and f"{r.p_holm:.3f}" in text, r.arch


def test_the_readme_quotes_the_exploratory_figures_the_report_computes():
    """The README's exploratory sentence quotes, per net, the figures the report computes from
    docs/snf_confirm_explore.jsonl (d, its 95% interval, the unadjusted p), and calls them exploratory."""
    from repro.bench.snf_confirm import ARCHS, N_EXPLORE
    from repro.bench.snf_confirm_report import explore_results, same_seeds_d

    docs = snf_search.REPO / "docs"
    _, per_net = explore_results(snf_search.read_results(docs / "snf_confirm.jsonl"),
                                 snf_search.read_results(docs / "snf_confirm_explore.jsonl"), ARCHS, N_EXPLORE)
    assert all(per_net.values()), "the exploratory runs are complete in docs/snf_confirm_explore.jsonl"
    readme = (snf_search.REPO / "README.md").read_text().replace("\u2212", "-")
    start = readme.index("**Exploratory")
    sentence = readme[start:readme.index("\n\n", start)]
    for r in per_net.values():
        lo, hi = r.interval()
        d = sum(r.diffs) / len(r.diffs)
        assert f"{d:+.2f}" in sentence and f"[{lo:.2f}, {hi:.2f}]" in sentence and f"p = {r.p:.3f}" in sentence, r.arch
    # a "+m ± s" it quotes is the same seeds' d with the confirmation's fine-tuning (the report's column)
    confirm = snf_search.read_results(docs / "snf_confirm.jsonl")
    same_seeds = {f"{statistics.mean(d10):+.2f} ± {statistics.stdev(d10):.2f}"
                  for d10 in (same_seeds_d(r, confirm) for r in per_net.values())}
    quoted = set(re.findall(r"[+-]\d+\.\d\d ± \d+\.\d\d", sentence))
    assert quoted <= same_seeds, (quoted, same_seeds)


def test_the_exploratory_section_says_whether_it_pruned_the_confirmations_baselines():
    from repro.bench.snf_confirm_report import section

    def row(method, seed, top1, base, arch="resnet20"):
        return {"arch": arch, "reduction": 70.0, "method": method, "seed": seed, "top1": top1, "baseline_top1": base,
                "search_s": 1.0, "finetune_s": 1.0, "finished_at": 0.0}
    conf = [row(m, s, 90.0 + (m == "rise-bn") * s / 100, 99.0) for s in (101, 102) for m in ("uniform", "rise-bn")]
    same = [row(m, s, 91.0 + (m == "rise-bn") * s / 50, 99.0) for s in (101, 102) for m in ("uniform", "rise-bn")]
    other = [{**r, "baseline_top1": 99.0 + 0.5 * (r["seed"] == 102)} for r in same]
    text = section(conf, same, ("resnet20",), 2, 2, "cmd")
    assert "Exploratory: 3× longer" in text and "same top-1 as the confirmation's for the same seed: resnet20: 2 of 2." in text
    assert "resnet20: 1 of 2 (mean |Δ| 0.25 points)" in section(conf, other, ("resnet20",), 2, 2, "cmd")
    # a seed whose baseline, trained again, falls below the bar is passed over for the next
    from repro.bench.snf_confirm_report import explore_seeds
    rejected = {"arch": "resnet20", "reduction": None, "seed": 102, "method": "baseline", "rejected": True,
                "baseline_top1": 90.0}
    conf3 = conf + [row(m, 103, 90.0, 99.0) for m in ("uniform", "rise-bn")]
    assert explore_seeds(conf3, "resnet20", 2) == [101, 102]
    assert explore_seeds(conf3, "resnet20", 2, [rejected]) == [101, 103]
    text = section(conf3, [rejected] + [r for r in same if r["seed"] == 101], ("resnet20",), 2, 2, "cmd")
    assert "2 of 4 runs finished, 1 of 2 pairs; seeds left out (dense baseline below the bar): 102." in text
    # a net with its exploratory pairs is shown while another still runs
    conf56 = conf + [{**r, "arch": "resnet56"} for r in conf]
    both = section(conf56, same, ("resnet20", "resnet56"), 2, 2, "cmd")
    assert "| resnet20 | 2 |" in both.split("### Exploratory: 3×")[1] and "resnet56: 0 of 4 runs finished" in both


@pytest.mark.timeout(300)  # wall time on a loaded 2-core machine; the budget below is CPU time
def test_confirmation_quick_end_to_end_keeps_the_plan_byte_for_byte(tmp_path):
    from repro.bench import snf_confirm

    torch.set_num_threads(1)
    plan = (snf_search.REPO / "docs" / "snf_confirm.md").read_bytes()
    head = snf_confirm.plan_text(snf_search.REPO / "docs" / "snf_confirm.md").encode()
    (tmp_path / "snf_confirm.md").write_bytes(plan)
    argv = ["--quick", "--archs", "resnet20", "--out", str(tmp_path), "--cache-dir", str(tmp_path / "cache")]
    # the exploratory runs take the confirmation's seeds: none finished yet is one line, exit 2
    assert snf_confirm.main([*argv, "--explore"]) == 2 and not (tmp_path / "snf_confirm_explore.jsonl").exists()
    start = time.process_time()
    assert snf_confirm.main(argv) == 0
    assert time.process_time() - start < 45
    rows = [json.loads(line) for line in (tmp_path / "snf_confirm.jsonl").read_text().splitlines()]
    assert {(r["method"], r["seed"], r["reduction"]) for r in rows} == {
        (m, s, 70.0) for m in ("uniform", "rise-bn") for s in (101, 102)}
    assert all(r["finished_at"] > 0 and r["baseline_train_s"] > 0 for r in rows)
    written = (tmp_path / "snf_confirm.md").read_bytes()
    assert written.startswith(head) and b"| resnet20 | 2 |" in written[len(head):]
    assert b"Exploratory (3\xc3\x97 fine-tuning): not complete" in written
    # rewriting the section is idempotent and still leaves the plan alone
    assert snf_confirm.main([*argv, "--report-only"]) == 0
    assert (tmp_path / "snf_confirm.md").read_bytes() == written
    # the exploratory runs: the confirmation's seeds, 3x its fine-tuning, shown below it
    assert snf_confirm.main([*argv, "--explore"]) == 0
    explored = [json.loads(line) for line in (tmp_path / "snf_confirm_explore.jsonl").read_text().splitlines()]
    assert {(r["method"], r["seed"]) for r in explored} == {(m, s) for m in ("uniform", "rise-bn") for s in (101, 102)}
    assert {r["protocol"]["finetune_epochs"] for r in explored} == {3 * rows[0]["protocol"]["finetune_epochs"]}
    text = (tmp_path / "snf_confirm.md").read_text()
    assert text.startswith(head.decode()) and "### Exploratory: 3× longer fine-tuning" in text
    assert "same top-1 as the confirmation's for the same seed: resnet20: 2 of 2." in text
    # a plan without its marker: one line, exit 2, nothing run or written
    (tmp_path / "snf_confirm.md").write_text("# a plan\n")
    assert snf_confirm.main(argv) == 2
    assert (tmp_path / "snf_confirm.md").read_text() == "# a plan\n"
    assert len((tmp_path / "snf_confirm.jsonl").read_text().splitlines()) == len(rows)
