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

The eye side is detected from the image instead of the original's hand-typed lists (an
override file can settle any image): ``find_disc`` is the one classical optic-disc detector
(a disc-sized bright, pale blob crossed by vertical vessels, refined to its outline), behind
both ``detect_disc_side`` and stage 1 of the disc pipeline (``gamma_kit.disc.locate_disc``).
"""
from __future__ import annotations

import contextlib
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pandas as pd

__all__ = [
    "CANONICAL_SIZE", "GAMMA_WIDE_SIZE", "GAMMA_WIDE_OFFSET", "CANONICAL_FOV_CENTRE", "CANONICAL_FOV_RADIUS",
    "FieldOfView", "DiscSide", "DiscEstimate", "detect_fov", "find_disc", "detect_disc_side", "read_side_overrides",
    "CanonicalFrame", "EyeSideError", "Component", "largest_component", "sharing_small", "reduced_decode_factor",
]

CANONICAL_SIZE = (1956, 1934)          # (w, h) of the original frame; also the square-ish GAMMA camera
GAMMA_WIDE_SIZE = (2992, 2000)         # the other GAMMA camera
GAMMA_WIDE_OFFSET = (518, 33)          # the original's crop of the wide camera into the canonical frame
CANONICAL_FOV_CENTRE = (CANONICAL_SIZE[0] / 2, CANONICAL_SIZE[1] / 2)
CANONICAL_FOV_RADIUS = CANONICAL_SIZE[1] / 2   # the FOV nearly fills the 1956 x 1934 frame
DETECT_WIDTH = 512                     # detection runs on a copy this wide
VESSEL_WEIGHT = 0.5                    # weight of vertical-vessel density against brightness (disc score)
BLUE_WEIGHT = 0.5                      # weight of disc-sized blue (pale disc vs yellow exudates) in the score
NOMINAL_DISC_RADIUS = 0.15             # disc radius / FOV radius assumed by the detector (IDRiD: median 0.145)
DISC_RADIUS_PRIOR = (0.12, 0.22)       # disc radius / FOV radius: the range the diameter estimate is held to
SEARCH_RADIUS = 0.92                   # disc centres are searched within this many FOV radii of its centre
MIN_DISC_COVER = 0.6                   # ... and where at least this share of a nominal disc lies in the field
N_CANDIDATES = 3                       # places besides the winner that find_disc names (DiscEstimate.candidates)
SPOT_SIZE = 0.05                       # bright spots up to this many FOV radii are removed before the vessel map
N_EDGE_ANGLES = 72                     # rays for the disc outline
EDGE_TOLERANCE = 0.3                   # an edge point this far (relative) from the median radius is an outlier
MAX_OUTLINE_SHIFT = 0.5                # the outline fit may move the centre by at most this many radii
MIN_SIDE_CONFIDENCE = 0.12             # |disc_x - fov_cx| / radius below this: side undecided
SIDES = ("left", "right")


@dataclass(frozen=True)
class FieldOfView:
    """Circular field of view in image pixels: centre (cx, cy) and radius."""

    cx: float
    cy: float
    radius: float


class EyeSideError(ValueError):
    """The eye side (which side the optic disc is on) could not be decided for an image."""


@dataclass(frozen=True)
class DiscSide:
    """Which side of the image the optic disc is on.

    ``confidence`` is the disc's horizontal distance from the FOV centre in FOV radii
    (about 0.6 for a macula-centred photo); ``disc_xy`` the detected disc centre.
    """

    side: str
    confidence: float
    disc_xy: tuple[float, float]


_SHARED = threading.local()


@contextlib.contextmanager
def sharing_small(image: np.ndarray) -> Iterator[None]:
    """Within the block, the downscaled copy of ``image`` (``_small``) and its field mask
    (``_fov_mask``) are made once and shared by every detector that this thread runs on it
    (``detect_fov`` for the photo check, ``find_disc`` for the eye side): the same arrays, so the
    same answers, without a second pass over the full-size photo. ``image`` must not change inside."""
    saved = getattr(_SHARED, "entry", None)
    _SHARED.entry = {"image": image}
    try:
        yield
    finally:
        _SHARED.entry = saved


def _shared(key: str, source: np.ndarray, make):
    """``make()``, kept for ``source`` while ``sharing_small`` shares it."""
    entry = getattr(_SHARED, "entry", None)
    if entry is None:
        return make()
    hit = entry.get(key)
    if hit is not None and hit[0] is source:
        return hit[1]
    if key == "small" and entry["image"] is not source:
        return make()
    value = make()
    entry[key] = (source, value)
    return value


def _small(image: np.ndarray) -> tuple[np.ndarray, float]:
    """Downscaled copy at most DETECT_WIDTH wide, and its factor (small = factor * full)."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got {image.shape}")

    def make():
        f = min(1.0, DETECT_WIDTH / image.shape[1])
        if f < 1.0:
            return cv2.resize(image, (round(image.shape[1] * f), round(image.shape[0] * f)),
                              interpolation=cv2.INTER_AREA), f
        return image, f

    return _shared("small", image, make)


