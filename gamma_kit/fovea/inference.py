"""The one fovea inference chain: ROI crops -> heatmaps -> positions in the source image
(the models come from gamma_kit.fovea.checkpoints). Training validation (``evaluate_items``),
``predict``, the figures and the benchmarks all go through it, so the way back to the image
exists once.

The chain, for a canonical image (gamma_kit.fovea.dataset.CanonicalImage)::

    roi_crops:        canonical image at the codec's scale -> ROI crop (3, h, w) float32, at the
                      fixed window or where a RoiPolicy puts it (gamma_kit.fovea.roi)
    predict_heatmaps: crops (N, 3, h, w) -> heatmaps (N, h, w) float32 (batched, AMP, flip TTA)
    combine:          one heatmap batch per model -> (N, 2) heatmap pixels (decode, ensemble)
    heatmap_to_image: heatmap pixels -> full-scale canonical (codec) -> image (CanonicalFrame)

Points are (x, y) = (column, row). Heatmap pixels are those of each image's ROI crop at the
codec's scale (crop corners ``origins`` (N, 2), pixels of the scaled canonical image; None =
the fixed ROI); canonical points are full-scale ("disc on the left, 1956 x 1934"); image points are
pixels of the original photo.

``predict_heatmaps`` takes a dynamic model (a ``paddle.nn.Layer``) or any object with its
own ``predict_heatmaps(crops, batch_size, flip)`` (the exported Paddle Inference models of
gamma_kit.fovea.checkpoints.load_exported), so both paths share the rest of the chain.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

import gamma_kit  # noqa: F401  (threads before paddle)
from gamma_kit.fovea.codec import ORIGINAL_EMPTY_FALLBACK, HeatmapCodec
from gamma_kit.fovea.roi import RoiPolicy

__all__ = ["ENSEMBLES", "Located", "check_same_geometry", "predict_heatmaps", "roi_origins", "roi_crops",
           "heatmap_to_image", "image_to_heatmap", "combine", "locate", "evaluate_items"]

#: ``coords``: decode each model, average the positions (the original);
#: ``heatmap``: average the heatmaps, decode once.
ENSEMBLES = ("coords", "heatmap")


def check_same_geometry(names: Sequence[str | Path], codecs: Sequence[HeatmapCodec]) -> HeatmapCodec:
    """The first codec, after checking every model of an ensemble works on the same ROI crop
    (scale, heatmap size, ROI origin): ValueError naming the odd one otherwise."""
    ref = codecs[0]
    for f, c in zip(names, codecs):
        if (c.scale, c.heatmap_size, c.roi_origin_px) != (ref.scale, ref.heatmap_size, ref.roi_origin_px):
            raise ValueError(f"model {f} works at scale {c.scale} / ROI {c.heatmap_size} but {names[0]} at "
                             f"{ref.scale} / {ref.heatmap_size}: ensemble models of one config")
    return ref


def predict_heatmaps(model, crops: np.ndarray, batch_size: int = 8, amp: bool = False,
                     flip: bool = False) -> np.ndarray:
    """Heatmaps (N, h, w) float32 of (N, 3, h, w) float32 crops, in batches of ``batch_size``.

    ``model``: a paddle Layer (run in eval mode, no gradients; ``amp``: float16 autocast,
    meant for a GPU) or an object with ``predict_heatmaps(crops, batch_size, flip)`` (an
    exported model; ``amp`` does not apply). ``flip`` averages each heatmap with the
    mirrored heatmap of the mirrored crop (horizontal-flip test-time augmentation).
    """
    crops = np.asarray(crops, dtype=np.float32)
    if not hasattr(model, "state_dict") and hasattr(model, "predict_heatmaps"):
        return model.predict_heatmaps(crops, batch_size=batch_size, flip=flip)
    import paddle

    model.eval()
    out = []
    with paddle.no_grad():
        for s in range(0, len(crops), batch_size):
            x = paddle.to_tensor(crops[s:s + batch_size])
            with paddle.amp.auto_cast(enable=amp):
                y = model(x).astype("float32")
                if flip:
                    y = 0.5 * (y + paddle.flip(model(paddle.flip(x, [3])).astype("float32"), [3]))
            out.append(y.numpy()[:, 0])
    return np.concatenate(out) if out else np.zeros((0,) + crops.shape[2:], np.float32)


def roi_origins(canons: Sequence, codec: HeatmapCodec, roi: RoiPolicy | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Crop corners (N, 2) int (pixels of the scaled canonical image) of each image's ROI, the
    window centres (N, 2) full-scale canonical, the priors (N, 2) (disc-based estimates, NaN
    where none) and ``anchored`` (N,) bool, as ``roi`` places them (None or anchor "fixed": the
    fixed ROI; RoiPolicy.place)."""
    centres, priors, anchored = (roi or RoiPolicy()).place(canons, codec.roi_centre)
    return codec.origins_px(centres), centres, priors, anchored


