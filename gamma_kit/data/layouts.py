"""Where the GAMMA data lies: the challenge layouts, the data root, AI Studio's mounts, the zips.

Layouts (SPEC 1), under a data root given by a flag or ``$GAMMA_DATA``::

    <task2 dir>/training/fundus color images/0001.jpg ...
    <task2 dir>/training/fovea_localization_training_GT.xlsx   # data, Fovea_X, Fovea_Y
    <task2 dir>/testing/fundus color images/0101.jpg ...
    <task3 dir>/training/fundus color images/0001.jpg ...
    <task3 dir>/training/Disc_Cup_Mask/0001.bmp ...            # or Disc_Cup_Masks; .bmp or .png

The root may be the task folder itself or any parent up to two levels above it. Test ground truth
may sit in ``<split>_GT/`` beside ``<split>/`` (``find_fovea_gt``, ``find_mask_dir``: the one place
that knows where things live; with both ``Disc_Cup_Mask`` and ``Disc_Cup_Masks`` it takes the one
with a mask for every photo and says so, or refuses naming both and their counts).
``find_challenge_data`` finds the data where a platform puts it (``$GAMMA_DATA``, AI Studio's
``/home/aistudio/data/*/``, ``data/``): an unpacked layout, or the challenge zip, which it unpacks
once into a folder of the caller's (``extract_zip`` refuses members that would land outside it).
Nothing here deletes or modifies input files.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pandas as pd

from gamma_kit.data.images import IMAGE_EXTS, DataWarning, check_input_file, list_images, reading
from gamma_kit.data.masks import MASK_EXTS, list_masks
from gamma_kit.data.tables import match_gt_to_images, read_fovea_gt

__all__ = ["DATA_ENV", "IMAGE_DIR", "MASK_DIRS", "AISTUDIO_DATA", "CHALLENGE_ZIPS", "resolve_data_root",
           "find_task_dir", "find_fovea_gt", "find_mask_dir", "extract_zip", "find_challenge_data", "FoveaSplit",
           "SegSplit", "load_fovea_split", "load_seg_split"]


DATA_ENV = "GAMMA_DATA"
IMAGE_DIR = "fundus color images"
MASK_DIRS = ("Disc_Cup_Mask", "Disc_Cup_Masks")
TASK_MARKERS = {"fovea": "Fovea", "seg": "disc_cup"}
#: Where AI Studio mounts the data sets added to a project (each as ``data<NUMBER>/``), and the
#: challenge's archive names there (SPEC 1).
AISTUDIO_DATA = Path("/home/aistudio/data")
CHALLENGE_ZIPS = {"fovea": "task2_Fovea_localization.zip", "seg": "task3_disc_cup_segmentation.zip"}


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


def _gt_files(folder: Path) -> list[Path]:
    return sorted(p for ext in ("xlsx", "xls", "csv") for p in folder.glob(f"*GT*.{ext}")
                  if not p.name.startswith((".", "~$")))


def find_fovea_gt(task_dir: str | os.PathLike, split: str = "training") -> Path | None:
    """The fovea GT table of ``split`` (``*GT*.xlsx/.xls/.csv``) in ``<task>/<split>/`` or, for
    test ground truth kept apart, ``<task>/<split>_GT/``; None when there is none.

    Raises ``ValueError`` when one folder holds several candidates (pass the file instead).
    """
    task = Path(task_dir)
    for folder in (task / split, task / f"{split}_GT"):
        found = _gt_files(folder) if folder.is_dir() else []
        if len(found) > 1:
            raise ValueError(f"{folder}: several ground-truth tables ({', '.join(p.name for p in found)}); "
                             "pass the one to use (--gt FILE)")
        if found:
            return found[0]
    return None


def find_mask_dir(task_dir: str | os.PathLike, split: str = "training", required: bool = False) -> Path | None:
    """The disc/cup mask folder of ``split``: ``<task>/<split>/Disc_Cup_Mask`` (or ``Disc_Cup_Masks``),
    else ``<task>/<split>_GT/...``. None when absent, or ``FileNotFoundError`` with ``required``.

    Both names in one folder: the one with a mask for every photo of ``<split>/fundus color images``
    is taken and named in a ``DataWarning``; when neither or both has one for every photo, a
    ``ValueError`` names both folders and their counts (a partial folder is never taken silently)."""
    task = Path(task_dir)
    for folder in (split, f"{split}_GT"):
        with reading(task / folder):
            found = [task / folder / m for m in MASK_DIRS if (task / folder / m).is_dir()]
        if len(found) > 1:
            return _pick_mask_dir(found, task / split / IMAGE_DIR)
        if found:
            return found[0]
    if required:
        raise FileNotFoundError(f"{task / split}: no mask folder ({' or '.join(MASK_DIRS)}, in {split}/ or "
                                f"{split}_GT/); pass the folder (--mask-dir DIR)")
    return None


def _stems(folder: Path, exts: Iterable[str]) -> set[str]:
    with reading(folder):
        return {p.stem for p in folder.iterdir() if p.suffix.lower() in exts and not p.name.startswith(".")
                and p.is_file()}


def _pick_mask_dir(found: list[Path], image_dir: Path) -> Path:
    """Of two mask folders side by side, the one with a mask for every photo in ``image_dir``."""
    masks = {d: _stems(d, MASK_EXTS + (".jpg", ".jpeg")) for d in found}
    photos = _stems(image_dir, IMAGE_EXTS) if image_dir.is_dir() else set()
    full = [d for d in found if photos and photos <= masks[d]]
    counts = " and ".join(f"{d.name} ({len(masks[d])} masks)" for d in found)
    where = found[0].parent
    if len(full) == 1:
        warnings.warn(DataWarning(f"{where}: two mask folders, {counts}; using {full[0].name}, the one with a mask "
                                  f"for each of the {len(photos)} photos in {image_dir.name}/"), stacklevel=3)
        return full[0]
    why = (f"both have a mask for each of the {len(photos)} photos" if full else
           f"neither has a mask for each of the {len(photos)} photos in {image_dir.name}/" if photos else
           f"no photos in {image_dir} to tell them apart")
    raise ValueError(f"{where}: two mask folders, {counts}, and {why}: keep one of them "
                     "(or name it: seg prepare --mask-dir DIR)")


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

    with reading(root):
        candidates = [root] + sorted(p for p in root.iterdir() if p.is_dir()) + \
            sorted(q for p in root.iterdir() if p.is_dir() for q in p.iterdir() if q.is_dir())
        found = [d for d in candidates if is_task_dir(d)]
    marked = [d for d in found if TASK_MARKERS[task].lower() in d.name.lower()]
    if marked or found:
        return (marked or found)[0]
    raise FileNotFoundError(f"{root}: no GAMMA {task} layout found (expected a folder with "
                            f"training/{IMAGE_DIR}/ or testing/{IMAGE_DIR}/ at most two levels down)")


def extract_zip(zip_path: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Unzip the challenge archive into ``dest`` unless its files are already there; returns ``dest``.

    Members that would land outside ``dest`` (absolute paths, ``..``) are refused; existing
    files are never overwritten.
    """
    from gamma_kit.safety import with_path

    zip_path, dest = Path(zip_path), Path(dest)
    check_input_file(zip_path, "archive")
    try:
        with reading(zip_path):
            zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{zip_path} is not a zip archive ({exc})") from exc
    with zf:
        root = dest.resolve()
        for info in zf.infolist():
            target = (dest / info.filename).resolve()
            if root != target and root not in target.parents:
                raise ValueError(f"{zip_path}: member {info.filename!r} would be written outside {dest}")
        for info in zf.infolist():
            if not (dest / info.filename).exists():
                try:
                    zf.extract(info, dest)
                except OSError as exc:     # reading the archive is named by reading(); writing names dest
                    if exc.errno is None or getattr(exc, "side", None):
                        raise
                    raise with_path(exc, exc.filename if exc.filename is not None else dest / info.filename) \
                        from exc
    return dest


