"""Challenge metrics for GAMMA task 2 (fovea) and task 3 (disc / cup), SPEC 5.

Task 2: ``ED_i = sqrt(((x^ - x) / W_i)^2 + ((y^ - y) / H_i)^2)`` with (W_i, H_i) the size
of the *original* image; AED = mean ED; score = 1 / (AED + 0.1) (at most 10).

Task 3, REFUGE convention, on 0/128/255 masks: cup = mask == 0, disc = mask < 255
(the disc includes the cup). Dice per image, then averaged over images (not pooled
over pixels as PaddleSeg does). Vertical diameter = the largest count of structure
pixels in any column; vCDR = cup diameter / disc diameter; the error is the mean
absolute vCDR difference.

The official weights that combine the three task 3 numbers are not verified (SPEC 5),
so the combined score is ``w_disc * dice_disc + w_cup * dice_cup + w_vcdr * (1 - vcdr_mae)``
with ``DEFAULT_SEG_WEIGHTS`` documented here and overridable everywhere.
"""
from __future__ import annotations

from typing import Mapping

import cv2
import numpy as np
import pandas as pd

from gamma_kit.data import check_mask_values

__all__ = [
    "fovea_ed", "fovea_score", "evaluate_fovea", "dice", "vertical_diameter", "vcdr",
    "seg_image_metrics", "evaluate_seg", "summarise_seg", "DEFAULT_SEG_WEIGHTS", "disc_of", "cup_of",
]

# Unverified stand-in weights (disc Dice, cup Dice, 1 - vCDR MAE); they sum to 1 so the
# combined score lies in [0, 1]. Pass your own where the official ones are known.
DEFAULT_SEG_WEIGHTS = {"dice_disc": 0.3, "dice_cup": 0.4, "vcdr": 0.3}


