"""ROI placement (gamma_kit.fovea.roi): the fixed window of the original, or anchored on the
detected disc with an offset learned from training; known answers through the whole chain."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import yaml

import gamma_kit  # noqa: F401
from gamma_kit.fovea.codec import HeatmapCodec
from gamma_kit.fovea.config import load_config
from gamma_kit.fovea.dataset import CanonicalImage, FoveaItem
from gamma_kit.fovea.demo import CPU_CONFIG
from gamma_kit.fovea.inference import locate, roi_origins
from gamma_kit.fovea.roi import RoiPolicy, fit_disc_offset, policy_of_models
from gamma_kit.geometry import CanonicalFrame

from fovea_fixtures import tiny_synth

CODEC = HeatmapCodec(scale=0.25, radius=80, kernel_size=80, decoder="dark_kernel_subpixel")


def _canon(disc=None, fovea=None, i="x") -> CanonicalImage:
    """A black 1/4-scale canonical image (GAMMA square camera, left eye) with a bright dot at
    ``fovea`` (full-scale canonical)."""
    frame = CanonicalFrame((1956, 1934), 1.0, (0.0, 0.0), False)
    img = np.zeros((484, 489, 3), np.uint8)
    if fovea is not None:
        x, y = (np.asarray(fovea) * 0.25).astype(int)   # canonical multiples of 4: exact pixels
        img[y, x] = 255
    return CanonicalImage(i, Path(f"{i}.jpg"), (1956, 1934), frame, 0.25, img, disc, 0.6)


class DotModel:
    """Stands in for a network: the heatmap is the codec's target at the brightest pixel of the crop."""

    def predict_heatmaps(self, crops, batch_size=8, flip=False):
        out = []
        for c in crops:
            y, x = np.unravel_index(np.argmax(c.sum(axis=0)), c.shape[1:])
            out.append(CODEC.encode(np.array([x, y], float)) if c.max() > 0 else np.zeros(c.shape[1:], np.float32))
        return np.stack(out).astype(np.float32)


def test_fixed_policy_is_the_original_window():
    canons = [_canon((400.0, 950.0)), _canon(None)]
    origins, centres, anchored = roi_origins(canons, CODEC, RoiPolicy())
    assert origins.tolist() == [[209, 210], [209, 210]] == [list(CODEC.roi_origin_px)] * 2
    assert not anchored.any()
    # no policy at all is the same window
    assert roi_origins(canons, CODEC, None)[0].tolist() == origins.tolist()


def test_disc_policy_centres_and_falls_back():
    pol = RoiPolicy("disc", (720.0, 90.0), (360.0, 270.0))
    canons = [_canon((400.0, 950.0)), _canon(None), _canon((1500.0, 950.0))]
    centres, ok = pol.centres(canons, CODEC.roi_centre)
    assert centres[0].tolist() == [1120.0, 1040.0] and ok.tolist() == [True, False, False]
    # no disc, and a disc that would put the window 1080 px from the fixed centre: the fixed window
    assert centres[1].tolist() == centres[2].tolist() == [1140.0, 1040.0]
    origins, _, _ = roi_origins(canons, CODEC, pol)
    assert origins[0].tolist() == [round((1120 - 304) / 4), round((1040 - 200) / 4)]


def test_disc_policy_needs_an_offset_and_valid_fields():
    with pytest.raises(ValueError, match="disc_offset"):
        RoiPolicy("disc").centres([_canon((400.0, 950.0))], CODEC.roi_centre)
    with pytest.raises(ValueError, match="roi.anchor"):
        RoiPolicy("fovea")
    with pytest.raises(ValueError, match="max_shift"):
        RoiPolicy("disc", (1.0, 2.0), (0.0, 10.0))
    with pytest.raises(ValueError, match="roi.anchor"):
        load_config(CPU_CONFIG, ["roi.anchor=centre"])


def test_fit_disc_offset_is_the_median_and_skips_missing_discs():
    items = [FoveaItem(_canon(d), np.array(f, float)) for d, f in
             [((400.0, 950.0), (1100.0, 1040.0)), ((380.0, 960.0), (1110.0, 1060.0)),
              ((420.0, 900.0), (1200.0, 1000.0)), (None, (0.0, 0.0))]]
    assert fit_disc_offset(items) == (730.0, 100.0)   # medians of (700, 730, 780) and (90, 100, 100)
    with pytest.raises(ValueError, match="no training image"):
        fit_disc_offset(items[3:])


