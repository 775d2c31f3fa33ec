"""prepare -> split -> train -> predict -> BMP zip -> evaluate through the CLI on tiny data; static export;
post-processing; overlays; the bad inputs of issue 4 (each a clear message, not a Paddle traceback)."""
from __future__ import annotations

import json
import zipfile
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

import gamma_kit  # noqa: F401
from gamma_kit.data import read_image
from gamma_kit.seg.__main__ import main
from gamma_kit.seg.postprocess import overlay, postprocess_labels
from gamma_kit.seg.predictor import load_model
from gamma_kit.seg.submission import predict_folder
from seg_fixtures import make_seg_data, small_transforms

CPU_CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "seg" / "liteunet_gamma_cpu.yml")
SIZES = ((192, 128), (130, 128))   # (w, h): both GAMMA aspect ratios, the smallest the kit takes


def _data_opts(prepared: Path, train_list: str = "train_list.txt", val_list: str = "val_list.txt") -> list[str]:
    return [f"train_dataset.dataset_root={prepared}", f"train_dataset.train_path={prepared / train_list}",
            f"val_dataset.dataset_root={prepared}", f"val_dataset.val_path={prepared / val_list}",
            *small_transforms(32)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Tiny gamma_kit.synth data prepared, split and a LiteUNet trained 4 iterations, all through the CLI."""
    tmp = tmp_path_factory.mktemp("seg_pipeline")
    make_seg_data(tmp / "gamma", n_train=6, n_test=3, seed=2, sizes=SIZES)
    prepared = tmp / "prepared"
    assert main(["prepare", "--data-root", str(tmp / "gamma"), "--out", str(prepared)]) == 0
    assert main(["split", "--dataset-dir", str(prepared), "--val-value", "0.0001"]) == 0
    rc = main(["train", "--config", CPU_CONFIG, "--save-dir", str(tmp / "run"), "--iters", "4", "--device", "cpu",
               "--log-iters", "2", "--seed", "0", "--opts", *_data_opts(prepared)])
    assert rc == 0
    return tmp


def test_train_writes_model_directories(trained):
    run = trained / "run"
    for d in ("best_model", "last_model"):
        assert (run / d / "model.pdparams").is_file() and (run / d / "model.yml").is_file()
    assert "LiteUNet" in (run / "model.yml").read_text()


def test_predict_zip_evaluate(trained, capsys):
    out = trained / "pred"
    rc = main(["predict", "--model", str(trained / "run"), "--data-root", str(trained / "gamma"),
               "--out", str(out), "--postprocess", "--overlays"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "scored against" in printed and "without post-processing" in printed and "time per image" in printed
    bmps = sorted((out / "Disc_Cup_Segmentations").glob("*.bmp"))
    assert [p.stem for p in bmps] == ["0007", "0008", "0009"]
    test_dir = trained / "gamma" / "task3_disc_cup_segmentation" / "testing" / "fundus color images"
    for p in bmps:
        m = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        assert m.shape == read_image(test_dir / f"{p.stem}.jpg").shape[:2] and m.dtype == np.uint8
        assert set(np.unique(m)) <= {0, 128, 255}
    with zipfile.ZipFile(out / "Disc_Cup_Segmentations.zip") as zf:
        assert sorted(zf.namelist()) == [f"Disc_Cup_Segmentations/{p.name}" for p in bmps]
    assert len(list((out / "overlays").glob("*.png"))) == 3
    gt = trained / "gamma" / "task3_disc_cup_segmentation" / "testing_GT" / "Disc_Cup_Mask"
    assert main(["evaluate", "--pred", str(out / "Disc_Cup_Segmentations"), "--gt", str(gt), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 3 and 0 <= res["dice_disc"] <= 1 and 0 <= res["vcdr_mae"] <= 1
    assert main(["evaluate", "--config", CPU_CONFIG, "--model", str(trained / "run" / "best_model")]) == 2
    assert "dataset_root" in capsys.readouterr().err   # the config's default data root is absent here


def test_paddleseg_pooled_evaluation(trained, monkeypatch):
    from gamma_kit.seg.training import evaluate_from_config

    res = evaluate_from_config(CPU_CONFIG, trained / "run" / "best_model",
                               opts=_data_opts(trained / "prepared")[2:])
    assert set(res) >= {"miou", "acc", "iou_0", "dice_2"} and 0 <= res["miou"] <= 1


def test_prediction_shape_and_source_size(trained):
    model = load_model(trained / "run")
    img = read_image(next((trained / "gamma").rglob("0007.jpg")))
    res = model.predict(img)
    assert res["label_map"].shape == img.shape[:2] and res["label_map"].dtype == np.uint8
    assert res["score_map"].shape == (*img.shape[:2], 3)
    assert np.allclose(res["score_map"].sum(-1), 1.0, atol=1e-4)
    # nearest-neighbour resize of the network's arg-max: the label map only holds 0, 1, 2
    assert set(np.unique(res["label_map"])) <= {0, 1, 2}
    assert np.array_equal(model.predict_labels(img), res["label_map"])


@pytest.mark.slow
def test_static_export_matches_dynamic(trained):
    from gamma_kit.seg.export import StaticPredictor

    assert main(["export", "--model", str(trained / "run"), "--out", str(trained / "export")]) == 0
    files = {p.name for p in (trained / "export").iterdir()}
    assert {"deploy.yaml", "model.pdmodel", "model.pdiparams"} <= files and "deploy.yml" not in files
    static = StaticPredictor(trained / "export")
    dynamic = load_model(trained / "run")
    for p in sorted((trained / "gamma").rglob("testing/fundus color images/*.jpg")):
        img = read_image(p)
        assert np.allclose(static.logits(img), dynamic.logits(img), atol=1e-4)
        assert np.array_equal(static.predict_labels(img), dynamic.predict_labels(img))
    run = predict_folder(static, trained / "gamma" / "task3_disc_cup_segmentation" / "testing" / "fundus color images",
                         trained / "pred_static", progress=False)
    assert run.ids == sorted(run.ids) and len(run.ids) == 3 and run.zip_path.is_file()


# --------------------------------------------------------------------------- bad inputs
def test_missing_list_file(trained, capsys):
    rc = main(["train", "--config", CPU_CONFIG, "--save-dir", str(trained / "bad"), "--iters", "1",
               "--opts", *_data_opts(trained / "prepared", train_list="no_such_list.txt")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no_such_list.txt not found" in err and "Traceback" not in err


def test_missing_config(capsys):
    assert main(["train", "--config", "configs/seg/nope.yml"]) == 2
    assert "config file configs/seg/nope.yml not found" in capsys.readouterr().err


def test_list_line_with_missing_files(trained, capsys):
    prepared = trained / "prepared"
    (prepared / "broken_list.txt").write_text((prepared / "train_list.txt").read_text()
                                              + "JPEGImages/9999.jpg Annotations/9999.png\n")
    rc = main(["train", "--config", CPU_CONFIG, "--save-dir", str(trained / "bad"), "--iters", "1",
               "--opts", *_data_opts(prepared, train_list="broken_list.txt")])
    assert rc == 2
    assert "9999.jpg does not exist" in capsys.readouterr().err


def test_labels_outside_range(trained, tmp_path, capsys):
    src = trained / "prepared"
    raw = tmp_path / "raw"
    (raw / "JPEGImages").mkdir(parents=True)
    (raw / "Annotations").mkdir()
    lines = []
    for line in (src / "train_list.txt").read_text().splitlines():
        img, lab = line.split()
        (raw / img).write_bytes((src / img).read_bytes())
        gamma = (cv2.imread(str(src / lab), cv2.IMREAD_UNCHANGED) * 127.5).round().astype(np.uint8)  # 0/128/255
        cv2.imwrite(str(raw / lab), gamma)
        lines.append(line)
    (raw / "train_list.txt").write_text("\n".join(lines) + "\n")
    (raw / "val_list.txt").write_text(lines[0] + "\n")
    rc = main(["train", "--config", CPU_CONFIG, "--save-dir", str(tmp_path / "out"), "--iters", "1",
               "--opts", *_data_opts(raw)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "outside 0..2" in err and "gamma_kit.seg prepare" in err


def test_model_dir_without_weights(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["predict", "--model", str(tmp_path / "empty"), "--images", str(tmp_path)]) == 2
    assert "holds no trained weights" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "missing")


# --------------------------------------------------------------------------- post-processing, overlays
def test_postprocess_known_answers():
    lab = np.full((20, 30), 2, np.uint8)
    lab[2:12, 2:12] = 1            # big disc
    lab[5:9, 5:9] = 0              # its cup
    lab[7, 7] = 2                  # a hole in the cup
    lab[3, 3] = 2                  # a hole in the rim
    lab[15:18, 20:23] = 1          # a small second disc blob: removed
    lab[16, 25] = 0                # cup outside every disc: removed
    out = postprocess_labels(lab)
    expected = np.full((20, 30), 2, np.uint8)
    expected[2:12, 2:12] = 1
    expected[5:9, 5:9] = 0
    assert np.array_equal(out, expected)
    assert np.array_equal(postprocess_labels(np.full((4, 4), 2, np.uint8)), np.full((4, 4), 2, np.uint8))
    # the disc touching the border keeps its shape (only enclosed holes are filled)
    edge = np.full((10, 10), 2, np.uint8)
    edge[:5, :5] = 1
    assert np.array_equal(postprocess_labels(edge), edge)


def test_overlay_draws_both_outlines():
    img = np.zeros((40, 50, 3), np.uint8)
    gt = np.full((40, 50), 255, np.uint8)
    gt[10:30, 10:30] = 128
    gt[15:25, 15:25] = 0
    pred = np.full((40, 50), 255, np.uint8)
    pred[12:32, 14:34] = 128
    out = overlay(img, pred, gt)
    assert out.shape == img.shape and not img.any()            # input untouched
    colours = {tuple(c) for c in out.reshape(-1, 3)}
    assert (255, 255, 0) in colours and (0, 255, 0) in colours


def test_broken_configs(tmp_path, capsys):
    (tmp_path / "partial.yml").write_text("batch_size: 2\niters: 1\n")
    assert main(["train", "--config", str(tmp_path / "partial.yml")]) == 2
    assert "cannot be loaded" in capsys.readouterr().err
    (tmp_path / "bad.yml").write_text("model: [unclosed\n")
    assert main(["train", "--config", str(tmp_path / "bad.yml")]) == 2
    assert "cannot be loaded" in capsys.readouterr().err
    (tmp_path / "child.yml").write_text("_base_: missing_base.yml\n")
    assert main(["train", "--config", str(tmp_path / "child.yml")]) == 2
    assert "missing_base.yml" in capsys.readouterr().err


def test_labels_at_size_modes():
    from gamma_kit.seg.predictor import labels_at_size

    logits = np.zeros((3, 2, 2), np.float32)
    logits[0, 0, 0] = logits[1, 0, 1] = logits[2, 1, :] = 1.0      # labels [[0, 1], [2, 2]]
    near = labels_at_size(logits, (4, 4))
    assert near.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]]
    bil = labels_at_size(logits, (4, 4), "bilinear")
    assert bil.shape == (4, 4) and bil[0, 0] == 0 and bil[0, 3] == 1 and (bil[3] == 2).all()
    assert np.array_equal(labels_at_size(logits, (2, 2), "bilinear"), labels_at_size(logits, (2, 2)))
    with pytest.raises(ValueError, match="upsample"):
        labels_at_size(logits, (4, 4), "cubic")


def test_retrain_without_eval_sets_old_run_aside(trained, tmp_path):
    # a second run into a folder that holds a run (with a best_model/) is refused; with
    # --set-aside-old-run the whole folder is renamed and the new run, without evaluation,
    # leaves no best_model/ of the earlier run for predict to pick up
    from gamma_kit.seg.model_dir import resolve_model_dir

    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    old_best = (run / "best_model" / "model.pdparams").read_bytes()
    argv = ["train", "--config", CPU_CONFIG, "--save-dir", str(run), "--iters", "2", "--device", "cpu",
            "--seed", "1", "--no-eval", "--opts", *_data_opts(trained / "prepared")]
    assert main(argv) == 2
    assert (run / "best_model" / "model.pdparams").read_bytes() == old_best
    assert main(argv[:1] + ["--set-aside-old-run"] + argv[1:]) == 0
    assert not (run / "best_model").exists()
    aside = list(tmp_path.glob("run.old-*"))
    assert len(aside) == 1 and (aside[0] / "best_model" / "model.pdparams").read_bytes() == old_best
    assert resolve_model_dir(run) == run / "last_model"
