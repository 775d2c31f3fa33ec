"""A trained segmentation network as a predictor: photo in, label map at the photo's size out.

One predictor core (``PredictorCore``: eval transforms built once, flip TTA, soft-max, and the
two-stage path) is served by the dynamic model (``SegPredictor``) and the static export
(``export.StaticPredictor``) alike:

- whole image: the network on the resized photo, labels brought back to the source size;
- two-stage (a model directory holding ``roi.json``, i.e. trained on ``prepare --roi`` crops;
  ``model_dir`` says which folders are two-stage and refuses a crop-trained one without it):
  stage 1 locates the disc (``gamma_kit.disc.locate_disc``, with the whole-image model as its
  learned part when given), ``gamma_kit.crop.DiscCrop`` cuts the window (``roi.json``: side = factor x
  the estimated diameter, or a fixed side), the network segments it, and the label map is
  pasted back at the source size by exact nearest sampling (background outside the window).
  Where stage 1 finds no disc, the whole-image model (``stage1``) is used if given, else the crop
  is centred on the photo; ``PhotoPrediction`` records which, and why a window breaks
  ``crop.window_problem``'s rule.

Conventions: images RGB ``uint8`` (H, W, 3); label maps (H, W) ``uint8`` with 0 = cup,
1 = disc rim, 2 = background. The network runs at the config's eval size; its arg-max label
map is brought back to the source size with nearest-neighbour resizing (never bilinear: that
would invent classes), or, with ``upsample="bilinear"``, its logits are resized first.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy.special import softmax

import gamma_kit  # noqa: F401  (thread settings before paddle)
from gamma_kit.data import read_image
from gamma_kit.disc import locate_disc
from gamma_kit.seg.disc_check import disc_likeness
from gamma_kit.seg.model_dir import WEIGHTS_NAME, config_path, load_checked_weights, model_roi, resolve_model_dir
from gamma_kit.seg.prepare import BACKGROUND, CUP, RIM

__all__ = ["CUP", "RIM", "BACKGROUND", "UPSAMPLE_MODES", "labels_at_size", "PhotoPrediction", "PredictorCore",
           "SegPredictor", "eval_transform_specs", "build_transforms", "eval_transforms", "load_model"]

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
    ``crop.window_problem``'s rule ("" when it does not), ``doubt`` what ``disc_check`` finds wrong
    with the disc segmented in the crop kept ("" when nothing), ``rescue`` why another of stage 1's
    candidates was kept instead of its doubted first answer ("" when it was not).
    """

    labels: np.ndarray
    crop: object = None
    crop_labels: np.ndarray | None = None
    paste: object = None
    location: object = None
    fallback: str = ""
    prob: np.ndarray | None = None
    crop_note: str = ""
    doubt: str = ""
    rescue: str = ""

    def finished(self, postprocess=None) -> np.ndarray:
        """Labels at the source size after ``postprocess`` (a labels -> labels function), which runs
        on the crop for a two-stage prediction."""
        if postprocess is None:
            return self.labels
        if self.crop_labels is not None:
            return self.paste(postprocess(self.crop_labels))
        return postprocess(self.labels)


#: Stage 1's other candidate places tried when the first crop's disc may be elsewhere
#: (``disc_check.Verdict.elsewhere``; ``PredictorCore.rescue``), and the ``disc_likeness`` a crop must
#: beat to replace it. A first crop that looks like a disc is kept, even where stage 1 was unsure: a
#: model trained on synthetic photos segments real decoys as confidently as real discs, so comparing
#: likeness with the runner-up would have lost 6-30 of the 103 IDRiD discs and found none
#: (bench/results/disc_rescue.md); so is a crop whose disc fills it (the disc is there, segmented too
#: large): looking elsewhere then lost 4 IDRiD discs in this rule's first version.
MAX_RESCUE_TRIES = 3
MIN_RESCUE_LIKENESS = 0.5


