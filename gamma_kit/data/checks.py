"""Is this a usable fundus photograph? Size and field-of-view checks, before any work.

``check_fundus_image`` refuses photos below ``MIN_FUNDUS_SIDE`` px and pictures without a dark
surround around a circular field (``check_photo_size`` is its size part alone, for a size read from
a file header; ``check_photo_sizes`` checks a whole folder's photos from their headers before any work).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from gamma_kit.data.images import image_size

__all__ = ["MIN_FUNDUS_SIDE", "FOV_DARK_LEVEL", "FOV_DARK_SHARE", "NOISE_STEP_LIMIT", "check_photo_size",
           "check_photo_sizes", "check_fundus_image"]



#: Smallest short side (px) of a photo the kit works on. Below it the optic disc is under
#: ~20 px tall (it spans about a sixth of the field) and neither method has anything to find;
#: the kit's smallest test fixtures (160x128 px) just meet it.
MIN_FUNDUS_SIDE = 128
#: ``check_fundus_image``: a pixel of the surround is "dark" below this (max over RGB, 0-255),
#: at least this share of the surround outside the circular field must be dark, and the mean
#: step between horizontal neighbours inside the field must stay below the noise limit
#: (photos: 1-4 grey levels; uniform noise: ~85).
FOV_DARK_LEVEL = 40
FOV_DARK_SHARE = 0.6
NOISE_STEP_LIMIT = 30.0


def check_photo_size(size: tuple[int, int], name: str | os.PathLike = "image",
                     min_side: int = MIN_FUNDUS_SIDE) -> None:
    """Raise ``ValueError`` naming ``name`` when ``size`` = (width, height) px has a short side
    below ``min_side`` px (the one message for a photo too small for the kit)."""
    w, h = size
    if min(w, h) < min_side:
        raise ValueError(f"{name}: image is {w}x{h} px; fundus photos need at least {min_side} px "
                         "on the short side")


def check_photo_sizes(paths: Iterable[str | os.PathLike], min_side: int = MIN_FUNDUS_SIDE) -> None:
    """Refuse, before any work, photos whose short side is below ``min_side`` px (sizes from the
    file headers, ``image_size``): one ``ValueError`` line naming the first such file and the
    minimum, and how many more there are. A file that cannot be read raises its own error.
    ``paths`` may be an {id: path} dict (its values are checked)."""
    if isinstance(paths, dict):
        paths = paths.values()
    small = []
    for path in paths:
        try:
            check_photo_size(image_size(path), path, min_side)
        except ValueError as exc:
            small.append((Path(path), exc))
    if small:
        more = (f" ({len(small) - 1} more photo(s) that small: {[p.name for p, _ in small[1:6]]})"
                if len(small) > 1 else "")
        raise ValueError(f"{small[0][1]}{more}")


def check_fundus_image(image: np.ndarray, name: str | os.PathLike = "image",
                       min_side: int = MIN_FUNDUS_SIDE, size: tuple[int, int] | None = None):
    """Refuse an RGB (H, W, 3) ``uint8`` image that cannot be a usable fundus photograph.

    Raises ``ValueError`` naming ``name`` when the short side is below ``min_side`` px, or
    when there is no circular field of view: the surround outside the field found by
    ``geometry.detect_fov`` is not mostly dark (``FOV_DARK_SHARE`` below ``FOV_DARK_LEVEL``)
    or the field is pixel noise (mean neighbour step above ``NOISE_STEP_LIMIT``). Returns the
    ``FieldOfView`` (pixels of ``image``). Runs on a copy at most 256 px wide (32 ms for a 2992x2000
    photo, half its decode). ``size``: the photo's (w, h) when ``image`` is a reduced decode of it
    (``data.read_image_reduced``; at 1/2, pixel noise still steps ~40 on average, above the limit).
    """
    from gamma_kit.geometry import detect_fov

    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"{name}: expected an RGB uint8 image of shape (H, W, 3), got {img.dtype} {img.shape}")
    h, w = img.shape[:2]
    check_photo_size(size or (w, h), name, min_side)
    not_fundus = f"{name}: no circular field of view on a dark surround (not a fundus photograph?)"
    try:
        fov = detect_fov(img)
    except ValueError:
        raise ValueError(not_fundus + "; the image is (nearly) black") from None
    f = min(1.0, 256 / w)
    small = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA) \
        if f < 1 else img
    grey = small.max(axis=2)
    yy, xx = np.mgrid[0:grey.shape[0], 0:grey.shape[1]]
    outside = ~((xx + 0.5 - fov.cx * f) ** 2 + (yy + 0.5 - fov.cy * f) ** 2 <= (fov.radius * f * 1.04) ** 2)
    if outside.sum() >= 0.01 * grey.size and (grey[outside] < FOV_DARK_LEVEL).mean() < FOV_DARK_SHARE:
        raise ValueError(not_fundus)
    # noise is judged at full resolution (shrinking averages it away), on a central patch
    cy, cx, half = int(fov.cy), int(fov.cx), max(8, min(128, int(fov.radius / 2)))
    patch = img[max(0, cy - half):cy + half, max(0, cx - half):cx + half].astype(np.int16)
    if patch.shape[1] > 1 and np.abs(np.diff(patch, axis=1)).mean() > NOISE_STEP_LIMIT:
        raise ValueError(not_fundus + "; the field is pixel noise")
    return fov
