"""tools/train.py, val.py, predict.py, export.py: PaddleSeg's own scripts and flags, run on the pinned
pip paddleseg 2.8.0 + Paddle 3.x with the kit's YAML (tiny data, CPU).

A PaddleSeg user runs them from the repo root; here the working directory is a temporary folder
holding data/seg_prepared (the configs' dataset_root) and the config paths are absolute, which
resolves the same way (``_base_`` relative to the config file, data relative to the cwd)."""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from seg_fixtures import make_prepared, small_transforms

pytestmark = pytest.mark.slow   # the fast loop: python -m pytest -q -m "not slow"

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "tools"
CONFIGS = REPO / "configs" / "seg"
SMALL = list(small_transforms(32))


def _tool(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOLS / f"{name}.py"), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def _load_tool(name: str):
    """The tool as a module (tools/ is not a package; a unique name avoids clashes)."""
    spec = importlib.util.spec_from_file_location(f"gamma_kit_tools_{name}", TOOLS / f"{name}.py")
    sys.path.insert(0, str(TOOLS))
    try:
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(TOOLS))
    return mod


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """tools/train.py --do_eval on the CPU config (MixedLoss CE + Dice), run as a user runs it."""
    work = tmp_path_factory.mktemp("tools")
    make_prepared(work, n_train=4, n_test=2, size=(80, 64), val_value=0.5)
    res = _tool("train", "--config", CONFIGS / "liteunet_gamma_cpu.yml", "--iters", 2, "--batch_size", 2,
                "--log_iters", 1, "--device", "cpu", "--do_eval", "--seed", 0, "--save_dir", "output",
                "--opts", *SMALL, cwd=work)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return work, res


def test_train_do_eval_mixedloss(trained):
    work, res = trained
    out = work / "output"
    assert yaml.safe_load((CONFIGS / "liteunet_gamma_cpu.yml").read_text())["loss"]["types"][0]["type"] == "MixedLoss"
    # PaddleSeg's own log lines: training steps, then the evaluation (calculate_area patch) and best model
    assert re.search(r"\[TRAIN\] epoch: \d+, iter: 2/2, loss: \d", res.stdout)
    assert "[EVAL] #Images: 2 mIoU:" in res.stdout
    assert "The model with the best validation mIoU" in res.stdout
    for f in ("iter_2/model.pdparams", "iter_2/model.pdopt", "best_model/model.pdparams",
              "last_model/model.pdparams", "last_model/model.yml", "model.yml"):
        assert (out / f).is_file(), f
    # the kit's model dirs hold the resolved config: it loads back with the tiny transforms
    assert yaml.safe_load((out / "last_model" / "model.yml").read_text())["iters"] == 2


def test_kit_loads_the_tools_run(trained):
    from gamma_kit.seg.predictor import load_model

    work, _ = trained
    model = load_model(work / "output", device="cpu")
    img = (np.random.default_rng(0).random((64, 80, 3)) * 255).astype(np.uint8)
    label = model.predict(img)["label_map"]
    assert label.shape == (64, 80) and set(np.unique(label)) <= {0, 1, 2}


def test_val_reports_pooled_iou(trained, monkeypatch):
    work, _ = trained
    res = _tool("val", "--config", CONFIGS / "liteunet_gamma_cpu.yml", "--model_path",
                "output/best_model/model.pdparams", "--device", "cpu", "--opts", *SMALL, cwd=work)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "[EVAL] #Images: 2 mIoU:" in res.stdout and "Loaded trained weights successfully" in res.stdout
    # the same numbers in process: miou is the mean of the 3 class IoUs
    monkeypatch.chdir(work)
    val = _load_tool("val")
    miou, acc, class_iou, _, _ = val.main(val.parse_args(
        ["--config", str(CONFIGS / "liteunet_gamma_cpu.yml"), "--model_path", str(work / "output/best_model/model.pdparams"),
         "--device", "cpu", "--opts", *SMALL]))
    assert np.asarray(class_iou).shape == (3,)
    assert float(miou) == pytest.approx(float(np.mean(class_iou)), abs=1e-6)
    assert f"mIoU: {float(miou):.4f}" in res.stdout


