"""Canonical frame of the original fovea method, and the detection it needs.

The original solution worked in one frame: "optic disc on the left, 1956 x 1934".
Its constants (SPEC 2), which this module reproduces exactly for the two GAMMA cameras:

- a 1956 x 1934 image is used as it is;
- a 2992 x 2000 image is cropped to x in [518, 2474), y in [33, 1967): ``x' = x - 518, y' = y - 33``;
- an image whose optic disc lies on the right is mirrored: ``x' = 1956 - x'``.

Coordinates are (x, y) = (column, row) and continuous, with integer values on pixel
corners (pixel ``i`` spans [i, i + 1)). Under that convention the original's flip
``1956 - x`` is the exact mirror of a 1956-wide array, so points and pixels move
together: a pixel at index (i, j) has its centre at (i + 0.5, j + 0.5), and so does its
image under every transform here.

Other sizes (other cameras, field-of-view crops) are mapped by a similarity transform
that sends the detected circular field of view (FOV) to the canonical one: centre
``CANONICAL_FOV_CENTRE``, radius ``CANONICAL_FOV_RADIUS``. Every transform is
``x' = s * (x - ox)``, ``y' = s * (y - oy)``, then the optional mirror, so
``CanonicalFrame.to_image`` inverts ``to_canonical`` exactly.

The eye side is detected from the image (the optic disc is the brightest large blob)
instead of the original's hand-typed lists; an override file can settle any image.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

__all__ = [
    "CANONICAL_SIZE", "GAMMA_WIDE_SIZE", "GAMMA_WIDE_OFFSET", "CANONICAL_FOV_CENTRE", "CANONICAL_FOV_RADIUS",
    "FieldOfView", "DiscSide", "detect_fov", "detect_disc_side", "read_side_overrides", "CanonicalFrame",
]

CANONICAL_SIZE = (1956, 1934)          # (w, h) of the original frame; also the square-ish GAMMA camera
GAMMA_WIDE_SIZE = (2992, 2000)         # the other GAMMA camera
GAMMA_WIDE_OFFSET = (518, 33)          # the original's crop of the wide camera into the canonical frame
CANONICAL_FOV_CENTRE = (CANONICAL_SIZE[0] / 2, CANONICAL_SIZE[1] / 2)
CANONICAL_FOV_RADIUS = CANONICAL_SIZE[1] / 2   # the FOV nearly fills the 1956 x 1934 frame
DETECT_WIDTH = 512                     # detection runs on a copy this wide
VESSEL_WEIGHT = 0.5                    # weight of vertical-vessel density against brightness
MIN_SIDE_CONFIDENCE = 0.12             # |disc_x - fov_cx| / radius below this: side undecided
SIDES = ("left", "right")


@dataclass(frozen=True)
class FieldOfView:
    """Circular field of view in image pixels: centre (cx, cy) and radius."""

    cx: float
    cy: float
    radius: float


@dataclass(frozen=True)
class DiscSide:
    """Which side of the image the optic disc is on.

    ``confidence`` is the disc's horizontal distance from the FOV centre in FOV radii
    (about 0.6 for a macula-centred photo); ``disc_xy`` the detected disc centre.
    """

    side: str
    confidence: float
    disc_xy: tuple[float, float]


def _small(image: np.ndarray) -> tuple[np.ndarray, float]:
    """Downscaled copy at most DETECT_WIDTH wide, and its factor (small = factor * full)."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got {image.shape}")
    f = min(1.0, DETECT_WIDTH / image.shape[1])
    if f < 1.0:
        image = cv2.resize(image, (round(image.shape[1] * f), round(image.shape[0] * f)),
                           interpolation=cv2.INTER_AREA)
    return image, f