@dataclass(frozen=True)
class Component:
    """The largest 8-connected component of a binary image (``largest_component``).

    ``mask`` (H, W) bool; ``area`` in px; ``share`` of all foreground px it holds; ``centre`` its
    centroid (x, y) in continuous coordinates (pixel centres at +0.5); ``height`` its bounding-box height.
    """

    mask: np.ndarray
    area: float
    share: float
    centre: tuple[float, float]
    height: float


def largest_component(binary: np.ndarray) -> Component | None:
    """The largest 8-connected component of ``binary`` (H, W), or None when it has no foreground."""
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(np.asarray(binary).astype(np.uint8),
                                                                   connectivity=8)
    if n <= 1:
        return None
    areas = stats[1:, cv2.CC_STAT_AREA]
    k = 1 + int(np.argmax(areas))
    cx, cy = centroids[k]                    # OpenCV: pixel centres on integers
    return Component(labels == k, float(stats[k, cv2.CC_STAT_AREA]), float(stats[k, cv2.CC_STAT_AREA] / areas.sum()),
                     (float(cx) + 0.5, float(cy) + 0.5), float(stats[k, cv2.CC_STAT_HEIGHT]))


def _fov_mask(small: np.ndarray) -> np.ndarray:
    """Boolean mask of the largest bright connected region (the illuminated field)."""
    return _shared("fov_mask", small, lambda: _make_fov_mask(small))


def _make_fov_mask(small: np.ndarray) -> np.ndarray:
    grey = small.max(axis=2)
    grey = cv2.GaussianBlur(grey, (5, 5), 0)
    otsu, _ = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    thr = float(np.clip(0.5 * otsu, 8, 40))   # the surround is near black; the rim of the field is dim
    field = largest_component(grey > thr)
    return np.zeros(grey.shape, bool) if field is None else field.mask


def _fov_in_small(mask: np.ndarray) -> tuple[float, float, float]:
    """(cx, cy, radius) of the field in the pixels of ``mask`` (see ``detect_fov``)."""
    h, w = mask.shape
    widths = mask.sum(axis=1)
    if widths.max() < 0.2 * w:
        raise ValueError("no field of view found: the image is (nearly) black")
    rows = np.flatnonzero(widths >= widths.max() - max(1.0, 0.005 * w))
    cy = (rows.min() + rows.max() + 1) / 2
    cols = np.flatnonzero(mask[rows].any(axis=0))
    cx = (cols.min() + cols.max() + 1) / 2
    radius = (cols.max() + 1 - cols.min()) / 2
    return cx, cy, radius