def roi_crops(canons: Sequence, codec: HeatmapCodec, origins: np.ndarray | None = None) -> np.ndarray:
    """ROI crops (N, 3, h, w) float32 of canonical images (CanonicalImage, at the codec's scale)
    at crop corners ``origins`` (N, 2) (None: the fixed ROI); pixels outside the image are 0."""
    from gamma_kit.fovea.dataset import roi_crop

    if not len(canons):
        return np.zeros((0, 3, codec.height, codec.width), np.float32)
    origins = [None] * len(canons) if origins is None else origins
    return np.stack([roi_crop(c, codec, o) for c, o in zip(canons, origins)])


def heatmap_to_image(codec: HeatmapCodec, xy: np.ndarray, frames: Sequence,
                     origins: np.ndarray | None = None) -> np.ndarray:
    """(N, 2) heatmap pixels of the ROI crops (corners ``origins``, None: fixed) -> (N, 2)
    source-image pixels, one CanonicalFrame per point (heatmap -> full-scale canonical -> image)."""
    canon = codec.heatmap_to_canonical(np.asarray(xy, dtype=np.float64).reshape(-1, 2), origins)
    if not len(canon):
        return canon
    return np.stack([f.to_image(p[None])[0] for f, p in zip(frames, canon)])


def image_to_heatmap(codec: HeatmapCodec, xy: np.ndarray, frames: Sequence,
                     origins: np.ndarray | None = None) -> np.ndarray:
    """(N, 2) source-image pixels -> (N, 2) heatmap pixels of the ROI crops (the inverse)."""
    pts = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if not len(pts):
        return pts
    canon = np.stack([f.to_canonical(p[None])[0] for f, p in zip(frames, pts)])
    return codec.canonical_to_heatmap(canon, origins)


