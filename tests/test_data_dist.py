"""Two ranks over torch.distributed (gloo, 127.0.0.1): the validation loaders together yield
every validation image exactly once, for both the FFCV and the plain path. The digits .beton
files are converted on demand by both ranks at once into an empty cache folder."""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

pytest.importorskip("ffcv")
# numba (via FFCV) may print a harmless dispatcher-finalizer KeyError at garbage collection
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

from repro.data import augment, digits  # noqa: E402
from repro.data.stats import DIGITS_MEAN, DIGITS_STD  # noqa: E402

WORKER = r"""
import hashlib, json, sys
import torch.distributed as dist
from repro.config import DataConfig
from repro.data import build_loaders

rank, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
result = {}
for loader in ("ffcv", "plain"):  # plain without worker processes: no fork beside FFCV threads
    cfg = DataConfig(name="digits", ffcv_dir="", loader=loader, batch_size=64,
                     workers=1 if loader == "ffcv" else 0)
    L = build_loaders(cfg, rank=rank, world_size=2, device="cpu", seed=0)
    seen = [(hashlib.sha1(x.numpy().tobytes()).hexdigest(), int(y))
            for xb, yb in L.val.iterate() for x, y in zip(xb, yb)]
    mine = {"seen": seen, "len": len(L.val), "num_val": L.num_val, "train_len": len(L.train)}
    gathered = [None, None]
    dist.all_gather_object(gathered, mine)
    result[loader] = gathered
if rank == 0:
    with open(out, "w") as f:
        json.dump(result, f)
dist.destroy_process_group()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_ranks_cover_validation_exactly_once(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "result.json"
    env = {**os.environ, "PRUNEREPRO_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, str(script), str(r), port, str(out)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(2)]
    try:
        logs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)[-3000:]

    # reference: the whole validation split, normalised the same way, one fingerprint per image
    x, y = digits.read_split("val")
    ref = augment.to_model_input(torch.from_numpy(x), torch.device("cpu"), DIGITS_MEAN, DIGITS_STD)
    expected = Counter((hashlib.sha1(t.numpy().tobytes()).hexdigest(), int(l)) for t, l in zip(ref, y))
    assert len(expected) > 300  # fingerprints tell the images apart

    result = json.loads(out.read_text())
    for loader in ("ffcv", "plain"):
        r0, r1 = result[loader]
        got = Counter(tuple(s) for s in r0["seen"] + r1["seen"])
        assert got == expected, loader                       # every image exactly once
        assert len(r0["seen"]) == len(r1["seen"]) == 180     # 360 split evenly, no padding
        assert r0["len"] == r1["len"] == 6 and r0["num_val"] == 360  # 180 per rank, batches of 32
        assert r0["train_len"] == r1["train_len"] == 1437 // 2 // 32
    assert result["ffcv"][0]["seen"] == result["plain"][0]["seen"]
    # the on-demand conversion by two ranks at once left exactly the two files, their identity, the
    # rendering later processes read (repro.data.digits) and the lock: no temporary file
    cache = Path(tmp_path / "cache")
    assert sorted(p.name for p in next(cache.iterdir()).iterdir()) == \
        [".lock", "dataset.json", "rendered.npz", "train.beton", "val.beton"]
