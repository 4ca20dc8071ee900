"""ImageNet as downloaded: a flat val/ labelled by the devkit or Kaggle's CSV, CMYK JPEGs and a PNG
named .JPEG in train/, and the writer's dry run. All on small generated trees."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image

from repro.data import DataError, imagenet, imagenet_labels, synth
from repro.data.synth_dist import (add_train_quirks, flatten_val, interleave_val_names, write_devkit,
                                   write_kaggle_csv)


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """One set of images in three layouts: val/ in class folders ('folders'), flat val/ with the
    devkit ('devkit'), flat val/ with Kaggle's CSV ('kaggle'). Val numbers interleave the classes,
    so sorting a flat val/ by name alone would not give the class-folder order."""
    base = tmp_path_factory.mktemp("dist")
    ref = synth.make_imagenet(base / "folders", classes=3, train_per_class=3, val_per_class=3,
                              size=40, workers=1)
    rng = np.random.default_rng(5)
    truth = interleave_val_names(ref, rng)
    first = sorted((ref / "train" / "n00000001").iterdir())
    originals = {p.name: imagenet.decode(str(p)) for p in first[:2]}
    quirks = add_train_quirks(ref)
    out = {"folders": ref, "truth": truth, "originals": originals, "quirks": quirks}
    for name in ("devkit", "kaggle"):
        tree = base / name
        shutil.copytree(ref, tree)
        flatten_val(tree)
        if name == "devkit":
            write_devkit(tree, truth, rng, tar=False)
        else:
            write_kaggle_csv(tree / imagenet_labels.KAGGLE_CSV, truth, rng)
        out[name] = tree
    return out


def _names(paths):
    return [p.rsplit("/", 1)[-1] for p in paths]


def test_flat_val_scans_in_the_class_folder_order(trees):
    paths, labels, classes = imagenet.scan(trees["folders"], "val")
    assert _names(paths) != sorted(_names(paths))  # the interleaving makes the test bite
    for layout in ("devkit", "kaggle"):
        fpaths, flabels, fclasses = imagenet.scan(trees[layout], "val")
        assert fclasses == classes
        assert _names(fpaths) == _names(paths) and flabels.tolist() == labels.tolist()
        assert all("/val/ILSVRC2012_val_" in p for p in fpaths)


def test_devkit_ids_map_through_meta_mat_not_sorted_order(trees, tmp_path):
    meta = (trees["devkit"] / imagenet_labels.DEVKIT / imagenet_labels.META).read_bytes()
    ids = imagenet_labels._leaf_wnids(meta, trees["devkit"])
    assert [ids[i] for i in sorted(ids)] != sorted(ids.values())  # IDs are not sorted-WNID order
    labels = imagenet_labels.read(trees["devkit"] / imagenet_labels.DEVKIT)
    assert labels == trees["truth"]
    # the downloaded forms: the folder holding the devkit, its tarball, the ground-truth file
    assert imagenet_labels.read(trees["devkit"]) == labels
    assert imagenet_labels.read(trees["devkit"] / imagenet_labels.DEVKIT / imagenet_labels.GROUND_TRUTH) \
        == labels
    tar = tmp_path / f"{imagenet_labels.DEVKIT}.tar.gz"
    with tarfile.open(tar, "w:gz") as t:
        t.add(trees["devkit"] / imagenet_labels.DEVKIT, arcname=imagenet_labels.DEVKIT)
    assert imagenet_labels.read(tar) == labels
    assert imagenet_labels.read(trees["kaggle"] / imagenet_labels.KAGGLE_CSV) == labels


@pytest.mark.timeout(300)
def test_flat_layouts_convert_to_the_same_beton_as_class_folders(trees, tmp_path):
    pytest.importorskip("ffcv")
    from repro.data import ffcv_import  # noqa: F401
    from ffcv.reader import Reader

    def samples(folder):
        """(label, stored JPEG bytes) of every sample of val.beton, in sample order."""
        r = Reader(str(folder / "val.beton"))
        data = (folder / "val.beton").read_bytes()
        size = {int(a["ptr"]): int(a["size"]) for a in r.alloc_table}
        return [(int(m["f1"]), data[int(m["f0"]["data_ptr"]):][:size[int(m["f0"]["data_ptr"])]])
                for m in r.metadata]

    got = {}
    for layout in ("folders", "devkit", "kaggle"):
        counts = imagenet.write(trees[layout], tmp_path / layout, max_res=64, workers=1)
        assert (counts["train"], counts["val"]) == (9, 9)
        assert sorted(note for _, note in counts["converted"]) == ["cmyk", "png"]
        got[layout] = samples(tmp_path / layout)
    assert len(got["folders"]) == 9 and len({lab for lab, _ in got["folders"]}) == 3
    assert got["devkit"] == got["folders"] and got["kaggle"] == got["folders"]


def test_cmyk_and_png_named_jpeg_decode_to_rgb(trees):
    cmyk, png = trees["quirks"]
    with Image.open(cmyk) as im:
        assert (im.format, im.mode) == ("JPEG", "CMYK")
    with Image.open(png) as im:
        assert im.format == "PNG" and png.suffix == ".JPEG"
    img, note = imagenet.decode_noting(str(cmyk))
    want = trees["originals"][cmyk.name].astype(int)
    assert note == "cmyk" and img.shape == want.shape and img.dtype == np.uint8
    assert np.abs(img.astype(int) - want).mean() < 6  # CMYK round trip + JPEG re-encoding
    img, note = imagenet.decode_noting(str(png))
    assert note == "png" and np.array_equal(img, trees["originals"][png.name])  # lossless
    plain = sorted((trees["folders"] / "train" / "n00000002").iterdir())[0]
    assert imagenet.decode_noting(str(plain))[1] is None
    line = imagenet.describe_converted([(str(cmyk), "cmyk"), (str(png), "png")])
    assert line == (f"converted to RGB: 1 CMYK JPEG, 1 PNG file with a JPEG name "
                    f"({cmyk.name}, {png.name})")


def _refused_before_writing(src, tmp_path, match, **kw):
    out = tmp_path / "out"
    with pytest.raises(DataError, match=match) as e:
        imagenet.write(src, out, max_res=64, workers=1, **kw)
    assert "\n" not in str(e.value)
    assert not out.exists()


def test_label_files_that_do_not_cover_the_images_are_refused_before_writing(trees, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(trees["kaggle"], src)
    csv = src / imagenet_labels.KAGGLE_CSV
    rows = csv.read_text().splitlines()
    dropped = rows[3].split(",")[0]
    csv.write_text("\n".join(rows[:3] + rows[4:]) + "\n")
    _refused_before_writing(src, tmp_path, rf"1 of the 9 images in .*val have no label in .*"
                                           rf"LOC_val_solution.csv \(first: {dropped}.JPEG\)")
    csv.write_text("\n".join(rows) + "\n")
    (src / "val" / f"{dropped}.JPEG").unlink()
    _refused_before_writing(src, tmp_path, f"lacks 1 of the 9 images .* labels \\(first: {dropped}\\)")
    # a WNID that is no train/ class
    csv.write_text("\n".join(rows).replace("n00000002", "n09999999") + "\n")
    shutil.copy(trees["kaggle"] / "val" / f"{dropped}.JPEG", src / "val")
    _refused_before_writing(src, tmp_path, r"WNIDs that are not class folders of train/ "
                                           r"\(1 of them, first: n09999999\)")
    # a flat val/ and no label file anywhere
    csv.unlink()
    _refused_before_writing(src, tmp_path, "is flat \\(9 images, no class folders\\) and no label file "
                                           "was found: pass --val-labels")


def test_malformed_label_files_name_the_line(trees, tmp_path):
    gt = tmp_path / "data" / "ILSVRC2012_validation_ground_truth.txt"
    gt.parent.mkdir()
    shutil.copy(trees["devkit"] / imagenet_labels.DEVKIT / imagenet_labels.META, gt.parent / "meta.mat")
    gt.write_text("1\n2\n1001\n")  # 1001 is a non-leaf synset
    with pytest.raises(DataError, match="line 3 of the validation ground truth is '1001'"):
        imagenet_labels.read(gt)
    (gt.parent / "meta.mat").write_bytes(b"not a mat file")
    with pytest.raises(DataError, match="meta.mat is not the devkit's synsets table"):
        imagenet_labels.read(gt)
    bad = tmp_path / "LOC_val_solution.csv"
    bad.write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,255 142 454 329\n")
    with pytest.raises(DataError, match="line 2: expected 'ImageId,WNID"):
        imagenet_labels.read(bad)
    bad.write_text("id,label\n")
    with pytest.raises(DataError, match="does not start with the header"):
        imagenet_labels.read(bad)
    with pytest.raises(DataError, match="holds no data/meta.mat"):
        with tarfile.open(tmp_path / "x.tar.gz", "w:gz"):
            pass
        imagenet_labels.read(tmp_path / "x.tar.gz")


def test_other_layout_mistakes(trees, tmp_path):
    src = tmp_path / "mixed"
    shutil.copytree(trees["folders"], src)
    shutil.copy(next((src / "val" / "n00000001").iterdir()), src / "val" / "ILSVRC2012_val_00099999.JPEG")
    with pytest.raises(DataError, match="mixes class folders and loose images"):
        imagenet.scan(src, "val")
    twins = tmp_path / "twins"
    shutil.copytree(trees["devkit"], twins)
    shutil.copy(twins / "val" / "ILSVRC2012_val_00000004.JPEG", twins / "val" / "ILSVRC2012_val_00000004.png")
    with pytest.raises(DataError, match=r"two files named ILSVRC2012_val_00000004\.\* "
                                        r"\(ILSVRC2012_val_00000004\.(JPEG|png), ILSVRC2012_val_00000004"):
        imagenet.scan(twins, "val")
    tars = tmp_path / "tars"
    (tars / "train").mkdir(parents=True)
    (tars / "train" / "n01440764.tar").write_bytes(b"")
    with pytest.raises(DataError, match="holds 1 per-class .tar files, not folders: unpack each"):
        imagenet.scan(tars, "train")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "repro.data.write", "imagenet", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_dry_run_checks_without_writing(trees, tmp_path):
    r = _cli("--src", trees["devkit"], "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "3 classes" in r.stdout and "train: 9 images, 3..3 per class" in r.stdout
    assert f"flat val/ labelled by {trees['devkit'] / imagenet_labels.DEVKIT}" in r.stdout
    assert "ok: nothing written" in r.stdout
    r = _cli("--src", trees["folders"], "--dry-run", "--out", tmp_path / "o")
    assert r.returncode == 0 and "val/ in class folders" in r.stdout
    assert not (tmp_path / "o").exists()
    # explicit --val-labels on a tree without one, and a refusal: one line, exit 2
    src = tmp_path / "src"
    shutil.copytree(trees["kaggle"], src)
    csv = (src / imagenet_labels.KAGGLE_CSV).rename(tmp_path / "labels.csv")
    r = _cli("--src", src, "--dry-run", "--val-labels", csv)
    assert r.returncode == 0, r.stderr
    r = _cli("--src", src, "--dry-run")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no label file was found" in r.stderr
    r = _cli("--src", src)
    assert r.returncode == 2 and "--out is required" in r.stderr


def test_synth_writes_the_downloaded_layouts(tmp_path):
    for layout, label_file in (("devkit-tar", f"{imagenet_labels.DEVKIT}.tar.gz"),
                               ("kaggle", imagenet_labels.KAGGLE_CSV)):
        src = synth.make_imagenet(tmp_path / layout, classes=2, train_per_class=1, val_per_class=2,
                                  size=24, workers=1, as_downloaded=layout)
        assert (src / label_file).is_file() and not any(p.is_dir() for p in (src / "val").iterdir())
        info = imagenet.check(src)
        assert info["classes"] == 2 and info["val"]["images"] == 4 and info["train"]["images"] == 2
        assert info["val_labels"] == str(src / label_file)


def test_plain_loader_reads_a_flat_val_with_the_label_file_beside_it(trees):
    from repro.config import DataConfig
    from repro.data import build_loaders
    want = imagenet.scan(trees["folders"], "val")[1]
    for layout in ("devkit", "kaggle"):
        cfg = DataConfig(name="imagenet", path=str(trees[layout]), loader="plain", batch_size=9,
                         workers=0, train_res=32, val_res=32, val_resize=36)
        loaders = build_loaders(cfg, rank=0, world_size=1, device="cpu", seed=0)
        assert loaders.num_val == 9 and loaders.num_classes == 3
        (x, y), = list(loaders.val.iterate())
        assert y.tolist() == want.tolist()
