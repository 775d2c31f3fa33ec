"""Predict disc/cup masks with a trained model; post-process, write the submission, draw overlays.

Conventions: images RGB ``uint8`` (H, W, 3); label maps (H, W) ``uint8`` with 0 = cup,
1 = disc rim, 2 = background; GAMMA masks (H, W) ``uint8`` with 0 / 128 / 255. The network
runs at the config's eval size; its arg-max label map is brought back to the source
size with nearest-neighbour resizing (never bilinear: that would invent classes).

Submission layout (SPEC 3): ``OUT/Disc_Cup_Segmentations/<id>.bmp`` and
``OUT/Disc_Cup_Segmentations.zip`` holding that folder.
"""
from __future__ import annotations

import io
import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

import gamma_kit  # noqa: F401  (thread settings before paddle)
from gamma_kit.data import (IMAGE_DIR, MASK_DIRS, MASK_EXTS, atomic_write_bytes, find_task_dir, list_images,
                            read_image, read_mask, write_image)
from gamma_kit.seg.prepare import labels_to_mask
from gamma_kit.seg.training import MODEL_CONFIG_NAME, WEIGHTS_NAME

__all__ = ["labels_at_size", "UPSAMPLE_MODES", "SegPredictor", "load_model", "resolve_model_dir",
           "postprocess_labels", "predict_folder", "write_submission_zip", "overlay", "find_gt_mask_dir",
           "PredictionRun", "SUBMISSION_DIR"]

SUBMISSION_DIR = "Disc_Cup_Segmentations"
CUP, RIM, BACKGROUND = 0, 1, 2


def resolve_model_dir(model_dir: str | os.PathLike) -> Path:
    """The folder holding ``model.pdparams`` + ``model.yml``: ``model_dir`` itself, or its
    ``best_model/`` or ``last_model/`` (a training run folder). Raises FileNotFoundError otherwise."""
    d = Path(model_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"model directory {d} does not exist")
    for cand in (d, d / "best_model", d / "last_model"):
        if (cand / WEIGHTS_NAME).is_file():
            if not (cand / MODEL_CONFIG_NAME).is_file() and not (cand.parent / MODEL_CONFIG_NAME).is_file():
                raise FileNotFoundError(f"{cand} has {WEIGHTS_NAME} but no {MODEL_CONFIG_NAME} (the resolved "
                                        "training config, written by gamma_kit's train) here or in its parent")
            return cand
    raise FileNotFoundError(f"{d} holds no trained weights: expected {WEIGHTS_NAME} in it or in its "
                            f"best_model/ or last_model/ (train with `python -m gamma_kit.seg train`)")


UPSAMPLE_MODES = ("nearest", "bilinear")


