"""Data layer: layouts, readers, and every bad input named in the foundation issue and issue 10."""
import io
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from gamma_kit.data import (IMAGE_DIR, MIN_FUNDUS_SIDE, DataWarning, check_fundus_image, check_mask_values,
                            check_photo_size, check_photo_sizes, find_fovea_gt, find_mask_dir, find_task_dir,
                            image_size, jpeg_end, list_images, load_fovea_split, load_seg_split, match_gt_to_images,
                            present_values, read_fovea_gt, read_image, read_mask, resolve_data_root, sniff_format,
                            unexpected_mask_values, write_fovea_csv, write_image)
from gamma_kit.data.tables import _normalise_ids
from gamma_kit.safety import atomic_write_text


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


# --------------------------------------------------------------------------- issue 10: images by content
def _photo(h=300, w=400, seed=0):
    """A smooth fundus-like RGB image: a bright disc of texture on a black surround."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3), np.uint8), (0, 0), 6)
    img = cv2.normalize(img, None, 60, 220, cv2.NORM_MINMAX)
    yy, xx = np.mgrid[0:h, 0:w]
    img[(xx - w / 2) ** 2 + (yy - h / 2) ** 2 > (0.48 * min(h, w)) ** 2] = 0
    return img


def _jpeg_bytes(img, **kw):
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    return buf.tobytes()


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.99])
def test_jpeg_cut_mid_stream_is_truncated(tmp_path, cut):
    good = _jpeg_bytes(_photo())
    p = tmp_path / "cut.jpg"
    p.write_bytes(good[: int(len(good) * cut)])
    with pytest.raises(ValueError, match="cut.jpg: JPEG is truncated or damaged"):
        read_image(p)


@pytest.mark.parametrize("damage", ["random", "zeros", "cut out", "repeated"])
def test_jpeg_corrupt_in_the_middle_is_refused(tmp_path, damage, capfd):
    # JPEG has no checksum: damage that still decodes to valid codes cannot be seen by any decoder
    # (200 zero bytes in this smooth scan are such a case); these four are what libjpeg reports.
    good = _jpeg_bytes(_photo())
    mid = len(good) // 2
    bad = {"random": good[:mid] + np.random.default_rng(0).integers(0, 256, 200, dtype=np.uint8).tobytes()
           + good[mid + 200:], "zeros": good[:mid] + b"\0" * 2000 + good[mid + 2000:],
           "cut out": good[:mid] + good[mid + 1000:], "repeated": good[:mid] + good[mid - 3000:]}[damage]
    p = tmp_path / "bad.jpg"
    p.write_bytes(bad)
    with pytest.raises(ValueError, match=r"bad.jpg: JPEG data is corrupt \(libjpeg: Corrupt JPEG data"):
        read_image(p)
    assert "Corrupt JPEG" not in capfd.readouterr().err        # libjpeg's own line is swallowed


def test_progressive_and_restart_jpegs_and_exif_thumbnail_read(tmp_path):
    from PIL import Image

    img = _photo()
    for name, flags in (("prog.jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]), ("rst.jpg", [cv2.IMWRITE_JPEG_RST_INTERVAL, 2])):
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90, *flags])
        (tmp_path / name).write_bytes(buf.tobytes())
        assert read_image(tmp_path / name).shape == img.shape
    # a camera file: an APP1 block holding a complete thumbnail JPEG (with its own end marker)
    # before the scan; cut mid-scan it is still truncated, whole it reads
    thumb = io.BytesIO()
    Image.fromarray(img[::10, ::10]).save(thumb, "JPEG")
    body = _jpeg_bytes(img)
    app1 = b"Exif\0\0" + thumb.getvalue()
    cam = body[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + body[2:]
    (tmp_path / "cam.jpg").write_bytes(cam)
    assert read_image(tmp_path / "cam.jpg").shape == img.shape
    (tmp_path / "cam_cut.jpg").write_bytes(cam[: len(cam) - len(body) // 2])
    with pytest.raises(ValueError, match="truncated"):
        read_image(tmp_path / "cam_cut.jpg")


def test_png_named_jpg_and_trailing_bytes_are_accepted(tmp_path):
    img = _photo()
    png = tmp_path / "0001.jpg"
    png.write_bytes(cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))[1].tobytes())
    np.testing.assert_array_equal(read_image(png), img)                 # lossless: exactly the pixels
    tail = tmp_path / "0002.jpg"
    tail.write_bytes(_jpeg_bytes(img) + b"\xff\xda trailing bytes of some camera" * 20)
    ref = tmp_path / "ref.jpg"
    ref.write_bytes(_jpeg_bytes(img))
    np.testing.assert_array_equal(read_image(tail), read_image(ref))
    assert sniff_format(png.read_bytes()) == "png" and sniff_format(tail.read_bytes()) == "jpeg"


def test_jpeg_end_known_offsets():
    data = _jpeg_bytes(_photo(64, 64))
    arr = np.frombuffer(data, np.uint8)
    assert jpeg_end(arr) == len(data)
    assert jpeg_end(np.frombuffer(data + b"\0" * 7, np.uint8)) == len(data)
    assert jpeg_end(arr[:-1]) is None and jpeg_end(arr[: len(data) // 2]) is None


@pytest.mark.parametrize("orientation", [6, 8])
def test_png_exif_orientation_same_for_pixels_and_size(tmp_path, orientation):
    from PIL import Image

    img = np.zeros((40, 60, 3), np.uint8)
    img[:10, :20] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = tmp_path / "rot.png"
    Image.fromarray(img).save(p, "PNG", exif=exif.tobytes())
    pixels = read_image(p)
    assert pixels.shape[:2] == (60, 40) and image_size(p) == (40, 60)
    np.testing.assert_array_equal(pixels, np.rot90(img, -1 if orientation == 6 else 1))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_same_for_pixels_and_size(tmp_path, orientation):
    from PIL import Image

    img = np.zeros((40, 60, 3), np.uint8)
    img[:10, :20] = 255                                               # a marker in the top-left corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = tmp_path / "rot.jpg"
    Image.fromarray(img).save(p, "JPEG", exif=exif.tobytes(), quality=95)
    pixels = read_image(p)
    assert image_size(p) == (pixels.shape[1], pixels.shape[0])
    assert pixels.shape[:2] == ((40, 60) if orientation <= 4 else (60, 40))
    # the same rule as OpenCV's own EXIF handling (cv2.IMREAD_COLOR) and Pillow's exif_transpose
    from PIL import ImageOps
    with Image.open(p) as im:
        viewer = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert np.abs(pixels.astype(int) - viewer).mean() < 3
    np.testing.assert_array_equal(pixels, cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB))


def test_check_fundus_image_accepts_photos_and_refuses_the_rest():
    fov = check_fundus_image(_photo(), "0001.jpg")
    assert fov.cx == pytest.approx(200, abs=4) and fov.radius == pytest.approx(144, abs=6)
    with pytest.raises(ValueError, match=rf"tiny.jpg: image is 10x10 px; fundus photos need at least "
                                         rf"{MIN_FUNDUS_SIDE} px on the short side"):
        check_fundus_image(np.zeros((10, 10, 3), np.uint8), "tiny.jpg")
    noise = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"noise.png: no circular field of view .*not a fundus photograph\?"):
        check_fundus_image(noise, "noise.png")
    noisy_field = _photo()
    inside = noisy_field.max(axis=2) > 0
    noisy_field[inside] = noise[inside]
    with pytest.raises(ValueError, match="field is pixel noise"):
        check_fundus_image(noisy_field, "x")
    with pytest.raises(ValueError, match="nearly\\) black"):
        check_fundus_image(np.zeros((300, 300, 3), np.uint8), "black")
    with pytest.raises(ValueError, match="not a fundus"):
        check_fundus_image(np.full((300, 300, 3), 128, np.uint8), "grey")


def test_check_photo_size_boundary_on_either_side():
    check_photo_size((MIN_FUNDUS_SIDE, MIN_FUNDUS_SIDE), "square.jpg")
    check_photo_size((MIN_FUNDUS_SIDE, 4000), "tall.jpg")
    for size in ((MIN_FUNDUS_SIDE - 1, 4000), (4000, MIN_FUNDUS_SIDE - 1)):
        w, h = size
        with pytest.raises(ValueError, match=rf"^a.jpg: image is {w}x{h} px; .* {MIN_FUNDUS_SIDE} px on the short"):
            check_photo_size(size, "a.jpg")


def test_check_photo_sizes_reads_headers_and_names_the_first_small_photo(tmp_path):
    for name, (w, h) in {"a.jpg": (200, 150), "b.png": (90, 300), "c.jpg": (300, 20), "d.jpg": (10, 10)}.items():
        write_image(tmp_path / name, np.zeros((h, w, 3), np.uint8))
    check_photo_sizes([tmp_path / "a.jpg"])
    with pytest.raises(ValueError) as info:
        check_photo_sizes(list_images(tmp_path))
    assert str(info.value) == (f"{tmp_path / 'b.png'}: image is 90x300 px; fundus photos need at least "
                               f"{MIN_FUNDUS_SIDE} px on the short side (2 more photo(s) that small: "
                               "['c.jpg', 'd.jpg'])")
    (tmp_path / "e.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="e.jpg: cannot be read as an image"):
        check_photo_sizes({"e": tmp_path / "e.jpg"})


def test_check_fundus_image_passes_real_photos(idrid):
    for p in sorted((idrid / "images").glob("*.jpg"))[:5]:
        check_fundus_image(read_image(p), p.name)


# --------------------------------------------------------------------------- ground truth by meaning
def test_gt_id_from_data_column_not_first(tmp_path):
    p = tmp_path / "gt.xlsx"
    pd.DataFrame({"No.": [1, 2], "data": ["0002", "0001"], "Fovea_X": [10.0, 20.0],
                  "Fovea_Y": [1.0, 2.0]}).to_excel(p, index=False)
    gt = read_fovea_gt(p)
    assert list(gt.index) == ["0002", "0001"] and gt.loc["0001", "Fovea_X"] == 20.0
    q = tmp_path / "gt.csv"
    q.write_text("Fovea_Y,Fovea_X,ID\n5,6,7\n")                      # any order; the one other column is the id
    assert read_fovea_gt(q).loc["0007"].tolist() == [6.0, 5.0]
    q.write_text("No.,name,Fovea_X,Fovea_Y\n1,a,1,2\n")
    with pytest.raises(ValueError, match="no 'data' column, and several other column"):
        read_fovea_gt(q)


@pytest.mark.parametrize("files, gt_ids", [(["1.jpg", "2.jpg"], [1, 2]), (["0001.jpg", "0002.jpg"], [1, 2]),
                                           (["1.jpg", "2.jpg"], ["0001", "0002"]),
                                           (["00001.jpg", "00002.jpg"], ["1.jpg", "2.0"])])
def test_numeric_ids_match_by_value_both_ways(tmp_path, files, gt_ids):
    images = {Path(f).stem: tmp_path / f for f in files}
    gt = pd.DataFrame({"Fovea_X": [1.0, 2.0], "Fovea_Y": [3.0, 4.0]},
                      index=pd.Index(_normalise_ids(pd.Series(gt_ids, dtype=object)), name="data"))
    out = match_gt_to_images(gt, images, "gt.csv")
    assert list(out.index) == [Path(f).stem for f in files] and out.iloc[1]["Fovea_X"] == 2.0


def test_numeric_ids_ambiguity_and_unlabelled_warning(tmp_path):
    gt = pd.DataFrame({"Fovea_X": [1.0], "Fovea_Y": [3.0]}, index=pd.Index(["0001"], name="data"))
    with pytest.raises(ValueError, match="'1' and '0001' are the same number"):
        match_gt_to_images(gt, {"1": tmp_path / "1.jpg", "0001": tmp_path / "0001.jpg"}, "gt.csv")
    with pytest.warns(DataWarning, match=r"2 image\(s\) have no row in gt.csv and are left out: \['0002', '0003'\]"):
        match_gt_to_images(gt, {i: tmp_path / f"{i}.jpg" for i in ("0001", "0002", "0003")}, "gt.csv")


def test_training_split_with_short_ids_and_unlabelled_image(tmp_path):
    root = _layout(tmp_path)
    t2 = root / "task2_Fovea_localization" / "training"
    for k in (1, 2, 3):
        (t2 / IMAGE_DIR / f"{k:04d}.jpg").rename(t2 / IMAGE_DIR / f"{k}.jpg")
    pd.DataFrame({"No.": [1, 2], "data": [1, 2], "Fovea_X": [30.5, 31.0], "Fovea_Y": [20.0, 21.0]}) \
        .to_excel(t2 / "fovea_localization_training_GT.xlsx", index=False)
    with pytest.warns(DataWarning, match=r"1 image\(s\) have no row .*\['3'\]"):
        split = load_fovea_split(root)
    assert list(split.gt.index) == ["1", "2"] and split.gt.loc["2", "Fovea_X"] == 31.0


# --------------------------------------------------------------------------- layout discovery
def test_find_fovea_gt_and_mask_dir(tmp_path):
    task = tmp_path / "task"
    (task / "training").mkdir(parents=True)
    (task / "testing_GT" / "Disc_Cup_Masks").mkdir(parents=True)
    assert find_fovea_gt(task, "training") is None and find_mask_dir(task, "training") is None
    (task / "training" / "fovea_localization_training_GT.xlsx").write_bytes(b"")
    (task / "testing_GT" / "fovea_localization_testing_GT.csv").write_text("")
    assert find_fovea_gt(task, "training").name == "fovea_localization_training_GT.xlsx"
    assert find_fovea_gt(task, "testing") == task / "testing_GT" / "fovea_localization_testing_GT.csv"
    assert find_mask_dir(task, "testing") == task / "testing_GT" / "Disc_Cup_Masks"
    (task / "training" / "old_GT.csv").write_text("")
    with pytest.raises(ValueError, match=r"several ground-truth tables \(fovea_localization_training_GT.xlsx, old_GT.csv\)"):
        find_fovea_gt(task, "training")
    with pytest.raises(FileNotFoundError, match=r"training: no mask folder \(Disc_Cup_Mask or Disc_Cup_Masks"):
        find_mask_dir(task, "training", required=True)


def test_test_split_finds_its_gt_in_testing_gt(tmp_path):
    root = _layout(tmp_path)
    t2 = root / "task2_Fovea_localization"
    (t2 / "testing" / IMAGE_DIR).mkdir(parents=True)
    write_image(t2 / "testing" / IMAGE_DIR / "0101.jpg", np.zeros((40, 60, 3), np.uint8))
    (t2 / "testing_GT").mkdir()
    (t2 / "testing_GT" / "fovea_localization_testing_GT.csv").write_text("data,Fovea_X,Fovea_Y\n101,3,4\n")
    assert load_fovea_split(root, "testing").gt.loc["0101"].tolist() == [3.0, 4.0]


def test_jpeg_mask_is_reported_as_jpeg(tmp_path):
    root = _layout(tmp_path)
    masks = root / "task3_disc_cup_segmentation" / "training" / "Disc_Cup_Mask"
    (masks / "0003.bmp").rename(masks / "0003.jpg")
    with pytest.raises(ValueError, match=r"Disc_Cup_Mask: mask\(s\) saved as JPEG \(0003.jpg\); .*save masks as .bmp or .png"):
        load_seg_split(root)
    with pytest.raises(ValueError, match="saved as JPEG"):
        read_mask(masks / "0003.jpg")


def test_one_message_for_bad_mask_values(tmp_path):
    from gamma_kit.metrics import seg_image_metrics

    labels = np.full((10, 10), 2, np.uint8)
    labels[3:6, 3:6] = 1
    write_image(tmp_path / "m.png", labels)
    with pytest.raises(ValueError) as from_file:
        read_mask(tmp_path / "m.png")
    with pytest.raises(ValueError) as from_array:
        seg_image_metrics(labels, labels, name="m")
    tail = "mask values must be in {0, 128, 255} (0 cup, 128 disc, 255 background); found [1, 2] " \
           "(these look like 0/1/2 training labels, not a GAMMA mask)"
    assert str(from_file.value) == f"{tmp_path / 'm.png'}: {tail}"
    assert str(from_array.value) == f"m prediction: {tail}"
    assert check_mask_values(np.full((3, 3), 255, np.uint8)).shape == (3, 3)


# --------------------------------------------------------------------------- writes
def test_atomic_write_names_the_path_on_a_full_disk(tmp_path, monkeypatch):
    import errno
    import os

    (tmp_path / "out.csv").write_text("old\n")

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError) as info:
        atomic_write_text(tmp_path / "out.csv", "new\n")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "out.csv")
    assert (tmp_path / "out.csv").read_text() == "old\n"                # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]    # and no temp file is left


def test_atomic_copy_round_trip_and_errors_name_the_right_file(tmp_path, monkeypatch):
    import errno
    import shutil

    from gamma_kit.safety import atomic_copy

    src = tmp_path / "src.jpg"
    src.write_bytes(b"\xff\xd8 photo bytes")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.jpg").write_bytes(b"old")
    assert atomic_copy(src, tmp_path / "out" / "a.jpg").read_bytes() == src.read_bytes()
    with pytest.raises(FileNotFoundError) as info:                      # reading: names the source
        atomic_copy(tmp_path / "missing.jpg", tmp_path / "out" / "b.jpg")
    assert info.value.filename == str(tmp_path / "missing.jpg")
    real = shutil.copyfile

    def full(a, b, **k):
        real(a, b, **k)
        raise OSError(errno.ENOSPC, "No space left on device", b)       # the hidden temporary name

    monkeypatch.setattr(shutil, "copyfile", full)
    with pytest.raises(OSError) as info:                                # writing: names the target
        atomic_copy(src, tmp_path / "out" / "a.jpg")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "out" / "a.jpg")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.jpg"]   # no temp file left


# --------------------------------------------------------------------------- issue 17: leftovers and sides
def _masks_beside(tmp_path, n_photos=3, partial=1, full=3):
    """A task 3 training split with ``Disc_Cup_Mask`` holding ``partial`` masks and ``Disc_Cup_Masks`` ``full``."""
    root = _layout(tmp_path, n=n_photos)
    train = root / "task3_disc_cup_segmentation" / "training"
    (train / "Disc_Cup_Masks").mkdir()
    for k in range(1, n_photos + 1):
        src = train / "Disc_Cup_Mask" / f"{k:04d}.bmp"
        if k <= full:
            (train / "Disc_Cup_Masks" / src.name).write_bytes(src.read_bytes())
        if k > partial:
            src.unlink()
    return root, train


def test_two_mask_folders_take_the_complete_one_and_say_so(tmp_path):
    root, train = _masks_beside(tmp_path, partial=1, full=3)
    with pytest.warns(DataWarning) as seen:
        assert find_mask_dir(train.parent, "training") == train / "Disc_Cup_Masks"
    assert [str(w.message) for w in seen] == [
        f"{train}: two mask folders, Disc_Cup_Mask (1 masks) and Disc_Cup_Masks (3 masks); using Disc_Cup_Masks, "
        f"the one with a mask for each of the 3 photos in {IMAGE_DIR}/"]
    with pytest.warns(DataWarning):
        assert sorted(load_seg_split(root).masks) == ["0001", "0002", "0003"]


@pytest.mark.parametrize("partial, full, why", [
    (2, 2, "neither has a mask for each of the 3 photos in fundus color images/"),
    (3, 3, "both have a mask for each of the 3 photos"),
])
def test_two_mask_folders_refused_when_neither_or_both_is_complete(tmp_path, partial, full, why):
    _, train = _masks_beside(tmp_path, partial=partial, full=full)
    with pytest.raises(ValueError) as info:
        find_mask_dir(train.parent, "training")
    assert str(info.value) == (f"{train}: two mask folders, Disc_Cup_Mask ({partial} masks) and Disc_Cup_Masks "
                               f"({full} masks), and {why}: keep one of them (or name it: seg prepare --mask-dir DIR)")


def test_check_mask_fits_scales_the_same_shape_and_refuses_another_aspect():
    from gamma_kit.data import check_mask_fits

    assert check_mask_fits((2992, 2000), (2992, 2000)) is False
    assert check_mask_fits((1496, 1000), (2992, 2000)) is True          # the same photo at half size
    assert check_mask_fits((999, 667), (2992, 2000)) is True            # rounded to the pixel
    with pytest.raises(ValueError) as info:
        check_mask_fits((2992, 2000), (1956, 1934), "m/0002.bmp", "imgs/0002.jpg")
    assert str(info.value).startswith("m/0002.bmp: mask is 2992x2000 px but its photo 0002.jpg is 1956x1934 (w x h): "
                                      "another aspect ratio (a mask of another camera or photo?)")
    with pytest.raises(ValueError, match="mask is 512x512 px but its photo 0001.jpg is 1956x1934"):
        check_mask_fits((512, 512), (1956, 1934), "0001.bmp", "0001.jpg")


def test_a_file_where_a_folder_is_expected_is_named_as_such(tmp_path):
    (tmp_path / "sub.zip").write_bytes(b"PK")
    with pytest.raises(ValueError, match=r"sub.zip: a file, not a folder \(mask folder expected\)"):
        from gamma_kit.data import list_masks
        list_masks(tmp_path / "sub.zip")
    (tmp_path / "photo.jpg").mkdir()
    with pytest.raises(ValueError, match=r"photo.jpg: a folder, not an image file"):
        read_image(tmp_path / "photo.jpg")


def _zip(path, members: dict):
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _bmp(mask):
    return cv2.imencode(".bmp", mask)[1].tobytes()


def test_open_masks_reads_a_submission_zip_in_memory(tmp_path):
    from gamma_kit.data import open_masks

    m = np.full((20, 10), 255, np.uint8)
    m[4:14, 2:8] = 128
    z = _zip(tmp_path / "sub.zip", {"Disc_Cup_Segmentations/0101.bmp": _bmp(m),
                                    "Disc_Cup_Segmentations/0102.png": cv2.imencode(".png", m)[1].tobytes(),
                                    "__MACOSX/Disc_Cup_Segmentations/._0101.bmp": b"junk",
                                    "Disc_Cup_Segmentations/.DS_Store": b"junk", "README.txt": b"team x"})
    before = sorted(tmp_path.rglob("*"))
    with open_masks(z) as masks:
        assert masks.ids == ["0101", "0102"]
        assert masks.name("0101") == f"{z}/Disc_Cup_Segmentations/0101.bmp"
        np.testing.assert_array_equal(masks.read("0102", expected_size=(10, 20)), m)
        with pytest.raises(ValueError, match=r"sub.zip/Disc_Cup_Segmentations/0101.bmp: mask size 10x20 differs"):
            masks.read("0101", expected_size=(20, 10))
    assert sorted(tmp_path.rglob("*")) == before                             # nothing unpacked
    folder = tmp_path / "pred"
    folder.mkdir()
    write_image(folder / "0101.bmp", m)
    with open_masks(folder) as masks:                                         # a folder reads the same way
        assert masks.ids == ["0101"] and masks.name("0101") == str(folder / "0101.bmp")
        np.testing.assert_array_equal(masks.read("0101"), m)


@pytest.mark.parametrize("members, found", [
    ({"0101.bmp": "m", "0102.bmp": "m"}, "its 2 image file(s) lie in the top of the zip (zip the "
                                         "Disc_Cup_Segmentations folder itself, not its contents)"),
    ({"results/Disc_Cup_Segmentations/0101.bmp": "m"}, "its 1 image file(s) lie in results/Disc_Cup_Segmentations/"),
    ({"disc_cup_segmentations/0101.bmp": "m"}, "its 1 image file(s) lie in disc_cup_segmentations/"),
    ({"Disc_Cup_Segmentations/0101.tif": "m"}, "its Disc_Cup_Segmentations/ holds 1 image(s) as .tif"),
    ({"notes.txt": "x"}, "it holds no image files (1 other file(s))"),
    ({}, "it is empty"),
])
def test_open_masks_refuses_a_wrong_zip_layout_in_one_line(tmp_path, members, found):
    from gamma_kit.data import open_masks

    z = _zip(tmp_path / "sub.zip", {k: _bmp(np.full((4, 4), 255, np.uint8)) if v == "m" else v
                                    for k, v in members.items()})
    with pytest.raises(ValueError) as info:
        open_masks(z)
    assert str(info.value) == (f"{z}: not a GAMMA task 3 submission: expected Disc_Cup_Segmentations/<id>.bmp "
                               f"(or .png) at the top of the zip, as the challenge takes it; {found}")


def test_open_masks_refuses_jpeg_members_duplicates_and_non_zips(tmp_path):
    from gamma_kit.data import open_masks

    m = np.full((4, 4), 255, np.uint8)
    z = _zip(tmp_path / "a.zip", {"Disc_Cup_Segmentations/0101.jpg": cv2.imencode(".jpg", m)[1].tobytes()})
    with pytest.raises(ValueError, match=r"a.zip/Disc_Cup_Segmentations: mask\(s\) saved as JPEG \(0101.jpg\)"):
        open_masks(z)
    z = _zip(tmp_path / "b.zip", {"Disc_Cup_Segmentations/0101.bmp": _bmp(m),
                                  "Disc_Cup_Segmentations/0101.png": cv2.imencode(".png", m)[1].tobytes()})
    with pytest.raises(ValueError, match=r"b.zip: two masks share the id '0101'"):
        open_masks(z)
    (tmp_path / "c.zip").write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match=r"c.zip: not a zip archive \(.*\); expected a submission zip"):
        open_masks(tmp_path / "c.zip")
    with pytest.raises(FileNotFoundError, match="mask folder or submission zip not found: .*missing.zip"):
        open_masks(tmp_path / "missing.zip")
    z = _zip(tmp_path / "d.zip", {"Disc_Cup_Segmentations/0101.bmp": b"BM not really a bitmap"})
    with open_masks(z) as masks, pytest.raises(ValueError, match="d.zip/Disc_Cup_Segmentations/0101.bmp: cannot be "
                                                                  "decoded as an image"):
        masks.read("0101")


@pytest.mark.parametrize("errno_name, reason", [("EACCES", "Permission denied"), ("EIO", "Input/output error")])
def test_read_errors_name_the_file_as_an_input(tmp_path, monkeypatch, errno_name, reason):
    import errno

    from gamma_kit.cli import describe_error

    write_image(tmp_path / "0001.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "gt.csv").write_text("data,Fovea_X,Fovea_Y\n0001,1,2\n")
    code = getattr(errno, errno_name)

    def fail(path, *a, **k):
        raise OSError(code, reason, str(path))

    with monkeypatch.context() as mp:
        mp.setattr(np, "fromfile", fail)
        with pytest.raises(OSError) as info:
            read_image(tmp_path / "0001.png")
    assert info.value.errno == code and info.value.side == "input"
    assert describe_error(info.value) == f"input {tmp_path / '0001.png'}: {reason}"
    with monkeypatch.context() as mp:
        mp.setattr(pd, "read_csv", fail)                 # pandas' own catch-all must not turn it into "a table"
        with pytest.raises(OSError) as info:
            read_fovea_gt(tmp_path / "gt.csv")
    assert describe_error(info.value) == f"input {tmp_path / 'gt.csv'}: {reason}"


def test_write_errors_name_the_file_as_an_output_and_a_copy_names_its_source_as_an_input(tmp_path, monkeypatch):
    import errno
    import shutil
    import tempfile

    from gamma_kit.safety import atomic_copy
    from gamma_kit.cli import describe_error

    def denied(*_a, **_k):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / ".out.csv.x.tmp"))

    with monkeypatch.context() as mp:
        mp.setattr(tempfile, "mkstemp", denied)
        with pytest.raises(OSError) as info:
            atomic_write_text(tmp_path / "out.csv", "x")
    assert describe_error(info.value) == f"output {tmp_path / 'out.csv'}: Permission denied"
    (tmp_path / "src.jpg").write_bytes(b"photo")

    def unreadable(a, b, **k):
        raise OSError(errno.EIO, "Input/output error", a)

    with monkeypatch.context() as mp:
        mp.setattr(shutil, "copyfile", unreadable)
        with pytest.raises(OSError) as info:
            atomic_copy(tmp_path / "src.jpg", tmp_path / "dst.jpg")
    assert describe_error(info.value) == f"input {tmp_path / 'src.jpg'}: Input/output error"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.jpg"]


def test_describe_orientation_names_the_tag(tmp_path):
    from PIL import Image

    from gamma_kit.data import describe_orientation, exif_orientation

    exif = Image.Exif()
    exif[0x0112] = 3
    Image.fromarray(np.zeros((8, 12, 3), np.uint8)).save(tmp_path / "a.jpg", "JPEG", exif=exif.tobytes())
    Image.fromarray(np.zeros((8, 12, 3), np.uint8)).save(tmp_path / "b.jpg", "JPEG")
    assert exif_orientation(tmp_path / "a.jpg") == 3 and exif_orientation(tmp_path / "b.jpg") == 1
    assert describe_orientation(tmp_path / "a.jpg") == "EXIF orientation 3: shown turned 180 degrees"
    assert describe_orientation(tmp_path / "b.jpg") is None and describe_orientation(tmp_path / "none.jpg") is None
