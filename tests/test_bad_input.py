"""Bad input, as a table: every case is a command a user might type, the exit code it must end
with, the one line it must say (naming the file or key and what to do), and a check that nothing
that was there before changed (every file under the case's folder, byte for byte, and no file
added). Commands run as `python -m ...` / `python launch/...` forked from a warm Python
(tests/zygote.py), so the whole table costs seconds.

Also here: a done run whose model.pt was deleted (not done: the final phase runs again and
delivers the same model). What goes wrong only once a run is under way (a full disk, a corrupt
JPEG) and torchrun's own report are in tests/test_run_failures.py.
SIGINT (exit 130 after a checkpoint, one line) is in tests/test_reliability.py's kill-at-random.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch

from repro import rundir
from repro.config import Config
from repro.papers import load_table
from conftest import REPO
from tests.test_train import TINY, TIMING, model_state

pytestmark = pytest.mark.timeout(900)

T = ["-m", "repro.train", *TINY, "log.wandb=disabled"]


# ---------------------------------------------------------------------------- shared set-ups
@pytest.fixture(scope="module")
def done_run(warm, tmp_path_factory):
    """A finished tiny digits run (the source the cases copy and damage)."""
    d = tmp_path_factory.mktemp("done") / "run"
    rc, log = warm.run([*T, "--run-dir", str(d)])
    assert rc == 0, log[-3000:]
    return d


@pytest.fixture(scope="module")
def digits_betons(warm, tmp_path_factory):
    """scikit-learn's digits converted by the real writer (with its dataset.json)."""
    d = tmp_path_factory.mktemp("digits") / "ffcv"
    rc, log = warm.run(["-m", "repro.data.write", "digits", "--out", str(d), "--workers", "1"])
    assert rc == 0, log[-3000:]
    assert json.loads((d / "dataset.json").read_text())["name"] == "digits"
    return d


def _resumable(done: Path, dest: Path) -> Path:
    """A copy of the done run stopped after its last checkpoint (result.json and model.pt not yet written)."""
    shutil.copytree(done, dest)
    (dest / "result.json").unlink()
    (dest / "model.pt").unlink()
    return dest


def _planned_folder(root: Path, table: str = "table1") -> Path:
    """The folder the smoke plan of ``table`` expects for its first run (created, empty)."""
    from repro.papers import load_table
    from repro.runs.plan import plan
    d = plan(load_table(table), root, smoke=True, query=False).runs[0].run_dir
    d.mkdir(parents=True)
    return d


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


@contextlib.contextmanager
def _read_only(folder: Path):
    """``folder`` read-only for this process: a read-only bind mount as root (root ignores
    permission bits), the permission bits otherwise."""
    if os.geteuid() == 0:
        if subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True).returncode:
            pytest.skip("needs `mount --bind` (root with CAP_SYS_ADMIN) to make a read-only folder as root")
        try:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True, capture_output=True)
            yield
        finally:
            subprocess.run(["umount", str(folder)], check=True, capture_output=True)
    else:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
        for p in modes:
            p.chmod(modes[p] & ~0o222)
        try:
            yield
        finally:
            for p, m in modes.items():
                p.chmod(m)


# ---------------------------------------------------------------------------- the table
@dataclass
class Case:
    name: str
    setup: Callable  # (case folder, fixtures) -> argv; creates what the command finds
    code: int
    line: str        # the one line must contain this ({d} = the case folder)
    env: dict | None = None


def _file(d, fx):
    (d / "run").write_text("not a folder")
    return [*T, "--run-dir", str(d / "run")]


def _below_file(d, fx):
    (d / "blocker").write_text("a file")
    return [*T, "--run-dir", str(d / "blocker" / "runs" / "run")]


def _copy_done(d, fx, edit=None):
    run = d / "run"
    shutil.copytree(fx["done"], run)
    if edit:
        edit(run)
    return [*T, "--run-dir", str(run)]


def _copy_resumable(d, fx, edit=None, extra=()):
    run = _resumable(fx["done"], d / "run")
    if edit:
        edit(run)
    return [*T, *extra, "--run-dir", str(run)]


