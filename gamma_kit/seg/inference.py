"""Predict disc/cup masks with a trained model; post-process, write the submission, draw overlays.

Two paths share one predictor core (``PredictorCore``: eval transforms built once, flip TTA,
soft-max), served by the dynamic model (``SegPredictor``) and the static export
(``export.StaticPredictor``) alike:

- whole image: the network on the resized photo, labels brought back to the source size;
- two-stage (a model directory holding ``roi.json``, i.e. trained on ``prepare --roi`` crops;
  ``model_dir`` says which folders are two-stage and refuses a crop-trained one without it):
  stage 1 locates the disc (``gamma_kit.disc.locate_disc``, with the whole-image model as its
  learned part when given), ``gamma_kit.crop.DiscCrop`` cuts the window (``roi.json``: side = factor x
  the estimated diameter, or a fixed side), the network segments it, and the label map is
  pasted back at the source size by exact nearest sampling (background outside the window).
  A photo where stage 1 is unsure is reported; where it finds no disc, the whole-image model
  (``--stage1-model``) is used if given, else the crop is centred on the photo. A window outside
  ``crop.window_problem``'s rule (wider than 1.5x the photo's short side, a disc under 24 px in
  the crop) is segmented anyway (the submission stays complete) and named in a line.

Conventions: images RGB ``uint8`` (H, W, 3); label maps (H, W) ``uint8`` with 0 = cup,
1 = disc rim, 2 = background; GAMMA masks (H, W) ``uint8`` with 0 / 128 / 255. The network
runs at the config's eval size; its arg-max label map is brought back to the source
size with nearest-neighbour resizing (never bilinear: that would invent classes).

Submission layout (SPEC 3): ``OUT/Disc_Cup_Segmentations/<id>.bmp`` and
``OUT/Disc_Cup_Segmentations.zip`` holding that folder.
"""
from __future__ import annotations

import io
import json
import os
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from scipy.special import softmax
from tqdm import tqdm

import gamma_kit  # noqa: F401  (thread settings before paddle)
from gamma_kit.data import (IMAGE_DIR, DataWarning, atomic_write_bytes, atomic_write_text, check_fundus_image,
                            check_photo_sizes, find_mask_dir, find_task_dir, list_images, list_masks, read_image,
                            read_mask, write_image)
from gamma_kit.disc import locate_disc
from gamma_kit.geometry import largest_component
from gamma_kit.seg.model_dir import WEIGHTS_NAME, config_path, load_checked_weights, model_roi, resolve_model_dir
from gamma_kit.seg.prepare import labels_to_mask

__all__ = ["labels_at_size", "UPSAMPLE_MODES", "PredictorCore", "SegPredictor", "PhotoPrediction", "load_model",
           "postprocess_labels", "parse_postprocess", "POSTPROCESS_STEPS", "DEFAULT_POSTPROCESS", "predict_folder",
           "write_submission_zip", "overlay", "find_gt_mask_dir", "PredictionRun", "SUBMISSION_DIR", "MANIFEST_NAME",
           "STAGE1_REPORT"]

SUBMISSION_DIR = "Disc_Cup_Segmentations"
CUP, RIM, BACKGROUND = 0, 1, 2


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


# --------------------------------------------------------------------------- predictors
def _one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return (labels[..., None] == np.arange(num_classes)).astype(np.float32)


@dataclass
class PhotoPrediction:
    """One photo through ``PredictorCore.predict_photo``.

    ``labels``: (H, W) uint8 at the source size (raw). Two-stage: ``crop`` is the window and
    ``crop_labels`` the label map that was pasted through ``paste`` (so post-processing can run
    on the crop), ``location`` stage 1's answer, ``fallback`` what was done when stage 1 found no
    disc ("" / "whole-image model" / "image centre"), ``crop_note`` why the window breaks
    ``crop.window_problem``'s rule ("" when it does not).
    """

    labels: np.ndarray
    crop: object = None
    crop_labels: np.ndarray | None = None
    paste: object = None
    location: object = None
    fallback: str = ""
    prob: np.ndarray | None = None
    crop_note: str = ""

    def finished(self, postprocess=None) -> np.ndarray:
        """Labels at the source size after ``postprocess`` (a labels -> labels function), which runs
        on the crop for a two-stage prediction."""
        if postprocess is None:
            return self.labels
        if self.crop_labels is not None:
            return self.paste(postprocess(self.crop_labels))
        return postprocess(self.labels)


