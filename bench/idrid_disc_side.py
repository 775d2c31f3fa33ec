"""Measure eye-side (optic-disc side) detection on the real IDRiD photographs.

    python bench/idrid_disc_side.py [--data ../shared/data/idrid_fovea]

Ground truth: the disc is on the left when OD_X < Fovea_X (optic_disc_center_GT.csv,
fovea_GT.csv). Prints the accuracy, the lowest confidences and the disc-centre error.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from gamma_kit.data import read_image
from gamma_kit.geometry import MIN_SIDE_CONFIDENCE, detect_disc_side, detect_fov

DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "idrid_fovea"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT)
    args = ap.parse_args()
    od = pd.read_csv(args.data / "optic_disc_center_GT.csv", dtype={"data": str}).set_index("data")
    fv = pd.read_csv(args.data / "fovea_GT.csv", dtype={"data": str}).set_index("data")
    rows = []
    t0 = time.perf_counter()
    for i in tqdm(od.index, desc="disc side"):
        img = read_image(args.data / "images" / f"{i}.jpg")
        fov = detect_fov(img)
        det = detect_disc_side(img, fov)
        truth = "left" if od.loc[i, "OD_X"] < fv.loc[i, "Fovea_X"] else "right"
        err = np.hypot(det.disc_xy[0] - od.loc[i, "OD_X"], det.disc_xy[1] - od.loc[i, "OD_Y"])
        rows.append(dict(id=i, truth=truth, pred=det.side, conf=det.confidence, disc_err_px=err,
                         fov_r=fov.radius, fov_cx=fov.cx, fov_cy=fov.cy))
    dt = time.perf_counter() - t0
    df = pd.DataFrame(rows)
    ok = (df.truth == df.pred).sum()
    print(f"disc side correct: {ok}/{len(df)}; decided (conf >= {MIN_SIDE_CONFIDENCE}): "
          f"{(df.conf >= MIN_SIDE_CONFIDENCE).sum()}/{len(df)}; "
          f"disc centre error median {df.disc_err_px.median():.0f} px, max {df.disc_err_px.max():.0f} px; "
          f"{dt / len(df):.2f} s per image (incl. JPEG decode)")
    print(df.sort_values("conf").head(5).to_string(index=False))
    wrong = df[df.truth != df.pred]
    if len(wrong):
        print("wrong:\n" + wrong.to_string(index=False))


if __name__ == "__main__":
    main()