def detect_fov(image: np.ndarray) -> FieldOfView:
    """Locate the circular field of view of an RGB fundus image (pixels of ``image``).

    The radius is half the widest row of the field; the centre is the middle of the
    widest rows, so a field clipped at the top and bottom (as in many cameras) is
    measured correctly. An image with no dark surround gets the inscribed circle.
    Raises ``ValueError`` when there is no field (a black image).
    """
    small, f = _small(image)
    cx, cy, radius = _fov_in_small(_fov_mask(small))
    return FieldOfView(cx / f, cy / f, radius / f)


# ---- optic disc: the one classical detector (disc side here, DiscLocation in gamma_kit.disc) ----

@dataclass(frozen=True)
class DiscEstimate:
    """The classical detector's answer, in image px.

    ``margin``: disc score of the winner minus that of the best candidate at least one
    nominal disc diameter away (standardised units; 0 = a tie, above ~3 = clear).
    ``edge_fraction``: share of the ``N_EDGE_ANGLES`` rays from the centre whose
    steepest brightness drop agrees with the fitted disc outline (0..1).
    ``runner_up_xy``: that second candidate (None when there is none).
    ``fov``: the field of view used (the one given, or the one detected on the way).
    ``candidates``: the next-best places, best first (``runner_up_xy`` among them, at most
    ``N_CANDIDATES``), each at least one nominal disc diameter from the winner and from each other:
    where to look when the winner turns out not to be the disc (stage 2's check).
    """

    xy: tuple[float, float]
    diameter: float
    margin: float
    edge_fraction: float
    runner_up_xy: tuple[float, float] | None
    fov: FieldOfView
    candidates: tuple[tuple[float, float], ...] = ()