def find_challenge_data(task: str, unpack_to: str | os.PathLike,
                        search: Iterable[str | os.PathLike] | None = None) -> Path | None:
    """The data root of ``task`` ("fovea" or "seg") wherever the challenge data lies; None when nowhere.

    Looks in ``search``, by default ``$GAMMA_DATA``, ``AISTUDIO_DATA`` and each folder in it (AI Studio
    mounts every data set as ``/home/aistudio/data/data<NUMBER>/``), ``./data`` and a source
    checkout's ``data/``. In each folder, in that order: an unpacked layout (``find_task_dir``) is
    returned as it is; else the task's zip (``CHALLENGE_ZIPS``) is unpacked into
    ``unpack_to/<zip name without .zip>/`` and that folder returned. A zip is unpacked once: into a
    hidden staging folder first, renamed into place when complete, and not again while the folder
    exists. The zip and the folders searched are only read.
    """
    if task not in CHALLENGE_ZIPS:
        raise ValueError(f"task must be one of {sorted(CHALLENGE_ZIPS)}, got {task!r}")
    if search is None:
        checkout = Path(__file__).resolve().parents[1]
        search = [os.environ.get(DATA_ENV) or None, AISTUDIO_DATA,
                  *(sorted(AISTUDIO_DATA.iterdir()) if AISTUDIO_DATA.is_dir() else []), Path("data"),
                  checkout / "data" if (checkout / "setup.py").is_file() else None]
    seen = set()
    for folder in (Path(f).expanduser() for f in search if f):
        if not folder.is_dir() or folder.resolve() in seen:
            continue
        seen.add(folder.resolve())
        try:
            find_task_dir(folder, task)
            return folder
        except FileNotFoundError:
            pass
        archive = folder / CHALLENGE_ZIPS[task]
        if not archive.is_file():
            continue
        target = Path(unpack_to) / archive.stem
        if target.is_dir():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
        try:
            extract_zip(archive, staging)
            staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)    # only the staging folder this call made
            raise
        return target
    return None


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


