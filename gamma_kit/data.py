"""GAMMA data layer: find the challenge layouts, read images, masks and ground truth.

Layouts (SPEC 1), under a data root given by a flag or ``$GAMMA_DATA``::

    <task2 dir>/training/fundus color images/0001.jpg ...
    <task2 dir>/training/fovea_localization_training_GT.xlsx   # data, Fovea_X, Fovea_Y
    <task2 dir>/testing/fundus color images/0101.jpg ...
    <task3 dir>/training/fundus color images/0001.jpg ...
    <task3 dir>/training/Disc_Cup_Mask/0001.bmp ...            # or Disc_Cup_Masks; .bmp or .png

The root may be the task folder itself or any parent up to two levels above it.
Everything is keyed by image id, the file stem as a string (``"0001"``), never by
position. Images are RGB ``uint8`` (H, W, 3); masks are (H, W) ``uint8`` with values in
{0 = cup, 128 = disc rim, 255 = background}. Points are (x, y) = (column, row).

Every reader raises ``FileNotFoundError`` or ``ValueError`` naming the file and what
was expected. Writers go through a temporary file and ``os.replace``, so a crash never
leaves a half-written output, and nothing here deletes or modifies input files.
"""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np
import pandas as pd

__all__ = [
    "IMAGE_DIR", "MASK_DIRS", "MASK_VALUES", "IMAGE_EXTS", "GT_COLUMNS", "DATA_ENV",
    "resolve_data_root", "read_image", "read_mask", "present_values", "unexpected_mask_values",
    "image_size", "list_images", "read_fovea_gt",
    "find_task_dir", "FoveaSplit", "SegSplit", "load_fovea_split", "load_seg_split",
    "atomic_write_bytes", "atomic_write_text", "write_image", "write_fovea_csv",
]

DATA_ENV = "GAMMA_DATA"
IMAGE_DIR = "fundus color images"
MASK_DIRS = ("Disc_Cup_Mask", "Disc_Cup_Masks")
MASK_VALUES = (0, 128, 255)
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
MASK_EXTS = (".bmp", ".png")
GT_COLUMNS = ("data", "Fovea_X", "Fovea_Y")
TASK_MARKERS = {"fovea": "Fovea", "seg": "disc_cup"}


def resolve_data_root(path: str | os.PathLike | None = None) -> Path:
    """Return the data root from ``path`` or, if None, from ``$GAMMA_DATA``."""
    if path is None or str(path) == "":
        env = os.environ.get(DATA_ENV)
        if not env:
            raise ValueError(f"no data root given: pass --data-root DIR or set ${DATA_ENV} "
                             "(python -m gamma_kit.synth --out DIR writes a synthetic one)")
        path = env
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} does not exist or is not a folder")
    return root


def _decode(path: Path, flags: int) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    data = np.fromfile(str(path), dtype=np.uint8)  # np.fromfile + imdecode handles non-ASCII paths
    img = cv2.imdecode(data, flags) if data.size else None
    if img is None:
        raise ValueError(f"{path}: cannot be decoded as an image (corrupt, truncated or not an image file)")
    if path.suffix.lower() in (".jpg", ".jpeg") and not data[-2:].tobytes() == b"\xff\xd9":
        # libjpeg pads a truncated stream with grey and only warns; we refuse it.
        raise ValueError(f"{path}: JPEG is truncated (no end-of-image marker)")
    return img


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a colour image as RGB ``uint8`` of shape (H, W, 3)."""
    path = Path(path)
    img = _decode(path, cv2.IMREAD_COLOR)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image file, read from its header (no full decode)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path}: cannot be read as an image ({exc})") from exc


def present_values(array: np.ndarray) -> np.ndarray:
    """The distinct values of ``array``, sorted (``np.unique``; for uint8 a 256-bin histogram,
    ~100x faster on a full-size mask, where ``np.unique`` sorts 6 M pixels)."""
    a = np.asarray(array)
    if a.dtype == np.uint8 and a.size:
        hist = cv2.calcHist([np.ascontiguousarray(a).reshape(1, -1)], [0], None, [256], [0, 256])
        return np.flatnonzero(hist.ravel()).astype(np.uint8)
    return np.unique(a)


def unexpected_mask_values(mask: np.ndarray) -> np.ndarray:
    """Sorted values of ``mask`` outside ``MASK_VALUES`` (empty for a valid GAMMA mask)."""
    return np.setdiff1d(present_values(mask), MASK_VALUES)


def read_mask(path: str | os.PathLike, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Read a GAMMA disc/cup mask as (H, W) ``uint8`` with values in {0, 128, 255}.

    A three-channel file is accepted only if its channels are equal. ``expected_size`` is
    the (width, height) of the matching image; a mismatch is an error.
    """
    path = Path(path)
    mask = _decode(path, cv2.IMREAD_UNCHANGED)
    if mask.ndim == 3:
        if mask.shape[2] == 4:
            mask = mask[..., :3]
        if not (np.array_equal(mask[..., 0], mask[..., 1]) and np.array_equal(mask[..., 0], mask[..., 2])):
            raise ValueError(f"{path}: mask must be single-channel (grey), got a colour image")
        mask = mask[..., 0]
    if mask.dtype != np.uint8:
        raise ValueError(f"{path}: mask must be 8-bit, got {mask.dtype}")
    bad = unexpected_mask_values(mask)
    if bad.size:
        raise ValueError(f"{path}: mask values must be in {{0, 128, 255}} (0 cup, 128 disc, 255 background); "
                         f"found {bad[:10].tolist()}{' ...' if bad.size > 10 else ''}")
    if expected_size is not None and (mask.shape[1], mask.shape[0]) != tuple(expected_size):
        raise ValueError(f"{path}: mask size {mask.shape[1]}x{mask.shape[0]} differs from its image "
                         f"{expected_size[0]}x{expected_size[1]} (w x h)")
    return mask


