"""Exports run under PaddleSeg's own deployment script (issue 16.3): the unmodified
``deploy/python/infer.py`` of PaddleSeg 2.9.1 (its package from the vendored source tree) and
2.8.0 (pip paddleseg), run as a user runs it, on CPU, on folders from ``python -m gamma_kit.seg
export`` and from ``tools/export.py`` of tiny trained models. infer.py's label PNGs must equal the
kit's predictor's labels on the same photos.

infer.py writes masks at the network's input size (it has no resize back): they are compared with
the kit's arg-max at that size and, resized nearest, with the kit's labels at the photo's size.
A two-stage model's infer.py input is the disc-centred crop the kit cuts (infer.py has no stage 1),
so it is compared on those crops. infer.py catches a failing ``create_predictor`` and exits 0
having written nothing: every run here checks that each expected PNG exists.

The vendored trees live at ``../shared/vendor`` beside the repository; the tests skip without them.
The kit's side (the old export format still read, the device choice) runs always.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

import gamma_kit  # noqa: F401
from seg_fixtures import dataset_opts, make_tiny_seg_data

pytestmark = pytest.mark.slow   # the fast loop: python -m pytest -q -m "not slow"

REPO = Path(__file__).resolve().parents[1]
VENDOR = REPO.parent / "shared" / "vendor"
CONFIGS = REPO / "configs" / "seg"
VERSIONS = ("2.9.1", "2.8.0")
TEST_IDS = ("0007", "0008", "0009")


def _vendor(version: str) -> Path:
    root = VENDOR / f"PaddleSeg-{version}"
    if not (root / "deploy" / "python" / "infer.py").is_file():
        pytest.skip(f"PaddleSeg {version}'s deploy/python/infer.py not present under {VENDOR}")
    return root


def infer(version: str, deploy: Path, images: Path, save_dir: Path, *flags: str) -> dict[str, np.ndarray]:
    """Run PaddleSeg ``version``'s infer.py as a user does (2.9.1: its package on PYTHONPATH; 2.8.0:
    the pip package) and return {stem: (h, w) uint8 labels} read back from its PNGs; fails when it
    exits non-zero or leaves an image without its PNG (it exits 0 when its predictor fails)."""
    root = _vendor(version)
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if version != "2.8.0":
        env["PYTHONPATH"] = str(root)
    res = subprocess.run([sys.executable, str(root / "deploy" / "python" / "infer.py"), "--config", str(deploy),
                          "--image_path", str(images), "--save_dir", str(save_dir), "--device", "cpu", *flags],
                         env=env, capture_output=True, text=True, timeout=600)
    log = res.stdout[-3000:] + res.stderr[-3000:]
    assert res.returncode == 0 and "Traceback" not in res.stderr, log
    stems = sorted(p.stem for p in images.iterdir())
    written = sorted(p.stem for p in save_dir.glob("*.png")) if save_dir.is_dir() else []
    assert written == stems, f"infer.py wrote {written} for {stems}:\n{log}"
    return {s: np.array(Image.open(save_dir / f"{s}.png")) for s in stems}   # palette indices = labels


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny photos; a whole-image and a two-stage model (4 iterations each, 32 px) through the kit's CLI."""
    from gamma_kit.seg.__main__ import main

    tmp = tmp_path_factory.mktemp("deploy")
    task = make_tiny_seg_data(tmp / "gamma", n_train=6, n_test=3, size=(240, 160), seed=3)
    for prep, flags in (("whole_prep", []), ("roi_prep", ["--roi", "--roi-size", "48"])):
        assert main(["prepare", "--data-root", str(tmp / "gamma"), "--out", str(tmp / prep), *flags]) == 0
        assert main(["split", "--dataset-dir", str(tmp / prep), "--val-value", "0.2"]) == 0
    for cfg, prep, run in (("liteunet_gamma_cpu.yml", "whole_prep", "whole"),
                           ("roi_liteunet_cpu.yml", "roi_prep", "roi")):
        assert main(["train", "--config", str(CONFIGS / cfg), "--save-dir", str(tmp / run), "--iters", "4",
                     "--batch-size", "2", "--device", "cpu", "--seed", "0", "--no-eval",     # 4-5 training images
                     "--opts", *dataset_opts(tmp / prep)]) == 0
    photos = tmp / "photos"
    shutil.copytree(task / "testing" / "fundus color images", photos)
    assert sorted(p.stem for p in photos.iterdir()) == list(TEST_IDS)
    return tmp, photos


