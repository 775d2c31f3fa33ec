"""Disc/cup masks: read and check them, from a folder or from a task 3 submission zip.

Masks are (H, W) ``uint8`` with values in {0 = cup, 128 = disc rim, 255 = background}
(``check_mask_values`` is the one check and message for them; ``check_mask_fits`` refuses a mask
whose aspect ratio differs from its photo's, which resizing would squash). ``open_masks`` reads masks
from a folder or from a task 3 submission zip (``Disc_Cup_Segmentations/<id>.bmp`` at its top, the
layout checked, read in memory). A JPEG mask is refused: its compression invents values.
"""
from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np

from gamma_kit.data.images import (IMAGE_EXTS, decode_bytes, decode_file, head_bytes, list_images, reading,
                                   sniff_format)

__all__ = ["MASK_VALUES", "MASK_EXTS", "SUBMISSION_DIR", "present_values", "unexpected_mask_values",
           "check_mask_values", "check_mask_fits", "read_mask", "decode_mask", "list_masks", "MaskSet", "open_masks"]

MASK_VALUES = (0, 128, 255)
MASK_EXTS = (".bmp", ".png")


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


def check_mask_values(mask: np.ndarray, what: str | os.PathLike = "mask") -> np.ndarray:
    """Return ``mask`` if it is an (H, W) GAMMA mask with values in {0, 128, 255}; else raise
    ``ValueError`` naming ``what``. The one message every command gives for a bad mask."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{what}: expected an (H, W) mask, got shape {mask.shape}")
    bad = unexpected_mask_values(mask)
    if bad.size:
        labels = " (these look like 0/1/2 training labels, not a GAMMA mask)" if set(bad.tolist()) <= {1, 2} else ""
        raise ValueError(f"{what}: mask values must be in {{0, 128, 255}} (0 cup, 128 disc, 255 background); "
                         f"found {bad[:10].tolist()}{' ...' if bad.size > 10 else ''}{labels}")
    return mask


def check_mask_fits(mask_size: tuple[int, int], image_size: tuple[int, int], mask_name: str | os.PathLike = "mask",
                    image_name: str | os.PathLike = "its photo") -> bool:
    """Whether a mask of ``mask_size`` (w, h) needs its photo of ``image_size`` (w, h) resized to it:
    False when the sizes are equal, True when the mask is the photo's shape at another scale (to
    within a pixel of rounding; the original resized the photo to the mask), ``ValueError`` naming
    both files and sizes when the aspect ratios differ (a mask of another camera or photo: resizing
    would squash the photo onto it)."""
    (mw, mh), (iw, ih) = (int(v) for v in mask_size), (int(v) for v in image_size)
    if (mw, mh) == (iw, ih):
        return False
    if abs(mh - ih * mw / iw) <= 1 or abs(mw - iw * mh / ih) <= 1:
        return True
    raise ValueError(f"{mask_name}: mask is {mw}x{mh} px but its photo {Path(image_name).name} is {iw}x{ih} (w x h): "
                     "another aspect ratio (a mask of another camera or photo?); resizing would squash the photo, "
                     "so the pair is not used: a mask needs its photo's size or the same shape at another scale")


def _jpeg_mask_error(where: str | os.PathLike, names: list[str]) -> ValueError:
    return ValueError(f"{where}: mask(s) saved as JPEG ({', '.join(names[:5])}{' ...' if len(names) > 5 else ''}); "
                      "JPEG's lossy compression changes the 0/128/255 values: save masks as .bmp or .png")


def read_mask(path: str | os.PathLike, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Read a GAMMA disc/cup mask as (H, W) ``uint8`` with values in {0, 128, 255}.

    A three-channel file is accepted only if its channels are equal. ``expected_size`` is
    the (width, height) of the matching image; a mismatch is an error. A JPEG mask (by
    content or suffix) is refused as such.
    """
    path = Path(path)
    if path.suffix.lower() in (".jpg", ".jpeg") or (path.is_file() and sniff_format(head_bytes(path)) == "jpeg"):
        raise _jpeg_mask_error(path.parent, [path.name])
    return _as_mask(decode_file(path, cv2.IMREAD_UNCHANGED), path, expected_size)


