"""Static export of a trained segmentation model, in the form PaddleSeg's deployment script runs,
and the kit's predictor for it.

Format (one for ``python -m gamma_kit.seg export`` and ``tools/export.py``): ``model.pdmodel`` +
``model.pdiparams``, Paddle's legacy program format, and ``deploy.yaml`` with PaddleSeg's
``Deploy`` keys (``model``, ``params``, ``transforms``, ``input_shape``, ``output_op``,
``output_dtype``). Paddle 3.x writes its new PIR format (``model.json``) by default, which
PaddleSeg 2.8.0 / 2.9.1 ``deploy/python/infer.py`` cannot run on Paddle 3.3.1: it calls
``enable_memory_optim()`` unconditionally, and Paddle Inference fails on a PIR program with it
("Not find predictor_id 0 and pass_name memory_optimize_pass"); infer.py then exits 0 having
written nothing. ``legacy_program()`` therefore saves with PIR off. The legacy program runs under
infer.py with its default flags, and with ``--enable_mkldnn True`` too.

``paddle.argmax`` has no legacy-program form in Paddle 3.3 (it only takes PIR values), so the
``argmax`` head is the top-1 index (``paddle.topk``), cast to int32 as PaddleSeg's is.

``export_static`` writes two outputs: output 0 the int32 label map (N, h, w) that infer.py saves
as it is (``output_op: argmax``, no ``--with_argmax``), output 1 the logits (N, C, h, w) the kit
needs (flip TTA, bilinear upsampling); ``deploy.yaml`` adds the kit's keys ``num_classes``,
``input_size`` (w, h), ``labels``, ``logits_output: 1`` and ``two_stage`` (true for a model trained
on crops). A two-stage model's ``roi.json`` is copied beside it; ``StaticPredictor`` refuses an
export that says ``two_stage: true`` without one, as ``model_dir`` refuses such a model folder.
infer.py's masks are at the network's input size (it does not resize back) and, for a two-stage
model, of the disc-centred crop it is given.

``StaticPredictor`` runs such an export (and the kit's older exports: ``deploy.yml``, one logits
output, ``model.json``) through ``gamma_kit.engine.InferenceModel`` on ``predictor.PredictorCore``,
the same pre-processing, TTA and two-stage path as the dynamic model.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import yaml

import gamma_kit  # noqa: F401  (thread settings before paddle)
import paddle
from gamma_kit.safety import atomic_write_text
from gamma_kit.engine import ONNX_NAME, InferenceModel, OnnxModel, to_onnx
from gamma_kit.seg.model_dir import config_path, folder_roi, write_roi
from gamma_kit.seg.predictor import PredictorCore, build_transforms, eval_transform_specs

__all__ = ["export_static", "StaticPredictor", "OutputHead", "save_inference_model", "deploy_info",
           "legacy_program", "DEPLOY_NAME", "OLD_DEPLOY_NAME", "OUTPUT_OPS"]

DEPLOY_NAME = "deploy.yaml"       # PaddleSeg's name: infer.py --config EXPORT/deploy.yaml
OLD_DEPLOY_NAME = "deploy.yml"    # the kit's exports before this format (read, never written)
MODEL_PREFIX = "model"
OUTPUT_OPS = ("argmax", "softmax", "none")   # tools/export.py --output_op
LABELS = {0: "cup", 1: "disc rim", 2: "background"}


def legacy_program():
    """Context in which ``paddle.jit.save`` writes the legacy program (``.pdmodel``), not PIR
    (``.json``): ``paddle.pir_utils.DygraphOldIrGuard`` on Paddle 3.x; nothing to do on Paddle 2.x,
    where PIR is off."""
    from paddle import pir_utils

    guard = getattr(pir_utils, "DygraphOldIrGuard", None)
    return guard() if guard is not None else contextlib.nullcontext()


class OutputHead(paddle.nn.Layer):
    """A PaddleSeg model's first output, logits (N, C, H, W), as the outputs ``ops`` name, in
    order: ``argmax`` -> (N, H, W) int32 labels, ``softmax`` -> (N, C, H, W) float32, ``none`` ->
    the logits. PaddleSeg's ``WrappedModel`` with argmax cannot be saved as a legacy program on
    Paddle 3.3 (see the module docstring)."""

    def __init__(self, model, ops=("argmax",)):
        super().__init__()
        unknown = [op for op in ops if op not in OUTPUT_OPS]
        if unknown or not ops:
            raise ValueError(f"output ops must be some of {OUTPUT_OPS}, got {list(ops)}")
        self.model = model
        self.ops = tuple(ops)

    def forward(self, x):
        logits = self.model(x)[0]
        outs = []
        for op in self.ops:
            if op == "argmax":
                top = paddle.topk(logits, k=1, axis=1)[1]
                outs.append(paddle.cast(paddle.squeeze(top, axis=1), "int32"))
            elif op == "softmax":
                outs.append(paddle.nn.functional.softmax(logits, axis=1))
            else:
                outs.append(logits)
        return outs


def save_inference_model(layer, input_shape, out_dir: str | os.PathLike, prefix: str = MODEL_PREFIX) -> Path:
    """Trace ``layer`` (``paddle.jit.to_static``, input ``input_shape`` float32, None = any) and save
    it as ``out_dir/prefix.pdmodel`` + ``.pdiparams`` (``legacy_program``), written beside and then
    each file replaced, so an interrupted export leaves the old one whole. A graph of the other format
    left by an earlier export under the same prefix is removed. Returns the graph file."""
    from gamma_kit.safety import deferred_interrupts, fsync_replace

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layer.eval()
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".export-"))
    try:
        with legacy_program():
            static = paddle.jit.to_static(layer, full_graph=True,
                                          input_spec=[paddle.static.InputSpec(list(input_shape), "float32", "x")])
            paddle.jit.save(static, str(tmp / prefix))
        written = sorted(tmp.iterdir())
        graph = next(f for f in written if f.name in (f"{prefix}.pdmodel", f"{prefix}.json"))
        with deferred_interrupts():
            for f in written:
                fsync_replace(f, out / f.name)
            for stale in {f"{prefix}.pdmodel", f"{prefix}.json"} - {graph.name}:
                (out / stale).unlink(missing_ok=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out / graph.name


def deploy_info(graph: Path, transforms: list, input_shape, output_op: str, **kit_keys) -> dict:
    """PaddleSeg's ``deploy.yaml`` content (as its ``tools/export.py`` writes it) for ``graph``,
    plus ``kit_keys`` (the kit's own, which PaddleSeg's ``DeployConfig`` ignores)."""
    return {"Deploy": {"model": graph.name, "params": graph.with_suffix(".pdiparams").name,
                       "transforms": transforms, "input_shape": list(input_shape), "output_op": output_op,
                       "output_dtype": "int32" if output_op == "argmax" else "float32", **kit_keys}}


def _eval_size(transforms) -> tuple[int, int]:
    for op in transforms:
        if type(op).__name__ == "Resize":
            w, h = op.target_size
            return int(w), int(h)
    raise ValueError("the eval transforms have no Resize, so the exported input size is unknown")


def export_static(model_dir: str | os.PathLike, out_dir: str | os.PathLike, whole_image: bool = False,
                  onnx: bool = False) -> Path:
    """Export the model of ``model_dir`` to ``out_dir`` (see the module docstring); returns ``out_dir``.
    ``whole_image``: as for ``predictor.load_model`` (a crop-trained folder without ``roi.json``).
    ``onnx``: also ``model.onnx`` (``engine.to_onnx``; the ``onnx`` extra), named in ``deploy.yaml``."""
    from gamma_kit.safety import check_output_path
    from gamma_kit.seg.predictor import load_model

    check_output_path(out_dir, [model_dir], "export folder")
    predictor = load_model(model_dir, device="cpu", whole_image=whole_image)
    w, h = _eval_size(predictor.transforms)
    out = Path(out_dir)
    graph = save_inference_model(OutputHead(predictor.model, ("argmax", "none")), [None, 3, h, w], out)
    transforms = eval_transform_specs(yaml.safe_load(config_path(predictor.model_dir).read_text()))
    extra = {}
    if onnx:
        to_onnx(graph, graph.with_suffix(".pdiparams"), out / ONNX_NAME)
        extra["onnx"] = ONNX_NAME
    else:
        (out / ONNX_NAME).unlink(missing_ok=True)       # an earlier export's; it holds the replaced graph
    deploy = deploy_info(graph, transforms, [None, 3, h, w], "argmax", logits_output=1, input_size=[w, h],
                         num_classes=predictor.num_classes, labels=LABELS, two_stage=predictor.roi is not None,
                         **extra)
    atomic_write_text(out / DEPLOY_NAME, yaml.safe_dump(deploy, sort_keys=False))
    (out / OLD_DEPLOY_NAME).unlink(missing_ok=True)   # an earlier export's; it names the replaced graph
    write_roi(out, predictor.roi)   # a two-stage model: the export carries its crop geometry
    return out


def read_deploy(export_dir: Path) -> tuple[Path, dict]:
    """(path, ``Deploy`` dict) of the kit's export in ``export_dir``: ``deploy.yaml``, else an older
    export's ``deploy.yml``. One-line errors for a missing folder or file, YAML that is not a kit
    export, and a PaddleSeg ``tools/export.py`` export (labels only, no logits)."""
    if not export_dir.is_dir():
        raise FileNotFoundError(f"export folder {export_dir} does not exist (python -m gamma_kit.seg export)")
    path = next((p for p in (export_dir / DEPLOY_NAME, export_dir / OLD_DEPLOY_NAME) if p.is_file()), None)
    if path is None:
        raise FileNotFoundError(f"{export_dir / DEPLOY_NAME} not found: export first (python -m gamma_kit.seg export)")
    try:
        deploy = yaml.safe_load(path.read_text())["Deploy"]
        deploy["transforms"] = [dict(t) for t in deploy["transforms"]]
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a deploy file written by export ({type(exc).__name__}: {exc})") from exc
    if "num_classes" not in deploy:
        raise ValueError(f"{path}: a PaddleSeg export (tools/export.py, output {deploy.get('output_op', '?')}) "
                         "without the logits and class count the kit's predictor needs; PaddleSeg's "
                         "deploy/python/infer.py runs it; for --exported use python -m gamma_kit.seg export")
    return path, deploy


class StaticPredictor(PredictorCore):
    """Predictor for an exported model (``paddle.inference``; oneDNN off on the CPU), on the same
    ``predictor.PredictorCore`` as the dynamic model (transforms, TTA, two-stage ROI path).

    ``predict_labels(image)`` -> (H, W) uint8 labels (0 cup, 1 rim, 2 background) at the source size.
    ``device``: ``auto`` (a GPU when Paddle sees one), ``cpu``, ``gpu`` or ``gpu:<k>``; Paddle's
    global device is left alone. An export of a two-stage model carries its ``roi.json``, checked
    as a model folder's (``model_dir.folder_roi``: refused when ``deploy.yaml`` says ``two_stage``
    and it is missing, unless ``whole_image``); ``stage1`` is as for ``SegPredictor``.
    """

    def __init__(self, export_dir: str | os.PathLike, cpu_threads: int | None = None, stage1=None,
                 device: str = "auto", whole_image: bool = False, rescue: bool = True, backend: str = "paddle"):
        import gamma_kit.seg.models  # noqa: F401

        d = Path(export_dir)
        path, deploy = read_deploy(d)
        roi = folder_roi(d, lambda: f"{path} says two_stage: true" if deploy.get("two_stage") else None,
                         whole_image)
        try:
            num_classes = int(deploy["num_classes"])
            self.logits_output = int(deploy.get("logits_output", 0))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: not a deploy file written by export ({exc})") from exc
        params = d / deploy["params"] if "params" in deploy else None
        if backend == "onnx":
            if "onnx" not in deploy:
                raise FileNotFoundError(f"{path}: this export has no ONNX model; export with --format onnx")
            self.model = OnnxModel(d / deploy["onnx"], device=device, cpu_threads=cpu_threads)
        elif backend == "paddle":
            self.model = InferenceModel(d / deploy.get("model", MODEL_PREFIX), device=device,
                                        cpu_threads=cpu_threads, params=params)
        else:
            raise ValueError(f"backend must be paddle or onnx, got {backend!r}")
        super().__init__(build_transforms(deploy["transforms"]), num_classes, roi, stage1, rescue)
        self.export_dir = d
        self.device = self.model.device

    def _forward(self, x: np.ndarray) -> np.ndarray:
        return self.model.run(x, output=self.logits_output)
