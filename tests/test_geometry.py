"""Canonical frame: exact original constants, point and pixel round trips, detection."""
import cv2
import numpy as np
import pandas as pd
import pytest

from gamma_kit.data import read_image
from gamma_kit.geometry import (CANONICAL_SIZE, GAMMA_WIDE_SIZE, CanonicalFrame, FieldOfView, detect_disc_side,
                                detect_fov, find_disc, read_side_overrides)

GAMMA_SIZES = [CANONICAL_SIZE, GAMMA_WIDE_SIZE]


@pytest.mark.parametrize("size", GAMMA_SIZES)
@pytest.mark.parametrize("flipped", [False, True])
def test_points_round_trip_gamma_sizes(size, flipped):
    frame = CanonicalFrame.for_size(size, flipped)
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 1, (50, 2)) * size
    back = frame.to_image(frame.to_canonical(pts))
    np.testing.assert_allclose(back, pts, atol=1e-9)


def test_original_constants():
    # wide camera, left eye: x' = x - 518, y' = y - 33
    f = CanonicalFrame.for_size(GAMMA_WIDE_SIZE, flipped=False)
    np.testing.assert_allclose(f.to_canonical([[1657, 1071]]), [[1139, 1038]])
    # wide camera, right eye: x' = 1956 - (x - 518)
    f = CanonicalFrame.for_size(GAMMA_WIDE_SIZE, flipped=True)
    np.testing.assert_allclose(f.to_canonical([[1657, 1071]]), [[1956 - 1139, 1038]])
    # square camera, right eye: x' = 1956 - x
    f = CanonicalFrame.for_size(CANONICAL_SIZE, flipped=True)
    np.testing.assert_allclose(f.to_canonical([[800, 900]]), [[1156, 900]])


@pytest.mark.parametrize("size", GAMMA_SIZES)
@pytest.mark.parametrize("flipped", [False, True])
def test_pixels_move_with_points_and_round_trip(size, flipped):
    w, h = size
    img = np.zeros((h, w, 3), np.uint8)
    frame = CanonicalFrame.for_size(size, flipped)
    i, j = 1200, 700                                    # a marker pixel inside the crop
    img[j, i] = (255, 10, 20)
    can = frame.warp_image(img)
    assert can.shape == (CANONICAL_SIZE[1], CANONICAL_SIZE[0], 3)
    cx, cy = frame.to_canonical([[i + 0.5, j + 0.5]])[0]   # the pixel centre as a point
    assert tuple(np.argwhere(can[..., 0] == 255)[0]) == (int(cy), int(cx))
    back = frame.unwarp_image(can)
    assert back.shape == img.shape and np.array_equal(back, img)


def test_wide_camera_round_trip_keeps_the_crop_only():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (2000, 2992), np.uint8)
    frame = CanonicalFrame.for_size(GAMMA_WIDE_SIZE, flipped=True)
    back = frame.unwarp_image(frame.warp_image(img))
    assert np.array_equal(back[33:1967, 518:2474], img[33:1967, 518:2474])
    assert back[:33].max() == 0 and back[:, :518].max() == 0


def test_scaled_warp_places_points():
    """At scale s, canonical point p lands on pixel p * s (checked with a blob's centroid)."""
    frame = CanonicalFrame.for_size(GAMMA_WIDE_SIZE, flipped=True)
    img = np.zeros((2000, 2992), np.uint8)
    cv2.circle(img, (1657, 1071), 12, 255, -1)
    can = frame.warp_image(img, scale=0.25).astype(float)
    ys, xs = np.mgrid[: can.shape[0], : can.shape[1]]
    centroid = np.array([(xs * can).sum(), (ys * can).sum()]) / can.sum() + 0.5
    expect = frame.to_canonical([[1657.5, 1071.5]])[0] * 0.25
    np.testing.assert_allclose(centroid, expect, atol=0.2)


