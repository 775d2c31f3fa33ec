"""The ONNX path (issue 20.5, the onnx extra): export --format onnx converts each exported graph with
paddle2onnx, predict --onnx runs it with onnxruntime through the same chains; fovea positions agree with
Paddle Inference's within 0.5 px, seg masks are equal; an export without model.onnx is refused in one
line. Skipped where paddle2onnx / onnxruntime are not installed."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gamma_kit.engine import onnx_available

pytestmark = pytest.mark.skipif(not onnx_available(),
                                reason="the onnx extra (paddle2onnx, onnxruntime) is not installed")


@pytest.fixture(scope="module")
def fovea_export(tmp_path_factory):
    from fovea_fixtures import random_run, tiny_synth
    from gamma_kit.data import load_fovea_split
    from gamma_kit.fovea.export import export_static

    tmp = tmp_path_factory.mktemp("onnx_fovea")
    run, _ = random_run(tmp / "run", seeds=(3, 4))
    images = load_fovea_split(tiny_synth(tmp / "data", 0, 4, seed=7), "testing").images
    return export_static(run, tmp / "export", onnx=True), images, tmp


def test_fovea_onnx_positions_agree_with_paddle_inference(fovea_export):
    from gamma_kit.fovea.predict import predict

    export, images, tmp = fovea_export
    assert sorted(p.name for p in (export / "fold1").iterdir()) == ["config.yml", "model.json", "model.onnx",
                                                                    "model.pdiparams"]
    paddle = predict(None, images, tmp / "paddle.csv", exported=export, device="cpu", progress=False, flip=True)
    onnx = predict(None, images, tmp / "onnx.csv", exported=export, device="cpu", progress=False, flip=True,
                   backend="onnx")
    diff = np.abs(paddle["predictions"].to_numpy() - onnx["predictions"].to_numpy())
    assert onnx["n_models"] == 2 and diff.max() < 0.5


def test_fovea_cli_predict_onnx_and_an_export_without_it(fovea_export, tmp_path, capsys):
    from gamma_kit.fovea.__main__ import main
    from gamma_kit.fovea.export import export_static

    export, images, tmp = fovea_export
    folder = next(iter(images.values())).parent
    assert main(["predict", "--onnx", str(export), "--images", str(folder), "--out", str(tmp_path / "s.csv"),
                 "--device", "cpu", "--no-progress"]) == 0
    assert list(pd.read_csv(tmp_path / "s.csv").columns) == ["data", "Fovea_X", "Fovea_Y"]
    plain = export_static(tmp / "run", tmp_path / "plain")
    capsys.readouterr()
    assert main(["predict", "--onnx", str(plain), "--images", str(folder), "--out", str(tmp_path / "t.csv"),
                 "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no ONNX model; export with --format onnx" in err


def test_seg_onnx_masks_equal_paddle_inference(tmp_path):
    import paddle
    from paddleseg.cvlibs import SegBuilder

    from gamma_kit.seg.export import StaticPredictor, export_static
    from gamma_kit.seg.model_dir import MODEL_CONFIG_NAME, WEIGHTS_NAME, RoiSettings, write_roi
    from gamma_kit.seg.submission import predict_folder
    from gamma_kit.seg.training import load_config
    from seg_fixtures import make_tiny_seg_data, small_transforms

    model = tmp_path / "model"
    model.mkdir()
    cfg = load_config("roi_liteunet_cpu.yml", opts=list(small_transforms(64)))
    paddle.seed(1)
    paddle.save(SegBuilder(cfg).model.state_dict(), str(model / WEIGHTS_NAME))
    (model / MODEL_CONFIG_NAME).write_text(str(cfg))
    write_roi(model, RoiSettings(size=64))
    export = export_static(model, tmp_path / "export", onnx=True)
    images = make_tiny_seg_data(tmp_path / "data", n_train=0, n_test=3, size=(240, 160), seed=2) / "testing" / \
        "fundus color images"
    runs = {backend: predict_folder(StaticPredictor(export, device="cpu", backend=backend), images,
                                    tmp_path / backend, progress=False, log=lambda *_: None)
            for backend in ("paddle", "onnx")}
    for i in runs["paddle"].ids:
        a, b = ((runs[k].pred_dir / f"{i}.bmp").read_bytes() for k in ("paddle", "onnx"))
        assert a == b, i