def _disc_mean(a: np.ndarray, weight: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``a`` over a disc of ``radius`` px around every pixel, counting only pixels where
    ``weight`` is 1 (normalised convolution: the black outside of the field does not darken the
    rim of the field). Also returns the covered share of the disc (0..1). Shapes as ``a``."""
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * max(1, int(radius)) + 1,) * 2).astype(np.float32)
    num = cv2.filter2D(a * weight, -1, k, borderType=cv2.BORDER_CONSTANT)
    den = cv2.filter2D(weight, -1, k, borderType=cv2.BORDER_CONSTANT)
    return num / np.maximum(den, 1e-3), den / k.sum()


def _disc_outline(clean: np.ndarray, xy: tuple[float, float], r: float) -> tuple[tuple[float, float], float, float]:
    """Refine a disc centre from its outline: along each of ``N_EDGE_ANGLES`` rays the steepest
    drop of the vessel-free brightness ``clean`` between the prior radii, then a least-squares
    circle through the consistent edge points. Returns (centre, radius, edge fraction) in the
    px of ``clean``; the radius is clipped to ``DISC_RADIUS_PRIOR`` x FOV radius ``r``."""
    lo_r, hi_r = DISC_RADIUS_PRIOR[0] * r, DISC_RADIUS_PRIOR[1] * r
    rmax = 1.2 * hi_r
    n_rad = max(8, int(round(rmax)))
    polar = cv2.warpPolar(clean, (n_rad, N_EDGE_ANGLES), xy, rmax, cv2.INTER_LINEAR + cv2.WARP_POLAR_LINEAR)
    step = np.diff(polar, axis=1)                                    # (angles, radii - 1), per px outward
    lo, hi = int(lo_r * n_rad / rmax), max(int(lo_r * n_rad / rmax) + 1, int(np.ceil(hi_r * n_rad / rmax)))
    band = step[:, lo:hi]
    rad = (lo + np.argmin(band, axis=1) + 0.5) * rmax / n_rad   # a step lies between two samples
    strength = -band.min(axis=1)
    keep = strength > np.median(strength)                            # the stronger half of the rays
    if not keep.any():                  # every ray equally strong (a flat, uniform disc): use them all
        keep = np.ones_like(keep)
    med = float(np.median(rad[keep]))
    keep &= np.abs(rad - med) < EDGE_TOLERANCE * med
    if keep.sum() < 0.25 * N_EDGE_ANGLES:
        return xy, float(np.clip(med, lo_r, hi_r)), float(np.mean(np.abs(rad - med) < EDGE_TOLERANCE * med))
    ang = np.arange(N_EDGE_ANGLES) * (2 * np.pi / N_EDGE_ANGLES)
    px, py = xy[0] + rad[keep] * np.cos(ang[keep]), xy[1] + rad[keep] * np.sin(ang[keep])
    a = np.stack([2 * px, 2 * py, np.ones_like(px)], axis=1)
    (ux, uy, c), *_ = np.linalg.lstsq(a, px ** 2 + py ** 2, rcond=None)   # Kasa circle fit
    radius = float(np.sqrt(max(c + ux ** 2 + uy ** 2, 0.0)))
    if math.hypot(ux - xy[0], uy - xy[1]) > MAX_OUTLINE_SHIFT * med or not lo_r <= radius <= hi_r:
        agree = np.abs(rad - med) < EDGE_TOLERANCE * med             # an implausible fit: keep the peak
        return xy, float(np.clip(med, lo_r, hi_r)), float(agree.mean())
    ray_end = np.hypot(xy[0] + rad * np.cos(ang) - ux, xy[1] + rad * np.sin(ang) - uy)
    return (float(ux), float(uy)), radius, float(np.mean(np.abs(ray_end - radius) < EDGE_TOLERANCE * radius))


def _disc_score(small: np.ndarray, field: np.ndarray, fov_small: tuple[float, float, float]
                ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The disc score map of ``find_disc`` on ``small`` (h, w, 3) with field mask ``field`` and FOV
    (cx, cy, r) in its px. Returns (score (h, w), -inf outside the search region; the
    standardised parts {"bright", "vessels", "blue"}; the vessel-free brightness; the search mask)."""
    cx, cy, r = fov_small
    weight = cv2.erode(field.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(np.float32)
    rgb = small.astype(np.float32)
    r0 = NOMINAL_DISC_RADIUS * r
    vessel_kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (int(0.05 * r) | 1,) * 2)
    clean = cv2.morphologyEx(rgb @ np.float32([0.5, 0.4, 0.1]), cv2.MORPH_CLOSE, vessel_kernel)
    inner, cover = _disc_mean(clean, weight, r0)
    outer, _ = _disc_mean(clean, weight, 2 * r0)
    bright = inner - (4 * outer - inner) / 3                         # disc minus the ring out to 2 r0
    spot_kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (int(SPOT_SIZE * r) | 1,) * 2)
    green = cv2.morphologyEx(small[..., 1], cv2.MORPH_OPEN, spot_kernel)   # small bright spots (exudates) out,
    vessels = cv2.morphologyEx(green, cv2.MORPH_BLACKHAT, vessel_kernel).astype(np.float32)  # or their gaps
    vertical = np.abs(cv2.Sobel(vessels, cv2.CV_32F, 1, 0, ksize=3))                     # look like vessels
    vertical = cv2.GaussianBlur(vertical * weight, (0, 0), 0.05 * r) / \
        np.maximum(cv2.GaussianBlur(weight, (0, 0), 0.05 * r), 1e-3)
    blue, _ = _disc_mean(cv2.morphologyEx(rgb[..., 2], cv2.MORPH_CLOSE, vessel_kernel), weight, r0)
    yy, xx = np.ogrid[: field.shape[0], : field.shape[1]]
    dist2 = (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2
    inside = (dist2 <= (SEARCH_RADIUS * r) ** 2) & field & (cover > MIN_DISC_COVER)
    if not inside.any():
        raise ValueError("no field of view found: the image is (nearly) black")

    def standardise(a: np.ndarray) -> np.ndarray:
        v = a[inside]
        return (a - v.mean()) / (v.std() + 1e-6)

    parts = {"bright": standardise(bright), "vessels": standardise(vertical), "blue": standardise(blue)}
    score = np.where(inside, parts["bright"] + VESSEL_WEIGHT * parts["vessels"] + BLUE_WEIGHT * parts["blue"],
                     -np.inf)
    return score, parts, clean, inside


def find_disc(image: np.ndarray, fov: FieldOfView | None = None) -> DiscEstimate:
    """Find the optic disc of an RGB fundus photo (H, W, 3) classically: centre, diameter, evidence.

    Works on a copy ``DETECT_WIDTH`` wide; the disc radius is taken as ``NOMINAL_DISC_RADIUS`` x
    the FOV radius. Three maps, each a mean over a disc of that radius (inside the field only,
    so the dim rim and the black surround do not matter) and standardised inside the field:

    - brightness (0.5 R + 0.4 G + 0.1 B, vessels closed away) minus its surround out to twice
      the radius: a disc-sized bright blob;
    - vertical vessel edges (green black top-hat, horizontal gradient), densest where the
      arcades leave the disc;
    - blue, vessels closed away: the disc is pale (whitish), yellow exudates and the orange
      retina absorb blue. This term keeps large exudate clusters from winning (IDRiD_033).

    The score is brightness + ``VESSEL_WEIGHT`` x vessels + ``BLUE_WEIGHT`` x blue; its best
    local maximum is the disc. The centre then moves to the brightest blob position near it
    (the vessel term leans towards the arcades), and to the centre of a circle fitted to the
    disc outline (``_disc_outline``), which also gives the diameter.
    Raises ``ValueError`` when there is no field of view (black image).
    """
    small, f = _small(image)
    field = _fov_mask(small)
    if fov is None:
        cx, cy, r = _fov_in_small(field)
        fov = FieldOfView(cx / f, cy / f, r / f)
    else:
        cx, cy, r = fov.cx * f, fov.cy * f, fov.radius * f
    score, parts, clean, inside = _disc_score(small, field, (cx, cy, r))
    r0 = NOMINAL_DISC_RADIUS * r
    yy, xx = np.ogrid[: field.shape[0], : field.shape[1]]
    y, x = np.unravel_index(int(np.argmax(score)), score.shape)
    dist2_peak = (xx - x) ** 2 + (yy - y) ** 2
    rivals = np.where(dist2_peak > (2 * r0) ** 2, score, -np.inf)      # one nominal diameter away or more
    candidates = _next_peaks(rivals, 2 * r0, N_CANDIDATES)
    if candidates:
        ry, rx = candidates[0]
        margin, runner_up = float(score[y, x] - rivals[ry, rx]), ((rx + 0.5) / f, (ry + 0.5) / f)
    else:
        margin, runner_up = float("inf"), None
    near = np.where((dist2_peak <= (0.5 * r0) ** 2) & inside, parts["bright"], -np.inf)
    y, x = np.unravel_index(int(np.argmax(near)), near.shape)
    (ux, uy), radius, edges = _disc_outline(clean, (x + 0.5, y + 0.5), r)
    return DiscEstimate((ux / f, uy / f), 2 * radius / f, margin, edges, runner_up, fov,
                        tuple(((cx_ + 0.5) / f, (cy_ + 0.5) / f) for cy_, cx_ in candidates))


def _next_peaks(score: np.ndarray, apart: float, n: int) -> list[tuple[int, int]]:
    """(row, col) of up to ``n`` best finite values of ``score``, each more than ``apart`` px from the
    ones taken before it (greedy non-maximum suppression)."""
    score = score.copy()
    yy, xx = np.ogrid[: score.shape[0], : score.shape[1]]
    peaks = []
    while len(peaks) < n and np.isfinite(score).any():
        y, x = np.unravel_index(int(np.argmax(score)), score.shape)
        peaks.append((int(y), int(x)))
        score[(xx - x) ** 2 + (yy - y) ** 2 <= apart ** 2] = -np.inf
    return peaks


def detect_disc_side(image: np.ndarray, fov: FieldOfView | None = None) -> DiscSide:
    """Which side the optic disc is on, from the disc that ``find_disc`` finds.

    Returns the side and a confidence (horizontal distance from the FOV centre in FOV
    radii); the caller decides what confidence is enough (``MIN_SIDE_CONFIDENCE``).
    """
    fov = fov or detect_fov(image)
    disc_x, disc_y = find_disc(image, fov).xy
    side = "left" if disc_x < fov.cx else "right"
    return DiscSide(side, float(abs(disc_x - fov.cx) / fov.radius), (float(disc_x), float(disc_y)))


def reduced_decode_factor(size: tuple[int, int], out_scale: float) -> int:
    """How small a photo of ``size`` (w, h) may be decoded (``data.read_image_reduced``) for its
    canonical image at ``out_scale``: 2 where the warp still shrinks a half-size decode by 2 or more
    (the fovea CPU config's 1/4 on both GAMMA cameras and on IDRiD's 4288x2848), so the canonical
    image keeps no detail the decode lost; else 1. The frame's scale is the GAMMA constants' for
    their sizes and, for others, that of a field filling the short side (``CanonicalFrame.allows_factor``
    checks it once the field is known)."""
    size = (int(size[0]), int(size[1]))
    frame_scale = 1.0 if size in (CANONICAL_SIZE, GAMMA_WIDE_SIZE) else CANONICAL_FOV_RADIUS / (min(size) / 2)
    return 2 if _decode_allows(2, frame_scale, out_scale) else 1


def _decode_allows(factor: int, frame_scale: float, out_scale: float) -> bool:
    """The rule of a reduced decode: the warp from a decode at 1/``factor`` into the canonical image at
    ``out_scale`` (through a frame of ``frame_scale``) still shrinks it by 2 or more."""
    return factor == 1 or factor * frame_scale * out_scale <= 0.5


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


def _undecided(name: str, det: DiscSide, min_confidence: float) -> str:
    """The eye-side refusal for ``name``; when ``name`` is a file whose EXIF orientation turns it
    (``data.describe_orientation``), the rotation is named: a photo shown turned 90 degrees has its
    disc above or below the centre, and a side override would not undo that."""
    from gamma_kit.data.images import describe_orientation, exif_orientation

    text = (f"{name}: cannot decide the eye side (optic disc found at x={det.disc_xy[0]:.0f}, too close to the "
            f"centre; confidence {det.confidence:.2f} < {min_confidence})")
    rotation = describe_orientation(name) if os.path.isfile(name) else None
    if rotation is None:
        return text + ". Give it in a side override file (CSV columns data,disc_side)."
    turned = exif_orientation(name) in (5, 6, 7, 8)
    return (f"{text}; the file has {rotation} (the kit reads photos as a viewer shows them"
            f"{', which puts the disc above or below the centre' if turned else ''}): if the tag is wrong, "
            "save the photo without it (a side override does not undo a rotation)")


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
        return cls.with_disc(image, disc_side, min_confidence, name, detect=disc_side is None)[0]

    @classmethod
    def with_disc(cls, image: np.ndarray, disc_side: str | None = None,
                  min_confidence: float = MIN_SIDE_CONFIDENCE, name: str = "image", detect: bool = True,
                  fov: FieldOfView | None = None, factor: int = 1, size: tuple[int, int] | None = None
                  ) -> tuple["CanonicalFrame", DiscSide | None]:
        """``from_image`` that also returns the disc detection it used (``DiscSide``, image
        pixels), or None when ``detect`` is False or (with ``disc_side`` given) the
        detector found no disc. The detection runs once for both; without ``disc_side`` it
        always runs. ``fov``: the image's field of view when the caller has it (e.g. from
        ``data.check_fundus_image``), so it is not detected again. ``factor``, ``size``: ``image``
        is a decode at 1/factor of a photo of ``size`` (w, h) (``data.read_image_reduced``; ``fov``
        in ``image``'s pixels): the frame is the photo's, and the detection is in the photo's pixels."""
        detect = detect or disc_side is None
        h, w = image.shape[:2]
        if factor != 1:
            if size is None:
                raise ValueError(f"{name}: a reduced decode (factor {factor}) needs the photo's size")
            w, h = int(size[0]), int(size[1])
        gamma_size = (w, h) in (CANONICAL_SIZE, GAMMA_WIDE_SIZE)
        if fov is None and not gamma_size:      # GAMMA sizes map by constants; detect_disc_side finds it
            fov = detect_fov(image)
        det = None
        if detect:
            try:
                det = detect_disc_side(image, fov)
            except ValueError:
                if disc_side is None:
                    raise
        if factor != 1:                         # into the photo's pixels (pixel-corner coordinates scale)
            fov = None if fov is None else FieldOfView(fov.cx * factor, fov.cy * factor, fov.radius * factor)
            if det is not None:
                det = DiscSide(det.side, det.confidence, (det.disc_xy[0] * factor, det.disc_xy[1] * factor))
        if disc_side is None:
            if det.confidence < min_confidence:
                raise EyeSideError(_undecided(name, det, min_confidence))
            disc_side = det.side
        if disc_side not in SIDES:
            raise ValueError(f"{name}: disc_side must be 'left' or 'right', got {disc_side!r}")
        return cls.for_size((w, h), disc_side == "right", None if gamma_size else fov), det

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

    def allows_factor(self, factor: int, out_scale: float) -> bool:
        """Whether a decode at 1/``factor`` is still shrunk by 2 or more into the canonical image at
        ``out_scale`` (``reduced_decode_factor``'s rule, with this frame's own scale)."""
        return _decode_allows(factor, self.scale, out_scale)

    def canonical_shape(self, out_scale: float = 1.0) -> tuple[int, int]:
        """(w, h) of the canonical image at ``out_scale`` (rounded up: 1/4 -> 489 x 484)."""
        return math.ceil(CANONICAL_SIZE[0] * out_scale - 1e-9), math.ceil(CANONICAL_SIZE[1] * out_scale - 1e-9)

    def _integer_shift(self) -> bool:
        return self.scale == 1.0 and all(float(o).is_integer() for o in self.offset)

    def warp_image(self, image: np.ndarray, scale: float = 1.0, nearest: bool = False, factor: int = 1
                   ) -> np.ndarray:
        """Image (H, W[, C]) -> canonical image (ceil(1934*scale), ceil(1956*scale)[, C]).

        Canonical point ``p`` lands on pixel ``p * scale`` exactly. Pixels from outside the
        source are 0. ``nearest`` keeps label values (masks). The original's integer crop
        and mirror are done by slicing (exact at ``scale=1``); an integer shrink factor
        (scale 1/2, 1/4, ...) is then exact block averaging. ``factor``: ``image`` is a decode at
        1/factor of the frame's photo (``data.read_image_reduced``: ceil(H/factor) x ceil(W/factor)),
        warped like any other source (its point x is factor * x in the photo).
        """
        expected = tuple(-(-n // factor) for n in self.image_size)
        if image.shape[1::-1] != expected:
            raise ValueError(f"image is {image.shape[1]}x{image.shape[0]}, this frame is for "
                             f"{self.image_size[0]}x{self.image_size[1]}"
                             + (f" (at 1/{factor}: {expected[0]}x{expected[1]})" if factor != 1 else ""))
        out_w, out_h = self.canonical_shape(scale)
        if factor == 1 and self._integer_shift():
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
        total = self.scale * scale * factor             # from ``image``'s pixels
        src, pre = image, (1.0 / factor, 1.0 / factor)
        if total < 0.5 and not nearest:   # shrink with area averaging first: warpAffine alone would alias
            size = (max(1, round(image.shape[1] * total)), max(1, round(image.shape[0] * total)))
            src = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            pre = (size[0] / image.shape[1] / factor, size[1] / image.shape[0] / factor)
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
