"""Render one synthetic colour fundus photograph with its disc/cup mask and fovea.

Conventions (as in the rest of the kit): images are RGB ``uint8`` (H, W, 3); masks are
(H, W) ``uint8`` with 0 = cup, 128 = disc rim, 255 = background; points are (x, y) =
(column, row) in continuous pixel coordinates (pixel ``i`` spans [i, i + 1)).

The anatomy is laid out in the original fovea method's canonical frame ("disc on the
left, 1956 x 1934", ``gamma_kit.geometry``): there the foveae lie around (1139, 1038)
spread over about 487 x 282 px, the optic disc about 2.5 nominal disc diameters
(280-360 px) to their left and slightly above. ``CanonicalFrame`` maps that layout into
the image, so the two GAMMA sizes use the original's crop and mirror constants exactly
and any other size is scaled to its circular field of view (FOV), the way the kit maps
real images of other cameras. An eye with the disc on the right is the mirror image.

The disc region is drawn to be as hard as on real photographs (SPEC 7): the painted
disc is 60-113 px tall on the photo resized to 512 rows (median 80, a little larger or
smaller per camera), tilted and oval; the cup is only slightly paler than the rim
(contrast drawn per photo, sometimes nearly nil) with a blurred edge, and the vessel
trunks leave the cup with a kink at its edge; peripapillary atrophy (a pale crescent or
ring) lies just outside the disc; bright lesions (exudates, drusen, cotton-wool spots)
and reflexes (vessel sheen, the macular ring of young eyes, a bright rim of the field)
lie elsewhere; colour, exposure, haze, blur and vignetting vary per photo.

Smooth content (illumination, macula, vessels, texture) is painted on a canvas at most
``CANVAS_MAX`` px on its long side and upscaled once. The mask is drawn at full
resolution; the canvas takes the disc and cup as area coverage of that mask, so the
disc edge in the image and in the mask coincide to a fraction of a pixel, and the
atrophy and lesions are cleared where the mask has disc.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from gamma_kit.geometry import CANONICAL_FOV_CENTRE, CanonicalFrame, FieldOfView
from gamma_kit.metrics import vcdr

__all__ = ["SynthSample", "FundusLayout", "render_fundus", "sample_layout", "fov_for_size", "vertical_cdr",
           "camera_magnification", "cup_rim_contrast", "CANVAS_MAX", "SIDES", "DISC_HEIGHT_512", "LAYERS"]

SIDES = ("left", "right")
CANVAS_MAX = 800                      # long side (px) of the canvas that smooth content is painted on
WIDE_ASPECT = 1.2                     # w / h above this: a wide camera whose FOV is clipped left and right
WIDE_FOV_RADIUS = 0.49                # FOV radius / height on a wide camera (2992 x 2000: 980 px)
SQUARE_FOV_RADIUS = 0.5               # FOV radius / height on a square-ish camera (nearly fills the frame)
FOV_RADIUS_JITTER = (0.985, 1.02)     # relative spread of the drawn FOV radius (above 1: clipped top and bottom)

# Layout in the canonical frame (SPEC 2), in canonical px.
FOVEA_MEAN = (1139.0, 1038.0)
FOVEA_SPAN = (487.0, 282.0)           # full range over ~100 GAMMA training images, about 5 sigma
DISC_DIAMETER = (280.0, 360.0)        # nominal disc diameter: sets the fovea-disc distance and the vessel tree
FOVEA_DISC_DISTANCE = (2.5, 0.2, 2.1, 2.9)   # nominal disc diameters: mean, sd, clip low, clip high
FOVEA_BELOW_DISC_DEG = (6.0, 3.0)     # fovea below the disc centre line: mean, sd (degrees)
MAX_LAYOUT_TRIES = 200

# The painted disc and cup (SPEC 7, real 45-degree photos resized to 512 x 512).
DISC_HEIGHT_512 = (80.0, 0.11, 60.0, 113.0)  # disc height, px of a 512-row photo: median, log sd, clip low/high
CAMERA_MAGNIFICATION = (1.03, 0.97)   # wide, square-ish camera: the disc's size differs a little between cameras
CUP_SCALE = (0.46, 0.12, 0.22, 0.86)  # cup / disc vertical semi-axis: mean, sd, clip (median vCDR ~0.45)
TILTED_DISC = 0.15                    # share of strongly tilted, oval (myopic-looking) discs
CUP_CONTRAST = (0.01, 0.3)            # cup pallor over the rim colour, drawn log-uniform (0: no pallor)
PPA_PROBABILITY = 0.55                # peripapillary atrophy: a pale crescent or ring outside the disc
LESION_PROBABILITY = {"exudates": 0.25, "drusen": 0.2, "cotton_wool": 0.12}
YOUNG_EYE = 0.35                      # share of photos with vessel sheen and a macular ring reflex
FIELD_RIM_REFLEX = 0.3                # share of photos with a bright crescent at the rim of the field
HAZE = 0.3                            # share of photos with a cataract-like veil
LUMA = np.float32([0.299, 0.587, 0.114])   # luminance weights of RGB
LAYERS = ("ppa", "bright_lesions", "reflexes", "cup_pallor")   # what ``render_fundus(layers=True)`` returns

JPEG_QUALITY = (88, 97)               # exclusive high: encoder quality is drawn per image
N_OUTLINE = 180                       # vertices of the disc and cup outlines
MIN_RIM = 0.08                        # the thinnest rim, as a fraction of the disc radius
SHIFT = 4                             # fixed-point bits for OpenCV drawing (1/16 px)


@dataclass(frozen=True)
class FundusLayout:
    """Where the anatomy sits, in canonical px (disc on the left).

    ``disc_radii`` are the semi-axes of the painted disc before its irregularity, along
    and across ``disc_tilt`` (radians from the x axis; with no tilt: horizontal,
    vertical); ``cup_scale`` is the cup's semi-axis over the disc's. ``scale`` is the
    nominal disc diameter that placed the disc relative to the fovea and sizes the
    vessel tree (drawn as before the disc size was decoupled, so the fovea and disc
    positions of a seed did not move).
    """

    fovea: tuple[float, float]
    disc: tuple[float, float]
    disc_radii: tuple[float, float]
    cup_scale: float
    scale: float = 320.0
    disc_tilt: float = 0.0

    @property
    def disc_diameter(self) -> float:
        """Geometric-mean diameter of the painted disc, canonical px."""
        return 2.0 * math.sqrt(self.disc_radii[0] * self.disc_radii[1])

    @property
    def disc_height(self) -> float:
        """Vertical extent of the (tilted) disc ellipse, canonical px."""
        a, b = self.disc_radii
        t = self.disc_tilt
        return 2.0 * math.sqrt((a * math.sin(t)) ** 2 + (b * math.cos(t)) ** 2)


@dataclass
class SynthSample:
    """One rendered photo: ``image`` (H, W, 3) RGB uint8 and ``mask`` (H, W) uint8 (0/128/255).

    ``fovea_xy`` is the fovea centre and ``disc_xy`` the centroid of the mask's disc
    (image px); ``disc_diameter`` the geometric-mean diameter of the painted disc (image
    px); ``vcdr`` the vertical cup-to-disc ratio measured on the mask (SPEC 5);
    ``jpeg_quality`` the encoder quality drawn for this photo. ``layers`` (only with
    ``render_fundus(..., layers=True)``) maps each name in ``LAYERS`` to its opacity
    (H, W) float32 in [0, 1]: what was painted where, for tests and benchmarks.
    """

    image: np.ndarray
    mask: np.ndarray
    fovea_xy: tuple[float, float]
    disc_xy: tuple[float, float]
    disc_side: str
    disc_diameter: float
    vcdr: float
    jpeg_quality: int
    layers: dict[str, np.ndarray] | None = field(default=None, repr=False)


def fov_for_size(width: int, height: int, radius_factor: float = 1.0) -> FieldOfView:
    """Nominal FOV circle of a camera of ``width`` x ``height``: centred, radius 0.49 h
    (wide) or 0.5 h (square-ish), times ``radius_factor``."""
    rel = WIDE_FOV_RADIUS if width / height > WIDE_ASPECT else SQUARE_FOV_RADIUS
    return FieldOfView(width / 2, height / 2, rel * height * radius_factor)


def camera_magnification(width: int, height: int) -> float:
    """Disc-size factor of the camera of a ``width`` x ``height`` photo: ``CAMERA_MAGNIFICATION``
    for a wide or a square-ish camera (optics differ; the factor does not change when a
    photo is resized)."""
    return CAMERA_MAGNIFICATION[0] if width / height > WIDE_ASPECT else CAMERA_MAGNIFICATION[1]


def sample_layout(rng: np.random.Generator, fov_radius: float, disc_px_per_512: float = 1934 / 512,
                  magnification: float = 1.0) -> FundusLayout:
    """Draw fovea, disc size/position and cup size in canonical px.

    ``fov_radius`` is the FOV radius in canonical px; the disc is kept inside the FOV
    and inside the canonical rows by redrawing. The fovea and disc centre come from the
    same draws as the first version of the renderer (so the fovea ground truth of a seed
    is unchanged); the painted disc's height is then drawn from ``DISC_HEIGHT_512``
    times ``magnification``, in px of the photo resized to 512 rows, and converted with
    ``disc_px_per_512`` (canonical px per such px).
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
        ry = diameter / 2 * math.sqrt(elongation)
        inside_fov = math.hypot(disc[0] - cx, disc[1] - cy) + 1.1 * ry < 0.97 * fov_radius
        inside_rows = 1.1 * ry < disc[1] < 2 * cy - 1.1 * ry
        if inside_fov and inside_rows:
            break
    else:  # pragma: no cover - the acceptance rate is high for any sane FOV radius
        raise ValueError(f"cannot place an optic disc inside a FOV of radius {fov_radius:.0f} canonical px")

    median, log_sd, lo, hi = DISC_HEIGHT_512
    height = float(np.clip(median * magnification * math.exp(rng.normal(0.0, log_sd)), lo, hi)) * disc_px_per_512
    if rng.uniform() < TILTED_DISC:                  # tilted, clearly oval disc (often myopic)
        e = rng.uniform(1.2, 1.5) ** rng.choice([-1.0, 1.0])
        tilt = math.radians(rng.choice([-1.0, 1.0]) * rng.uniform(15, 45))
    else:
        e = elongation * math.exp(rng.normal(0.0, 0.05))
        tilt = math.radians(float(np.clip(rng.normal(0.0, 10.0), -25, 25)))
    # semi-axes along / across the tilt whose tilted ellipse is ``height`` tall
    along = height / 2 / math.sqrt(math.sin(tilt) ** 2 + (e * math.cos(tilt)) ** 2)
    radii = np.array([along, e * along])
    room = min(0.97 * fov_radius - math.hypot(disc[0] - cx, disc[1] - cy), disc[1], 2 * cy - disc[1]) / 1.1
    radii *= min(1.0, room / radii.max())            # a large disc near the rim of the field: shrink to fit
    mean, dev, lo, hi = CUP_SCALE
    return FundusLayout((float(fovea[0]), float(fovea[1])), (float(disc[0]), float(disc[1])),
                        (float(radii[0]), float(radii[1])), float(np.clip(rng.normal(mean, dev), lo, hi)),
                        float(diameter), float(tilt))


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


