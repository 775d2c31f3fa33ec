"""Clean a predicted label map, and draw it: post-processing steps and outline overlays.

Label maps are (H, W) ``uint8`` with 0 = cup, 1 = disc rim, 2 = background (``predictor``'s
``CUP``/``RIM``/``BACKGROUND``); masks for overlays are GAMMA's 0 / 128 / 255, read through
``metrics.disc_of`` / ``metrics.cup_of``.
"""
from __future__ import annotations

import cv2
import numpy as np

from gamma_kit.geometry import largest_component
from gamma_kit.metrics import cup_of, disc_of
from gamma_kit.seg.prepare import BACKGROUND, CUP, RIM

__all__ = ["POSTPROCESS_STEPS", "DEFAULT_POSTPROCESS", "postprocess_labels", "parse_postprocess", "overlay",
           "PRED_COLOUR", "GT_COLOUR"]


def _largest_component(binary: np.ndarray) -> np.ndarray:
    part = largest_component(binary)
    return np.zeros(binary.shape, bool) if part is None else part.mask


def _fill_holes(binary: np.ndarray) -> np.ndarray:
    """Fill the regions not 4-connected to the border (``scipy.ndimage.binary_fill_holes``)."""
    from scipy import ndimage

    return ndimage.binary_fill_holes(binary)


def _ellipse(binary: np.ndarray) -> np.ndarray:
    """The ellipse ``cv2.fitEllipse`` fits to the outline of ``binary`` (kept as is below 5 points)."""
    contours, _ = cv2.findContours(binary.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return binary
    pts = max(contours, key=len)
    if len(pts) < 5:
        return binary
    out = np.zeros(binary.shape, np.uint8)
    cv2.ellipse(out, cv2.fitEllipse(pts), 1, -1)
    return out.astype(bool)


POSTPROCESS_STEPS = ("largest", "cup_in_disc", "fill", "ellipse")
DEFAULT_POSTPROCESS = ("largest", "cup_in_disc", "fill")


def postprocess_labels(labels: np.ndarray, steps=DEFAULT_POSTPROCESS) -> np.ndarray:
    """Clean a (H, W) 0/1/2 label map; ``steps`` any of:

    - ``largest``: keep the largest connected disc (and the largest cup component);
    - ``cup_in_disc``: drop cup pixels outside the disc;
    - ``fill``: fill holes in the disc and in the cup;
    - ``ellipse``: replace disc and cup by their fitted ellipses (cup clipped to the disc).

    The cup is always part of the disc afterwards when ``cup_in_disc`` or ``ellipse`` is on."""
    steps = tuple(steps)
    unknown = sorted(set(steps) - set(POSTPROCESS_STEPS))
    if unknown:
        raise ValueError(f"unknown post-processing step(s) {unknown}; choose from {POSTPROCESS_STEPS}")
    labels = np.asarray(labels)
    disc = labels <= RIM
    cup = labels == CUP
    if "largest" in steps:
        disc = _largest_component(disc)
    if "fill" in steps:
        disc = _fill_holes(disc)
    if "ellipse" in steps and disc.any():
        disc = _ellipse(disc)
    if "cup_in_disc" in steps or "ellipse" in steps or "largest" in steps:
        cup &= disc
    if "largest" in steps:
        cup = _largest_component(cup)
    if "fill" in steps:
        cup = _fill_holes(cup)
    if "ellipse" in steps and cup.any():
        cup = _ellipse(cup) & disc
    out = np.full(labels.shape, BACKGROUND, np.uint8)
    out[disc] = RIM
    out[cup] = CUP
    return out


def parse_postprocess(text: str | bool | None) -> tuple[str, ...] | None:
    """CLI value -> steps: None/""/"none" = off, "default"/True = ``DEFAULT_POSTPROCESS``,
    else a comma list of ``POSTPROCESS_STEPS``."""
    if text is None or text is False or text in ("", "none", "off"):
        return None
    if text is True or text == "default":
        return DEFAULT_POSTPROCESS
    steps = tuple(t.strip() for t in str(text).split(",") if t.strip())
    unknown = sorted(set(steps) - set(POSTPROCESS_STEPS))
    if unknown:
        raise ValueError(f"--postprocess: unknown step(s) {unknown}; choose from {', '.join(POSTPROCESS_STEPS)}, "
                         "'default' or 'none'")
    return steps


PRED_COLOUR = (255, 255, 0)   # yellow: prediction
GT_COLOUR = (0, 255, 0)       # green: ground truth


def overlay(image: np.ndarray, pred_mask: np.ndarray, gt_mask: np.ndarray | None = None,
            thickness: int | None = None) -> np.ndarray:
    """RGB (H, W, 3) copy of ``image`` with disc and cup outlines: prediction yellow, truth green."""
    out = np.ascontiguousarray(image.copy())
    t = thickness or max(1, round(max(image.shape[:2]) / 400))
    for mask, colour in ((gt_mask, GT_COLOUR), (pred_mask, PRED_COLOUR)):
        if mask is None:
            continue
        for structure in (disc_of(mask), cup_of(mask)):
            contours, _ = cv2.findContours(structure.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(out, contours, -1, colour, t)
    return out