def _fov_mask(small: np.ndarray) -> np.ndarray:
    """Boolean mask of the largest bright connected region (the illuminated field)."""
    grey = small.max(axis=2)
    grey = cv2.GaussianBlur(grey, (5, 5), 0)
    otsu, _ = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    thr = float(np.clip(0.5 * otsu, 8, 40))   # the surround is near black; the rim of the field is dim
    binary = (grey > thr).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if n <= 1:
        return np.zeros(grey.shape, bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == largest


def detect_fov(image: np.ndarray) -> FieldOfView:
    """Locate the circular field of view of an RGB fundus image (pixels of ``image``).

    The radius is half the widest row of the field; the centre is the middle of the
    widest rows, so a field clipped at the top and bottom (as in many cameras) is
    measured correctly. An image with no dark surround gets the inscribed circle.
    """
    small, f = _small(image)
    mask = _fov_mask(small)
    h, w = mask.shape
    widths = mask.sum(axis=1)
    if widths.max() < 0.2 * w:
        raise ValueError("no field of view found: the image is (nearly) black")
    rows = np.flatnonzero(widths >= widths.max() - max(1.0, 0.005 * w))
    cy = (rows.min() + rows.max() + 1) / 2
    cols = np.flatnonzero(mask[rows].any(axis=0))
    cx = (cols.min() + cols.max() + 1) / 2
    radius = (cols.max() + 1 - cols.min()) / 2
    return FieldOfView(cx / f, cy / f, radius / f)


def detect_disc_side(image: np.ndarray, fov: FieldOfView | None = None) -> DiscSide:
    """Detect the optic disc as the bright, disc-sized blob crossed by vertical vessels.

    Works on a copy ``DETECT_WIDTH`` wide. Two maps, each standardised inside the field:
    brightness as a band-pass (disc-sized blur minus a wide blur, which removes the
    illumination fall-off), and the density of vertical vessel edges (green-channel black
    top-hat, then horizontal gradient), which is highest where the arcades leave the disc.
    The vessel term keeps large bright exudate clusters near the macula, which carry no
    vessels, from beating the disc (it fixed the one IDRiD miss of brightness alone).
    Returns the side and a confidence; the caller decides what confidence is enough
    (``MIN_SIDE_CONFIDENCE``).
    """
    fov = fov or detect_fov(image)
    small, f = _small(image)
    r = fov.radius * f
    cx, cy = fov.cx * f, fov.cy * f
    field = _fov_mask(small)
    lum = small.astype(np.float32) @ np.float32([0.5, 0.4, 0.1])   # the disc is bright in red and green
    disc_sigma = 0.05 * r
    bright = cv2.GaussianBlur(lum, (0, 0), disc_sigma) - cv2.GaussianBlur(lum, (0, 0), 4 * disc_sigma)
    vessel_kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (int(0.05 * r) | 1,) * 2)
    vessels = cv2.morphologyEx(small[..., 1], cv2.MORPH_BLACKHAT, vessel_kernel).astype(np.float32)
    vertical = np.abs(cv2.Sobel(vessels, cv2.CV_32F, 1, 0, ksize=3))
    rim_free = cv2.erode(field.astype(np.uint8), np.ones((max(1, int(0.08 * r)),) * 2, np.uint8)).astype(bool)
    vertical = cv2.GaussianBlur(np.where(rim_free, vertical, 0), (0, 0), disc_sigma)
    yy, xx = np.ogrid[: lum.shape[0], : lum.shape[1]]
    inside = ((xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= (0.85 * r) ** 2) & field

    def standardise(a: np.ndarray) -> np.ndarray:
        v = a[inside]
        return (a - v.mean()) / (v.std() + 1e-6)

    score = np.where(inside, standardise(bright) + VESSEL_WEIGHT * standardise(vertical), -np.inf)
    y, x = np.unravel_index(int(np.argmax(score)), score.shape)
    disc_x, disc_y = (x + 0.5) / f, (y + 0.5) / f
    side = "left" if disc_x < fov.cx else "right"
    return DiscSide(side, float(abs(disc_x - fov.cx) / fov.radius), (float(disc_x), float(disc_y)))


def read_side_overrides(path: str | os.PathLike) -> dict[str, str]:
    """Read an eye-side override CSV with columns ``data,disc_side`` (left/right or L/R)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"side override file not found: {path}")
    df = pd.read_csv(path, dtype=str)
    if not {"data", "disc_side"} <= set(df.columns):
        raise ValueError(f"{path}: expected columns data,disc_side (got {list(df.columns)})")
    out = {}
    for i, s in zip(df["data"].str.strip(), df["disc_side"].str.strip().str.lower()):
        side = {"l": "left", "r": "right"}.get(s, s)
        if side not in SIDES:
            raise ValueError(f"{path}: disc_side for {i!r} must be left/right (or L/R), got {s!r}")
        out[i] = side
    return out


def _corner_to_centre(a: float, b: float) -> tuple[float, float]:
    """Convert ``u = a x + b`` (pixel-corner coords) to OpenCV's pixel-centre convention."""
    return a, b + 0.5 * a - 0.5


@dataclass(frozen=True)
class CanonicalFrame:
    """Similarity map from one image into the canonical frame, and back.

    ``x' = scale * (x - ox)``, ``y' = scale * (y - oy)``; if ``flipped`` then
    ``x' = CANONICAL_SIZE[0] - x'``. ``image_size`` is the source (w, h).
    """

    image_size: tuple[int, int]
    scale: float
    offset: tuple[float, float]
    flipped: bool

    @classmethod
    def for_size(cls, size: tuple[int, int], flipped: bool, fov: FieldOfView | None = None) -> "CanonicalFrame":
        """The frame for an image of ``size`` (w, h). The two GAMMA sizes use the original
        constants; any other size needs its ``fov``."""
        size = (int(size[0]), int(size[1]))
        if size == CANONICAL_SIZE:
            return cls(size, 1.0, (0.0, 0.0), bool(flipped))
        if size == GAMMA_WIDE_SIZE:
            return cls(size, 1.0, (float(GAMMA_WIDE_OFFSET[0]), float(GAMMA_WIDE_OFFSET[1])), bool(flipped))
        if fov is None:
            raise ValueError(f"image size {size[0]}x{size[1]} is not a GAMMA size (1956x1934, 2992x2000): "
                             "its field of view is needed to map it (use CanonicalFrame.from_image)")
        s = CANONICAL_FOV_RADIUS / fov.radius
        return cls(size, s, (fov.cx - CANONICAL_FOV_CENTRE[0] / s, fov.cy - CANONICAL_FOV_CENTRE[1] / s),
                   bool(flipped))

    @classmethod
    def from_image(cls, image: np.ndarray, disc_side: str | None = None,
                   min_confidence: float = MIN_SIDE_CONFIDENCE, name: str = "image") -> "CanonicalFrame":
        """Frame for ``image``: size from its shape, disc side detected unless given.

        Raises ``ValueError`` naming ``name`` when the side cannot be decided.
        """
        h, w = image.shape[:2]
        fov = None if (w, h) in (CANONICAL_SIZE, GAMMA_WIDE_SIZE) else detect_fov(image)
        if disc_side is None:
            det = detect_disc_side(image, fov)
            if det.confidence < min_confidence:
                raise ValueError(f"{name}: cannot decide the eye side (optic disc found at x={det.disc_xy[0]:.0f}, "
                                 f"too close to the centre; confidence {det.confidence:.2f} < {min_confidence}). "
                                 "Give it in a side override file (CSV columns data,disc_side).")
            disc_side = det.side
        if disc_side not in SIDES:
            raise ValueError(f"{name}: disc_side must be 'left' or 'right', got {disc_side!r}")
        return cls.for_size((w, h), disc_side == "right", fov)

    # ---- points -------------------------------------------------------------------------
    def to_canonical(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) image points (x, y) -> (N, 2) canonical points."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        out = (p - np.asarray(self.offset)) * self.scale
        if self.flipped:
            out[:, 0] = CANONICAL_SIZE[0] - out[:, 0]
        return out

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) canonical points -> (N, 2) image points; the exact inverse of ``to_canonical``."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2).copy()
        if self.flipped:
            p[:, 0] = CANONICAL_SIZE[0] - p[:, 0]
        return p / self.scale + np.asarray(self.offset)

    # ---- pixels -------------------------------------------------------------------------
    def _matrix(self, out_scale: float, pre: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
        """2x3 affine from source pixels (OpenCV centre convention) to scaled canonical pixels.

        ``pre`` = per-axis factor of an already resized source (resized = pre * original).
        """
        a = self.scale * out_scale
        ax, bx = a / pre[0], -a * self.offset[0]
        if self.flipped:
            ax, bx = -ax, CANONICAL_SIZE[0] * out_scale - bx
        ax, bx = _corner_to_centre(ax, bx)
        ay, by = _corner_to_centre(a / pre[1], -a * self.offset[1])
        return np.array([[ax, 0.0, bx], [0.0, ay, by]])

    def canonical_shape(self, out_scale: float = 1.0) -> tuple[int, int]:
        """(w, h) of the canonical image at ``out_scale`` (rounded up: 1/4 -> 489 x 484)."""
        return math.ceil(CANONICAL_SIZE[0] * out_scale - 1e-9), math.ceil(CANONICAL_SIZE[1] * out_scale - 1e-9)

    def _integer_shift(self) -> bool:
        return self.scale == 1.0 and all(float(o).is_integer() for o in self.offset)

    def warp_image(self, image: np.ndarray, scale: float = 1.0, nearest: bool = False) -> np.ndarray:
        """Image (H, W[, C]) -> canonical image (ceil(1934*scale), ceil(1956*scale)[, C]).

        Canonical point ``p`` lands on pixel ``p * scale`` exactly. Pixels from outside the
        source are 0. ``nearest`` keeps label values (masks). The original's integer crop
        and mirror are done by slicing (exact at ``scale=1``); an integer shrink factor
        (scale 1/2, 1/4, ...) is then exact block averaging.
        """
        if image.shape[1::-1] != self.image_size:
            raise ValueError(f"image is {image.shape[1]}x{image.shape[0]}, this frame is for "
                             f"{self.image_size[0]}x{self.image_size[1]}")
        out_w, out_h = self.canonical_shape(scale)
        if self._integer_shift():
            k = 1.0 / scale
            block = int(round(k)) if abs(k - round(k)) < 1e-9 else 1
            cw, ch = out_w * block, out_h * block       # padded so that blocks tile it exactly
            ox, oy = int(self.offset[0]), int(self.offset[1])
            if self.flipped:                             # pad on the left so the mirror stays aligned
                ox -= cw - CANONICAL_SIZE[0]
            out = np.zeros((ch, cw) + image.shape[2:], image.dtype)
            x0, y0 = max(ox, 0), max(oy, 0)
            x1, y1 = min(ox + cw, image.shape[1]), min(oy + ch, image.shape[0])
            out[y0 - oy:y1 - oy, x0 - ox:x1 - ox] = image[y0:y1, x0:x1]
            if self.flipped:
                out = out[:, ::-1]
            if block == 1 and scale == 1.0:
                return np.ascontiguousarray(out)
            if block > 1:
                if nearest:
                    return np.ascontiguousarray(out[block // 2::block, block // 2::block])
                return cv2.resize(out, (out_w, out_h), interpolation=cv2.INTER_AREA)
        total = self.scale * scale
        src, pre = image, (1.0, 1.0)
        if total < 0.5 and not nearest:   # shrink with area averaging first: warpAffine alone would alias
            size = (max(1, round(image.shape[1] * total)), max(1, round(image.shape[0] * total)))
            src = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            pre = (size[0] / image.shape[1], size[1] / image.shape[0])
        interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
        return cv2.warpAffine(src, self._matrix(scale, pre), (out_w, out_h), flags=interp,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def unwarp_image(self, canonical: np.ndarray, scale: float = 1.0, nearest: bool = False) -> np.ndarray:
        """Canonical image at ``scale`` -> array of the source size (outside the frame: 0)."""
        if canonical.shape[1::-1] != self.canonical_shape(scale):
            raise ValueError(f"canonical image is {canonical.shape[1]}x{canonical.shape[0]}, expected "
                             f"{self.canonical_shape(scale)[0]}x{self.canonical_shape(scale)[1]} at scale {scale}")
        w, h = self.image_size
        if self._integer_shift() and scale == 1.0:
            src = canonical[:, ::-1] if self.flipped else canonical
            ox, oy = int(self.offset[0]), int(self.offset[1])
            out = np.zeros((h, w) + canonical.shape[2:], canonical.dtype)
            x0, y0 = max(ox, 0), max(oy, 0)
            x1, y1 = min(ox + src.shape[1], w), min(oy + src.shape[0], h)
            out[y0:y1, x0:x1] = src[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
            return out
        interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
        return cv2.warpAffine(canonical, self._matrix(scale), (w, h), flags=interp | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
