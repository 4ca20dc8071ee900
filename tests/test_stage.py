"""Node-local staging of the .beton files (data.stage_dir): staged once, reused, a torn copy never
used, what another job reads never deleted. A temporary folder plays the node-local disk."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from repro.config import Config, ConfigError
from repro.data import stage as staging
from repro.data.stage import stage, stage_file

from conftest import REPO


def _shared(tmp_path: Path, mib: int = 3) -> Path:
    """A 'shared storage' data folder with the files a conversion writes."""
    src = tmp_path / "shared" / "imagenet"
    src.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, size in (("train.beton", mib << 20), ("val.beton", 1 << 20)):
        (src / name).write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
    (src / "dataset.json").write_text('{"format": "prunerepro-dataset-v1"}')
    return src


def test_staged_once_then_reused(tmp_path):
    src, local = _shared(tmp_path), tmp_path / "local"
    dest = stage(src, str(local))
    assert dest.parent == local and dest.name.startswith("imagenet-")
    for name in staging.FILES:
        assert (dest / name).read_bytes() == (src / name).read_bytes()
    inode = (dest / "train.beton").stat().st_ino
    assert stage_file(src / "train.beton", dest / "train.beton") == "reused"
    assert stage(src, str(local)) == dest and (dest / "train.beton").stat().st_ino == inode  # not copied again
    assert sorted(p.name for p in dest.iterdir() if staging.TMP_MARK in p.name) == []
    # off: the shared folder itself
    assert stage(src, "") == src


def test_a_changed_source_is_copied_again_and_a_reader_of_the_old_copy_keeps_it(tmp_path):
    src, local = _shared(tmp_path), tmp_path / "local"
    dest = stage(src, str(local))
    old = (dest / "val.beton").read_bytes()
    with open(dest / "val.beton", "rb") as reader:  # another job reads the old copy
        (src / "val.beton").write_bytes(b"new" * 1000)
        assert stage_file(src / "val.beton", dest / "val.beton") == "copied"
        assert reader.read() == old  # replaced by rename, never deleted under it
    assert (dest / "val.beton").read_bytes() == b"new" * 1000


_KILLED_COPIER = """
import os, signal, sys
from pathlib import Path
from repro.data import stage as s
real = s._copy_hashing
def half_then_killed(src, dst):
    with open(src, "rb") as f, open(dst, "wb") as out:
        out.write(f.read(os.path.getsize(src) // 2))
        out.flush()
    print("half written", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
s._copy_hashing = half_then_killed
s.stage_file(Path(sys.argv[1]), Path(sys.argv[2]))
"""


def test_a_torn_copy_is_never_used(tmp_path):
    """A copier killed half-way (kill -9, its lock released by the kernel) leaves a torn temporary
    file; the final name never holds it, and the next stage copies afresh and removes it."""
    src, local = _shared(tmp_path), tmp_path / "local" / "imagenet-x"
    local.mkdir(parents=True)
    dst = local / "train.beton"
    p = subprocess.run([sys.executable, "-c", _KILLED_COPIER, str(src / "train.beton"), str(dst)], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL and "half written" in p.stdout, p.stderr[-2000:]
    torn = [f for f in local.iterdir() if staging.TMP_MARK in f.name]
    assert len(torn) == 1 and torn[0].stat().st_size == (src / "train.beton").stat().st_size // 2
    assert not dst.exists()  # the final name never held the torn copy
    assert stage_file(src / "train.beton", dst) == "copied"
    assert dst.read_bytes() == (src / "train.beton").read_bytes()
    assert not torn[0].exists()
    # a file under the final name without its record (an interrupted hand copy) is not trusted
    dst.write_bytes(dst.read_bytes()[:1000])
    staging._record_path(dst).unlink()
    assert stage_file(src / "train.beton", dst) == "copied" and dst.read_bytes() == (src / "train.beton").read_bytes()


_RANK = """
import sys
from pathlib import Path
from repro.data.stage import stage_file
print(stage_file(Path(sys.argv[1]), Path(sys.argv[2])))
"""


@pytest.mark.slow  # three Python processes
def test_ranks_of_one_node_copy_once(tmp_path):
    src, local = _shared(tmp_path, mib=24), tmp_path / "local"
    local.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", _RANK, str(src / "train.beton"), str(local / "train.beton")],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [e[-2000:] for _, e in outs]
    assert sorted(o.strip() for o, _ in outs) == ["copied", "reused", "reused"]
    assert (local / "train.beton").read_bytes() == (src / "train.beton").read_bytes()


def test_no_room_or_no_folder_reads_the_shared_copy(tmp_path, caplog):
    src = _shared(tmp_path)
    blocked = tmp_path / "file"
    blocked.write_text("")
    with caplog.at_level("WARNING", logger="repro.data.stage"):
        assert stage(src, str(blocked / "local")) == src  # cannot be created here
        assert stage(src, "$PRUNEREPRO_UNSET_VARIABLE/x") == src  # not set on this node
    assert len(caplog.records) == 2 and all("not staged" in r.getMessage() for r in caplog.records)


def test_stage_dir_key_changes_no_run_hash():
    from repro.config.naming import config_hash
    cfg = Config()
    assert Config().data.stage_dir == ""
    staged = Config.from_overrides(["data.stage_dir=/local/scratch"])
    assert config_hash(staged) == config_hash(cfg)
    with pytest.raises(ConfigError, match="data.stage_dir: must be an absolute path"):
        Config.from_overrides(["data.stage_dir=scratch"])


@pytest.mark.slow  # two FFCV compilations
def test_loaders_read_the_staged_copy(tmp_path):
    from repro.config import DataConfig
    from repro.data import build_loaders
    common = dict(name="digits", loader="ffcv", batch_size=16, workers=1)
    shared = build_loaders(DataConfig(**common), seed=0)
    local = build_loaders(DataConfig(**common, stage_dir=str(tmp_path / "local")), seed=0)
    assert Path(local.train.fname).parent.parent == tmp_path / "local"
    assert Path(shared.train.fname).parent != Path(local.train.fname).parent
    (xs, ys), (xl, yl) = next(iter(shared.train)), next(iter(local.train))
    assert (xs == xl).all() and (ys == yl).all()