def _disc_and_cup_outlines(rng: np.random.Generator, layout: FundusLayout
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closed outlines (N_OUTLINE, 2) of the disc and of the cup inside it, and the cup's
    centre (2,), canonical px."""
    theta = np.linspace(0, 2 * np.pi, N_OUTLINE, endpoint=False)
    tilt = layout.disc_tilt
    r_disc, coef = _wobbly_radius(rng, theta, layout.disc_radii, tilt, 0.035)
    centre = np.asarray(layout.disc)
    disc = centre + r_disc[:, None] * np.stack([np.cos(theta), np.sin(theta)], axis=1)

    ry = layout.disc_radii[1] * layout.cup_scale
    rx = layout.disc_radii[0] * layout.cup_scale / rng.uniform(0.95, 1.2)
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
    return disc, cup, centre + offset


def _cv_points(points: np.ndarray) -> np.ndarray:
    """Continuous (x, y) -> OpenCV fixed-point int32 (OpenCV puts integer coordinates at pixel centres)."""
    return np.round((np.asarray(points) - 0.5) * (1 << SHIFT)).astype(np.int32)


def vertical_cdr(mask: np.ndarray) -> float:
    """Vertical cup-to-disc ratio of a 0/128/255 mask: largest per-column pixel counts (SPEC 5)."""
    return float(vcdr(mask))


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


def _path_out_of_cup(rng: np.random.Generator, origin: np.ndarray, heading: float, cup: np.ndarray
                     ) -> tuple[np.ndarray, float]:
    """Course (k, 2) of a vessel trunk from ``origin`` inside the cup to the cup edge, canonical px.

    The trunk runs straight across the cup floor to the edge a few degrees off its
    heading, climbs along the cup wall (a stretch of the outline) and leaves the cup at
    the outline point in its heading, where it turns: the bend at the cup edge that
    graders use to place the cup. Returns the course and the heading it leaves with.
    """
    rel = cup - origin
    ang = np.arctan2(rel[:, 1], rel[:, 0])
    i = int(np.argmin(np.abs((ang - heading + np.pi) % (2 * np.pi) - np.pi)))
    m = int(rng.integers(1, 6)) * int(rng.choice([-1, 1]))       # 2-10 degrees of outline along the wall
    idx = (i - m + np.arange(abs(m) + 1) * np.sign(m)) % len(cup)
    return np.vstack([origin, cup[idx]]), heading + float(rng.normal(0, 0.35))


def _grow_vessels(rng: np.random.Generator, layout: FundusLayout, fov_radius: float,
                  cup: np.ndarray | None = None, cup_centre: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random vessel tree leaving the disc, canonical px.

    Returns segments (N, 2, 2) as [[x0, y0], [x1, y1]], widths (N,) and a bool (N,) that
    is True for veins. The trunks emerge from the cup on its nasal side (given the cup
    outline and centre) and bend at its edge; temporal arcades orbit the fovea at about
    two disc diameters; other trunks and all branches wander; nothing enters the foveal
    avascular zone.
    """
    d = layout.scale
    step = 0.08 * d
    fovea = np.asarray(layout.fovea)
    centre = np.asarray(CANONICAL_FOV_CENTRE)
    faz = rng.uniform(0.3, 0.5) * d
    arc_radius = {m: rng.uniform(1.7, 2.3) * d for m in ("superior", "inferior")}
    min_width = 0.008 * d
    max_steps = int(6 * d / step)
    stack: list[_Walker] = []
    segs, widths, veins = [], [], []
    if cup_centre is not None:   # the central trunk: nasal part of the cup
        cup_r = np.ptp(cup, axis=0) / 2
        hub = cup_centre + np.array([-rng.uniform(0.1, 0.45), rng.normal(0, 0.1)]) * cup_r
    else:
        hub = np.asarray(layout.disc) + np.array([-0.1 * d, 0.0])

    def trunk(mode: str, heading_deg: float, spread: float, width: float) -> None:
        h = math.radians(heading_deg + rng.normal(0, spread))
        for vein in (True, False):
            dh = 0.0 if vein else math.radians(rng.choice([-1, 1]) * rng.uniform(5, 18))
            w = width * (1.0 if vein else rng.uniform(0.7, 0.85))
            if cup is None:
                start = hub + rng.normal(0, 0.05 * d, 2)
                heading = h + dh
            else:
                course, heading = _path_out_of_cup(rng, hub + rng.normal(0, 0.015 * d, 2), h + dh, cup)
                segs.extend(zip(course[:-1], course[1:]))
                widths.extend([w] * (len(course) - 1))
                veins.extend([vein] * (len(course) - 1))
                start = course[-1]
            stack.append(_Walker(start[0], start[1], heading, w, vein, mode, 0, rng.normal(0, 0.03), max_steps))

    trunk("superior", -90, 12, rng.uniform(0.055, 0.075) * d)
    trunk("inferior", 90, 12, rng.uniform(0.055, 0.075) * d)
    trunk("free", -135, 15, rng.uniform(0.04, 0.06) * d)
    trunk("free", 135, 15, rng.uniform(0.04, 0.06) * d)
    for _ in range(rng.integers(1, 4)):   # small extra trunks: nasal or towards the macula
        heading = rng.choice([180.0, 0.0]) + rng.normal(0, 25)
        trunk("free", heading, 0, rng.uniform(0.02, 0.035) * d)

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

def _draw_spots(rng: np.random.Generator, shape: tuple[int, int], centres: np.ndarray, radii: np.ndarray,
                blur: float = 1.0) -> np.ndarray:
    """Irregular blobs (a few overlapping discs each) as coverage (h, w) float32; canvas px."""
    layer = np.zeros(shape, np.uint8)
    for c, r in zip(centres, radii):
        for _ in range(int(rng.integers(1, 4))):
            p = _cv_points(c + rng.normal(0, 0.6 * r, 2))
            rr = int(round(max(0.6, r * rng.uniform(0.5, 1.0)) * (1 << SHIFT)))
            cv2.circle(layer, (int(p[0]), int(p[1])), rr, 255, -1, cv2.LINE_AA, SHIFT)
    return cv2.GaussianBlur(layer, (0, 0), blur).astype(np.float32) / 255.0


def _random_points_in_fov(rng: np.random.Generator, n: int, radius: float, avoid: list[tuple[np.ndarray, float]]
                          ) -> np.ndarray:
    """Up to ``n`` canonical points inside 0.9 of the FOV, away from each (centre, distance) in ``avoid``."""
    r = 0.9 * radius * np.sqrt(rng.uniform(0, 1, 4 * n))
    a = rng.uniform(0, 2 * np.pi, 4 * n)
    pts = np.asarray(CANONICAL_FOV_CENTRE) + np.stack([r * np.cos(a), r * np.sin(a)], axis=1)
    return _keep_away(pts, radius, avoid)[:n]


def _keep_away(pts: np.ndarray, radius: float, avoid: list[tuple[np.ndarray, float]]) -> np.ndarray:
    """The canonical ``pts`` (n, 2) inside 0.9 of the FOV and away from each (centre, distance)."""
    keep = np.hypot(*(pts - np.asarray(CANONICAL_FOV_CENTRE)).T) < 0.9 * radius
    for centre, dist in avoid:
        keep &= np.hypot(*(pts - centre).T) > dist
    return pts[keep]


# ---- rendering ------------------------------------------------------------------------------

def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Zero-mean, unit-ish smooth noise (h, w) float32 with about ``cells`` blobs across the long side."""
    h, w = shape
    gh, gw = max(2, round(cells * h / max(h, w))), max(2, round(cells * w / max(h, w)))
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _angular_noise(rng: np.random.Generator, phi: np.ndarray, amplitude: float, orders: int = 5) -> np.ndarray:
    """Smooth periodic noise of the angle ``phi`` (radians, any shape): harmonics 1..orders, sd ~ amplitude."""
    k = np.arange(1, orders + 1, dtype=np.float32).reshape((-1,) + (1,) * phi.ndim)
    a = (rng.normal(0, amplitude, orders) / np.sqrt(np.arange(1, orders + 1))).astype(np.float32)
    p = rng.uniform(0, 2 * np.pi, orders).astype(np.float32)
    return (a.reshape(k.shape) * np.cos(k * phi + p.reshape(k.shape))).sum(axis=0)


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


@dataclass
class _DiscPaint:
    """What ``_paint_disc`` painted, canvas px inside ``roi``: the disc and cup area coverage
    of the mask, the atrophy opacity and the cup pallor opacity, each (h, w) float32."""

    roi: tuple[slice, slice]
    disc: np.ndarray
    cup: np.ndarray
    ppa: np.ndarray
    pallor: np.ndarray


def _blend(sub: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """``sub += alpha * (colour - sub)`` in place; ``alpha`` (h, w), ``colour`` (3,) or (h, w, 3)."""
    sub += alpha[..., None] * (colour - sub)


def _paint_disc(rng: np.random.Generator, img: np.ndarray, shade: np.ndarray, canvas: _Canvas, mask: np.ndarray,
                disc_xy: np.ndarray, diameter: float, temporal_sign: float, retina: np.ndarray) -> _DiscPaint:
    """Paint peripapillary atrophy, rim and cup into ``img`` (canvas, in place) around the disc.

    ``diameter`` is the painted disc's (image px), ``retina`` the base colour (3,) of the
    fundus. The rim and cup opacities are the area coverage of the full-resolution
    ``mask`` (blurred), so the painted edges sit on the mask's; the atrophy is cleared
    wherever the mask has disc. The cup is the rim colour moved a drawn, often small,
    step towards a pale yellow-white, with a wide blurred edge and a faint shading of
    its wall, so that it is hard to see (as on real photos).
    """
    r = diameter / 2
    roi = canvas.roi(disc_xy, 2.0 * r)
    disc_c, cup_c = [cv2.resize(cv2.compare(mask, v, op), (canvas.w, canvas.h), interpolation=cv2.INTER_AREA)[roi]
                     .astype(np.float32) / 255 for v, op in ((255, cv2.CMP_LT), (0, cv2.CMP_EQ))]
    sub, shade = img[roi], shade[roi][..., None]
    r_c = np.float32(r / canvas.sx)                   # disc radius, canvas px
    dx = canvas.xs[:, roi[1]] - np.float32(disc_xy[0])
    dy = canvas.ys[roi[0]] - np.float32(disc_xy[1])
    rho = np.sqrt(dx ** 2 + dy ** 2) / np.float32(r)
    ppa = np.zeros_like(disc_c)
    if rng.uniform() < PPA_PROBABILITY and min(disc_c.shape) > 2:
        # pale atrophic crescent (temporal, sometimes all round) of irregular width, from the disc edge out
        outside = cv2.distanceTransform((disc_c < 0.5).astype(np.uint8), cv2.DIST_L2, 3) / r_c
        phi = np.arctan2(dy, dx)
        phi0 = (0.0 if temporal_sign > 0 else np.pi) + rng.normal(0, 0.4)
        ring = rng.uniform(0.0, 0.7) if rng.uniform() < 0.2 else 0.0
        crescent = ((1.0 + np.cos(phi - phi0)) / 2) ** np.float32(rng.uniform(0.7, 3.0))
        width = np.float32(rng.uniform(0.08, 0.5)) * (ring + (1 - ring) * crescent) * \
            np.exp(_angular_noise(rng, phi, 0.25))
        soft = np.float32(rng.uniform(0.04, 0.12))
        ppa = np.clip((width - outside) / soft, 0, 1) * np.clip(width / soft - 0.5, 0, 1)
        ppa *= np.clip(1 + 0.35 * _smooth_noise(rng, ppa.shape, max(3, int(ppa.shape[1] / r_c * 3))), 0, 1.3)
        ppa = np.clip(ppa * np.float32(rng.uniform(0.25, 0.7)), 0, 1) * (1 - disc_c)
        grey = np.float32(rng.uniform(0.2, 0.8))     # from the fundus colour, paled, to grey-white (sclera)
        ppa_col = (retina / retina.max() * 230) * (1 - grey) + np.float32([205, 195, 180]) * grey
        _blend(sub, ppa, ppa_col * np.float32(rng.uniform(0.8, 1.05)) * shade)
        # mottled pigment at the outer edge of the atrophy (alpha zone)
        edge = np.exp(-((outside - width) / (3 * soft)) ** 2) * (1 - disc_c)
        edge *= np.clip(0.6 + 0.5 * _smooth_noise(rng, edge.shape, max(3, int(edge.shape[1] / r_c * 2))), 0, 1)
        sub *= 1 - (edge * np.float32(rng.uniform(0.0, 0.15)))[..., None]

    disc_a = cv2.GaussianBlur(disc_c, (0, 0), max(0.3, rng.uniform(0.05, 0.22) * r_c)) * rng.uniform(0.78, 0.95)
    cup_r = r_c * math.sqrt(max(float(cup_c.sum()), 1.0) / max(float(disc_c.sum()), 1.0))
    cup_soft = cv2.GaussianBlur(cup_c, (0, 0), max(0.5, rng.uniform(0.1, 0.35) * cup_r))
    contrast = math.exp(rng.uniform(math.log(CUP_CONTRAST[0]), math.log(CUP_CONTRAST[1])))

    # rim: the fundus colour made pale and warm (orange-pink to yellow), slightly brighter at the centre;
    # cup: a step of ``contrast`` from the rim colour towards a pale yellow-white, a little brighter
    warm = np.float32([255, rng.uniform(190, 235), rng.uniform(70, 170)])
    k = np.float32(rng.uniform(0.35, 0.7))
    rim_col = retina / retina.max() * 255 * (1 - k) + warm * k
    # as bright as a drawn disc/surround contrast asks (real photos: about 0.2-0.7 in luminance)
    target = float(retina @ LUMA) * (1 + float(np.clip(math.exp(rng.normal(math.log(0.38), 0.3)), 0.2, 0.9)))
    rim_col *= np.float32(min(target / float(rim_col @ LUMA), 300 / float(rim_col.max())))
    cup_col = (rim_col + np.float32(contrast) * (np.float32([255, 248, 228]) - rim_col)) * np.float32(1 + 0.3 * contrast)
    colour = rim_col + cup_soft[..., None] * (cup_col - rim_col)
    glow = ((1.0 + 0.05 * np.clip(1.0 - rho ** 2, 0, 1)) * rng.uniform(1.0, 1.15))[..., None] * shade
    texture = 1 + np.float32(rng.uniform(0.02, 0.06)) * _smooth_noise(rng, disc_c.shape,
                                                                      max(3, int(4 * disc_c.shape[1] / r_c)))
    _blend(sub, disc_a, glow * colour * texture[..., None])
    # the cup wall: one side lit, the other in shadow, along the cup's blurred edge
    light = rng.uniform(0, 2 * np.pi)
    gx, gy = cv2.Sobel(cup_soft, cv2.CV_32F, 1, 0, ksize=3) / 8, cv2.Sobel(cup_soft, cv2.CV_32F, 0, 1, ksize=3) / 8
    wall = (gx * math.cos(light) + gy * math.sin(light)) * np.float32(rng.uniform(0.0, 0.12) * cup_r)
    sub *= np.clip(1 + wall, 0.7, 1.3)[..., None]
    return _DiscPaint(roi, disc_c, cup_c, ppa, cup_soft * np.float32(contrast))


def _bright_lesions(rng: np.random.Generator, canvas: _Canvas, frame: CanonicalFrame, layout: FundusLayout,
                    fov_c: float, d_nom: float) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Bright lesions away from the disc: (coverage (h, w), colour (3,), opacity) per kind, canvas px.

    Hard exudates (sharp yellow dots in clusters around the macula), drusen (soft pale
    dots near the fovea) and cotton-wool spots (large fluffy white patches near the
    arcades), each kind present in a drawn share of photos (``LESION_PROBABILITY``).
    Placed at least about 1.1 disc diameters from the disc centre and 0.3 from the fovea,
    whose dark centre stays visible (canonical ``layout``).
    """
    out = []
    dd = layout.scale
    fovea = np.asarray(layout.fovea)
    avoid = [(np.asarray(layout.disc), 0.55 * layout.disc_diameter + 0.55 * dd), (fovea, 0.3 * dd)]
    px = 1.0 / frame.scale / canvas.sx               # canvas px per canonical px
    kinds = (("exudates", [255, 228, 105], (0.008, 0.035), 0.6, (0.7, 1.0)),
             ("drusen", [240, 218, 150], (0.012, 0.04), 1.4, (0.35, 0.7)),
             ("cotton_wool", [238, 228, 212], (0.08, 0.25), 4.0, (0.35, 0.75)))
    for name, colour, r_rel, blur, opacity in kinds:
        if rng.uniform() >= LESION_PROBABILITY[name]:
            continue
        if name == "exudates":               # clusters (circinate-like) around the macula
            n_clusters = int(rng.integers(1, 4))
            a = rng.uniform(0, 2 * np.pi, n_clusters)
            dist = rng.uniform(0.3, 2.0, n_clusters) * dd
            hubs = fovea + np.stack([dist * np.cos(a), dist * np.sin(a)], axis=1)
            counts = rng.integers(4, 30, n_clusters)
            pts = np.concatenate([h + rng.normal(0, rng.uniform(0.08, 0.35) * dd, (c, 2)) for h, c in zip(hubs, counts)])
        elif name == "drusen":
            n = int(rng.integers(8, 40))
            pts = fovea + rng.normal(0, 0.7 * dd, (n, 2))
        else:                                # along the arcades, above or below the fovea
            n = int(rng.integers(1, 4))
            a = rng.choice([-1.0, 1.0], n) * rng.uniform(0.6, 2.2, n)
            dist = rng.uniform(1.2, 2.4, n) * dd
            pts = fovea + np.stack([-dist * np.cos(a) * 0.6, dist * np.sin(a)], axis=1)
        pts = _keep_away(pts, fov_c, avoid)
        if not len(pts):
            continue
        radii = rng.uniform(*r_rel, len(pts)) * dd * px
        cover = _draw_spots(rng, canvas.shape, canvas.to_canvas(frame.to_image(pts)), radii, blur)
        out.append((cover, np.float32(colour), float(rng.uniform(*opacity))))
    return out


def _reflexes(rng: np.random.Generator, canvas: _Canvas, fov: FieldOfView, fovea_img: np.ndarray, d_nom: float
              ) -> np.ndarray:
    """Opacity (h, w) float32 of bright reflexes that are not lesions, canvas px.

    Young eyes (share ``YOUNG_EYE``): a patchy ring at about 1-1.5 disc diameters round
    the fovea (the macular reflex) and a small foveal reflex; some photos (share
    ``FIELD_RIM_REFLEX``): a bright crescent along part of the rim of the field.
    """
    out = np.zeros(canvas.shape, np.float32)
    if rng.uniform() < YOUNG_EYE:
        dist = np.sqrt(canvas.sq_dist(fovea_img))
        ring_r = rng.uniform(0.9, 1.5) * d_nom
        ring = np.exp(-((dist - ring_r) / (rng.uniform(0.05, 0.12) * d_nom)) ** 2)
        ring *= np.clip(0.2 + 0.7 * _smooth_noise(rng, canvas.shape, 30), 0, 1)
        out = np.maximum(out, ring * np.float32(rng.uniform(0.06, 0.2)))
        out = np.maximum(out, np.exp(-(dist / (0.025 * d_nom)) ** 2) * np.float32(rng.uniform(0.2, 0.5)))
    if rng.uniform() < FIELD_RIM_REFLEX:
        dist = np.sqrt(canvas.sq_dist((fov.cx, fov.cy)))
        phi = np.arctan2(canvas.ys - np.float32(fov.cy), canvas.xs - np.float32(fov.cx))
        band = np.exp(-(np.maximum(0, fov.radius - dist) / (rng.uniform(0.015, 0.06) * fov.radius)) ** 2)
        arc = ((1 + np.cos(phi - rng.uniform(0, 2 * np.pi))) / 2) ** np.float32(rng.uniform(2, 12))
        out = np.maximum(out, band * arc * np.float32(rng.uniform(0.3, 0.7)))
    return out


def render_fundus(rng: np.random.Generator, width: int, height: int, disc_side: str,
                  fov_radius_factor: float | None = None, layers: bool = False) -> SynthSample:
    """Render one fundus photo of ``width`` x ``height`` px with the disc on ``disc_side``.

    Everything random comes from ``rng``, so a generator in the same state gives the
    same sample. ``fov_radius_factor`` scales the nominal FOV radius (drawn from
    ``FOV_RADIUS_JITTER`` when None). ``layers=True`` also returns, full size, the
    opacity of each element in ``LAYERS`` (costs time and memory; for tests).
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
    layout = sample_layout(rng, fov_c, height * frame.scale / 512, camera_magnification(width, height))
    d_nom = layout.scale * px                        # nominal disc diameter (image px): the scale of the fundus
    d_img = layout.disc_diameter * px                # the painted disc's diameter, image px
    fovea_img, disc_img = frame.to_image(np.asarray([layout.fovea, layout.disc]))

    # mask at full resolution
    disc_outline, cup_outline, cup_centre = _disc_and_cup_outlines(rng, layout)
    mask = np.full((height, width), 255, np.uint8)
    cv2.fillPoly(mask, [_cv_points(frame.to_image(disc_outline))], 128, cv2.LINE_8, SHIFT)
    cv2.fillPoly(mask, [_cv_points(frame.to_image(cup_outline))], 0, cv2.LINE_8, SHIFT)

    # retina: colour, illumination falling off towards the rim (off-centre: vignetting), texture
    canvas = _Canvas.for_image(width, height)
    light = np.array([fov.cx, fov.cy]) + rng.uniform(-0.15, 0.15, 2) * fov.radius
    r_norm = np.sqrt(canvas.sq_dist(light)) / np.float32(fov.radius)
    rim = rng.uniform(0.35, 0.75)
    illum = 1.0 - (1.0 - rim) * np.minimum(r_norm, 1.3) ** rng.uniform(1.5, 3.5)
    texture = 1.0 + sum(a * _smooth_noise(rng, canvas.shape, c) for a, c in
                        ((rng.uniform(0.03, 0.07), 6), (rng.uniform(0.02, 0.05), 24), (rng.uniform(0.01, 0.03), 90)))
    shade = illum * texture * np.float32(rng.uniform(0.5, 1.15))
    red = rng.uniform(150, 235)                      # pigmentation: orange-red to brown, a few pinker fundi
    base = np.float32([red, red * rng.uniform(0.28, 0.55), red * rng.uniform(0.06, 0.3)])

    # macula and fovea: darker, the macular pigment absorbing more green and blue
    d2 = canvas.sq_dist(fovea_img)
    macula = rng.uniform(0.2, 0.4) * np.exp(-d2 / (2 * (rng.uniform(0.5, 0.8) * d_nom) ** 2))
    macula += rng.uniform(0.1, 0.22) * np.exp(-d2 / (2 * (rng.uniform(0.08, 0.16) * d_nom) ** 2))
    img = shade[..., None] * base * np.clip(1.0 - macula[..., None] * np.float32([1.0, 1.15, 1.25]), 0.2, 1.0)

    paint = _paint_disc(rng, img, shade, canvas, mask, disc_img, d_img, 1.0 if disc_side == "left" else -1.0, base)
    roi = paint.roi

    # vessels: veins darker and wider than arteries, strongest contrast in green; paler on the disc, more in the cup
    segs, widths, veins = _grow_vessels(rng, layout, fov_c, cup_outline, cup_centre)
    segs_c = canvas.to_canvas(frame.to_image(segs.reshape(-1, 2))).reshape(-1, 2, 2)
    widths_c = widths * px / canvas.sx
    cup_fade = 1.0 - np.float32(rng.uniform(0.3, 0.7)) * cv2.GaussianBlur(paint.cup, (0, 0), 1.0) \
        - np.float32(rng.uniform(0.0, 0.35)) * cv2.GaussianBlur(paint.disc - paint.cup, (0, 0), 1.0)
    depth = rng.uniform(0.7, 1.3)
    for sel, strength in ((veins, np.float32([0.16, 0.36, 0.32])), (~veins, np.float32([0.07, 0.22, 0.2]))):
        cover = _draw_segments(canvas.shape, segs_c[sel], widths_c[sel])
        cover[roi] *= cup_fade
        img *= 1.0 - cover[..., None] * (strength * np.float32(depth * rng.uniform(0.85, 1.15)))
    reflex = _reflexes(rng, canvas, fov, fovea_img, d_nom)
    if rng.uniform() < YOUNG_EYE:                    # sheen along the centre of the large vessels
        thick = widths_c > 2.0
        sheen = _draw_segments(canvas.shape, segs_c[thick], 0.25 * widths_c[thick])
        reflex = np.maximum(reflex, sheen * np.float32(rng.uniform(0.06, 0.18)))

    # distractors: bright lesions, reflexes, dark red haemorrhage-like dots; none on the disc
    clear = np.ones(canvas.shape, np.float32)
    clear[roi] = 1.0 - np.clip(cv2.dilate(paint.disc, np.ones((3, 3), np.uint8)) * 4, 0, 1)
    lesions = np.zeros(canvas.shape, np.float32)
    for cover, colour, opacity in _bright_lesions(rng, canvas, frame, layout, fov_c, d_nom):
        cover *= clear * np.float32(opacity)
        _blend(img, cover, colour * shade[..., None])
        lesions = np.maximum(lesions, cover)
    reflex *= clear
    _blend(img, reflex, np.float32([245, 240, 232]) * np.clip(shade, 0.6, 1.2)[..., None])
    avoid = [(np.asarray(layout.disc), 1.2 * layout.scale), (np.asarray(layout.fovea), 0.6 * layout.scale)]
    count = int(rng.integers(0, 5))
    if count:
        pts = _random_points_in_fov(rng, count, fov_c, avoid)
        radii = rng.uniform(0.02, 0.06, len(pts)) * d_nom / canvas.sx
        spots = _draw_spots(rng, canvas.shape, canvas.to_canvas(frame.to_image(pts)), radii)[..., None]
        img *= 1.0 - spots * np.float32([0.35, 0.6, 0.55])

    # the camera and the eye's media: haze (cataract), blur, exposure curve, colour balance
    if rng.uniform() < HAZE:
        veil = np.float32([rng.uniform(150, 210), rng.uniform(130, 180), rng.uniform(100, 160)])
        _blend(img, np.full(canvas.shape, rng.uniform(0.1, 0.4), np.float32), veil * illum[..., None])
        sigma = rng.uniform(0.8, 2.0)
    else:
        sigma = rng.uniform(0.0, 1.0)
    if sigma > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    img = 255 * (np.clip(img, 0, None) / 255) ** np.float32(rng.uniform(0.8, 1.25))
    img *= rng.uniform(0.92, 1.08, 3).astype(np.float32)

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
    extra = None
    if layers:
        full = {name: np.zeros(canvas.shape, np.float32) for name in LAYERS}
        full["ppa"][roi] = paint.ppa
        full["cup_pallor"][roi] = paint.pallor
        full["bright_lesions"], full["reflexes"] = lesions, reflex
        extra = {k: v if v.shape == (height, width) else cv2.resize(v, (width, height), interpolation=cv2.INTER_LINEAR)
                 for k, v in full.items()}
    return SynthSample(image, mask, (float(fovea_img[0]), float(fovea_img[1])),
                       (m["m10"] / m["m00"] + 0.5, m["m01"] / m["m00"] + 0.5), disc_side, float(d_img),
                       vertical_cdr(mask[y:y + bh, x:x + bw]), int(rng.integers(*JPEG_QUALITY)), extra)


def cup_rim_contrast(image: np.ndarray, mask: np.ndarray) -> float:
    """How much paler the cup is than the rim: median luminance of the cup pixels over
    that of the rim pixels, minus 1 (0: no visible cup; about 0.3-0.6 on the first
    version of this renderer). ``image`` (H, W, 3) RGB, ``mask`` (H, W) 0/128/255; NaN
    when the mask has no cup or no rim. Medians, so vessels crossing both count little."""
    lum = image.astype(np.float32) @ LUMA
    cup, rim = lum[mask == 0], lum[mask == 128]
    if not cup.size or not rim.size:
        return float("nan")
    return float(np.median(cup) / max(float(np.median(rim)), 1e-6) - 1.0)