def _foreign_result(d, fx):
    """result.json copied in from the seed-0 folder into the seed-1 folder."""
    run = d / "run"
    rundir.prepare(run, Config.from_overrides(TINY + ["log.wandb=disabled", "seed=1"]))
    shutil.copy(fx["done"] / "result.json", run / "result.json")
    shutil.copy(fx["done"] / "model.pt", run / "model.pt")
    return [*T, "seed=1", "--run-dir", str(run)]


def _foreign_checkpoint(run):
    ck = torch.load(run / "checkpoint.pt", weights_only=False)
    ck["config_hash"] = "0badf00d"
    torch.save(ck, run / "checkpoint.pt")


def _truncate(name, keep=0.5):
    return lambda run: (run / name).write_bytes((run / name).read_bytes()[:int((run / name).stat().st_size * keep)])


def _write(name, text):
    return lambda run: (run / name).write_text(text)


def _init_from(what):
    def setup(d, fx):
        src = d / "init.pt"
        if what == "junk":
            src.write_bytes(b"\x00 not a torch file")
        elif what == "pruned":
            from repro.models import ChannelSpec, build_model
            from repro.prune.compact import save_compact
            spec = ChannelSpec(convs={"layer1.0.conv1": 8})
            m = build_model("resnet20", num_classes=10, spec=spec)
            m.spec, m.arch = spec, "resnet20"
            save_compact(src, m)
        elif what == "unfinished":
            (d / "base").mkdir()
            return [*T, "prune.init_from=run:base", "--run-dir", str(d / "run")]
        else:  # the done resnet20 baseline, asked to start a resnet32
            shutil.copy(fx["done"] / "model.pt", src)
            return [*T, "model.arch=resnet32", f"prune.init_from={src}", "--run-dir", str(d / "run")]
        return [*T, f"prune.init_from={src}", "--run-dir", str(d / "run")]
    return setup


def _ffcv(edit=None, name="cifar10"):
    def setup(d, fx):
        data = d / "data"
        shutil.copytree(fx["digits"], data)
        if edit:
            edit(data)
        return [*T, "data.loader=ffcv", f"data.name={name}", f"data.ffcv_dir={data}", "--run-dir", str(d / "run")]
    return setup


def _table_with(result: dict | str, argv_for):
    def setup(d, fx):
        run = _planned_folder(d / "runs")
        (run / "result.json").write_text(result if isinstance(result, str) else json.dumps(result))
        return argv_for(d)
    return setup


def _jobs_json(d, fx):
    (_planned_folder(d / "runs") / "jobs.json").write_text("{")
    return DRY(d)


def _cut_last_row(run):
    """metrics.jsonl damaged from outside: its last row (epoch 1, which checkpoint.pt covers) cut
    mid-line, as by an interrupted copy."""
    text = (run / "metrics.jsonl").read_text()
    assert text.count("\n") == 2  # epochs 0 and 1
    (run / "metrics.jsonl").write_text(text[:-30])


def _root_file(d, fx):
    (d / "runs").write_text("x")
    return [str(REPO / "launch" / "table1.py"), "--smoke", "--root", str(d / "runs")]


TABLES = lambda d: ["-m", "repro.tables", "table1", "--smoke", "--root", str(d / "runs"), "--out", str(d / "out")]  # noqa: E731
DRY = lambda d: [str(REPO / "launch" / "table1.py"), "--smoke", "--dry-run", "--root", str(d / "runs")]  # noqa: E731
NON_NUMERIC = {"status": "done", "val_top1": "high", "val_top5": 90.0, "flops_reduction": 0.0}