def list_images(folder: str | os.PathLike, exts: Iterable[str] = IMAGE_EXTS) -> dict[str, Path]:
    """Map image id (file stem) -> path for the image files in ``folder``, sorted by id."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    exts = tuple(e.lower() for e in exts)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts
                   and not p.name.startswith("."))
    if not files:
        raise ValueError(f"{folder}: no image files ({', '.join(exts)}) in this folder")
    out: dict[str, Path] = {}
    for p in files:
        if p.stem in out:
            raise ValueError(f"{folder}: two files share the id {p.stem!r}: {out[p.stem].name}, {p.name}")
        out[p.stem] = p
    return out


def _normalise_ids(raw: pd.Series, width: int = 4) -> list[str]:
    """Ids as strings; numbers read from a spreadsheet (1, 1.0) become zero-padded ("0001")."""
    ids = []
    for v in raw:
        if isinstance(v, (int, np.integer)) or (isinstance(v, float) and float(v).is_integer()):
            ids.append(str(int(v)).zfill(width))
        else:
            s = str(v).strip()
            s = re.sub(r"\.(jpg|jpeg|png|bmp)$", "", s, flags=re.I)
            ids.append(s.zfill(width) if s.isdigit() else s)
    return ids


def read_fovea_gt(path: str | os.PathLike, what: str = "ground-truth file") -> pd.DataFrame:
    """Read fovea ground truth (.xlsx, .xls or .csv) with columns data, Fovea_X, Fovea_Y.

    Returns a DataFrame indexed by string id (name ``data``) with float columns
    ``Fovea_X``, ``Fovea_Y``. The first column is taken as the id whatever its header.
    ``what`` names the file in the not-found error (a submission is read the same way).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        if path.suffix.lower() in (".xlsx", ".xls"):
            df = pd.read_excel(path, dtype={0: str})
        else:
            df = pd.read_csv(path, dtype={0: str})
    except Exception as exc:  # pandas raises many types for unreadable files
        raise ValueError(f"{path}: cannot be read as a table ({exc})") from exc
    if df.shape[1] == 0 or len(df) == 0:
        raise ValueError(f"{path}: empty table; expected columns {', '.join(GT_COLUMNS)}")
    missing = [c for c in GT_COLUMNS[1:] if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected {list(GT_COLUMNS)} "
                         f"(found {list(df.columns)})")
    ids = _normalise_ids(df.iloc[:, 0])
    coords = df[list(GT_COLUMNS[1:])].apply(pd.to_numeric, errors="coerce")
    bad = coords.isna().any(axis=1).to_numpy()
    if bad.any():
        raise ValueError(f"{path}: non-numeric or empty Fovea_X/Fovea_Y for id(s) "
                         f"{[ids[i] for i in np.flatnonzero(bad)][:10]}")
    out = pd.DataFrame(coords.to_numpy(dtype=np.float64), columns=list(GT_COLUMNS[1:]),
                       index=pd.Index(ids, name="data"))
    if out.index.duplicated().any():
        raise ValueError(f"{path}: duplicated id(s) {out.index[out.index.duplicated()].tolist()[:10]}")
    return out


