"""What goes wrong only once a run is under way, and what the one line then says: a full disk
(exit 1, the last good checkpoint kept - or the line says none was written yet - no "failed"
result), a corrupt JPEG met while training (exit 1, result.json failed, the file named; the
folder is already written, so it is not exit 2), a batch larger than an ImageNet folder's train/
files (exit 2, before anything is written), and torchrun with a batch the ranks cannot split
(our line once, the last thing rank 0 prints; then torchrun's own report)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from repro import rundir
from conftest import PLUGINS, REPO, pause_at_step, with_plugins
from tests.test_bad_input import T
from tests.test_train import TINY

pytestmark = pytest.mark.timeout(900)


def test_full_disk_fails_in_one_line_and_keeps_the_checkpoint(warm, tmp_path):
    """The disk fills up while the epoch-end checkpoint is written: exit 1, one line naming the
    file, the previous checkpoint intact, no "failed" result (the run resumes once there is room)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs (a disk that fills up)")
    src = tmp_path / "src"
    pid, log = warm.start([*T, "--run-dir", str(src)], pause_at_step(4, 600))
    warm.wait_for(lambda: (src / "logs" / "paused-at-step-4").exists(), pid, log)
    os.kill(pid, 15)
    assert warm.wait(pid) == 75
    (src / "logs" / "paused-at-step-4").unlink()
    used = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    disk = tmp_path / "disk"
    disk.mkdir()
    size_kb = used // 1024 + 1024  # room for the logs and env.json, not for a second checkpoint
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(disk)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        run = disk / "run"
        shutil.copytree(src, run)
        ckpt = (run / "checkpoint.pt").read_bytes()
        rc, out = warm.run([*T, "--run-dir", str(run)])
        last = out.strip().splitlines()[-1]
        assert rc == 1 and last == (f"failed: {run}/checkpoint.pt: No space left on device; the last good "
                                    "checkpoint is kept - fix this and run again to resume"), out[-3000:]
        assert "Traceback" not in out and "Logging error" not in out
        assert (run / "checkpoint.pt").read_bytes() == ckpt and not (run / "result.json").exists()
        assert not list(run.glob("*.tmp-*")) and not (run / "lock").exists()
        subprocess.run(["mount", "-o", f"remount,size={size_kb + 16384}k", str(disk)], check=True)
        rc, out = warm.run([*T, "--run-dir", str(run)])
        assert rc == 0, out[-3000:]  # room again: it resumes and finishes
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_full_disk_before_the_first_checkpoint_says_there_is_none(warm, tmp_path):
    """The disk is too small for even the first checkpoint: the line says what is true (no
    checkpoint yet, nothing to resume from), exit 1, no "failed" result."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs (a disk that fills up)")
    disk = tmp_path / "disk"
    disk.mkdir()
    # room for config.json, env.json, the log and a metrics row, not for resnet20's checkpoint (~2 MB)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        run = disk / "run"
        rc, out = warm.run([*T, "--run-dir", str(run)])
        last = out.strip().splitlines()[-1]
        assert rc == 1 and last == (f"failed: {run}/checkpoint.pt: No space left on device; no checkpoint was "
                                    "written yet, so there is nothing to resume from - fix this and run again "
                                    "to start over"), out[-3000:]
        assert not (run / "checkpoint.pt").exists() and not (run / "result.json").exists()
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_imagenet_folder_batch_and_a_corrupt_jpeg_met_while_training(warm, tmp_path):
    """Plain ImageNet folders: a batch larger than the train/ files is refused before anything is
    written (exit 2); a corrupt JPEG can only be met while reading, when the folder is already
    written, so it is a failed run (exit 1, result.json failed), the file named in the one line."""
    from repro.data import synth
    src = synth.make_imagenet(tmp_path / "imnet", classes=3, train_per_class=4, val_per_class=2, size=48, workers=1)
    argv = ["-m", "repro.train", "model.arch=resnet18", "data.name=imagenet", f"data.path={src}", "data.loader=plain",
            "data.workers=0", "data.train_res=32", "data.val_res=32", "data.val_resize=36", "schedule.epochs=1",
            "schedule.val_batches=1", "device=cpu", "log.wandb=disabled"]
    run = tmp_path / "run"
    rc, out = warm.run([*argv, "data.batch_size=16", "--run-dir", str(run)])
    assert rc == 2 and out.strip() == ("error: data.batch_size=16 is larger than the 12 training images of imagenet: "
                                       "lower data.batch_size"), out[-3000:]
    assert not run.exists()
    bad = sorted((src / "train" / "n00000001").iterdir())[0]
    bad.write_bytes(b"not a jpeg at all")
    rc, out = warm.run([*argv, "data.batch_size=4", "--run-dir", str(run)])
    last = out.strip().splitlines()[-1]
    assert rc == 1 and last.startswith(f"failed: ImageNet: cannot decode {bad} (") and last.endswith(
        "replace or remove the file; no checkpoint was written yet, so there is nothing to resume from - fix this "
        "and run again to start over"), out[-3000:]
    assert rundir.read_result(run)["status"] == "failed" and not (run / "checkpoint.pt").exists()


@pytest.mark.slow
@pytest.mark.parametrize("rank0_late_s", [0, 4], ids=["together", "rank0-late"])
def test_torchrun_batch_the_ranks_cannot_split(tmp_path, rank0_late_s):
    """Found before anything is created, said once (by rank 0) as the last thing that rank prints
    (the other rank prints nothing); torchrun then adds its own report of a failed worker, which is
    torchrun's and not ours to shape. Each rank's own output is kept apart with --redirects/--log-dir.
    Also when rank 0 gets there last (as on a loaded machine): torchrun stops every worker once one
    exits with an error, so the other rank must not exit first and cut rank 0 off before it speaks."""
    d, logs = tmp_path / "run", tmp_path / "logs"
    late = {**with_plugins(PLUGINS / "late_rank0.py"), "PRUNEREPRO_TEST_LATE_RANK0": str(rank0_late_s)}
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "--redirects", "3", "--log-dir", str(logs),
                          "-m", "repro.train", *TINY, "data.batch_size=33", "--run-dir", str(d)], cwd=REPO,
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1", **(late if rank0_late_s else {})})
    assert out.returncode != 0
    line = "error: data.batch_size=33 is not divisible by the 2 processes of this run; use a multiple of 2"
    own = {f"{p.parent.name}/{p.name}": p.read_text() for p in logs.rglob("*.log")}
    assert sorted(own) == ["0/stderr.log", "0/stdout.log", "1/stderr.log", "1/stdout.log"], own
    assert own["0/stderr.log"].strip().splitlines()[-1] == line, own
    assert own["0/stdout.log"] == own["1/stdout.log"] == own["1/stderr.log"] == "", own
    assert sum(t.count(line) for t in own.values()) == 1 and line not in out.stdout + out.stderr
    assert not d.exists()
