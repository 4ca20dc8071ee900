"""Data sources, stand-in generators, augmentation and sharding: no FFCV Loader here."""
from __future__ import annotations

import pickle
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from repro.config import DataConfig
from repro.data import DataError, augment, check_data, cifar10, digits, imagenet, sharding, synth
from repro.data.stats import DIGITS_MEAN, DIGITS_STD


@pytest.fixture(scope="module")
def cifar_src(tmp_path_factory):
    return synth.make_cifar10(tmp_path_factory.mktemp("c") / "cifar", train=250, val=50, seed=1)


@pytest.fixture(scope="module")
def imagenet_src(tmp_path_factory):
    return synth.make_imagenet(tmp_path_factory.mktemp("i") / "imnet", classes=3, train_per_class=4,
                               val_per_class=2, size=48, workers=1)


# ------------------------------------------------------------------------- CIFAR layout
def test_cifar_synth_has_the_official_layout(cifar_src):
    names = sorted(p.name for p in cifar_src.iterdir())
    assert names == sorted([*cifar10.TRAIN_FILES, "test_batch", "batches.meta"])
    with open(cifar_src / "data_batch_1", "rb") as f:
        d = pickle.load(f, encoding="bytes")
    assert d[b"data"].dtype == np.uint8 and d[b"data"].shape == (50, 3072)
    assert len(d[b"labels"]) == 50
    # row layout: the first 1024 values are the red plane of the image
    images, labels = cifar10.read_batch(cifar_src / "data_batch_1")
    assert np.array_equal(images[:, :, :, 0].reshape(50, 1024), d[b"data"][:, :1024])
    x, y = cifar10.read_split(cifar_src, "train")
    assert x.shape == (250, 32, 32, 3) and np.bincount(y).tolist() == [25] * 10
    assert cifar10.read_split(cifar_src, "val")[0].shape == (50, 32, 32, 3)


def test_cifar_synth_is_learnable_not_noise(cifar_src):
    """Nearest class mean on raw pixels beats chance by far (the signal is real)."""
    x, y = cifar10.read_split(cifar_src, "train")
    xv, yv = cifar10.read_split(cifar_src, "val")
    means = np.stack([x[y == c].reshape(-1, 3072).mean(0) for c in range(10)])
    d = ((xv.reshape(-1, 3072)[:, None, :].astype(np.float32) - means[None]) ** 2).sum(-1)
    assert (d.argmin(1) == yv).mean() > 0.5


def test_cifar_bad_inputs_name_the_file(tmp_path, cifar_src):
    with pytest.raises(DataError, match="does not exist"):
        cifar10.read_split(tmp_path / "nope", "train")
    bad = tmp_path / "bad"
    bad.mkdir()
    for p in cifar_src.iterdir():
        (bad / p.name).write_bytes(p.read_bytes())
    (bad / "data_batch_3").unlink()
    with pytest.raises(DataError, match="lacks data_batch_3"):
        cifar10.read_split(bad, "train")
    with open(bad / "data_batch_3", "wb") as f:  # wrong shape
        pickle.dump({b"data": np.zeros((10, 3000), np.uint8), b"labels": [0] * 10}, f)
    with pytest.raises(DataError, match=r"data_batch_3 'data' is uint8 of shape \(10, 3000\)"):
        cifar10.read_split(bad, "train")
    (bad / "data_batch_3").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match="data_batch_3 is not a readable pickle"):
        cifar10.read_split(bad, "train")


# ---------------------------------------------------------------------- ImageNet layout
def test_imagenet_synth_layout_and_scan(imagenet_src):
    paths, labels, classes = imagenet.scan(imagenet_src, "train")
    assert classes == ["n00000001", "n00000002", "n00000003"]
    assert len(paths) == 12 and labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert all(p.endswith(".JPEG") for p in paths)
    vpaths, vlabels, _ = imagenet.scan(imagenet_src, "val")
    assert len(vpaths) == 6 and "ILSVRC2012_val_" in vpaths[0]
    sizes = {imagenet.decode(p).shape for p in paths}
    assert len(sizes) > 1  # varied resolutions and aspect ratios, like the real set