def find_task_dir(root: str | os.PathLike, task: str) -> Path:
    """Find the folder of ``task`` ("fovea" or "seg") that holds ``training`` or ``testing``.

    ``root`` may be that folder or a parent up to two levels above. With several
    candidates, the one whose name contains the task marker wins (task2_Fovea...,
    task3_disc_cup...).
    """
    if task not in TASK_MARKERS:
        raise ValueError(f"task must be one of {sorted(TASK_MARKERS)}, got {task!r}")
    root = resolve_data_root(root)

    def is_task_dir(d: Path) -> bool:
        if not any((d / s / IMAGE_DIR).is_dir() for s in ("training", "testing")):
            return False
        if task == "seg":
            return any((d / "training" / m).is_dir() for m in MASK_DIRS) or not (d / "training").is_dir()
        return True

    candidates = [root] + sorted(p for p in root.iterdir() if p.is_dir()) + \
        sorted(q for p in root.iterdir() if p.is_dir() for q in p.iterdir() if q.is_dir())
    found = [d for d in candidates if is_task_dir(d)]
    marked = [d for d in found if TASK_MARKERS[task].lower() in d.name.lower()]
    if marked or found:
        return (marked or found)[0]
    raise FileNotFoundError(f"{root}: no GAMMA {task} layout found (expected a folder with "
                            f"training/{IMAGE_DIR}/ or testing/{IMAGE_DIR}/ at most two levels down)")


@dataclass
class FoveaSplit:
    """One split of task 2: image paths by id, and ground truth if present."""

    root: Path
    images: dict[str, Path]
    gt: pd.DataFrame | None

    @property
    def ids(self) -> list[str]:
        return list(self.images)


@dataclass
class SegSplit:
    """One split of task 3: image paths by id, and mask paths by id if present."""

    root: Path
    images: dict[str, Path]
    masks: dict[str, Path] | None

    @property
    def ids(self) -> list[str]:
        return list(self.images)


def check_gt_matches_images(gt: pd.DataFrame, images: dict[str, Path], gt_path: Path) -> None:
    """Every GT id needs an image (images without GT are allowed in test folders)."""
    missing = [i for i in gt.index if i not in images]
    if missing:
        folder = next(iter(images.values())).parent if images else "?"
        raise ValueError(f"{gt_path}: {len(missing)} id(s) have no image in {folder}: {missing[:10]}")


def load_fovea_split(root: str | os.PathLike | None, split: str = "training",
                     gt_path: str | os.PathLike | None = None) -> FoveaSplit:
    """Load task 2 ``split``: images, and the GT table (training GT found by name, or ``gt_path``)."""
    task = find_task_dir(root, "fovea")
    images = list_images(task / split / IMAGE_DIR)
    if gt_path is None:
        found = sorted((task / split).glob("*GT*.xlsx")) + sorted((task / split).glob("*GT*.csv"))
        gt_path = found[0] if found else None
    gt = None
    if gt_path is not None:
        gt = read_fovea_gt(gt_path)
        check_gt_matches_images(gt, images, Path(gt_path))
    return FoveaSplit(task / split, images, gt)


def load_seg_split(root: str | os.PathLike | None, split: str = "training",
                   mask_dir: str | os.PathLike | None = None) -> SegSplit:
    """Load task 3 ``split``: images and (if a mask folder exists or is given) masks.

    Every image must have a mask when masks are present, and every mask an image.
    """
    task = find_task_dir(root, "seg")
    images = list_images(task / split / IMAGE_DIR)
    if mask_dir is None:
        dirs = [task / split / m for m in MASK_DIRS if (task / split / m).is_dir()]
        mask_dir = dirs[0] if dirs else None
    masks = None
    if mask_dir is not None:
        masks = list_images(mask_dir, MASK_EXTS)
        no_mask = sorted(set(images) - set(masks))
        no_image = sorted(set(masks) - set(images))
        if no_mask or no_image:
            raise ValueError(f"{mask_dir}: images and masks do not pair up; ids without a mask: {no_mask[:10]}, "
                             f"masks without an image: {no_image[:10]}")
    return SegSplit(task / split, images, masks)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_image(path: str | os.PathLike, array: np.ndarray, jpeg_quality: int = 95) -> Path:
    """Write an RGB (H, W, 3) or grey (H, W) ``uint8`` array; format from the suffix."""
    path = Path(path)
    arr = np.asarray(array)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
        raise ValueError(f"{path}: expected a uint8 (H, W) or (H, W, 3) array, got {arr.dtype} {arr.shape}")
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if path.suffix.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(path.suffix, arr, params)
    if not ok:
        raise ValueError(f"{path}: OpenCV cannot encode an image with suffix {path.suffix!r}")
    return atomic_write_bytes(path, buf.tobytes())


def write_fovea_csv(path: str | os.PathLike, df: pd.DataFrame) -> Path:
    """Write a task 2 submission: header ``data,Fovea_X,Fovea_Y``, one row per id."""
    if not {"Fovea_X", "Fovea_Y"} <= set(df.columns):
        raise ValueError(f"{path}: predictions need columns Fovea_X, Fovea_Y (got {list(df.columns)})")
    out = pd.DataFrame({"data": [str(i) for i in df.index],
                        "Fovea_X": df["Fovea_X"].to_numpy(float),
                        "Fovea_Y": df["Fovea_Y"].to_numpy(float)})
    return atomic_write_text(path, out.to_csv(index=False))