def test_predict_writes_paddleseg_outputs(trained):
    work, _ = trained
    images = work / "data" / "seg_prepared" / "JPEGImages"
    res = _tool("predict", "--config", CONFIGS / "liteunet_gamma_cpu.yml", "--model_path",
                "output/best_model/model.pdparams", "--image_path", images, "--save_dir", "output/result",
                "--device", "cpu", "--opts", *SMALL, cwd=work)
    assert res.returncode == 0, res.stderr[-3000:]
    import cv2

    preds = sorted((work / "output" / "result" / "pseudo_color_prediction").glob("*.png"))
    assert [p.stem for p in preds] == sorted(p.stem for p in images.glob("*.jpg"))
    lab = cv2.imread(str(preds[0]), cv2.IMREAD_UNCHANGED)
    assert lab.shape[:2] == (128, 160)            # back at the image size
    assert len(list((work / "output" / "result" / "added_prediction").glob("*"))) == len(preds)


def test_export_matches_dynamic(trained):
    import paddle
    from paddle import inference

    from gamma_kit.seg.compat import prepare_paddleseg
    from gamma_kit.seg.training import load_config

    work, _ = trained
    res = _tool("export", "--config", CONFIGS / "liteunet_gamma_cpu.yml", "--model_path",
                "output/best_model/model.pdparams", "--save_dir", "output/inference_model",
                "--input_shape", 1, 3, 32, 32, "--opts", *SMALL, cwd=work)
    assert res.returncode == 0, res.stderr[-3000:]
    exp = work / "output" / "inference_model"
    deploy = yaml.safe_load((exp / "deploy.yaml").read_text())["Deploy"]
    assert (exp / deploy["model"]).is_file() and (exp / deploy["params"]).is_file()
    assert deploy["input_shape"] == [1, 3, 32, 32] and deploy["output_op"] == "argmax"
    assert [t["type"] for t in deploy["transforms"]] == ["Resize", "Normalize"]

    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype("float32")
    config = inference.Config(str(exp / deploy["model"]), str(exp / deploy["params"]))
    config.disable_gpu()
    config.disable_mkldnn()          # Paddle 3.3.1's CPU predictor fails with oneDNN on (SPEC 4)
    predictor = inference.create_predictor(config)
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.copy_from_cpu(x)
    predictor.run()
    static = predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()

    prepare_paddleseg()
    from paddleseg.cvlibs import SegBuilder
    from paddleseg.utils import utils

    paddle.set_device("cpu")
    model = SegBuilder(load_config(CONFIGS / "liteunet_gamma_cpu.yml", opts=SMALL)).model
    utils.load_entire_model(model, str(work / "output/best_model/model.pdparams"))
    model.eval()
    dynamic = paddle.argmax(model(paddle.to_tensor(x))[0], axis=1).numpy()
    assert static.shape == (1, 32, 32)
    assert np.array_equal(static.astype(np.int64), dynamic.astype(np.int64))


@pytest.fixture(scope="module")
def fovea_weights(tmp_path_factory) -> Path:
    """A fovea checkpoint (the heatmap U-Net's state dict): weights of another model altogether."""
    import paddle

    from gamma_kit.fovea.model import FoveaUNet

    path = tmp_path_factory.mktemp("fovea") / "best.pdparams"
    paddle.save(FoveaUNet(width=4, levels=2).state_dict(), str(path))
    return path


@pytest.mark.parametrize("tool", ["val", "predict", "export"])
def test_weights_of_another_model_are_refused_in_one_line(trained, fovea_weights, tool):
    """PaddleSeg's loaders warn once per parameter and go on with random weights; the tools refuse
    (exit 2, one error line naming the file) before anything is evaluated or written."""
    work, _ = trained
    out = work / f"refused_{tool}"
    extra = {"val": [], "predict": ["--image_path", work / "data" / "seg_prepared" / "JPEGImages",
                                    "--save_dir", out],
             "export": ["--save_dir", out]}[tool]
    res = _tool(tool, "--config", CONFIGS / "liteunet_gamma_cpu.yml", "--model_path", fovea_weights,
                *(["--device", "cpu"] if tool != "export" else []), *extra, "--opts", *SMALL, cwd=work)
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and f"{fovea_weights} does not match the model" in last
    assert "parameter(s) missing" in last and "Traceback" not in res.stderr
    assert "Loaded trained" not in res.stdout and "[EVAL]" not in res.stdout
    assert not out.exists()


