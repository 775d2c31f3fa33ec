"""Reading photos ahead (issue 20.4): ``data.read_ahead`` keeps the order and hands exceptions over in
place; ``geometry.sharing_small`` gives the detectors the same downscaled copy, made once."""
from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from gamma_kit import geometry
from gamma_kit.data import read_ahead


def test_results_in_order_with_exceptions_in_place():
    def fn(k):
        time.sleep(0.01 * (5 - k % 5))          # later items finish first
        if k == 3:
            raise ValueError("photo 3 is broken")
        return k * k, threading.current_thread().name

    got = list(read_ahead(range(8), fn, workers=2, ahead=3))
    assert [k for k, _ in got] == list(range(8))
    assert isinstance(got[3][1], ValueError) and str(got[3][1]) == "photo 3 is broken"
    assert [r[0] for k, r in got if k != 3] == [k * k for k in range(8) if k != 3]
    assert all(r[1].startswith("read_ahead") for k, r in got if k != 3)     # not the caller's thread


def test_leaving_early_starts_no_more_than_ahead():
    started = []

    def fn(k):
        started.append(k)
        return k

    gen = read_ahead(range(100), fn, workers=1, ahead=2)
    assert next(gen) == (0, 0)
    gen.close()
    assert len(started) <= 4                      # the one used, and at most ahead + 1 more


def test_sharing_small_gives_the_same_answers_from_one_downscale(monkeypatch):
    rng = np.random.default_rng(0)
    img = np.zeros((600, 900, 3), np.uint8)
    cv2.circle(img, (450, 300), 280, (120, 60, 30), -1)
    cv2.circle(img, (300, 280), 40, (250, 230, 200), -1)              # a bright disc left of centre
    img = np.clip(img.astype(int) + rng.integers(0, 8, img.shape), 0, 255).astype(np.uint8)
    plain_fov, plain_disc = geometry.detect_fov(img), geometry.find_disc(img)
    calls = []
    real = cv2.resize
    monkeypatch.setattr(geometry.cv2, "resize", lambda *a, **k: calls.append(1) or real(*a, **k))
    with geometry.sharing_small(img):
        fov = geometry.detect_fov(img)
        disc = geometry.find_disc(img, fov)
    assert len(calls) == 1
    assert fov == plain_fov and disc.xy == plain_disc.xy and disc.diameter == plain_disc.diameter
    other = img.copy()
    with geometry.sharing_small(img):            # another array is never served the shared copy
        geometry.detect_fov(img)
        assert geometry.find_disc(other).xy == plain_disc.xy
    assert len(calls) == 3
    geometry.detect_fov(img)                      # outside the block nothing is kept
    assert len(calls) == 4
    with pytest.raises(ValueError):
        geometry._small(np.zeros((5, 5), np.uint8))
