"""Data layer: layouts, readers, and every bad input named in the foundation issue."""
import numpy as np
import pandas as pd
import pytest

from gamma_kit.data import (IMAGE_DIR, find_task_dir, list_images, load_fovea_split, load_seg_split,
                            present_values, read_fovea_gt, read_image, read_mask, resolve_data_root,
                            unexpected_mask_values, write_fovea_csv, write_image)


def _layout(root, n=3, mask_dir="Disc_Cup_Mask", mask_ext=".bmp"):
    t2 = root / "task2_Fovea_localization" / "training"
    t3 = root / "task3_disc_cup_segmentation" / "training"
    rng = np.random.default_rng(0)
    for folder in (t2 / IMAGE_DIR, t3 / IMAGE_DIR, t3 / mask_dir):
        folder.mkdir(parents=True)
    for k in range(1, n + 1):
        img = rng.integers(0, 255, (40, 60, 3), np.uint8)
        write_image(t2 / IMAGE_DIR / f"{k:04d}.jpg", img)
        write_image(t3 / IMAGE_DIR / f"{k:04d}.jpg", img)
        mask = np.full((40, 60), 255, np.uint8)
        mask[10:30, 20:40] = 128
        mask[15:25, 25:35] = 0
        write_image(t3 / mask_dir / f"{k:04d}{mask_ext}", mask)
    gt = pd.DataFrame({"data": [f"{k:04d}" for k in range(1, n + 1)], "Fovea_X": [30.5] * n, "Fovea_Y": [20.0] * n})
    gt.to_excel(t2 / "fovea_localization_training_GT.xlsx", index=False)
    return root


def test_round_trip_layout_from_parent_and_task_dir(tmp_path):
    root = _layout(tmp_path)
    split = load_fovea_split(root)
    assert split.ids == ["0001", "0002", "0003"]
    assert split.gt.loc["0002", "Fovea_X"] == 30.5
    assert find_task_dir(root / "task2_Fovea_localization", "fovea") == root / "task2_Fovea_localization"
    seg = load_seg_split(root)
    assert sorted(seg.masks) == seg.ids
    m = read_mask(seg.masks["0001"], expected_size=(60, 40))
    assert set(np.unique(m)) == {0, 128, 255}
    assert read_image(seg.images["0001"]).shape == (40, 60, 3)


@pytest.mark.parametrize("mask_dir, ext", [("Disc_Cup_Masks", ".png"), ("Disc_Cup_Mask", ".png")])
def test_mask_folder_and_format_variants(tmp_path, mask_dir, ext):
    seg = load_seg_split(_layout(tmp_path, mask_dir=mask_dir, mask_ext=ext))
    assert seg.masks["0003"].name == f"0003{ext}"


def test_data_root_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("GAMMA_DATA", str(tmp_path))
    assert resolve_data_root(None) == tmp_path
    monkeypatch.delenv("GAMMA_DATA")
    with pytest.raises(ValueError, match="--data-root"):
        resolve_data_root(None)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        resolve_data_root(tmp_path / "nowhere")


def test_numeric_ids_in_spreadsheet_are_zero_padded(tmp_path):
    p = tmp_path / "gt.xlsx"
    pd.DataFrame({"data": [1, 100], "Fovea_X": [1.0, 2.0], "Fovea_Y": [3.0, 4.0]}).to_excel(p, index=False)
    assert list(read_fovea_gt(p).index) == ["0001", "0100"]


def test_missing_gt_column(tmp_path):
    p = tmp_path / "gt.csv"
    p.write_text("data,Fovea_X,FoveaY\n0001,1,2\n")
    with pytest.raises(ValueError, match=r"gt.csv: missing column\(s\) \['Fovea_Y'\]"):
        read_fovea_gt(p)


def test_non_numeric_gt(tmp_path):
    p = tmp_path / "gt.csv"
    p.write_text("data,Fovea_X,Fovea_Y\n0001,abc,2\n")
    with pytest.raises(ValueError, match="non-numeric.*0001"):
        read_fovea_gt(p)


def test_gt_id_without_image(tmp_path):
    root = _layout(tmp_path)
    (root / "task2_Fovea_localization" / "training" / IMAGE_DIR / "0002.jpg").unlink()
    with pytest.raises(ValueError, match=r"fovea_localization_training_GT.xlsx: 1 id\(s\) have no image.*'0002'"):
        load_fovea_split(root)


def test_unreadable_and_truncated_images(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="bad.jpg: cannot be decoded"):
        read_image(bad)
    good = tmp_path / "good.jpg"
    write_image(good, np.full((64, 64, 3), 100, np.uint8))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(ValueError, match="cut.jpg: (JPEG is truncated|cannot be decoded)"):
        read_image(cut)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        read_image(tmp_path / "missing.jpg")


def test_mask_with_unexpected_values(tmp_path):
    p = tmp_path / "m.png"
    m = np.full((10, 10), 255, np.uint8)
    m[2:5, 2:5] = 1                                    # already 0/1/2 labels: not a GAMMA mask
    write_image(p, m)
    with pytest.raises(ValueError, match=r"m.png: mask values must be in \{0, 128, 255\}.*\[1\]"):
        read_mask(p)


def test_mask_size_differs_from_image(tmp_path):
    p = tmp_path / "m.bmp"
    write_image(p, np.full((10, 12), 255, np.uint8))
    with pytest.raises(ValueError, match="m.bmp: mask size 12x10 differs from its image 60x40"):
        read_mask(p, expected_size=(60, 40))


def test_colour_mask_rejected(tmp_path):
    p = tmp_path / "m.png"
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 255
    write_image(p, rgb)
    with pytest.raises(ValueError, match="single-channel"):
        read_mask(p)


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no image files"):
        list_images(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no GAMMA fovea layout"):
        find_task_dir(tmp_path, "fovea")


def test_images_and_masks_must_pair(tmp_path):
    root = _layout(tmp_path)
    (root / "task3_disc_cup_segmentation" / "training" / "Disc_Cup_Mask" / "0003.bmp").unlink()
    with pytest.raises(ValueError, match=r"ids without a mask: \['0003'\]"):
        load_seg_split(root)


def test_submission_csv_round_trip_and_atomic(tmp_path):
    df = pd.DataFrame({"Fovea_X": [1.5, 2.0], "Fovea_Y": [3.0, 4.25]}, index=["0101", "0102"])
    p = write_fovea_csv(tmp_path / "sub.csv", df)
    assert p.read_text().splitlines()[0] == "data,Fovea_X,Fovea_Y"
    back = read_fovea_gt(p)
    assert list(back.index) == ["0101", "0102"] and back.loc["0102", "Fovea_Y"] == 4.25
    assert [f.name for f in tmp_path.iterdir()] == ["sub.csv"]          # no temp file left behind


def test_present_values_known_answers():
    m = np.full((7, 9), 255, np.uint8)
    m[2:5, 3:6] = 128
    m[3, 4] = 0
    np.testing.assert_array_equal(present_values(m), [0, 128, 255])
    np.testing.assert_array_equal(present_values(m[:, ::2][:2]), [255])          # a strided view
    assert present_values(m).dtype == np.uint8
    assert present_values(np.zeros((0, 4), np.uint8)).size == 0
    np.testing.assert_array_equal(present_values(np.array([[3, -1], [3, 300]], np.int16)), [-1, 3, 300])
    m[0, 0], m[6, 8] = 1, 254
    np.testing.assert_array_equal(unexpected_mask_values(m), [1, 254])
    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, (300, 200), dtype=np.uint8)
    np.testing.assert_array_equal(present_values(big), np.unique(big))