def combine(maps: Sequence[np.ndarray], codecs: Sequence[HeatmapCodec], ensemble: str = "coords",
            fill_empty: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Positions (N, 2) in heatmap pixels and ``empty`` (N,) bool from one heatmap batch
    (N, h, w) per model.

    ``coords``: each model's maps are decoded by its codec and the positions averaged over
    the models that found the fovea (empty maps are NaN under ``on_empty="nan"``); empty =
    every model empty. ``heatmap``: the maps are averaged and decoded by the first codec.
    ``fill_empty``: positions still NaN get the original fallback (384, 240) x scale.
    """
    if ensemble not in ENSEMBLES:
        raise ValueError(f"ensemble must be one of {ENSEMBLES}, got {ensemble!r}")
    if not len(maps):
        raise ValueError("no models to combine")
    ref = codecs[0]
    if ensemble == "heatmap" and len(maps) > 1:
        res = ref.decode(np.mean(maps, axis=0))
        xy, empty = res.xy, res.empty
    elif len(maps) == 1:
        res = (codecs[0] if ensemble == "coords" else ref).decode(maps[0])
        xy, empty = res.xy, res.empty
    else:
        decoded = [c.decode(h) for c, h in zip(codecs, maps)]
        stack = np.stack([d.xy for d in decoded])
        empty = np.all([d.empty for d in decoded], axis=0)
        if np.isnan(stack).any():
            xy = np.full(stack.shape[1:], np.nan)
            found = ~np.isnan(stack).any(axis=2)                   # (models, N)
            some = found.any(axis=0)
            xy[some] = (np.where(found[..., None], stack, 0).sum(axis=0)[some]
                        / found.sum(axis=0)[some, None])
        else:
            xy = stack.mean(axis=0)
    return (_fill_fallback(xy, ref) if fill_empty else xy), empty


def _fill_fallback(xy: np.ndarray, codec: HeatmapCodec) -> np.ndarray:
    """Positions (N, 2) in heatmap pixels with NaN ones set to the original fallback (384, 240) x scale."""
    return np.where(np.isnan(xy), np.asarray(ORIGINAL_EMPTY_FALLBACK) * codec.scale, xy) if np.isnan(xy).any() else xy


@dataclass
class Located:
    """What :func:`locate` found for N canonical images.

    ids: N ids; crops: (N, 3, h, w) ROI crops; maps: one (N, h, w) heatmap batch per model;
    heatmap_xy: (N, 2) heatmap pixels; canonical_xy: (N, 2) full-scale canonical;
    image_xy: (N, 2) source-image pixels; empty: (N,) bool; origins: (N, 2) crop corners
    (pixels of the scaled canonical image); anchored: (N,) bool, the ROI was placed by the
    policy's anchor (False: the fixed window for want of a disc); guarded: (N,) bool, the outlier
    guard replaced the decoded position by the prior (gamma_kit.fovea.roi); prior: (N, 2)
    full-scale canonical disc-based estimates of the fovea (NaN where none).
    """

    ids: list[str]
    crops: np.ndarray
    maps: list[np.ndarray]
    heatmap_xy: np.ndarray
    canonical_xy: np.ndarray
    image_xy: np.ndarray
    empty: np.ndarray
    origins: np.ndarray | None = None
    anchored: np.ndarray | None = None
    guarded: np.ndarray | None = None
    prior: np.ndarray | None = None

    def without_examples_beyond(self, n: int) -> "Located":
        """This result with ``crops`` and ``maps`` cut to the first ``n`` photos (copies, so the rest
        is freed); the positions of every photo are kept."""
        return replace(self, crops=self.crops[:n].copy(), maps=[m[:n].copy() for m in self.maps])

    @classmethod
    def concat(cls, parts: Sequence["Located"]) -> "Located":
        """``parts`` (consecutive chunks of photos) as one result."""
        if not parts:
            return cls([], np.zeros((0, 3, 0, 0), np.float32), [], *(np.zeros((0, 2)),) * 3, np.zeros(0, bool))

        def joined(name):
            values = [getattr(p, name) for p in parts]
            return None if any(v is None for v in values) else np.concatenate(values)

        maps = [np.concatenate([p.maps[m] for p in parts]) for m in range(len(parts[0].maps))]
        return cls([i for p in parts for i in p.ids], joined("crops"), maps, joined("heatmap_xy"),
                   joined("canonical_xy"), joined("image_xy"), joined("empty"), joined("origins"),
                   joined("anchored"), joined("guarded"), joined("prior"))

    def frame(self) -> pd.DataFrame:
        """Image positions as a ``data, Fovea_X, Fovea_Y`` table indexed by id."""
        return pd.DataFrame(self.image_xy, columns=["Fovea_X", "Fovea_Y"], index=pd.Index(self.ids, name="data"))


def locate(models: Sequence, canons: Sequence, codecs: Sequence[HeatmapCodec], ensemble: str = "coords",
           flip: bool = False, amp: bool = False, batch_size: int = 8, fill_empty: bool = False,
           roi: RoiPolicy | None = None) -> Located:
    """The whole chain for canonical images ``canons`` (CanonicalImage) and one or more models
    (each with its codec; all on the same ROI geometry): ROI placement (``roi``; None: the
    fixed window) -> crops -> heatmaps -> ensemble -> canonical (-> the policy's outlier guard)
    -> image positions."""
    if len(models) != len(codecs) or not len(models):
        raise ValueError(f"need one codec per model, got {len(models)} models and {len(codecs)} codecs")
    ref = codecs[0]
    roi = roi or RoiPolicy()
    origins, _, priors, anchored = roi_origins(canons, ref, roi)
    crops = roi_crops(canons, ref, origins)
    maps = [predict_heatmaps(m, crops, batch_size=batch_size, amp=amp, flip=flip) for m in models]
    if not len(canons):
        empty = np.zeros((0, 2))
        return Located([], crops, maps, empty, empty, empty, np.zeros(0, bool), origins, anchored,
                       np.zeros(0, bool), priors)
    xy, is_empty = combine(maps, codecs, ensemble, fill_empty=False)
    canon_xy, guarded = roi.guard(ref.heatmap_to_canonical(xy, origins), priors, anchored, is_empty)
    xy = ref.canonical_to_heatmap(canon_xy, origins)
    if fill_empty and np.isnan(xy).any():      # NaN left where no guard applied: the original fallback
        xy = _fill_fallback(xy, ref)
        canon_xy = ref.heatmap_to_canonical(xy, origins)
    image_xy = heatmap_to_image(ref, xy, [c.frame for c in canons], origins)
    return Located([c.id for c in canons], crops, maps, xy, canon_xy, image_xy, is_empty, origins, anchored,
                   guarded, priors)


def evaluate_items(model, items: Sequence, codec: HeatmapCodec, amp: bool, batch_size: int,
                   roi: RoiPolicy | None = None, flip: bool = False) -> tuple[float, pd.DataFrame]:
    """Validation AED of ``model`` on ``items`` (FoveaItem: canonical image + canonical GT):
    ROI crop (``roi``; None: the fixed window) -> heatmap (``flip``: flip TTA) -> decode (the
    codec's empty policy, no fill) -> image -> challenge ED normalised by the source size
    (gamma_kit.metrics). Returns (AED, predictions ``data, Fovea_X, Fovea_Y`` in image pixels)."""
    from gamma_kit.metrics import evaluate_fovea

    found = locate([model], [it.canon for it in items], [codec], amp=amp, batch_size=batch_size, roi=roi,
                   flip=flip)
    pred_df = found.frame()
    gt = np.stack([it.canon.frame.to_image(it.fovea[None])[0] for it in items])
    gt_df = pd.DataFrame(gt, columns=["Fovea_X", "Fovea_Y"], index=pd.Index(found.ids, name="data"))
    scores = evaluate_fovea(pred_df, gt_df, {it.canon.id: it.canon.size for it in items})
    return scores["aed"], pred_df
