"""The one inference chain (gamma_kit.fovea.inference) gives the positions the three hand-built
chains gave before it (train._evaluate, predict.predict, bench_models.kit_one: copied below as
the oracle, from commit 0096273), on tiny synthetic data with tiny random models; checkpoint
faults and predict's output safety."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import gamma_kit  # noqa: F401
from gamma_kit.data import load_fovea_split, read_fovea_gt
from gamma_kit.fovea.codec import ORIGINAL_EMPTY_FALLBACK, HeatmapCodec
from gamma_kit.fovea.config import build_codec, dump_config
from gamma_kit.fovea.dataset import CanonicalCache, make_items, roi_crop
from gamma_kit.fovea.checkpoints import load_checkpoint
from gamma_kit.fovea.inference import (combine, evaluate_items, heatmap_to_image, image_to_heatmap, locate,
                                       predict_heatmaps)
from gamma_kit.fovea.predict import predict
from gamma_kit.geometry import CanonicalFrame
from gamma_kit.metrics import evaluate_fovea

from fovea_fixtures import random_run, tiny_synth


# ---------------------------------------------------------------- the old chains (oracle)
def old_predict_heatmaps(model, crops, batch_size=8, amp=False, flip=False):
    """The network on each crop alone (batches of 1; ``batch_size`` and ``amp`` are the kit's knobs and
    do not change the numbers on the CPU), the flipped crop through NumPy: an oracle written apart
    from ``inference.predict_heatmaps``."""
    import paddle

    model.eval()

    def net(x):
        with paddle.no_grad():
            return model(paddle.to_tensor(np.ascontiguousarray(x[None], dtype=np.float32))).numpy()[0, 0]

    maps = []
    for crop in np.asarray(crops, dtype=np.float32):
        y = net(crop)
        maps.append(np.float32(0.5) * (y + net(crop[:, :, ::-1])[:, ::-1]) if flip else y)
    return np.stack(maps)


def old_evaluate(model, items, codec, amp, batch_size):
    crops = np.stack([roi_crop(it.canon, codec) for it in items])
    res = codec.decode(old_predict_heatmaps(model, crops, batch_size, amp))
    canon = codec.heatmap_to_canonical(res.xy)
    pred = np.stack([it.canon.frame.to_image(p[None])[0] for it, p in zip(items, canon)])
    ids = [it.canon.id for it in items]
    gt = np.stack([it.canon.frame.to_image(it.fovea[None])[0] for it in items])
    pred_df = pd.DataFrame(pred, columns=["Fovea_X", "Fovea_Y"], index=pd.Index(ids, name="data"))
    gt_df = pd.DataFrame(gt, columns=["Fovea_X", "Fovea_Y"], index=pd.Index(ids, name="data"))
    scores = evaluate_fovea(pred_df, gt_df, {it.canon.id: it.canon.size for it in items})
    return scores["aed"], pred_df


def old_predict_positions(models, codecs, canon, ensemble, flip):
    ref = codecs[0]
    ids = list(canon)
    crops = np.stack([roi_crop(canon[i], ref) for i in ids])
    maps = [old_predict_heatmaps(m, crops, batch_size=8, amp=False, flip=flip) for m in models]
    if ensemble == "heatmap":
        xy = ref.decode(np.mean(maps, axis=0)).xy
    else:
        decoded = [c.decode(h) for c, h in zip(codecs, maps)]
        stack = np.stack([d.xy for d in decoded])
        with np.errstate(invalid="ignore"):
            xy = np.nanmean(stack, axis=0) if np.isnan(stack).any() else stack.mean(axis=0)
    if np.isnan(xy).any():
        xy = np.where(np.isnan(xy), np.asarray(ORIGINAL_EMPTY_FALLBACK) * ref.scale, xy)
    canon_xy = ref.heatmap_to_canonical(xy)
    return np.stack([canon[i].frame.to_image(p[None])[0] for i, p in zip(ids, canon_xy)])


def old_bench_kit_one(models, cc, image):
    from gamma_kit.fovea.dataset import crop

    frame = CanonicalFrame.from_image(image)
    canon = frame.warp_image(image, scale=cc.scale)
    x = crop(canon, cc.roi_origin_px, cc.heatmap_size)[None]
    xy = np.mean([cc.decode(old_predict_heatmaps(m, x, 1)).xy for m in models], axis=0)
    return frame.to_image(cc.heatmap_to_canonical(xy))


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return tiny_synth(tmp_path_factory.mktemp("fovea_inf") / "data", 4, 4, seed=7)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return random_run(tmp_path_factory.mktemp("fovea_inf_run") / "run", seeds=(11, 12))


def _gt_path(synth):
    return synth / "task2_Fovea_localization" / "testing_GT" / "fovea_localization_testing_GT.xlsx"


# ---------------------------------------------------------------- same positions as the old chains
@pytest.mark.parametrize("ensemble,flip", [("coords", False), ("coords", True), ("heatmap", False),
                                           ("heatmap", True)])
@pytest.mark.slow
def test_predict_gives_the_old_positions(synth, tiny_run, tmp_path, ensemble, flip):
    run, cfg = tiny_run
    test = load_fovea_split(synth, "testing")
    out = predict([run], test.images, tmp_path / "sub.csv", ensemble=ensemble, flip=flip, device="cpu",
                  progress=False)
    models = [load_checkpoint(run / f"fold{k}")[0] for k in (1, 2)]
    codecs = [build_codec(cfg)] * 2
    cache = CanonicalCache(codecs[0].scale)
    canon = {i: cache.get(i, p) for i, p in test.images.items()}
    expected = old_predict_positions(models, codecs, canon, ensemble, flip)
    np.testing.assert_array_equal(out["predictions"].to_numpy(), expected)
    written = pd.read_csv(tmp_path / "sub.csv", dtype={"data": str}).set_index("data")
    np.testing.assert_allclose(written.to_numpy(), expected, rtol=0, atol=1e-9)


@pytest.mark.slow
def test_predict_streams_chunks_with_the_numbers_of_one_pass(synth, tiny_run, tmp_path, monkeypatch):
    """Issue 17.8: photos go through predict a chunk at a time (memory bounded by the chunk); one
    batch per chunk, and so many chunks, gives exactly the positions of one pass over all photos;
    the canonical images are not kept."""
    import gamma_kit.fovea.predict as fovea_predict

    run, _ = tiny_run
    test = load_fovea_split(synth, "testing")
    whole = predict([run], test.images, tmp_path / "whole.csv", device="cpu", progress=False, batch_size=8,
                    flip=True)
    monkeypatch.setattr(fovea_predict, "CHUNK_BATCHES", 1)
    kept = []
    real_get = fovea_predict.CanonicalCache.get

    def spy(self, image_id, path):
        kept.append(len(self._mem))
        return real_get(self, image_id, path)

    monkeypatch.setattr(fovea_predict.CanonicalCache, "get", spy)
    chunked = predict([run], test.images, tmp_path / "chunked.csv", device="cpu", progress=False, batch_size=1,
                      flip=True, figures_dir=tmp_path / "fig")
    assert len(test.images) == 4 and kept == [0, 0, 0, 0]
    pd.testing.assert_frame_equal(chunked["predictions"], whole["predictions"])
    assert (tmp_path / "chunked.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
    assert (tmp_path / "fig" / "heatmaps.png").is_file()


def test_evaluate_items_gives_the_old_validation_aed(synth, tiny_run):
    run, cfg = tiny_run
    codec = build_codec(cfg)
    split = load_fovea_split(synth, "training")
    canon = CanonicalCache(codec.scale).load_all(split.images, progress=False)
    items = make_items(canon, split.gt)
    model, _ = load_checkpoint(run / "fold1")
    aed, df = evaluate_items(model, items, codec, amp=False, batch_size=3)
    old_aed, old_df = old_evaluate(model, items, codec, False, 3)
    assert aed == old_aed and np.isfinite(aed)
    pd.testing.assert_frame_equal(df, old_df)


def test_bench_chain_gives_the_old_positions(synth, tiny_run):
    from gamma_kit.data import read_image
    from gamma_kit.fovea.dataset import CanonicalImage

    run, cfg = tiny_run
    cc = build_codec(cfg)
    models = [load_checkpoint(run / f"fold{k}")[0] for k in (1, 2)]
    path = next(iter(load_fovea_split(synth, "testing").images.values()))
    image = read_image(path)
    frame = CanonicalFrame.from_image(image)
    canon = CanonicalImage("x", path, (image.shape[1], image.shape[0]), frame, cc.scale,
                           frame.warp_image(image, scale=cc.scale))
    new = locate(models, [canon], [cc, cc], batch_size=1).image_xy
    np.testing.assert_array_equal(new, old_bench_kit_one(models, cc, image))


def test_batching_does_not_change_heatmaps(tiny_run):
    run, _ = tiny_run
    model, _ = load_checkpoint(run / "fold1")
    crops = np.random.default_rng(0).uniform(0, 255, (5, 3, 100, 152)).astype(np.float32)
    np.testing.assert_allclose(predict_heatmaps(model, crops, batch_size=2),
                               predict_heatmaps(model, crops, batch_size=5), rtol=1e-5, atol=1e-4)
    assert predict_heatmaps(model, crops[:0]).shape == (0, 100, 152)


# ---------------------------------------------------------------- crop <-> image mapping
def test_heatmap_to_image_hand_computed():
    codec = HeatmapCodec()        # full scale: ROI origin (836, 840)
    wide_right = CanonicalFrame.for_size((2992, 2000), flipped=True)
    square_left = CanonicalFrame.for_size((1956, 1934), flipped=False)
    xy = heatmap_to_image(codec, [[0, 0], [10, 20]], [wide_right, square_left])
    # wide, right eye: canonical (836, 840) -> un-flip 1956 - 836 = 1120 -> un-crop (+518, +33)
    np.testing.assert_array_equal(xy, [[1638.0, 873.0], [846.0, 860.0]])
    back = image_to_heatmap(codec, xy, [wide_right, square_left])
    np.testing.assert_allclose(back, [[0, 0], [10, 20]], atol=1e-9)
    quarter = HeatmapCodec(scale=0.25)   # ROI origin (209, 210) px of the 1/4-scale canonical image
    np.testing.assert_array_equal(heatmap_to_image(quarter, [[0, 0]], [square_left]), [[836.0, 840.0]])


def test_combine_nan_policies_and_fallback():
    codec = HeatmapCodec(scale=0.25, on_empty="nan")
    peak = codec.encode([[60.0, 40.0], [30.0, 50.0]])
    empty = np.zeros_like(peak)
    mixed = np.stack([peak[0], empty[1]])          # model B: image 0 found, image 1 empty
    xy, is_empty = combine([peak, mixed], [codec, codec], "coords")
    np.testing.assert_allclose(xy, codec.decode(peak).xy)      # image 1: model A alone
    assert not is_empty.any()
    xy, is_empty = combine([empty, empty], [codec, codec], "coords")
    assert is_empty.all() and np.isnan(xy).all()
    xy, _ = combine([empty, empty], [codec, codec], "coords", fill_empty=True)
    np.testing.assert_array_equal(xy, [[96.0, 60.0]] * 2)       # (384, 240) / 4
    xy, is_empty = combine([peak, peak], [codec, codec], "heatmap")
    np.testing.assert_allclose(xy, codec.decode(peak).xy)
    with pytest.raises(ValueError, match="ensemble"):
        combine([peak], [codec], "median")


# ---------------------------------------------------------------- checkpoint faults
def test_empty_and_truncated_checkpoints_name_the_file(tiny_run, tmp_path):
    run, cfg = tiny_run
    raw = (run / "fold1" / "best.pdparams").read_bytes()
    for name, data in (("zero", b""), ("half", raw[: len(raw) // 2])):
        d = tmp_path / name
        d.mkdir()
        (d / "best.pdparams").write_bytes(data)
        (d / "config.yml").write_text(dump_config(cfg))
        with pytest.raises(ValueError, match=rf"{name}.best\.pdparams.*(empty|cannot be read)"):
            load_checkpoint(d)


# ---------------------------------------------------------------- predict output safety
def test_predict_refuses_out_onto_an_input_before_writing(synth, tiny_run, tmp_path):
    from gamma_kit.fovea.__main__ import main as cli_main

    run, _ = tiny_run
    test = load_fovea_split(synth, "testing")
    gt = _gt_path(synth)
    before = gt.read_bytes()
    # --gt and --out swapped: refused, the ground truth is untouched
    assert cli_main(["predict", "--checkpoints", str(run), "--images", str(test.root / "fundus color images"),
                     "--gt", str(tmp_path / "sub.csv"), "--out", str(gt), "--device", "cpu",
                     "--no-progress"]) == 2
    assert gt.read_bytes() == before and not (tmp_path / "sub.csv").exists()
    folder = next(iter(test.images.values())).parent
    for out in (folder / "sub.csv", run / "fold1" / "best.pdparams", run / "sub.csv"):
        with pytest.raises(ValueError, match="lies inside, the input"):
            predict([run], folder, out, device="cpu", progress=False)
    with pytest.raises(ValueError, match="lies inside, the input"):
        predict([run], folder, tmp_path / "s.csv", gt=gt, figures_dir=folder / "fig", device="cpu",
                progress=False)
    with pytest.raises(ValueError, match=r"\.csv"):
        predict([run], folder, tmp_path / "GT.xlsx", device="cpu", progress=False)
    assert not (folder / "sub.csv").exists() and not (run / "sub.csv").exists() and not (folder / "fig").exists()


def test_predict_checks_the_output_location_before_the_work(synth, tiny_run, tmp_path):
    run, _ = tiny_run
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        predict([run], load_fovea_split(synth, "testing").images, blocker / "sub.csv", device="cpu",
                progress=False)
    with pytest.raises(ValueError, match="is a folder"):
        predict([run], load_fovea_split(synth, "testing").images, tmp_path, device="cpu", progress=False)
    with pytest.raises(ValueError, match="either checkpoints or an exported"):
        predict(None, load_fovea_split(synth, "testing").images, tmp_path / "s.csv")


def test_predict_scores_with_gt(synth, tiny_run, tmp_path):
    run, _ = tiny_run
    test = load_fovea_split(synth, "testing")
    out = predict([run], test.images, tmp_path / "s.csv", gt=_gt_path(synth), device="cpu", progress=False,
                  figures_dir=tmp_path / "fig")
    gt = read_fovea_gt(_gt_path(synth))
    assert out["scores"]["n"] == len(gt) and np.isfinite(out["scores"]["aed"])
    assert (tmp_path / "s_scores.json").is_file() and (tmp_path / "fig" / "heatmaps.png").is_file()