class PredictorCore:
    """Everything between a photo and its label map that does not depend on how the network runs:
    the eval transforms (built once), flip TTA, soft-max, and the two-stage ROI path.

    Subclasses implement ``_forward(x)``: (N, 3, h, w) float32 -> (N, C, h, w) logits
    (``SegPredictor``: the dynamic Paddle model; ``export.StaticPredictor``: ``paddle.inference``).
    ``roi`` (``model_dir.RoiSettings`` from the model's ``roi.json``) makes it a stage-2 model:
    ``predict_labels`` then locates the disc, crops, segments and pastes back.
    """

    def __init__(self, transforms: list, num_classes: int, roi=None, stage1=None):
        self.transforms = transforms
        self.num_classes = num_classes
        self.roi = roi
        self.stage1 = stage1   # optional whole-image predictor: stage 1's learned model and the fallback

    # ---- network ----------------------------------------------------------------------
    def _forward(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

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
        return self._forward(self.preprocess(image))[0]

    def probabilities(self, image: np.ndarray, tta: bool = False) -> np.ndarray:
        """(C, h, w) soft-max at the network size; ``tta``: the mean over the identity and the
        horizontal, vertical and both flips (one batch of 4), each flipped back."""
        x = self.preprocess(image)
        if not tta:
            return softmax(self._forward(x)[0], axis=0)
        batch = np.concatenate([x, x[..., ::-1], x[..., ::-1, :], x[..., ::-1, ::-1]])
        p = softmax(self._forward(np.ascontiguousarray(batch)), axis=1)
        return (p[0] + p[1][..., ::-1] + p[2][..., ::-1, :] + p[3][..., ::-1, ::-1]) / 4

    # ---- photos -----------------------------------------------------------------------
    def predict_photo(self, image: np.ndarray, name: str = "image", upsample: str = "nearest",
                      tta: bool = False) -> PhotoPrediction:
        """Whole-image model: the network on the photo, labels at the source size. ROI model:
        stage 1 -> ``DiscCrop`` -> network -> labels pasted back (background outside the window)."""
        h, w = image.shape[:2]
        if self.roi is None:
            return PhotoPrediction(labels_at_size(self.probabilities(image, tta), (w, h), upsample))
        from gamma_kit.crop import DiscCrop

        loc = locate_disc(image, model=self.stage1, name=name)
        fallback, centre, diameter = "", loc.xy, loc.diameter
        if loc.source == "image-centre":
            if self.stage1 is not None:
                return PhotoPrediction(self.stage1.predict_labels(image, upsample=upsample), location=loc,
                                       fallback="whole-image model")
            fallback, centre = "image centre", (w / 2, h / 2)
        side = self.roi.window_side(diameter)
        note = self.roi.window_problem(diameter, (w, h)) or ""
        crop = DiscCrop.around(centre, (w, h), self.roi.size, side=round(side))
        prob = self.probabilities(crop.crop_image(image), tta)
        ph, pw = prob.shape[1:]
        if upsample == "nearest" and ph == pw:
            grid = DiscCrop(crop.image_size, crop.x0, crop.y0, crop.side, ph)
            crop_labels = prob.argmax(axis=0).astype(np.uint8)
        else:
            grid = DiscCrop(crop.image_size, crop.x0, crop.y0, crop.side, crop.side)
            crop_labels = labels_at_size(prob, (crop.side, crop.side), upsample)

        def paste(lab: np.ndarray) -> np.ndarray:
            return grid.paste_labels(lab, background=BACKGROUND)

        return PhotoPrediction(paste(crop_labels), grid, crop_labels, paste, loc, fallback, prob, note)

    def predict_labels(self, image: np.ndarray, upsample: str = "nearest", tta: bool = False) -> np.ndarray:
        """(H, W) uint8 labels at the source size (see ``labels_at_size`` for ``upsample``)."""
        return self.predict_photo(image, upsample=upsample, tta=tta).labels

    def predict(self, image: np.ndarray | str | os.PathLike, return_scores: bool = True, tta: bool = False) -> dict:
        """PaddleX-2-style result: {"label_map": (H, W) uint8, "score_map": (H, W, C) float32 softmax}.
        Two-stage models give the crop's soft-max pasted back (background 1 outside the window)."""
        name = "image"
        if not isinstance(image, np.ndarray):
            name = Path(image).name
            image = read_image(image)
        h, w = image.shape[:2]
        if self.roi is not None:
            pred = self.predict_photo(image, name=name, tta=tta)
            out = {"label_map": pred.labels}
            if return_scores and pred.prob is not None:
                from gamma_kit.crop import DiscCrop

                side = pred.crop.side
                win = cv2.resize(np.ascontiguousarray(pred.prob.transpose(1, 2, 0)), (side, side),
                                 interpolation=cv2.INTER_LINEAR).reshape(side, side, -1).astype(np.float32)
                full = DiscCrop(pred.crop.image_size, pred.crop.x0, pred.crop.y0, side, side)
                score = full.paste_labels(win, background=0)
                outside = full.paste_labels(np.zeros((side, side), np.uint8), background=1).astype(bool)
                score[outside, BACKGROUND] = 1.0
                out["score_map"] = score
            elif return_scores:
                out["score_map"] = _one_hot(pred.labels, self.num_classes)
            return out
        prob = self.probabilities(image, tta)
        out = {"label_map": labels_at_size(prob, (w, h))}
        if return_scores:
            out["score_map"] = cv2.resize(np.ascontiguousarray(prob.transpose(1, 2, 0)), (w, h),
                                          interpolation=cv2.INTER_LINEAR).reshape(h, w, -1)
        return out


class SegPredictor(PredictorCore):
    """A trained segmentation model (dynamic Paddle) plus its eval transforms.

    ``predict_labels(image)`` -> (H, W) uint8 labels at the source size;
    ``predict(image_or_path)`` -> {"label_map": (H, W) uint8, "score_map": (H, W, C) float32}.
    With a ``roi`` (from ``roi.json``) it is the two-stage predictor (see ``PredictorCore``).
    """

    def __init__(self, model, transforms: list, num_classes: int, model_dir: Path | None = None, roi=None,
                 stage1=None):
        super().__init__(transforms, num_classes, roi, stage1)
        self.model = model
        self.model_dir = model_dir
        self.model.eval()

    @classmethod
    def from_dir(cls, model_dir: str | os.PathLike, device: str = "cpu", stage1=None,
                 whole_image: bool = False) -> "SegPredictor":
        """The model folder ``model_dir`` (``model_dir.resolve_model_dir``), two-stage or whole-image
        by ``model_dir.model_roi`` (checked before the model is built; ``whole_image`` forces it)."""
        from paddleseg.cvlibs import SegBuilder

        from gamma_kit.runtime import select_device
        from gamma_kit.seg.training import load_config

        d = resolve_model_dir(model_dir)
        roi = model_roi(d, whole_image)
        cfg_path = config_path(d)
        select_device(device)
        cfg = load_config(cfg_path)
        builder = SegBuilder(cfg)
        model = builder.model
        load_checked_weights(model, d / WEIGHTS_NAME, cfg_path)
        num_classes = int(cfg.model_cfg.get("num_classes", 3))
        return cls(model, eval_transforms(cfg, builder), num_classes, d, roi, stage1)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        import paddle

        with paddle.no_grad():
            return self.model(paddle.to_tensor(x))[0].numpy()


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


def load_model(model_dir: str | os.PathLike, device: str = "cpu", stage1=None,
               whole_image: bool = False) -> SegPredictor:
    """Load a trained model directory (see ``model_dir.resolve_model_dir``). A model trained on
    ``prepare --roi`` crops (``roi.json`` beside it) is two-stage; ``stage1`` (a whole-image
    predictor or model directory) is then stage 1's learned model and the fallback. A crop-trained
    folder without ``roi.json`` is refused unless ``whole_image`` (``model_dir.model_roi``)."""
    if stage1 is not None and not hasattr(stage1, "predict_labels"):
        stage1 = SegPredictor.from_dir(stage1, device=device)
    return SegPredictor.from_dir(model_dir, device=device, stage1=stage1, whole_image=whole_image)


# --------------------------------------------------------------------------- post-processing
def _largest_component(binary: np.ndarray) -> np.ndarray:
    part = largest_component(binary)
    return np.zeros(binary.shape, bool) if part is None else part.mask


def _fill_holes(binary: np.ndarray) -> np.ndarray:
    """Fill the regions not 4-connected to the border (``scipy.ndimage.binary_fill_holes``)."""
    from scipy import ndimage

    return ndimage.binary_fill_holes(binary)


def _ellipse(binary: np.ndarray) -> np.ndarray:
    """The ellipse ``cv2.fitEllipse`` fits to the outline of ``binary`` (kept as is below 5 points)."""
    contours, _ = cv2.findContours(binary.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return binary
    pts = max(contours, key=len)
    if len(pts) < 5:
        return binary
    out = np.zeros(binary.shape, np.uint8)
    cv2.ellipse(out, cv2.fitEllipse(pts), 1, -1)
    return out.astype(bool)


POSTPROCESS_STEPS = ("largest", "cup_in_disc", "fill", "ellipse")
DEFAULT_POSTPROCESS = ("largest", "cup_in_disc", "fill")


def postprocess_labels(labels: np.ndarray, steps=DEFAULT_POSTPROCESS) -> np.ndarray:
    """Clean a (H, W) 0/1/2 label map; ``steps`` any of:

    - ``largest``: keep the largest connected disc (and the largest cup component);
    - ``cup_in_disc``: drop cup pixels outside the disc;
    - ``fill``: fill holes in the disc and in the cup;
    - ``ellipse``: replace disc and cup by their fitted ellipses (cup clipped to the disc).

    The cup is always part of the disc afterwards when ``cup_in_disc`` or ``ellipse`` is on."""
    steps = tuple(steps)
    unknown = sorted(set(steps) - set(POSTPROCESS_STEPS))
    if unknown:
        raise ValueError(f"unknown post-processing step(s) {unknown}; choose from {POSTPROCESS_STEPS}")
    labels = np.asarray(labels)
    disc = labels <= RIM
    cup = labels == CUP
    if "largest" in steps:
        disc = _largest_component(disc)
    if "fill" in steps:
        disc = _fill_holes(disc)
    if "ellipse" in steps and disc.any():
        disc = _ellipse(disc)
    if "cup_in_disc" in steps or "ellipse" in steps or "largest" in steps:
        cup &= disc
    if "largest" in steps:
        cup = _largest_component(cup)
    if "fill" in steps:
        cup = _fill_holes(cup)
    if "ellipse" in steps and cup.any():
        cup = _ellipse(cup) & disc
    out = np.full(labels.shape, BACKGROUND, np.uint8)
    out[disc] = RIM
    out[cup] = CUP
    return out


def parse_postprocess(text: str | bool | None) -> tuple[str, ...] | None:
    """CLI value -> steps: None/""/"none" = off, "default"/True = ``DEFAULT_POSTPROCESS``,
    else a comma list of ``POSTPROCESS_STEPS``."""
    if text is None or text is False or text in ("", "none", "off"):
        return None
    if text is True or text == "default":
        return DEFAULT_POSTPROCESS
    steps = tuple(t.strip() for t in str(text).split(",") if t.strip())
    unknown = sorted(set(steps) - set(POSTPROCESS_STEPS))
    if unknown:
        raise ValueError(f"--postprocess: unknown step(s) {unknown}; choose from {', '.join(POSTPROCESS_STEPS)}, "
                         "'default' or 'none'")
    return steps


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
    return find_mask_dir(find_task_dir(data_root, "seg"), split)


def write_submission_zip(pred_dir: str | os.PathLike, zip_path: str | os.PathLike | None = None,
                         names: list[str] | None = None) -> Path:
    """Zip ``pred_dir`` (the ``Disc_Cup_Segmentations`` folder) with the folder name as the top entry;
    ``names`` (file names in it) restricts the zip to those files (this run's masks)."""
    pred_dir = Path(pred_dir)
    if names is None:
        files = sorted(p for p in pred_dir.iterdir() if p.suffix.lower() == ".bmp")
    else:
        files = [pred_dir / n for n in sorted(names)]
    if not files:
        raise ValueError(f"{pred_dir}: no .bmp predictions to zip")
    zip_path = Path(zip_path) if zip_path else pred_dir.with_suffix(".zip")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in files:
            zf.write(p, f"{pred_dir.name}/{p.name}")
    return atomic_write_bytes(zip_path, buf.getvalue())


MANIFEST_NAME = "predict_manifest.json"
STAGE1_REPORT = "stage1_report.json"


def _prepare_out(out_dir: Path, pred_dir: Path) -> None:
    """Remove the masks (and overlays) an earlier predict wrote here, as its manifest lists them;
    refuse when other ``.bmp`` files are in the way (they would end up in the zip)."""
    manifest = out_dir / MANIFEST_NAME
    if manifest.is_file():
        try:
            old = json.loads(manifest.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{manifest}: not valid JSON ({exc}); move the output folder aside") from exc
        for rel in old.get("files", []):
            f = out_dir / rel
            if f.is_file() and out_dir.resolve() in f.resolve().parents:
                f.unlink()
    if pred_dir.is_dir():
        foreign = sorted(p.name for p in pred_dir.iterdir() if p.suffix.lower() == ".bmp")
        if foreign:
            raise ValueError(f"{pred_dir} already holds {len(foreign)} .bmp file(s) this kit did not write "
                             f"(e.g. {foreign[:3]}); they would go into the zip: choose an empty --out")


@dataclass
class PredictionRun:
    """What ``predict_folder`` wrote and measured. ``stage1`` lists the photos where stage 1 was
    unsure or found no disc (dicts: id, file, source, confidence, note, fallback); ``not_fundus``
    the photos that ``data.check_fundus_image`` doubts (dicts: id, file, reason), predicted anyway;
    ``crops`` the photos whose crop window breaks ``crop.window_problem``'s rule (dicts: id, file, note)."""

    pred_dir: Path
    zip_path: Path
    masks: dict[str, np.ndarray]
    seconds_per_image: float
    model_seconds_per_image: float
    metrics: dict | None = None
    metrics_raw: dict | None = None
    overlays: list[Path] = field(default_factory=list)
    stage1: list[dict] = field(default_factory=list)
    stage1_report: Path | None = None
    not_fundus: list[dict] = field(default_factory=list)
    crops: list[dict] = field(default_factory=list)


def predict_folder(model, images: str | os.PathLike | dict[str, Path],
                   out_dir: str | os.PathLike, postprocess=False,
                   gt_dir: str | os.PathLike | None = None, overlay_dir: str | os.PathLike | None = None,
                   upsample: str = "nearest", progress: bool = True, tta: bool = False,
                   inputs: tuple = (), log=print) -> PredictionRun:
    """Predict every image, write ``out_dir/Disc_Cup_Segmentations/<id>.bmp`` and the zip.

    ``model`` is a model directory or anything with ``predict_photo``/``predict_labels``
    (``SegPredictor``, ``export.StaticPredictor``); a two-stage (ROI) model locates, crops,
    segments and pastes back. ``images`` is a folder or {id: path}. With ``gt_dir`` the run is
    scored with ``gamma_kit.metrics.evaluate_seg``; with ``postprocess`` (True = the default
    steps, or a tuple of ``POSTPROCESS_STEPS``) ``metrics`` is the post-processed score and
    ``metrics_raw`` the score without it. ``tta``: flip test-time augmentation. ``overlay_dir``
    gets one PNG per image (prediction yellow, truth green). ``inputs``: folders/files the output
    must not be or lie inside.

    The output folder keeps ``predict_manifest.json`` (the files this run wrote); a rerun removes
    those first and refuses other ``.bmp`` files there, so the zip holds exactly this run's masks.
    Photos where stage 1 was unsure or found no disc are printed through ``log`` (one line each and
    a count) and listed in ``out_dir/stage1_report.json``, as (under ``"crops"``) are the photos whose
    crop window breaks ``crop.window_problem``'s rule (segmented anyway). Photos below ``data.MIN_FUNDUS_SIDE`` px
    on the short side are refused before any work (``data.check_photo_sizes``). Photos that
    ``data.check_fundus_image`` doubts (no circular field of view: a black frame, a scan of
    something else) are predicted anyway (a dark one goes to stage 1's fallback), named in one
    ``DataWarning`` and listed with the reason under ``"not_fundus"`` in the manifest.
    """
    from gamma_kit.metrics import evaluate_seg
    from gamma_kit.safety import check_output_path

    steps = parse_postprocess(postprocess)
    out_dir = Path(out_dir)
    check_output_path(out_dir, [*inputs, *(() if isinstance(images, dict) else (images,)), gt_dir],
                      "output folder")
    if overlay_dir is not None:
        check_output_path(overlay_dir, [*inputs, gt_dir], "overlay folder")
    files = images if isinstance(images, dict) else list_images(images)
    check_photo_sizes(files)
    predictor = model if hasattr(model, "predict_labels") else load_model(model)
    pred_dir = out_dir / SUBMISSION_DIR
    gt_files = list_masks(gt_dir) if gt_dir is not None else {}
    missing = sorted(set(gt_files) - set(files))
    if missing:
        raise ValueError(f"{gt_dir}: ground truth for id(s) {missing[:10]} that have no image to predict")
    _prepare_out(out_dir, pred_dir)
    pred_dir.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    manifest = out_dir / MANIFEST_NAME

    not_fundus: list[dict] = []

    def save_manifest():
        atomic_write_text(manifest, json.dumps({"files": written, "not_fundus": not_fundus}, indent=1))

    save_manifest()
    pp = (lambda lab: postprocess_labels(lab, steps)) if steps else None
    masks, raw, overlays, unsure, crop_notes = {}, {}, [], [], []
    t_total = t_model = 0.0
    for i, path in tqdm(files.items(), desc="predict", disable=not progress):
        t0 = time.perf_counter()
        image = read_image(path)
        try:
            check_fundus_image(image, path.name)
        except ValueError as exc:
            not_fundus.append({"id": i, "file": str(path), "reason": str(exc)})
        t1 = time.perf_counter()
        if hasattr(predictor, "predict_photo"):
            photo = predictor.predict_photo(image, name=path.name, upsample=upsample, tta=tta)
        else:
            photo = PhotoPrediction(predictor.predict_labels(image, upsample=upsample))
        labels = photo.finished(pp)
        t_model += time.perf_counter() - t1
        loc = photo.location
        if loc is not None and (loc.unsure or photo.fallback):
            action = {"whole-image model": "used the whole-image model's segmentation",
                      "image centre": "cropped at the image centre"}.get(photo.fallback,
                                                                         "cropped at its best guess")
            unsure.append({"id": i, "file": str(path), "source": loc.source, "confidence": float(loc.confidence),
                           "note": loc.note, "fallback": photo.fallback or "none"})
            what = "found no disc in" if loc.source == "image-centre" else "was unsure on"
            log(f"stage 1 {what} {path.name} ({loc.note or loc.source}): {action}")
        if photo.crop_note:
            crop_notes.append({"id": i, "file": str(path), "note": photo.crop_note})
            log(f"crop of {path.name}: {photo.crop_note}; segmented anyway")
        raw[i] = labels_to_mask(photo.labels)
        masks[i] = labels_to_mask(labels)
        ok, bmp = cv2.imencode(".bmp", masks[i])
        if not ok:
            raise ValueError(f"{pred_dir / f'{i}.bmp'}: OpenCV could not encode the {masks[i].shape} mask as BMP")
        atomic_write_bytes(pred_dir / f"{i}.bmp", bmp.tobytes())
        written.append(f"{SUBMISSION_DIR}/{i}.bmp")
        if len(written) % 20 == 0:
            save_manifest()
        t_total += time.perf_counter() - t0
        if overlay_dir is not None:
            gt = read_mask(gt_files[i]) if i in gt_files else None
            overlays.append(write_image(Path(overlay_dir) / f"{i}.png", overlay(image, masks[i], gt)))
    save_manifest()
    zip_path = write_submission_zip(pred_dir, names=[Path(w).name for w in written])
    run = PredictionRun(pred_dir, zip_path, masks, t_total / len(files), t_model / len(files), overlays=overlays,
                        stage1=unsure, not_fundus=not_fundus, crops=crop_notes)
    if not_fundus:
        warnings.warn(DataWarning(
            f"{len(not_fundus)} of {len(files)} photo(s) show no circular field of view on a dark surround "
            f"(not fundus photographs?) and were predicted anyway: {[Path(d['file']).name for d in not_fundus[:10]]}"
            f"; reasons in {manifest}"), stacklevel=2)
    if getattr(predictor, "roi", None) is not None:
        run.stage1_report = atomic_write_text(out_dir / STAGE1_REPORT,
                                              json.dumps({"count": len(unsure), "photos": unsure,
                                                          "crops": crop_notes}, indent=1))
        if unsure:
            log(f"stage 1 unsure or without a disc on {len(unsure)} of {len(files)} photo(s); "
                f"listed in {run.stage1_report}")
    if gt_files:
        gt = {i: read_mask(p, expected_size=masks[i].shape[::-1]) for i, p in gt_files.items()}
        run.metrics = evaluate_seg({i: masks[i] for i in gt}, gt)
        run.metrics_raw = evaluate_seg({i: raw[i] for i in gt}, gt) if steps else run.metrics
    return run


def test_images(data_root: str | os.PathLike | None, split: str = "testing") -> dict[str, Path]:
    """{id: path} of the fundus images of ``split`` under a GAMMA task 3 root."""
    return list_images(find_task_dir(data_root, "seg") / split / IMAGE_DIR)


test_images.__test__ = False  # not a pytest test
