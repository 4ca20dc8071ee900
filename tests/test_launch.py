"""Launch scripts and repro.launch without a cluster: full-size dry runs, bad input, declarations."""
from __future__ import annotations

import dataclasses
import os
import subprocess

import pytest

from repro import launch
from repro.papers import known_tables, load_table
from repro.papers.spec import PaperValue, Row, unconfirmed
from repro.runs import cost
from repro.runs.plan import plan

from conftest import PYTHON, REPO

TABLES = ("snf_cifar", "table1", "table2")


def _script(name: str, *args: str, env: dict | None = None, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, str(REPO / "launch" / f"{name}.py"), *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env=env)


def test_every_table_has_a_launch_script():
    assert set(TABLES) <= set(known_tables())


@pytest.mark.parametrize("name", TABLES)
def test_dry_run_plans_the_full_size_table(name, tmp_path, capsys):
    spec = load_table(name)
    root = tmp_path / "runs"
    assert launch.main(spec, ["--dry-run", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    n = len(spec.runs())
    assert f"{name}: {n} runs (new {n}); to submit: {n}" in out
    assert "GPU-hours" in out
    for row in spec.rows:  # every run of every row is planned
        assert all(f"{row.key}/seed{s}" in out for s in spec.seeds)
    assert "note: the data is not ready" in out  # no data here; the plan still comes
    assert not root.exists()  # a dry run writes nothing
    # the miniature table's configs are valid too
    assert launch.main(spec, ["--dry-run", "--smoke", "--root", str(root)]) == 0
    n = len(spec.runs(smoke=True))
    assert f"{name} (smoke): {n} runs (new {n}); to submit: {n}" in capsys.readouterr().out
    # --all-rows (implies --smoke): the miniature of every row
    assert launch.main(spec, ["--dry-run", "--all-rows", "--root", str(root)]) == 0
    n = len(spec.rows) * len(spec.smoke_seeds)
    assert f"{name} (smoke): {n} runs (new {n}); to submit: {n}" in capsys.readouterr().out


@pytest.mark.timeout(120)
def test_launch_script_entry_point(tmp_path):
    out = _script("table2", "--dry-run", "--root", str(tmp_path / "runs"))
    assert out.returncode == 0, out.stderr
    assert "table2: 12 runs (new 12); to submit: 12" in out.stdout


def test_dependent_runs_wait_for_their_own_baseline(tmp_path):
    p = plan(load_table("table2"), tmp_path)
    pre = [pl for pl in p.runs if pl.run.row.init_from]
    assert len(pre) == 4
    for pl in pre:
        assert pl.dep.run.row.key == pl.run.row.init_from and pl.dep.run.seed == pl.run.seed
        # starts from the baseline run, named by its folder name: independent of how --root was written
        assert pl.cfg.prune.init_from == "run:" + pl.dep.run_dir.name and pl.dep.run_dir.parent == pl.run_dir.parent
    # full-size recipe reaches the trainer's config unchanged
    cfg = p.runs[0].cfg
    assert (cfg.data.name, cfg.schedule.epochs, cfg.schedule.milestones, cfg.data.batch_size) == \
        ("imagenet", 100, (30, 60, 90), 256)


def test_gpu_hour_estimate_uses_the_true_conv_macs():
    from repro.flops import arch_counts
    from repro.models import ARCHS
    for arch in ARCHS:  # proportional to the counted MACs, no hand copy of them
        ratio = cost.gpu_hours_per_epoch(arch, "imagenet") / arch_counts(arch).conv_macs
        assert ratio == pytest.approx(cost.TRAIN_IMAGES["imagenet"] * 3 / cost.EFFECTIVE_MACS_PER_S[
            "imagenet" if arch in ("resnet18", "resnet34", "resnet50", "resnet101") else "cifar"] / 3600)
    # ImageNet ResNet-50: ~0.17 GPU-h per epoch (documented anchor)
    assert 0.1 < cost.gpu_hours_per_epoch("resnet50", "imagenet") < 0.3


# ---------------------------------------------------------------------------- bad input
def _main(spec, *argv):
    return launch.main(spec, list(argv))


def test_unknown_cluster_is_refused(capsys):
    with pytest.raises(SystemExit) as e:
        _main(load_table("table1"), "--cluster", "nope", "--dry-run")
    assert e.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err


def test_unknown_table_is_refused():
    out = subprocess.run([PYTHON, "-m", "repro.launch", "nope", "--dry-run"], capture_output=True, text=True,
                         timeout=60, cwd=REPO)
    assert out.returncode == 2 and "unknown table 'nope'; known: snf_cifar, table1, table2" in out.stderr
    out = subprocess.run([PYTHON, "-m", "repro.tables", "nope"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 2 and "unknown table 'nope'" in out.stderr


def test_root_that_is_not_writable_is_refused(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    data = tmp_path / "data"
    assert _main(load_table("table1"), "--root", str(blocker / "runs"), "--data", str(data)) == 2
    err = capsys.readouterr().err
    assert "error: --root" in err and "is not a writable folder" in err
    assert not data.exists()


@pytest.mark.parametrize("name", ["table1", "table2"])
def test_missing_data_says_how_to_convert_before_submitting(name, tmp_path, capsys):
    root = tmp_path / "runs"
    assert _main(load_table(name), "--root", str(root), "--data", str(tmp_path / "nowhere"),
                 "--cluster", "local") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "python -m repro.data.write" in err and str(tmp_path / "nowhere") in err
    assert not (root / name).exists()  # nothing was created, let alone submitted


def test_slurm_without_sbatch_is_refused(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}  # no sbatch on this PATH
    out = _script("table1", "--cluster", "slurm", "--root", str(tmp_path / "runs"), env=env)
    assert out.returncode == 2 and "no `sbatch` on this machine" in out.stderr


def test_other_bad_flags(tmp_path, capsys):
    spec = load_table("table2")
    assert _main(spec, "--root", str(tmp_path), "--cluster", "local", "--nodes", "2", "--smoke") == 2
    assert "--nodes 2 needs --cluster slurm" in capsys.readouterr().err
    assert _main(spec, "--root", str(tmp_path), "--dry-run", "--only", "resnet999/*") == 2
    assert "--only resnet999/* matches no run of table2" in capsys.readouterr().err


def test_help_tells_the_flags():
    out = _script("table2", "--help")
    assert out.returncode == 0
    for flag in ("--cluster {auto,slurm,local,debug}", "--root", "--dry-run", "--smoke", "--nodes",
                 "--gpus-per-node", "--partition", "--time", "--account", "--retry-failed", "--cpu-partition",
                 "--mem-gb", "--allow-other-layout"):
        assert flag in out.stdout, flag


# ---------------------------------------------------------------------------- declarations
def test_table_declarations_are_checked():
    t1 = load_table("table1")
    with pytest.raises(ValueError, match="duplicate row keys"):
        dataclasses.replace(t1, rows=t1.rows + t1.rows[:1])
    orphan = Row("x/sfp", "X", "SFP", {"model.arch": "resnet20"}, baseline="nope/baseline")
    with pytest.raises(ValueError, match="unknown row 'nope/baseline'"):
        dataclasses.replace(t1, rows=t1.rows + (orphan,))
    with pytest.raises(ValueError, match="needs a number"):
        PaperValue(None)


def test_paper_values_match_the_sources():
    """Spot checks against the documents (docs/papers.md lists every number with its source)."""
    t2 = load_table("table2")
    r50 = t2.row("resnet50/sfp-scratch")
    assert (r50.paper["top1"].value, r50.paper["top5"].value, r50.flops_paper.value) == (74.61, 92.06, 41.8)
    assert r50.paper["top1_drop"].value == 1.54 and r50.paper["top1"].source == "FPGM-T2"
    pre = t2.row("resnet50/sfp-pretrained")  # FPGM's 'Fine-tune?' row, with its caveat
    assert [pre.paper[m].value for m in ("top1", "top5", "top1_drop", "top5_drop")] == [62.14, 84.60, 14.01, 8.27]
    assert "protocol" in pre.paper["top1"].caveat and pre.init_from == "resnet50/baseline"
    for key in ("resnet101/sfp-scratch", "resnet101/sfp-pretrained"):  # two rows [SB] assigns to neither
        top1 = t2.row(key).paper["top1"]
        assert not top1.confirmed and top1.value is None and top1.candidates == (77.03, 77.51)
        assert t2.row(key).paper["top5"].candidates == (93.46, 93.71)
    assert all(not pv.confirmed for pv in t2.row("resnet18/sfp-pretrained").paper.values())
    t1 = load_table("table1")
    assert t1.row("resnet56/sfp40").paper["top1"] == PaperValue(92.26, 0.31, source="FPGM-T1")
    r32 = t1.row("resnet32/sfp30").paper["top1"]  # FPGM's reprint wins over ShrinkBench's slip
    assert (r32.value, r32.source) == (92.08, "FPGM-T1") and "90.08" in r32.caveat
    snf = load_table("snf_cifar")
    assert snf.row("resnet56/snf52.94").paper["top1_drop"].value == -0.14
    assert snf.row("resnet110/snf68.68").flops_target == 68.68
    assert unconfirmed("x").value is None


def test_table1_is_the_papers_full_cifar_table():
    """ResNet-20/32/56/110: baseline, SFP from scratch at 10/20/30% (+40% for ResNet-56), the rows from
    pre-trained baselines a source prints (ResNet-56 at 30/40%, ResNet-110 at 30%); 3 seeds each."""
    t1 = load_table("table1")
    rates = {}
    for r in t1.rows:
        rates.setdefault(r.arch, []).append((round(r.prune_rate * 100), r.init_from is not None))
    assert rates == {
        "resnet20": [(0, False), (10, False), (20, False), (30, False)],
        "resnet32": [(0, False), (10, False), (20, False), (30, False)],
        "resnet56": [(0, False), (10, False), (20, False), (30, False), (40, False), (30, True), (40, True)],
        "resnet110": [(0, False), (10, False), (20, False), (30, False), (30, True)]}
    assert t1.seeds == (0, 1, 2) and t1.paper_runs == 3 and len(t1.runs()) == 60
    for r in t1.rows:
        assert r.paper["top1"].confirmed and r.paper["top1"].std is not None and r.paper["top1"].source
        if r.prune_rate:  # every pruned row: a printed FLOPs reduction and a drop, each with its source
            assert r.flops_paper.confirmed and r.flops_paper.source and r.paper["top1_drop"].source
            assert r.baseline == f"{r.arch}/baseline"
            assert r.init_from in (None, r.baseline)
    # the [SB] rates are inferred from the printed FLOPs: they must equal the float convention's values
    from repro.flops import paper_reduction
    for r in t1.rows:
        if r.prune_rate:
            assert round(paper_reduction(r.arch, r.prune_rate), 1) == r.flops_paper.value, r.key


def test_a_paper_number_without_a_known_source_is_refused():
    t1 = load_table("table1")
    row = t1.rows[0]
    with pytest.raises(ValueError, match="needs its source"):
        PaperValue(92.2, 0.18)
    bad = dataclasses.replace(row, key="x/baseline", paper={"top1": PaperValue(92.2, source="nowhere")})
    with pytest.raises(ValueError, match="unknown source 'nowhere'"):
        dataclasses.replace(t1, rows=t1.rows + (bad,))
    with pytest.raises(ValueError, match="paper_runs must say"):  # Welch's test needs the paper's n
        dataclasses.replace(t1, paper_runs=None)
    with pytest.raises(ValueError, match="candidates belong to an unconfirmed cell"):
        PaperValue(1.0, source="SB", candidates=(1.0, 2.0))


# ---------------------------------------------------------------------------- layout and resources
def test_table2_defaults_to_the_papers_layout_and_states_the_per_gpu_batch(tmp_path, capsys):
    spec = load_table("table2")
    assert _main(spec, "--dry-run", "--root", str(tmp_path / "runs")) == 0
    out = capsys.readouterr().out
    assert "layout: 8 process(es) per run; global batch 256 -> 32 per process" in out
    assert "the paper: 8 GPUs, 256 -> 32 per GPU" in out and "WARNING" not in out


def test_two_nodes_of_eight_gpus_warn_in_a_dry_run_and_are_refused_at_launch(tmp_path, capsys):
    spec = load_table("table2")
    root = tmp_path / "runs"
    out = _script("table2", "--dry-run", "--nodes", "2", "--gpus-per-node", "8", "--root", str(root))
    assert out.returncode == 0, out.stderr
    assert "layout: 16 process(es) per run; global batch 256 -> 16 per process" in out.stdout
    assert "WARNING: the per-GPU batch departs from the paper's (16 instead of 32" in out.stdout
    assert "a launch is refused without it" in out.stdout
    # a launch (one node of 16 GPUs here, no SLURM needed) is refused before anything is created
    assert _main(spec, "--cluster", "local", "--gpus-per-node", "16", "--root", str(root)) == 2
    assert "error: the per-GPU batch departs from the paper's (16 instead of 32" in capsys.readouterr().err
    assert not root.exists()
    # ... unless asked for; then it goes on (here to the missing data)
    assert _main(spec, "--cluster", "local", "--gpus-per-node", "16", "--allow-other-layout", "--root", str(root),
                 "--data", str(tmp_path / "nowhere")) == 2
    err = capsys.readouterr().err
    assert "python -m repro.data.write" in err and "departs" not in err


@pytest.mark.parametrize("argv", [["--gpus-per-node", "3"], ["--nodes", "3", "--gpus-per-node", "8", "--dry-run"],
                                  ["--smoke", "--tasks-per-node", "3"]])
def test_a_global_batch_that_does_not_divide_is_refused_before_anything_is_submitted(argv, tmp_path, capsys):
    root = tmp_path / "runs"
    assert _main(load_table("table2"), *argv, "--cluster", "local" if "--nodes" not in argv else "auto",
                 "--root", str(root)) == 2
    err = capsys.readouterr().err
    assert "does not divide by the" in err and "processes of a run" in err
    assert not root.exists()


def test_executor_parameters_memory_gpus_and_partitions():
    from repro.runs.submit import PER_TASK_GB, Cluster, executor_params, memory_request_gb
    c = Cluster(nodes=1, gpus_per_node=8, partition="gpu", cpu_partition="cpu")
    run = executor_params(c, "slurm", name="t")
    assert (run["tasks_per_node"], run["gpus_per_node"], run["slurm_partition"]) == (8, 8, "gpu")
    assert "mem_gb" not in run and "gpus_per_task" not in run  # every task sees the node's GPUs (NCCL IPC)
    # one task that exits non-zero (a full disk on rank 0) ends the step at once (issue 25 item 3)
    assert "--kill-on-bad-exit=1" in run["slurm_srun_args"]
    assert executor_params(Cluster(mem_gb=0), "slurm", name="t")["mem_gb"] == 0  # whole node, not dropped
    assert executor_params(Cluster(mem_gb=300), "slurm", name="t")["mem_gb"] == 300
    table = executor_params(c, "slurm", name="t", small=True)
    assert (table["slurm_partition"], table["tasks_per_node"], table["cpus_per_task"]) == ("cpu", 1, 1)
    assert "gpus_per_node" not in table and "mem_gb" not in table
    assert executor_params(Cluster(partition="gpu"), "slurm", name="t", small=True)["slurm_partition"] == "gpu"
    # the default request: page cache for the .beton files + a share per task
    assert memory_request_gb(140 * 2**30, 8) == 147 + 8 * PER_TASK_GB
    assert Cluster(nodes=2, gpus_per_node=8).processes == 16 and Cluster(gpus_per_node=0).processes == 1


def test_slurm_args_reach_the_gpu_jobs_only():
    """--slurm-arg constraint=a100 on the CPU job that builds the table would leave it pending
    forever on a CPU partition."""
    from repro.runs.submit import Cluster, executor_params
    c = Cluster(gpus_per_node=8, partition="gpu", cpu_partition="cpu", slurm_args=("constraint=a100", "qos=high"))
    run = executor_params(c, "slurm", name="t")["slurm_additional_parameters"]
    assert (run["constraint"], run["qos"]) == ("a100", "high")
    table = executor_params(c, "slurm", name="t", small=True, dependency="afterany:1")["slurm_additional_parameters"]
    assert "constraint" not in table and "qos" not in table
    assert table == {"kill-on-invalid-dep": "yes", "dependency": "afterany:1"}


def test_dry_run_states_the_cpus_per_task(tmp_path, capsys):
    from repro.data.cpus import CPUS_PER_GPU_TASK
    assert _main(load_table("table2"), "--dry-run", "--root", str(tmp_path / "runs")) == 0
    out = capsys.readouterr().out
    assert f"CPUs per task: {CPUS_PER_GPU_TASK} (--cpus-per-task); on a GPU, FFCV decodes with " \
           f"{CPUS_PER_GPU_TASK - 1} thread(s)" in out
    assert _main(load_table("table2"), "--dry-run", "--root", str(tmp_path / "runs"), "--cpus-per-task", "16") == 0
    assert "CPUs per task: 16 (--cpus-per-task); on a GPU, FFCV decodes with 15 thread(s)" in capsys.readouterr().out


def test_stage_data_reaches_every_run_and_changes_no_run_folder(tmp_path, capsys):
    import argparse
    spec, root = load_table("table2"), tmp_path / "runs"
    assert _main(spec, "--dry-run", "--root", str(root), "--stage-data", "/local/scratch/$USER") == 0
    assert "data: staged on each node to /local/scratch/$USER (--stage-data; data.stage_dir)" in capsys.readouterr().out
    p = plan(spec, root)
    folders = [pl.run_dir for pl in p.runs]
    launch._staged(p, argparse.Namespace(stage_data="/local/scratch"), None)
    assert {pl.cfg.data.stage_dir for pl in p.runs} == {"/local/scratch"}
    from repro.config import run_name
    assert [run_name(pl.cfg) for pl in p.runs] == [f.name for f in folders]  # identity=False: same names, hashes
    # a relative folder would mean another place on every node: refused before anything happens
    with pytest.raises(SystemExit) as e:
        _main(spec, "--dry-run", "--root", str(root), "--stage-data", "scratch")
    assert e.value.code == 2 and "data.stage_dir: must be an absolute path" in capsys.readouterr().err
    assert not root.exists()


def test_dry_run_states_the_memory_request_from_the_converted_data(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for name, size in (("train.beton", 3 * 2**30), ("val.beton", 2**30)):
        with open(data / name, "wb") as f:
            f.truncate(size)  # sparse: only the size matters here
    assert _main(load_table("table2"), "--dry-run", "--root", str(tmp_path / "runs"), "--data", str(data)) == 0
    out = capsys.readouterr().out
    assert "memory per node: 69 GB = 4.0 GiB of .beton files kept in the page cache + 8 GB x 8 task(s)" in out
    assert _main(load_table("table2"), "--dry-run", "--root", str(tmp_path / "runs"), "--mem-gb", "0") == 0
    assert "memory per node: the whole node (--mem-gb)" in capsys.readouterr().out
