"""Stage 1 of the disc-centred pipeline: where is the optic disc, and how big is it, on any photo.

Conventions (as in ``gamma_kit.geometry``): images are RGB ``uint8`` (H, W, 3) of any size,
camera or eye; points are (x, y) = (column, row) in continuous image px (pixel ``i`` spans
[i, i + 1)), so a pixel's centre is ``i + 0.5``. Diameters are image px.

Two sources of evidence, one answer (``DiscLocation``):

- the classical detector ``geometry.find_disc`` (the same one that decides the eye side):
  a disc-sized bright, pale blob where the vertical vessels are dense, refined to the centre
  of a circle fitted to its outline, which also gives the diameter;
- optionally a whole-image segmentation model, any object with
  ``predict_labels(image) -> (H, W) uint8`` labels (0 cup, 1 rim, 2 background at the source
  size), e.g. ``gamma_kit.seg.predictor.SegPredictor``. Its disc is the largest connected
  component of labels <= 1: centre = centroid, diameter = the larger of its vertical extent
  and its equivalent-circle diameter.

Rule when both are there (``locate_disc``). The model's disc is *plausible* when its diameter
lies within ``MODEL_SIZE_TOLERANCE`` of the prior ``DISC_RADIUS_PRIOR`` x the FOV and its largest
component holds at least ``MIN_MODEL_DOMINANCE`` of its disc pixels. The preferred disc is the
model's when plausible (a segmentation outline is direct evidence) or when the classical one
is itself unsure, else the classical one. If the two centres lie within one disc radius
(half the preferred diameter) they agree: "model+classical", centre from the model, diameter
from the model if plausible else from the detector, not unsure. Otherwise the preferred one
is returned, unsure, with a note giving both positions. When neither finds a disc
(a black photo, no field of view, an empty model output), the answer is the image centre
with a nominal diameter, unsure, and a note naming the photo: nothing raises for a bad
photo, only for bad argument shapes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from gamma_kit.geometry import DISC_RADIUS_PRIOR, NOMINAL_DISC_RADIUS, FieldOfView, find_disc, largest_component

__all__ = ["DiscLocation", "locate_disc", "classical_confidence", "SOURCES", "SURE_MARGIN", "SURE_EDGES",
           "MIN_CONFIDENCE", "MIN_MODEL_DOMINANCE", "MODEL_SIZE_TOLERANCE"]

SOURCES = ("model", "classical", "model+classical", "image-centre")
SURE_MARGIN = 3.0            # detector score margin over the runner-up (standardised units) that counts as sure
SURE_EDGES = 0.5             # share of outline rays agreeing with the fitted circle that counts as sure
MIN_CONFIDENCE = 0.2         # below this the classical answer is reported as unsure
MIN_MODEL_DOMINANCE = 0.5    # the model's largest disc component must hold this share of its disc pixels
MODEL_SIZE_TOLERANCE = (0.6, 1.5)   # factors on the prior's low / high diameter that a model disc may reach


@dataclass(frozen=True)
class DiscLocation:
    """Where the optic disc is: ``xy`` centre (image px, (x, y)), ``diameter`` (image px),
    ``confidence`` 0..1 (higher = surer), ``source`` (one of ``SOURCES``), ``unsure`` (the
    caller should report it: low confidence, or model and classical disagree) and ``note``
    (one human line, e.g. why it is unsure). ``alternatives``: other places the disc may be, most
    likely first (the classical detector's next candidates; the other source's disc where the model
    and the detector disagree), none within one disc radius of ``xy`` or of each other."""

    xy: tuple[float, float]
    diameter: float
    confidence: float
    source: str
    unsure: bool
    note: str = ""
    alternatives: tuple[tuple[float, float], ...] = ()

    def with_alternatives(self, *groups) -> "DiscLocation":
        """This answer with ``alternatives`` from ``groups`` of places (in order; duplicates within one
        disc radius dropped)."""
        kept: list[tuple[float, float]] = []
        radius = self.diameter / 2
        for place in (p for g in groups for p in g if p is not None):
            if all(math.hypot(place[0] - q[0], place[1] - q[1]) > radius for q in [self.xy, *kept]):
                kept.append((float(place[0]), float(place[1])))
        return replace(self, alternatives=tuple(kept))


def classical_confidence(margin: float, edge_fraction: float) -> float:
    """Confidence 0..1 of a ``geometry.DiscEstimate``: score margin over the runner-up and
    outline agreement, each relative to what counts as sure, multiplied."""
    return float(min(1.0, max(0.0, margin) / SURE_MARGIN) * min(1.0, edge_fraction / SURE_EDGES))


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image array of shape (H, W, 3), got "
                         f"{getattr(image, 'shape', type(image).__name__)}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image, got dtype {image.dtype}")


def _model_disc(model, image: np.ndarray) -> tuple[tuple[float, float], float, float] | None:
    """(centre, diameter, dominance) of the model's largest disc component, or None if it finds none."""
    if not callable(getattr(model, "predict_labels", None)):
        raise ValueError(f"model must have predict_labels(image) -> (H, W) labels, got {type(model).__name__}")
    labels = np.asarray(model.predict_labels(image))
    if labels.shape != image.shape[:2]:
        raise ValueError(f"model.predict_labels returned shape {labels.shape}, expected the image size "
                         f"{image.shape[:2]} (labels 0 cup, 1 rim, 2 background)")
    disc = largest_component(labels <= 1)
    if disc is None:
        return None
    return disc.centre, max(disc.height, 2.0 * math.sqrt(disc.area / math.pi)), disc.share


