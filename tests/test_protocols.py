"""Table 2 under three protocols (paper, official-code, torchvision-eval): separate run folders and
names, plans with their GPU-hours, and the evaluation-only baseline run through the real trainer."""
from __future__ import annotations

import subprocess

import pytest

from repro import launch
from repro.config import Config
from repro.papers import PROTOCOL_TABLES, load_table
from repro.runs.plan import plan
from repro.train import run

from conftest import PYTHON, REPO
from test_train import TINY


def test_the_protocols_never_share_a_run_folder(tmp_path):
    folders = {}
    for protocol, name in PROTOCOL_TABLES["table2"].items():
        p = plan(load_table(name), tmp_path)
        folders[protocol] = {pl.run_dir for pl in p.runs}
        assert all(pl.run_dir.parent == tmp_path / name for pl in p.runs)
    names = {protocol: {d.name for d in dirs} for protocol, dirs in folders.items()}
    assert not names["paper"] & names["official-code"]  # other configs: other names and hashes
    assert not folders["paper"] & folders["official-code"] and not folders["paper"] & folders["torchvision-eval"]
    official = plan(load_table("table2_official"), tmp_path)
    assert all(pl.cfg.prune.init_from == f"torchvision:{pl.cfg.model.arch}" for pl in official.runs)
    tveval = plan(load_table("table2_tveval"), tmp_path)
    base = [pl for pl in tveval.runs if pl.run.row.key.endswith("/baseline")]
    assert all(pl.cfg.train_epochs == 0 and pl.gpu_hours == 0 for pl in base)  # evaluated, not trained
    assert all(pl.dep in base for pl in tveval.runs if pl not in base)


def test_dry_run_of_each_protocol_plans_with_gpu_hours(tmp_path, capsys):
    for protocol, name in PROTOCOL_TABLES["table2"].items():
        assert launch.main("table2", ["--dry-run", "--protocol", protocol, "--root", str(tmp_path)]) == 0
        out = capsys.readouterr().out
        n = len(load_table(name).runs())
        assert f"{name}: {n} runs (new {n}); to submit: {n}" in out and "GPU-hours" in out
        assert f"protocol: {protocol}" in load_table(name).title
    out = subprocess.run([PYTHON, str(REPO / "launch" / "table2.py"), "--protocol", "official-code", "--dry-run",
                          "--root", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "table2_official: 12 runs" in out.stdout, out.stderr
    assert "note: a starting point is missing: prune.init_from: torchvision:resnet18: expected" in out.stdout


def test_smoke_of_another_protocol_is_refused(tmp_path, capsys):
    assert launch.main("table2", ["--smoke", "--protocol", "official-code", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --smoke runs the paper protocol only") and len(err.strip().splitlines()) == 1
    assert not tmp_path.joinpath("smoke").exists()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_an_evaluation_only_run_reports_its_starting_model(tmp_path):
    base_cfg = Config.from_overrides(TINY)
    base = run(base_cfg, tmp_path / "base")
    cfg = Config.from_overrides(TINY + ["schedule.epochs=0", "prune.init_from=run:base"])
    res = run(cfg, tmp_path / "evaluated")
    assert res["status"] == "done" and res["steps"] == 0 and res["epochs"] == 0
    assert res["val_top1"] == base["val_top1"] and res["val_loss"] == base["val_loss"]
    assert res["train_loss"] is None


def test_readme_states_each_protocols_estimate(tmp_path):
    """The README's day-one table quotes the launcher's estimate; it must be the estimate."""
    import re
    readme = (REPO / "README.md").read_text()
    for protocol, name in PROTOCOL_TABLES["table2"].items():
        line = next(ln for ln in readme.splitlines() if ln.startswith(f"| `{protocol}`"))
        quoted = float(re.search(r"\| ([\d.]+) GPU-h \|$", line).group(1))
        assert quoted == round(sum(pl.gpu_hours for pl in plan(load_table(name), tmp_path).runs), 1), protocol