def test_ensemble_policy_averages_offsets_and_refuses_mixed_anchors():
    a = {"roi": {"anchor": "disc", "disc_offset": [700, 90], "max_shift": [360, 270]}}
    b = {"roi": {"anchor": "disc", "disc_offset": [740, 110], "max_shift": [360, 270]}}
    assert policy_of_models([a, b]).disc_offset == (720.0, 100.0)
    assert policy_of_models([{}]).anchor == "fixed"        # a config.yml from before the roi section
    with pytest.raises(ValueError, match="mixes ROI anchors"):
        policy_of_models([a, {"roi": {"anchor": "fixed"}}])


def test_chain_finds_a_fovea_outside_the_fixed_window_only_when_anchored():
    # fovea at x = 1500: 56 px right of the fixed window's edge (x < 1444); disc 720 px to its left
    fovea = (1500.0, 1100.0)
    canons = [_canon((780.0, 1010.0), fovea)]
    fixed = locate([DotModel()], canons, [CODEC], roi=None)
    anchored = locate([DotModel()], canons, [CODEC], roi=RoiPolicy("disc", (720.0, 90.0)))
    assert anchored.anchored.tolist() == [True]
    np.testing.assert_allclose(anchored.image_xy[0], fovea, atol=0.5)
    assert np.hypot(*(fixed.image_xy[0] - fovea)) > 50                     # the fixed window cannot see it
    # inside the fixed window both agree
    inside = [_canon((400.0, 950.0), (1152.0, 1048.0))]
    a = locate([DotModel()], inside, [CODEC], roi=None).image_xy
    b = locate([DotModel()], inside, [CODEC], roi=RoiPolicy("disc", (720.0, 90.0))).image_xy
    np.testing.assert_allclose(a, b, atol=0.5)
    np.testing.assert_allclose(a[0], (1152.0, 1048.0), atol=0.5)


def test_codec_origins_round_trip():
    centres = np.array([[1140.0, 1040.0], [1003.7, 1211.2]])
    o = CODEC.origins_px(centres)
    assert o[0].tolist() == list(CODEC.roi_origin_px)
    pts = np.array([[1010.0, 1200.0], [990.5, 1190.25]])
    np.testing.assert_allclose(CODEC.heatmap_to_canonical(CODEC.canonical_to_heatmap(pts, o), o), pts)
    assert CODEC.origins_px(None, 3).tolist() == [list(CODEC.roi_origin_px)] * 3


@pytest.mark.slow
def test_training_learns_the_offset_and_predict_uses_it(tmp_path):
    from gamma_kit.fovea.predict import predict
    from gamma_kit.fovea.train import load_training_data, train_fold

    data = tiny_synth(tmp_path / "data", 6, 2, seed=3)
    cfg = load_config(CPU_CONFIG, ["model.width=4", "train.epochs=1", "train.batch_size=4", "train.device=cpu",
                                   "roi.anchor=disc"])
    train_fold(cfg, 1, load_training_data(data), tmp_path / "run", progress=False)
    saved = yaml.safe_load((tmp_path / "run" / "fold1" / "config.yml").read_text())["roi"]
    assert saved["anchor"] == "disc" and len(saved["disc_offset"]) == 2
    # on the synthetic photos the fovea lies about 2.5 disc diameters temporal to the disc
    assert 400 < saved["disc_offset"][0] < 1000 and abs(saved["disc_offset"][1]) < 300
    from gamma_kit.data import load_fovea_split

    out = predict([tmp_path / "run" / "fold1"], load_fovea_split(data, "testing").images, tmp_path / "p.csv",
                  device="cpu", progress=False)
    assert out["roi_anchor"] == "disc" and isinstance(out["roi_fallback"], list)
    assert len(out["predictions"]) == 2


def test_side_override_still_detects_the_disc(tmp_path):
    from gamma_kit.fovea.dataset import CanonicalCache
    from gamma_kit.synth import generate

    generate(tmp_path / "d", 1, 0, seed=2, sizes=[(489, 484)], progress=False)
    img = next((tmp_path / "d").rglob("*.jpg"))
    auto = CanonicalCache(0.25).get("a", img)
    side = "right" if auto.frame.flipped else "left"
    forced = CanonicalCache(0.25, side_overrides={"a": side}).get("a", img)
    assert auto.disc is not None and forced.disc is not None
    np.testing.assert_allclose(auto.disc, forced.disc)
    # and the disk cache keeps it
    CanonicalCache(0.25, tmp_path / "c").get("a", img)
    again = CanonicalCache(0.25, tmp_path / "c").get("a", img)
    np.testing.assert_allclose(again.disc, auto.disc)
    assert again.disc_confidence == pytest.approx(auto.disc_confidence)