def _split_images(root: str | os.PathLike | None, task: str, split: str) -> tuple[Path, dict[str, Path]]:
    """(the task folder under ``root``, id -> photo of ``split``)."""
    task_dir = find_task_dir(root, task)
    return task_dir, list_images(task_dir / split / IMAGE_DIR)


def load_fovea_split(root: str | os.PathLike | None, split: str = "training",
                     gt_path: str | os.PathLike | None = None) -> FoveaSplit:
    """Load task 2 ``split``: images, and the GT table (``find_fovea_gt``, or ``gt_path``),
    re-keyed onto the image ids (``match_gt_to_images``; unlabelled images are warned about)."""
    task, images = _split_images(root, "fovea", split)
    gt_path = find_fovea_gt(task, split) if gt_path is None else gt_path
    gt = None if gt_path is None else match_gt_to_images(read_fovea_gt(gt_path), images, Path(gt_path))
    return FoveaSplit(task / split, images, gt)


def load_seg_split(root: str | os.PathLike | None, split: str = "training",
                   mask_dir: str | os.PathLike | None = None) -> SegSplit:
    """Load task 3 ``split``: images and (if a mask folder exists or is given) masks.

    Every image must have a mask when masks are present, and every mask an image.
    """
    task, images = _split_images(root, "seg", split)
    mask_dir = find_mask_dir(task, split) if mask_dir is None else mask_dir
    masks = None
    if mask_dir is not None:
        masks = list_masks(mask_dir)
        no_mask = sorted(set(images) - set(masks))
        no_image = sorted(set(masks) - set(images))
        if no_mask or no_image:
            raise ValueError(f"{mask_dir}: images and masks do not pair up; ids without a mask: {no_mask[:10]}, "
                             f"masks without an image: {no_image[:10]}")
    return SegSplit(task / split, images, masks)
