"""Render one synthetic colour fundus photograph with its disc/cup mask and fovea.

Conventions (as in the rest of the kit): images are RGB ``uint8`` (H, W, 3); masks are
(H, W) ``uint8`` with 0 = cup, 128 = disc rim, 255 = background; points are (x, y) =
(column, row) in continuous pixel coordinates (pixel ``i`` spans [i, i + 1)).

The anatomy is laid out in the original fovea method's canonical frame ("disc on the
left, 1956 x 1934", ``gamma_kit.geometry``): there the foveae lie around (1139, 1038)
spread over about 487 x 282 px, the optic disc (diameter 280-360 px) about 2.5 disc
diameters to their left and slightly above. ``CanonicalFrame`` maps that layout into the
image, so the two GAMMA sizes use the original's crop and mirror constants exactly and
any other size is scaled to its circular field of view (FOV), the way the kit maps real
images of other cameras. An eye with the disc on the right is the mirror image.

Smooth content (illumination, macula, vessels, texture) is painted on a canvas at most
``CANVAS_MAX`` px on its long side and upscaled once. The mask is drawn at full
resolution; the canvas takes the disc and cup as area coverage of that mask, so the
disc edge in the image and in the mask coincide to a fraction of a pixel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from gamma_kit.geometry import CANONICAL_FOV_CENTRE, CanonicalFrame, FieldOfView

__all__ = ["SynthSample", "FundusLayout", "render_fundus", "sample_layout", "fov_for_size", "vertical_cdr",
           "CANVAS_MAX", "SIDES"]

SIDES = ("left", "right")
CANVAS_MAX = 800                      # long side (px) of the canvas that smooth content is painted on
WIDE_ASPECT = 1.2                     # w / h above this: a wide camera whose FOV is clipped left and right
WIDE_FOV_RADIUS = 0.49                # FOV radius / height on a wide camera (2992 x 2000: 980 px)
SQUARE_FOV_RADIUS = 0.5               # FOV radius / height on a square-ish camera (nearly fills the frame)
FOV_RADIUS_JITTER = (0.985, 1.02)     # relative spread of the drawn FOV radius (above 1: clipped top and bottom)

# Layout in the canonical frame (SPEC 2), in canonical px.
FOVEA_MEAN = (1139.0, 1038.0)
FOVEA_SPAN = (487.0, 282.0)           # full range over ~100 GAMMA training images, about 5 sigma
DISC_DIAMETER = (280.0, 360.0)
FOVEA_DISC_DISTANCE = (2.5, 0.2, 2.1, 2.9)   # disc diameters: mean, sd, clip low, clip high
FOVEA_BELOW_DISC_DEG = (6.0, 3.0)     # fovea below the disc centre line: mean, sd (degrees)
VCDR = (0.3, 0.8)
MAX_LAYOUT_TRIES = 200

JPEG_QUALITY = (88, 97)               # exclusive high: encoder quality is drawn per image
N_OUTLINE = 180                       # vertices of the disc and cup outlines
MIN_RIM = 0.08                        # the thinnest rim, as a fraction of the disc radius
SHIFT = 4                             # fixed-point bits for OpenCV drawing (1/16 px)


@dataclass(frozen=True)
class FundusLayout:
    """Where the anatomy sits, in canonical px (disc on the left).

    ``disc_radii`` are the (horizontal, vertical) semi-axes of the disc before its
    irregularity; ``cup_scale`` is the cup's vertical semi-axis over the disc's.
    """

    fovea: tuple[float, float]
    disc: tuple[float, float]
    disc_radii: tuple[float, float]
    cup_scale: float

    @property
    def disc_diameter(self) -> float:
        """Geometric-mean disc diameter, canonical px."""
        return 2.0 * math.sqrt(self.disc_radii[0] * self.disc_radii[1])


@dataclass
class SynthSample:
    """One rendered photo: ``image`` (H, W, 3) RGB uint8 and ``mask`` (H, W) uint8 (0/128/255).

    ``fovea_xy`` is the fovea centre and ``disc_xy`` the centroid of the mask's disc
    (image px); ``disc_diameter`` the nominal disc diameter (image px); ``vcdr`` the
    vertical cup-to-disc ratio measured on the mask (SPEC 5); ``jpeg_quality`` the
    encoder quality drawn for this photo.
    """

    image: np.ndarray
    mask: np.ndarray
    fovea_xy: tuple[float, float]
    disc_xy: tuple[float, float]
    disc_side: str
    disc_diameter: float
    vcdr: float
    jpeg_quality: int


def fov_for_size(width: int, height: int, radius_factor: float = 1.0) -> FieldOfView:
    """Nominal FOV circle of a camera of ``width`` x ``height``: centred, radius 0.49 h
    (wide) or 0.5 h (square-ish), times ``radius_factor``."""
    rel = WIDE_FOV_RADIUS if width / height > WIDE_ASPECT else SQUARE_FOV_RADIUS
    return FieldOfView(width / 2, height / 2, rel * height * radius_factor)


def sample_layout(rng: np.random.Generator, fov_radius: float) -> FundusLayout:
    """Draw fovea, disc size/position and cup size in canonical px.

    ``fov_radius`` is the FOV radius in canonical px; the disc is kept inside the FOV
    and inside the canonical rows by redrawing.
    """
    cx, cy = CANONICAL_FOV_CENTRE
    sd = np.asarray(FOVEA_SPAN) / 5.0
    for _ in range(MAX_LAYOUT_TRIES):
        fovea = np.asarray(FOVEA_MEAN) + np.clip(rng.normal(0.0, 1.0, 2), -2.5, 2.5) * sd
        diameter = rng.uniform(*DISC_DIAMETER)
        mean, dev, lo, hi = FOVEA_DISC_DISTANCE
        distance = float(np.clip(rng.normal(mean, dev), lo, hi)) * diameter
        angle = math.radians(rng.normal(*FOVEA_BELOW_DISC_DEG))
        disc = fovea - distance * np.array([math.cos(angle), math.sin(angle)])
        elongation = rng.uniform(1.0, 1.15)          # discs are slightly taller than wide
        rx, ry = diameter / 2 / math.sqrt(elongation), diameter / 2 * math.sqrt(elongation)
        inside_fov = math.hypot(disc[0] - cx, disc[1] - cy) + 1.1 * ry < 0.97 * fov_radius
        inside_rows = 1.1 * ry < disc[1] < 2 * cy - 1.1 * ry
        if inside_fov and inside_rows:
            break
    else:  # pragma: no cover - the acceptance rate is high for any sane FOV radius
        raise ValueError(f"cannot place an optic disc inside a FOV of radius {fov_radius:.0f} canonical px")
    return FundusLayout((float(fovea[0]), float(fovea[1])), (float(disc[0]), float(disc[1])),
                        (float(rx), float(ry)), float(rng.uniform(*VCDR)))


# ---- shapes ---------------------------------------------------------------------------------

def _wobbly_radius(rng: np.random.Generator, theta: np.ndarray, radii: tuple[float, float], tilt: float,
                   amplitude: float) -> tuple[np.ndarray, np.ndarray]:
    """Radius r(theta) of a tilted ellipse times (1 + harmonics k = 2..5 of relative size up to
    ``2 * amplitude / k``); returns (r, coefficients) so the shape can be evaluated elsewhere."""
    k = np.arange(2, 6)
    coef = np.stack([rng.uniform(0, amplitude, k.size) / k * 2, rng.uniform(0, 2 * np.pi, k.size)])
    return _radius_at(theta, radii, tilt, coef), coef


def _radius_at(theta: np.ndarray, radii: tuple[float, float], tilt: float, coef: np.ndarray) -> np.ndarray:
    """Radius of the shape made by ``_wobbly_radius`` at angles ``theta`` (radians, any shape)."""
    a, b = radii
    t = theta - tilt
    ellipse = a * b / np.sqrt((b * np.cos(t)) ** 2 + (a * np.sin(t)) ** 2)
    k = np.arange(2, 2 + coef.shape[1]).reshape((-1,) + (1,) * np.ndim(theta))
    wobble = (coef[0].reshape(k.shape) * np.cos(k * theta + coef[1].reshape(k.shape))).sum(axis=0)
    return ellipse * (1.0 + wobble)


def _disc_and_cup_outlines(rng: np.random.Generator, layout: FundusLayout) -> tuple[np.ndarray, np.ndarray]:
    """Closed outlines (N_OUTLINE, 2) of the disc and of the cup inside it, canonical px."""
    theta = np.linspace(0, 2 * np.pi, N_OUTLINE, endpoint=False)
    tilt = math.radians(rng.uniform(-12, 12))
    r_disc, coef = _wobbly_radius(rng, theta, layout.disc_radii, tilt, 0.035)
    centre = np.asarray(layout.disc)
    disc = centre + r_disc[:, None] * np.stack([np.cos(theta), np.sin(theta)], axis=1)

    ry = layout.disc_radii[1] * layout.cup_scale
    rx = ry / rng.uniform(0.95, 1.2)
    # cups sit a little temporal (towards the fovea, +x here) of the disc centre
    offset = np.array([rng.uniform(0.0, 0.12), rng.normal(0.0, 0.03)]) * np.asarray(layout.disc_radii)
    r_cup, _ = _wobbly_radius(rng, theta, (rx, ry), tilt + math.radians(rng.normal(0, 8)), 0.05)
    cup = centre + offset + r_cup[:, None] * np.stack([np.cos(theta), np.sin(theta)], axis=1)
    # keep a rim: clamp each cup point inside the disc radius in its direction
    rel = cup - centre
    phi = np.arctan2(rel[:, 1], rel[:, 0])
    dist = np.hypot(rel[:, 0], rel[:, 1])
    limit = (1.0 - MIN_RIM) * _radius_at(phi, layout.disc_radii, tilt, coef)
    cup = centre + rel * (np.minimum(dist, limit) / np.maximum(dist, 1e-9))[:, None]
    return disc, cup


def _cv_points(points: np.ndarray) -> np.ndarray:
    """Continuous (x, y) -> OpenCV fixed-point int32 (OpenCV puts integer coordinates at pixel centres)."""
    return np.round((np.asarray(points) - 0.5) * (1 << SHIFT)).astype(np.int32)


def vertical_cdr(mask: np.ndarray) -> float:
    """Vertical cup-to-disc ratio of a 0/128/255 mask: largest per-column pixel counts (SPEC 5)."""
    disc = (mask < 255).sum(axis=0).max()
    cup = (mask == 0).sum(axis=0).max()
    return float(cup / disc) if disc else 0.0


# ---- vessels --------------------------------------------------------------------------------

@dataclass
class _Walker:
    x: float
    y: float
    heading: float       # radians, image convention (y down); 0 = temporal (+x) in the canonical frame
    width: float         # canonical px
    vein: bool
    mode: str            # "superior" / "inferior" arcade, or "free"
    depth: int
    curvature: float     # radians per step in free mode
    steps: int           # length budget in steps


def _grow_vessels(rng: np.random.Generator, layout: FundusLayout, fov_radius: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random vessel tree leaving the disc, canonical px.

    Returns segments (N, 2, 2) as [[x0, y0], [x1, y1]], widths (N,) and a bool (N,) that
    is True for veins. Temporal arcades orbit the fovea at about two disc diameters;
    other trunks and all branches wander; nothing enters the foveal avascular zone.
    """
    d = layout.disc_diameter
    step = 0.08 * d
    fovea = np.asarray(layout.fovea)
    centre = np.asarray(CANONICAL_FOV_CENTRE)
    faz = rng.uniform(0.3, 0.5) * d
    arc_radius = {m: rng.uniform(1.7, 2.3) * d for m in ("superior", "inferior")}
    min_width = 0.008 * d
    max_steps = int(6 * d / step)
    stack: list[_Walker] = []

    def trunk(mode: str, heading_deg: float, spread: float, width: float) -> None:
        h = math.radians(heading_deg + rng.normal(0, spread))
        for vein in (True, False):
            dh = 0.0 if vein else math.radians(rng.choice([-1, 1]) * rng.uniform(5, 18))
            # the central vessels emerge on the nasal side of the cup
            start = np.asarray(layout.disc) + np.array([-0.1 * d, 0.0]) + rng.normal(0, 0.05 * d, 2)
            w = width * (1.0 if vein else rng.uniform(0.7, 0.85))
            stack.append(_Walker(start[0], start[1], h + dh, w, vein, mode, 0, rng.normal(0, 0.03), max_steps))

    trunk("superior", -90, 12, rng.uniform(0.055, 0.075) * d)
    trunk("inferior", 90, 12, rng.uniform(0.055, 0.075) * d)
    trunk("free", -135, 15, rng.uniform(0.04, 0.06) * d)
    trunk("free", 135, 15, rng.uniform(0.04, 0.06) * d)
    for _ in range(rng.integers(1, 4)):   # small extra trunks: nasal or towards the macula
        heading = rng.choice([180.0, 0.0]) + rng.normal(0, 25)
        trunk("free", heading, 0, rng.uniform(0.02, 0.035) * d)

    segs, widths, veins = [], [], []
    while stack:
        w = stack.pop()
        until_branch = int(rng.integers(4, 10))
        for _ in range(w.steps):
            if w.mode != "free":
                v = np.array([w.x, w.y]) - fovea
                dist = math.hypot(v[0], v[1])
                th = math.atan2(v[1], v[0])
                sign = 1.0 if w.mode == "superior" else -1.0
                tangent = sign * np.array([-math.sin(th), math.cos(th)])
                desired = tangent + 1.2 * (arc_radius[w.mode] - dist) / d * v / max(dist, 1e-9)
                turn = math.atan2(desired[1], desired[0]) - w.heading
                turn = (turn + math.pi) % (2 * math.pi) - math.pi
                w.heading += float(np.clip(turn, -0.2, 0.2))
                if sign * th > -0.35 and v[0] > 0:        # past the fovea: wander off temporally
                    w.mode = "free"
            else:
                w.heading += w.curvature
            w.heading += rng.normal(0, 0.06)
            nx, ny = w.x + step * math.cos(w.heading), w.y + step * math.sin(w.heading)
            if math.hypot(nx - centre[0], ny - centre[1]) > fov_radius or \
                    math.hypot(nx - fovea[0], ny - fovea[1]) < faz:
                break
            segs.append(((w.x, w.y), (nx, ny)))
            widths.append(w.width)
            veins.append(w.vein)
            w.x, w.y = nx, ny
            w.width *= 0.988
            until_branch -= 1
            if until_branch == 0:
                until_branch = int(rng.integers(6, 14))
                child_w = w.width * rng.uniform(0.4, 0.7)
                if w.depth < 2 and child_w > min_width:
                    h = w.heading + rng.choice([-1, 1]) * math.radians(rng.uniform(25, 65))
                    budget = int(rng.integers(8, 30) if w.depth == 0 else rng.integers(4, 14))
                    stack.append(_Walker(w.x, w.y, h, child_w, w.vein, "free", w.depth + 1,
                                         rng.normal(0, 0.04), budget))
                    w.width *= 0.9
            if w.width < min_width:
                break
    return np.asarray(segs, float).reshape(-1, 2, 2), np.asarray(widths, float), np.asarray(veins, bool)


