"""Write a synthetic data set in the GAMMA task 2 and task 3 layouts (SPEC 1).

::

    OUT/task2_Fovea_localization/training/fundus color images/0001.jpg ...
    OUT/task2_Fovea_localization/training/fovea_localization_training_GT.xlsx    # data, Fovea_X, Fovea_Y
    OUT/task2_Fovea_localization/testing/fundus color images/0101.jpg ...        # ids continue after training
    OUT/task2_Fovea_localization/testing_GT/fovea_localization_testing_GT.xlsx
    OUT/task3_disc_cup_segmentation/training/fundus color images/0001.jpg ...    # the same photos as task 2
    OUT/task3_disc_cup_segmentation/training/Disc_Cup_Mask/0001.bmp ...          # 0 cup, 128 rim, 255 background
    OUT/task3_disc_cup_segmentation/testing/fundus color images/0101.jpg ...
    OUT/task3_disc_cup_segmentation/testing_GT/Disc_Cup_Mask/0101.bmp ...
    OUT/synth_meta.csv    # id, split, width, height, disc_side, disc_x, disc_y, fovea_x, fovea_y, disc_diameter, vcdr

In ``synth_meta.csv``, ``disc_x, disc_y`` is the centroid of the mask's disc,
``disc_diameter`` the geometric-mean diameter of the painted disc and ``vcdr`` the
vertical cup-to-disc ratio of the mask, all in px of the photo.

Test ground truth sits outside ``testing/`` (in ``testing_GT/``) so the test folders
look like the challenge's while local scoring stays possible. Points are (x, y) =
(column, row) in continuous pixel coordinates, as everywhere in the kit.

Determinism: image ``k`` (0-based over training then testing) is drawn from
``numpy.random.default_rng([seed, k])``; sizes and eye sides are balanced within each
split and shuffled from the seed. The same arguments give byte-identical files (the
xlsx is written with fixed zip and document timestamps).

Safety: ``out`` must not exist or be an empty folder, in a writable place (checked before
any rendering). Everything is written into a hidden staging folder next to it and renamed
into place at the end, so an interrupted run leaves no partial data set under ``out``; an
``OSError`` (read-only folder, full disk) names ``--out OUT``, never the staging folder.
"""
from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from gamma_kit.data import GT_COLUMNS, IMAGE_DIR, MASK_DIRS
from gamma_kit.safety import check_writable, with_path
from gamma_kit.synth.render import SIDES, render_fundus

__all__ = ["generate", "parse_sizes", "split_ids", "balanced_assignment", "DEFAULT_SIZES", "TASK2_DIR", "TASK3_DIR",
           "META_COLUMNS"]

DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((2992, 2000), (1956, 1934))   # the two GAMMA cameras, (w, h)
TASK2_DIR = "task2_Fovea_localization"
TASK3_DIR = "task3_disc_cup_segmentation"
GT_NAME = "fovea_localization_{split}_GT.xlsx"
META_NAME = "synth_meta.csv"
META_COLUMNS = ("id", "split", "width", "height", "disc_side", "disc_x", "disc_y", "fovea_x", "fovea_y",
                "disc_diameter", "vcdr")
SPLITS = ("training", "testing")
MIN_SIZE = 32
FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)            # the earliest time a zip entry can hold
FIXED_DOC_TIME = "2021-01-01T00:00:00Z"


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    """Parse ``"2992x2000,1956x1934"`` into ((2992, 2000), (1956, 1934)) as (w, h)."""
    sizes = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", part)
        if not match:
            raise ValueError(f"--sizes: expected comma-separated WIDTHxHEIGHT like 2992x2000,1956x1934, got {text!r}")
        w, h = int(match.group(1)), int(match.group(2))
        if w < MIN_SIZE or h < MIN_SIZE:
            raise ValueError(f"--sizes: {w}x{h} is too small (at least {MIN_SIZE}x{MIN_SIZE})")
        sizes.append((w, h))
    return tuple(sizes)


def split_ids(n_train: int, n_test: int) -> dict[str, list[str]]:
    """Image ids per split: training 0001..N, testing continuing after it (at least 4 digits)."""
    width = max(4, len(str(n_train + n_test)))
    ids = [str(i + 1).zfill(width) for i in range(n_train + n_test)]
    return {"training": ids[:n_train], "testing": ids[n_train:]}


