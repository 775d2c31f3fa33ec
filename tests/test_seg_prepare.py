"""gamma_kit.seg.prepare: the original preparation and split, without touching user data."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from gamma_kit.seg.__main__ import main
from gamma_kit.seg.prepare import (labels_to_mask, mask_to_labels, prepare_dataset, read_list_file,
                                   split_dataset)
from seg_fixtures import make_tiny_seg_data


def _tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def seg_root(tmp_path) -> Path:
    make_tiny_seg_data(tmp_path / "gamma", n_train=6, n_test=2, size=(160, 128), seed=1)
    return tmp_path / "gamma"


def test_mask_label_round_trip():
    mask = np.array([[0, 128, 255], [255, 128, 0]], np.uint8)
    labels = mask_to_labels(mask)
    assert labels.tolist() == [[0, 1, 2], [2, 1, 0]]
    assert np.array_equal(labels_to_mask(labels), mask)
    assert np.array_equal(labels_to_mask(labels.astype(np.int64)), mask)
    assert np.array_equal(labels_to_mask(labels[:, ::-1]), mask[:, ::-1])        # a view, not contiguous
    assert labels_to_mask(np.zeros((0, 4), np.uint8)).shape == (0, 4)
    with pytest.raises(ValueError, match="0, 128 or 255"):
        mask_to_labels(np.array([[0, 127]], np.uint8))
    with pytest.raises(ValueError, match="labels must be"):
        labels_to_mask(np.array([[0, 3]]))


def test_prepare_writes_layout_and_leaves_input_alone(seg_root, tmp_path):
    before = _tree_digest(seg_root)
    out = tmp_path / "prepared"
    report = prepare_dataset(seg_root, out, progress=False)
    assert _tree_digest(seg_root) == before
    assert report.written == [f"{k:04d}" for k in range(1, 7)] and not report.bad_pairs
    task = seg_root / "task3_disc_cup_segmentation" / "training"
    for i in report.written:
        # same-size images are copied byte for byte
        assert (out / "JPEGImages" / f"{i}.jpg").read_bytes() == (task / "fundus color images" / f"{i}.jpg").read_bytes()
        lab = cv2.imread(str(out / "Annotations" / f"{i}.png"), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(task / "Disc_Cup_Mask" / f"{i}.bmp"), cv2.IMREAD_GRAYSCALE)
        assert lab.dtype == np.uint8 and lab.ndim == 2
        assert np.array_equal(lab, mask_to_labels(mask))
        assert set(np.unique(lab)) == {0, 1, 2}
    saved = json.loads((out / "prepare_report.json").read_text())
    assert saved["written"] == report.written


def test_prepare_reports_bad_pairs_and_resizes(seg_root, tmp_path):
    task = seg_root / "task3_disc_cup_segmentation" / "training"
    imgs, masks = task / "fundus color images", task / "Disc_Cup_Mask"
    (imgs / "0002.jpg").write_bytes(b"not a jpeg")                         # unreadable image
    bad = cv2.imread(str(masks / "0003.bmp"), cv2.IMREAD_GRAYSCALE)
    bad[0, 0] = 77
    cv2.imwrite(str(masks / "0003.bmp"), bad)                              # mask with a foreign value
    (masks / "0004.bmp").unlink()                                          # image without a mask
    img5 = cv2.imread(str(imgs / "0005.jpg"))
    cv2.imwrite(str(imgs / "0005.jpg"), cv2.resize(img5, (320, 256)))      # image twice the mask's size
    before = _tree_digest(seg_root)
    report = prepare_dataset(seg_root, tmp_path / "p", progress=False)
    assert _tree_digest(seg_root) == before
    assert sorted(report.bad_pairs) == ["0002", "0003", "0004"]
    assert "decoded" in report.bad_pairs["0002"]
    assert "77" in report.bad_pairs["0003"]
    assert "no mask" in report.bad_pairs["0004"]
    assert report.resized == ["0005"]
    assert cv2.imread(str(tmp_path / "p" / "JPEGImages" / "0005.jpg")).shape[:2] == (128, 160)
    assert "skipped 0003" in report.summary()


def test_prepare_skips_photos_too_small_or_not_fundus(seg_root, tmp_path, capsys):
    from gamma_kit.data import MIN_FUNDUS_SIDE

    task = seg_root / "task3_disc_cup_segmentation" / "training"
    imgs, masks = task / "fundus color images", task / "Disc_Cup_Mask"
    small = cv2.resize(cv2.imread(str(imgs / "0002.jpg")), (150, MIN_FUNDUS_SIDE - 1))
    cv2.imwrite(str(imgs / "0002.jpg"), small)                            # a thumbnail, with a mask its size
    cv2.imwrite(str(masks / "0002.bmp"), cv2.resize(cv2.imread(str(masks / "0002.bmp"), cv2.IMREAD_GRAYSCALE),
                                                    (150, MIN_FUNDUS_SIDE - 1), interpolation=cv2.INTER_NEAREST))
    noise = np.random.default_rng(0).integers(0, 256, (128, 160, 3), dtype=np.uint8)
    cv2.imwrite(str(imgs / "0004.png"), noise)                            # not a fundus photograph
    (imgs / "0004.jpg").unlink()
    before = _tree_digest(seg_root)
    out = tmp_path / "p"
    assert main(["prepare", "--data-root", str(seg_root), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert _tree_digest(seg_root) == before
    assert f"skipped 0002: {imgs / '0002.jpg'}: image is 150x{MIN_FUNDUS_SIDE - 1} px; fundus photos need at " \
           f"least {MIN_FUNDUS_SIDE} px on the short side" in stdout
    assert f"skipped 0004: {imgs / '0004.png'}: no circular field of view on a dark surround " \
           "(not a fundus photograph?)" in stdout
    assert sorted(p.name for p in (out / "JPEGImages").iterdir()) == ["0001.jpg", "0003.jpg", "0005.jpg", "0006.jpg"]
    assert sorted(p.stem for p in (out / "Annotations").iterdir()) == ["0001", "0003", "0005", "0006"]
    assert sorted(json.loads((out / "prepare_report.json").read_text())["bad_pairs"]) == ["0002", "0004"]


def test_prepare_refuses_unsafe_outputs(seg_root, tmp_path):
    task = seg_root / "task3_disc_cup_segmentation" / "training"
    with pytest.raises(ValueError, match="overlaps"):
        prepare_dataset(seg_root, task / "fundus color images" / "out", progress=False)
    other = tmp_path / "someone_elses"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not written by prepare"):
        prepare_dataset(seg_root, other, progress=False)
    prepare_dataset(seg_root, tmp_path / "p", progress=False)
    with pytest.raises(ValueError, match="overwrite"):
        prepare_dataset(seg_root, tmp_path / "p", progress=False)
    assert prepare_dataset(seg_root, tmp_path / "p", overwrite=True, progress=False).written


def test_split_lists(seg_root, tmp_path):
    out = tmp_path / "p"
    prepare_dataset(seg_root, out, progress=False)
    files = split_dataset(out, val_value=0.0001, seed=3)         # the original's near-zero share
    train = (out / "train_list.txt").read_text().splitlines()
    val = (out / "val_list.txt").read_text().splitlines()
    assert len(val) == 1 and len(train) == 5 and not (out / "test_list.txt").exists()
    assert set(train).isdisjoint(val)
    for line in train + val:
        img, lab = line.split(" ")
        i = Path(img).stem
        assert img == f"JPEGImages/{i}.jpg" and lab == f"Annotations/{i}.png"
    assert (out / "labels.txt").read_text().split() == ["0", "1", "2"]
    assert set(files) == {"train_list.txt", "val_list.txt", "labels.txt"}
    # seeded: same seed same split, other seed another order
    split_dataset(out, val_value=0.0001, seed=3)
    assert (out / "val_list.txt").read_text().splitlines() == val
    split_dataset(out, val_value=0.34, test_value=0.17, seed=4)
    assert [len((out / f).read_text().splitlines()) for f in ("train_list.txt", "val_list.txt", "test_list.txt")] \
        == [3, 2, 1]
    assert len(read_list_file(out / "train_list.txt", out)) == 3
    with pytest.raises(ValueError, match="share"):
        split_dataset(out, val_value=1.5)
    with pytest.raises(ValueError, match="keep one for training"):
        split_dataset(out, val_value=0.95)
    with pytest.raises(FileNotFoundError, match="JPEGImages"):
        split_dataset(tmp_path / "nothing_here")


def test_read_list_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="split"):
        read_list_file(tmp_path / "missing.txt", tmp_path)
    (tmp_path / "l.txt").write_text("JPEGImages/a.jpg Annotations/a.png\n")
    with pytest.raises(FileNotFoundError, match=r"l.txt:1: .*a.jpg does not exist"):
        read_list_file(tmp_path / "l.txt", tmp_path)


def test_cli_prepare_and_split(seg_root, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["prepare", "--data-root", str(seg_root), "--out", str(out)]) == 0
    assert "prepared 6" in capsys.readouterr().out
    assert main(["split", "--dataset-dir", str(out), "--val-value", "0.2", "--seed", "1"]) == 0
    assert len((out / "val_list.txt").read_text().splitlines()) == 1
    assert main(["prepare", "--data-root", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_split_removes_stale_test_list(seg_root, tmp_path):
    out = tmp_path / "p"
    prepare_dataset(seg_root, out, progress=False)
    split_dataset(out, val_value=0.2, test_value=0.2)
    assert (out / "test_list.txt").is_file()
    split_dataset(out, val_value=0.2)
    assert not (out / "test_list.txt").exists()


def test_extract_zip_is_safe_and_idempotent(tmp_path):
    import zipfile

    from gamma_kit.seg.prepare import extract_zip

    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("task3/training/a.txt", "new")
    dest = tmp_path / "d"
    (dest / "task3" / "training").mkdir(parents=True)
    (dest / "task3" / "training" / "a.txt").write_text("user's")
    extract_zip(good, dest)
    assert (dest / "task3" / "training" / "a.txt").read_text() == "user's"   # never overwritten
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../outside.txt", "x")
    with pytest.raises(ValueError, match="outside"):
        extract_zip(evil, dest)
    assert not (tmp_path / "outside.txt").exists()
    (tmp_path / "not.zip").write_text("plain text")
    with pytest.raises(ValueError, match="not a zip"):
        extract_zip(tmp_path / "not.zip", dest)


# --------------------------------------------------------------------------- prepare --roi (issue 9), issue 10
def test_prepare_roi_layout_crops_json_and_split(seg_root, tmp_path):
    from gamma_kit.crop import DiscCrop
    from gamma_kit.seg.model_dir import RoiSettings
    from gamma_kit.seg.prepare import read_crops

    out = tmp_path / "roi"
    roi = RoiSettings(factor=2.0, size=48, jitter=0.125, scale_jitter=0.1, copies=2, seed=0)
    report = prepare_dataset(seg_root, out, roi=roi, progress=False)
    assert report.crops == 12 and len(report.written) == 6
    d = read_crops(out)
    assert d["roi"]["factor"] == 2.0 and d["roi"]["size"] == 48 and d["roi"]["copies"] == 2
    assert sorted(d["crops"]) == sorted([f"{k:04d}" for k in range(1, 7)] + [f"{k:04d}_c1" for k in range(1, 7)])
    task = seg_root / "task3_disc_cup_segmentation" / "training"
    for cid, info in d["crops"].items():
        img = cv2.imread(str(out / "JPEGImages" / f"{cid}.jpg"))
        lab = cv2.imread(str(out / "Annotations" / f"{cid}.png"), cv2.IMREAD_UNCHANGED)
        assert img.shape == (48, 48, 3) and lab.shape == (48, 48) and set(np.unique(lab)) <= {0, 1, 2}
        x0, y0, x1, y1 = info["box"]
        # the crop is the mask's window, resampled by nearest: re-cutting the source mask gives it again
        mask = cv2.imread(str(task / "Disc_Cup_Mask" / f"{info['source']}.bmp"), cv2.IMREAD_GRAYSCALE)
        c = DiscCrop(tuple(info["image_size"]), x0, y0, x1 - x0, 48)
        assert np.array_equal(lab, c.crop_mask(mask_to_labels(mask), fill=2))
        # centred on the disc within the jitter (1/8 of the side) plus the rounding of the box
        disc = np.argwhere(mask < 255)
        cy, cx = (disc.min(0) + disc.max(0) + 1) / 2
        assert abs(c.centre[0] - cx) <= 0.125 * c.side + 1 and abs(c.centre[1] - cy) <= 0.125 * c.side + 1
        assert (lab < 2).any()        # the disc is in every crop
    # the two copies of a photo differ (jittered), and a copy's group stays in one list
    assert d["crops"]["0001"]["box"] != d["crops"]["0001_c1"]["box"]
    split_dataset(out, val_value=0.34, seed=0)
    val = (out / "val_list.txt").read_text().split()
    train = (out / "train_list.txt").read_text().split()
    src = lambda lines: {Path(x).stem.split("_")[0] for x in lines}   # noqa: E731
    assert len(src(val)) == 2 and src(val).isdisjoint(src(train)) and len(val) == 2 * 2 * 2


def test_cli_prepare_roi_flags(seg_root, tmp_path, capsys):
    out = tmp_path / "cli_roi"
    assert main(["prepare", "--data-root", str(seg_root), "--out", str(out), "--roi", "--roi-size", "40",
                 "--roi-side", "40", "--roi-copies", "1"]) == 0     # size 40: the discs (25+ px) stay >= 24 px
    assert "6 disc-centred crop pairs of 6 photos" in capsys.readouterr().out
    d = json.loads((out / "crops.json").read_text())
    assert d["roi"]["side"] == 40 and all(b["box"][2] - b["box"][0] == 40 for b in d["crops"].values())
    assert main(["prepare", "--data-root", str(seg_root), "--out", str(tmp_path / "y"), "--roi-size", "32"]) == 2
    assert "needs --roi" in capsys.readouterr().err
    for argv in (["prepare", "--data-root", str(seg_root), "--out", str(tmp_path / "y"), "--roi", "--roi-copies", "0"],
                 ["train", "--config", "x.yml", "--iters", "0"], ["train", "--config", "x.yml", "--iters", "-3"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2 and "at least 1" in capsys.readouterr().err


def test_overwrite_gives_exactly_the_new_set_and_recovers_an_interrupted_run(seg_root, tmp_path):
    out = tmp_path / "p"
    prepare_dataset(seg_root, out, progress=False)
    split_dataset(out, val_value=0.2)
    masks = seg_root / "task3_disc_cup_segmentation" / "training" / "Disc_Cup_Mask"
    (masks / "0006.bmp").unlink()                              # the new run has one pair fewer
    (out / "JPEGImages" / ".0003.jpg.tmp").write_bytes(b"half")  # left by an interrupted copy
    (out / "notes.txt").write_text("mine")                       # a user's file stays
    report = prepare_dataset(seg_root, out, overwrite=True, progress=False)
    assert "0006" not in report.written
    assert sorted(p.name for p in (out / "JPEGImages").iterdir()) == [f"{k:04d}.jpg" for k in range(1, 6)]
    assert sorted(p.name for p in (out / "Annotations").iterdir()) == [f"{k:04d}.png" for k in range(1, 6)]
    assert not (out / "train_list.txt").exists() and (out / "notes.txt").read_text() == "mine"
    # an interrupted prepare (report still "in progress") can be rerun with --overwrite
    rep = json.loads((out / "prepare_report.json").read_text())
    rep["status"] = "in progress"
    (out / "prepare_report.json").write_text(json.dumps(rep))
    assert prepare_dataset(seg_root, out, overwrite=True, progress=False).status == "complete"
    assert not list(out.rglob("*.tmp"))


def test_prepare_refuses_names_with_spaces(seg_root, tmp_path):
    imgs = seg_root / "task3_disc_cup_segmentation" / "training" / "fundus color images"
    (imgs / "0001.jpg").rename(imgs / "my eye.jpg")
    with pytest.raises(ValueError, match="my eye.jpg"):
        prepare_dataset(seg_root, tmp_path / "p", progress=False)
    assert not (tmp_path / "p").exists()