@pytest.fixture(scope="module")
def roi_trained(tmp_path_factory):
    """A two-stage model through tools/train.py: ``prepare --roi`` crops (48 px) in data/seg_prepared,
    the ROI CPU config, 2 iterations; its model dirs carry roi.json."""
    from gamma_kit.seg.model_dir import RoiSettings
    from gamma_kit.seg.prepare import prepare_dataset, split_dataset
    from seg_fixtures import make_tiny_seg_data

    work = tmp_path_factory.mktemp("tools_roi")
    task = make_tiny_seg_data(work / "gamma", n_train=4, n_test=2, size=(240, 160), seed=3)
    prepare_dataset(work / "gamma", work / "data" / "seg_prepared", roi=RoiSettings(size=48), progress=False)
    split_dataset(work / "data" / "seg_prepared", val_value=0.25, seed=0)
    res = _tool("train", "--config", CONFIGS / "roi_liteunet_cpu.yml", "--iters", 2, "--batch_size", 2,
                "--device", "cpu", "--seed", 0, "--save_dir", "output", "--opts", *SMALL, cwd=work)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (work / "output" / "last_model" / "roi.json").is_file()
    return work, task / "testing" / "fundus color images"


def test_predict_two_stage_model_on_full_photos(roi_trained):
    """tools/predict.py with a ROI model runs the kit's two-stage path on the full photos: PaddleSeg's
    outputs at each photo's size, the same labels as the kit's predictor (not the crop model run on the
    whole photo, which labelled 99.6 % of it disc rim)."""
    import cv2
    from PIL import Image

    from gamma_kit.data import read_image
    from gamma_kit.seg.predictor import load_model

    work, photos = roi_trained
    res = _tool("predict", "--config", CONFIGS / "roi_liteunet_cpu.yml", "--model_path",
                "output/last_model/model.pdparams", "--image_path", photos, "--save_dir", "output/result",
                "--device", "cpu", "--opts", *SMALL, cwd=work)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert res.stdout.count("two-stage (ROI) model") == 1
    kit = load_model(work / "output" / "last_model")
    assert kit.roi is not None
    names = sorted(p.name for p in photos.glob("*.jpg"))
    assert len(names) == 2
    for name in names:
        image = read_image(photos / name)
        result = work / "output" / "result"
        labels = np.array(Image.open(result / "pseudo_color_prediction" / name.replace(".jpg", ".png")))
        assert labels.shape == image.shape[:2]
        assert np.array_equal(labels, kit.predict_labels(image))
        assert (labels == 2).mean() > 0.5          # background outside the disc window
        added = cv2.imread(str(result / "added_prediction" / name))
        assert added.shape == image.shape


def test_predict_two_stage_refuses_paddleseg_aug_pred(roi_trained):
    work, photos = roi_trained
    res = _tool("predict", "--config", CONFIGS / "roi_liteunet_cpu.yml", "--model_path",
                "output/last_model/model.pdparams", "--image_path", photos, "--save_dir", "output/aug",
                "--device", "cpu", "--aug_pred", "--flip_horizontal", "--opts", *SMALL, cwd=work)
    assert res.returncode == 2
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --aug_pred") and "python -m gamma_kit.seg predict" in last
    assert not (work / "output" / "aug").exists()


def test_val_two_stage_config_says_the_scores_are_on_crops(roi_trained):
    work, _ = roi_trained
    res = _tool("val", "--config", CONFIGS / "roi_liteunet_cpu.yml", "--model_path",
                "output/last_model/model.pdparams", "--device", "cpu", "--opts", *SMALL, cwd=work)
    assert res.returncode == 0, res.stderr[-3000:]
    note = [line for line in res.stdout.splitlines() if "two-stage (ROI) config" in line]
    assert len(note) == 1 and "disc-centred crops" in note[0] and "python -m gamma_kit.seg predict" in note[0]
    assert re.search(r"\[EVAL\] #Images: \d+ mIoU:", res.stdout)