def decode_mask(data: bytes, name: str, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """``read_mask`` for the encoded bytes of a mask file (a zip member); ``name`` (its file
    name, e.g. ``sub.zip/Disc_Cup_Segmentations/0101.bmp``) is used in messages and for the suffix."""
    buf = np.frombuffer(data, dtype=np.uint8)
    if name.lower().endswith((".jpg", ".jpeg")) or sniff_format(bytes(data[:8])) == "jpeg":
        where, _, file = name.rpartition("/")
        raise _jpeg_mask_error(where or name, [file])
    return _as_mask(decode_bytes(buf, name, cv2.IMREAD_UNCHANGED), name, expected_size)


def _as_mask(mask: np.ndarray, name: str | os.PathLike, expected_size: tuple[int, int] | None) -> np.ndarray:
    if mask.ndim == 3:
        if mask.shape[2] == 4:
            mask = mask[..., :3]
        if not (np.array_equal(mask[..., 0], mask[..., 1]) and np.array_equal(mask[..., 0], mask[..., 2])):
            raise ValueError(f"{name}: mask must be single-channel (grey), got a colour image")
        mask = mask[..., 0]
    if mask.dtype != np.uint8:
        raise ValueError(f"{name}: mask must be 8-bit, got {mask.dtype}")
    check_mask_values(mask, name)
    if expected_size is not None and (mask.shape[1], mask.shape[0]) != tuple(expected_size):
        raise ValueError(f"{name}: mask size {mask.shape[1]}x{mask.shape[0]} differs from its image "
                         f"{expected_size[0]}x{expected_size[1]} (w x h)")
    return mask


def list_masks(folder: str | os.PathLike) -> dict[str, Path]:
    """Map id -> path for the GAMMA masks (``MASK_EXTS``) in ``folder``; JPEG files there are
    refused as JPEG masks (not reported as missing masks)."""
    folder = Path(folder)
    with reading(folder):
        if folder.is_dir():
            jpegs = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg")
                           and not p.name.startswith("."))
            if jpegs:
                raise _jpeg_mask_error(folder, jpegs)
    return list_images(folder, MASK_EXTS, what="mask folder")


#: The folder a task 3 submission zip holds its masks in (``Disc_Cup_Segmentations/<id>.bmp``, SPEC 3).
SUBMISSION_DIR = "Disc_Cup_Segmentations"
#: A zip member larger than this (uncompressed) is not a mask (a 4288x2848 24-bit BMP is 37 MB).
MAX_MASK_BYTES = 256 << 20