@pytest.fixture(scope="module")
def exports(runs):
    """{(route, run): export folder}: ``seg export`` and ``tools/export.py`` (argmax; none for logits)."""
    from gamma_kit.seg.__main__ import main

    tmp, _ = runs
    out = {}
    for run in ("whole", "roi"):
        assert main(["export", "--model", str(tmp / run), "--out", str(tmp / f"seg_export_{run}")]) == 0
        out[("seg export", run)] = tmp / f"seg_export_{run}"
        for op in ("argmax", "none"):
            d = tmp / f"tools_export_{run}_{op}"
            res = subprocess.run([sys.executable, str(REPO / "tools" / "export.py"),
                                  "--config", str(tmp / run / "model.yml"),
                                  "--model_path", str(tmp / run / "last_model" / "model.pdparams"),
                                  "--save_dir", str(d), "--output_op", op], capture_output=True, text=True, timeout=600)
            assert res.returncode == 0, res.stderr[-3000:]
            out[(f"tools/export.py --output_op {op}", run)] = d
    return out


def test_exports_are_paddleseg_deploy_folders(exports):
    for (route, run), d in exports.items():
        deploy = yaml.safe_load((d / "deploy.yaml").read_text())["Deploy"]
        assert deploy["model"] == "model.pdmodel" and deploy["params"] == "model.pdiparams", route
        assert (d / "model.pdmodel").stat().st_size and (d / "model.pdiparams").stat().st_size
        assert not (d / "model.json").exists() and not (d / "deploy.yml").exists() and not list(d.glob(".export-*"))
        assert [t["type"] for t in deploy["transforms"]] == ["Resize", "Normalize"]
        if route == "seg export":   # infer.py reads the labels (output 0); the kit the logits (output 1)
            assert (deploy["output_op"], deploy["output_dtype"], deploy["logits_output"]) == ("argmax", "int32", 1)
            assert deploy["num_classes"] == 3 and deploy["input_size"] == [32, 32]
            assert deploy["input_shape"] == [None, 3, 32, 32]
            assert (d / "roi.json").is_file() == (run == "roi")
        else:
            assert deploy["input_shape"] == [None, 3, None, None] and "num_classes" not in deploy


def _crops(predictor, photos: Path, out: Path) -> dict[str, np.ndarray]:
    """The disc-centred crops the kit's two-stage path feeds its network (at ``roi.size``, before the
    eval transforms) written as PNG (lossless) under ``out``; returns {id: crop label map at the
    network size}."""
    from gamma_kit.crop import DiscCrop
    from gamma_kit.data import read_image, write_image

    labels = {}
    for p in sorted(photos.iterdir()):
        image = read_image(p)
        pred = predictor.predict_photo(image, name=p.name)
        g = pred.crop
        crop = DiscCrop(g.image_size, g.x0, g.y0, g.side, predictor.roi.size)   # g samples at the network size
        write_image(out / f"{p.stem}.png", crop.crop_image(image))
        labels[p.stem] = pred.crop_labels
    return labels


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("route", ["seg export", "tools/export.py --output_op argmax",
                                   "tools/export.py --output_op none"])
def test_infer_py_masks_equal_the_kits_whole_image(runs, exports, route, version, tmp_path):
    """Whole-image model: infer.py on the photos, with its default flags (``--with_argmax`` for the
    logits export, as PaddleSeg documents it), equals the kit's labels (dynamic model; for ``seg
    export`` the kit's exported predictor too) at the network size and at the photo's size."""
    from gamma_kit.data import read_image
    from gamma_kit.seg.export import StaticPredictor
    from gamma_kit.seg.predictor import load_model

    tmp, photos = runs
    flags = ("--with_argmax",) if route.endswith("none") else ()
    masks = infer(version, exports[(route, "whole")] / "deploy.yaml", photos, tmp_path / "out", *flags)
    kits = [load_model(tmp / "whole")] + ([StaticPredictor(exports[(route, "whole")])] if route == "seg export" else [])
    for stem, mask in masks.items():
        image = read_image(photos / f"{stem}.jpg")
        assert mask.shape == (32, 32) and set(np.unique(mask)) <= {0, 1, 2}
        for kit in kits:
            assert np.array_equal(mask, kit.logits(image).argmax(axis=0))
            full = cv2.resize(mask, image.shape[1::-1], interpolation=cv2.INTER_NEAREST)
            assert np.array_equal(full, kit.predict_labels(image))


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("route", ["seg export", "tools/export.py --output_op none"])
def test_infer_py_masks_equal_the_kits_on_two_stage_crops(runs, exports, route, version, tmp_path):
    """Two-stage model: infer.py has no stage 1, so it gets the kit's disc-centred crops; its masks
    equal the crop label maps the kit pastes back (dynamic model and, for seg export, the export)."""
    from gamma_kit.seg.export import StaticPredictor
    from gamma_kit.seg.predictor import load_model

    tmp, photos = runs
    kits = [load_model(tmp / "roi")] + ([StaticPredictor(exports[(route, "roi")])] if route == "seg export" else [])
    assert kits[0].roi is not None and kits[0].roi.size == 48
    crops = tmp_path / "crops"
    expected = _crops(kits[0], photos, crops)
    flags = ("--with_argmax",) if route.endswith("none") else ()
    masks = infer(version, exports[(route, "roi")] / "deploy.yaml", crops, tmp_path / "out", *flags)
    for kit in kits[1:]:
        assert all(np.array_equal(kit_lab, expected[s]) for s, kit_lab in _crops(kit, photos, tmp_path / "c2").items())
    for stem, mask in masks.items():
        assert mask.shape == (32, 32)
        assert np.array_equal(mask, expected[stem])


