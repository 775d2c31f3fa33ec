"""Tests for gamma_kit.synth: layout, ground truth, masks, determinism, refusals.

Data sets are tiny (small --sizes, a handful of images) so the file runs in seconds.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest

from gamma_kit import data
from gamma_kit.synth import generate, parse_sizes, render_fundus, sample_layout, split_ids, vertical_cdr
from gamma_kit.synth.__main__ import main
from gamma_kit.synth.render import DISC_DIAMETER, FOVEA_MEAN, FOVEA_SPAN
from gamma_kit.synth.writer import balanced_assignment

SMALL = ((748, 500), (489, 484))           # the two GAMMA cameras at 1/4
TINY = ((200, 134), (160, 158))
T2, T3 = "task2_Fovea_localization", "task3_disc_cup_segmentation"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("synth") / "gamma", 4, 4, seed=7, sizes=SMALL, progress=False)


@pytest.fixture(scope="module")
def meta(dataset) -> pd.DataFrame:
    return pd.read_csv(dataset / "synth_meta.csv", dtype={"id": str})


def tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root``."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_file_names(dataset):
    train, test = ["0001", "0002", "0003", "0004"], ["0005", "0006", "0007", "0008"]
    expected = {"synth_meta.csv",
                f"{T2}/training/fovea_localization_training_GT.xlsx",
                f"{T2}/testing_GT/fovea_localization_testing_GT.xlsx"}
    for split, ids in (("training", train), ("testing", test)):
        gt = "training" if split == "training" else "testing_GT"
        for i in ids:
            expected |= {f"{T2}/{split}/fundus color images/{i}.jpg",
                         f"{T3}/{split}/fundus color images/{i}.jpg",
                         f"{T3}/{gt}/Disc_Cup_Mask/{i}.bmp"}
    files = tree(dataset)
    assert set(files) == expected
    for i in train + test:   # task 2 and task 3 share the photos
        split = "training" if i in train else "testing"
        assert files[f"{T2}/{split}/fundus color images/{i}.jpg"] == files[f"{T3}/{split}/fundus color images/{i}.jpg"]
    assert not list(dataset.parent.glob(".*partial*"))   # staging folder renamed away


def test_gt_tables_read_back_through_the_kit(dataset, meta):
    sheet = openpyxl.load_workbook(dataset / T2 / "training" / "fovea_localization_training_GT.xlsx").active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0] == ("data", "Fovea_X", "Fovea_Y")
    assert [r[0] for r in rows[1:]] == ["0001", "0002", "0003", "0004"]   # ids stored as text, not numbers

    train = data.load_fovea_split(dataset, "training")
    test = data.load_fovea_split(dataset, "testing",
                                 gt_path=dataset / T2 / "testing_GT" / "fovea_localization_testing_GT.xlsx")
    gt = pd.concat([train.gt, test.gt])
    assert list(gt.index) == list(meta["id"])
    np.testing.assert_allclose(gt[["Fovea_X", "Fovea_Y"]].to_numpy(), meta[["fovea_x", "fovea_y"]].to_numpy())
    assert ((meta["fovea_x"] > 0) & (meta["fovea_x"] < meta["width"])).all()
    assert ((meta["fovea_y"] > 0) & (meta["fovea_y"] < meta["height"])).all()


def test_masks_pair_with_images(dataset, meta):
    seg = data.load_seg_split(dataset, "training")
    seg_test = data.load_seg_split(dataset, "testing", mask_dir=dataset / T3 / "testing_GT" / "Disc_Cup_Mask")
    for split in (seg, seg_test):
        for i, path in split.images.items():
            image = data.read_image(path)
            row = meta.set_index("id").loc[i]
            assert image.shape == (row.height, row.width, 3)
            mask = data.read_mask(split.masks[i], (row.width, row.height))   # validates 0/128/255
            assert set(np.unique(mask)) == {0, 128, 255}
            rows, cols = np.nonzero(mask < 255)
            assert np.hypot(cols.mean() + 0.5 - row.disc_x, rows.mean() + 0.5 - row.disc_y) < 0.5
            assert vertical_cdr(mask) == pytest.approx(row.vcdr, abs=1e-4)
            assert 0.25 < row.vcdr < 0.85


def _ring_mean(image: np.ndarray, centre, r0: float, r1: float) -> float:
    yy, xx = np.mgrid[:image.shape[0], :image.shape[1]] + 0.5
    d = np.hypot(xx - centre[0], yy - centre[1])
    return float(image.sum(axis=2)[(d >= r0) & (d < r1)].mean())


def test_disc_is_bright_where_the_mask_says_and_fovea_is_dark(dataset, meta):
    for row in meta.itertuples():
        split = row.split
        image = data.read_image(dataset / T3 / split / "fundus color images" / f"{row.id}.jpg").astype(float)
        mask_dir = "training" if split == "training" else "testing_GT"
        mask = data.read_mask(dataset / T3 / mask_dir / "Disc_Cup_Mask" / f"{row.id}.bmp")
        grey = image.sum(axis=2)
        r = row.disc_diameter / 2
        inside = grey[mask < 255].mean()
        around = _ring_mean(image, (row.disc_x, row.disc_y), 1.3 * r, 2.0 * r)
        assert inside > around + 20, row.id
        # the cup is paler than the rim (upper quartiles: vessel trunks cross both)
        assert np.percentile(grey[mask == 0], 75) > np.percentile(grey[mask == 128], 75), row.id
        fovea = _ring_mean(image, (row.fovea_x, row.fovea_y), 0, 0.25 * row.disc_diameter)
        macula_edge = _ring_mean(image, (row.fovea_x, row.fovea_y), row.disc_diameter, 1.6 * row.disc_diameter)
        assert fovea < macula_edge, row.id


def test_both_sides_and_sizes_in_each_split(meta):
    for _, rows in meta.groupby("split"):
        assert set(rows["disc_side"]) == {"left", "right"}
        assert set(zip(rows["width"], rows["height"])) == set(SMALL)
    left = meta["disc_side"] == "left"
    assert (meta["disc_x"][left] < meta["width"][left] / 2).all()
    assert (meta["disc_x"][~left] > meta["width"][~left] / 2).all()
    # the fovea lies about 2.5 disc diameters temporal of the disc
    dd = np.hypot(meta["fovea_x"] - meta["disc_x"], meta["fovea_y"] - meta["disc_y"]) / meta["disc_diameter"]
    assert dd.between(1.9, 3.1).all()


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    a = tree(generate(tmp_path / "a", 2, 1, seed=3, sizes=TINY, progress=False))
    b = tree(generate(tmp_path / "b", 2, 1, seed=3, sizes=TINY, progress=False))
    c = tree(generate(tmp_path / "c", 2, 1, seed=4, sizes=TINY, progress=False))
    assert a == b
    jpgs = [k for k in a if k.endswith(".jpg")]
    assert all(a[k] != c[k] for k in jpgs)


def test_mirrored_eye_mirrors_the_points():
    left = render_fundus(np.random.default_rng(5), 489, 484, "left", fov_radius_factor=1.0)
    right = render_fundus(np.random.default_rng(5), 489, 484, "right", fov_radius_factor=1.0)
    assert right.fovea_xy == pytest.approx((489 - left.fovea_xy[0], left.fovea_xy[1]))
    assert right.disc_xy == pytest.approx((489 - left.disc_xy[0], left.disc_xy[1]), abs=0.05)
    differ = right.mask != left.mask[:, ::-1]          # OpenCV's polygon fill is not exactly mirror-symmetric
    assert differ.sum() < 0.01 * (left.mask < 255).sum()


def test_full_size_uses_the_original_canonical_frame():
    s = render_fundus(np.random.default_rng(0), 2992, 2000, "right")
    assert s.image.shape == (2000, 2992, 3) and s.image.dtype == np.uint8 and s.mask.shape == (2000, 2992)
    canonical_x = 1956 - (s.fovea_xy[0] - 518)         # un-crop, then un-flip (SPEC 2)
    assert abs(canonical_x - FOVEA_MEAN[0]) <= FOVEA_SPAN[0] / 2 + 1
    assert abs(s.fovea_xy[1] - 33 - FOVEA_MEAN[1]) <= FOVEA_SPAN[1] / 2 + 1
    assert s.image[:, :300].max() < 40 and s.image[1000, 1496].sum() > 100   # black surround, lit centre


def test_layout_statistics_match_the_original_frame():
    rng = np.random.default_rng(0)
    layouts = [sample_layout(rng, 967.0) for _ in range(400)]
    fovea = np.array([lay.fovea for lay in layouts])
    disc = np.array([lay.disc for lay in layouts])
    diam = np.array([lay.disc_diameter for lay in layouts])
    assert np.abs(fovea.mean(axis=0) - FOVEA_MEAN).max() < 40
    span = fovea.max(axis=0) - fovea.min(axis=0)
    assert (span > 0.75 * np.array(FOVEA_SPAN)).all() and (span <= np.array(FOVEA_SPAN) + 1).all()
    assert diam.min() >= DISC_DIAMETER[0] - 1 and diam.max() <= DISC_DIAMETER[1] + 1
    assert (disc[:, 0] < fovea[:, 0] - 2 * diam).all()              # disc on the left, far from the fovea
    assert ((fovea[:, 1] - disc[:, 1]) > -0.3 * diam).mean() > 0.95  # fovea level with or below the disc


def test_vertical_cdr_known_answer():
    mask = np.full((20, 10), 255, np.uint8)
    mask[2:12, 3:6] = 128      # disc 10 px tall
    mask[4:8, 4] = 0           # cup 4 px tall
    assert vertical_cdr(mask) == pytest.approx(0.4)


def test_refuses_a_non_empty_output_folder(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="not empty"):
        generate(out, 1, 1, seed=0, sizes=TINY, progress=False)
    assert main(["--out", str(out), "--train", "1", "--test", "0", "--sizes", "200x134", "--quiet"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "user data"
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]           # no staging folder left behind


def test_empty_folder_and_an_empty_split_are_fine(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert main(["--out", str(out), "--train", "2", "--test", "0", "--sizes", "200x134", "--quiet"]) == 0
    gt = pd.read_excel(out / T2 / "testing_GT" / "fovea_localization_testing_GT.xlsx")
    assert list(gt.columns) == ["data", "Fovea_X", "Fovea_Y"] and len(gt) == 0
    assert not any((out / T2 / "testing" / "fundus color images").iterdir())


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_train=-1, n_test=1, seed=0), "--train"),
    (dict(n_train=1, n_test=-2, seed=0), "--test"),
    (dict(n_train=0, n_test=0, seed=0), "both 0"),
    (dict(n_train=1, n_test=0, seed=-1), "--seed"),
    (dict(n_train=1, n_test=0, seed=0, sizes=((20, 20),)), "at least"),
])
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(tmp_path / "x", progress=False, **kwargs)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("n_sizes", [1, 2, 3])
def test_sizes_and_sides_are_balanced(n_sizes):
    sizes = [(100 + k, 100) for k in range(n_sizes)]
    rng = np.random.default_rng(0)
    two = balanced_assignment(rng, 2, sizes)
    assert {side for _, side in two} == {"left", "right"}
    assert len({size for size, _ in two}) == min(2, n_sizes)
    full = balanced_assignment(rng, 4 * n_sizes, sizes)
    counts = pd.Series([f"{size}{side}" for size, side in full]).value_counts()
    assert len(counts) == 2 * n_sizes and (counts == 2).all()


def test_parse_sizes_and_ids():
    assert parse_sizes("2992x2000, 1956X1934") == ((2992, 2000), (1956, 1934))
    for bad in ("2992", "2992x", "axb", "2992x2000;1956x1934", "10x10"):
        with pytest.raises(ValueError, match="--sizes"):
            parse_sizes(bad)
    assert split_ids(2, 1) == {"training": ["0001", "0002"], "testing": ["0003"]}
    assert split_ids(9999, 1)["testing"] == ["10000"]