def _draw_segments(shape: tuple[int, int], segs: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Anti-aliased vessel coverage (h, w) float32 in [0, 1]; ``segs`` and ``widths`` in canvas px.

    OpenCV thickness is an integer: a vessel thinner than one pixel is drawn one pixel wide
    at proportionally lower strength.
    """
    layer = np.zeros(shape, np.uint8)
    pts = _cv_points(segs.reshape(-1, 2)).reshape(-1, 2, 2)
    for (p0, p1), wd in zip(pts, widths):
        thickness = max(1, int(round(wd)))
        value = int(round(255 * min(1.0, wd)))
        cv2.line(layer, (int(p0[0]), int(p0[1])), (int(p1[0]), int(p1[1])), value, thickness,
                 cv2.LINE_AA, SHIFT)
    return cv2.GaussianBlur(layer, (0, 0), 0.7).astype(np.float32) / 255.0


# ---- spots ----------------------------------------------------------------------------------

def _draw_spots(rng: np.random.Generator, shape: tuple[int, int], centres: np.ndarray, radii: np.ndarray
                ) -> np.ndarray:
    """Irregular blobs (a few overlapping discs each) as coverage (h, w) float32; canvas px."""
    layer = np.zeros(shape, np.uint8)
    for c, r in zip(centres, radii):
        for _ in range(int(rng.integers(1, 4))):
            p = _cv_points(c + rng.normal(0, 0.6 * r, 2))
            rr = int(round(max(0.6, r * rng.uniform(0.5, 1.0)) * (1 << SHIFT)))
            cv2.circle(layer, (int(p[0]), int(p[1])), rr, 255, -1, cv2.LINE_AA, SHIFT)
    return cv2.GaussianBlur(layer, (0, 0), 1.0).astype(np.float32) / 255.0


def _random_points_in_fov(rng: np.random.Generator, n: int, radius: float, avoid: list[tuple[np.ndarray, float]]
                          ) -> np.ndarray:
    """Up to ``n`` canonical points inside 0.9 of the FOV, away from each (centre, distance) in ``avoid``."""
    r = 0.9 * radius * np.sqrt(rng.uniform(0, 1, 4 * n))
    a = rng.uniform(0, 2 * np.pi, 4 * n)
    pts = np.asarray(CANONICAL_FOV_CENTRE) + np.stack([r * np.cos(a), r * np.sin(a)], axis=1)
    keep = np.ones(len(pts), bool)
    for centre, dist in avoid:
        keep &= np.hypot(*(pts - centre).T) > dist
    return pts[keep][:n]


# ---- rendering ------------------------------------------------------------------------------

def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Zero-mean, unit-ish smooth noise (h, w) float32 with about ``cells`` blobs across the long side."""
    h, w = shape
    gh, gw = max(2, round(cells * h / max(h, w))), max(2, round(cells * w / max(h, w)))
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


@dataclass(frozen=True)
class _Canvas:
    """Low-resolution painting grid: canvas px ``u`` covers image px ``u * (sx, sy)``.

    ``xs`` (1, w) and ``ys`` (h, 1) hold the image coordinates of the canvas pixel centres.
    """

    w: int
    h: int
    sx: float
    sy: float
    xs: np.ndarray
    ys: np.ndarray

    @classmethod
    def for_image(cls, width: int, height: int, long_side: int = CANVAS_MAX) -> "_Canvas":
        f = max(1.0, max(width, height) / long_side)
        w, h = max(1, round(width / f)), max(1, round(height / f))
        sx, sy = width / w, height / h
        return cls(w, h, sx, sy, ((np.arange(w, dtype=np.float32) + 0.5) * sx)[None, :],
                   ((np.arange(h, dtype=np.float32) + 0.5) * sy)[:, None])

    @property
    def shape(self) -> tuple[int, int]:
        return self.h, self.w

    def to_canvas(self, points: np.ndarray) -> np.ndarray:
        """(..., 2) image points -> canvas points."""
        return np.asarray(points) / np.array([self.sx, self.sy])

    def roi(self, centre: np.ndarray, radius: float) -> tuple[slice, slice]:
        """Canvas (rows, cols) slices covering the image-px square ``centre`` +- ``radius``."""
        x0, x1 = int((centre[0] - radius) / self.sx), int(math.ceil((centre[0] + radius) / self.sx))
        y0, y1 = int((centre[1] - radius) / self.sy), int(math.ceil((centre[1] + radius) / self.sy))
        return slice(max(0, y0), max(0, min(self.h, y1))), slice(max(0, x0), max(0, min(self.w, x1)))

    def sq_dist(self, p: np.ndarray, roi: tuple[slice, slice] = (slice(None), slice(None))) -> np.ndarray:
        """Squared image-px distance from ``p`` of the canvas pixel centres in ``roi``."""
        return (self.xs[:, roi[1]] - np.float32(p[0])) ** 2 + (self.ys[roi[0]] - np.float32(p[1])) ** 2


def _paint_disc(rng: np.random.Generator, img: np.ndarray, shade: np.ndarray, canvas: _Canvas, mask: np.ndarray,
                disc_xy: np.ndarray, diameter: float, temporal_sign: float) -> tuple[tuple[slice, slice], np.ndarray]:
    """Paint peripapillary atrophy, rim and cup into ``img`` (canvas, in place) around the disc.

    The rim and cup opacities are the area coverage of the full-resolution ``mask``
    (blurred slightly), so the painted edges sit on the mask's. Returns the region
    painted and the cup opacity there (vessels over the cup are drawn paler).
    """
    r = diameter / 2
    roi = canvas.roi(disc_xy, 1.7 * r)
    covers = [cv2.resize(cv2.compare(mask, v, op), (canvas.w, canvas.h), interpolation=cv2.INTER_AREA)[roi]
              .astype(np.float32) / 255 for v, op in ((255, cv2.CMP_LT), (0, cv2.CMP_EQ))]
    sub, shade = img[roi], shade[roi][..., None]
    rho = np.sqrt(canvas.sq_dist(disc_xy, roi)) / np.float32(r)
    if rng.uniform() < 0.5:   # a pale crescent just outside the disc, on its temporal side
        side = np.clip(temporal_sign * (canvas.xs[:, roi[1]] - np.float32(disc_xy[0])) / np.float32(r), 0, 1)
        ring = np.exp(-((rho - 1.08) / rng.uniform(0.06, 0.15)) ** 2) * side * rng.uniform(0.08, 0.25)
        sub += ring[..., None] * (np.float32([235, 190, 150]) * shade - sub)
    blur = diameter / 320 / canvas.sx                 # canvas px per px of a photo whose disc is 320 px wide
    disc_a = cv2.GaussianBlur(covers[0], (0, 0), rng.uniform(1.0, 5.0) * blur) * rng.uniform(0.5, 0.8)
    cup_a = cv2.GaussianBlur(covers[1], (0, 0), rng.uniform(2.0, 10.0) * blur) * rng.uniform(0.45, 0.85)
    glow = ((1.0 + 0.15 * np.clip(1.0 - rho ** 2, 0, 1)) * rng.uniform(0.95, 1.15))[..., None] * shade
    rim_col = np.float32([250, 250 * rng.uniform(0.5, 0.68), 250 * rng.uniform(0.15, 0.35)])
    cup_col = np.float32([255, 255 * rng.uniform(0.75, 0.92), 255 * rng.uniform(0.4, 0.7)])
    sub += disc_a[..., None] * (glow * rim_col - sub)
    sub += cup_a[..., None] * (glow * cup_col - sub)
    return roi, cup_a


def render_fundus(rng: np.random.Generator, width: int, height: int, disc_side: str,
                  fov_radius_factor: float | None = None) -> SynthSample:
    """Render one fundus photo of ``width`` x ``height`` px with the disc on ``disc_side``.

    Everything random comes from ``rng``, so a generator in the same state gives the
    same sample. ``fov_radius_factor`` scales the nominal FOV radius (drawn from
    ``FOV_RADIUS_JITTER`` when None).
    """
    if disc_side not in SIDES:
        raise ValueError(f"disc_side must be 'left' or 'right', got {disc_side!r}")
    if width < 32 or height < 32:
        raise ValueError(f"image size must be at least 32x32 px, got {width}x{height}")
    if fov_radius_factor is None:
        fov_radius_factor = rng.uniform(*FOV_RADIUS_JITTER)
    fov = fov_for_size(width, height, fov_radius_factor)
    frame = CanonicalFrame.for_size((width, height), disc_side == "right", fov)
    px = 1.0 / frame.scale                           # image px per canonical px
    fov_c = fov.radius * frame.scale                 # FOV radius, canonical px
    layout = sample_layout(rng, fov_c)
    d_img = layout.disc_diameter * px
    fovea_img, disc_img = frame.to_image(np.asarray([layout.fovea, layout.disc]))

    # mask at full resolution
    disc_outline, cup_outline = _disc_and_cup_outlines(rng, layout)
    mask = np.full((height, width), 255, np.uint8)
    cv2.fillPoly(mask, [_cv_points(frame.to_image(disc_outline))], 128, cv2.LINE_8, SHIFT)
    cv2.fillPoly(mask, [_cv_points(frame.to_image(cup_outline))], 0, cv2.LINE_8, SHIFT)

    # retina: colour, illumination falling off towards the rim (off-centre), texture
    canvas = _Canvas.for_image(width, height)
    light = np.array([fov.cx, fov.cy]) + rng.uniform(-0.15, 0.15, 2) * fov.radius
    r_norm = np.sqrt(canvas.sq_dist(light)) / np.float32(fov.radius)
    rim = rng.uniform(0.35, 0.7)
    illum = 1.0 - (1.0 - rim) * np.minimum(r_norm, 1.3) ** rng.uniform(1.6, 3.0)
    texture = 1.0 + sum(a * _smooth_noise(rng, canvas.shape, c) for a, c in
                        ((rng.uniform(0.03, 0.07), 6), (rng.uniform(0.02, 0.05), 24), (rng.uniform(0.01, 0.03), 90)))
    shade = illum * texture * np.float32(rng.uniform(0.6, 1.1))
    red = rng.uniform(150, 235)
    base = np.float32([red, red * rng.uniform(0.30, 0.50), red * rng.uniform(0.08, 0.22)])

    # macula and fovea: darker, the macular pigment absorbing more green and blue
    d2 = canvas.sq_dist(fovea_img)
    macula = rng.uniform(0.2, 0.4) * np.exp(-d2 / (2 * (rng.uniform(0.5, 0.8) * d_img) ** 2))
    macula += rng.uniform(0.1, 0.22) * np.exp(-d2 / (2 * (rng.uniform(0.08, 0.16) * d_img) ** 2))
    img = shade[..., None] * base * np.clip(1.0 - macula[..., None] * np.float32([1.0, 1.15, 1.25]), 0.2, 1.0)

    roi, cup_a = _paint_disc(rng, img, shade, canvas, mask, disc_img, d_img, 1.0 if disc_side == "left" else -1.0)

    # vessels: veins darker and wider than arteries, strongest contrast in green
    segs, widths, veins = _grow_vessels(rng, layout, fov_c)
    segs_c = canvas.to_canvas(frame.to_image(segs.reshape(-1, 2))).reshape(-1, 2, 2)
    widths_c = widths * px / canvas.sx
    for sel, strength in ((veins, np.float32([0.28, 0.5, 0.45])), (~veins, np.float32([0.12, 0.32, 0.3]))):
        cover = _draw_segments(canvas.shape, segs_c[sel], widths_c[sel])
        cover[roi] *= 1.0 - 0.5 * cup_a               # vessels dipping into the cup are out of focus, paler
        img *= 1.0 - cover[..., None] * (strength * np.float32(rng.uniform(0.8, 1.2)))

    # distractors: bright exudate-like spots and dark red haemorrhage-like dots
    avoid = [(np.asarray(layout.disc), 1.2 * layout.disc_diameter),
             (np.asarray(layout.fovea), 0.6 * layout.disc_diameter)]
    for colour, count, r_rel in (([255, 235, 150], int(rng.integers(0, 8)), (0.015, 0.04)),
                                 (None, int(rng.integers(0, 5)), (0.02, 0.06))):
        if count == 0:
            continue
        pts = _random_points_in_fov(rng, count, fov_c, avoid)
        radii = rng.uniform(*r_rel, len(pts)) * d_img / canvas.sx
        spots = _draw_spots(rng, canvas.shape, canvas.to_canvas(frame.to_image(pts)), radii)[..., None]
        if colour is None:
            img *= 1.0 - spots * np.float32([0.35, 0.6, 0.55])
        else:
            img += spots * np.float32(rng.uniform(0.5, 0.9)) * (np.float32(colour) * shade[..., None] - img)

    # field of view with an anti-aliased edge, sensor noise, then up to full size
    fov_dist = np.sqrt(canvas.sq_dist((fov.cx, fov.cy))) / np.float32(canvas.sx)
    img *= np.clip(np.float32(fov.radius / canvas.sx + 0.5) - fov_dist, 0, 1)[..., None]
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(1.0, 3.0))
    small = cv2.convertScaleAbs(img)    # saturates at 255; noise below 0 in the black surround folds to faint positive
    image = small if small.shape[:2] == (height, width) else \
        cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)

    disc_bin = cv2.compare(mask, 255, cv2.CMP_LT)
    m = cv2.moments(disc_bin, binaryImage=True)        # OpenCV puts pixel centres on integers
    x, y, bw, bh = cv2.boundingRect(disc_bin)
    return SynthSample(image, mask, (float(fovea_img[0]), float(fovea_img[1])),
                       (m["m10"] / m["m00"] + 0.5, m["m01"] / m["m00"] + 0.5), disc_side, float(d_img),
                       vertical_cdr(mask[y:y + bh, x:x + bw]), int(rng.integers(*JPEG_QUALITY)))
