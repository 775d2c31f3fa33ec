"""Where the fovea region of interest (ROI) sits in each canonical image.

The original crops one fixed window, 608 x 400 canonical px centred at (1140, 1040), from
every image. The network was trained on crops whose centre is the fovea shifted by up to
(240, 180) px, so a fovea farther than that from the window centre lies outside what it
has seen, and one outside the window cannot be found at all. On the 103 real IDRiD photos
8 foveae lie outside the fixed window and the offsets reach (316, 222) px; GAMMA photos
have foveae 60 px from its edge (issue 12).

Anchors (config section ``roi``):

- ``fixed`` (the original, default): the codec's ``roi_centre`` for every image.
- ``disc``: the optic disc that the eye-side detector found (``CanonicalImage.disc``) plus a
  disc-to-fovea offset learned from the training set (``fit_disc_offset``: the median of
  fovea - disc over the training images, full-scale canonical px; on IDRiD about
  (718, 93), spread 47 x 54 px, so the fovea lies within about 170 px of the window centre).
  An image falls back to the fixed centre when no disc was found, or when the anchored
  centre lies more than ``max_shift`` (per axis) from the fixed centre: a disc detected in
  the wrong place must not move the window off the macula.

Outlier guard (``max_from_prior``, px; null = off): on an anchored image the window centre is
itself an estimate of the fovea (the prior; on IDRiD within about 170 px of it). A decoded
position farther than ``max_from_prior`` from it, or an empty heatmap, is replaced by the prior
(``RoiPolicy.guard``). On real IDRiD photos with many exudates the network put three foveae
250-390 px off, where the prior was 85-105 px off (bench/results/fovea_cv_idrid.md).

Points are (x, y) in full-scale canonical pixels ("disc on the left, 1956 x 1934").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["ROI_ANCHORS", "DEFAULT_ROI", "RoiPolicy", "fit_disc_offset", "policy_of_models"]

ROI_ANCHORS = ("fixed", "disc")
#: The ``roi`` config section's defaults: the original fixed window.
DEFAULT_ROI = {"anchor": "fixed", "disc_offset": None, "max_shift": [360.0, 270.0], "max_from_prior": None}


@dataclass(frozen=True)
class RoiPolicy:
    """How to centre the ROI: ``anchor`` in ROI_ANCHORS; ``disc_offset`` (dx, dy) fovea - disc
    (needed by ``disc``; set by training); ``max_shift`` (x, y) farthest allowed distance of an
    anchored centre from the fixed one; ``max_from_prior``: the outlier guard's radius (None: off)."""

    anchor: str = "fixed"
    disc_offset: tuple[float, float] | None = None
    max_shift: tuple[float, float] = (360.0, 270.0)
    max_from_prior: float | None = None

    def __post_init__(self) -> None:
        if self.anchor not in ROI_ANCHORS:
            raise ValueError(f"roi.anchor must be one of {ROI_ANCHORS}, got {self.anchor!r}")
        if len(self.max_shift) != 2 or min(self.max_shift) <= 0:
            raise ValueError(f"roi.max_shift must be two positive numbers (x, y), got {self.max_shift!r}")
        if self.disc_offset is not None and (len(self.disc_offset) != 2
                                             or not np.all(np.isfinite(self.disc_offset))):
            raise ValueError(f"roi.disc_offset must be two finite numbers (dx, dy) or null, got {self.disc_offset!r}")
        if self.max_from_prior is not None and not self.max_from_prior > 0:
            raise ValueError(f"roi.max_from_prior must be a positive distance in px or null, got {self.max_from_prior!r}")

    @classmethod
    def from_config(cls, cfg: dict) -> "RoiPolicy":
        """The policy of a fovea config (its ``roi`` section; absent in configs written before it
        existed: the fixed window)."""
        r = {**DEFAULT_ROI, **(cfg.get("roi") or {})}
        off, guard = r["disc_offset"], r["max_from_prior"]
        try:
            return cls(str(r["anchor"]), None if off is None else (float(off[0]), float(off[1])),
                       (float(r["max_shift"][0]), float(r["max_shift"][1])), None if guard is None else float(guard))
        except (TypeError, IndexError, KeyError, ValueError) as err:
            if "roi." in str(err):
                raise
            raise ValueError(f"roi section {cfg.get('roi')!r}: expected anchor, disc_offset [dx, dy] or null, "
                             "max_shift [x, y], max_from_prior (px or null)") from None

    def as_config(self) -> dict:
        return {"anchor": self.anchor, "disc_offset": None if self.disc_offset is None else list(self.disc_offset),
                "max_shift": list(self.max_shift), "max_from_prior": self.max_from_prior}

    def guard(self, canon_xy: np.ndarray, centres: np.ndarray, anchored: np.ndarray, empty: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
        """The outlier guard: positions (N, 2) full-scale canonical where, on anchored images,
        a position farther than ``max_from_prior`` from its window centre (the prior), or an
        empty heatmap (``empty`` (N,) bool), is replaced by the centre; and ``guarded`` (N,) bool."""
        xy = np.array(canon_xy, dtype=np.float64).reshape(-1, 2)
        anchored = np.asarray(anchored, bool)
        if self.max_from_prior is None or not anchored.any():
            return xy, np.zeros(len(xy), bool)
        with np.errstate(invalid="ignore"):
            far = ~(np.hypot(*(xy - centres).T) <= self.max_from_prior)      # NaN positions count as far
        guarded = anchored & (far | np.asarray(empty, bool))
        xy[guarded] = np.asarray(centres, np.float64)[guarded]
        return xy, guarded

    def centres(self, canons: Sequence, fixed_centre: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """ROI centres (N, 2) full-scale canonical for canonical images ``canons``
        (CanonicalImage) and ``anchored`` (N,) bool: False where the fixed centre was used."""
        n = len(canons)
        fixed = np.tile(np.asarray(fixed_centre, np.float64), (n, 1))
        if self.anchor == "fixed" or not n:
            return fixed, np.zeros(n, bool)
        if self.disc_offset is None:
            raise ValueError("roi.anchor 'disc' needs roi.disc_offset (training sets it from the training images)")
        disc = np.array([c.disc if getattr(c, "disc", None) is not None else (np.nan, np.nan) for c in canons],
                        np.float64)
        cand = disc + np.asarray(self.disc_offset)
        ok = np.all(np.isfinite(cand), axis=1) & np.all(np.abs(cand - fixed) <= np.asarray(self.max_shift), axis=1)
        return np.where(ok[:, None], cand, fixed), ok


def fit_disc_offset(items: Sequence) -> tuple[float, float]:
    """Median (dx, dy) of fovea - detected disc over training ``items`` (FoveaItem), full-scale
    canonical px. ValueError when no item has a detected disc."""
    pairs = [(it.fovea, it.canon.disc) for it in items if getattr(it.canon, "disc", None) is not None]
    if not pairs:
        raise ValueError("roi.anchor 'disc': no training image has a detected optic disc to learn the "
                         "disc-to-fovea offset from; use roi.anchor=fixed")
    d = np.array([np.asarray(f, np.float64) - np.asarray(c, np.float64) for f, c in pairs])
    return float(np.median(d[:, 0])), float(np.median(d[:, 1]))


def policy_of_models(cfgs: Sequence[dict]) -> RoiPolicy:
    """One policy for an ensemble: every model must use the same anchor; disc offsets (each
    learned on its fold's training images) are averaged."""
    pols = [RoiPolicy.from_config(c) for c in cfgs]
    if len({p.anchor for p in pols}) > 1:
        raise ValueError(f"the ensemble mixes ROI anchors {sorted({p.anchor for p in pols})}: use models "
                         "trained with one roi.anchor")
    first = pols[0]
    if first.anchor == "fixed":
        return first
    if any(p.disc_offset is None for p in pols):
        raise ValueError("a model with roi.anchor 'disc' has no roi.disc_offset in its config.yml")
    off = np.mean([p.disc_offset for p in pols], axis=0)
    return RoiPolicy(first.anchor, (float(off[0]), float(off[1])), first.max_shift, first.max_from_prior)
