"""End to end on tiny synthetic data: cache -> crops -> train (5 folds) -> checkpoints ->
ensemble predict -> CSV -> score; resume, fine-tune checks and bad inputs."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import gamma_kit  # noqa: F401
from gamma_kit.data import load_fovea_split, write_image
from gamma_kit.fovea.__main__ import main as cli_main
from gamma_kit.fovea.checkpoints import load_checkpoint
from gamma_kit.fovea.config import build_codec, load_config
from gamma_kit.fovea.dataset import CanonicalCache, FoveaCropDataset, make_items, roi_crop
from gamma_kit.fovea.demo import CPU_CONFIG
from gamma_kit.fovea.predict import predict
from gamma_kit.fovea.train import cross_validate, load_training_data, train_fold

TINY = ["model.width=4", "train.epochs=1", "train.batch_size=4", "train.device=cpu"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from gamma_kit.synth import generate

    root = tmp_path_factory.mktemp("fovea_synth") / "data"
    generate(root, 10, 4, seed=5, sizes=[(748, 500), (489, 484)], progress=False)
    return root


@pytest.fixture(scope="module")
def tiny_cfg():
    return load_config(CPU_CONFIG, TINY)


@pytest.fixture(scope="module")
def cv_run(synth, tiny_cfg, tmp_path_factory):
    run = tmp_path_factory.mktemp("fovea_runs") / "tiny"
    out = cross_validate(tiny_cfg, load_training_data(synth), run, progress=False)
    return run, out


@pytest.mark.slow
def test_cv_writes_every_fold(cv_run):
    run, out = cv_run
    splits = json.loads((run / "splits.json").read_text())
    assert len(splits) == 5 and sorted(sum((s["val"] for s in splits), [])) == [f"{i:04d}" for i in range(1, 11)]
    for k in range(1, 6):
        d = run / f"fold{k}"
        for f in ("best.pdparams", "last_checkpoint.json", "ckpt-001/model.pdparams", "ckpt-001/model.pdopt",
                  "config.yml", "metrics.json"):
            assert (d / f).is_file(), d / f
        m = json.loads((d / "metrics.json").read_text())
        assert m["n_val"] == 2 and len(m["history"]) == 1 and np.isfinite(m["best_aed"])
    assert np.isfinite(out["mean_best_aed"]) and (run / "cv_metrics.json").is_file()
    assert (run / "training_curves.png").stat().st_size > 1000


@pytest.mark.slow
@pytest.mark.parametrize("ensemble,flip", [("coords", False), ("heatmap", True)])
def test_ensemble_predict_and_score(cv_run, synth, tmp_path, ensemble, flip):
    run, _ = cv_run
    test = load_fovea_split(synth, "testing")
    gt = synth / "task2_Fovea_localization" / "testing_GT" / "fovea_localization_testing_GT.xlsx"
    csv = tmp_path / "sub.csv"
    out = predict([run], test.images, csv, ensemble=ensemble, flip=flip, gt=gt, device="cpu",
                  progress=False, figures_dir=tmp_path / "fig")
    assert out["n_models"] == 5
    df = pd.read_csv(csv, dtype={"data": str})
    assert list(df.columns) == ["data", "Fovea_X", "Fovea_Y"] and list(df["data"]) == list(test.images)
    assert df[["Fovea_X", "Fovea_Y"]].notna().all().all()
    assert 0 <= out["scores"]["aed"] < 1 and out["scores"]["n"] == 4
    assert json.loads((tmp_path / "sub_scores.json").read_text())["n"] == 4
    assert (tmp_path / "fig" / "heatmaps.png").is_file() and (tmp_path / "fig" / "fovea_canonical.png").is_file()


def test_crops_and_targets_agree(synth, tiny_cfg, tmp_path):
    data = load_training_data(synth)
    codec = build_codec(tiny_cfg)
    cache = CanonicalCache(codec.scale, tmp_path / "cache")
    canon = cache.load_all(data.images, progress=False)
    items = make_items(canon, data.gt)
    ds = FoveaCropDataset(items, codec, train=True, seed=1)
    for k in range(3):
        img, target = ds[k]
        assert img.shape == (3, 100, 152) and img.dtype == np.float32 and target.shape == (1, 100, 152)
        ox, oy = ds.crop_origin(k)
        expected = items[k].fovea * codec.scale - [ox, oy]
        peak = np.unravel_index(np.argmax(target[0]), target[0].shape)
        assert np.abs(np.array(peak[::-1]) - expected).max() <= 0.5 + 1e-9
        assert img.max() <= 255 and img.max() > 0
    first = [ds.crop_origin(k) for k in range(len(ds))]
    assert first == [FoveaCropDataset(items, codec, seed=1).crop_origin(k) for k in range(len(ds))]
    ds.set_epoch(1)   # new epoch, new shifts, within the +-240 x +-180 range
    assert [ds.crop_origin(k) for k in range(len(ds))] != first
    centres = np.array([np.add(ds.crop_origin(k), (76, 50)) / codec.scale - items[k].fovea for k in range(len(ds))])
    assert (np.abs(centres) <= np.array([240, 180]) + 4 / codec.scale).all()
    val = FoveaCropDataset(items, codec, train=False)
    assert val.crop_origin(0) == codec.roi_origin_px == (209, 210)
    np.testing.assert_array_equal(val[0][0], roi_crop(items[0].canon, codec))
    # disk cache: a second cache reads the .npy files and gets the same arrays and frames
    again = CanonicalCache(codec.scale, tmp_path / "cache").get("0001", data.images["0001"])
    assert again.frame == canon["0001"].frame and np.array_equal(again.image, canon["0001"].image)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == len(data.images)


@pytest.mark.slow
def test_resume_and_finetune(synth, tiny_cfg, tmp_path):
    data = load_training_data(synth)
    run = tmp_path / "run"
    constant = ["train.lr_schedule=constant"]          # a resume may add epochs to a constant learning rate
    train_fold(load_config(CPU_CONFIG, TINY + constant), 2, data, run, progress=False)
    cfg2 = load_config(CPU_CONFIG, TINY + constant + ["train.epochs=2"])
    m = train_fold(cfg2, 2, data, run, resume=True, progress=False)
    assert [r["epoch"] for r in m["history"]] == [0, 1]
    m = train_fold(tiny_cfg, 3, data, tmp_path / "ft", init_from=run / "fold2" / "best.pdparams", progress=False)
    assert len(m["history"]) == 1
    other = load_config(CPU_CONFIG, TINY + ["model.width=6"])
    with pytest.raises(ValueError, match="another config"):
        train_fold(other, 1, data, tmp_path / "x", init_from=run / "fold2", progress=False)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nothing.pdparams")


def test_checkpoint_not_matching_its_config(synth, tiny_cfg, tmp_path):
    data = load_training_data(synth)
    train_fold(tiny_cfg, 1, data, tmp_path / "run", progress=False)
    d = tmp_path / "run" / "fold1"
    (d / "config.yml").write_text((d / "config.yml").read_text().replace("width: 4", "width: 8"))
    with pytest.raises(ValueError, match="does not fit"):
        load_checkpoint(d / "best.pdparams")


def test_undecidable_eye_side_points_to_override(cv_run, tmp_path):
    run, _ = cv_run
    # a field of view with its brightest blob at the centre: no side can be decided
    img = np.zeros((484, 489, 3), np.uint8)
    yy, xx = np.mgrid[:484, :489]
    img[(xx - 244) ** 2 + (yy - 242) ** 2 < 230 ** 2] = (120, 60, 30)
    img[(xx - 244) ** 2 + (yy - 242) ** 2 < 30 ** 2] = (250, 220, 150)
    folder = tmp_path / "imgs"
    write_image(folder / "0999.png", img)
    with pytest.raises(ValueError, match=r"0999\.png.*override"):
        predict([run / "fold1"], folder, tmp_path / "s.csv", device="cpu", progress=False)
    (tmp_path / "sides.csv").write_text("data,disc_side\n0999,left\n")
    out = predict([run / "fold1"], folder, tmp_path / "s.csv", device="cpu", progress=False,
                  side_overrides=tmp_path / "sides.csv")
    assert list(out["predictions"].index) == ["0999"]


def test_gt_outside_image_is_reported(synth, tiny_cfg, tmp_path):
    data = load_training_data(synth)
    canon = CanonicalCache(0.25).load_all({"0001": data.images["0001"]}, progress=False)
    gt = data.gt.copy()
    gt.loc["0001", "Fovea_X"] = 5000.0
    with pytest.raises(ValueError, match=r"0001.*outside"):
        make_items(canon, gt, "my_gt.xlsx")
    from gamma_kit.fovea.predict import check_gt_inside

    with pytest.raises(ValueError, match="my_gt.csv.*0001"):
        check_gt_inside(gt.loc[["0001"]], {"0001": canon["0001"].size}, "my_gt.csv")


@pytest.mark.slow
def test_cli_default_command_is_train(synth, tmp_path, capsys):
    cfg = tmp_path / "tiny.yml"
    cfg.write_text(f"_base_: {CPU_CONFIG}\nname: tiny\nmodel: {{width: 4}}\ntrain: {{epochs: 1, batch_size: 4}}\n")
    rc = cli_main(["--fold", "3", "--config", str(cfg), "--data-root", str(synth), "--run-dir",
                   str(tmp_path / "r"), "--device", "cpu", "--no-progress"])
    assert rc == 0 and (tmp_path / "r" / "fold3" / "best.pdparams").is_file()
    assert '"fold": 3' in capsys.readouterr().out
    rc = cli_main(["predict", "--checkpoints", str(tmp_path / "r"), "--data-root", str(synth), "--out",
                   str(tmp_path / "sub.csv"), "--device", "cpu", "--no-progress"])
    assert rc == 0 and (tmp_path / "sub.csv").read_text().startswith("data,Fovea_X,Fovea_Y")


def test_images_gt_layout_needs_both(tmp_path):
    with pytest.raises(ValueError, match="--gt"):
        load_training_data(images=str(tmp_path))


def test_ensemble_of_different_configs_is_refused(cv_run, synth, tmp_path):
    run, _ = cv_run
    eighth = load_config(CPU_CONFIG, TINY + ["codec.scale=0.125"])
    train_fold(eighth, 1, load_training_data(synth), tmp_path / "eighth", progress=False)
    test = load_fovea_split(synth, "testing")
    with pytest.raises(ValueError, match="scale 0.125.*one config"):
        predict([run / "fold1", tmp_path / "eighth" / "fold1"], test.images, tmp_path / "s.csv",
                device="cpu", progress=False)


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    rc = cli_main(["predict", "--checkpoints", str(tmp_path / "none"), "--out", str(tmp_path / "s.csv"),
                   "--images", str(tmp_path)])
    assert rc == 2 and "no checkpoint at" in capsys.readouterr().err


def test_predict_shares_the_callers_cache(cv_run, synth, tmp_path):
    run, _ = cv_run
    test = load_fovea_split(synth, "testing")
    cfg = load_checkpoint(run / "fold1" / "best.pdparams")[1]
    scale, decode = build_codec(cfg).scale, cfg["data"]["decode"]
    cache = CanonicalCache(scale, decode=decode)
    a = predict([run / "fold1"], test.images, tmp_path / "a.csv", device="cpu", progress=False)
    b = predict([run / "fold1"], test.images, tmp_path / "b.csv", device="cpu", progress=False, cache=cache)
    assert len(cache._mem) == len(test.images)          # the caller's cache now holds every test image
    pd.testing.assert_frame_equal(a["predictions"], b["predictions"])
    with pytest.raises(ValueError, match="scale"):
        predict([run / "fold1"], test.images, tmp_path / "c.csv", device="cpu", progress=False,
                cache=CanonicalCache(scale * 2, decode=decode))
    with pytest.raises(ValueError, match="decode"):
        predict([run / "fold1"], test.images, tmp_path / "c.csv", device="cpu", progress=False,
                cache=CanonicalCache(scale, decode="full" if decode == "reduced" else "reduced"))


def test_images_gt_layout_matches_ids_by_value_and_warns_unlabelled(synth, tmp_path):
    import shutil

    from gamma_kit.data import DataWarning

    src = load_fovea_split(synth, "training")
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i, p in list(src.images.items())[:3]:
        shutil.copy(p, imgs / f"{int(i)}{p.suffix}")          # 0001.jpg -> 1.jpg
    gt = src.gt.iloc[:2]                                      # ids "0001", "0002": the third image has no row
    gt.reset_index().to_csv(tmp_path / "gt.csv", index=False)
    with pytest.warns(DataWarning, match="1 image"):
        data = load_training_data(images=str(imgs), gt=str(tmp_path / "gt.csv"))
    assert sorted(data.images) == ["1", "2"] and sorted(data.gt.index) == ["1", "2"]
    np.testing.assert_allclose(data.gt.loc["1"].to_numpy(), src.gt.loc["0001"].to_numpy())


@pytest.mark.parametrize("kind,expected", [("small", "need at least 128 px"),
                                           ("noise", "not a fundus photograph?")])
def test_predict_refuses_a_photo_that_is_no_fundus_in_one_line(cv_run, tmp_path, capsys, kind, expected):
    import hashlib

    run, _ = cv_run
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (100, 90, 3) if kind == "small" else (400, 420, 3), dtype=np.uint8)
    write_image(imgs / "0001.png", img)
    before = hashlib.sha256((imgs / "0001.png").read_bytes()).hexdigest()
    rc = cli_main(["predict", "--checkpoints", str(run), "--images", str(imgs), "--out", str(tmp_path / "s.csv"),
                   "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "0001.png" in err[0] and expected in err[0], err
    assert not (tmp_path / "s.csv").exists()
    assert hashlib.sha256((imgs / "0001.png").read_bytes()).hexdigest() == before


def test_photometric_augmentation_darkens_and_hazes_training_crops_only(synth, tiny_cfg, tmp_path):
    """data.photometric: a known answer for the function (gamma 2, brightness 0.5, haze 0.5 on a
    two-level crop), crops unchanged where it is off or not drawn (prob 0) and in validation, the
    shifts' stream untouched (same origins), and bad specs refused naming the key."""
    from gamma_kit.fovea.augment import check_photometric, photometric

    img = np.zeros((3, 2, 2), np.float32)
    img[:, 0] = 255.0                               # half white, half black
    fixed = {"prob": 1.0, "brightness": (0.5, 0.5), "gamma": (2.0, 2.0), "haze": (0.5, 0.5)}
    out = photometric(img, np.random.default_rng(0), fixed)
    # white: 1^2 x 127.5 = 127.5, black 0; mean 63.75; haze: 0.5 x v + 0.5 x 63.75
    np.testing.assert_allclose(out[:, 0], 0.5 * 127.5 + 0.5 * 63.75, rtol=1e-6)
    np.testing.assert_allclose(out[:, 1], 0.5 * 63.75, rtol=1e-6)
    assert photometric(img, np.random.default_rng(0), {**fixed, "prob": 0.0}) is img
    mid = np.full((3, 2, 2), 127.5, np.float32)
    np.testing.assert_allclose(photometric(mid, np.random.default_rng(0), {**fixed, "haze": (0.0, 0.0)}),
                               255 * 0.25 * 0.5, rtol=1e-6)      # (0.5)^2 x 0.5 x 255

    data = load_training_data(synth)
    codec = build_codec(tiny_cfg)
    canon = CanonicalCache(codec.scale, tmp_path / "cache").load_all(data.images, progress=False)
    items = make_items(canon, data.gt)
    spec = {"prob": 1.0, "brightness": [0.3, 0.6], "gamma": [1.0, 2.0], "haze": [0.0, 0.5]}
    plain = FoveaCropDataset(items, codec, train=True, seed=1)
    aug = FoveaCropDataset(items, codec, train=True, seed=1, photometric=spec)
    off = FoveaCropDataset(items, codec, train=True, seed=1, photometric={**spec, "prob": 0.0})
    for k in range(3):
        assert aug.crop_origin(k) == plain.crop_origin(k)
        a, p = aug[k][0], plain[k][0]
        np.testing.assert_array_equal(aug[k][1], plain[k][1])                  # the target does not move
        assert a.mean() < 0.7 * p.mean() and a.std() < p.std()                 # darker, less contrast
        np.testing.assert_array_equal(a, aug[k][0])                            # reproducible
        np.testing.assert_array_equal(off[k][0], p)
    val = FoveaCropDataset(items, codec, train=False, photometric=spec)
    np.testing.assert_array_equal(val[0][0], roi_crop(items[0].canon, codec))

    assert check_photometric(None) is None
    for bad, key in [({**spec, "prob": 2}, "prob"), ({**spec, "gamma": [0, 1]}, "gamma"),
                     ({**spec, "haze": [0.2, 1.5]}, "haze"), ({"prob": 1}, "mapping")]:
        with pytest.raises(ValueError, match=key):
            check_photometric(bad)
    with pytest.raises(ValueError, match="data.photometric"):
        load_config(CPU_CONFIG, ["data.photometric={prob: 1}"])
