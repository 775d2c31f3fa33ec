"""Faithful re-statements of the ORIGINAL fovea method's slow parts (SPEC 2), for timing
against gamma_kit in the same process. These are per-pixel Python loops ON PURPOSE:
they restate what the original code did; nothing in the kit uses them.

Conventions as in the original: heatmaps built as (W, H) arrays (x first) and returned
transposed to the kit's (H, W) for comparison; images read with cv2 (BGR -> RGB);
samples returned as (C, H, W) float32 (the original kept (C, W, H): the transpose
costs the same either way).
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fovea_decode import original_loop_decode  # noqa: E402  (the fovea helper's loop decoder)

__all__ = ["original_target_loop", "original_decode", "OriginalFoveaDataset", "original_loop_decode",
           "ORIGINAL_CROP", "CANONICAL_W"]

#: 2992x2000 images are cropped to x in [518, 518+1956), y in [33, 33+1934) (SPEC 2)
ORIGINAL_CROP = {(2992, 2000): (518, 33), (1956, 1934): (0, 0)}
CANONICAL_W = 1956


def original_target_loop(cx: float, cy: float, width: int = 608, height: int = 400,
                         radius: float = 80.0, peak: float = 10.0) -> np.ndarray:
    """The original target: for every pixel (x, y) a Python loop computes
    ``peak * exp(-(d / r)^2)`` if d < r. Returns (H, W) float32."""
    hm = np.zeros((width, height), np.float32)      # the original's (W, H) layout
    for i in range(width):
        for j in range(height):
            d = math.sqrt((i - cx) ** 2 + (j - cy) ** 2)
            if d < radius:
                hm[i, j] = peak * math.exp(-(d / radius) ** 2)
    return hm.T


def original_decode(heatmap: np.ndarray, kernel_size: int = 80) -> tuple[float, float]:
    """The original decoder with its empty-map rule: sum < 1000 -> (384, 240), else the loop."""
    if float(np.sum(heatmap)) < 1000:
        return 384.0, 240.0
    return original_loop_decode(heatmap, kernel_size)


class OriginalFoveaDataset:
    """Per sample, as the original: read the GT spreadsheet with pandas, decode the full
    JPEG with cv2, crop 2992x2000 to the canonical frame, flip right eyes (the original's
    hand-typed side list: here ``sides`` id -> "left"/"right"), draw the random shift,
    crop 608x400 and build the target with Python loops.

    ``dataset[k]`` -> (image (3, 400, 608) float32, target (1, 400, 608) float32).
    """

    def __init__(self, images: dict[str, Path], gt_xlsx: Path, sides: dict[str, str], seed: int = 0,
                 roi: tuple[int, int] = (608, 400), shift: tuple[int, int] = (240, 180)) -> None:
        self.ids = list(images)
        self.images, self.gt_xlsx, self.sides = images, Path(gt_xlsx), sides
        self.roi, self.shift = roi, shift
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        image_id = self.ids[k]
        gt = pd.read_excel(self.gt_xlsx)                          # every sample, as the original
        gt["data"] = gt["data"].astype(str).str.zfill(4)
        rec = gt[gt["data"] == image_id].iloc[0]
        x, y = float(rec["Fovea_X"]), float(rec["Fovea_Y"])
        img = cv2.imread(str(self.images[image_id]))[:, :, ::-1]  # full JPEG decode, BGR -> RGB
        h, w = img.shape[:2]
        ox, oy = ORIGINAL_CROP[(w, h)]
        img = img[oy:oy + 1934, ox:ox + 1956]
        x, y = x - ox, y - oy
        if self.sides[image_id] == "right":
            img = img[:, ::-1]
            x = CANONICAL_W - x
        dx = int(self.rng.integers(-self.shift[0], self.shift[0] + 1))
        dy = int(self.rng.integers(-self.shift[1], self.shift[1] + 1))
        rw, rh = self.roi
        x0, y0 = int(x + dx) - rw // 2, int(y + dy) - rh // 2
        win = np.zeros((rh, rw, 3), np.uint8)
        sx0, sy0 = max(x0, 0), max(y0, 0)
        sx1, sy1 = min(x0 + rw, img.shape[1]), min(y0 + rh, img.shape[0])
        win[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = img[sy0:sy1, sx0:sx1]
        target = original_target_loop(x - x0, y - y0, rw, rh)
        return win.transpose(2, 0, 1).astype(np.float32), target[None]
