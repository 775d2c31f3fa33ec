"""Trivial baselines that every model must beat (the numbers the demo prints first).

- Fovea: the mean training fovea position in the canonical frame, mapped back into
  each test image (so eye side and camera are handled as for a model).
- Segmentation: an empty prediction (all background, 255).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
from tqdm import tqdm

from gamma_kit.data import FoveaSplit, read_image
from gamma_kit.geometry import CanonicalFrame

__all__ = ["mean_position_baseline", "empty_mask_baseline"]


def _frame(path, overrides: Mapping[str, str] | None, image_id: str) -> CanonicalFrame:
    side = (overrides or {}).get(image_id)
    return CanonicalFrame.from_image(read_image(path), disc_side=side, name=str(path))


def mean_position_baseline(train: FoveaSplit, test_images: Mapping[str, "os.PathLike"],
                           overrides: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Predict, for every test image, the mean canonical training fovea.

    Returns a DataFrame indexed by test id with Fovea_X, Fovea_Y in image pixels.
    """
    if train.gt is None or len(train.gt) == 0:
        raise ValueError(f"{train.root}: the mean-position baseline needs training ground truth")
    canon = []
    for i in tqdm(list(train.gt.index), desc="baseline: training frames", leave=False):
        frame = _frame(train.images[i], overrides, i)
        canon.append(frame.to_canonical(train.gt.loc[[i], ["Fovea_X", "Fovea_Y"]].to_numpy())[0])
    mean = np.mean(canon, axis=0, keepdims=True)
    rows = {}
    for i, path in tqdm(list(test_images.items()), desc="baseline: test frames", leave=False):
        rows[i] = _frame(path, overrides, i).to_image(mean)[0]
    return pd.DataFrame.from_dict(rows, orient="index", columns=["Fovea_X", "Fovea_Y"]).rename_axis("data")


def empty_mask_baseline(shapes: Mapping[str, tuple[int, int]]) -> dict[str, np.ndarray]:
    """All-background masks of the given (H, W) shapes."""
    return {i: np.full(s, 255, np.uint8) for i, s in shapes.items()}
