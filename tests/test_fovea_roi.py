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
from gamma_kit.fovea.roi import RoiPolicy, fit_disc_prior, policy_of_models
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
    origins, centres, _, anchored = roi_origins(canons, CODEC, RoiPolicy())
    assert origins.tolist() == [[209, 210], [209, 210]] == [list(CODEC.roi_origin_px)] * 2
    assert not anchored.any()
    # no policy at all is the same window
    assert roi_origins(canons, CODEC, None)[0].tolist() == origins.tolist()


def test_disc_policy_centres_and_falls_back():
    pol = RoiPolicy("disc", (720.0, 90.0), (360.0, 270.0))
    canons = [_canon((400.0, 950.0)), _canon(None), _canon((1500.0, 950.0))]
    centres, _, ok = pol.place(canons, CODEC.roi_centre)
    assert centres[0].tolist() == [1120.0, 1040.0] and ok.tolist() == [True, False, False]
    # no disc, and a disc that would put the window 1080 px from the fixed centre: the fixed window
    assert centres[1].tolist() == centres[2].tolist() == [1140.0, 1040.0]
    origins, _, _, _ = roi_origins(canons, CODEC, pol)
    assert origins[0].tolist() == [round((1120 - 304) / 4), round((1040 - 200) / 4)]


def test_disc_policy_needs_an_offset_and_valid_fields():
    with pytest.raises(ValueError, match="disc_offset"):
        RoiPolicy("disc").place([_canon((400.0, 950.0))], CODEC.roi_centre)
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
    assert fit_disc_prior(items)[0] == (730.0, 100.0)   # medians of (700, 730, 780) and (90, 100, 100)
    with pytest.raises(ValueError, match="no training image"):
        fit_disc_prior(items[3:])


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


# ---- issue 19.3: the auto window, learned spread and guard

AUTO = RoiPolicy("auto", (720.0, 90.0), prior_spread=(50.0, 40.0), margin_sigmas=2.0, reach=(240.0, 180.0))
LOOSE = dataclasses.replace(AUTO, prior_spread=(88.0, 40.0))      # a camera whose disc predicts loosely


def test_auto_keeps_the_fixed_window_until_the_estimate_leaves_its_reach():
    # margin = reach - 2 x spread = (140, 100); fixed centre (1140, 1040)
    canons = [_canon((400.0, 950.0)),      # estimate (1120, 1040): in reach -> the fixed window
              _canon((600.0, 1100.0)),     # estimate (1320, 1190): 180 / 150 px off -> moved by (40, 50)
              _canon((150.0, 830.0)),      # estimate (870, 920): -270 / -120 px -> moved by (-130, -20)
              _canon(None)]                # no disc: the fixed window, no prior
    centres, priors, anchored = AUTO.place(canons, CODEC.roi_centre)
    np.testing.assert_allclose(centres, [[1140, 1040], [1180, 1090], [1010, 1020], [1140, 1040]])
    np.testing.assert_allclose(priors[:3], [[1120, 1040], [1320, 1190], [870, 920]])
    assert np.isnan(priors[3]).all() and anchored.tolist() == [True, True, True, False]
    # the moved windows keep the estimate exactly at the margin from their centre
    np.testing.assert_allclose(np.abs(priors[1:3] - centres[1:3]), [[140, 100], [140, 100]])
    # margin 0 spreads: the window moves only once the estimate is beyond the training shift itself
    wide = dataclasses.replace(AUTO, margin_sigmas=0.0)
    np.testing.assert_allclose(wide.place(canons[:3], CODEC.roi_centre)[0],
                               [[1140, 1040], [1140, 1040], [1110, 1040]])
    with pytest.raises(ValueError, match="prior_spread"):
        RoiPolicy("auto", (720.0, 90.0)).place(canons, CODEC.roi_centre)


def test_the_guard_measures_from_the_estimate_not_the_window():
    # the auto window stays fixed at (1140, 1040); the estimate is (1120, 1040); the radius 3 x 88 px
    pol = dataclasses.replace(LOOSE, max_from_prior="auto")
    assert pol.guard_radius == pytest.approx(264.0)
    assert dataclasses.replace(AUTO, max_from_prior="auto").guard_radius == 250.0     # 3 x 50, at least 250
    canons = [_canon((400.0, 950.0), (1392.0, 1040.0))]      # the dot 272 px right of the estimate
    found = locate([DotModel()], canons, [CODEC], roi=pol)
    assert found.guarded.tolist() == [True]
    np.testing.assert_allclose(found.canonical_xy[0], (1120.0, 1040.0))
    np.testing.assert_allclose(found.prior[0], (1120.0, 1040.0))
    near = locate([DotModel()], [_canon((400.0, 950.0), (1376.0, 1040.0))], [CODEC], roi=pol)   # 256 px: kept
    assert near.guarded.tolist() == [False]
    np.testing.assert_allclose(near.canonical_xy[0], (1376.0, 1040.0), atol=0.5)
    with pytest.raises(ValueError, match="prior_spread"):
        RoiPolicy("disc", (720.0, 90.0), max_from_prior="auto").guard_radius


def test_fit_disc_prior_learns_the_offset_and_a_robust_spread():
    discs = [(400.0, 950.0), (380.0, 960.0), (420.0, 900.0), (400.0, 950.0), (400.0, 950.0)]
    foveae = [(1100.0, 1040.0), (1110.0, 1060.0), (1200.0, 1000.0), (1130.0, 1050.0), (1900.0, 1500.0)]
    items = [FoveaItem(_canon(d), np.array(f, float)) for d, f in zip(discs, foveae)]
    offset, spread = fit_disc_prior(items)
    # fovea - disc: x (700, 730, 780, 730, 1500), y (90, 100, 100, 100, 550): medians 730, 100
    assert offset == (730.0, 100.0)
    # |d - median|: x (30, 0, 50, 0, 770) -> median 30; y (10, 0, 0, 0, 450) -> 0; times 1.4826
    np.testing.assert_allclose(spread, (1.4826 * 30, 0.0))


def test_auto_policy_config_round_trip_and_ensemble():
    cfg = load_config(CPU_CONFIG, ["data.shift=[200,150]"])      # the CPU config: auto, margin 1, guard auto
    pol = RoiPolicy.from_config(cfg)
    assert (pol.anchor, pol.max_from_prior, pol.reach, pol.margin_sigmas) == ("auto", "auto", (200.0, 150.0), 1.0)
    assert pol.needs_fit
    learned = dataclasses.replace(pol, disc_offset=(700.0, 90.0), prior_spread=(40.0, 60.0))
    assert not learned.needs_fit
    again = RoiPolicy.from_config({**cfg, "roi": learned.as_config()})
    assert again == learned
    other = dataclasses.replace(learned, disc_offset=(740.0, 110.0), prior_spread=(60.0, 40.0))
    both = policy_of_models([{**cfg, "roi": learned.as_config()}, {**cfg, "roi": other.as_config()}])
    assert both.disc_offset == (720.0, 100.0) and both.prior_spread == (50.0, 50.0) and both.reach == (200.0, 150.0)
    for bad, match in ((["roi.max_from_prior=far"], "max_from_prior"), (["roi.margin_sigmas=-1"], "margin_sigmas"),
                       (["roi.prior_spread=[1]"], "prior_spread")):
        with pytest.raises(ValueError, match=match):
            RoiPolicy.from_config(load_config(CPU_CONFIG, bad))
