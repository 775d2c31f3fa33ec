"""Read photos robustly: decode by content, refuse broken JPEGs, follow the EXIF orientation.

Files are decoded by their content, not their suffix (a PNG named .jpg is a PNG); a JPEG whose
stream stops before its end marker, or that libjpeg reports as corrupt, is refused; bytes after a
complete image are ignored. Pixels and ``image_size`` both follow the EXIF orientation (the image as
a viewer shows it; ``describe_orientation`` names a tag that turns a photo, for the refusals it
explains). Images are RGB ``uint8`` (H, W, 3). Every reader raises ``FileNotFoundError`` or
``ValueError`` naming the file and what was expected; an ``OSError`` while reading (permission
denied, an I/O error) names the file that failed as an input (``reading``). ``write_image`` writes
atomically (``safety.atomic_write_bytes``).
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

import cv2
import numpy as np

from gamma_kit.safety import atomic_write_bytes

__all__ = ["IMAGE_EXTS", "DataWarning", "sniff_format", "jpeg_end", "exif_orientation", "describe_orientation",
           "reading", "check_input_file", "head_bytes", "decode_file", "decode_bytes", "read_image", "image_size",
           "list_images", "write_image", "read_ahead", "read_image_reduced"]

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")

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
    an input (``safety.with_path(..., side="input")``; ``cli.describe_error`` prints it)."""
    try:
        yield
    except OSError as exc:
        if exc.errno is None or getattr(exc, "side", None):
            raise
        from gamma_kit.safety import with_path

        raise with_path(exc, exc.filename if exc.filename is not None else path, side="input") from exc


def decode_file(path: Path, flags: int) -> np.ndarray:
    """Decode ``path`` by its content with OpenCV ``flags``; EXIF orientation applied."""
    check_input_file(path, "image file")
    with reading(path):
        data = np.fromfile(str(path), dtype=np.uint8)  # np.fromfile + imdecode handles non-ASCII paths
    return decode_bytes(data, path, flags)


def check_input_file(path: Path, what: str) -> None:
    """``FileNotFoundError`` unless ``path`` is a file (a folder there is named as one)."""
    with reading(path):
        if path.is_file():
            return
        if path.exists():
            raise ValueError(f"{path}: a folder, not an {what}" if what[0] in "aeiou" else
                             f"{path}: a folder, not a {what}")
    raise FileNotFoundError(f"{what} not found: {path}")


def decode_bytes(data: np.ndarray, name: str | os.PathLike, flags: int) -> np.ndarray:
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
    img = decode_file(path, cv2.IMREAD_COLOR)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


_REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def read_image_reduced(path: str | os.PathLike, factor: int) -> tuple[np.ndarray, int, tuple[int, int]]:
    """``read_image`` at 1/``factor`` of the photo's size (``factor`` 1, 2, 4 or 8) where it is a
    JPEG: libjpeg then scales its DCT blocks, so a 2992x2000 photo decodes 2.7x faster at 1/2.
    Pixel (i, j) of the result covers the photo's pixels factor*i ... factor*i + factor - 1 (a
    point x there is factor * x in the photo, pixel-corner coordinates); the result is
    ceil(h / factor) x ceil(w / factor). Other formats, and JPEGs with an EXIF orientation tag, are
    decoded at full size (factor 1).
    Returns (the RGB image, the factor applied, the photo's (w, h) as ``image_size`` gives it)."""
    if factor not in (1, *_REDUCED_FLAGS):
        raise ValueError(f"factor must be 1, 2, 4 or 8, got {factor!r}")
    path = Path(path)
    if factor == 1 or sniff_format(head_bytes(path)) != "jpeg" or exif_orientation(path) != 1:
        img = read_image(path)          # (a turned or mirrored photo: its partial last block would move)
        return img, 1, (img.shape[1], img.shape[0])
    size = image_size(path)
    img = cv2.cvtColor(decode_file(path, _REDUCED_FLAGS[factor]), cv2.COLOR_BGR2RGB)
    expected = (-(-size[1] // factor), -(-size[0] // factor))
    if img.shape[:2] != expected:       # not libjpeg's rounding: decode it whole rather than guess
        img = read_image(path)
        return img, 1, (img.shape[1], img.shape[0])
    return img, factor, size


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image file from its header (no full decode), after EXIF
    orientation, so it always equals ``read_image(path).shape[1::-1]``."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    check_input_file(path, "image file")
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


def head_bytes(path: Path, n: int = 8) -> bytes:
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


class DataWarning(UserWarning):
    """Something about the user's data worth a line (e.g. images without a GT row);
    ``cli.run_cli`` prints these as one ``warning: ...`` line."""


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


_T = TypeVar("_T")
_R = TypeVar("_R")

#: photos read ahead of the one in use (memory: about this many decoded photos more)
READ_AHEAD = 4


def read_ahead(items: Iterable[_T], fn: Callable[[_T], _R], workers: int | None = None,
               ahead: int = READ_AHEAD) -> Iterator[tuple[_T, "_R | Exception"]]:
    """``(item, fn(item))`` for each item, in order, with ``fn`` (reading and preparing a photo)
    running up to ``ahead`` items in advance on ``workers`` threads (default: the cores, at most 2)
    while the caller works on the current one: OpenCV's decoding and resizing and NumPy's array
    work release the GIL, so the next photos are read while the network runs. An exception that
    ``fn`` raises is yielded in place of its result (the caller decides, in order). Leaving the
    loop early cancels what was not started. The results are those of calling ``fn`` in turn."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    workers = workers or max(1, min(2, os.cpu_count() or 1))

    def call(item):
        try:
            return fn(item)
        except Exception as exc:          # noqa: BLE001  handed to the caller with its item
            return exc

    it = iter(items)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="read_ahead")
    try:
        queue = deque()
        for item in it:
            queue.append((item, pool.submit(call, item)))
            if len(queue) > ahead:
                break
        while queue:
            item, fut = queue.popleft()
            nxt = next(it, _END)
            if nxt is not _END:
                queue.append((nxt, pool.submit(call, nxt)))
            yield item, fut.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


_END = object()
