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
  disc-to-fovea offset learned from the training set (``fit_disc_prior``: the median of
  fovea - disc over the training images, full-scale canonical px; on IDRiD about
  (718, 93), spread 47 x 54 px, so the fovea lies within about 170 px of the window centre).
  An image falls back to the fixed centre when no disc was found, or when the anchored
  centre lies more than ``max_shift`` (per axis) from the fixed centre: a disc detected in
  the wrong place must not move the window off the macula.

- ``auto`` (issue 19.3): the fixed window, moved only as far as it takes to keep the
  disc-based estimate (disc + offset, as above) within ``reach - margin_sigmas * prior_spread``
  of its centre, per axis. ``reach`` is the training crops' shift (``data.shift``, (240, 180)):
  the farthest a fovea sat from a training crop's centre. ``prior_spread`` is learned from the
  fold's training photos with the offset (``fit_disc_prior``: 1.4826 x the median absolute
  deviation of fovea - estimate per axis). On a camera whose foveae sit where the original
  window expects them (GAMMA) the window stays where it was; where they do not (IDRiD: 8 of 103
  outside it) it follows the disc. The estimate is the guard's prior on every photo that has one.

Outlier guard (``max_from_prior``, px; null = off; ``auto``: ``GUARD_SIGMAS`` x the larger learned
spread, at least ``GUARD_MIN_PX``, so a camera whose disc predicts its fovea loosely gets a looser
guard): on a photo with a disc-based estimate of the fovea (the prior; on IDRiD within about 170 px
of it), a decoded position farther than the radius from it, or an empty heatmap, is replaced by the
prior (``RoiPolicy.guard``). On real IDRiD photos with many exudates the network put three foveae
250-390 px off, where the prior was 85-105 px off (bench/results/fovea_cv_idrid.md).

Points are (x, y) in full-scale canonical pixels ("disc on the left, 1956 x 1934").
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

__all__ = ["ROI_ANCHORS", "DEFAULT_ROI", "GUARD_SIGMAS", "GUARD_MIN_PX", "RoiPolicy", "fit_disc_prior",
           "policy_of_models"]

ROI_ANCHORS = ("fixed", "disc", "auto")
#: The ``roi`` config section's defaults: the original fixed window.
DEFAULT_ROI = {"anchor": "fixed", "disc_offset": None, "max_shift": [360.0, 270.0], "max_from_prior": None,
               "prior_spread": None, "margin_sigmas": 2.0}
#: ``max_from_prior: auto``: the guard's radius, GUARD_SIGMAS learned spreads but never under GUARD_MIN_PX
#: (IDRiD: 3 x ~60 px -> 250; GAMMA-like synthetic photos: 3 x ~85 px = ~255; bench/results/fovea_cv_*.md).
#: The floor keeps a camera whose disc predicts the fovea tightly from replacing a good network answer
#: by an estimate that is itself a few spreads off.
GUARD_SIGMAS = 3.0
GUARD_MIN_PX = 250.0
#: The training crops' default shift (SPEC 2), the reach of the ``auto`` rule when a config names none.
DEFAULT_REACH = (240.0, 180.0)


