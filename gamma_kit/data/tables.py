"""Image ids and the task 2 ground-truth table: read it, match it to photos, write submissions.

Everything is keyed by image id, the file stem as a string (``"0001"``), never by position. A
ground-truth id and a file name match when they are equal, or when both are whole numbers of the
same value (GT id ``1`` matches ``1.jpg``, ``0001.jpg`` and ``00001.jpg``); ``match_gt_to_images``
applies that one rule and warns about images that have no GT row. Points are (x, y) = (column, row).
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from gamma_kit.data.images import DataWarning, check_input_file, reading
from gamma_kit.safety import atomic_write_text

__all__ = ["GT_COLUMNS", "id_key", "rekey_ids", "read_fovea_gt", "match_gt_to_images", "check_gt_matches_images",
           "write_fovea_csv"]

GT_COLUMNS = ("data", "Fovea_X", "Fovea_Y")


def _normalise_ids(raw: pd.Series, width: int = 4) -> list[str]:
    """Ids as strings; whole numbers (1, 1.0, "1", "0001.jpg") become zero-padded ("0001")."""
    ids = []
    for v in raw:
        if isinstance(v, (int, np.integer)) or (isinstance(v, float) and float(v).is_integer()):
            ids.append(str(int(v)).zfill(width))
            continue
        s = str(v).strip()
        s = re.sub(r"\.(jpg|jpeg|png|bmp|tif|tiff)$", "", s, flags=re.I)
        s = re.sub(r"^(\d+)\.0*$", r"\1", s)          # 1.0 read back from a spreadsheet cell
        ids.append(s.zfill(width) if s.isdigit() else s)
    return ids


def id_key(image_id: str) -> str | int:
    """Matching key of an id: whole numbers by value (``"1"``, ``"0001"`` -> 1), others as is."""
    s = str(image_id)
    return int(s) if s.isdigit() else s


def rekey_ids(ids: Iterable[str], targets: Iterable[str], where: str | os.PathLike = "") -> dict[str, str]:
    """Map each of ``ids`` to the entry of ``targets`` with the same ``id_key`` (itself when
    none has). Raises ``ValueError`` when two ``targets`` share a key (``1`` and ``0001``)."""
    by_key: dict = {}
    for t in targets:
        k = id_key(t)
        if k in by_key:
            raise ValueError(f"{where}: {by_key[k]!r} and {t!r} are the same number; ids are matched "
                             "by value, so keep only one of them")
        by_key[k] = t
    return {i: by_key.get(id_key(i), i) for i in ids}


def _id_column(df: pd.DataFrame, path: Path) -> str:
    """The id column: ``data`` when present, else the only column that is not a coordinate."""
    if GT_COLUMNS[0] in df.columns:
        return GT_COLUMNS[0]
    others = [c for c in df.columns if c not in GT_COLUMNS[1:]]
    if len(others) == 1:
        return others[0]
    raise ValueError(f"{path}: no '{GT_COLUMNS[0]}' column, and {'no' if not others else 'several'} other "
                     f"column(s) {others} that could hold the image id; name the id column "
                     f"'{GT_COLUMNS[0]}' (expected {list(GT_COLUMNS)})")


def read_fovea_gt(path: str | os.PathLike, what: str = "ground-truth file") -> pd.DataFrame:
    """Read fovea ground truth (.xlsx, .xls or .csv) with columns data, Fovea_X, Fovea_Y.

    Returns a DataFrame indexed by string id (name ``data``) with float columns
    ``Fovea_X``, ``Fovea_Y``. Columns are found by name, in any order: the id comes from
    ``data`` (a leading row-number column such as ``No.`` is ignored); without a ``data``
    column the one other column is the id. Whole-number ids are zero-padded to 4 digits
    (``1`` -> ``"0001"``); ``match_gt_to_images`` matches them to file names by value.
    ``what`` names the file in the not-found error (a submission is read the same way).
    """
    path = Path(path)
    check_input_file(path, what)
    try:
        with reading(path):
            if path.suffix.lower() in (".xlsx", ".xls"):
                df = pd.read_excel(path, dtype=str)
            else:
                df = pd.read_csv(path, dtype=str)
    except Exception as exc:  # pandas raises many types for unreadable files
        if isinstance(exc, OSError) and getattr(exc, "side", None):
            raise                  # the file could not be read at all (permission, I/O): named as an input
        raise ValueError(f"{path}: cannot be read as a table ({' '.join(str(exc).split())})") from exc
    df.columns = [str(c).strip() for c in df.columns]
    df = df.dropna(how="all")
    if df.shape[1] == 0 or len(df) == 0:
        raise ValueError(f"{path}: empty table; expected columns {', '.join(GT_COLUMNS)}")
    missing = [c for c in GT_COLUMNS[1:] if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected {list(GT_COLUMNS)} "
                         f"(found {list(df.columns)})")
    id_col = _id_column(df, path)
    if df[id_col].isna().any():
        rows = (np.flatnonzero(df[id_col].isna().to_numpy()) + 2).tolist()
        raise ValueError(f"{path}: empty '{id_col}' (image id) in row(s) {rows[:10]}")
    ids = _normalise_ids(df[id_col])
    coords = df[list(GT_COLUMNS[1:])].apply(pd.to_numeric, errors="coerce")
    bad = ~np.isfinite(coords.to_numpy(dtype=np.float64)).all(axis=1)
    if bad.any():
        raise ValueError(f"{path}: non-numeric, empty or infinite Fovea_X/Fovea_Y for id(s) "
                         f"{[ids[i] for i in np.flatnonzero(bad)][:10]}")
    out = pd.DataFrame(coords.to_numpy(dtype=np.float64), columns=list(GT_COLUMNS[1:]),
                       index=pd.Index(ids, name="data"))
    if out.index.duplicated().any():
        raise ValueError(f"{path}: duplicated id(s) {out.index[out.index.duplicated()].tolist()[:10]}")
    return out


def match_gt_to_images(gt: pd.DataFrame, images: dict[str, Path], gt_path: str | os.PathLike,
                       require_images: bool = True, warn: bool = True) -> pd.DataFrame:
    """Re-key ``gt`` (indexed by id) onto the ids of ``images`` (id -> path) by ``id_key``:
    GT id ``0001`` matches ``1.jpg`` and GT id ``1`` matches ``0001.jpg``.

    Raises ``ValueError`` when two images share one number (``1.jpg`` and ``0001.jpg``), and,
    with ``require_images``, when a GT id has no image. Images without a GT row are listed
    in one ``DataWarning`` (``warn``). Returns the table indexed by image id, GT order kept.
    """
    folder = Path(next(iter(images.values()))).parent if images else "?"
    mapping = rekey_ids(gt.index, images, folder)
    new_ids = [mapping[i] for i in gt.index]
    out = gt.copy()
    out.index = pd.Index(new_ids, name=gt.index.name or "data")
    if out.index.duplicated().any():
        raise ValueError(f"{gt_path}: id(s) {out.index[out.index.duplicated()].tolist()[:10]} appear twice "
                         "(as different spellings of one number)")
    if require_images:
        missing = [i for i in out.index if i not in images]
        if missing:
            raise ValueError(f"{gt_path}: {len(missing)} id(s) have no image in {folder}: {missing[:10]}")
    if warn:
        unlabelled = [i for i in images if i not in out.index]
        if unlabelled:
            warnings.warn(DataWarning(f"{len(unlabelled)} image(s) have no row in {gt_path} and are left out: "
                                      f"{unlabelled[:10]}{' ...' if len(unlabelled) > 10 else ''}"), stacklevel=2)
    return out


def check_gt_matches_images(gt: pd.DataFrame, images: dict[str, Path], gt_path: Path) -> None:
    """Every GT id needs an image (kept for callers; ``match_gt_to_images`` also re-keys)."""
    match_gt_to_images(gt, images, gt_path, warn=False)


def write_fovea_csv(path: str | os.PathLike, df: pd.DataFrame) -> Path:
    """Write a task 2 submission: header ``data,Fovea_X,Fovea_Y``, one row per id."""
    if not {"Fovea_X", "Fovea_Y"} <= set(df.columns):
        raise ValueError(f"{path}: predictions need columns Fovea_X, Fovea_Y (got {list(df.columns)})")
    out = pd.DataFrame({"data": [str(i) for i in df.index],
                        "Fovea_X": df["Fovea_X"].to_numpy(float),
                        "Fovea_Y": df["Fovea_Y"].to_numpy(float)})
    return atomic_write_text(path, out.to_csv(index=False))