@dataclass
class _CropTry:
    """One crop segmented at ``centre``: its window, soft-max and ``disc_check.disc_likeness`` verdict."""

    centre: tuple[float, float]
    crop: object
    prob: np.ndarray
    verdict: object

    @property
    def score(self) -> float:
        return self.verdict.score

    @property
    def doubt(self) -> str:
        return self.verdict.note

    def recentred(self) -> list[tuple[float, float]]:
        """The centre of the disc segmented off the crop's centre, in source px ([] for other verdicts):
        the crop to try first, before stage 1's other candidates."""
        if self.verdict.kind != "off_centre":
            return []
        f = self.crop.side / self.prob.shape[1]
        return [(self.crop.x0 + self.verdict.centre[0] * f, self.crop.y0 + self.verdict.centre[1] * f)]


class PredictorCore:
    """Everything between a photo and its label map that does not depend on how the network runs:
    the eval transforms (built once), flip TTA, soft-max, and the two-stage ROI path.

    Subclasses implement ``_forward(x)``: (N, 3, h, w) float32 -> (N, C, h, w) logits
    (``SegPredictor``: the dynamic Paddle model; ``export.StaticPredictor``: ``paddle.inference``).
    ``roi`` (``model_dir.RoiSettings`` from the model's ``roi.json``) makes it a stage-2 model:
    ``predict_labels`` then locates the disc, crops, segments and pastes back.
    """

    def __init__(self, transforms: list, num_classes: int, roi=None, stage1=None, rescue: bool = True):
        self.transforms = transforms
        self.num_classes = num_classes
        self.roi = roi
        self.stage1 = stage1   # optional whole-image predictor: stage 1's learned model and the fallback
        self.rescue = rescue   # try stage 1's other candidates when its first crop is doubted

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
    def locates_classically(self) -> bool:
        """Whether stage 1 is the classical detector alone (no network): ``locate`` can then run on
        another thread, ahead of the photo's turn (``submission.predict_folder`` does)."""
        return self.roi is not None and self.stage1 is None

    def locate(self, image: np.ndarray, name: str = "image"):
        """Stage 1 of a two-stage model: ``disc.locate_disc`` with this model's learned finder."""
        return locate_disc(image, model=self.stage1, name=name)

    def predict_photo(self, image: np.ndarray, name: str = "image", upsample: str = "nearest",
                      tta: bool = False, location=None) -> PhotoPrediction:
        """Whole-image model: the network on the photo, labels at the source size. ROI model:
        stage 1 -> ``DiscCrop`` -> network -> labels pasted back (background outside the window).
        Where the disc segmented in stage 1's crop may be elsewhere (``disc_check.Verdict.elsewhere``: none,
        tiny, off the crop's centre), the crop re-centred on that disc and the crops at stage 1's other
        candidate places are segmented too (``rescue``); the one that looks most like a disc is kept
        (``disc_check.disc_likeness`` above ``MIN_RESCUE_LIKENESS``; else the first stays).
        ``location``: stage 1's answer for this photo when it was found beforehand (``locate``)."""
        h, w = image.shape[:2]
        if self.roi is None:
            return PhotoPrediction(labels_at_size(self.probabilities(image, tta), (w, h), upsample))
        loc = location if location is not None else self.locate(image, name)
        fallback, centre, diameter = "", loc.xy, loc.diameter
        if loc.source == "image-centre":
            if self.stage1 is not None:
                return PhotoPrediction(self.stage1.predict_labels(image, upsample=upsample), location=loc,
                                       fallback="whole-image model")
            fallback, centre = "image centre", (w / 2, h / 2)
        best = first = self._crop_at(image, centre, diameter, tta)
        if self.rescue and first.verdict.elsewhere:
            for place in [*first.recentred(), *loc.alternatives[:MAX_RESCUE_TRIES]]:
                tried = self._crop_at(image, place, diameter, tta)
                if tried.score > max(best.score, MIN_RESCUE_LIKENESS):
                    best = tried
        rescue = "" if best is first else (
            f"stage 1's disc at ({first.centre[0]:.0f}, {first.centre[1]:.0f}) gave {first.doubt}; kept the crop "
            f"at ({best.centre[0]:.0f}, {best.centre[1]:.0f}) (disc {best.score:.2f})")
        grid, crop_labels = self._labels_in_crop(best, upsample)

        def paste(lab: np.ndarray) -> np.ndarray:
            return grid.paste_labels(lab, background=BACKGROUND)

        return PhotoPrediction(paste(crop_labels), grid, crop_labels, paste, loc, fallback, best.prob,
                               self.roi.window_problem(diameter, (w, h)) or "", best.doubt, rescue)

    def _crop_at(self, image: np.ndarray, centre, diameter: float, tta: bool) -> "_CropTry":
        """The window the model's ``roi`` sets around ``centre``, segmented, with ``disc_check``'s verdict."""
        from gamma_kit.crop import DiscCrop

        h, w = image.shape[:2]
        crop = DiscCrop.around(centre, (w, h), self.roi.size, side=round(self.roi.window_side(diameter)))
        prob = self.probabilities(crop.crop_image(image), tta)
        return _CropTry((float(centre[0]), float(centre[1])), crop, prob,
                        disc_likeness(prob, diameter * prob.shape[1] / crop.side))

    @staticmethod
    def _labels_in_crop(tried: "_CropTry", upsample: str):
        """(the grid that pastes the crop's labels back, those labels): at the network's size when it
        is square and ``nearest`` is asked for, else at the window's source size."""
        from gamma_kit.crop import DiscCrop

        crop, prob = tried.crop, tried.prob
        ph, pw = prob.shape[1:]
        if upsample == "nearest" and ph == pw:
            return DiscCrop(crop.image_size, crop.x0, crop.y0, crop.side, ph), prob.argmax(axis=0).astype(np.uint8)
        return (DiscCrop(crop.image_size, crop.x0, crop.y0, crop.side, crop.side),
                labels_at_size(prob, (crop.side, crop.side), upsample))

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
                 stage1=None, rescue: bool = True):
        super().__init__(transforms, num_classes, roi, stage1, rescue)
        self.model = model
        self.model_dir = model_dir
        self.model.eval()

    @classmethod
    def from_dir(cls, model_dir: str | os.PathLike, device: str = "auto", stage1=None,
                 whole_image: bool = False, rescue: bool = True) -> "SegPredictor":
        """The model folder ``model_dir`` (``model_dir.resolve_model_dir``), two-stage or whole-image
        by ``model_dir.model_roi`` (checked before the model is built; ``whole_image`` forces it);
        ``rescue``: see ``PredictorCore.predict_photo``."""
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
        return cls(model, eval_transforms(cfg), num_classes, d, roi, stage1, rescue)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        import paddle

        with paddle.no_grad():
            return self.model(paddle.to_tensor(x))[0].numpy()