@dataclass(frozen=True)
class RoiPolicy:
    """How to centre the ROI: ``anchor`` in ROI_ANCHORS; ``disc_offset`` (dx, dy) fovea - disc
    (needed by ``disc`` and ``auto``; set by training); ``max_shift`` (x, y) farthest allowed
    distance of a disc-based estimate from the fixed centre (farther: no estimate);
    ``max_from_prior``: the outlier guard's radius (None: off; "auto": ``GUARD_SIGMAS`` x the
    larger of ``prior_spread``, at least ``GUARD_MIN_PX``); ``prior_spread`` (sx, sy): how far training foveae lie from
    their estimate (``auto`` and the auto guard; set by training); ``margin_sigmas``: ``auto``
    keeps the estimate this many spreads inside ``reach`` (the training shift, ``data.shift``)."""

    anchor: str = "fixed"
    disc_offset: tuple[float, float] | None = None
    max_shift: tuple[float, float] = (360.0, 270.0)
    max_from_prior: float | str | None = None
    prior_spread: tuple[float, float] | None = None
    margin_sigmas: float = 2.0
    reach: tuple[float, float] = DEFAULT_REACH

    def __post_init__(self) -> None:
        if self.anchor not in ROI_ANCHORS:
            raise ValueError(f"roi.anchor must be one of {ROI_ANCHORS}, got {self.anchor!r}")
        if len(self.max_shift) != 2 or min(self.max_shift) <= 0:
            raise ValueError(f"roi.max_shift must be two positive numbers (x, y), got {self.max_shift!r}")
        if self.disc_offset is not None and (len(self.disc_offset) != 2
                                             or not np.all(np.isfinite(self.disc_offset))):
            raise ValueError(f"roi.disc_offset must be two finite numbers (dx, dy) or null, got {self.disc_offset!r}")
        if self.max_from_prior is not None and self.max_from_prior != "auto" and not (
                isinstance(self.max_from_prior, (int, float)) and self.max_from_prior > 0):
            raise ValueError(f"roi.max_from_prior must be a positive distance in px, auto or null, "
                             f"got {self.max_from_prior!r}")
        if self.prior_spread is not None and (len(self.prior_spread) != 2
                                              or not all(np.isfinite(v) and v >= 0 for v in self.prior_spread)):
            raise ValueError(f"roi.prior_spread must be two non-negative numbers (sx, sy) or null, "
                             f"got {self.prior_spread!r}")
        if not (np.isfinite(self.margin_sigmas) and self.margin_sigmas >= 0):
            raise ValueError(f"roi.margin_sigmas must be a number >= 0, got {self.margin_sigmas!r}")

    @classmethod
    def from_config(cls, cfg: dict) -> "RoiPolicy":
        """The policy of a fovea config (its ``roi`` section; absent in configs written before it
        existed: the fixed window)."""
        r = {**DEFAULT_ROI, **(cfg.get("roi") or {})}
        off, guard, spread = r["disc_offset"], r["max_from_prior"], r["prior_spread"]
        reach = (cfg.get("data") or {}).get("shift") or DEFAULT_REACH
        try:
            return cls(str(r["anchor"]), None if off is None else (float(off[0]), float(off[1])),
                       (float(r["max_shift"][0]), float(r["max_shift"][1])),
                       guard if guard in (None, "auto") else float(guard),
                       None if spread is None else (float(spread[0]), float(spread[1])),
                       float(r["margin_sigmas"]), (float(reach[0]), float(reach[1])))
        except (TypeError, IndexError, KeyError, ValueError) as err:
            if "roi." in str(err):
                raise
            raise ValueError(f"roi section {cfg.get('roi')!r}: expected anchor, disc_offset [dx, dy] or null, "
                             "max_shift [x, y], max_from_prior (px, auto or null), prior_spread [sx, sy] or "
                             "null, margin_sigmas") from None

    def as_config(self) -> dict:
        """The ``roi`` config section (``reach`` lives in ``data.shift``)."""
        return {"anchor": self.anchor, "disc_offset": None if self.disc_offset is None else list(self.disc_offset),
                "max_shift": list(self.max_shift), "max_from_prior": self.max_from_prior,
                "prior_spread": None if self.prior_spread is None else list(self.prior_spread),
                "margin_sigmas": self.margin_sigmas}

    @property
    def needs_fit(self) -> bool:
        """Whether training must still learn this policy's disc offset or spread."""
        if self.anchor == "fixed":
            return False
        wants_spread = self.anchor == "auto" or self.max_from_prior == "auto"
        return self.disc_offset is None or (wants_spread and self.prior_spread is None)

    def fitted(self, items: Sequence) -> "RoiPolicy":
        """This policy with the disc offset and spread learned from training ``items`` (FoveaItem)."""
        offset, spread = fit_disc_prior(items)
        return replace(self, disc_offset=offset, prior_spread=spread)

    @property
    def guard_radius(self) -> float | None:
        """The outlier guard's radius in px (None: off)."""
        if self.max_from_prior != "auto":
            return self.max_from_prior
        if self.prior_spread is None:
            raise ValueError("roi.max_from_prior auto needs roi.prior_spread (training sets it from the training "
                             "images)")
        return max(GUARD_MIN_PX, GUARD_SIGMAS * max(self.prior_spread))

    def guard(self, canon_xy: np.ndarray, priors: np.ndarray, anchored: np.ndarray, empty: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
        """The outlier guard: positions (N, 2) full-scale canonical where, on images with a prior
        (``anchored``), a position farther than the guard radius from the prior (the disc-based
        estimate), or an empty heatmap (``empty`` (N,) bool), is replaced by the prior; and
        ``guarded`` (N,) bool."""
        xy = np.array(canon_xy, dtype=np.float64).reshape(-1, 2)
        anchored = np.asarray(anchored, bool)
        if self.max_from_prior is None or not anchored.any():      # the fixed window has no prior to guard
            return xy, np.zeros(len(xy), bool)
        radius = self.guard_radius
        with np.errstate(invalid="ignore"):
            far = ~(np.hypot(*(xy - priors).T) <= radius)      # NaN positions count as far
        guarded = anchored & (far | np.asarray(empty, bool))
        xy[guarded] = np.asarray(priors, np.float64)[guarded]
        return xy, guarded

    def place(self, canons: Sequence, fixed_centre: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where the ROIs of canonical images ``canons`` (CanonicalImage) go: window centres
        (N, 2) full-scale canonical, priors (N, 2) (the disc-based estimates of the fovea, NaN
        where there is none) and ``anchored`` (N,) bool (a prior placed the window; False: the
        fixed window was used for want of one)."""
        n = len(canons)
        fixed = np.tile(np.asarray(fixed_centre, np.float64), (n, 1))
        if self.anchor == "fixed" or not n:
            return fixed, np.full((n, 2), np.nan), np.zeros(n, bool)
        if self.disc_offset is None:
            raise ValueError(f"roi.anchor {self.anchor!r} needs roi.disc_offset (training sets it from the "
                             "training images)")
        disc = np.array([c.disc if getattr(c, "disc", None) is not None else (np.nan, np.nan) for c in canons],
                        np.float64)
        cand = disc + np.asarray(self.disc_offset)
        ok = np.all(np.isfinite(cand), axis=1) & np.all(np.abs(cand - fixed) <= np.asarray(self.max_shift), axis=1)
        priors = np.where(ok[:, None], cand, np.nan)
        if self.anchor == "disc":
            return np.where(ok[:, None], cand, fixed), priors, ok
        if self.prior_spread is None:
            raise ValueError("roi.anchor 'auto' needs roi.prior_spread (training sets it from the training images)")
        margin = np.clip(np.asarray(self.reach) - self.margin_sigmas * np.asarray(self.prior_spread), 0.0, None)
        moved = cand - np.clip(cand - fixed, -margin, margin)     # the fixed centre while the estimate is in reach
        return np.where(ok[:, None], moved, fixed), priors, ok


def fit_disc_prior(items: Sequence) -> tuple[tuple[float, float], tuple[float, float]]:
    """The disc-to-fovea offset, the median (dx, dy) of fovea - detected disc over training
    ``items`` (FoveaItem), and the spread (sx, sy) of the foveae around disc + offset, 1.4826 x
    the median absolute deviation per axis (a standard deviation that a few wrong discs do not
    inflate); full-scale canonical px. ValueError when no item has a detected disc."""
    pairs = [(it.fovea, it.canon.disc) for it in items if getattr(it.canon, "disc", None) is not None]
    if not pairs:
        raise ValueError("roi.anchor 'disc'/'auto': no training image has a detected optic disc to learn the "
                         "disc-to-fovea offset from; use roi.anchor=fixed")
    d = np.array([np.asarray(f, np.float64) - np.asarray(c, np.float64) for f, c in pairs])
    med = np.median(d, axis=0)
    mad = 1.4826 * np.median(np.abs(d - med), axis=0)
    return (float(med[0]), float(med[1])), (float(mad[0]), float(mad[1]))


def policy_of_models(cfgs: Sequence[dict]) -> RoiPolicy:
    """One policy for an ensemble: every model must use the same anchor; disc offsets and
    spreads (each learned on its fold's training images) are averaged."""
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
    spread = (None if any(p.prior_spread is None for p in pols)
              else tuple(float(v) for v in np.mean([p.prior_spread for p in pols], axis=0)))
    return replace(first, disc_offset=(float(off[0]), float(off[1])), prior_spread=spread)
