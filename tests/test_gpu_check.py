"""The GPU acceptance check (python -m repro.bench.gpu) in its CPU form, as CI runs it: the same
steps end to end (stand-in ImageNet, our trainer, the bare loop, the engine's overhead per step and
per epoch, the loader alone, a process group through repro.dist, the compact ResNet-50 at 40%
with both latencies a run records), printing its ratios beside their goals. At 4 steps per epoch
(the CLI's CPU default is 40): the test checks that every figure is there and consistent, not
what it is; the compiled trainer is skipped, as on every CPU unless --compile."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
STEPS = 4


def test_cpu_variant_prints_its_ratios_and_facts(tmp_path):
    out = subprocess.run([sys.executable, "-m", "repro.bench.gpu", "--cpu", "--json", "--work", str(tmp_path),
                          "--steps-per-epoch", str(STEPS), "--epochs", "3"],
                         cwd=REPO, capture_output=True, text=True, timeout=850)
    assert out.returncode == 0, out.stderr[-4000:]
    text = out.stdout
    r = json.loads(text.strip().splitlines()[-1])
    assert "CPU VARIANT (no GPU)" in text
    for label, key, goal in (("trainer / bare loop", "trainer_over_bare", ">= 0.95"),
                             ("loader / training", "loader_over_training", ">= 1.2"),
                             ("compact measured / theoretical", "compact_over_theoretical", ">= 0.85")):
        value = r["ratios"][key]
        assert math.isfinite(value) and value > 0, (key, value)
        line = next(x for x in text.splitlines() if x.startswith(label))
        printed = re.search(r"\s(\d+\.\d+)\s", line)
        assert printed and float(printed.group(1)) == pytest.approx(value, abs=5e-4), line
        assert goal in line, line
    # the rates the ratios come from are the trainer's own, the bare loop's and the loader's
    assert r["ratios"]["trainer_over_bare"] == pytest.approx(r["trainer"]["images_per_s"] / r["bare"]["images_per_s"])
    assert len(r["trainer"]["epochs_images_per_s"]) == r["facts"]["sizes"]["epochs"] == 3
    assert r["facts"]["sizes"]["steps_per_epoch"] == STEPS and r["facts"]["torch_threads"] == 1
    assert 0 <= r["trainer"]["data_wait_share"] < 1 and r["facts"]["cpus_for_this_task"] >= 1
    # the engine's overhead: per step from the two loops' epoch times, per epoch from the metrics rows
    o = r["overhead"]
    assert o["steps_per_epoch"] == STEPS and o["bare_step_ms"] > 0 and o["trainer_step_ms"] > 0
    assert o["per_step_ms"] == pytest.approx(o["trainer_step_ms"] - o["bare_step_ms"])
    assert o["per_epoch_s"] > 0  # a checkpoint and an evaluation at least
    assert "engine overhead per step" in text and "engine overhead per epoch" in text
    assert "--compile" in r["compiled"]["skipped"] and "trainer compiled (inductor)" in text
    # facts that hold on any machine
    pg = r["process_group"]
    assert (pg["backend"], pg["world_size"], pg["source"], pg["all_reduce_ok"]) == ("gloo", 1, "torchrun", True)
    assert (r["trainer"]["train_precision"], r["trainer"]["eval_precision"]) == ("float32", "float32")
    c = r["compact"]
    assert c["rel_diff_fp32"] < 1e-4 and c["rel_diff_fp32_aligned"] < 1e-4  # exact up to float32 rounding
    assert c["theoretical_speedup"] > 1.5  # ResNet-50 at 40%: about 2.1x fewer conv MACs
    # and as a run records it (engine.latency): as delivered, and aligned x8 + BN folded
    run = c["as_run_records"]
    for k in ("dense_ms", "delivered_ms", "folded_dense_ms", "aligned_folded_ms"):
        assert run[k] > 0, (k, run)
    assert run["speedup_as_delivered"] == pytest.approx(run["dense_ms"] / run["delivered_ms"])
    assert run["speedup_aligned_folded"] == pytest.approx(run["folded_dense_ms"] / run["aligned_folded_ms"])
    assert (run["align"], run["device"], run["precision"]) == (8, "cpu", "float32")
    line = next(x for x in text.splitlines() if x.startswith("compact speed-up as a run records it"))
    assert "as delivered" in line and "aligned x8 + BN folded" in line, line
    assert "goals missed:" in text
    # it runs on the CPUs a launched task gets, and says so
    from repro.data.cpus import CPUS_PER_GPU_TASK
    assert r["facts"]["launcher_cpus_per_task"] == CPUS_PER_GPU_TASK
    head = next(x for x in text.splitlines() if x.startswith("GPU check on"))
    assert f"pinned to the launcher's --cpus-per-task {CPUS_PER_GPU_TASK}" in head, head