def _fmt(xy: tuple[float, float]) -> str:
    return f"({xy[0]:.0f}, {xy[1]:.0f})"


def locate_disc(image: np.ndarray, fov: FieldOfView | None = None, model=None, name: str = "image") -> DiscLocation:
    """Locate the optic disc in ``image`` (H, W, 3) RGB uint8: centre and diameter in image px, and
    ``alternatives``, the other places it may be (see ``DiscLocation``).

    ``fov``: the field of view if already known (else detected). ``model``: optional object
    with ``predict_labels(image) -> (H, W)`` labels (0 cup, 1 rim, 2 background); see the
    module docstring for how its disc and the classical one are combined. ``name`` is used
    in notes. Never raises for a photo without a disc (it returns the image centre, unsure);
    raises ``ValueError`` for a wrong image shape or dtype, or a model output of the wrong shape.
    """
    seen: dict = {}
    loc = _locate(image, fov, model, name, seen)
    if loc.source == "image-centre":
        return loc
    classical = seen.get("classical")
    return loc.with_alternatives([seen.get("model_xy"), classical.xy if classical is not None else None],
                                 classical.candidates if classical is not None else ())


def _locate(image: np.ndarray, fov: FieldOfView | None, model, name: str, seen: dict) -> DiscLocation:
    """The ``DiscLocation`` (without alternatives) by the rule of the module docstring; ``seen`` gets
    the evidence: ``classical`` (the ``DiscEstimate``) and ``model_xy`` (the model's disc centre)."""
    _check_image(image)
    h, w = image.shape[:2]
    classical, why_not = None, ""
    try:
        classical = seen["classical"] = find_disc(image, fov)
        fov = classical.fov
    except ValueError as e:                                 # a black photo: no field of view
        why_not = str(e)
    fov_r = fov.radius if fov is not None else min(h, w) / 2
    found = _model_disc(model, image) if model is not None else None

    if classical is not None:
        c_conf = classical_confidence(classical.margin, classical.edge_fraction)
        c_loc = DiscLocation(classical.xy, classical.diameter, c_conf, "classical", c_conf < MIN_CONFIDENCE,
                             "" if c_conf >= MIN_CONFIDENCE else
                             f"{name}: no clear optic disc (best candidate at {_fmt(classical.xy)}, confidence "
                             f"{c_conf:.2f}; a rival at {_fmt(classical.runner_up_xy or classical.xy)})")
    if found is None:
        if classical is not None:
            if model is None:
                return c_loc
            return DiscLocation(c_loc.xy, c_loc.diameter, c_loc.confidence, "classical", True,
                                f"{name}: the model found no disc; using the classical detector at {_fmt(c_loc.xy)}")
        centre = (fov.cx, fov.cy) if fov is not None else (w / 2, h / 2)
        reason = (why_not or "no disc") + ("; the model found none" if model is not None else "")
        return DiscLocation((float(centre[0]), float(centre[1])), 2 * NOMINAL_DISC_RADIUS * fov_r, 0.0,
                            "image-centre", True, f"{name}: no optic disc found ({reason}); using the image centre")

    m_xy, m_diam, dominance = found
    seen["model_xy"] = m_xy
    lo = 2 * DISC_RADIUS_PRIOR[0] * fov_r * MODEL_SIZE_TOLERANCE[0]
    hi = 2 * DISC_RADIUS_PRIOR[1] * fov_r * MODEL_SIZE_TOLERANCE[1]
    plausible = lo <= m_diam <= hi and dominance >= MIN_MODEL_DOMINANCE
    m_conf = dominance if plausible else 0.5 * dominance
    if classical is None:
        return DiscLocation(m_xy, m_diam, m_conf, "model", True,
                            f"{name}: no classical cross-check ({why_not}); using the model's disc at {_fmt(m_xy)}")
    chosen = (m_xy, m_diam) if plausible or c_loc.confidence < MIN_CONFIDENCE else (c_loc.xy, c_loc.diameter)
    gap = math.hypot(m_xy[0] - classical.xy[0], m_xy[1] - classical.xy[1])
    if gap <= chosen[1] / 2:                                # agreement: the model's outline places it
        return DiscLocation(m_xy, m_diam if plausible else c_loc.diameter,
                            1.0 - (1.0 - m_conf) * (1.0 - c_loc.confidence), "model+classical", False,
                            "" if plausible else f"{name}: the model's disc size is implausible (diameter "
                            f"{m_diam:.0f} px, largest component {dominance:.0%}); using the classical diameter")
    note = (f"{name}: model disc at {_fmt(m_xy)} and classical disc at {_fmt(classical.xy)} are "
            f"{gap:.0f} px apart (more than one disc radius)")
    if chosen[0] == m_xy:
        return DiscLocation(m_xy, m_diam, m_conf * 0.5, "model", True, note + "; using the model's")
    return DiscLocation(c_loc.xy, c_loc.diameter, c_loc.confidence * 0.5, "classical", True,
                        note + "; the model's disc is implausible, using the classical one")