def eval_transform_specs(cfg) -> list[dict]:
    """The transforms a config evaluates with, as dicts (``{"type": ..., **args}``, copies): its
    ``val_dataset`` transforms; without them, the train transforms minus the random ones. ``cfg``
    is a PaddleSeg ``Config`` or its dict (a model folder's ``model.yml``)."""
    dic = getattr(cfg, "dic", cfg)
    specs = (dic.get("val_dataset") or {}).get("transforms")
    if specs is None:
        specs = [t for t in (dic.get("train_dataset") or {}).get("transforms", [])
                 if not t["type"].startswith("Random")]
    return [dict(t) for t in specs]


def build_transforms(specs: list[dict]) -> list:
    """PaddleSeg transform objects from ``{"type": ..., **args}`` dicts (left unchanged)."""
    from paddleseg.cvlibs import manager

    return [manager.TRANSFORMS[t["type"]](**{k: v for k, v in t.items() if k != "type"}) for t in specs]


def eval_transforms(cfg) -> list:
    """The eval transform objects of a config (``eval_transform_specs``)."""
    return build_transforms(eval_transform_specs(cfg))


def load_model(model_dir: str | os.PathLike, device: str = "auto", stage1=None,
               whole_image: bool = False, rescue: bool = True) -> SegPredictor:
    """Load a trained model directory (see ``model_dir.resolve_model_dir``). A model trained on
    ``prepare --roi`` crops (``roi.json`` beside it) is two-stage; ``stage1`` (a whole-image
    predictor or model directory) is then stage 1's learned model and the fallback. A crop-trained
    folder without ``roi.json`` is refused unless ``whole_image`` (``model_dir.model_roi``). ``rescue``
    (default on): try stage 1's other candidates where its first crop is doubted."""
    if stage1 is not None and not hasattr(stage1, "predict_labels"):
        stage1 = SegPredictor.from_dir(stage1, device=device)
    return SegPredictor.from_dir(model_dir, device=device, stage1=stage1, whole_image=whole_image, rescue=rescue)


