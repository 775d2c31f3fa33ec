"""Tests for gamma_kit.synth: layout, ground truth, masks, determinism, refusals.

Data sets are tiny (small --sizes, a handful of images) so the file runs in seconds.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest

from gamma_kit import data
from gamma_kit.synth import generate, parse_sizes, render_fundus, sample_layout, split_ids, vertical_cdr
from gamma_kit.synth.__main__ import main
from gamma_kit.synth.render import (DISC_DIAMETER, DISC_HEIGHT_512, FOVEA_MEAN, FOVEA_SPAN, LAYERS,
                                    _path_out_of_cup, camera_magnification, cup_rim_contrast)
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
            assert 0.2 < row.vcdr < 0.9


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
    # the fovea lies about 2.5 nominal disc diameters temporal of the disc (the painted disc varies apart)
    dd = np.hypot(meta["fovea_x"] - meta["disc_x"], meta["fovea_y"] - meta["disc_y"]) / meta["disc_diameter"]
    assert dd.between(1.3, 4.3).all()


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
    assert right.disc_xy == pytest.approx((489 - left.disc_xy[0], left.disc_xy[1]), abs=0.1)
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
    diam = np.array([lay.scale for lay in layouts])                 # the nominal diameter places the disc
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


# ---- realism of the disc region (issue 9, deliverable 7) ------------------------------------

@pytest.fixture(scope="module")
def renders() -> list:
    """24 small photos (both cameras at 1/4, both eyes) with their painted layers."""
    return [render_fundus(np.random.default_rng([11, k]), *SMALL[k % 2], ("left", "right")[k // 2 % 2], layers=True)
            for k in range(24)]


def test_layers_are_full_size_opacities(renders):
    for s in renders:
        assert set(s.layers) == set(LAYERS)
        for layer in s.layers.values():
            assert layer.shape == s.mask.shape and layer.dtype == np.float32
            assert layer.min() >= 0 and layer.max() <= 1 + 1e-6
    plain = render_fundus(np.random.default_rng([11, 0]), *SMALL[0], "left")
    assert plain.layers is None and np.array_equal(plain.image, renders[0].image)   # layers change nothing


def _inner(mask: np.ndarray, margin: int) -> np.ndarray:
    """Disc pixels at least ``margin`` px inside the disc edge."""
    import cv2
    return cv2.erode((mask < 255).astype(np.uint8), np.ones((2 * margin + 1,) * 2, np.uint8)).astype(bool)


def test_atrophy_lesions_and_reflexes_lie_outside_the_disc(renders):
    seen = {name: 0 for name in ("ppa", "bright_lesions", "reflexes")}
    for s in renders:
        inner = _inner(s.mask, 2)                      # the canvas is 1 px here; its upscaling blurs ~1 px
        for name in seen:
            layer = s.layers[name]
            seen[name] += layer.max() > 0.1
            assert layer[inner].max(initial=0) < 0.02, name
        ppa = s.layers["ppa"] > 0.1
        if ppa.any():                                  # atrophy hugs the disc: within one disc radius of its edge
            rows, cols = np.nonzero(ppa)
            d = np.hypot(cols + 0.5 - s.disc_xy[0], rows + 0.5 - s.disc_xy[1])
            assert d.min() > 0.4 * s.disc_diameter / 2 and d.max() < 1.7 * s.disc_diameter
    assert all(n >= 3 for n in seen.values()), seen    # each appears in some photos, not in all
    assert seen["ppa"] < len(renders)


def test_cup_is_faint_blurred_and_its_contrast_varies(renders):
    contrast = np.array([cup_rim_contrast(s.image, s.mask) for s in renders])
    assert np.isfinite(contrast).all()
    # the first renderer drew cups 0.08-0.5 paler than the rim (median 0.33 on 30 photos)
    assert np.median(contrast) < 0.15 and (contrast < 0.05).sum() >= 4
    assert contrast.max() - contrast.min() > 0.1 and contrast.max() < 0.7
    pallor = np.array([s.layers["cup_pallor"].max() for s in renders])
    assert pallor.min() < 0.03 and pallor.max() > 0.15            # from nearly none to a clear pallor
    for s in renders:                                  # the pallor edge is soft: no jump at the cup outline
        p = s.layers["cup_pallor"]
        if p.max() > 0.05:
            edge = (s.mask == 0) & ~_inner(np.where(s.mask == 0, 0, 255).astype(np.uint8), 1)
            assert np.median(p[edge]) < 0.85 * p.max()


def test_disc_sizes_follow_real_photos():
    rng = np.random.default_rng(1)
    per_512 = 1934 / 512
    layouts = [sample_layout(rng, 967.0) for _ in range(600)]
    heights = np.array([lay.disc_height for lay in layouts]) / per_512
    median, _, lo, hi = DISC_HEIGHT_512
    assert heights.min() >= lo - 0.5 and heights.max() <= hi + 0.5
    assert abs(np.median(heights) - median) < 4 and np.percentile(heights, 95) - np.percentile(heights, 5) > 20
    cups = np.array([lay.cup_scale for lay in layouts])
    assert 0.4 < np.median(cups) < 0.52 and cups.min() >= 0.2 and cups.max() <= 0.9
    tilt = np.degrees(np.abs([lay.disc_tilt for lay in layouts]))
    oval = np.array([max(lay.disc_radii) / min(lay.disc_radii) for lay in layouts])
    assert (tilt > 15).mean() > 0.05 and (oval > 1.2).mean() > 0.05
    # rendered masks: the disc height on the photo resized to 512 rows, both cameras
    for k, (w, h) in enumerate(SMALL * 3):
        s = render_fundus(np.random.default_rng([5, k]), w, h, "left")
        tall = (s.mask < 255).any(axis=1).sum() * 512 / h
        assert 0.9 * lo * 0.94 < tall < 1.1 * hi * 1.06
    assert camera_magnification(2992, 2000) == camera_magnification(748, 500) != camera_magnification(1956, 1934)


def test_trunk_leaves_the_cup_with_a_kink_on_its_edge():
    theta = np.linspace(0, 2 * np.pi, 180, endpoint=False)
    cup = 10 * np.stack([np.cos(theta), np.sin(theta)], axis=1)
    for seed in range(10):
        course, heading = _path_out_of_cup(np.random.default_rng(seed), np.zeros(2), 0.3, cup)
        assert np.array_equal(course[0], [0, 0])
        np.testing.assert_allclose(np.hypot(*course[1:].T), 10)            # along the cup wall
        assert abs(math.atan2(course[-1, 1], course[-1, 0]) - 0.3) <= np.pi / 180 + 1e-9   # leaves at its heading
        bend = abs(math.atan2(course[1, 1], course[1, 0]) - 0.3)
        assert np.radians(1.5) < bend < np.radians(17)                     # reached the edge off its heading


def test_fovea_ground_truth_does_not_depend_on_the_disc_look():
    # the fovea and disc centre come from the first draws, the disc's size and look from later ones
    a = sample_layout(np.random.default_rng(3), 967.0)
    b = sample_layout(np.random.default_rng(3), 967.0, disc_px_per_512=2.0, magnification=1.05)
    assert a.fovea == b.fovea and a.disc == b.disc and a.scale == b.scale and a.disc_radii != b.disc_radii
