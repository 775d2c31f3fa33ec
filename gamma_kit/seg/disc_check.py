"""Stage 2's check of its own answer: does the disc segmented in a crop look like the optic disc the
crop was centred on, and how much (to choose between crops at stage 1's candidate places).

``disc_doubt`` names what is wrong (no disc, a tiny one, one filling the crop, one far from the crop's
centre), "" when nothing is; ``disc_likeness`` scores a crop's soft-max: 0 when doubted, else the mean
disc probability over the segmented disc (a weak, hesitant disc scores low). Label maps are (h, w)
``uint8`` with ``prepare.CUP`` / ``RIM`` / ``BACKGROUND``.
"""
from __future__ import annotations

import numpy as np

from gamma_kit.geometry import largest_component
from gamma_kit.seg.prepare import BACKGROUND, RIM

__all__ = ["disc_doubt", "disc_likeness", "MIN_DISC_OF_EXPECTED", "MAX_DISC_SHARE", "MAX_CENTRE_OFFSET"]


#: ``disc_doubt``'s limits. Crops are centred on stage 1's disc (training jitter: up to 1/8 of the
#: side per axis), its diameter 1/factor of the side: a factor-2 crop is about a fifth disc (pi/16).
MIN_DISC_OF_EXPECTED = 0.35   # a disc narrower than this share of the expected diameter is tiny
MAX_DISC_SHARE = 0.6          # a disc over this share of the crop's area fills it
MAX_CENTRE_OFFSET = 0.3       # a disc centre farther than this share of the side from the crop's centre


def disc_doubt(crop_labels: np.ndarray, expected_diameter: float | None = None) -> str:
    """Why the disc segmented in a square crop (labels 0/1/2) is implausible, or "" when it looks
    like a disc: no disc pixel; a largest disc narrower (area-equivalent diameter) than
    ``MIN_DISC_OF_EXPECTED`` x ``expected_diameter`` (crop px, when known); a disc over
    ``MAX_DISC_SHARE`` of the crop; a centre farther than ``MAX_CENTRE_OFFSET`` x the side from the
    crop's centre."""
    labels = np.asarray(crop_labels)
    h, w = labels.shape
    part = largest_component(labels <= RIM)
    if part is None:
        return "no disc segmented in the crop"
    diameter = 2.0 * np.sqrt(part.area / np.pi)
    if expected_diameter and diameter < MIN_DISC_OF_EXPECTED * expected_diameter:
        return f"tiny disc segmented ({diameter:.0f} px across, about {expected_diameter:.0f} px expected)"
    share = part.area / float(h * w)
    if share > MAX_DISC_SHARE:
        return f"the segmented disc fills {share:.0%} of the crop"
    off = float(np.hypot(part.centre[0] - w / 2, part.centre[1] - h / 2)) / max(h, w)
    if off > MAX_CENTRE_OFFSET:
        return f"the segmented disc lies {off:.2f} x the crop side from its centre"
    return ""


def disc_likeness(prob: np.ndarray, expected_diameter: float | None = None) -> tuple[float, str]:
    """(score 0..1, doubt) of a crop's soft-max ``prob`` (C, h, w) at the network's size:
    ``disc_doubt`` of its arg-max labels (``expected_diameter`` in those px), and, when nothing is
    doubted, the mean probability of disc (cup + rim) over its largest disc component."""
    labels = prob.argmax(axis=0).astype(np.uint8)
    doubt = disc_doubt(labels, expected_diameter)
    if doubt:
        return 0.0, doubt
    part = largest_component(labels <= RIM)
    return float((1.0 - prob[BACKGROUND])[part.mask].mean()), ""
