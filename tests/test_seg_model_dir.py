"""gamma_kit.seg.model_dir: one owner of a seg model folder (issue 18.2), and the checks before a model
folder or crop settings are used (issue 17.5, 17.6): a two-stage folder without roi.json, a roi.json with
unknown or missing keys, a crop window wider than 1.5x the photo or a disc under 24 px are refused in one
line (exit 2, no traceback, inputs unchanged); ``--whole-image`` forces the other path; predict warns
about a window that breaks the rule and still writes every mask; a full disk during ``seg prepare``
names the output file."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gamma_kit  # noqa: F401
from gamma_kit.crop import MIN_DISC_PX, window_problem
from gamma_kit.seg.model_dir import (CROPS_NAME, MODEL_CONFIG_NAME, ROI_NAME, WEIGHTS_NAME, RoiSettings, read_roi,
                                     trained_on_crops)
from seg_fixtures import make_tiny_seg_data, small_transforms
from test_bad_inputs import PROGRESS_BAR, checksum

FULL_ROI = RoiSettings(size=48).to_json()


def seg_cli(cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gamma_kit.seg", *argv], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def assert_one_error_line(res: subprocess.CompletedProcess, *parts: str) -> str:
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    lines = [ln for ln in res.stderr.splitlines() if ln and not PROGRESS_BAR.match(ln)]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


# --------------------------------------------------------------------------- the rules, as functions
def test_roi_settings_round_trip_and_strict_keys():
    roi = RoiSettings(factor=1.75, size=64, copies=2)
    assert RoiSettings.from_json(roi.to_json()) == roi
    with pytest.raises(ValueError, match=r"x/roi.json: unknown key\(s\) \['facter'\] and missing key\(s\) \['factor'\]"):
        RoiSettings.from_json({**{k: v for k, v in roi.to_json().items() if k != "factor"}, "facter": 2}, "x/roi.json")
    with pytest.raises(ValueError, match=r"missing key\(s\) \['copies', 'jitter', 'scale_jitter', 'seed', 'side', "
                                         r"'version'\]"):
        RoiSettings.from_json({"factor": 2.0, "size": 512})
    with pytest.raises(ValueError, match="version 2"):
        RoiSettings.from_json({**roi.to_json(), "version": 2})
    with pytest.raises(ValueError, match="bad ROI settings"):
        RoiSettings.from_json({**roi.to_json(), "size": "512"})


def test_read_roi_names_the_file_and_looks_in_the_run_folder(tmp_path):
    model = tmp_path / "run" / "last_model"
    model.mkdir(parents=True)
    assert read_roi(model) is None
    (tmp_path / "run" / ROI_NAME).write_text(json.dumps(FULL_ROI))
    assert read_roi(model) == RoiSettings(size=48)
    (model / ROI_NAME).write_text(json.dumps({**FULL_ROI, "margin": 3}))
    with pytest.raises(ValueError, match=rf"{model / ROI_NAME}: unknown key\(s\) \['margin'\]"):
        read_roi(model)
    (model / ROI_NAME).write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_roi(model)


@pytest.mark.parametrize("side, size, diameter, expected", [
    (100, 512, 50, None),
    (192, 512, 50, None),                                    # exactly 1.5 x 128: allowed
    (193, 512, 50, "the crop window of 193 px is more than 1.5x the photo's short side (128 px)"),
    (100, 48, 50, None),                                     # 24 px: allowed
    (100, 47, 50, "the disc (50 px) would be 23.5 px across in the 47-px crop of a 100-px window, under 24 px"),
    (100, 32, None, None),                                   # no disc known: only the window is checked
])
def test_window_problem_known_answers(side, size, diameter, expected):
    got = window_problem(side, (160, 128), size, diameter)
    assert (got is None) if expected is None else expected in got
    assert MIN_DISC_PX == 24


def test_roi_window_problem_uses_the_window_before_jitter():
    assert RoiSettings(factor=100).window_problem(29, (160, 128)).startswith("the crop window of 2900 px")
    assert RoiSettings(size=48).window_problem(29, (160, 128)) is None            # 48 / 2 = 24 px disc
    assert "12.0 px across" in RoiSettings(size=24).window_problem(29, (160, 128))
    assert "600 px" in RoiSettings(side=600).window_problem(29, (160, 128))


def test_trained_on_crops_needs_crops_json_from_before_the_weights(tmp_path):
    data, model = tmp_path / "data", tmp_path / "model"
    data.mkdir()
    model.mkdir()
    (model / MODEL_CONFIG_NAME).write_text(f"train_dataset:\n  dataset_root: {data}\n")
    (model / WEIGHTS_NAME).write_bytes(b"w")
    assert trained_on_crops(model) is None                                   # no crops.json
    (data / CROPS_NAME).write_text(json.dumps({"roi": FULL_ROI, "crops": {}}))
    os.utime(data / CROPS_NAME, (1_000_000, 1_000_000))
    os.utime(model / WEIGHTS_NAME, (2_000_000, 2_000_000))
    assert f"holds {CROPS_NAME} with crop settings" in trained_on_crops(model)
    os.utime(data / CROPS_NAME, (3_000_000, 3_000_000))                       # prepared after the training
    assert trained_on_crops(model) is None
    (data / CROPS_NAME).write_text(json.dumps({"crops": {}}))               # whole-image crops.json: no "roi"
    os.utime(data / CROPS_NAME, (1_000_000, 1_000_000))
    assert trained_on_crops(model) is None


# --------------------------------------------------------------------------- model folders through the CLI
@pytest.fixture(scope="module")
def roi_model(tmp_path_factory) -> Path:
    """An untrained LiteUNet model folder (32 px transforms) whose model.yml names a dataset_root with a
    crops.json written before the weights, as after training on prepare --roi crops; roi.json beside it;
    photos to predict under ``photos/``."""
    from paddleseg.cvlibs import SegBuilder

    from gamma_kit.safety import atomic_write_text
    from gamma_kit.resources import config_path
    from gamma_kit.safety import atomic_save_paddle
    from gamma_kit.seg.training import load_config

    tmp = tmp_path_factory.mktemp("roi_model")
    task = make_tiny_seg_data(tmp / "gamma", n_train=1, n_test=2, size=(160, 128), seed=0)
    photos = tmp / "photos"
    photos.mkdir()
    for p in sorted((task / "testing" / "fundus color images").iterdir()):
        (photos / p.name).write_bytes(p.read_bytes())
    data = tmp / "crops_data"
    data.mkdir()
    atomic_write_text(data / CROPS_NAME, json.dumps({"roi": FULL_ROI, "crops": {}}))
    cfg = load_config(config_path("seg/roi_liteunet_cpu.yml"),
                      opts=[f"train_dataset.dataset_root={data}", *small_transforms(32)])
    d = tmp / "model"
    atomic_write_text(d / MODEL_CONFIG_NAME, str(cfg))
    atomic_save_paddle(SegBuilder(cfg).model.state_dict(), d / WEIGHTS_NAME)
    os.utime(data / CROPS_NAME, (1_000_000, 1_000_000))      # the crops came before the weights
    atomic_write_text(d / ROI_NAME, json.dumps(FULL_ROI))
    return tmp


def _copy_model(roi_model: Path, work: Path, roi_text: str | None) -> Path:
    d = work / "input" / "model"
    d.mkdir(parents=True)
    for name in (MODEL_CONFIG_NAME, WEIGHTS_NAME):
        (d / name).write_bytes((roi_model / "model" / name).read_bytes())
    if roi_text is not None:
        (d / ROI_NAME).write_text(roi_text)
    return d


@pytest.mark.parametrize("roi_text, parts", [
    (None, ["input/model was trained on disc-centred crops (the train_dataset.dataset_root of input/model/model.yml",
            f"holds {CROPS_NAME} with crop settings) but holds no roi.json", "--whole-image"]),
    (json.dumps({**FULL_ROI, "margin": 0.1}), ["input/model/roi.json: unknown key(s) ['margin']"]),
    (json.dumps({k: v for k, v in FULL_ROI.items() if k not in ("factor", "side")}),
     ["input/model/roi.json: missing key(s) ['factor', 'side']"]),
])
@pytest.mark.slow
def test_predict_refuses_a_model_folder_before_any_work(roi_model, tmp_path, roi_text, parts):
    _copy_model(roi_model, tmp_path, roi_text)
    before = checksum(tmp_path / "input")
    res = seg_cli(tmp_path, "predict", "--model", "input/model", "--images", str(roi_model / "photos"),
                  "--out", "output/pred", "--device", "cpu")
    assert_one_error_line(res, *parts)
    assert checksum(tmp_path / "input") == before and not (tmp_path / "output").exists()


@pytest.mark.slow
def test_whole_image_forces_the_whole_image_path_only_without_roi_json(roi_model, tmp_path):
    _copy_model(roi_model, tmp_path, None)
    res = seg_cli(tmp_path, "predict", "--model", "input/model", "--images", str(roi_model / "photos"),
                  "--out", "output/pred", "--device", "cpu", "--whole-image")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "wrote 2 masks (whole-image)" in res.stdout
    assert len(list((tmp_path / "output" / "pred" / "Disc_Cup_Segmentations").glob("*.bmp"))) == 2
    res = seg_cli(tmp_path, "predict", "--model", str(roi_model / "model"), "--images", str(roi_model / "photos"),
                  "--out", "output/pred2", "--device", "cpu", "--whole-image")
    assert_one_error_line(res, f"--whole-image: {roi_model / 'model' / ROI_NAME} is there",
                          "is a two-stage model trained on disc-centred crops")


@pytest.mark.slow
def test_exported_two_stage_model_without_roi_json_is_refused(tmp_path):
    """``StaticPredictor`` checks the export's roi.json as a model folder's, before loading the graph
    (so this deploy.yaml needs no graph)."""
    import yaml

    exp = tmp_path / "input" / "export"
    exp.mkdir(parents=True)
    deploy = {"Deploy": {"model": "model.pdmodel", "params": "model.pdiparams", "transforms": [],
                         "num_classes": 3, "logits_output": 1, "two_stage": True}}
    (exp / "deploy.yaml").write_text(yaml.safe_dump(deploy))
    (tmp_path / "photos").mkdir()
    before = checksum(tmp_path / "input")
    res = seg_cli(tmp_path, "predict", "--exported", "input/export", "--images", "photos", "--out", "output/p",
                  "--device", "cpu")
    assert_one_error_line(res, "input/export was trained on disc-centred crops (input/export/deploy.yaml says "
                               "two_stage: true) but holds no roi.json")
    (exp / ROI_NAME).write_text(json.dumps({**FULL_ROI, "zoom": 2}))
    res = seg_cli(tmp_path, "predict", "--exported", "input/export", "--images", "photos", "--out", "output/p",
                  "--device", "cpu")
    assert_one_error_line(res, "input/export/roi.json: unknown key(s) ['zoom']")
    assert not (tmp_path / "output").exists()
    assert checksum(tmp_path / "input") != before       # only the roi.json this test added


# --------------------------------------------------------------------------- crop settings through the CLI
@pytest.mark.parametrize("flags, parts", [
    (["--roi-factor", "100"], ["input/gamma/task3_disc_cup_segmentation/training/fundus color images/0001.jpg: "
                               "the crop window of ", "px is more than 1.5x the photo's short side (128 px)",
                               "(now --roi-factor 100, --roi-size 512)"]),
    (["--roi-side", "400"], ["0001.jpg: the crop window of 400 px is more than 1.5x the photo's short side (128 px)",
                             "(now --roi-side 400, --roi-size 512)"]),
    (["--roi-size", "32"], ["0001.jpg: the disc (", "px) would be 16.0 px across in the 32-px crop of a ",
                            "under 24 px"]),
])
@pytest.mark.slow
def test_prepare_refuses_unusable_crop_settings(tmp_path, flags, parts):
    make_tiny_seg_data(tmp_path / "input" / "gamma", n_train=2, n_test=1, size=(160, 128), seed=0)
    before = checksum(tmp_path / "input")
    res = seg_cli(tmp_path, "prepare", "--data-root", "input/gamma", "--out", "output/prep", "--roi", *flags)
    assert_one_error_line(res, *parts)
    assert checksum(tmp_path / "input") == before and not (tmp_path / "output" / "prep").exists()


class _FlatPredictor:
    """A PredictorCore whose network says 'background' everywhere (no Paddle), for the crop rule."""

    def __new__(cls, roi):
        from gamma_kit.seg.predictor import PredictorCore

        class Flat(PredictorCore):
            def _forward(self, x):
                out = np.zeros((x.shape[0], 3) + x.shape[2:], np.float32)
                out[:, 2] = 1.0
                return out

        return Flat([], 3, roi=roi)


def test_predict_names_a_crop_window_that_breaks_the_rule_and_writes_every_mask(tmp_path):
    from gamma_kit.seg.submission import predict_folder

    task = make_tiny_seg_data(tmp_path / "gamma", n_train=1, n_test=2, size=(160, 128), seed=0)
    lines = []
    run = predict_folder(_FlatPredictor(RoiSettings(side=400, size=32)), task / "testing" / "fundus color images",
                         tmp_path / "out", progress=False, log=lines.append)
    assert len(run.ids) == 2 and len(list(run.pred_dir.glob("*.bmp"))) == 2
    named = [ln for ln in lines if ln.startswith("crop of ")]
    assert len(named) == 2 and all("window of 400 px is more than 1.5x the photo's short side (128 px)" in ln
                                   and ln.endswith("segmented anyway") for ln in named)
    report = json.loads(run.stage1_report.read_text())
    assert [c["id"] for c in report["crops"]] == ["0002", "0003"] == [c["id"] for c in run.crops]
    lines.clear()
    run = predict_folder(_FlatPredictor(RoiSettings(size=48)), task / "testing" / "fundus color images",
                         tmp_path / "out2", progress=False, log=lines.append)
    assert run.crops == [] and not [ln for ln in lines if ln.startswith("crop of ")]


# --------------------------------------------------------------------------- a full disk names the output
def test_prepare_on_a_full_disk_names_the_output_file(tmp_path, monkeypatch, capsys):
    """As Linux reports it: ``shutil.copyfile`` copies with ``os.sendfile`` and, on ENOSPC, raises an
    OSError whose ``filename`` is the *source* (the photo) and ``filename2`` the target."""
    import shutil

    from gamma_kit.cli import run_cli
    from gamma_kit.seg.__main__ import main

    if not getattr(shutil, "_USE_CP_SENDFILE", False):
        pytest.skip("shutil does not copy with sendfile here")
    make_tiny_seg_data(tmp_path / "input" / "gamma", n_train=2, n_test=1, size=(160, 128), seed=0)
    before = checksum(tmp_path / "input")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "sendfile", full)
    out = tmp_path / "output" / "prep"
    assert run_cli(lambda: main(["prepare", "--data-root", str(tmp_path / "input" / "gamma"), "--out", str(out)])) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln and not PROGRESS_BAR.match(ln)]
    assert len(err) == 1 and f"{out / 'JPEGImages' / '0001.jpg'}: No space left on device" in err[0], err
    assert "input" not in err[0].split(str(out))[0].replace("error: ", "")      # not named as an input
    assert checksum(tmp_path / "input") == before and not list(out.rglob("*.tmp"))
