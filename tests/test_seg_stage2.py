"""Stage 2 reports the discs it does not see (issue 17.4): ``postprocess.disc_doubt`` on known label
maps, and ``predict_folder`` with a photo whose disc is painted out and a photo with no disc at all:
both are named in a line and listed with a reason in ``stage1_report.json``, every mask is still
written, and the photos with a disc raise no doubt."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from gamma_kit.seg.postprocess import MAX_CENTRE_OFFSET, disc_doubt
from gamma_kit.seg.submission import predict_folder
from seg_fixtures import brightness_predictor, draw_fundus


def _disc(size=64, centre=(32, 32), radius=12, cup=5) -> np.ndarray:
    lab = np.full((size, size), 2, np.uint8)
    cv2.circle(lab, centre, radius, 1, -1)
    cv2.circle(lab, centre, cup, 0, -1)
    return lab


@pytest.mark.parametrize("labels,expected,reason", [
    (_disc(), 24.0, ""),
    (_disc(radius=15), None, ""),
    (np.full((64, 64), 2, np.uint8), 24.0, "no disc segmented in the crop"),
    # a filled radius-3 circle is 29 px: 2 sqrt(29 / pi) = 6.1 px across
    (_disc(radius=3, cup=1), 24.0, "tiny disc segmented (6 px across, about 24 px expected)"),
    (_disc(radius=3, cup=1), None, ""),                       # without an expected size, small is allowed
    (_disc(radius=40, cup=10), None, "the segmented disc fills 97% of the crop"),   # all but the corners
    # centroid (54.5, 54.5) in continuous coordinates: 22.5 sqrt(2) / 64 = 0.497 of the side
    (_disc(centre=(54, 54), radius=8, cup=3), 16.0, "the segmented disc lies 0.50 x the crop side from its centre"),
])
def test_disc_doubt_known_answers(labels, expected, reason):
    assert disc_doubt(labels, expected) == reason


def test_disc_doubt_takes_the_largest_disc_and_the_offset_limit():
    lab = _disc(centre=(32, 32), radius=10)
    cv2.circle(lab, (5, 5), 3, 1, -1)                        # a speck in the corner does not count
    assert disc_doubt(lab, 20.0) == ""
    just_inside = round(32 + MAX_CENTRE_OFFSET * 64 / np.sqrt(2)) - 1
    assert disc_doubt(_disc(centre=(just_inside, just_inside), radius=6, cup=2), 12.0) == ""


def _write(path, img):
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])


def test_painted_out_and_missing_discs_are_named_and_still_written(tmp_path):
    rng = np.random.default_rng(4)
    images = tmp_path / "images"
    images.mkdir()
    for k in range(3):
        img, _ = draw_fundus(rng, (240, 160))
        _write(images / f"000{k + 1}.jpg", img)
    img, mask = draw_fundus(rng, (240, 160))
    disc = cv2.dilate((mask < 255).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    img[disc] = (150, 40, 20)                                   # the disc painted over with the fundus colour
    _write(images / "painted.jpg", img)
    plain = np.zeros((160, 240, 3), np.uint8)
    cv2.circle(plain, (120, 80), 76, (150, 40, 20), -1)         # a field without any disc
    _write(images / "nodisc.jpg", plain)
    lines = []
    run = predict_folder(brightness_predictor(), images, tmp_path / "out", progress=False, log=lines.append)
    assert sorted(run.ids) == ["0001", "0002", "0003", "nodisc", "painted"]
    assert len(list(run.pred_dir.glob("*.bmp"))) == 5
    report = json.loads(run.stage1_report.read_text())
    doubted = {d["id"]: d["note"] for d in report["stage2"]}
    assert doubted == {"nodisc": "no disc segmented in the crop", "painted": "no disc segmented in the crop"}
    assert doubted == {d["id"]: d["note"] for d in run.stage2}
    for name in ("painted.jpg", "nodisc.jpg"):
        assert (f"stage 2 doubts the disc of {name}: no disc segmented in the crop; its mask is written anyway"
                in lines)
    assert lines[-1] == (f"stage 2 doubts the disc of 2 of 5 photo(s); listed under \"stage2\" in "
                         f"{run.stage1_report}")
    for i in ("0001", "0002", "0003"):                          # a disc where stage 1 put the crop: no doubt
        m = cv2.imread(str(run.pred_dir / f"{i}.bmp"), cv2.IMREAD_GRAYSCALE)
        assert (m < 255).sum() > 200
