"""FFCV writers and loaders against the plain path, on stand-in data in the real layouts.

Every test that iterates an FFCV loader has a timeout: an exception inside an FFCV worker
thread hangs instead of raising (stack.md). Loader builds cost ~6 s of numba compilation
each, so this file builds few of them.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

pytest.importorskip("ffcv")
# numba (via FFCV) may print a harmless dispatcher-finalizer KeyError at garbage collection
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

from repro.config import DataConfig  # noqa: E402
from repro.data import DataError, build_loaders, check_data, cifar10, imagenet, synth  # noqa: E402
from repro.data.stats import IMAGENET_STD  # noqa: E402


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    src = synth.make_cifar10(root / "src", train=250, val=50, seed=2)
    counts = cifar10.write(src, root / "ffcv", workers=2)
    assert counts == {"train": 250, "val": 50}
    return src, root / "ffcv"


@pytest.fixture(scope="module")
def imnet(tmp_path_factory):
    root = tmp_path_factory.mktemp("imnet")
    src = synth.make_imagenet(root / "src", classes=3, train_per_class=6, val_per_class=4, size=56,
                              workers=2)
    imagenet.write(src, root / "ffcv", max_res=128, quality=90, workers=2)  # no downscaling
    return src, root / "ffcv"


@pytest.mark.timeout(120)
def test_raw_round_trip_is_bit_exact(cifar):
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import ToTensor
    src, out = cifar
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "train.beton", "val.beton"]  # no temp files
    ident = json.loads((out / "dataset.json").read_text())  # which data set the files hold, for every reader
    assert ident["name"] == "cifar10" and {s: r["images"] for s, r in ident["splits"].items()} == \
        {s: len(cifar10.read_split(src, s)[1]) for s in ("train", "val")}
    assert ident["splits"]["train"]["min_side"] == ident["splits"]["train"]["max_side"] == 32
    for split in ("train", "val"):
        x, y = cifar10.read_split(src, split)
        loader = Loader(str(out / f"{split}.beton"), batch_size=64, num_workers=1,
                        order=OrderOption.SEQUENTIAL, drop_last=False,
                        pipelines={"image": [SimpleRGBImageDecoder(), ToTensor()],
                                   "label": [IntDecoder(), ToTensor()]})
        imgs, labels = zip(*[(a.clone(), b.clone()) for a, b in loader])
        assert torch.equal(torch.cat(imgs), torch.from_numpy(x))
        assert torch.equal(torch.cat(labels).view(-1), torch.from_numpy(y))


@pytest.mark.timeout(180)
def test_cifar_ffcv_equals_plain_and_resumes(cifar):
    src, out = cifar
    threads = torch.get_num_threads()
    cfg = DataConfig(name="cifar10", path=str(src), ffcv_dir=str(out), batch_size=32, workers=2)
    f = build_loaders(cfg, rank=0, world_size=1, device="cpu", seed=11)
    p = build_loaders(replace(cfg, loader="plain", workers=0), rank=0, world_size=1, device="cpu", seed=11)
    assert (len(f.train), len(f.val), f.num_train, f.num_val, f.num_classes) == (7, 2, 250, 50, 10)
    for loaders in (f, p):
        loaders.train.set_epoch(3)
    ff, pp = list(f.train.iterate()), list(p.train.iterate())
    assert len(ff) == len(pp) == 7
    for (a, la), (b, lb) in zip(ff, pp):
        # same order, same seeded pad-crop/flip, same normalisation: identical tensors
        assert torch.equal(a, b) and torch.equal(la, lb)
    resumed = list(f.train.iterate(start_batch=5))
    assert len(resumed) == 2
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(ff[5:], resumed))
    f.train.set_epoch(4)
    assert not torch.equal(next(iter(f.train.iterate()))[0], ff[0][0])
    # FFCV sets torch's thread count on import, Loader build and epoch start: restored each time
    assert torch.get_num_threads() == threads
    fv, pv = list(f.val.iterate()), list(p.val.iterate())
    assert [len(y) for _, y in fv] == [32, 18]  # val keeps the partial batch
    assert all(torch.equal(a, b) and torch.equal(la, lb) for (a, la), (b, lb) in zip(fv, pv))


@pytest.mark.timeout(240)
def test_imagenet_ffcv_val_matches_plain_and_train_is_seeded(imnet):
    src, out = imnet
    cfg = DataConfig(name="imagenet", path=str(src), ffcv_dir=str(out), batch_size=4, workers=2,
                     train_res=32, val_res=40, val_resize=46)
    f = build_loaders(cfg, rank=0, world_size=1, device="cpu", seed=5)
    p = build_loaders(replace(cfg, loader="plain", workers=0), rank=0, world_size=1, device="cpu", seed=5)
    assert (f.num_classes, f.num_train, f.num_val) == (3, 18, 12) == (p.num_classes, p.num_train, p.num_val)
    scale = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255  # back to grey levels
    fx, fy = map(torch.cat, zip(*f.val.iterate()))
    px, py = map(torch.cat, zip(*p.val.iterate()))
    assert fx.shape == (12, 3, 40, 40) and torch.equal(fy, py)
    diff = ((fx - px) * scale).abs().mean((1, 2, 3))
    other = ((fx - px.roll(1, 0)) * scale).abs().mean((1, 2, 3))
    # FFCV re-encodes at quality 90 and resizes with cv2 INTER_AREA, plain uses Pillow bilinear
    # on the original JPEG: a few grey levels apart, against tens for a different image.
    assert diff.max() < 6.0, diff
    assert other.min() > 15.0, other
    # seeded random-resized crop + flip: same (seed, epoch) -> same tensors, also when resumed
    f.train.set_epoch(1)
    a = list(f.train.iterate())
    b = list(f.train.iterate(start_batch=2))
    assert len(a) == 4 and a[0][0].shape == (4, 3, 32, 32)
    assert all(torch.equal(x, y) and torch.equal(lx, ly) for (x, lx), (y, ly) in zip(a[2:], b))
    f.train.set_epoch(2)
    c = list(f.train.iterate())
    assert not torch.equal(a[0][0], c[0][0])


@pytest.mark.timeout(240)
def test_imagenet_fused_decoder_equals_uint8_pipeline_and_flips_by_mask(imnet, monkeypatch):
    """The CPU training decoder's fused flip + normalisation gives exactly the tensors of the
    uint8 pipeline (the one CUDA uses) normalised by to_model_input, and it flips exactly the
    images `augment.flip_mask` (the plain path's decisions) selects. All 9 batches are held at
    once, more than the output pool keeps, so a reused array would show up as a mismatch."""
    from repro.data import augment
    from repro.data.loaders_ffcv import FfcvLoader
    from repro.data.stats import IMAGENET_MEAN
    _, out = imnet
    kw = dict(kind="imagenet", res=24, resize=28, mean=IMAGENET_MEAN, std=IMAGENET_STD,
              device=torch.device("cpu"), workers=2, in_memory=True, batch_size=2, train=True,
              seed=3, rank=0, world=1)
    fused = FfcvLoader(str(out / "train.beton"), 18, fuse_normalize=True, **kw)
    raw = FfcvLoader(str(out / "train.beton"), 18, fuse_normalize=False, **kw)
    calls = []
    real = augment.to_model_input
    monkeypatch.setattr(augment, "to_model_input", lambda x, *a: (calls.append(len(x)), real(x, *a))[1])
    for loader in (fused, raw):
        loader.set_epoch(4)
    a, b = list(fused.iterate()), list(raw.iterate())
    assert len(a) == len(b) == 9 and a[0][0].dtype == torch.float32 and a[0][0].shape == (2, 3, 24, 24)
    assert all(torch.equal(x, y) and torch.equal(lx, ly) for (x, lx), (y, ly) in zip(a, b))
    assert len(calls) == 9  # only the uint8 loader went through to_model_input
    assert len({x.data_ptr() for x, _ in a}) == 9  # held batches never share memory
    # The same crops without any flip: flipped images are the mirror images of these.
    monkeypatch.setattr(augment, "flip_mask", lambda seed, epoch, idx: np.zeros(len(idx), bool))
    unflipped = torch.cat([x for x, _ in raw.iterate()])
    monkeypatch.undo()
    mask = torch.from_numpy(augment.flip_mask(3, 4, raw.indices(0)))
    assert 0 < int(mask.sum()) < len(mask)
    expect = torch.where(mask.view(-1, 1, 1, 1), unflipped.flip(3), unflipped)
    assert torch.equal(torch.cat([x for x, _ in b]), expect)
    # Batches dropped by the caller are reused: consumed one at a time, all 9 batches of an
    # epoch come from the pool's kept arrays, fewer than 9 of them.
    del a
    used = [x.data_ptr() for x, _ in fused.iterate()]
    kept = {arr.ctypes.data for arr in fused._out_pool.arrays}
    assert len(used) == 9 and set(used) <= kept and len(kept) < 9


def test_output_pool_reuses_an_array_only_when_nothing_references_it():
    from repro.data.loaders_ffcv import _OutputPool
    pool = _OutputPool((2, 3), np.float32, keep=2)
    first = pool.take()
    view = torch.from_numpy(first[:1])  # a tensor view made from the batch, as a caller holds it
    del first
    second = pool.take()
    assert second.ctypes.data != view.data_ptr()
    del second
    assert pool.take().ctypes.data == pool.arrays[1].ctypes.data  # free again: reused
    del view
    assert pool.take() is pool.arrays[0]
    held = [pool.take() for _ in range(3)]  # beyond `keep`: fresh arrays the pool does not keep
    assert len({h.ctypes.data for h in held}) == 3 and len(pool.arrays) == 2


def test_truncated_beton_is_refused(cifar, tmp_path):
    _, out = cifar
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(out / "val.beton", bad / "val.beton")
    data = (out / "train.beton").read_bytes()
    for cut in (len(data) - 30, len(data) // 2, 100):
        (bad / "train.beton").write_bytes(data[:cut])
        cfg = DataConfig(name="cifar10", ffcv_dir=str(bad))
        with pytest.raises(DataError, match=r"train.beton is truncated.*python -m repro.data.write cifar10"):
            check_data(cfg)


def test_header_layout_is_ffcvs_and_checking_a_file_needs_no_ffcv(cifar):
    """check_beton restates FFCV's on-disk layout (to spare the launcher FFCV's import): it must
    be FFCV's, and a check in a fresh process must not import FFCV."""
    import subprocess
    import sys
    from ffcv import types
    from repro.data import beton
    assert (beton.HEADER, beton.FIELD_DESC, beton.ALLOC_TABLE, beton.FFCV_FORMAT_VERSION) == \
        (types.HeaderType, types.FieldDescType, types.ALLOC_TABLE_TYPE, types.CURRENT_VERSION)
    _, out = cifar
    code = (f"import sys; from repro.data.beton import check_beton; n = check_beton({str(out / 'val.beton')!r}); "
            "print(n, 'ffcv' in sys.modules)")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert got == ["50", "False"], got  # the fixture's 50 validation images