def test_imagenet_bad_inputs(tmp_path, imagenet_src):
    with pytest.raises(DataError, match="does not exist"):
        imagenet.scan(tmp_path / "missing", "train")
    import shutil
    root = tmp_path / "copy"
    shutil.copytree(imagenet_src, root)
    for f in (root / "val" / "n00000002").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"class folder .*val/n00000002 holds no images"):
        imagenet.scan(root, "val")
    (root / "val" / "n00000002").rmdir()
    with pytest.raises(DataError, match="differ from train"):
        imagenet.scan(root, "val")
    bad = root / "train" / "n00000001" / "n00000001_0.JPEG"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated JPEG
    with pytest.raises(DataError, match="cannot decode .*n00000001_0.JPEG"):
        imagenet.decode(str(bad))


# ------------------------------------------------------------------------------ digits
def test_digits_split_and_measured_stats():
    x, y = digits.read_split("train")
    xv, yv = digits.read_split("val")
    assert x.shape == (1437, 32, 32, 3) and xv.shape == (360, 32, 32, 3)
    assert np.array_equal(x[..., 0], x[..., 2])  # grey replicated to RGB
    assert abs(np.bincount(yv) - 36).max() <= 1   # stratified
    f = x.astype(np.float64) / 255
    assert f.mean() == pytest.approx(DIGITS_MEAN[0], abs=1e-3)
    assert f.std() == pytest.approx(DIGITS_STD[0], abs=1e-3)


# ------------------------------------------------------------------------ augmentation
def test_cifar_augment_is_seeded_and_matches_a_reference():
    rng = np.random.default_rng(0)
    imgs = torch.from_numpy(rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8))
    idx = np.arange(100, 116)
    a = augment.cifar_augment(imgs, 7, 3, idx)
    assert torch.equal(a, augment.cifar_augment(imgs, 7, 3, idx))
    assert not torch.equal(a, augment.cifar_augment(imgs, 7, 4, idx))
    # per-sample: a batch of one gives the same image (independent of batch composition)
    assert torch.equal(a[5:6], augment.cifar_augment(imgs[5:6], 7, 3, idx[5:6]))
    u = augment.uniforms(augment.sample_keys(7, 3, idx, augment.STREAM_CROP), 3)
    for k in range(16):  # loop reference: zero-pad 4, crop at (dy, dx), then flip
        p = np.zeros((40, 40, 3), np.uint8)
        p[4:36, 4:36] = imgs[k].numpy()
        dy, dx = int(u[k, 0] * 9), int(u[k, 1] * 9)
        ref = p[dy:dy + 32, dx:dx + 32]
        if u[k, 2] < 0.5:
            ref = ref[:, ::-1]
        assert np.array_equal(a[k].numpy(), ref)
    flips = (u[:, 2] < 0.5).mean()
    assert 0 < flips < 1


def test_rrc_params_stay_inside_the_image():
    keys = augment.sample_keys(0, 0, np.arange(500), augment.STREAM_CROP)
    u = augment.uniforms(keys, augment.RRC_UNIFORMS)
    areas = []
    for row in u:
        i, j, h, w = augment.rrc_params(120, 90, row)
        assert 0 <= i and 0 <= j and i + h <= 120 and j + w <= 90 and h > 0 and w > 0
        areas.append(h * w / (120 * 90))
    assert 0.07 <= min(areas) < 0.2 and max(areas) > 0.8  # 0.08 up to rounding of h, w


# ----------------------------------------------------------------------------- sharding
@pytest.mark.parametrize("n,world", [(10, 1), (10, 3), (7, 2), (100, 8), (1, 2)])
def test_val_shards_cover_exactly_once(n, world):
    got = np.concatenate([sharding.val_indices(n, r, world) for r in range(world)])
    assert sorted(got.tolist()) == list(range(n))


def test_train_shards_disjoint_equal_and_seeded():
    parts = [sharding.train_indices(103, 5, 2, r, 4) for r in range(4)]
    assert {len(p) for p in parts} == {25}
    assert len(set(np.concatenate(parts).tolist())) == 100
    assert np.array_equal(parts[1], sharding.train_indices(103, 5, 2, 1, 4))
    assert not np.array_equal(parts[1], sharding.train_indices(103, 5, 3, 1, 4))
    loader = sharding.EpochLoader(103, 8, train=True, seed=5, rank=1, world=4)
    assert len(loader) == 3 and loader.num_samples == 24
    assert np.array_equal(loader.indices(1), loader.indices(0)[8:])
    val = sharding.EpochLoader(103, 8, train=False, seed=5, rank=1, world=4)
    assert len(val) == 4 and val.num_samples == 26


