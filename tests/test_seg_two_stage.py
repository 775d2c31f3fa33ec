"""Two-stage segmentation end to end on tiny data: prepare --roi -> train -> predict (locate, crop,
segment, paste back) with and without TTA, an unsure/black photo reported, the static export on the
same path; models checked before use (shape mismatch, empty or broken files); outputs that hold
exactly this run (issue 10)."""
from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

import gamma_kit  # noqa: F401
from gamma_kit.seg.__main__ import main
from seg_fixtures import make_tiny_seg_data, small_transforms

CPU_CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "seg" / "roi_liteunet_cpu.yml")
WHOLE_CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "seg" / "liteunet_gamma_cpu.yml")
TEST_IDS = ["0007", "0008", "0009"]


def _opts(prepared: Path) -> list[str]:
    return [f"train_dataset.dataset_root={prepared}", f"train_dataset.train_path={prepared / 'train_list.txt'}",
            f"val_dataset.dataset_root={prepared}", f"val_dataset.val_path={prepared / 'val_list.txt'}",
            *small_transforms(32)]


@pytest.fixture(scope="module")
def two_stage(tmp_path_factory):
    """Tiny photos; a ROI model (4 iterations on 48-px crops) and a whole-image model, through the CLI."""
    tmp = tmp_path_factory.mktemp("two_stage")
    make_tiny_seg_data(tmp / "gamma", n_train=6, n_test=3, size=(240, 160), seed=3)
    roi_prep, whole_prep = tmp / "roi_prep", tmp / "whole_prep"
    assert main(["prepare", "--data-root", str(tmp / "gamma"), "--out", str(roi_prep), "--roi", "--roi-size", "48",
                 "--roi-copies", "2"]) == 0
    assert main(["prepare", "--data-root", str(tmp / "gamma"), "--out", str(whole_prep)]) == 0
    for d in (roi_prep, whole_prep):
        assert main(["split", "--dataset-dir", str(d), "--val-value", "0.2"]) == 0
    for cfg, prep, run in ((CPU_CONFIG, roi_prep, "roi_run"), (WHOLE_CONFIG, whole_prep, "whole_run")):
        assert main(["train", "--config", cfg, "--save-dir", str(tmp / run), "--iters", "4", "--device", "cpu",
                     "--log-iters", "2", "--seed", "0", "--no-eval", "--opts", *_opts(prep)]) == 0
    roi = json.loads((roi_prep / "crops.json").read_text())["roi"]
    for d in (tmp / "roi_run", tmp / "roi_run" / "last_model"):   # training copies crops.json's "roi"
        assert json.loads((d / "roi.json").read_text()) == roi
    assert not (tmp / "whole_run" / "roi.json").exists()
    images = tmp / "images"
    shutil.copytree(tmp / "gamma" / "task3_disc_cup_segmentation" / "testing" / "fundus color images", images)
    cv2.imwrite(str(images / "black.jpg"), np.zeros((160, 240, 3), np.uint8))   # no field of view at all
    return tmp


def test_model_dirs_carry_the_roi(two_stage):
    from gamma_kit.seg.predictor import load_model

    m = load_model(two_stage / "roi_run")
    assert m.roi is not None and m.roi.size == 48 and m.roi.factor == 2.0
    assert load_model(two_stage / "whole_run").roi is None


