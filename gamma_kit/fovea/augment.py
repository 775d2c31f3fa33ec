"""Photometric augmentation of fovea training crops (issue 19.3): the worst GAMMA photos are dark or hazy
(low contrast), and a network that only ever saw well-exposed crops loses its peak there. ``data.photometric``
(null = off, the original method) draws, per training crop, a gamma, a brightness factor and a haze
(a blend towards the crop's own mean colour). Prediction is unchanged.
"""
from __future__ import annotations

import numpy as np

__all__ = ["PHOTOMETRIC_KEYS", "check_photometric", "photometric"]

#: ``data.photometric`` keys (a mapping; null = off, the original): with probability ``prob`` a training
#: crop is darkened (``gamma`` drawn log-uniformly, applied to 0..1 values, then x ``brightness``) and
#: hazed (blended by ``haze`` towards its own mean colour: low contrast), each factor uniform in its range
PHOTOMETRIC_KEYS = ("prob", "brightness", "gamma", "haze")


def check_photometric(spec, where: str = "data.photometric") -> dict | None:
    """``spec`` validated (None: off), or ValueError naming ``where`` and what was expected."""
    if spec is None:
        return None
    if not isinstance(spec, dict) or set(spec) != set(PHOTOMETRIC_KEYS):
        raise ValueError(f"{where} must be null or a mapping of {list(PHOTOMETRIC_KEYS)}, got {spec!r}")
    out = {"prob": float(spec["prob"])}
    for key in PHOTOMETRIC_KEYS[1:]:
        lo, hi = (float(v) for v in spec[key])
        if not 0 <= lo <= hi or (key == "gamma" and lo == 0) or (key == "haze" and hi > 1):
            raise ValueError(f"{where}.{key} must be a range [low, high] with 0 {'<' if key == 'gamma' else '<='} "
                             f"low <= high{' <= 1' if key == 'haze' else ''}, got {spec[key]!r}")
        out[key] = (lo, hi)
    if not 0 <= out["prob"] <= 1:
        raise ValueError(f"{where}.prob must be in [0, 1], got {spec['prob']!r}")
    return out


def photometric(image: np.ndarray, rng: np.random.Generator, spec: dict) -> np.ndarray:
    """A (3, h, w) float32 0..255 crop darkened and hazed as ``spec`` (``check_photometric``) draws it
    from ``rng`` (four draws always, so the stream does not depend on ``prob``)."""
    apply, b, log_g, haze = rng.uniform(size=4)
    if apply >= spec["prob"]:
        return image
    lo, hi = spec["gamma"]
    gamma = float(np.exp(np.log(lo) + log_g * (np.log(hi) - np.log(lo))))
    bright = spec["brightness"][0] + b * (spec["brightness"][1] - spec["brightness"][0])
    haze = spec["haze"][0] + haze * (spec["haze"][1] - spec["haze"][0])
    x = np.power(image / 255.0, gamma) * (255.0 * bright)
    x = (1 - haze) * x + haze * x.mean(axis=(1, 2), keepdims=True)
    return np.clip(x, 0, 255).astype(np.float32)