@pytest.mark.slow
def test_average_last_writes_the_mean_of_the_last_epochs(tmp_path):
    import paddle

    from gamma_kit.fovea.predict import predict
    from gamma_kit.fovea.train import load_training_data, train_fold

    data = tiny_synth(tmp_path / "data", 6, 2, seed=4)
    cfg = load_config(CPU_CONFIG, ["model.width=4", "train.epochs=3", "train.batch_size=4", "train.device=cpu",
                                   "train.average_last=2"])
    m = train_fold(cfg, 1, load_training_data(data), tmp_path / "run", progress=False)
    d = tmp_path / "run" / "fold1"
    assert sorted(p.name for p in (d / "snapshots").iterdir()) == ["epoch002.pdparams", "epoch003.pdparams"]
    a, b, avg = (paddle.load(str(p)) for p in (d / "snapshots" / "epoch002.pdparams",
                                                 d / "snapshots" / "epoch003.pdparams", d / "averaged.pdparams"))
    k = next(k for k in avg if k.endswith("weight"))
    np.testing.assert_allclose(avg[k].numpy(), (a[k].numpy() + b[k].numpy()) / 2, rtol=1e-6, atol=1e-7)
    assert m["averaged_aed"] is not None and np.isfinite(m["averaged_aed"])
    from gamma_kit.data import load_fovea_split

    out = predict([tmp_path / "run"], load_fovea_split(data, "testing").images, tmp_path / "p.csv", device="cpu",
                  progress=False, which="averaged")
    assert out["n_models"] == 1
    with pytest.raises(ValueError, match="average_last"):
        load_config(CPU_CONFIG, ["train.average_last=-1"])


def test_guard_replaces_far_and_empty_positions_on_anchored_images_only():
    pol = RoiPolicy("disc", (720.0, 90.0), max_from_prior=250.0)
    centres = np.array([[1100.0, 1000.0]] * 4)
    xy = np.array([[1150.0, 1000.0], [1400.0, 1000.0], [1120.0, 1010.0], [1500.0, 1000.0]])
    anchored = np.array([True, True, True, False])
    empty = np.array([False, False, True, False])
    out, guarded = pol.guard(xy, centres, anchored, empty)
    # 50 px: kept; 300 px: the centre; empty: the centre; not anchored (fixed window): kept even at 400 px
    assert guarded.tolist() == [False, True, True, False]
    np.testing.assert_allclose(out, [[1150, 1000], [1100, 1000], [1100, 1000], [1500, 1000]])
    off, _ = RoiPolicy("disc", (720.0, 90.0)).guard(xy, centres, anchored, empty)   # no radius: off
    np.testing.assert_allclose(off, xy)
    with pytest.raises(ValueError, match="max_from_prior"):
        RoiPolicy("disc", (1.0, 1.0), max_from_prior=0.0)


def test_chain_guards_a_far_peak_with_the_disc_prior():
    # the bright dot (what the stand-in model finds) lies 256 px right of where the disc says the fovea is
    canons = [_canon((400.0, 950.0), (1376.0, 1040.0))]
    pol = RoiPolicy("disc", (720.0, 90.0), max_from_prior=250.0)
    found = locate([DotModel()], canons, [CODEC], roi=pol)
    assert found.guarded.tolist() == [True]
    np.testing.assert_allclose(found.canonical_xy[0], (1120.0, 1040.0))
    np.testing.assert_allclose(found.image_xy[0], (1120.0, 1040.0))
    loose = locate([DotModel()], canons, [CODEC], roi=dataclasses.replace(pol, max_from_prior=None))
    np.testing.assert_allclose(loose.image_xy[0], (1376.0, 1040.0), atol=0.5)


def test_auto_checkpoint_prefers_averaged_weights(tmp_path):
    from gamma_kit.fovea.checkpoints import find_checkpoints

    for k, files in ((1, ("best", "averaged")), (2, ("best",))):
        d = tmp_path / "run" / f"fold{k}"
        d.mkdir(parents=True)
        for f in files:
            (d / f"{f}.pdparams").write_bytes(b"x")
    run = tmp_path / "run"
    assert [p.relative_to(run).as_posix() for p in find_checkpoints([run])] == \
        ["fold1/averaged.pdparams", "fold2/best.pdparams"]
    assert [p.name for p in find_checkpoints([run], "best")] == ["best.pdparams"] * 2
    with pytest.raises(FileNotFoundError, match="averaged.pdparams"):
        find_checkpoints([run / "fold2"], "averaged")
    with pytest.raises(ValueError, match="which"):
        find_checkpoints([run], "newest")
