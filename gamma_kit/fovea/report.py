"""``fovea_report.csv``: one row per predicted photo, with what a reviewer needs to doubt it.

Columns (``REPORT_COLUMNS``): the position (image px, as in the submission), where it came from
(``network``; ``guard``: the outlier guard put the disc-based estimate there; ``fallback``: every
heatmap was empty and the original fallback point was used), the ensemble heatmap's ``peak`` height
(the training target peaks at ``codec.peak``, 10) and ``sharpness`` (share of its positive mass within
one target radius of its maximum: 1 for a single compact peak), ``fold_spread_px`` (the largest
distance between two folds' own positions, image px; 0 for one model, empty when no fold found a
peak), ``from_prior_px`` (distance to the disc-based estimate, on photos whose window the disc placed)
and ``flags`` (``REPORT_FLAGS``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from gamma_kit.fovea.codec import HeatmapCodec
from gamma_kit.fovea.inference import Located, heatmap_to_image

__all__ = ["FOVEA_REPORT", "REPORT_COLUMNS", "REPORT_FLAGS", "WEAK_PEAK", "FOLDS_APART", "FAR_FROM_PRIOR",
           "report_rows"]

FOVEA_REPORT = "fovea_report.csv"
REPORT_COLUMNS = ("id", "x", "y", "source", "peak", "sharpness", "fold_spread_px", "from_prior_px", "flags")
REPORT_FLAGS = ("empty", "guarded", "fixed_window", "weak_peak", "flat_peak", "folds_disagree", "far_from_prior")
WEAK_PEAK = 0.5          # a peak under this share of the target's peak height is weak
FLAT_PEAK = 0.5          # a sharpness under this: most of the heatmap lies away from its peak
FOLDS_APART = 0.01       # folds farther apart than this share of the photo's width disagree
FAR_FROM_PRIOR = 0.05    # a position farther than this share of the width from the disc-based estimate


def _peak_and_sharpness(maps: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """(N,) peak heights and sharpness of (N, h, w) heatmaps (see the module docstring)."""
    n, h, w = maps.shape
    flat = maps.reshape(n, -1)
    peak = flat.max(axis=1)
    iy, ix = np.unravel_index(flat.argmax(axis=1), (h, w))
    yy, xx = np.mgrid[0:h, 0:w]
    near = (yy[None] - iy[:, None, None]) ** 2 + (xx[None] - ix[:, None, None]) ** 2 <= radius ** 2
    mass = np.clip(maps, 0, None)
    total = mass.reshape(n, -1).sum(axis=1)
    inside = (mass * near).reshape(n, -1).sum(axis=1)
    return peak, np.divide(inside, total, out=np.zeros(n), where=total > 0)


def report_rows(found: Located, frames: Sequence, codecs: Sequence[HeatmapCodec], anchor: str) -> list[dict]:
    """``fovea_report.csv`` rows of a ``Located`` that still holds every photo's heatmaps (one chunk of a
    prediction), ``frames`` its CanonicalFrames, ``codecs`` one per model, ``anchor`` the ROI rule's."""
    ref = codecs[0]
    peak, sharp = _peak_and_sharpness(np.mean(found.maps, axis=0), ref.radius)
    folds = [heatmap_to_image(c, c.decode(m).xy, frames, found.origins) for c, m in zip(codecs, found.maps)]
    rows = []
    for k, image_id in enumerate(found.ids):
        xy, width = found.image_xy[k], frames[k].image_size[0]
        found_by = [f[k] for f in folds if np.isfinite(f[k]).all()]
        spread = max((float(np.hypot(*(a - b))) for a in found_by for b in found_by), default=np.nan)
        anchored = bool(found.anchored[k]) if found.anchored is not None else False
        prior = (float(np.hypot(*(frames[k].to_image(found.prior[k][None])[0] - xy)))
                 if anchored and found.prior is not None else np.nan)
        guarded, empty = bool(found.guarded[k]) if found.guarded is not None else False, bool(found.empty[k])
        flags = [name for name, on in (
            ("empty", empty), ("guarded", guarded), ("fixed_window", anchor != "fixed" and not anchored),
            ("weak_peak", peak[k] < WEAK_PEAK * ref.peak), ("flat_peak", sharp[k] < FLAT_PEAK),
            ("folds_disagree", spread > FOLDS_APART * width), ("far_from_prior", prior > FAR_FROM_PRIOR * width)) if on]
        rows.append({"id": image_id, "x": round(float(xy[0]), 2), "y": round(float(xy[1]), 2),
                     "source": "guard" if guarded else ("fallback" if empty else "network"),
                     "peak": round(float(peak[k]), 3), "sharpness": round(float(sharp[k]), 3),
                     "fold_spread_px": "" if np.isnan(spread) else round(spread, 1),
                     "from_prior_px": "" if np.isnan(prior) else round(prior, 1), "flags": " ".join(flags)})
    return rows
