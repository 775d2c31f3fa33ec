"""Static export of a trained segmentation model, and a CPU predictor for it.

``export_static(model_dir, out_dir)`` traces the model with ``paddle.jit.to_static``
(input (N, 3, h, w) float32 at the config's eval size) and saves it with
``paddle.jit.save``; Paddle 3.x writes ``model.json`` + ``model.pdiparams`` (older
versions ``model.pdmodel``). ``deploy.yml`` beside it records the eval transforms and
the input size. ``StaticPredictor`` runs it through ``paddle.inference`` on the CPU with
oneDNN disabled: Paddle 3.3.1's CPU predictor raises NotImplementedError with oneDNN
on (SPEC 4), which is also why PaddleSeg's ``deploy/python/infer.py`` does not run as is.

Pre-processing, flip TTA and the two-stage path are ``inference.PredictorCore``, shared with
the dynamic model (PaddleSeg transforms from ``deploy.yml``), so exported and dynamic
predictions agree. A two-stage model's ``roi.json`` is copied into the export.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import yaml

import gamma_kit  # noqa: F401  (thread settings before paddle)
from gamma_kit.data import atomic_write_text
from gamma_kit.runtime import InferenceModel
from gamma_kit.seg.inference import ROI_NAME, PredictorCore

__all__ = ["export_static", "StaticPredictor", "DEPLOY_NAME"]

DEPLOY_NAME = "deploy.yml"
MODEL_PREFIX = "model"


def _eval_size(transforms) -> tuple[int, int]:
    for op in transforms:
        if type(op).__name__ == "Resize":
            w, h = op.target_size
            return int(w), int(h)
    raise ValueError("the eval transforms have no Resize, so the exported input size is unknown")


def export_static(model_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Export the model of ``model_dir`` to ``out_dir`` (static graph + ``deploy.yml``); returns ``out_dir``."""
    import paddle

    from gamma_kit.safety import check_output_path
    from gamma_kit.seg.inference import load_model
    from gamma_kit.seg.training import MODEL_CONFIG_NAME

    check_output_path(out_dir, [model_dir], "export folder")
    predictor = load_model(model_dir, device="cpu")
    w, h = _eval_size(predictor.transforms)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = predictor.model
    model.eval()

    class _LogitsOnly(paddle.nn.Layer):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)[0]

    static = paddle.jit.to_static(_LogitsOnly(model),
                                  input_spec=[paddle.static.InputSpec([None, 3, h, w], "float32", "x")],
                                  full_graph=True)
    import shutil
    import tempfile

    from gamma_kit.safety import deferred_interrupts, fsync_replace

    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".export-"))
    try:   # written beside, then each file replaced: an interrupted export leaves the old one whole
        paddle.jit.save(static, str(tmp / MODEL_PREFIX))
        with deferred_interrupts():
            for f in sorted(tmp.iterdir()):
                fsync_replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cfg = yaml.safe_load((predictor.model_dir / MODEL_CONFIG_NAME).read_text()
                         if (predictor.model_dir / MODEL_CONFIG_NAME).is_file()
                         else (predictor.model_dir.parent / MODEL_CONFIG_NAME).read_text())
    deploy = {"Deploy": {"model": MODEL_PREFIX, "input_size": [w, h], "num_classes": predictor.num_classes,
                         "transforms": (cfg.get("val_dataset") or {}).get("transforms") or [
                             t for t in cfg["train_dataset"]["transforms"] if not t["type"].startswith("Random")],
                         "labels": {0: "cup", 1: "disc rim", 2: "background"}}}
    atomic_write_text(out / DEPLOY_NAME, yaml.safe_dump(deploy, sort_keys=False))
    if predictor.roi is not None:   # a two-stage model: the export carries its crop geometry
        atomic_write_text(out / ROI_NAME, json.dumps(predictor.roi.to_json(), indent=1))
    else:
        (out / ROI_NAME).unlink(missing_ok=True)
    return out


class StaticPredictor(PredictorCore):
    """CPU predictor for an exported model (``paddle.inference``, oneDNN off), on the same
    ``inference.PredictorCore`` as the dynamic model (transforms, TTA, two-stage ROI path).

    ``predict_labels(image)`` -> (H, W) uint8 labels (0 cup, 1 rim, 2 background) at the source size.
    An export of a two-stage model carries its ``roi.json``; ``stage1`` is as for ``SegPredictor``.
    """

    def __init__(self, export_dir: str | os.PathLike, cpu_threads: int | None = None, stage1=None):
        from paddleseg.cvlibs import manager

        import gamma_kit.seg.models  # noqa: F401
        from gamma_kit.seg.inference import read_roi

        d = Path(export_dir)
        if not d.is_dir():
            raise FileNotFoundError(f"export folder {d} does not exist (python -m gamma_kit.seg export)")
        deploy_path = d / DEPLOY_NAME
        if not deploy_path.is_file():
            raise FileNotFoundError(f"{deploy_path} not found: export first (python -m gamma_kit.seg export)")
        try:
            deploy = yaml.safe_load(deploy_path.read_text())["Deploy"]
            transforms = [dict(t) for t in deploy["transforms"]]
            num_classes = int(deploy["num_classes"])
        except (yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{deploy_path}: not a deploy file written by export ({type(exc).__name__}: {exc})") \
                from exc
        self.model = InferenceModel(d / deploy.get("model", MODEL_PREFIX), cpu_threads=cpu_threads)
        ops = []
        for t in transforms:
            ops.append(manager.TRANSFORMS[t.pop("type")](**t))
        super().__init__(ops, num_classes, read_roi(d), stage1)
        self.export_dir = d

    def _forward(self, x: np.ndarray) -> np.ndarray:
        return self.model.run(x)
