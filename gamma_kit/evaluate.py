"""Score GAMMA predictions the challenge way (command line; the scoring is ``gamma_kit.scoring``).

    python -m gamma_kit.evaluate fovea --pred P.csv --gt GT.xlsx --images DIR [--json]
    python -m gamma_kit.evaluate seg --pred DIR|submission.zip --gt DIR [--json] [--weights 0.3,0.4,0.3]

``fovea``: P.csv has ``data,Fovea_X,Fovea_Y``; GT is .xlsx or .csv; DIR holds the test
images, whose sizes normalise the distances. ``seg``: the folders hold ``<id>.bmp``
(or .png) masks with values 0/128/255; ``--pred`` may also be the submission zip, whose layout is
checked as the challenge takes it (``Disc_Cup_Segmentations/<id>.bmp`` at its top) and whose masks
are read in memory (nothing is unpacked). With ``--json`` one strict JSON object is printed
(``null`` where a number is not finite): keys aed, score, n (fovea) or dice_disc,
dice_cup, vcdr_mae, score, n (seg).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gamma_kit.metrics import DEFAULT_SEG_WEIGHTS
from gamma_kit.cli import ArgumentValueError, run_cli
from gamma_kit.scoring import score_fovea_files, score_seg_folders, summary, to_json

__all__ = ["score_fovea_files", "score_seg_folders", "main"]   # the scorers, re-exported for old imports


def _weights(text: str) -> dict:
    try:
        parts = [float(v) for v in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) != 3:
        raise ArgumentValueError(f"--weights needs three numbers 'disc,cup,vcdr' (disc Dice, cup Dice, "
                                 f"1 - vCDR MAE), got {text!r}")
    return dict(zip(DEFAULT_SEG_WEIGHTS, parts))


def _format(value) -> str:
    return f"{value:.5f}" if isinstance(value, float) else ("n/a" if value is None else str(value))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gamma_kit.evaluate", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="task", required=True)
    f = sub.add_parser("fovea", help="task 2: AED and score 1/(AED+0.1)")
    f.add_argument("--pred", required=True, type=Path, help="submission CSV data,Fovea_X,Fovea_Y")
    f.add_argument("--gt", required=True, type=Path, help="ground truth .xlsx or .csv")
    f.add_argument("--images", required=True, type=Path, help="folder of the test images (for their sizes)")
    f.add_argument("--json", action="store_true", help="print one JSON object")
    s = sub.add_parser("seg", help="task 3: disc/cup Dice, vCDR MAE, combined score")
    s.add_argument("--pred", required=True, type=Path,
                   help="folder of predicted <id>.bmp masks (0/128/255), or the submission zip "
                        "(Disc_Cup_Segmentations/<id>.bmp inside)")
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
    else:
        res = score_seg_folders(args.pred, args.gt, args.weights)
    numbers = summary(res, args.task)
    if args.json:
        print(to_json(numbers))
    else:
        print("\n".join(f"{k:>10}: {_format(v)}" for k, v in numbers.items()))


if __name__ == "__main__":
    sys.exit(main())