def test_infer_py_with_onednn_on_the_legacy_program(runs, exports, tmp_path):
    """``--enable_mkldnn True`` failed on the PIR program; on the legacy one it runs and agrees."""
    tmp, photos = runs
    d = exports[("seg export", "whole")] / "deploy.yaml"
    plain = infer("2.9.1", d, photos, tmp_path / "plain")
    onednn = infer("2.9.1", d, photos, tmp_path / "onednn", "--enable_mkldnn", "True")
    assert all(np.array_equal(plain[s], onednn[s]) for s in plain)


def test_kit_reads_its_older_exports(runs, tmp_path):
    """Folders written before this format (``deploy.yml``: a ``model`` prefix, one logits output,
    Paddle 3's ``model.json``) still load and predict as the trained model does."""
    import paddle

    from gamma_kit.data import read_image
    from gamma_kit.seg.export import StaticPredictor
    from gamma_kit.seg.predictor import load_model

    tmp, photos = runs
    dyn = load_model(tmp / "whole")

    class Logits(paddle.nn.Layer):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)[0]

    old = tmp_path / "old_export"
    static = paddle.jit.to_static(Logits(dyn.model), full_graph=True,
                                  input_spec=[paddle.static.InputSpec([None, 3, 32, 32], "float32", "x")])
    paddle.jit.save(static, str(old / "model"))       # Paddle 3.x default: the PIR program
    transforms = yaml.safe_load((tmp / "whole" / "model.yml").read_text())["val_dataset"]["transforms"]
    (old / "deploy.yml").write_text(yaml.safe_dump({"Deploy": {"model": "model", "input_size": [32, 32],
                                                               "num_classes": 3, "transforms": transforms}}))
    kit = StaticPredictor(old, device="cpu")
    assert kit.model.graph.name == ("model.json" if (old / "model.json").is_file() else "model.pdmodel")
    for p in sorted(photos.iterdir()):
        image = read_image(p)
        assert np.array_equal(kit.predict_labels(image, tta=True), dyn.predict_labels(image, tta=True))
    # exporting again into that folder replaces the old format: no stale graph or deploy.yml is left to pick up
    from gamma_kit.seg.__main__ import main

    assert main(["export", "--model", str(tmp / "whole"), "--out", str(old)]) == 0
    assert sorted(p.name for p in old.iterdir()) == ["deploy.yaml", "model.pdiparams", "model.pdiparams.info",
                                                      "model.pdmodel"]
    assert StaticPredictor(old).model.graph.name == "model.pdmodel"


def test_kit_refuses_a_paddleseg_export_in_one_line(exports):
    from gamma_kit.seg.export import StaticPredictor

    with pytest.raises(ValueError, match=r"a PaddleSeg export \(tools/export.py, output argmax\).*"
                                         r"python -m gamma_kit.seg export"):
        StaticPredictor(exports[("tools/export.py --output_op argmax", "whole")])


def test_exported_predictor_device(exports, monkeypatch):
    """``device`` reaches Paddle Inference: ``auto`` is the CPU here, and a GPU (the query mocked) when
    Paddle sees one, the launcher's GPU under ``paddle.distributed.launch``; Paddle's global device
    is left alone; ``gpu`` without one is one line."""
    import paddle

    from gamma_kit.seg.export import StaticPredictor

    if paddle.device.is_compiled_with_cuda():
        pytest.skip("the GPU query is mocked on a CPU build; a CUDA build has its own devices")
    d = exports[("seg export", "whole")]
    before = paddle.get_device()
    assert StaticPredictor(d).device == "cpu" and StaticPredictor(d, device="cpu").device == "cpu"
    with pytest.raises(ValueError, match="--device gpu was asked for"):
        StaticPredictor(d, device="gpu")
    monkeypatch.setattr(paddle.device, "is_compiled_with_cuda", lambda: True)
    monkeypatch.setattr(paddle.device.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("FLAGS_selected_gpus", raising=False)
    # a CPU build given a GPU config logs an error and runs on the CPU, so the predictor is still built
    assert StaticPredictor(d, device="auto").device == "gpu:0"
    monkeypatch.setenv("FLAGS_selected_gpus", "1")
    assert StaticPredictor(d, device="gpu").device == "gpu:1"
    assert StaticPredictor(d, device="cpu").device == "cpu"
    assert paddle.get_device() == before
