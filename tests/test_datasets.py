"""ImageNet validation layouts (pd_core.datasets) on small synthetic folders."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pd_core.datasets import DatasetError, detect_layout, devkit_wnids, open_dataset
from pd_core.images import imagenet_wnids

WNIDS = sorted(imagenet_wnids(), key=imagenet_wnids().get)  # class index order
# A devkit-like order that differs from the sorted one (the real one does too): reversed.
DEVKIT_ORDER = WNIDS[::-1]


def _jpeg(path, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(path, "JPEG")


def _flat_folder(tmp_path, classes=(5, 17, 999)):
    val = tmp_path / "val"
    for n, _ in enumerate(classes, start=1):
        _jpeg(val / f"ILSVRC2012_val_{n:08d}.JPEG", n)
    return val


def _labels(dataset):
    return {r.name: r.label for r in dataset}


def test_imagefolder_layout(tmp_path):
    _jpeg(tmp_path / "val" / WNIDS[3] / "ILSVRC2012_val_00000293.JPEG")
    _jpeg(tmp_path / "val" / WNIDS[700] / "ILSVRC2012_val_00000001.JPEG")
    (tmp_path / "val" / WNIDS[700] / "notes.txt").write_text("not an image")
    ds = open_dataset(tmp_path / "val")
    assert ds.layout == "imagefolder"
    assert _labels(ds) == {f"{WNIDS[3]}/ILSVRC2012_val_00000293.JPEG": 3,
                           f"{WNIDS[700]}/ILSVRC2012_val_00000001.JPEG": 700}


def test_wnid_prefixed_names_and_labels_csv(tmp_path, monkeypatch):
    _jpeg(tmp_path / "a" / f"{WNIDS[42]}_dog.JPEG")
    assert _labels(open_dataset(tmp_path / "a")) == {f"{WNIDS[42]}_dog.JPEG": 42}
    _jpeg(tmp_path / "b" / "photo.jpg")
    (tmp_path / "b" / "labels.csv").write_text("file,class_index\nphoto.jpg,123\n")
    ds = open_dataset(tmp_path / "b")
    assert ds.layout == "labels-csv" and _labels(ds) == {"photo.jpg": 123}
    # A relative folder name gives the same names as load_items (which the chunks and seeds use).
    from pd_core.evaluation import load_items

    monkeypatch.chdir(tmp_path / "a")
    assert _labels(open_dataset("../b")) == {it.name: it.label for it in load_items("../b")}


def test_kaggle_layout_found_above_the_image_folder(tmp_path):
    val = tmp_path / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    for n in (1, 2):
        _jpeg(val / f"ILSVRC2012_val_{n:08d}.JPEG", n)
    (tmp_path / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n"
        f"ILSVRC2012_val_00000002,{WNIDS[9]} 1 2 3 4 {WNIDS[9]} 5 6 7 8\n"
        f"ILSVRC2012_val_00000001,{WNIDS[500]} 1 2 3 4\n"
        f"ILSVRC2012_val_00000003,{WNIDS[1]} 1 2 3 4\n")  # labels for more images than the folder has: fine
    ds = open_dataset(val)
    assert ds.layout == "kaggle"
    assert _labels(ds) == {"ILSVRC2012_val_00000001.JPEG": 500, "ILSVRC2012_val_00000002.JPEG": 9}


def test_devkit_layout_uses_the_devkit_order_not_the_sorted_one(tmp_path):
    from scipy.io import savemat

    val = _flat_folder(tmp_path)
    data = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("1\n2\n1000\n")
    synsets = np.zeros(1000, dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("num_children", "O")])
    for i, w in enumerate(DEVKIT_ORDER):
        synsets[i] = (i + 1, w, 0)
    savemat(data / "meta.mat", {"synsets": synsets})
    ds = open_dataset(val)
    assert ds.layout == "devkit"
    # devkit id 1 is DEVKIT_ORDER[0] = WNIDS[999] -> class 999; id 1000 -> class 0.
    assert _labels(ds) == {"ILSVRC2012_val_00000001.JPEG": 999, "ILSVRC2012_val_00000002.JPEG": 998,
                           "ILSVRC2012_val_00000003.JPEG": 0}
    wnid_list = tmp_path / "devkit_wnids.txt"
    wnid_list.write_text("\n".join(DEVKIT_ORDER))
    assert devkit_wnids(wnid_list) == devkit_wnids(data / "meta.mat") == DEVKIT_ORDER


def test_devkit_without_mapping_is_one_sentence(tmp_path):
    val = _flat_folder(tmp_path)
    truth = tmp_path / "ILSVRC2012_validation_ground_truth.txt"
    truth.write_text("1\n2\n3\n")
    with pytest.raises(DatasetError, match="meta.mat") as info:
        list(open_dataset(val, labels=truth))
    assert str(info.value).count(". ") == 0 and "\n" not in str(info.value)
    bad = tmp_path / "short.txt"
    bad.write_text("\n".join(WNIDS[:10]))
    with pytest.raises(DatasetError, match="1000 ImageNet-1k WordNet ids"):
        list(open_dataset(val, labels=truth, devkit_meta=bad))


@pytest.mark.parametrize("content, match", [
    ("ImageId,PredictionString\nILSVRC2012_val_00000001,n01440764 1 2 3 4\n", "no label for 2 image"),
    ("ImageId,PredictionString\nILSVRC2012_val_00000001,cat 1 2 3 4\n", "without an ImageNet WordNet id"),
    ("hello,world\n1,2\n", "is none of labels.csv"),
])
def test_wrong_label_files(tmp_path, content, match):
    val = _flat_folder(tmp_path)
    labels = tmp_path / "labels_given.csv"
    labels.write_text(content)
    with pytest.raises(DatasetError, match=match):
        list(open_dataset(val, labels=labels))


def test_missing_label_file_and_unlabelled_folder(tmp_path):
    val = _flat_folder(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(val, labels=tmp_path / "LOC_val_solution.csv")
    with pytest.raises(DatasetError, match="No labelled images"):  # flat val files, no label file anywhere
        list(open_dataset(val))
    with pytest.raises(DatasetError, match="not a folder"):
        open_dataset(tmp_path / "nowhere")


def test_subset_keeps_listed_files_and_rejects_unknown_names(tmp_path):
    for n, c in ((293, 3), (1, 700), (5, 700)):
        _jpeg(tmp_path / "val" / WNIDS[c] / f"ILSVRC2012_val_{n:08d}.JPEG", n)
    subset = tmp_path / "ids.txt"
    # RobustBench style (wnid/file) and a bare stem both match.
    subset.write_text(f"# five thousand ids\n{WNIDS[3]}/ILSVRC2012_val_00000293.JPEG\nILSVRC2012_val_00000005\n")
    names = [r.name for r in open_dataset(tmp_path / "val", subset=subset)]
    assert names == [f"{WNIDS[3]}/ILSVRC2012_val_00000293.JPEG", f"{WNIDS[700]}/ILSVRC2012_val_00000005.JPEG"]
    subset.write_text("ILSVRC2012_val_00000293.JPEG\nILSVRC2012_val_09999999.JPEG\n")
    with pytest.raises(DatasetError, match="1 of the 2 subset names"):
        list(open_dataset(tmp_path / "val", subset=subset))
    subset.write_text("\n\n")
    with pytest.raises(DatasetError, match="lists no file names"):
        open_dataset(tmp_path / "val", subset=subset)


def test_listing_is_lazy(tmp_path):
    """The first record comes before the last folder is listed (nothing is decoded either)."""
    _jpeg(tmp_path / "val" / WNIDS[0] / "a.JPEG")
    (tmp_path / "val" / WNIDS[1]).mkdir()
    (tmp_path / "val" / WNIDS[1] / "b.JPEG").write_bytes(b"not decoded here")
    it = iter(open_dataset(tmp_path / "val"))
    assert next(it).label == 0
    assert next(it).name == f"{WNIDS[1]}/b.JPEG"
    assert detect_layout(tmp_path / "val") == ("imagefolder", None)


@pytest.mark.parametrize("extra, match", [
    (["--ray", "local:0"], "local:N"),
    (["--subset", "missing.txt"], "subset file 'missing.txt' does not exist"),
    (["--labels", "LOC_val_solution.csv"], "does not exist"),
])
def test_cli_options_of_issue_12_fail_in_one_line(tmp_path, capsys, monkeypatch, extra, match):
    from pd_core.cli import main

    monkeypatch.chdir(tmp_path)
    _jpeg(tmp_path / "val" / WNIDS[1] / "a.JPEG")
    code = main(["evaluate", "--images", "val", "--attacks", "fgsm", "--out", "r.csv", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and match in err[0], err


def test_adaptive_command_reads_the_kaggle_layout_and_a_subset(tmp_path, monkeypatch):
    """``adaptive`` takes the layouts and ``--subset`` that ``evaluate`` takes (same listing): a
    Kaggle folder of three photos, and a subset naming two of them, give rows over two images."""
    import csv
    import shutil

    from pd_core.cli import main
    from pd_core.images import gallery

    photos = [g for g in gallery() if g.source == "Foolbox"][:3]
    val = tmp_path / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    val.mkdir(parents=True)
    lines = ["ImageId,PredictionString"]
    for n, g in enumerate(photos, start=1):
        shutil.copy(g.path, val / f"ILSVRC2012_val_{n:08d}.JPEG")
        lines.append(f"ILSVRC2012_val_{n:08d},{WNIDS[g.label_index]} 1 2 3 4")
    (tmp_path / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "two.txt").write_text("ILSVRC2012_val_00000001\nILSVRC2012_val_00000003.JPEG\n")
    monkeypatch.chdir(tmp_path)
    common = ["adaptive", "--images", str(val), "--eps", "1", "--eot", "1", "--steps", "1", "--ensemble", "1",
              "--tuning-fraction", "0", "--no-progress"]

    def images_of(out, *extra):
        assert main([*common, "--out", out, *extra]) == 0
        with open(out) as fh:
            rows = list(csv.DictReader(fh))
        return {int(r["images"]) for r in rows}

    assert images_of("all.csv") == {3}
    assert images_of("two.csv", "--subset", "two.txt") == {2}


def test_sweep_and_dose_commands_take_a_subset(tmp_path, monkeypatch):
    """``sweep`` and ``dose`` read ``--subset`` too: only the listed photo is attacked."""
    import pandas as pd
    from gallery_cases import labelled_folder

    from pd_core.cli import main
    from pd_core.images import gallery

    labelled_folder(tmp_path, count=2)
    second = [g for g in gallery() if g.path.name.startswith("imagenet_")][1].path.name
    (tmp_path / "one.txt").write_text(second + "\n")
    monkeypatch.chdir(tmp_path)
    common = ["--images", "imgs", "--subset", "one.txt", "--attacks", "fgsm", "--ensemble", "1",
              "--tuning-fraction", "0", "--no-progress"]
    assert main(["sweep", *common, "--values", "2", "--out", "s.csv"]) == 0
    assert main(["dose", *common, "--deflections", "0,10", "--out", "d.csv"]) == 0
    for out in ("s.csv", "d.csv"):
        assert set(pd.read_csv(out)["image"]) == {second}, out