def test_missing_or_broken_ffcv_is_one_line(cifar, monkeypatch):
    """Not installed: check_data says so (without importing FFCV). Installed but not importable:
    build_loaders says so, with the import's own error, on one line."""
    import importlib.util
    import sys
    from repro.data import build as data_build
    _, out = cifar
    cfg = DataConfig(name="cifar10", ffcv_dir=str(out), batch_size=10)
    real = importlib.util.find_spec
    with monkeypatch.context() as m:
        m.setattr(data_build.importlib.util, "find_spec", lambda name, *a: None if name == "ffcv" else real(name, *a))
        with pytest.raises(DataError, match=r"^FFCV is not importable here: install it .* or set data.loader=plain$"):
            check_data(cfg)
    monkeypatch.setitem(sys.modules, "repro.data.loaders_ffcv", None)  # its import now fails
    with pytest.raises(DataError) as e:
        build_loaders(cfg)
    assert str(e.value).startswith("FFCV is not importable here")
    assert str(e.value).endswith("(ModuleNotFoundError: import of repro.data.loaders_ffcv halted; None in sys.modules)")
    assert "\n" not in str(e.value)


@pytest.mark.timeout(180)
def test_corrupt_jpeg_fails_the_writer_cleanly(imnet, tmp_path):
    src, _ = imnet
    root = tmp_path / "src"
    shutil.copytree(src, root)
    victim = sorted((root / "val" / "n00000002").iterdir())[1]
    victim.write_bytes(victim.read_bytes()[:300])
    out = tmp_path / "out"
    with pytest.raises(DataError, match=f"cannot decode {victim}"):
        imagenet.write(root, out, max_res=64, workers=2)
    # train.beton was complete and stays; no val.beton and no temporary file is left behind
    assert sorted(os.listdir(out)) == ["train.beton"]