# ---------------------------------------------------------------------------- check_data
def test_check_data_messages(tmp_path, cifar_src):
    cfg = DataConfig(name="cifar10", loader="ffcv", ffcv_dir="")
    with pytest.raises(DataError, match="python -m repro.data.write cifar10"):
        check_data(cfg)
    with pytest.raises(DataError, match=r"missing .*train.beton; rebuild with `python -m repro.data.write"):
        check_data(replace(cfg, ffcv_dir=str(tmp_path)))
    with pytest.raises(DataError, match="data.path is empty"):
        check_data(replace(cfg, loader="plain"))
    check_data(replace(cfg, loader="plain", path=str(cifar_src)))
    check_data(DataConfig(name="digits", loader="ffcv", ffcv_dir=""))  # converted on demand
    with pytest.raises(DataError, match="synth imagenet"):
        check_data(DataConfig(name="imagenet", loader="plain", path=str(tmp_path / "none")))


def test_plain_cifar_loader_resumes_bit_identically(cifar_src):
    from repro.data import build_loaders
    cfg = DataConfig(name="cifar10", path=str(cifar_src), loader="plain", batch_size=32, workers=0)
    L = build_loaders(cfg, rank=0, world_size=1, device="cpu", seed=4)
    assert (len(L.train), len(L.val), L.num_train, L.num_val) == (7, 2, 250, 50)
    L.train.set_epoch(2)
    full = list(L.train.iterate())
    resumed = list(L.train.iterate(start_batch=4))
    assert len(resumed) == 3
    for (a, la), (b, lb) in zip(full[4:], resumed):
        assert torch.equal(a, b) and torch.equal(la, lb)
    x, y = full[0]
    assert x.shape == (32, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert abs(float(x.mean())) < 1.0  # normalised


def test_cli_help_and_errors(tmp_path):
    r = subprocess.run([sys.executable, "-m", "repro.data.synth", "cifar10", "--help"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--train" in r.stdout
    r = subprocess.run([sys.executable, "-m", "repro.data.write", "cifar10", "--src",
                        str(tmp_path / "absent"), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "does not exist" in r.stderr
    assert not (tmp_path / "o").exists()


PLAIN_BAD_JPEG = r"""
import sys
from repro.config import DataConfig
from repro.data import DataError, build_loaders
cfg = DataConfig(name="imagenet", path=sys.argv[1], loader="plain", batch_size=4, workers=int(sys.argv[2]),
                 train_res=32, val_res=32, val_resize=36)
L = build_loaders(cfg, rank=0, world_size=1, device="cpu", seed=0)
try:
    for _ in L.val.iterate():
        pass
except DataError as e:
    print(f"DataError: {e}")
    sys.exit(3)
"""


def test_plain_loader_names_a_corrupt_jpeg(tmp_path, imagenet_src):
    import shutil
    root = tmp_path / "copy"
    shutil.copytree(imagenet_src, root)
    bad = sorted((root / "val" / "n00000003").iterdir())[0]
    bad.write_bytes(b"not a jpeg at all")
    # in-process without workers, and through a DataLoader worker process (in a subprocess, so
    # no worker is forked beside FFCV/numba threads another test may have left in this process)
    from repro.data import build_loaders
    cfg = DataConfig(name="imagenet", path=str(root), loader="plain", batch_size=4, workers=0,
                     train_res=32, val_res=32, val_resize=36)
    with pytest.raises(DataError, match=f"cannot decode {bad}"):
        list(build_loaders(cfg, rank=0, world_size=1, device="cpu", seed=0).val.iterate())
    r = subprocess.run([sys.executable, "-c", PLAIN_BAD_JPEG, str(root), "1"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 3, r.stderr[-2000:]
    assert r.stdout.strip() == f"DataError: ImageNet: cannot decode {bad} (UnidentifiedImageError: " \
                               f"cannot identify image file '{bad}'); replace or remove the file"