def balanced_assignment(rng: np.random.Generator, n: int, sizes: Sequence[tuple[int, int]]
                        ) -> list[tuple[tuple[int, int], str]]:
    """``n`` (size, disc side) pairs in random order, balanced: sizes in turn, eye sides
    alternating, and every (size, side) pair once per ``2 * len(sizes)`` images (so two
    images already cover both sides, and two sizes)."""
    i = np.arange(n)
    size_idx = i % len(sizes)
    # with an even number of sizes, plain alternation would tie each size to one side
    side_idx = (i + (i // len(sizes) if len(sizes) % 2 == 0 else 0) + rng.integers(2)) % 2
    return [(sizes[size_idx[k]], SIDES[side_idx[k]]) for k in rng.permutation(n)]


def _deterministic_xlsx(df: pd.DataFrame) -> bytes:
    """``df`` as .xlsx bytes that depend only on its content (openpyxl stamps the save time
    into docProps/core.xml and every zip entry)."""
    buf = io.BytesIO()
    df.to_excel(buf, index=False, engine="openpyxl")
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "docProps/core.xml":
                data = re.sub(rb"(<dcterms:(created|modified)[^>]*>)[^<]*", rb"\g<1>" + FIXED_DOC_TIME.encode(), data)
            entry = zipfile.ZipInfo(info.filename, FIXED_ZIP_TIME)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = info.external_attr
            dst.writestr(entry, data)
    return out.getvalue()


def _encode(suffix: str, array: np.ndarray, params: Sequence[int] = ()) -> bytes:
    """Encode a BGR or grey ``uint8`` array with OpenCV (``suffix`` ".jpg" or ".bmp")."""
    ok, buf = cv2.imencode(suffix, array, list(params))
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 array
        raise ValueError(f"OpenCV could not encode a synthetic {suffix} image")
    return buf.tobytes()


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} exists and is not a folder; give a new folder")
    if out.is_dir() and any(out.iterdir()):
        raise FileExistsError(f"--out {out} already exists and is not empty; synth never writes into "
                              "existing data: give a new or empty folder")


def generate(out: str | os.PathLike, n_train: int, n_test: int, seed: int,
             sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES, progress: bool = True) -> Path:
    """Write ``n_train`` training and ``n_test`` testing images (with ground truth) under ``out``.

    ``sizes`` are (w, h) camera sizes, used about equally often; each split has both eye
    sides about half and half. A split with 0 images still gets its folders and a GT
    table with only the header. Returns ``out``. Raises ``ValueError`` for bad counts,
    seed or sizes and ``FileExistsError`` if ``out`` holds anything.
    """
    for name, n in (("--train", n_train), ("--test", n_test), ("--seed", seed)):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {n!r}")
    if n_train + n_test == 0:
        raise ValueError("--train and --test are both 0: nothing to generate")
    sizes = tuple((int(w), int(h)) for w, h in sizes)
    if not sizes or any(w < MIN_SIZE or h < MIN_SIZE for w, h in sizes):
        raise ValueError(f"sizes must be a non-empty list of (w, h) of at least {MIN_SIZE} px, got {sizes}")
    out = Path(out).expanduser()
    _check_out(out)
    check_writable(out, "--out")
    staging = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        _write_dataset(staging, n_train, n_test, int(seed), sizes, progress)
        _check_out(out)            # re-check: something may have appeared while we rendered
        if out.is_dir():
            out.rmdir()
        staging.rename(out)
    except BaseException as exc:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno is not None:   # the user's --out, not the staging name
            raise with_path(exc, f"--out {out}") from exc
        raise
    return out


def _write_dataset(root: Path, n_train: int, n_test: int, seed: int, sizes: tuple[tuple[int, int], ...],
                   progress: bool) -> None:
    """Render and write every file of the layout under ``root`` (a fresh folder)."""
    ids = split_ids(n_train, n_test)
    t2, t3 = root / TASK2_DIR, root / TASK3_DIR
    folders = {
        "training": (t2 / "training", t3 / "training" / IMAGE_DIR, t3 / "training" / MASK_DIRS[0]),
        "testing": (t2 / "testing_GT", t3 / "testing" / IMAGE_DIR, t3 / "testing_GT" / MASK_DIRS[0]),
    }
    for split in SPLITS:
        (t2 / split / IMAGE_DIR).mkdir(parents=True)
        for folder in folders[split]:
            folder.mkdir(parents=True, exist_ok=True)

    meta = []
    jobs = [(split, i, size, side) for split_no, split in enumerate(SPLITS)
            for i, (size, side) in zip(ids[split], balanced_assignment(
                np.random.default_rng([seed, 1_000_003, split_no]), len(ids[split]), sizes))]
    for k, (split, image_id, (w, h), side) in enumerate(tqdm(jobs, desc="synth", unit="img", disable=not progress)):
        sample = render_fundus(np.random.default_rng([seed, k]), w, h, side)
        jpg = _encode(".jpg", cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR),
                      (cv2.IMWRITE_JPEG_QUALITY, sample.jpeg_quality))
        gt_dir, seg_images, mask_dir = folders[split]
        (t2 / split / IMAGE_DIR / f"{image_id}.jpg").write_bytes(jpg)
        (seg_images / f"{image_id}.jpg").write_bytes(jpg)
        (mask_dir / f"{image_id}.bmp").write_bytes(_encode(".bmp", sample.mask))
        meta.append((image_id, split, w, h, side, *np.round(sample.disc_xy, 3), *np.round(sample.fovea_xy, 3),
                     round(sample.disc_diameter, 3), round(sample.vcdr, 4)))

    table = pd.DataFrame(meta, columns=list(META_COLUMNS))
    for split in SPLITS:
        rows = table[table["split"] == split]
        gt = pd.DataFrame({GT_COLUMNS[0]: rows["id"].astype(str).to_numpy(),
                           GT_COLUMNS[1]: rows["fovea_x"].to_numpy(float),
                           GT_COLUMNS[2]: rows["fovea_y"].to_numpy(float)})
        (folders[split][0] / GT_NAME.format(split=split)).write_bytes(_deterministic_xlsx(gt))
    (root / META_NAME).write_text(table.to_csv(index=False), encoding="utf-8")