CASES = [
    Case("run folder is a file", _file, 2, "--run-dir {d}/run is a file, not a folder"),
    Case("run folder lies below a file", _below_file, 2, "lies below a file ({d}/blocker)"),
    Case("malformed result.json (trainer)", lambda d, fx: _copy_done(d, fx, _write("result.json", '{"status": "do')),
         2, "{d}/run/result.json is not valid JSON"),
    Case("result.json of another seed's run", _foreign_result, 2, "{d}/run/result.json belongs to run resnet20-digits-base-e2-s0-"),
    Case("malformed env.json", lambda d, fx: _copy_resumable(d, fx, _write("env.json", "[1, 2")), 2,
         "{d}/run/env.json is not valid JSON"),
    Case("malformed config.json", lambda d, fx: _copy_resumable(d, fx, _write("config.json", "{")), 2,
         "{d}/run/config.json is not valid JSON"),
    Case("garbage line at the top of metrics.jsonl",
         lambda d, fx: _copy_resumable(d, fx, lambda r: (r / "metrics.jsonl").write_text(
             "garbage\n" + (r / "metrics.jsonl").read_text())), 2, "{d}/run/metrics.jsonl line 1 is not an epoch's metrics"),
    Case("truncated checkpoint.pt", lambda d, fx: _copy_resumable(d, fx, _truncate("checkpoint.pt")), 2,
         "{d}/run/checkpoint.pt cannot be read (truncated, damaged or not a torch file"),
    Case("checkpoint.pt of another run", lambda d, fx: _copy_resumable(d, fx, _foreign_checkpoint), 2,
         "{d}/run/checkpoint.pt belongs to config 0badf00d"),
    Case("model.num_classes below the data's classes", lambda d, fx: [*T, "model.num_classes=3", "--run-dir",
                                                                       str(d / "run")], 2,
         "model.num_classes=3 is fewer than the 10 classes of digits"),
    Case("prune.init_from: not a torch file", _init_from("junk"), 2, "prune.init_from: {d}/init.pt is not a readable torch file"),
    Case("prune.init_from: a pruned model", _init_from("pruned"), 2, "holds a pruned model (1 convs narrowed)"),
    Case("prune.init_from: another architecture", _init_from("arch"), 2, "holds a resnet20, this run trains a resnet32"),
    Case("prune.init_from: an unfinished baseline run", _init_from("unfinished"), 2, "run folder {d}/base has not finished"),
    Case("a digits .beton given as cifar10", _ffcv(), 2, "{d}/data holds digits (its dataset.json), not cifar10"),
    Case(".beton folder without dataset.json", _ffcv(lambda data: (data / "dataset.json").unlink(), "digits"), 2,
         "{d}/data has no dataset.json"),
    Case("a .beton replaced after conversion",
         _ffcv(lambda data: shutil.copy(data / "train.beton", data / "val.beton"), "digits"), 2,
         "{d}/data/val.beton has 1437 images but dataset.json records 360"),
    Case("malformed result.json (table builder)", _table_with('{"status": ', TABLES), 2, "result.json is not valid JSON"),
    Case("non-numeric val_top1 (table builder)", _table_with(NON_NUMERIC, TABLES), 2,
         "result.json: val_top1 is 'high', not a number"),
    Case("malformed result.json (launch --dry-run)", _table_with("[]", DRY), 2,
         "result.json does not hold a run result"),
    Case("malformed jobs.json (launch --dry-run)", _jobs_json, 2, "jobs.json is not a readable jobs record"),
    Case("launch --root is a file", _root_file, 2, "--root {d}/runs is not a writable folder"),
    Case("a batch larger than the training set (plain)", lambda d, fx: [*T, "data.batch_size=4096", "--run-dir",
                                                                        str(d / "run")], 2,
         "data.batch_size=4096 is larger than the 1437 training images of digits: lower data.batch_size"),
    Case("a batch larger than the training set (.beton)",
         lambda d, fx: [*_ffcv(name="digits")(d, fx)[:-2], "data.batch_size=2048", "--run-dir", str(d / "run")], 2,
         "data.batch_size=2048 is larger than the 1437 training images of digits"),
    Case("torn last metrics row the checkpoint covers", lambda d, fx: _copy_resumable(d, fx, _cut_last_row), 2,
         "{d}/run/metrics.jsonl line 2 (epoch 1) is cut off, but the checkpoint already covers that epoch"),
    Case("launch --only matching no run (before the smoke data step)",
         lambda d, fx: [str(REPO / "launch" / "table1.py"), "--smoke", "--cluster", "local", "--root",
                        str(d / "runs"), "--only", "resnet99/*"], 2, "--only resnet99/* matches no run of table1"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_table(case, warm, done_run, digits_betons, tmp_path):
    fx = {"done": done_run, "digits": digits_betons}
    d = tmp_path / "case"
    d.mkdir()
    argv = case.setup(d, fx)
    before = _snapshot(d)
    rc, out = warm.run(argv, env=case.env)
    lines = out.strip().splitlines()
    want = case.line.format(d=d)
    assert rc == case.code, f"exit {rc}, want {case.code}:\n{out[-3000:]}"
    assert len(lines) == 1 and lines[0].startswith("error: ") and want in lines[0], out[-3000:]
    assert len(lines[0].replace(str(d), "D")) < 300, lines[0]  # one readable line, not a library's internals
    assert _snapshot(d) == before, "the command changed what was there"


def test_torn_last_metrics_row_dropped_only_when_the_checkpoint_does_not_cover_it(tmp_path):
    """A writer killed mid-row leaves a torn last line for the epoch the checkpoint does not cover
    yet (dropped; the resume rewrites it); the same cut in an epoch the checkpoint covers is damage
    from outside and is refused, naming the file and the epoch."""
    rows = [{"epoch": 0, "val_top1": 1.0}, {"epoch": 1, "val_top1": 2.0}]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (tmp_path / "metrics.jsonl").write_text(text[:-8])
    assert rundir.read_metrics(tmp_path, covered=1) == rows[:1]
    with pytest.raises(rundir.RunDirError, match=r"metrics.jsonl line 2 \(epoch 1\) is cut off"):
        rundir.read_metrics(tmp_path, covered=2)


def test_identify_refuses_what_the_files_cannot_be(warm, digits_betons, tmp_path, cifar_smoke_data):
    data = tmp_path / "data"
    shutil.copytree(Path(cifar_smoke_data) / "cifar10", data)
    before = _snapshot(data)
    rc, out = warm.run(["-m", "repro.data.write", "identify", "digits", "--out", str(data)])
    sd = load_table("table1").smoke_data  # what the fixture generated
    assert rc == 2 and out.strip() == (f"error: {data} cannot hold digits: it has {sd['train']}/{sd['val']} "
                                       "train/val images, the digits split has 1437/360"), out
    assert _snapshot(data) == before


def test_read_only_places_are_refused_untouched(warm, done_run, tmp_path):
    run = _resumable(done_run, tmp_path / "ro" / "run")
    out_dir = tmp_path / "ro" / "betons"
    before = _snapshot(tmp_path / "ro")
    with _read_only(tmp_path / "ro"):
        rc, out = warm.run([*T, "--run-dir", str(run)])
        assert rc == 2 and out.strip().startswith(f"error: run folder {run} is not writable ("), out
        rc, out = warm.run(["-m", "repro.data.write", "digits", "--out", str(out_dir)])
        assert rc == 2 and out.strip().startswith(f"error: --out {out_dir} is not a writable folder ("), out
    assert _snapshot(tmp_path / "ro") == before


def test_done_run_without_model_pt_is_not_done(warm, done_run, tmp_path):
    """A folder whose result.json says done but whose model.pt was deleted is not done: the plan
    says so and the trainer runs the final phase again from the last checkpoint, delivering the
    very same model (and the same result, timings aside)."""
    from repro.papers import load_table
    from repro.runs.plan import plan
    run = tmp_path / "run"
    shutil.copytree(done_run, run)
    (run / "model.pt").unlink()
    assert rundir.done_result(run, Config.from_overrides(TINY + ["log.wandb=disabled"])) is None
    rc, out = warm.run([*T, "--run-dir", str(run)])
    assert rc == 0, out[-3000:]
    strip = lambda r: {k: v for k, v in r.items() if k not in TIMING}  # noqa: E731
    assert strip(rundir.read_result(run)) == strip(rundir.read_result(done_run))
    a, b = model_state(run), model_state(done_run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # and the launcher's plan does not count such a folder as done
    root = tmp_path / "root"
    pl = _planned_folder(root)
    (pl / "result.json").write_text(json.dumps({"status": "done", "val_top1": 1.0, "val_top5": 2.0, "flops_reduction": 0.0,
                                                "run_name": pl.name, "config_hash": pl.name.rsplit("-", 1)[1]}))
    p0 = plan(load_table("table1"), root, smoke=True, query=False).runs[0]
    assert p0.state == "new" and "model.pt is missing" in p0.detail
