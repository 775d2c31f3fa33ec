"""Stage 2 reports the discs it does not see (issue 17.4) and tries stage 1's other candidates (issue
19.1): ``disc_check.disc_doubt`` on known label maps; ``predict_folder`` with a photo whose disc is
painted out and a photo with no disc at all: both are named in a line and listed with a reason in
``stage1_report.json``, every mask is still written, and the photos with a disc raise no doubt; a
doubted first crop replaced by the candidate that holds the disc, a sure one left alone.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from gamma_kit.seg.disc_check import MAX_CENTRE_OFFSET, disc_doubt
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


# ---------------------------------------------------------------- issue 19.1: stage 1's other candidates
def _photo_and_disc(seed: int = 2):
    """A tiny drawn photo, its disc centre (x, y) and diameter in px."""
    img, mask = draw_fundus(np.random.default_rng(seed), (240, 160))
    ys, xs = np.nonzero(mask < 255)
    return img, (xs.mean() + 0.5, ys.mean() + 0.5), float(xs.max() - xs.min() + 1)


def _stage1_says(monkeypatch, xy, diameter, alternatives, unsure=False):
    import gamma_kit.seg.predictor as predictor
    from gamma_kit.disc import DiscLocation

    loc = DiscLocation(xy, diameter, 0.9, "classical", unsure, "", tuple(alternatives))
    monkeypatch.setattr(predictor, "locate_disc", lambda image, model=None, name="image": loc)


def _counting(core):
    calls = []
    real = core._forward
    core._forward = lambda x: calls.append(len(x)) or real(x)
    return calls


def _disc_centre(labels):
    ys, xs = np.nonzero(labels <= 1)
    return xs.mean() + 0.5, ys.mean() + 0.5


def test_a_doubted_crop_is_replaced_by_the_candidate_that_holds_the_disc(monkeypatch):
    img, disc, diameter = _photo_and_disc()
    wrong = (disc[0] + 70 if disc[0] < 120 else disc[0] - 70, disc[1])          # plain retina, no disc
    _stage1_says(monkeypatch, wrong, diameter, [(30.0, 30.0), disc])
    photo = brightness_predictor().predict_photo(img, name="p.jpg")
    assert photo.doubt == "" and photo.rescue.startswith(
        f"stage 1's disc at ({wrong[0]:.0f}, {wrong[1]:.0f}) gave no disc segmented in the crop; kept the crop at "
        f"({disc[0]:.0f}, {disc[1]:.0f}) (disc ")
    assert np.hypot(*np.subtract(_disc_centre(photo.labels), disc)) < 0.25 * diameter
    kept = brightness_predictor()
    kept.rescue = False                                                          # seg predict --no-rescue
    first = kept.predict_photo(img, name="p.jpg")
    assert first.rescue == "" and first.doubt == "no disc segmented in the crop" and (first.labels == 2).all()


def test_a_crop_that_looks_like_a_disc_is_kept_even_where_stage_1_was_unsure(monkeypatch):
    img, disc, diameter = _photo_and_disc()
    elsewhere = [(disc[0] + 70 if disc[0] < 120 else disc[0] - 70, disc[1]), (30.0, 30.0)]
    core = brightness_predictor()
    calls = _counting(core)
    for unsure in (False, True):
        _stage1_says(monkeypatch, disc, diameter, elsewhere, unsure=unsure)
        calls.clear()
        photo = core.predict_photo(img)
        assert calls == [1] and photo.rescue == "" and photo.doubt == ""        # one crop, nothing else tried


def test_a_doubted_crop_stays_when_no_candidate_looks_like_a_disc(monkeypatch):
    img, disc, diameter = _photo_and_disc()
    wrong = (disc[0] + 70 if disc[0] < 120 else disc[0] - 70, disc[1])
    _stage1_says(monkeypatch, wrong, diameter, [(30.0, 30.0), (200.0, 130.0)])
    core = brightness_predictor()
    calls = _counting(core)
    photo = core.predict_photo(img)
    assert calls == [1, 1, 1] and photo.rescue == "" and photo.doubt == "no disc segmented in the crop"


def test_a_disc_off_the_crop_centre_is_recentred_and_one_filling_it_stays(monkeypatch):
    img, disc, diameter = _photo_and_disc()
    off = (disc[0] + 0.75 * diameter, disc[1])                  # the disc still in the window, near its edge
    _stage1_says(monkeypatch, off, diameter, [])
    core = brightness_predictor()
    calls = _counting(core)
    photo = core.predict_photo(img)
    assert calls == [1, 1] and "the crop side from its centre; kept the crop at" in photo.rescue
    assert photo.doubt == "" and np.hypot(*np.subtract(_disc_centre(photo.labels), disc)) < 0.25 * diameter
    _stage1_says(monkeypatch, disc, diameter / 3, [(30.0, 30.0)])   # a window a third too small: the disc fills it
    calls.clear()
    photo = core.predict_photo(img)
    assert calls == [1] and photo.rescue == "" and photo.doubt.startswith("the segmented disc fills")


def test_predict_folder_lists_the_rescued_photos(monkeypatch, tmp_path):
    img, disc, diameter = _photo_and_disc()
    (tmp_path / "images").mkdir()
    _write(tmp_path / "images" / "0001.jpg", img)
    wrong = (disc[0] + 70 if disc[0] < 120 else disc[0] - 70, disc[1])
    _stage1_says(monkeypatch, wrong, diameter, [disc])
    lines = []
    run = predict_folder(brightness_predictor(), tmp_path / "images", tmp_path / "out", progress=False,
                         log=lines.append)
    report = json.loads(run.stage1_report.read_text())
    assert [r["id"] for r in report["rescued"]] == ["0001"] and report["stage2"] == []
    assert any(ln.startswith("stage 2 on 0001.jpg: stage 1's disc at ") for ln in lines)
    assert lines[-1].startswith("stage 2 kept another of stage 1's candidates on 1 of 1 photo(s)")


# ---------------------------------------------------------------- issue 19.4-19.5: seg_report.csv
def test_seg_report_flags_fire_on_the_photos_built_for_them_and_stay_quiet_on_clean_ones(monkeypatch, tmp_path):
    import pandas as pd

    import gamma_kit.seg.predictor as predictor
    from gamma_kit.disc import DiscLocation
    from gamma_kit.metrics import vcdr

    rng = np.random.default_rng(8)
    photos, says = {}, {}
    clean, mask = draw_fundus(rng, (240, 160))
    ys, xs = np.nonzero(mask < 255)
    disc, d = (xs.mean() + 0.5, ys.mean() + 0.5), float(xs.max() - xs.min() + 1)
    away = (disc[0] + 70 if disc[0] < 120 else disc[0] - 70, disc[1])
    photos.update(clean=clean, unsure=clean, rescued=clean, window=clean, doubted=clean, nodiscfound=clean)
    says.update(clean=DiscLocation(disc, d, 0.9, "classical", False),
                unsure=DiscLocation(disc, d, 0.1, "classical", True, "no clear optic disc"),
                rescued=DiscLocation(away, d, 0.9, "classical", False, "", (disc,)),
                window=DiscLocation(disc, 4 * d, 0.9, "classical", False),            # window over 1.5x the photo
                doubted=DiscLocation(away, d, 0.9, "classical", False),
                nodiscfound=DiscLocation((120.0, 80.0), d, 0.0, "image-centre", True, "no optic disc found"))
    nocup = clean.copy()
    nocup[mask == 0] = (235, 160, 90)                                             # the cup painted as rim
    photos["nocup"], says["nocup"] = nocup, says["clean"]
    noise = np.random.default_rng(0).integers(0, 256, (160, 240, 3), dtype=np.uint8)
    photos["noise"], says["noise"] = noise, says["clean"]
    (tmp_path / "images").mkdir()
    for name, img in photos.items():
        _write(tmp_path / "images" / f"{name}.png", img)                          # PNG: no JPEG ringing
    monkeypatch.setattr(predictor, "locate_disc", lambda image, model=None, name="image": says[Path(name).stem])
    run = predict_folder(brightness_predictor(), tmp_path / "images", tmp_path / "out", progress=False,
                         log=lambda *_: None, review_dir=tmp_path / "out" / "review")
    table = pd.read_csv(tmp_path / "out" / "seg_report.csv", dtype={"id": str}, keep_default_na=False).set_index("id")
    assert list(table.columns) == ["disc_area_px", "cup_area_px", "vcdr", "stage1_source", "stage1_confidence",
                                   "stage2", "flags"] and sorted(table.index) == sorted(run.ids)
    flags = table["flags"].to_dict()
    # a window 4x too wide also shrinks the disc below what stage 1 said; at the image centre the disc lies
    # off the crop's centre, and the crop re-centred on it is kept
    assert flags == {"clean": "", "unsure": "stage1_unsure", "rescued": "rescued", "window": "window stage2_doubt",
                     "doubted": "stage2_doubt no_disc", "nodiscfound": "no_disc_found rescued", "nocup": "no_cup",
                     "noise": "not_fundus" + flags["noise"][len("not_fundus"):]}
    written = cv2.imread(str(run.pred_dir / "clean.bmp"), cv2.IMREAD_GRAYSCALE)
    assert table.loc["clean", "vcdr"] == pytest.approx(vcdr(written), abs=1e-4)
    assert 0.3 < table.loc["clean", "vcdr"] < 0.8
    assert table.loc["clean", "disc_area_px"] == (written < 255).sum() and table.loc["clean", "stage2"] == "ok"
    assert table.loc["doubted", "stage2"] == "no disc segmented in the crop"
    assert run.report == tmp_path / "out" / "seg_report.csv" and run.flagged == 7
    assert run.review == [tmp_path / "out" / "review" / "review_001.png"]
