"""GAMMA data layer: find the challenge layouts, read images, masks and ground truth.

Layouts (SPEC 1), under a data root given by a flag or ``$GAMMA_DATA``::

    <task2 dir>/training/fundus color images/0001.jpg ...
    <task2 dir>/training/fovea_localization_training_GT.xlsx   # data, Fovea_X, Fovea_Y
    <task2 dir>/testing/fundus color images/0101.jpg ...
    <task3 dir>/training/fundus color images/0001.jpg ...
    <task3 dir>/training/Disc_Cup_Mask/0001.bmp ...            # or Disc_Cup_Masks; .bmp or .png

The root may be the task folder itself or any parent up to two levels above it.
Everything is keyed by image id, the file stem as a string (``"0001"``), never by
position. A ground-truth id and a file name match when they are equal, or when both are
whole numbers of the same value (GT id ``1`` matches ``1.jpg``, ``0001.jpg`` and
``00001.jpg``); ``match_gt_to_images`` applies that one rule and warns about images that
have no GT row. Test ground truth may sit in ``<split>_GT/`` beside ``<split>/``
(``find_fovea_gt``, ``find_mask_dir``: the one place that knows where things live; with both
``Disc_Cup_Mask`` and ``Disc_Cup_Masks`` it takes the one with a mask for every photo and says so,
or refuses naming both and their counts). ``open_masks`` reads masks from a folder or from a task 3
submission zip (``Disc_Cup_Segmentations/<id>.bmp`` at its top, the layout checked, read in memory).
``find_challenge_data`` finds the data where a platform puts it (``$GAMMA_DATA``, AI Studio's
``/home/aistudio/data/*/``, ``data/``): an unpacked layout, or the challenge zip, which it unpacks once
into a folder of the caller's (``extract_zip`` refuses members that would land outside it).
Images are RGB ``uint8`` (H, W, 3); masks are (H, W) ``uint8`` with values in
{0 = cup, 128 = disc rim, 255 = background} (``check_mask_values`` is the one check and
message for them; ``check_mask_fits`` refuses a mask whose aspect ratio differs from its photo's,
which resizing would squash). Points are (x, y) = (column, row).

Every reader raises ``FileNotFoundError`` or ``ValueError`` naming the file and what
was expected. Files are decoded by their content, not their suffix (a PNG named .jpg is a
PNG); a JPEG whose stream stops before its end marker, or that libjpeg reports as corrupt,
is refused; bytes after a complete image are ignored. Pixels and ``image_size`` both follow
the EXIF orientation (the image as a viewer shows it; ``describe_orientation`` names a tag that
turns a photo, for the refusals it explains). ``check_fundus_image`` refuses photos
below ``MIN_FUNDUS_SIDE`` px and pictures without a dark surround around a circular field
(``check_photo_size`` is its size part alone, for a size read from a file header;
``check_photo_sizes`` checks a whole folder's photos from their headers before any work).
Writers go through a temporary file, fsync and ``os.replace``, so a crash never leaves a
half-written output; an ``OSError`` names the file asked for as an output. An ``OSError`` while
reading (permission denied, an I/O error) names the file that failed as an input (``reading``).
Nothing here deletes or modifies input files.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import sys
import tempfile
import threading
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np
import pandas as pd

__all__ = [
    "IMAGE_DIR", "MASK_DIRS", "MASK_VALUES", "IMAGE_EXTS", "MASK_EXTS", "GT_COLUMNS", "DATA_ENV",
    "MIN_FUNDUS_SIDE", "DataWarning",
    "resolve_data_root", "read_image", "read_mask", "present_values", "unexpected_mask_values",
    "check_mask_values", "check_fundus_image", "check_photo_size", "check_photo_sizes",
    "sniff_format", "jpeg_end", "exif_orientation", "describe_orientation", "reading",
    "image_size", "list_images", "list_masks", "decode_mask", "SUBMISSION_DIR", "MaskSet", "open_masks",
    "check_mask_fits", "read_fovea_gt", "id_key", "rekey_ids", "match_gt_to_images",
    "find_task_dir", "find_fovea_gt", "find_mask_dir", "AISTUDIO_DATA", "CHALLENGE_ZIPS", "extract_zip",
    "find_challenge_data", "FoveaSplit", "SegSplit", "load_fovea_split",
    "load_seg_split", "atomic_write_bytes", "atomic_write_text", "atomic_copy", "write_image", "write_fovea_csv",
]

DATA_ENV = "GAMMA_DATA"
IMAGE_DIR = "fundus color images"
MASK_DIRS = ("Disc_Cup_Mask", "Disc_Cup_Masks")
MASK_VALUES = (0, 128, 255)
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
MASK_EXTS = (".bmp", ".png")
GT_COLUMNS = ("data", "Fovea_X", "Fovea_Y")
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


#: Smallest short side (px) of a photo the kit works on. Below it the optic disc is under
#: ~20 px tall (it spans about a sixth of the field) and neither method has anything to find;
#: the kit's smallest test fixtures (160x128 px) just meet it.
MIN_FUNDUS_SIDE = 128
#: ``check_fundus_image``: a pixel of the surround is "dark" below this (max over RGB, 0-255),
#: at least this share of the surround outside the circular field must be dark, and the mean
#: step between horizontal neighbours inside the field must stay below the noise limit
#: (photos: 1-4 grey levels; uniform noise: ~85).
FOV_DARK_LEVEL = 40
FOV_DARK_SHARE = 0.6
NOISE_STEP_LIMIT = 30.0

_MAGIC = ((b"\xff\xd8\xff", "jpeg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"BM", "bmp"),
          (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"))
_STDERR_LOCK = threading.Lock()
_LIBJPEG_WARNINGS = ("Corrupt JPEG data", "Premature end of JPEG file")
# EXIF orientation -> (transpose first, then flip rows, flip columns); what a viewer shows
_ORIENTATION = {2: (False, False, True), 3: (False, True, True), 4: (False, True, False),
                5: (True, False, False), 6: (True, False, True), 7: (True, True, True), 8: (True, True, False)}


def sniff_format(data: bytes) -> str | None:
    """Image format from the first bytes ("jpeg", "png", "bmp", "tiff"), None if unknown."""
    head = bytes(data[:8])
    return next((fmt for magic, fmt in _MAGIC if head.startswith(magic)), None)


def jpeg_end(data: np.ndarray) -> int | None:
    """Offset just past the end-of-image marker of the JPEG stream in ``data`` (uint8 bytes),
    or None when the stream stops before it (a truncated file).

    Walks the marker segments; inside entropy-coded scans ``FF`` is always followed by
    ``00`` (stuffing), ``D0``-``D7`` (restart) or more ``FF`` fill, so the first other
    ``FF xx`` is the next marker. Bytes after the end marker are not looked at.
    """
    a = np.asarray(data, dtype=np.uint8).ravel()
    n = a.size
    ff = np.flatnonzero(a[:-1] == 0xFF)
    nxt = a[ff + 1]
    markers = ff[(nxt != 0x00) & (nxt != 0xFF) & ((nxt < 0xD0) | (nxt > 0xD7))]   # candidate marker offsets
    pos = 2                                                                      # after SOI
    while pos + 1 < n:
        if a[pos] != 0xFF:
            return None                                                          # lost sync: not a marker
        code = int(a[pos + 1])
        if code == 0xFF:                                                         # fill byte before a marker
            pos += 1
            continue
        if code == 0xD9:
            return pos + 2
        if 0xD0 <= code <= 0xD8 or code == 0x01:                                 # stand-alone markers
            pos += 2
            continue
        if pos + 3 >= n:
            return None
        pos += 2 + (int(a[pos + 2]) << 8 | int(a[pos + 3]))
        if code == 0xDA:                                                         # scan: skip entropy data
            k = int(np.searchsorted(markers, pos))
            if k == markers.size:
                return None
            pos = int(markers[k])
    return None


@contextlib.contextmanager
def _captured_stderr(sink: list[str]) -> Iterator[None]:
    """Collect libjpeg's warnings, which C code writes to file descriptor 2, during the block
    into ``sink``; other text that arrives meanwhile (another thread's output) is written back.
    Without a usable stderr or temporary folder it listens to nothing (decoding still works)."""
    with _STDERR_LOCK:
        try:
            tmp = tempfile.TemporaryFile()
        except OSError:
            yield
            return
        try:
            saved = os.dup(2)
        except OSError:
            tmp.close()
            yield
            return
        with tmp:
            with contextlib.suppress(AttributeError, ValueError, OSError):
                sys.stderr.flush()
            try:
                os.dup2(tmp.fileno(), 2)
                try:
                    yield
                finally:
                    os.dup2(saved, 2)
            finally:
                os.close(saved)
            tmp.seek(0)
            lines = tmp.read().decode("utf-8", "replace").splitlines()
    ours = [ln for ln in lines if ln.startswith(_LIBJPEG_WARNINGS)]
    sink.extend(ours)
    rest = "".join(ln + "\n" for ln in lines if ln not in ours)
    if rest:
        os.write(2, rest.encode())


def _exif_orientation(data: bytes, fmt: str | None) -> int:
    """EXIF orientation tag (1-8) of an encoded image, 1 when absent or unreadable.

    PNG: the ``eXIf`` chunk before the image data, found by walking the chunk headers
    (Pillow's ``getexif`` would decode the whole picture to look for it).
    """
    from PIL import Image

    try:
        if fmt == "png":
            pos, exif = 8, None
            while pos + 8 <= len(data):
                length, kind = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8]
                if kind == b"eXIf":
                    exif = Image.Exif()
                    exif.load(bytes(data[pos + 8:pos + 8 + length]))
                    break
                if kind in (b"IDAT", b"IEND"):
                    break
                pos += 12 + length
            value = int(exif.get(0x0112, 1)) if exif is not None else 1
        elif fmt in ("jpeg", "tiff"):
            with Image.open(io.BytesIO(data)) as im:
                value = int(im.getexif().get(0x0112, 1))
        else:
            return 1
    except Exception:  # an EXIF block Pillow cannot parse: shown as stored
        return 1
    return value if value in _ORIENTATION else 1


def _orient(img: np.ndarray, orientation: int) -> np.ndarray:
    if orientation not in _ORIENTATION:
        return img
    transpose, flip_rows, flip_cols = _ORIENTATION[orientation]
    if transpose:
        img = np.swapaxes(img, 0, 1)
    if flip_rows:
        img = img[::-1]
    if flip_cols:
        img = img[:, ::-1]
    return np.ascontiguousarray(img)


#: What a viewer does to the stored pixels for each EXIF orientation (named in refusals).
_ORIENTATION_WORDS = {2: "mirrored left-right", 3: "turned 180 degrees", 4: "mirrored top-bottom",
                      5: "mirrored and turned 90 degrees counter-clockwise", 6: "turned 90 degrees clockwise",
                      7: "mirrored and turned 90 degrees clockwise", 8: "turned 90 degrees counter-clockwise"}


def exif_orientation(path: str | os.PathLike) -> int:
    """The EXIF orientation tag (2-8) of an image file, 1 when it has none (or an unreadable one).
    ``read_image`` and ``image_size`` apply it."""
    path = Path(path)
    with reading(path), open(path, "rb") as f:
        head = f.read(1 << 20)      # EXIF sits near the start (JPEG APP1, PNG eXIf before the data)
    fmt = sniff_format(head)
    if fmt == "tiff":
        with reading(path):
            head = path.read_bytes()
    return _exif_orientation(head, fmt)


def describe_orientation(path: str | os.PathLike) -> str | None:
    """``"EXIF orientation 6: shown turned 90 degrees clockwise"`` for a file whose tag makes the
    kit (like a viewer) turn or mirror its pixels; None when it has no such tag or cannot be read."""
    try:
        value = exif_orientation(path)
    except (OSError, ValueError):
        return None
    return f"EXIF orientation {value}: shown {_ORIENTATION_WORDS[value]}" if value in _ORIENTATION_WORDS else None


@contextlib.contextmanager
def reading(path: str | os.PathLike) -> Iterator[None]:
    """An ``OSError`` in the block (permission denied, I/O error) while reading the input
    ``path`` is re-raised naming the file that failed (``path`` if the error names none) as
    an input (``safety.with_path(..., side="input")``; ``runtime.describe_error`` prints it)."""
    try:
        yield
    except OSError as exc:
        if exc.errno is None or getattr(exc, "side", None):
            raise
        from gamma_kit.safety import with_path

        raise with_path(exc, exc.filename if exc.filename is not None else path, side="input") from exc


def _decode(path: Path, flags: int) -> np.ndarray:
    """Decode ``path`` by its content with OpenCV ``flags``; EXIF orientation applied."""
    _check_file(path, "image file")
    with reading(path):
        data = np.fromfile(str(path), dtype=np.uint8)  # np.fromfile + imdecode handles non-ASCII paths
    return _decode_bytes(data, path, flags)


def _check_file(path: Path, what: str) -> None:
    """``FileNotFoundError`` unless ``path`` is a file (a folder there is named as one)."""
    with reading(path):
        if path.is_file():
            return
        if path.exists():
            raise ValueError(f"{path}: a folder, not an {what}" if what[0] in "aeiou" else
                             f"{path}: a folder, not a {what}")
    raise FileNotFoundError(f"{what} not found: {path}")


def _decode_bytes(data: np.ndarray, name: str | os.PathLike, flags: int) -> np.ndarray:
    """Decode the encoded image ``data`` (uint8 bytes) by its content; ``name`` in messages."""
    fmt = sniff_format(data[:8].tobytes())
    if fmt == "jpeg":
        end = jpeg_end(data)
        if end is None:
            # OpenCV's memory source pads a cut stream with grey without a word; we refuse it.
            raise ValueError(f"{name}: JPEG is truncated or damaged (the data stops before the end-of-image marker)")
        data = data[:end]
    warnings_seen: list[str] = []
    if data.size == 0:
        img = None
    elif fmt == "jpeg":
        with _captured_stderr(warnings_seen):
            img = cv2.imdecode(data, flags | cv2.IMREAD_IGNORE_ORIENTATION)
    else:
        img = cv2.imdecode(data, flags | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None:
        raise ValueError(f"{name}: cannot be decoded as an image (corrupt, truncated or not an image file)")
    if warnings_seen:
        raise ValueError(f"{name}: JPEG data is corrupt (libjpeg: {warnings_seen[0].strip()})")
    head = data.tobytes() if fmt == "tiff" else data[:1 << 20].tobytes()   # EXIF sits near the start
    return _orient(img, _exif_orientation(head, fmt))


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a colour image as RGB ``uint8`` of shape (H, W, 3), as a viewer shows it
    (EXIF orientation applied). Raises ``ValueError`` for corrupt or truncated files."""
    path = Path(path)
    img = _decode(path, cv2.IMREAD_COLOR)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image file from its header (no full decode), after EXIF
    orientation, so it always equals ``read_image(path).shape[1::-1]``."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    _check_file(path, "image file")
    try:
        with reading(path), Image.open(path) as im:
            w, h = int(im.size[0]), int(im.size[1])
    except UnidentifiedImageError as exc:
        raise ValueError(f"{path}: cannot be read as an image ({exc})") from exc
    except OSError as exc:
        if getattr(exc, "side", None):
            raise
        raise ValueError(f"{path}: cannot be read as an image ({exc})") from exc
    return (h, w) if exif_orientation(path) in (5, 6, 7, 8) else (w, h)


def check_photo_size(size: tuple[int, int], name: str | os.PathLike = "image",
                     min_side: int = MIN_FUNDUS_SIDE) -> None:
    """Raise ``ValueError`` naming ``name`` when ``size`` = (width, height) px has a short side
    below ``min_side`` px (the one message for a photo too small for the kit)."""
    w, h = size
    if min(w, h) < min_side:
        raise ValueError(f"{name}: image is {w}x{h} px; fundus photos need at least {min_side} px "
                         "on the short side")


def check_photo_sizes(paths: Iterable[str | os.PathLike], min_side: int = MIN_FUNDUS_SIDE) -> None:
    """Refuse, before any work, photos whose short side is below ``min_side`` px (sizes from the
    file headers, ``image_size``): one ``ValueError`` line naming the first such file and the
    minimum, and how many more there are. A file that cannot be read raises its own error.
    ``paths`` may be an {id: path} dict (its values are checked)."""
    if isinstance(paths, dict):
        paths = paths.values()
    small = []
    for path in paths:
        try:
            check_photo_size(image_size(path), path, min_side)
        except ValueError as exc:
            small.append((Path(path), exc))
    if small:
        more = (f" ({len(small) - 1} more photo(s) that small: {[p.name for p, _ in small[1:6]]})"
                if len(small) > 1 else "")
        raise ValueError(f"{small[0][1]}{more}")


def check_fundus_image(image: np.ndarray, name: str | os.PathLike = "image",
                       min_side: int = MIN_FUNDUS_SIDE):
    """Refuse an RGB (H, W, 3) ``uint8`` image that cannot be a usable fundus photograph.

    Raises ``ValueError`` naming ``name`` when the short side is below ``min_side`` px, or
    when there is no circular field of view: the surround outside the field found by
    ``geometry.detect_fov`` is not mostly dark (``FOV_DARK_SHARE`` below ``FOV_DARK_LEVEL``)
    or the field is pixel noise (mean neighbour step above ``NOISE_STEP_LIMIT``). Returns the
    ``FieldOfView``. Runs on a copy at most 256 px wide (32 ms for a 2992x2000 photo, half its decode).
    """
    from gamma_kit.geometry import detect_fov

    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"{name}: expected an RGB uint8 image of shape (H, W, 3), got {img.dtype} {img.shape}")
    h, w = img.shape[:2]
    check_photo_size((w, h), name, min_side)
    not_fundus = f"{name}: no circular field of view on a dark surround (not a fundus photograph?)"
    try:
        fov = detect_fov(img)
    except ValueError:
        raise ValueError(not_fundus + "; the image is (nearly) black") from None
    f = min(1.0, 256 / w)
    small = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA) \
        if f < 1 else img
    grey = small.max(axis=2)
    yy, xx = np.mgrid[0:grey.shape[0], 0:grey.shape[1]]
    outside = ~((xx + 0.5 - fov.cx * f) ** 2 + (yy + 0.5 - fov.cy * f) ** 2 <= (fov.radius * f * 1.04) ** 2)
    if outside.sum() >= 0.01 * grey.size and (grey[outside] < FOV_DARK_LEVEL).mean() < FOV_DARK_SHARE:
        raise ValueError(not_fundus)
    # noise is judged at full resolution (shrinking averages it away), on a central patch
    cy, cx, half = int(fov.cy), int(fov.cx), max(8, min(128, int(fov.radius / 2)))
    patch = img[max(0, cy - half):cy + half, max(0, cx - half):cx + half].astype(np.int16)
    if patch.shape[1] > 1 and np.abs(np.diff(patch, axis=1)).mean() > NOISE_STEP_LIMIT:
        raise ValueError(not_fundus + "; the field is pixel noise")
    return fov


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
    if path.suffix.lower() in (".jpg", ".jpeg") or (path.is_file() and sniff_format(_head(path)) == "jpeg"):
        raise _jpeg_mask_error(path.parent, [path.name])
    return _as_mask(_decode(path, cv2.IMREAD_UNCHANGED), path, expected_size)


