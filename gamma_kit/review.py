"""Review sheets: the photos of a submission as thumbnails, the most doubtful first, so that a person
checks a whole submission in a minute.

``review_sheets(entries, out_dir)`` writes ``out_dir/review_001.png``, ``review_002.png``, ...: a grid of
``per_page`` thumbnails per page, each captioned with its id and flags, sorted by the number of flags
(most first), then by id. An entry is ``ReviewEntry(id, path, flags, draw)``: ``draw(image) -> image``
marks the answer on the full-size RGB photo (the fovea point, the disc and cup outlines) before it is
shrunk. Photos are read one at a time; pages are written atomically.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from gamma_kit.data import read_image, write_image

__all__ = ["ReviewEntry", "review_sheets", "PER_PAGE", "THUMB_WIDTH"]

PER_PAGE = 20
THUMB_WIDTH = 300
_CAPTION = 34          # px under each thumbnail


@dataclass
class ReviewEntry:
    id: str
    path: Path
    flags: str
    draw: Callable[[np.ndarray], np.ndarray]


def _thumbnail(entry: ReviewEntry, width: int, height: int) -> np.ndarray:
    image = entry.draw(read_image(entry.path))
    h, w = image.shape[:2]
    f = min(width / w, height / h)
    small = cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    tile = np.full((height + _CAPTION, width, 3), 255, np.uint8)
    y0, x0 = (height - small.shape[0]) // 2, (width - small.shape[1]) // 2
    tile[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
    colour = (200, 0, 0) if entry.flags else (0, 120, 0)
    cv2.putText(tile, entry.id, (4, height + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(tile, (entry.flags or "no flag")[:48], (4, height + 28), cv2.FONT_HERSHEY_SIMPLEX, 0.38, colour, 1,
                cv2.LINE_AA)
    return tile


def review_sheets(entries: Sequence[ReviewEntry], out_dir: str | os.PathLike, per_page: int = PER_PAGE,
                  thumb_width: int = THUMB_WIDTH, cols: int = 5) -> list[Path]:
    """Write the review pages of ``entries`` into ``out_dir`` (see the module docstring); returns them."""
    order = sorted(entries, key=lambda e: (-len(e.flags.split()), e.id))
    height = round(thumb_width * 2 / 3)
    pages = []
    for n, start in enumerate(range(0, len(order), per_page), 1):
        tiles = [_thumbnail(e, thumb_width, height) for e in order[start:start + per_page]]
        rows = -(-len(tiles) // cols)
        sheet = np.full((rows * (height + _CAPTION), cols * thumb_width, 3), 255, np.uint8)
        for k, tile in enumerate(tiles):
            r, c = divmod(k, cols)
            sheet[r * (height + _CAPTION):(r + 1) * (height + _CAPTION), c * thumb_width:(c + 1) * thumb_width] = tile
        pages.append(write_image(Path(out_dir) / f"review_{n:03d}.png", sheet))
    return pages