@pytest.mark.parametrize("tta", [False, True])
def test_predict_two_stage_end_to_end(two_stage, capsys, tta):
    out = two_stage / f"pred_tta{tta}"
    argv = ["predict", "--model", str(two_stage / "roi_run"), "--images", str(two_stage / "images"),
            "--out", str(out), "--postprocess"] + (["--tta"] if tta else [])
    assert main(argv) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "two-stage" in printed and ("flip TTA" in printed) == tta
    assert "stage 1 found no disc in black.jpg" in printed and "cropped at the image centre" in printed
    assert "stage 1 unsure or without a disc on" in printed
    # the black frame is also named as no fundus photograph, in one warning line, and in the manifest
    warned = [ln for ln in captured.err.splitlines() if ln.startswith("warning:")]
    assert warned == ["warning: 1 of 4 photo(s) show no circular field of view on a dark surround (not fundus "
                      f"photographs?) and were predicted anyway: ['black.jpg']; reasons in "
                      f"{out / 'predict_manifest.json'}"]
    doubted = json.loads((out / "predict_manifest.json").read_text())["not_fundus"]
    assert [d["id"] for d in doubted] == ["black"] and "(nearly) black" in doubted[0]["reason"]
    report = json.loads((out / "stage1_report.json").read_text())
    assert report["count"] >= 1 and "black" in [p["id"] for p in report["photos"]]
    assert next(p for p in report["photos"] if p["id"] == "black")["fallback"] == "image centre"
    bmps = sorted(p.stem for p in (out / "Disc_Cup_Segmentations").glob("*.bmp"))
    assert bmps == sorted(TEST_IDS + ["black"])
    for i in bmps:
        m = cv2.imread(str(out / "Disc_Cup_Segmentations" / f"{i}.bmp"), cv2.IMREAD_UNCHANGED)
        assert m.shape == (160, 240) and set(np.unique(m)) <= {0, 128, 255}
    with zipfile.ZipFile(out / "Disc_Cup_Segmentations.zip") as zf:
        assert sorted(zf.namelist()) == [f"Disc_Cup_Segmentations/{i}.bmp" for i in bmps]