def labels_at_size(logits: np.ndarray, size: tuple[int, int], upsample: str = "nearest") -> np.ndarray:
    """(C, h, w) logits -> (H, W) uint8 labels at ``size`` = (W, H).

    ``nearest``: arg-max at the network size, then nearest-neighbour resizing (the original's way).
    ``bilinear``: logits resized bilinearly, then arg-max: smoother outlines when the network runs
    far below the source size (measured +0.004 disc / +0.009 cup Dice for the CPU config).
    """
    if upsample == "nearest":
        return cv2.resize(logits.argmax(axis=0).astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
    if upsample == "bilinear":
        up = cv2.resize(np.ascontiguousarray(logits.transpose(1, 2, 0)), size, interpolation=cv2.INTER_LINEAR)
        return up.reshape(size[1], size[0], -1).argmax(axis=-1).astype(np.uint8)
    raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")


class SegPredictor:
    """A trained segmentation model plus its eval transforms.

    ``predict_labels(image)`` -> (H, W) uint8 labels at the source size;
    ``predict(image_or_path)`` -> {"label_map": (H, W) uint8, "score_map": (H, W, C) float32}.
    """

    def __init__(self, model, transforms: list, num_classes: int, model_dir: Path | None = None):
        self.model = model
        self.transforms = transforms
        self.num_classes = num_classes
        self.model_dir = model_dir
        self.model.eval()

    @classmethod
    def from_dir(cls, model_dir: str | os.PathLike, device: str = "cpu") -> "SegPredictor":
        import paddle
        from paddleseg.cvlibs import SegBuilder

        from gamma_kit.runtime import select_device
        from gamma_kit.seg.training import load_config

        d = resolve_model_dir(model_dir)
        cfg_path = d / MODEL_CONFIG_NAME if (d / MODEL_CONFIG_NAME).is_file() else d.parent / MODEL_CONFIG_NAME
        select_device(device)
        cfg = load_config(cfg_path)
        builder = SegBuilder(cfg)
        model = builder.model
        try:
            state = paddle.load(str(d / WEIGHTS_NAME))
        except Exception as exc:  # paddle raises several types for a corrupt file
            raise ValueError(f"{d / WEIGHTS_NAME}: cannot be loaded as Paddle weights ({exc})") from exc
        missing = [k for k in model.state_dict() if k not in state]
        if missing:
            raise ValueError(f"{d / WEIGHTS_NAME} does not match the model in {cfg_path}: "
                             f"{len(missing)} parameter(s) missing, e.g. {missing[:3]}")
        model.set_state_dict(state)
        num_classes = int(cfg.model_cfg.get("num_classes", 3))
        return cls(model, eval_transforms(cfg, builder), num_classes, d)

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """RGB uint8 (H, W, 3) -> (1, 3, h, w) float32 after the eval transforms."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB image of shape (H, W, 3), got {image.shape}")
        data = {"img": image.astype("float32"), "trans_info": [], "gt_fields": []}
        for op in self.transforms:
            data = op(data)
        return np.ascontiguousarray(data["img"].transpose(2, 0, 1)[None], dtype=np.float32)

    def logits(self, image: np.ndarray) -> np.ndarray:
        """(C, h, w) float32 logits at the network size."""
        import paddle

        with paddle.no_grad():
            out = self.model(paddle.to_tensor(self.preprocess(image)))[0]
        return out.numpy()[0]

    def predict_labels(self, image: np.ndarray, upsample: str = "nearest") -> np.ndarray:
        """(H, W) uint8 labels at the source size (see ``labels_at_size`` for ``upsample``)."""
        return labels_at_size(self.logits(image), (image.shape[1], image.shape[0]), upsample)

    def predict(self, image: np.ndarray | str | os.PathLike, return_scores: bool = True) -> dict:
        """PaddleX-2-style result: {"label_map": (H, W) uint8, "score_map": (H, W, C) float32 softmax}."""
        if not isinstance(image, np.ndarray):
            image = read_image(image)
        logits = self.logits(image)
        h, w = image.shape[:2]
        out = {"label_map": labels_at_size(logits, (w, h))}
        if return_scores:
            e = np.exp(logits - logits.max(axis=0, keepdims=True))
            prob = (e / e.sum(axis=0, keepdims=True)).transpose(1, 2, 0)
            out["score_map"] = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, -1)
        return out


def eval_transforms(cfg, builder=None) -> list:
    """The config's ``val_dataset`` transforms; without one, the train transforms minus the random ones."""
    if cfg.val_dataset_cfg.get("transforms") is None:
        from paddleseg.cvlibs import manager

        ops = []
        for t in cfg.train_dataset_cfg.get("transforms", []):
            if not t["type"].startswith("Random"):
                t = dict(t)
                ops.append(manager.TRANSFORMS[t.pop("type")](**t))
        return ops
    if builder is None:
        from paddleseg.cvlibs import SegBuilder
        builder = SegBuilder(cfg)
    return builder.val_transforms


def load_model(model_dir: str | os.PathLike, device: str = "cpu") -> SegPredictor:
    """Load a trained model directory (see ``resolve_model_dir``)."""
    return SegPredictor.from_dir(model_dir, device=device)


# --------------------------------------------------------------------------- post-processing
def _largest_component(binary: np.ndarray) -> np.ndarray:
    n, comp, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros(binary.shape, bool)
    return comp == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def _fill_holes(binary: np.ndarray) -> np.ndarray:
    """Fill the background regions not 4-connected to the image border.

    A flood fill from outside a one-pixel frame; not ``cv2.connectedComponents(connectivity=4)``,
    which crashes (SIGSEGV) on some small images in OpenCV 4.5.5, the version paddleseg pins.
    """
    padded = np.pad(binary.astype(np.uint8), 1)
    mask = np.zeros((padded.shape[0] + 2, padded.shape[1] + 2), np.uint8)
    cv2.floodFill(padded, mask, (0, 0), 2, flags=4)
    return padded[1:-1, 1:-1] != 2


def postprocess_labels(labels: np.ndarray) -> np.ndarray:
    """Keep the largest connected disc (with holes filled); keep the cup's largest component
    inside the disc (holes filled). (H, W) labels 0/1/2 in and out."""
    labels = np.asarray(labels)
    disc = _largest_component(labels <= RIM)
    if not disc.any():
        return np.full(labels.shape, BACKGROUND, np.uint8)
    disc = _fill_holes(disc)
    cup = _largest_component((labels == CUP) & disc)
    cup = _fill_holes(cup) & disc if cup.any() else cup
    out = np.full(labels.shape, BACKGROUND, np.uint8)
    out[disc] = RIM
    out[cup] = CUP
    return out


# --------------------------------------------------------------------------- overlays
PRED_COLOUR = (255, 255, 0)   # yellow: prediction
GT_COLOUR = (0, 255, 0)       # green: ground truth


def overlay(image: np.ndarray, pred_mask: np.ndarray, gt_mask: np.ndarray | None = None,
            thickness: int | None = None) -> np.ndarray:
    """RGB (H, W, 3) copy of ``image`` with disc and cup outlines: prediction yellow, truth green."""
    out = np.ascontiguousarray(image.copy())
    t = thickness or max(1, round(max(image.shape[:2]) / 400))
    for mask, colour in ((gt_mask, GT_COLOUR), (pred_mask, PRED_COLOUR)):
        if mask is None:
            continue
        for structure in (mask < 255, mask == 0):
            contours, _ = cv2.findContours(structure.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(out, contours, -1, colour, t)
    return out


# --------------------------------------------------------------------------- folders
def find_gt_mask_dir(data_root: str | os.PathLike | None, split: str = "testing") -> Path | None:
    """GT masks of ``split`` if present: ``<task>/<split>/Disc_Cup_Mask`` or ``<task>/<split>_GT/...``."""
    task = find_task_dir(data_root, "seg")
    for folder in (split, f"{split}_GT"):
        for m in MASK_DIRS:
            if (task / folder / m).is_dir():
                return task / folder / m
    return None


def write_submission_zip(pred_dir: str | os.PathLike, zip_path: str | os.PathLike | None = None) -> Path:
    """Zip ``pred_dir`` (the ``Disc_Cup_Segmentations`` folder) with the folder name as the top entry."""
    pred_dir = Path(pred_dir)
    files = sorted(p for p in pred_dir.iterdir() if p.suffix.lower() == ".bmp")
    if not files:
        raise ValueError(f"{pred_dir}: no .bmp predictions to zip")
    zip_path = Path(zip_path) if zip_path else pred_dir.with_suffix(".zip")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in files:
            zf.write(p, f"{pred_dir.name}/{p.name}")
    return atomic_write_bytes(zip_path, buf.getvalue())


@dataclass
class PredictionRun:
    """What ``predict_folder`` wrote and measured."""

    pred_dir: Path
    zip_path: Path
    masks: dict[str, np.ndarray]
    seconds_per_image: float
    model_seconds_per_image: float
    metrics: dict | None = None
    metrics_raw: dict | None = None
    overlays: list[Path] = field(default_factory=list)


def predict_folder(model, images: str | os.PathLike | dict[str, Path],
                   out_dir: str | os.PathLike, postprocess: bool = False,
                   gt_dir: str | os.PathLike | None = None, overlay_dir: str | os.PathLike | None = None,
                   upsample: str = "nearest", progress: bool = True) -> PredictionRun:
    """Predict every image, write ``out_dir/Disc_Cup_Segmentations/<id>.bmp`` and the zip.

    ``model`` is a model directory or anything with ``predict_labels(image)`` (``SegPredictor``,
    ``export.StaticPredictor``). ``images`` is a folder or {id: path}. With ``gt_dir`` the run is scored with
    ``gamma_kit.metrics.evaluate_seg``; when ``postprocess`` is on, ``metrics`` is the
    post-processed score and ``metrics_raw`` the score without it, so its effect shows.
    ``overlay_dir`` gets one PNG per image (prediction yellow, truth green). ``upsample``: see
    ``labels_at_size`` (default nearest, as the original).
    """
    from gamma_kit.metrics import evaluate_seg

    predictor = model if hasattr(model, "predict_labels") else load_model(model)
    files = images if isinstance(images, dict) else list_images(images)
    pred_dir = Path(out_dir) / SUBMISSION_DIR
    pred_dir.mkdir(parents=True, exist_ok=True)
    gt_files = list_images(gt_dir, MASK_EXTS) if gt_dir is not None else {}
    missing = sorted(set(gt_files) - set(files))
    if missing:
        raise ValueError(f"{gt_dir}: ground truth for id(s) {missing[:10]} that have no image to predict")
    masks, raw, overlays = {}, {}, []
    t_total = t_model = 0.0
    for i, path in tqdm(files.items(), desc="predict", disable=not progress):
        t0 = time.perf_counter()
        image = read_image(path)
        t1 = time.perf_counter()
        labels = predictor.predict_labels(image, upsample=upsample)
        t_model += time.perf_counter() - t1
        raw[i] = labels_to_mask(labels)
        masks[i] = labels_to_mask(postprocess_labels(labels)) if postprocess else raw[i]
        ok, bmp = cv2.imencode(".bmp", masks[i])
        atomic_write_bytes(pred_dir / f"{i}.bmp", bmp.tobytes())
        t_total += time.perf_counter() - t0
        if overlay_dir is not None:
            gt = read_mask(gt_files[i]) if i in gt_files else None
            overlays.append(write_image(Path(overlay_dir) / f"{i}.png", overlay(image, masks[i], gt)))
    zip_path = write_submission_zip(pred_dir)
    run = PredictionRun(pred_dir, zip_path, masks, t_total / len(files), t_model / len(files), overlays=overlays)
    if gt_files:
        gt = {i: read_mask(p, expected_size=masks[i].shape[::-1]) for i, p in gt_files.items()}
        run.metrics = evaluate_seg({i: masks[i] for i in gt}, gt)
        run.metrics_raw = evaluate_seg({i: raw[i] for i in gt}, gt) if postprocess else run.metrics
    return run


def test_images(data_root: str | os.PathLike | None, split: str = "testing") -> dict[str, Path]:
    """{id: path} of the fundus images of ``split`` under a GAMMA task 3 root."""
    return list_images(find_task_dir(data_root, "seg") / split / IMAGE_DIR)


test_images.__test__ = False  # not a pytest test