def fovea_ed(pred: np.ndarray, gt: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Normalised Euclidean distance per image.

    pred, gt: (N, 2) points (x, y) in original-image pixels; sizes: (N, 2) as (W, H).
    Returns (N,) distances.
    """
    pred, gt, sizes = (np.asarray(a, dtype=np.float64).reshape(-1, 2) for a in (pred, gt, sizes))
    if not (len(pred) == len(gt) == len(sizes)):
        raise ValueError(f"pred, gt and sizes need the same length, got {len(pred)}, {len(gt)}, {len(sizes)}")
    if (sizes <= 0).any():
        raise ValueError("image sizes must be positive")
    with np.errstate(over="ignore"):   # an absurd prediction (1e308 px) is an infinite distance, not a warning
        return np.sqrt((((pred - gt) / sizes) ** 2).sum(axis=1))


def fovea_score(aed: float) -> float:
    """Task 2 leaderboard score 1 / (AED + 0.1)."""
    return 1.0 / (float(aed) + 0.1)


def evaluate_fovea(pred: pd.DataFrame, gt: pd.DataFrame, sizes: Mapping[str, tuple[int, int]]) -> dict:
    """Score predictions against ground truth, both indexed by id with Fovea_X, Fovea_Y.

    ``sizes`` maps id -> original (W, H). Every GT id needs a prediction; extra
    predictions are an error too (a submission must match the test set).
    Returns ``{"aed", "score", "n", "per_image": DataFrame[id -> ed]}``.
    """
    missing = sorted(set(gt.index) - set(pred.index))
    extra = sorted(set(pred.index) - set(gt.index))
    if missing or extra:
        raise ValueError(f"predictions and ground truth differ: no prediction for {missing[:10]}, "
                         f"no ground truth for {extra[:10]}")
    if len(gt) == 0:
        raise ValueError("ground truth is empty")
    ids = list(gt.index)
    no_size = [i for i in ids if i not in sizes]
    if no_size:
        raise ValueError(f"no image size for id(s) {no_size[:10]}")
    cols = ["Fovea_X", "Fovea_Y"]
    ed = fovea_ed(pred.loc[ids, cols].to_numpy(), gt.loc[ids, cols].to_numpy(), np.array([sizes[i] for i in ids]))
    aed = float(ed.mean())
    return {"aed": aed, "score": fovea_score(aed), "n": len(ids),
            "per_image": pd.DataFrame({"ed": ed}, index=pd.Index(ids, name="data"))}


def disc_of(mask: np.ndarray) -> np.ndarray:
    """The disc (rim and cup: every value but 255) of a 0/128/255 mask, as a boolean (H, W) array."""
    return np.asarray(mask) < 255


def cup_of(mask: np.ndarray) -> np.ndarray:
    """The cup (value 0) of a 0/128/255 mask, as a boolean (H, W) array."""
    return np.asarray(mask) == 0


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    denom = int(pred.sum()) + int(gt.sum())
    return 1.0 if denom == 0 else 2.0 * int(np.logical_and(pred, gt).sum()) / denom


def vertical_diameter(structure: np.ndarray) -> int:
    """Largest number of structure pixels in any column of an (H, W) boolean mask."""
    s = np.asarray(structure, bool)
    if not s.size:
        return 0
    # column sums in int32 by OpenCV: ~6x faster than NumPy's on a full-size mask, the same integers
    return int(cv2.reduce(np.ascontiguousarray(s).view(np.uint8), 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S).max())


def vcdr(mask: np.ndarray) -> float:
    """Vertical cup-to-disc ratio of a 0/128/255 mask; 0.0 when there is no disc."""
    disc = vertical_diameter(disc_of(mask))
    return 0.0 if disc == 0 else vertical_diameter(cup_of(mask)) / disc


def seg_image_metrics(pred: np.ndarray, gt: np.ndarray, name: str = "image") -> dict:
    """Disc and cup Dice and both vCDRs for one pair of (H, W) 0/128/255 masks."""
    pred, gt = check_mask_values(pred, f"{name} prediction"), check_mask_values(gt, f"{name} ground truth")
    if pred.shape != gt.shape:
        raise ValueError(f"{name}: prediction is {pred.shape[1]}x{pred.shape[0]} but ground truth is "
                         f"{gt.shape[1]}x{gt.shape[0]} (w x h); predict at the original size")
    return {"dice_disc": dice(disc_of(pred), disc_of(gt)), "dice_cup": dice(cup_of(pred), cup_of(gt)),
            "vcdr_pred": vcdr(pred), "vcdr_gt": vcdr(gt)}


def evaluate_seg(pred: Mapping[str, np.ndarray], gt: Mapping[str, np.ndarray],
                 weights: Mapping[str, float] | None = None) -> dict:
    """Average per-image metrics over the ids of ``gt``.

    Returns ``{"dice_disc", "dice_cup", "vcdr_mae", "score", "n", "weights", "per_image"}``.
    """
    weights = dict(DEFAULT_SEG_WEIGHTS if weights is None else weights)
    if set(weights) != set(DEFAULT_SEG_WEIGHTS):
        raise ValueError(f"weights need exactly the keys {sorted(DEFAULT_SEG_WEIGHTS)}, got {sorted(weights)}")
    missing = sorted(set(gt) - set(pred))
    if missing:
        raise ValueError(f"no prediction for {len(missing)} ground-truth id(s): {missing[:10]}")
    if not gt:
        raise ValueError("ground truth is empty")
    return summarise_seg({i: seg_image_metrics(pred[i], gt[i], name=i) for i in sorted(gt)}, weights)


def summarise_seg(rows: Mapping[str, dict], weights: Mapping[str, float] | None = None) -> dict:
    """``evaluate_seg``'s result from per-image ``seg_image_metrics`` rows (id -> row), so that a
    caller can score photo by photo without holding the masks."""
    weights = dict(DEFAULT_SEG_WEIGHTS if weights is None else weights)
    if not rows:
        raise ValueError("ground truth is empty")
    per = pd.DataFrame.from_dict({i: rows[i] for i in sorted(rows)}, orient="index")
    per.index.name = "data"
    per["vcdr_err"] = (per["vcdr_pred"] - per["vcdr_gt"]).abs()
    out = {"dice_disc": float(per["dice_disc"].mean()), "dice_cup": float(per["dice_cup"].mean()),
           "vcdr_mae": float(per["vcdr_err"].mean()), "n": len(per)}
    out["score"] = (weights["dice_disc"] * out["dice_disc"] + weights["dice_cup"] * out["dice_cup"]
                    + weights["vcdr"] * (1.0 - out["vcdr_mae"]))
    out["weights"] = weights
    out["per_image"] = per
    return out