def test_two_stage_paste_is_background_outside_the_window(two_stage):
    from gamma_kit.data import read_image
    from gamma_kit.seg.predictor import load_model

    m = load_model(two_stage / "roi_run")
    img = read_image(two_stage / "images" / "0007.jpg")
    photo = m.predict_photo(img, name="0007.jpg")
    x0, y0, x1, y1 = photo.crop.box
    outside = np.ones(img.shape[:2], bool)
    outside[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = False
    assert photo.labels.shape == img.shape[:2] and (photo.labels[outside] == 2).all()
    assert np.array_equal(photo.labels, photo.crop.paste_labels(photo.crop_labels))
    res = m.predict(two_stage / "images" / "0007.jpg")
    assert res["label_map"].shape == img.shape[:2] and res["score_map"].shape == img.shape[:2] + (3,)
    np.testing.assert_allclose(res["score_map"].sum(-1), 1.0, atol=1e-4)


class _BlindWholeImageModel:
    """A whole-image model that finds no disc anywhere (all background)."""

    calls = 0

    def predict_labels(self, image, upsample="nearest"):
        type(self).calls += 1
        return np.full(image.shape[:2], 2, np.uint8)


def test_no_disc_falls_back_to_the_whole_image_model(two_stage, capsys):
    from gamma_kit.data import read_image
    from gamma_kit.seg.predictor import load_model

    m = load_model(two_stage / "roi_run", stage1=_BlindWholeImageModel())
    photo = m.predict_photo(read_image(two_stage / "images" / "black.jpg"), name="black.jpg")
    assert photo.location.source == "image-centre" and photo.fallback == "whole-image model"
    assert photo.crop is None and (photo.labels == 2).all()
    # through the CLI with a trained whole-image model: every photo predicted, the black one reported
    out = two_stage / "pred_stage1"
    assert main(["predict", "--model", str(two_stage / "roi_run"), "--stage1-model", str(two_stage / "whole_run"),
                 "--images", str(two_stage / "images"), "--out", str(out)]) == 0
    assert "black.jpg" in capsys.readouterr().out
    report = json.loads((out / "stage1_report.json").read_text())
    assert "black" in [p["id"] for p in report["photos"]]
    assert len(list((out / "Disc_Cup_Segmentations").glob("*.bmp"))) == 4
    assert main(["predict", "--model", str(two_stage / "roi_run"), "--stage1-model", str(two_stage / "roi_run"),
                 "--images", str(two_stage / "images"), "--out", str(two_stage / "x")]) == 2
    assert "whole-image model" in capsys.readouterr().err


def test_static_export_takes_the_same_two_stage_path(two_stage):
    from gamma_kit.data import read_image
    from gamma_kit.seg.export import StaticPredictor, export_static
    from gamma_kit.seg.predictor import load_model

    exp = export_static(two_stage / "roi_run", two_stage / "export")
    assert (exp / "roi.json").is_file() and not list(exp.glob(".export-*"))
    static, dyn = StaticPredictor(exp), load_model(two_stage / "roi_run")
    for i in TEST_IDS:
        img = read_image(two_stage / "images" / f"{i}.jpg")
        for tta in (False, True):
            a, b = static.predict_labels(img, tta=tta), dyn.predict_labels(img, tta=tta)
            assert (a != b).mean() < 1e-3


def test_rerun_replaces_its_own_masks_and_refuses_foreign_ones(two_stage, capsys):
    out = two_stage / "pred_rerun"
    base = ["predict", "--model", str(two_stage / "roi_run"), "--out", str(out)]
    assert main(base + ["--images", str(two_stage / "images")]) == 0
    one = two_stage / "one"
    one.mkdir()
    shutil.copy(two_stage / "images" / "0008.jpg", one)
    assert main(base + ["--images", str(one)]) == 0            # its earlier masks are removed first
    assert sorted(p.name for p in (out / "Disc_Cup_Segmentations").iterdir()) == ["0008.bmp"]
    with zipfile.ZipFile(out / "Disc_Cup_Segmentations.zip") as zf:
        assert zf.namelist() == ["Disc_Cup_Segmentations/0008.bmp"]
    (out / "Disc_Cup_Segmentations" / "0999.bmp").write_bytes(b"someone's")
    assert main(base + ["--images", str(one)]) == 2
    assert "did not write" in capsys.readouterr().err
    assert (out / "Disc_Cup_Segmentations" / "0999.bmp").read_bytes() == b"someone's"
    # the output may not be, or lie inside, an input
    assert main(["predict", "--model", str(two_stage / "roi_run"), "--images", str(one), "--out", str(one / "o")]) == 2
    assert main(["predict", "--model", str(two_stage / "roi_run"), "--images", str(one),
                 "--out", str(two_stage / "roi_run" / "p")]) == 2


def test_models_checked_before_use(two_stage, tmp_path, capsys):
    from gamma_kit.seg.predictor import load_model

    bad = tmp_path / "wrong_shape"
    shutil.copytree(two_stage / "roi_run" / "last_model", bad)
    cfg = (bad / "model.yml").read_text()
    assert "base_channels: 8" in cfg
    (bad / "model.yml").write_text(cfg.replace("base_channels: 8", "base_channels: 4"))
    with pytest.raises(ValueError, match="of another shape"):
        load_model(bad)
    assert main(["predict", "--model", str(bad), "--images", str(two_stage / "images"),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.pdparams does not match" in err
    empty = tmp_path / "empty"
    shutil.copytree(two_stage / "roi_run" / "last_model", empty)
    (empty / "model.pdparams").write_bytes(b"")
    with pytest.raises(ValueError, match="empty file"):
        load_model(empty)
    (empty / "model.pdparams").write_bytes((two_stage / "roi_run" / "last_model" / "model.pdparams").read_bytes()[:500])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_model(empty)


def test_broken_export_folder_is_one_line(two_stage, tmp_path):
    from gamma_kit.seg.export import StaticPredictor

    if not (two_stage / "export").is_dir():
        from gamma_kit.seg.export import export_static
        export_static(two_stage / "roi_run", two_stage / "export")
    broken = tmp_path / "broken"
    shutil.copytree(two_stage / "export", broken)
    (broken / "model.pdiparams").write_bytes(b"")
    with pytest.raises(ValueError, match="model.pdiparams: empty file"):
        StaticPredictor(broken)
    (broken / "model.pdiparams").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="cannot be loaded as an exported model|failed to run"):
        StaticPredictor(broken).logits(np.zeros((48, 48, 3), np.uint8))
    (broken / "deploy.yaml").write_text("::: not yaml :::\n  - [")
    with pytest.raises(ValueError, match="deploy"):
        StaticPredictor(broken)
