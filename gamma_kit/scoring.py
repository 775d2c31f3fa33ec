"""Scoring library behind ``python -m gamma_kit.evaluate``: files in, challenge numbers out.

``score_fovea_files`` reads a task 2 submission CSV, the ground truth and the test images'
sizes (the distances are normalised by each original image's width and height);
``score_seg_folders`` reads the predicted 0/128/255 masks from a folder or a submission zip
and the ground truth from a folder. Ids are matched the kit's one
way (``data.id_key``: whole numbers by value, so ``101`` matches ``0101.jpg``). The maths
lives in ``gamma_kit.metrics``; the CLI in ``gamma_kit.evaluate`` only parses arguments
and prints ``summary`` (``json_safe`` turns non-finite numbers into ``null``).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from gamma_kit.data import (image_size, list_images, list_masks, match_gt_to_images, open_masks, read_fovea_gt,
                            read_mask, rekey_ids)
from gamma_kit.metrics import evaluate_fovea, evaluate_seg

__all__ = ["score_fovea_files", "score_seg_folders", "summary", "json_safe", "to_json", "SUMMARY_KEYS"]

#: The numbers each task reports, in print order.
SUMMARY_KEYS = {"fovea": ("aed", "score", "n"), "seg": ("dice_disc", "dice_cup", "vcdr_mae", "score", "n")}


def score_fovea_files(pred_csv: str | Path, gt_path: str | Path, images_dir: str | Path) -> dict:
    """Score a submission CSV (``data,Fovea_X,Fovea_Y``) against GT (.xlsx/.csv); image
    sizes (W, H) come from the files in ``images_dir``. Returns ``metrics.evaluate_fovea``'s dict."""
    pred = read_fovea_gt(pred_csv, what="prediction CSV")
    gt = read_fovea_gt(gt_path)
    images = list_images(images_dir)
    gt = match_gt_to_images(gt, images, gt_path, warn=False)      # the folder only gives sizes
    pred = match_gt_to_images(pred, images, pred_csv, require_images=False, warn=False)
    sizes = {i: image_size(images[i]) for i in gt.index}
    outside = [i for i in gt.index if not (0 <= gt.loc[i, "Fovea_X"] <= sizes[i][0]
                                           and 0 <= gt.loc[i, "Fovea_Y"] <= sizes[i][1])]
    if outside:
        raise ValueError(f"{gt_path}: fovea outside its image for id(s) {outside[:10]}")
    return evaluate_fovea(pred, gt, sizes)


def score_seg_folders(pred: str | Path, gt_dir: str | Path, weights: dict | None = None) -> dict:
    """Score predicted masks against a folder of GT masks (ids by file stem, matched by
    ``id_key``). ``pred`` is a folder of masks or a submission zip (``Disc_Cup_Segmentations/<id>.bmp``
    inside, checked and read in memory by ``data.open_masks``). Returns ``metrics.evaluate_seg``'s dict."""
    gt_files = list_masks(gt_dir)
    with open_masks(pred, "prediction folder or submission zip") as masks:
        mapping = rekey_ids(masks.ids, gt_files, pred)
        pred_ids = {mapping[i]: i for i in masks.ids}
        missing = [i for i in gt_files if i not in pred_ids]
        if missing:
            raise ValueError(f"{pred}: no predicted mask for {len(missing)} id(s) of {gt_dir}: {missing[:10]}")
        gt = {i: read_mask(p) for i, p in gt_files.items()}
        pred_masks = {i: masks.read(pred_ids[i], expected_size=gt[i].shape[::-1]) for i in gt}
    return evaluate_seg(pred_masks, gt, weights)


def summary(result: dict, task: str) -> dict:
    """The reported numbers of a scoring result (``SUMMARY_KEYS[task]``), non-finite as None."""
    return json_safe({k: result[k] for k in SUMMARY_KEYS[task]})


def json_safe(obj):
    """``obj`` with every NaN or infinite float (also inside dicts and lists) replaced by None."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def to_json(obj, **kwargs) -> str:
    """Strict JSON text (``null`` for non-finite numbers, never ``Infinity`` or ``NaN``)."""
    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)
