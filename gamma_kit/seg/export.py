"""Static export of a trained segmentation model, and a CPU predictor for it.

``export_static(model_dir, out_dir)`` traces the model with ``paddle.jit.to_static``
(input (N, 3, h, w) float32 at the config's eval size) and saves it with
``paddle.jit.save``; Paddle 3.x writes ``model.json`` + ``model.pdiparams`` (older
versions ``model.pdmodel``). ``deploy.yml`` beside it records the eval transforms and
the input size. ``StaticPredictor`` runs it through ``paddle.inference`` on the CPU with
oneDNN disabled: Paddle 3.3.1's CPU predictor raises NotImplementedError with oneDNN
on (SPEC 4), which is also why PaddleSeg's ``deploy/python/infer.py`` does not run as is.

Pre-processing is the same function as in training/eval (PaddleSeg transforms from
``deploy.yml``), so exported and dynamic predictions agree.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import yaml

import gamma_kit  # noqa: F401  (thread settings before paddle)
from gamma_kit.data import atomic_write_text, read_image

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

    from gamma_kit.seg.inference import load_model
    from gamma_kit.seg.training import MODEL_CONFIG_NAME

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
    paddle.jit.save(static, str(out / MODEL_PREFIX))
    cfg = yaml.safe_load((predictor.model_dir / MODEL_CONFIG_NAME).read_text()
                         if (predictor.model_dir / MODEL_CONFIG_NAME).is_file()
                         else (predictor.model_dir.parent / MODEL_CONFIG_NAME).read_text())
    deploy = {"Deploy": {"model": MODEL_PREFIX, "input_size": [w, h], "num_classes": predictor.num_classes,
                         "transforms": (cfg.get("val_dataset") or {}).get("transforms") or [
                             t for t in cfg["train_dataset"]["transforms"] if not t["type"].startswith("Random")],
                         "labels": {0: "cup", 1: "disc rim", 2: "background"}}}
    atomic_write_text(out / DEPLOY_NAME, yaml.safe_dump(deploy, sort_keys=False))
    return out


class StaticPredictor:
    """CPU predictor for an exported model (``paddle.inference``, oneDNN off).

    ``predict_labels(image)`` -> (H, W) uint8 labels (0 cup, 1 rim, 2 background) at the source size.
    """

    def __init__(self, export_dir: str | os.PathLike, cpu_threads: int | None = None):
        import paddle.inference as paddle_infer
        from paddleseg.cvlibs import manager

        import gamma_kit.seg.models  # noqa: F401

        d = Path(export_dir)
        deploy_path = d / DEPLOY_NAME
        if not deploy_path.is_file():
            raise FileNotFoundError(f"{deploy_path} not found: export first (python -m gamma_kit.seg export)")
        deploy = yaml.safe_load(deploy_path.read_text())["Deploy"]
        prefix = d / deploy.get("model", MODEL_PREFIX)
        params = prefix.with_suffix(".pdiparams")
        graph = next((prefix.with_suffix(s) for s in (".json", ".pdmodel") if prefix.with_suffix(s).is_file()), None)
        if graph is None or not params.is_file():
            raise FileNotFoundError(f"{d}: no exported model ({prefix.name}.json or .pdmodel, plus .pdiparams)")
        config = paddle_infer.Config(str(graph), str(params))
        config.disable_gpu()
        config.disable_mkldnn()
        config.set_cpu_math_library_num_threads(cpu_threads or int(os.environ.get("OMP_NUM_THREADS", "1")))
        config.disable_glog_info()
        self.predictor = paddle_infer.create_predictor(config)
        self.transforms = []
        for t in deploy["transforms"]:
            t = dict(t)
            self.transforms.append(manager.TRANSFORMS[t.pop("type")](**t))
        self.num_classes = int(deploy["num_classes"])

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """RGB uint8 (H, W, 3) -> (1, 3, h, w) float32."""
        data = {"img": np.asarray(image).astype("float32"), "trans_info": [], "gt_fields": []}
        for op in self.transforms:
            data = op(data)
        return np.ascontiguousarray(data["img"].transpose(2, 0, 1)[None], dtype=np.float32)

    def logits(self, image: np.ndarray) -> np.ndarray:
        """(C, h, w) float32 logits at the exported input size."""
        x = self.preprocess(image)
        handle = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        handle.reshape(x.shape)
        handle.copy_from_cpu(x)
        self.predictor.run()
        out = self.predictor.get_output_handle(self.predictor.get_output_names()[0])
        return out.copy_to_cpu()[0]

    def predict_labels(self, image: np.ndarray | str | os.PathLike, upsample: str = "nearest") -> np.ndarray:
        """(H, W) uint8 labels at the source size (``inference.labels_at_size``)."""
        from gamma_kit.seg.inference import labels_at_size

        if not isinstance(image, np.ndarray):
            image = read_image(image)
        return labels_at_size(self.logits(image), (image.shape[1], image.shape[0]), upsample)