def decode_mask(data: bytes, name: str, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """``read_mask`` for the encoded bytes of a mask file (a zip member); ``name`` (its file
    name, e.g. ``sub.zip/Disc_Cup_Segmentations/0101.bmp``) is used in messages and for the suffix."""
    buf = np.frombuffer(data, dtype=np.uint8)
    if name.lower().endswith((".jpg", ".jpeg")) or sniff_format(bytes(data[:8])) == "jpeg":
        where, _, file = name.rpartition("/")
        raise _jpeg_mask_error(where or name, [file])
    return _as_mask(_decode_bytes(buf, name, cv2.IMREAD_UNCHANGED), name, expected_size)


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


def _head(path: Path, n: int = 8) -> bytes:
    with reading(path), open(path, "rb") as f:
        return f.read(n)


def list_images(folder: str | os.PathLike, exts: Iterable[str] = IMAGE_EXTS,
                what: str = "image folder") -> dict[str, Path]:
    """Map image id (file stem) -> path for the image files in ``folder``, sorted by id.
    ``what`` names the folder in the not-found message."""
    folder = Path(folder)
    with reading(folder):
        if not folder.is_dir():
            if folder.exists():
                raise ValueError(f"{folder}: a file, not a folder ({what} expected)")
            raise FileNotFoundError(f"{what} not found: {folder}")
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


class DataWarning(UserWarning):
    """Something about the user's data worth a line (e.g. images without a GT row);
    ``runtime.run_cli`` prints these as one ``warning: ...`` line."""


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
    _check_file(path, what)
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
    _check_file(zip_path, "archive")
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


def load_fovea_split(root: str | os.PathLike | None, split: str = "training",
                     gt_path: str | os.PathLike | None = None) -> FoveaSplit:
    """Load task 2 ``split``: images, and the GT table (``find_fovea_gt``, or ``gt_path``),
    re-keyed onto the image ids (``match_gt_to_images``; unlabelled images are warned about)."""
    task = find_task_dir(root, "fovea")
    images = list_images(task / split / IMAGE_DIR)
    if gt_path is None:
        gt_path = find_fovea_gt(task, split)
    gt = None
    if gt_path is not None:
        gt = match_gt_to_images(read_fovea_gt(gt_path), images, Path(gt_path))
    return FoveaSplit(task / split, images, gt)


def load_seg_split(root: str | os.PathLike | None, split: str = "training",
                   mask_dir: str | os.PathLike | None = None) -> SegSplit:
    """Load task 3 ``split``: images and (if a mask folder exists or is given) masks.

    Every image must have a mask when masks are present, and every mask an image.
    """
    task = find_task_dir(root, "seg")
    images = list_images(task / split / IMAGE_DIR)
    if mask_dir is None:
        mask_dir = find_mask_dir(task, split)
    masks = None
    if mask_dir is not None:
        masks = list_masks(mask_dir)
        no_mask = sorted(set(images) - set(masks))
        no_image = sorted(set(masks) - set(images))
        if no_mask or no_image:
            raise ValueError(f"{mask_dir}: images and masks do not pair up; ids without a mask: {no_mask[:10]}, "
                             f"masks without an image: {no_image[:10]}")
    return SegSplit(task / split, images, masks)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync and
    ``os.replace``: readers see the old file or the new one. An ``OSError`` (full disk,
    read-only folder) is re-raised naming ``path``, and no temporary file is left
    (``safety.atomic_file``)."""
    from gamma_kit.safety import atomic_file

    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_copy(src: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Copy the file ``src`` onto ``path`` the way ``atomic_write_bytes`` writes (a temporary
    file in the same folder, fsync, ``os.replace``), without holding it in memory. An
    ``OSError`` while writing names ``path``; one reading ``src`` names ``src``."""
    from gamma_kit.safety import atomic_file

    with atomic_file(path, sources=(src,)) as tmp:
        shutil.copyfile(src, tmp)
    return Path(path)


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
