"""A square window around the optic disc, as geometry: crop, map points, paste back.

Two-stage disc/cup segmentation (issue 9) cuts a window centred on the disc out of the
full photo, segments it at the network's size and pastes the label map back at the
source size. ``DiscCrop`` holds that window for one photo, in the spirit of
``geometry.CanonicalFrame``:

- the window is ``side`` x ``side`` source pixels with its top-left corner at the integer
  pixel ``(x0, y0)``; ``side`` is ``factor`` x the disc diameter or a fixed number of
  source pixels, and the window may cross the photo border;
- the crop is ``size`` x ``size`` pixels: crop pixel ``u`` covers source
  ``[x0 + u / s, x0 + (u + 1) / s)`` with ``s = size / side``.

Coordinates follow ``geometry``: (x, y) = (column, row), continuous, integer values on
pixel corners, so the centre of pixel ``i`` is ``i + 0.5``. Points map by
``u = s * (x - x0)``, ``v = s * (y - y0)`` and back exactly.

Images are cropped with area averaging when shrinking (bilinear when enlarging), and
outside the photo they are 0. Masks and label maps are moved only by nearest-neighbour
sampling at pixel centres (never bilinear: that would invent classes); outside the photo
a cropped mask is 255 (GAMMA background). ``paste_labels`` puts a crop-sized label map
back at the source size, ``background`` outside the window.

Usable windows (``window_problem``, one rule for ``prepare --roi``, which refuses, and the
two-stage predictor, which warns): the window side is at most ``MAX_WINDOW_SHARE`` (1.5) x the
photo's short side (a larger one is mostly black outside the photo), and the disc is at least
``MIN_DISC_PX`` (24) px across in the written crop (smaller, the cup is a few pixels).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from gamma_kit.metrics import disc_of

__all__ = ["DiscCrop", "MIN_SIDE", "MAX_WINDOW_SHARE", "MIN_DISC_PX", "disc_box_from_mask", "nearest_index",
           "window_problem"]

MIN_SIDE = 8  # smallest window in source pixels
MAX_WINDOW_SHARE = 1.5   # largest window side / the photo's short side
MIN_DISC_PX = 24         # smallest disc diameter in the written crop, px


def nearest_index(n_out: int, n_in: int, offset: int = 0) -> np.ndarray:
    """Source index for each of ``n_out`` samples spread over ``n_in`` source pixels (centres):
    ``floor((k + 0.5) * n_in / n_out) + offset``, k = 0 .. n_out-1."""
    k = np.arange(n_out, dtype=np.float64)
    return np.minimum(np.floor((k + 0.5) * (n_in / n_out)).astype(np.int64), n_in - 1) + offset


@dataclass(frozen=True)
class DiscCrop:
    """Square window ``[x0, x0 + side) x [y0, y0 + side)`` of a ``image_size`` = (w, h) photo,
    resampled to ``size`` x ``size`` pixels."""

    image_size: tuple[int, int]
    x0: int
    y0: int
    side: int
    size: int

    def __post_init__(self):
        if self.side < MIN_SIDE or self.size < 1:
            raise ValueError(f"crop side must be >= {MIN_SIDE} source px and size >= 1, got {self.side}, {self.size}")

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def around(cls, centre: tuple[float, float], image_size: tuple[int, int], size: int,
               diameter: float | None = None, factor: float | None = 2.0,
               side: int | None = None) -> "DiscCrop":
        """Window centred on ``centre`` (x, y): ``side`` source px if given, else
        ``factor * diameter`` (rounded to whole pixels). ``size`` is the crop's pixel size."""
        if side is None:
            if diameter is None or factor is None or not (diameter > 0 and factor > 0):
                raise ValueError("DiscCrop.around needs side, or a positive diameter and factor")
            side = factor * diameter
        side = max(MIN_SIDE, int(round(float(side))))
        cx, cy = float(centre[0]), float(centre[1])
        if not (math.isfinite(cx) and math.isfinite(cy)):
            raise ValueError(f"crop centre must be finite, got {centre}")
        return cls((int(image_size[0]), int(image_size[1])), int(math.floor(cx - side / 2 + 0.5)),
                   int(math.floor(cy - side / 2 + 0.5)), side, int(size))

    @classmethod
    def from_dict(cls, d: dict) -> "DiscCrop":
        return cls(tuple(int(v) for v in d["image_size"]), int(d["x0"]), int(d["y0"]), int(d["side"]),
                   int(d["size"]))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["image_size"] = list(self.image_size)
        return d

    # ---- geometry -------------------------------------------------------------------------
    @property
    def scale(self) -> float:
        """Crop pixels per source pixel."""
        return self.size / self.side

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) in source pixels, end exclusive (may lie outside the photo)."""
        return self.x0, self.y0, self.x0 + self.side, self.y0 + self.side

    @property
    def centre(self) -> tuple[float, float]:
        return self.x0 + self.side / 2, self.y0 + self.side / 2

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) source points (x, y) -> (N, 2) crop points."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return (p - np.array([self.x0, self.y0], np.float64)) * self.scale

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) crop points -> (N, 2) source points; the inverse of ``to_crop``."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return p / self.scale + np.array([self.x0, self.y0], np.float64)

    def _check(self, array: np.ndarray) -> None:
        if array.shape[1::-1] != self.image_size:
            raise ValueError(f"array is {array.shape[1]}x{array.shape[0]}, this crop is for a "
                             f"{self.image_size[0]}x{self.image_size[1]} photo")

    def _window(self, array: np.ndarray, fill: int) -> np.ndarray:
        """The ``side`` x ``side`` window at source resolution, ``fill`` outside the photo."""
        w, h = self.image_size
        x0, y0, x1, y1 = self.box
        if x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h:
            return array[y0:y1, x0:x1]
        out = np.full((self.side, self.side) + array.shape[2:], fill, array.dtype)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if sx1 > sx0 and sy1 > sy0:
            out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = array[sy0:sy1, sx0:sx1]
        return out

    # ---- pixels ---------------------------------------------------------------------------
    def crop_image(self, image: np.ndarray) -> np.ndarray:
        """Photo (H, W[, C]) -> crop (size, size[, C]); 0 outside the photo. Area averaging when
        shrinking, bilinear when enlarging."""
        self._check(image)
        win = self._window(image, 0)
        if self.size == self.side:
            return np.ascontiguousarray(win)
        interp = cv2.INTER_AREA if self.size < self.side else cv2.INTER_LINEAR
        return cv2.resize(np.ascontiguousarray(win), (self.size, self.size), interpolation=interp)

    def crop_mask(self, mask: np.ndarray, fill: int = 255) -> np.ndarray:
        """Mask or label map (H, W) -> (size, size) by nearest sampling at pixel centres;
        ``fill`` (GAMMA background 255) outside the photo."""
        self._check(mask)
        win = self._window(mask, fill)
        idx = nearest_index(self.size, self.side)
        return np.ascontiguousarray(win[np.ix_(idx, idx)])

    def paste_labels(self, labels: np.ndarray, background: int = 2) -> np.ndarray:
        """Crop-sized (size, size[, C]) map -> source-size (H, W[, C]) by nearest sampling at
        source pixel centres; ``background`` outside the window. Exact: a source pixel gets the
        value of the crop pixel its centre falls in."""
        labels = np.asarray(labels)
        if labels.shape[:2] != (self.size, self.size):
            raise ValueError(f"label map is {labels.shape[1]}x{labels.shape[0]}, expected {self.size}x{self.size}")
        w, h = self.image_size
        out = np.full((h, w) + labels.shape[2:], background, labels.dtype)
        x0, y0, x1, y1 = self.box
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if sx1 <= sx0 or sy1 <= sy0:
            return out
        idx = nearest_index(self.side, self.size)   # window pixel -> crop pixel
        rows, cols = idx[sy0 - y0:sy1 - y0], idx[sx0 - x0:sx1 - x0]
        out[sy0:sy1, sx0:sx1] = labels[np.ix_(rows, cols)]
        return out

    def inside_photo(self) -> float:
        """Share of the window that lies inside the photo (0..1)."""
        w, h = self.image_size
        x0, y0, x1, y1 = self.box
        ix, iy = max(0, min(x1, w) - max(x0, 0)), max(0, min(y1, h) - max(y0, 0))
        return ix * iy / float(self.side * self.side)


def disc_box_from_mask(mask: np.ndarray) -> tuple[tuple[float, float], float] | None:
    """Disc centre (x, y) (middle of its bounding box) and diameter (the larger box side) in
    source px from a GAMMA mask (disc = value < 255); None when the mask has no disc."""
    disc = disc_of(mask)
    rows, cols = np.flatnonzero(disc.any(axis=1)), np.flatnonzero(disc.any(axis=0))
    if rows.size == 0:
        return None
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return ((x0 + x1) / 2.0, (y0 + y1) / 2.0), float(max(x1 - x0, y1 - y0))


def window_problem(side: float, image_size: tuple[int, int], size: int, diameter: float | None = None) -> str | None:
    """Why a window of ``side`` source px, written as a ``size``-px crop, is unusable on a photo of
    ``image_size`` = (w, h) with a disc of ``diameter`` source px (None: unknown, not checked); None
    when it is fine. The phrase gives the numbers: the window and the short side, or the disc's size."""
    short = min(int(image_size[0]), int(image_size[1]))
    if side > MAX_WINDOW_SHARE * short:
        return (f"the crop window of {side:.0f} px is more than {MAX_WINDOW_SHARE:g}x the photo's short side "
                f"({short} px), so the crop would be mostly black outside the photo")
    if diameter is not None and diameter * size / side < MIN_DISC_PX:
        return (f"the disc ({diameter:.0f} px) would be {diameter * size / side:.1f} px across in the {size}-px crop "
                f"of a {side:.0f}-px window, under {MIN_DISC_PX} px")
    return None
