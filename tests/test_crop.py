"""DiscCrop: points and pixels round trip, windows crossing the photo border, GAMMA and other sizes."""
from __future__ import annotations

import numpy as np
import pytest

from gamma_kit.crop import DiscCrop, disc_box_from_mask, nearest_index

SIZES = [(2992, 2000), (1956, 1934), (4288, 2848), (97, 61)]


@pytest.mark.parametrize("size", SIZES)
def test_points_round_trip_and_centre(size):
    w, h = size
    c = DiscCrop.around((0.3 * w, 0.45 * h), size, size=160, diameter=0.1 * h, factor=2.0)
    assert c.side == max(8, round(0.2 * h))
    pts = np.array([[0, 0], [w, h], [0.3 * w, 0.45 * h], [-5.5, 7.25]])
    np.testing.assert_allclose(c.to_image(c.to_crop(pts)), pts, atol=1e-9)
    # the window centre lands in the crop centre (within half a source pixel of the asked centre)
    assert abs(c.centre[0] - 0.3 * w) <= 0.5 and abs(c.centre[1] - 0.45 * h) <= 0.5
    np.testing.assert_allclose(c.to_crop(np.array(c.centre)), [[80, 80]])
    # known answer: the window's corners go to the crop's corners
    np.testing.assert_allclose(c.to_crop(np.array([[c.x0, c.y0], [c.x0 + c.side, c.y0 + c.side]])),
                               [[0, 0], [160, 160]])


@pytest.mark.parametrize("size", SIZES)
def test_native_crop_then_paste_is_identity_inside_window(size):
    w, h = size
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (h, w), dtype=np.uint8)
    side = max(8, min(w, h) // 3)
    for centre in [(w / 2, h / 2), (2, 3), (w - 1, h - 2)]:          # inside and crossing the border
        c = DiscCrop.around(centre, size, size=side, side=side)
        crop = c.crop_mask(labels, fill=2)
        back = c.paste_labels(crop, background=2)
        x0, y0, x1, y1 = c.box
        inside = np.zeros((h, w), bool)
        inside[max(y0, 0):max(0, min(y1, h)), max(x0, 0):max(0, min(x1, w))] = True
        assert np.array_equal(back[inside], labels[inside])
        assert (back[~inside] == 2).all()


def test_outside_photo_fill_values():
    size = (40, 30)
    img = np.full((30, 40, 3), 200, np.uint8)
    mask = np.zeros((30, 40), np.uint8)
    c = DiscCrop.around((0, 0), size, size=20, side=20)   # the top-left quarter of the window is inside
    assert c.box == (-10, -10, 10, 10) and c.inside_photo() == pytest.approx(0.25)
    ci, cm = c.crop_image(img), c.crop_mask(mask)
    assert (ci[:10, :10] == 0).all() and (ci[10:, 10:] == 200).all()
    assert (cm[:10] == 255).all() and (cm[:, :10] == 255).all() and (cm[10:, 10:] == 0).all()
    far = DiscCrop.around((-100, -100), size, size=8, side=20)
    assert (far.crop_mask(mask) == 255).all() and (far.paste_labels(np.zeros((8, 8), np.uint8)) == 2).all()


@pytest.mark.parametrize("size", [(2992, 2000), (1956, 1934)])
def test_downscaled_paste_is_nearest_and_exact(size):
    """Crop at a 4x smaller size: each crop pixel is the source pixel at its block centre, and pasting
    fills each 4x4 block with that crop pixel's value: only values present, no blending."""
    w, h = size
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, (h, w), dtype=np.uint8)
    c = DiscCrop.around((0.25 * w, 0.5 * h), size, size=160, side=640)
    crop = c.crop_mask(labels, fill=2)
    assert crop.shape == (160, 160)
    assert np.array_equal(crop, labels[c.y0 + 2:c.y0 + 640:4, c.x0 + 2:c.x0 + 640:4])
    back = c.paste_labels(crop)
    block = back[c.y0:c.y0 + 640, c.x0:c.x0 + 640].reshape(160, 4, 160, 4)
    assert np.array_equal(block, np.broadcast_to(crop[:, None, :, None], block.shape))
    # crop of the pasted map gives the crop back exactly
    assert np.array_equal(c.crop_mask(back, fill=2), crop)


def test_paste_of_a_disc_matches_the_source_disc_geometry():
    """A disc drawn in a full-size label map, cropped to 160 px and pasted back, keeps its area
    within the quantisation of a 4x4 block around its outline."""
    import cv2

    w, h = 2992, 2000
    src = np.full((h, w), 2, np.uint8)
    cv2.circle(src, (700, 1000), 160, 1, -1)
    c = DiscCrop.around((700, 1000), (w, h), size=160, diameter=320, factor=2.0)
    back = c.paste_labels(c.crop_mask(src, fill=2))
    a0, a1 = (src == 1).sum(), (back == 1).sum()
    assert abs(a1 - a0) < 2 * np.pi * 160 * 4
    assert set(np.unique(back)) == {1, 2}


def test_image_crop_resamples_by_area():
    img = np.zeros((8, 8), np.uint8)
    img[:, 4:] = 200
    c = DiscCrop(image_size=(8, 8), x0=0, y0=0, side=8, size=2)
    assert c.crop_image(img).tolist() == [[0, 200], [0, 200]]


def test_bad_inputs_and_dict_round_trip():
    with pytest.raises(ValueError, match="side"):
        DiscCrop.around((5, 5), (20, 20), size=8)
    c = DiscCrop.around((5, 5), (20, 20), size=8, side=10)
    assert DiscCrop.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="photo"):
        c.crop_image(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="expected 8x8"):
        c.paste_labels(np.zeros((7, 8), np.uint8))


def test_nearest_index_and_disc_box():
    assert nearest_index(2, 8).tolist() == [2, 6]
    assert nearest_index(8, 2).tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    m = np.full((20, 30), 255, np.uint8)
    m[4:10, 6:16] = 128
    m[6:8, 9:12] = 0
    assert disc_box_from_mask(m) == ((11.0, 7.0), 10.0)
    assert disc_box_from_mask(np.full((5, 5), 255, np.uint8)) is None