class MaskSet:
    """Masks by id from a folder (``list_masks``) or a task 3 submission zip (``SUBMISSION_DIR/<id>.bmp``
    or ``.png`` at the top of the zip, read in memory: nothing is unpacked). ``open_masks`` makes one.

    ``ids`` the mask ids (file stems, sorted); ``name(id)`` the file as messages name it;
    ``read(id, expected_size)`` the mask as ``read_mask`` returns it. Use it as a context manager
    (a zip stays open until then).
    """

    def __init__(self, where: Path, names: dict[str, str], archive: zipfile.ZipFile | None = None) -> None:
        self.where, self._names, self._zip = where, names, archive

    @property
    def ids(self) -> list[str]:
        return list(self._names)

    def name(self, image_id: str) -> str:
        return self._names[image_id] if self._zip is None else f"{self.where}/{self._names[image_id]}"

    def read(self, image_id: str, expected_size: tuple[int, int] | None = None) -> np.ndarray:
        if self._zip is None:
            return read_mask(self._names[image_id], expected_size)
        member = self._names[image_id]
        try:
            with reading(self.where):
                data = self._zip.read(member)
        except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError) as exc:
            raise ValueError(f"{self.name(image_id)}: cannot be read from the zip ({exc})") from exc
        return decode_mask(data, self.name(image_id), expected_size)

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def __enter__(self) -> "MaskSet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_masks(path: str | os.PathLike, what: str = "mask folder or submission zip") -> MaskSet:
    """The masks of ``path``: a folder of ``<id>.bmp`` / ``.png`` masks, or a task 3 submission zip
    whose layout is checked as the challenge reads it (``SUBMISSION_DIR/<id>.bmp`` at the top);
    a wrong layout is one ``ValueError`` naming the zip, what was expected and what it holds."""
    path = Path(path)
    with reading(path):
        is_file = path.is_file()
    if not is_file:
        if not path.exists():
            raise FileNotFoundError(f"{what} not found: {path}")
        return MaskSet(path, {i: str(p) for i, p in list_masks(path).items()})
    try:
        with reading(path):
            archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{path}: not a zip archive ({exc}); expected a submission zip "
                         f"({SUBMISSION_DIR}/<id>.bmp inside) or a folder of masks") from exc
    try:
        return MaskSet(path, _submission_members(path, archive.infolist()), archive)
    except BaseException:
        archive.close()
        raise


def _submission_members(path: Path, infos: list[zipfile.ZipInfo]) -> dict[str, str]:
    """id -> member name of the masks directly in ``SUBMISSION_DIR/`` of a zip; the layout checks."""
    expected = f"expected {SUBMISSION_DIR}/<id>.bmp (or .png) at the top of the zip, as the challenge takes it"
    files = []
    for info in infos:
        name = info.filename.replace("\\", "/")
        parts = [q for q in name.split("/") if q]
        if info.is_dir() or not parts or parts[0] == "__MACOSX" or parts[-1].startswith("."):
            continue
        files.append((parts, info))
    images = [(parts, info) for parts, info in files if Path(parts[-1]).suffix.lower() in IMAGE_EXTS]
    inside = [(parts, info) for parts, info in images if len(parts) == 2 and parts[0] == SUBMISSION_DIR]
    jpegs = [parts[-1] for parts, _ in inside if Path(parts[-1]).suffix.lower() in (".jpg", ".jpeg")]
    if jpegs:
        raise _jpeg_mask_error(f"{path}/{SUBMISSION_DIR}", sorted(jpegs))
    masks = [(parts, info) for parts, info in inside if Path(parts[-1]).suffix.lower() in MASK_EXTS]
    if not masks:
        if inside:
            kinds = sorted({Path(parts[-1]).suffix.lower() for parts, _ in inside})
            found = f"its {SUBMISSION_DIR}/ holds {len(inside)} image(s) as {', '.join(kinds)}"
        elif not images:
            found = f"it holds no image files ({len(files)} other file(s))" if files else "it is empty"
        else:
            folders = sorted({"/".join(parts[:-1]) + "/" if len(parts) > 1 else "the top of the zip"
                              for parts, _ in images})
            found = (f"its {len(images)} image file(s) lie in {', '.join(folders[:3])}"
                     f"{' ...' if len(folders) > 3 else ''}")
            if folders == ["the top of the zip"]:
                found += f" (zip the {SUBMISSION_DIR} folder itself, not its contents)"
        raise ValueError(f"{path}: not a GAMMA task 3 submission: {expected}; {found}")
    out: dict[str, str] = {}
    for parts, info in sorted(masks, key=lambda m: m[0][-1]):
        stem = Path(parts[-1]).stem
        if stem in out:
            raise ValueError(f"{path}: two masks share the id {stem!r}: {out[stem]}, {info.filename}")
        if info.file_size > MAX_MASK_BYTES:
            raise ValueError(f"{path}/{info.filename}: {info.file_size >> 20} MB uncompressed, too large for a mask")
        out[stem] = info.filename
    return out
