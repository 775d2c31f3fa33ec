"""Score GAMMA predictions the challenge way.

    python -m gamma_kit.evaluate fovea --pred P.csv --gt GT.xlsx --images DIR [--json]
    python -m gamma_kit.evaluate seg --pred DIR --gt DIR [--json] [--weights 0.3,0.4,0.3]

``fovea``: P.csv has ``data,Fovea_X,Fovea_Y``; GT is .xlsx or .csv; DIR holds the test
images, whose sizes normalise the distances. ``seg``: both folders hold ``<id>.bmp``
(or .png) masks with values 0/128/255. With ``--json`` one JSON object is printed:
keys aed, score, n (fovea) or dice_disc, dice_cup, vcdr_mae, score, n (seg).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gamma_kit.data import MASK_EXTS, image_size, list_images, read_fovea_gt, read_mask
from gamma_kit.metrics import DEFAULT_SEG_WEIGHTS, evaluate_fovea, evaluate_seg
from gamma_kit.runtime import run_cli

__all__ = ["score_fovea_files", "score_seg_folders", "main"]


def score_fovea_files(pred_csv: str | Path, gt_path: str | Path, images_dir: str | Path) -> dict:
    """Score a submission CSV against GT; image sizes come from ``images_dir``."""
    pred = read_fovea_gt(pred_csv, what="prediction CSV")
    gt = read_fovea_gt(gt_path)
    images = list_images(images_dir)
    no_image = [i for i in gt.index if i not in images]
    if no_image:
        raise ValueError(f"{gt_path}: id(s) {no_image[:10]} have no image in {images_dir}")
    sizes = {i: image_size(images[i]) for i in gt.index}
    outside = [i for i in gt.index if not (0 <= gt.loc[i, "Fovea_X"] <= sizes[i][0]
                                           and 0 <= gt.loc[i, "Fovea_Y"] <= sizes[i][1])]
    if outside:
        raise ValueError(f"{gt_path}: fovea outside its image for id(s) {outside[:10]}")
    return evaluate_fovea(pred, gt, sizes)


def score_seg_folders(pred_dir: str | Path, gt_dir: str | Path, weights: dict | None = None) -> dict:
    """Score a folder of predicted masks against a folder of GT masks (ids by file stem)."""
    gt_files = list_images(gt_dir, MASK_EXTS)
    pred_files = list_images(pred_dir, MASK_EXTS)
    missing = [i for i in gt_files if i not in pred_files]
    if missing:
        raise ValueError(f"{pred_dir}: no predicted mask for {len(missing)} id(s) of {gt_dir}: {missing[:10]}")
    gt = {i: read_mask(p) for i, p in gt_files.items()}
    pred = {i: read_mask(pred_files[i], expected_size=gt[i].shape[::-1]) for i in gt}
    return evaluate_seg(pred, gt, weights)


def _weights(text: str) -> dict:
    parts = [float(v) for v in text.split(",")]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError("--weights needs three numbers: disc Dice, cup Dice, 1 - vCDR MAE")
    return dict(zip(DEFAULT_SEG_WEIGHTS, parts))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gamma_kit.evaluate", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="task", required=True)
    f = sub.add_parser("fovea", help="task 2: AED and score 1/(AED+0.1)")
    f.add_argument("--pred", required=True, type=Path, help="submission CSV data,Fovea_X,Fovea_Y")
    f.add_argument("--gt", required=True, type=Path, help="ground truth .xlsx or .csv")
    f.add_argument("--images", required=True, type=Path, help="folder of the test images (for their sizes)")
    f.add_argument("--json", action="store_true", help="print one JSON object")
    s = sub.add_parser("seg", help="task 3: disc/cup Dice, vCDR MAE, combined score")
    s.add_argument("--pred", required=True, type=Path, help="folder of predicted <id>.bmp masks (0/128/255)")
    s.add_argument("--gt", required=True, type=Path, help="folder of ground-truth masks")
    s.add_argument("--weights", type=_weights, default=None,
                   help="combined-score weights 'disc,cup,vcdr' (default %s, unverified)"
                        % ",".join(str(v) for v in DEFAULT_SEG_WEIGHTS.values()))
    s.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    return run_cli(lambda: _score(args))


def _score(args: argparse.Namespace) -> None:
    if args.task == "fovea":
        res = score_fovea_files(args.pred, args.gt, args.images)
        keys = ("aed", "score", "n")
    else:
        res = score_seg_folders(args.pred, args.gt, args.weights)
        keys = ("dice_disc", "dice_cup", "vcdr_mae", "score", "n")
    summary = {k: res[k] for k in keys}
    if args.json:
        print(json.dumps(summary))
    else:
        print("\n".join(f"{k:>10}: {v:.5f}" if isinstance(v, float) else f"{k:>10}: {v}" for k, v in summary.items()))


if __name__ == "__main__":
    sys.exit(main())