def _fundus(w, h, cx, cy, r, disc_xy):
    img = np.zeros((h, w, 3), np.uint8)
    cv2.circle(img, (int(cx), int(cy)), int(r), (170, 70, 30), -1)
    d = int(0.16 * r)
    cv2.circle(img, disc_xy, d, (250, 200, 120), -1)
    for k in (-2, -1, 1, 2):                             # vessels leaving the disc vertically
        x = disc_xy[0] + k * d // 3
        cv2.line(img, (x, disc_xy[1] - 2 * d), (x, disc_xy[1] + 2 * d), (100, 30, 20), max(1, d // 8))
    return img


def test_fov_detection_on_clipped_circle():
    # circle clipped at top and bottom, like many cameras (IDRiD)
    img = _fundus(1200, 800, 610, 400, 470, (400, 400))
    fov = detect_fov(img)
    assert fov.cx == pytest.approx(610, abs=4) and fov.cy == pytest.approx(400, abs=4)
    assert fov.radius == pytest.approx(470, abs=4)


@pytest.mark.parametrize("side", ["left", "right"])
def test_disc_side_on_drawn_image(side):
    disc = (300, 420) if side == "left" else (900, 420)
    det = detect_disc_side(_fundus(1200, 800, 600, 400, 420, disc))
    assert det.side == side and det.confidence > 0.5
    assert abs(det.disc_xy[0] - disc[0]) < 25 and abs(det.disc_xy[1] - disc[1]) < 25


@pytest.mark.parametrize("disc", [(300, 420), (900, 380)])
def test_find_disc_centre_diameter_and_side_share_one_detector(disc):
    img = _fundus(1200, 800, 600, 400, 420, disc)
    fov = detect_fov(img)
    est = find_disc(img, fov)
    radius = int(0.16 * 420)                            # as drawn by _fundus
    assert np.hypot(est.xy[0] - disc[0] - 0.5, est.xy[1] - disc[1] - 0.5) < 0.25 * radius
    assert est.diameter == pytest.approx(2 * radius, rel=0.15)
    assert est.margin > 3 and est.edge_fraction > 0.8
    assert detect_disc_side(img, fov).disc_xy == est.xy


def test_find_disc_keeps_the_diameter_inside_the_prior():
    """A huge bright disc (0.4 FOV radii): the diameter is held to 0.22 FOV radii x 2."""
    img = _fundus(1200, 800, 600, 400, 420, (300, 420))
    cv2.circle(img, (300, 420), int(0.4 * 420), (250, 200, 120), -1)
    est = find_disc(img)
    assert est.diameter <= 2 * 0.22 * 420 * 1.01


def test_other_size_maps_fov_to_canonical_and_back():
    img = _fundus(1200, 800, 610, 400, 470, (900, 420))
    frame = CanonicalFrame.from_image(img)
    assert frame.flipped
    np.testing.assert_allclose(frame.to_canonical([[610, 400]]), [[978, 967]], atol=6)
    pts = np.array([[100.0, 50.0], [1199.0, 799.0]])
    np.testing.assert_allclose(frame.to_image(frame.to_canonical(pts)), pts, atol=1e-9)
    can = frame.warp_image(img, scale=0.25)
    assert can.shape == (484, 489, 3)
    back = frame.unwarp_image(frame.warp_image(img), nearest=False)
    inner = np.zeros(img.shape[:2], np.uint8)
    cv2.circle(inner, (610, 400), 440, 1, -1)
    diff = np.abs(back.astype(int) - img.astype(int))[inner.astype(bool)]
    assert np.median(diff) <= 2


def test_undecidable_side_names_the_image():
    img = _fundus(1200, 800, 600, 400, 420, (600, 400))   # disc in the centre
    with pytest.raises(ValueError, match="x.jpg: cannot decide the eye side.*override"):
        CanonicalFrame.from_image(img, name="x.jpg")
    assert CanonicalFrame.from_image(img, disc_side="right").flipped


@pytest.mark.parametrize("orientation, words", [(6, "turned 90 degrees clockwise"),
                                                 (8, "turned 90 degrees counter-clockwise")])
def test_undecidable_side_of_an_exif_turned_photo_names_the_rotation(tmp_path, orientation, words):
    """A left-eye photo whose EXIF tag turns it by 90 degrees: shown that way (as the kit reads it) the
    disc lies below or above the centre, and the refusal names the tag instead of asking for an override."""
    from PIL import Image

    img = _fundus(600, 400, 300, 200, 190, (150, 210))
    plain, tagged = tmp_path / "plain.jpg", tmp_path / "tagged.jpg"
    Image.fromarray(img).save(plain, "JPEG", quality=95)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(img).save(tagged, "JPEG", quality=95, exif=exif.tobytes())
    assert CanonicalFrame.from_image(read_image(plain), name=str(plain)).flipped is False      # left eye as stored
    shown = read_image(tagged)
    assert shown.shape == (600, 400, 3)
    with pytest.raises(ValueError) as info:
        CanonicalFrame.from_image(shown, name=str(tagged))
    msg = str(info.value)
    assert msg.startswith(f"{tagged}: cannot decide the eye side (")
    assert f"the file has EXIF orientation {orientation}: shown {words} (the kit reads photos as a viewer shows " \
           "them, which puts the disc above or below the centre): if the tag is wrong, save the photo without it" in msg
    assert "\n" not in msg


def test_non_gamma_size_needs_fov():
    with pytest.raises(ValueError, match="not a GAMMA size"):
        CanonicalFrame.for_size((1000, 800), False)
    f = CanonicalFrame.for_size((1000, 800), False, FieldOfView(500, 400, 483.5))
    assert f.scale == pytest.approx(2.0)


def test_warp_rejects_wrong_size():
    with pytest.raises(ValueError, match="this frame is for 2992x2000"):
        CanonicalFrame.for_size(GAMMA_WIDE_SIZE, False).warp_image(np.zeros((10, 10, 3), np.uint8))


def test_side_overrides(tmp_path):
    p = tmp_path / "sides.csv"
    p.write_text("data,disc_side\n0001,L\n0002,right\n")
    assert read_side_overrides(p) == {"0001": "left", "0002": "right"}
    p.write_text("data,disc_side\n0001,up\n")
    with pytest.raises(ValueError, match="sides.csv: disc_side for '0001'"):
        read_side_overrides(p)
    p.write_text("id,side\n0001,L\n")
    with pytest.raises(ValueError, match="expected columns data,disc_side"):
        read_side_overrides(p)


def test_disc_side_on_real_idrid_photos(idrid):
    """A sample of real photos; bench/idrid_disc_side.py measures all 103."""
    od = pd.read_csv(idrid / "optic_disc_center_GT.csv", dtype={"data": str}).set_index("data")
    fv = pd.read_csv(idrid / "fovea_GT.csv", dtype={"data": str}).set_index("data")
    for i in ["IDRiD_001", "IDRiD_002", "IDRiD_071", "IDRiD_102"]:   # 102: exudates brighter than the disc
        img = read_image(idrid / "images" / f"{i}.jpg")
        truth = "left" if od.loc[i, "OD_X"] < fv.loc[i, "Fovea_X"] else "right"
        det = detect_disc_side(img)
        assert det.side == truth, i
        frame = CanonicalFrame.from_image(img)
        fovea = frame.to_canonical([[fv.loc[i, "Fovea_X"], fv.loc[i, "Fovea_Y"]]])[0]
        disc = frame.to_canonical([[od.loc[i, "OD_X"], od.loc[i, "OD_Y"]]])[0]
        assert disc[0] < fovea[0], i                    # canonical frame: disc on the left


def test_largest_component_known_answer():
    from gamma_kit.geometry import largest_component

    img = np.zeros((10, 12), bool)
    img[1:3, 1:3] = True              # 4 px
    img[5:9, 6:9] = True              # 12 px: rows 5-8, columns 6-8
    img[0, 11] = img[1, 10] = True    # 2 px, 8-connected diagonally
    part = largest_component(img)
    assert part.area == 12 and part.share == pytest.approx(12 / 18) and part.height == 4
    assert part.centre == pytest.approx((7.5, 7.0))          # columns 6..8 -> 7 + 0.5; rows 5..8 -> 6.5 + 0.5
    assert part.mask.sum() == 12 and part.mask[5:9, 6:9].all()
    assert largest_component(np.zeros((4, 4), bool)) is None
