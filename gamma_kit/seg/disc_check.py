"""Stage 2's check of its own answer: does the disc segmented in a crop look like the optic disc the
crop was centred on, and how much (to choose between crops at stage 1's candidate places).

``verdict`` names what is wrong (no disc, a tiny one, one filling the crop, one far from the crop's
centre; ``disc_doubt`` is its one line), nothing when nothing is; ``disc_likeness`` also scores a crop's
soft-max: 0 when doubted, else the mean disc probability over the segmented disc (a weak, hesitant disc
scores low). A disc that fills the crop is where the crop is, segmented too large; the other doubts say
the disc may be elsewhere (``Verdict.elsewhere``), which is when the predictor looks at other places. Label maps are (h, w)
``uint8`` with ``prepare.CUP`` / ``RIM`` / ``BACKGROUND``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from gamma_kit.geometry import largest_component
from gamma_kit.seg.prepare import BACKGROUND, RIM

__all__ = ["Verdict", "DOUBTS", "verdict", "disc_doubt", "disc_likeness", "MIN_DISC_OF_EXPECTED", "MAX_DISC_SHARE",
           "MAX_CENTRE_OFFSET"]

DOUBTS = ("none", "tiny", "fills", "off_centre")   # Verdict.kind when the disc looks wrong


#: ``disc_doubt``'s limits. Crops are centred on stage 1's disc (training jitter: up to 1/8 of the
#: side per axis), its diameter 1/factor of the side: a factor-2 crop is about a fifth disc (pi/16).
MIN_DISC_OF_EXPECTED = 0.35   # a disc narrower than this share of the expected diameter is tiny
MAX_DISC_SHARE = 0.6          # a disc over this share of the crop's area fills it
MAX_CENTRE_OFFSET = 0.3       # a disc centre farther than this share of the side from the crop's centre


@dataclass(frozen=True)
class Verdict:
    """``disc_check``'s verdict on a crop: ``kind`` ("" when the disc looks right, else one of
    ``DOUBTS``), ``note`` (one line saying why), ``centre`` (x, y) of the largest disc component in crop
    px (None without one) and ``score`` (``disc_likeness``; 0 when doubted)."""

    kind: str = ""
    note: str = ""
    centre: tuple[float, float] | None = None
    score: float = 0.0

    @property
    def elsewhere(self) -> bool:
        """The doubt says the disc is not (all) in the crop: none, a tiny one, or one off its centre; a
        disc that fills the crop is there, only segmented too large."""
        return self.kind in ("none", "tiny", "off_centre")


def verdict(crop_labels: np.ndarray, expected_diameter: float | None = None) -> Verdict:
    """The ``Verdict`` on a square crop's label map (0/1/2), ``score`` left 0: no disc pixel; a largest
    disc narrower (area-equivalent diameter) than ``MIN_DISC_OF_EXPECTED`` x ``expected_diameter``
    (crop px, when known); a disc over ``MAX_DISC_SHARE`` of the crop; a centre farther than
    ``MAX_CENTRE_OFFSET`` x the side from the crop's centre."""
    labels = np.asarray(crop_labels)
    h, w = labels.shape
    part = largest_component(labels <= RIM)
    if part is None:
        return Verdict("none", "no disc segmented in the crop")
    diameter = 2.0 * np.sqrt(part.area / np.pi)
    if expected_diameter and diameter < MIN_DISC_OF_EXPECTED * expected_diameter:
        return Verdict("tiny", f"tiny disc segmented ({diameter:.0f} px across, about {expected_diameter:.0f} px "
                       "expected)", part.centre)
    share = part.area / float(h * w)
    if share > MAX_DISC_SHARE:
        return Verdict("fills", f"the segmented disc fills {share:.0%} of the crop", part.centre)
    off = float(np.hypot(part.centre[0] - w / 2, part.centre[1] - h / 2)) / max(h, w)
    if off > MAX_CENTRE_OFFSET:
        return Verdict("off_centre", f"the segmented disc lies {off:.2f} x the crop side from its centre",
                       part.centre)
    return Verdict("", "", part.centre)


def disc_doubt(crop_labels: np.ndarray, expected_diameter: float | None = None) -> str:
    """Why the disc segmented in a square crop (labels 0/1/2) is implausible, or "" when it looks like a
    disc (``verdict``'s note)."""
    return verdict(crop_labels, expected_diameter).note


def disc_likeness(prob: np.ndarray, expected_diameter: float | None = None) -> Verdict:
    """The ``Verdict`` on a crop's soft-max ``prob`` (C, h, w) at the network's size (its arg-max labels,
    ``expected_diameter`` in those px) with ``score``: 0 when doubted, else the mean probability of disc
    (cup + rim) over its largest disc component."""
    labels = prob.argmax(axis=0).astype(np.uint8)
    v = verdict(labels, expected_diameter)
    if v.kind:
        return v
    part = largest_component(labels <= RIM)
    return replace(v, score=float((1.0 - prob[BACKGROUND])[part.mask].mean()))