@pytest.mark.parametrize("name", ["unet_gamma_512.yml", "unet_gamma_512_mixedloss.yml"])
def test_train_main_recipes_in_process(name, tmp_path, monkeypatch):
    """The GPU recipe (DiceLoss) and its MixedLoss variant through tools/train.py's main, with --do_eval."""
    make_prepared(tmp_path, n_train=2, n_test=1, size=(48, 40), val_value=0.5)
    monkeypatch.chdir(tmp_path)
    train = _load_tool("train")
    train.main(train.parse_args(["--config", str(CONFIGS / name), "--iters", "1", "--batch_size", "1",
                                 "--log_iters", "1", "--device", "cpu", "--do_eval", "--save_dir", "out",
                                 "--opts", *SMALL]))
    assert (tmp_path / "out" / "best_model" / "model.pdparams").is_file()
    assert (tmp_path / "out" / "last_model" / "model.yml").is_file()


def test_train_crop_roi_travels(tmp_path, monkeypatch):
    root = make_prepared(tmp_path, n_train=2, n_test=1, size=(48, 40))
    (root / "crops.json").write_text(json.dumps({"roi": {"size": 160}}))
    monkeypatch.chdir(tmp_path)
    train = _load_tool("train")
    train.main(train.parse_args(["--config", str(CONFIGS / "liteunet_gamma_cpu.yml"), "--iters", "1",
                                 "--batch_size", "1", "--device", "cpu", "--save_dir", "out", "--opts", *SMALL]))
    assert json.loads((tmp_path / "out" / "last_model" / "roi.json").read_text()) == {"size": 160}


@pytest.mark.parametrize("args, message", [
    (["--iters", "0"], "--iters must be positive"),
    ([], "dataset_root 'data/seg_prepared' is not a folder"),
    (["--config", "configs/seg/no_such.yml"], "no_such.yml not found"),
])
def test_train_bad_input_is_one_line(args, message, tmp_path):
    base = ["--config", str(CONFIGS / "liteunet_gamma_cpu.yml"), "--device", "cpu"]
    res = _tool("train", *base, *args, cwd=tmp_path)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1] and "Traceback" not in res.stderr


def test_flags_and_defaults_are_paddleseg_s():
    train = _load_tool("train").parse_args(["--config", "x.yml"])
    assert (train.save_dir, train.save_interval, train.log_iters, train.num_workers, train.device,
            train.keep_checkpoint_max, train.do_eval, train.use_vdl, train.seed) == \
        ("./output", 1000, 10, 0, "gpu", 5, False, False, None)
    assert train.iters is train.batch_size is train.learning_rate is train.resume_model is train.opts is None
    pred = _load_tool("predict").parse_args(["--config", "x.yml"])
    assert pred.save_dir == "./output/result" and pred.device == "gpu"
    exp = _load_tool("export").parse_args(["--config", "x.yml", "--input_shape", "1", "3", "64", "64"])
    assert exp.save_dir == "./output/inference_model" and exp.input_shape == [1, 3, 64, 64]
    assert exp.output_op == "argmax"
    val = _load_tool("val").parse_args(["--config", "x.yml", "--model_path", "m.pdparams"])
    assert val.model_path == "m.pdparams" and val.num_workers == 0


def test_train_under_paddle_distributed_launch(tmp_path):
    """PaddleSeg's multi-device path, `python -m paddle.distributed.launch tools/train.py ...`, here with
    2 CPU processes: core.train initialises fleet (data parallel, degree 2); only rank 0 logs and saves."""
    make_prepared(tmp_path, n_train=4, n_test=1, size=(48, 40))
    res = subprocess.run(
        [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", "launch_log",
         str(TOOLS / "train.py"), "--config", str(CONFIGS / "liteunet_gamma_cpu.yml"), "--iters", "2",
         "--batch_size", "1", "--log_iters", "1", "--device", "cpu", "--save_dir", "out", "--opts", SMALL[0]],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    logs = [(tmp_path / "launch_log" / f"workerlog.{r}").read_text() for r in (0, 1)]
    assert res.returncode == 0, res.stdout[-2000:] + logs[0][-2000:] + logs[1][-2000:]
    for rank, log in enumerate(logs):
        assert f"rank_id: {rank}" in log and "dp_degree: 2" in log and "Traceback" not in log
    assert re.search(r"\[TRAIN\] epoch: \d+, iter: 2/2", logs[0]) and "[TRAIN]" not in logs[1]
    assert (tmp_path / "out" / "iter_2" / "model.pdparams").is_file()
    assert (tmp_path / "out" / "last_model" / "model.yml").is_file()
