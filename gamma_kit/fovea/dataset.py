"""Fovea training data: canonical images decoded once and cached, random-shift crops
for training, fixed-ROI crops for validation and prediction.

Conventions
- Canonical frame: "optic disc on the left, 1956 x 1934" (gamma_kit.geometry); a
  canonical image at ``scale`` is (round(1934 s), round(1956 s), 3) uint8 and
  canonical point p lies at p * s in it.
- Crops are (C, H, W) float32 raw 0-255 RGB (the original fed unnormalised pixels;
  it stored (C, W, H)); targets (1, H, W) float32 from the shared HeatmapCodec.
- Training crop (SPEC 2): centre = fovea + (dx, dy), dx ~ U[-240, 240], dy ~
  U[-180, 180] full-scale pixels; the crop origin is an integer pixel of the scaled
  canonical image and the target is the fovea's exact position inside the crop.
  Pixels outside the canonical image are 0.
- Validation / prediction crop: the fixed ROI (codec.roi_origin_px, heatmap size), or where
  a gamma_kit.fovea.roi policy puts it (anchored on the detected disc; gamma_kit.fovea.inference).

Every image is decoded once per process (``CanonicalCache``, in memory) and, with
``cache_dir``, stored as .npy plus a JSON sidecar keyed by the file's size and mtime,
so later runs skip JPEG decoding and eye-side detection.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from gamma_kit.data import check_fundus_image, image_size, read_image, read_image_reduced
from gamma_kit.safety import atomic_write_bytes, atomic_write_text
from gamma_kit.fovea.augment import check_photometric, photometric
from gamma_kit.fovea.codec import HeatmapCodec
from gamma_kit.geometry import CanonicalFrame, EyeSideError, reduced_decode_factor, sharing_small

__all__ = ["CanonicalImage", "CanonicalCache", "FoveaItem", "make_items", "crop", "roi_crop",
           "FoveaCropDataset", "iterate_batches", "SIDE_OVERRIDE_HINT", "DECODES"]

#: ``data.decode`` of a fovea config: ``full`` decodes every photo whole (the original; runs written
#: before the key existed); ``reduced`` decodes a JPEG at half size where the canonical image at the
#: codec's scale still shrinks it by 2 or more (``geometry.reduced_decode_factor``: the CPU config's
#: 1/4), 2.7x faster for a GAMMA photo. Training, validation and predict of one run decode alike.
DECODES = ("full", "reduced")

SIDE_OVERRIDE_HINT = ("give its side in an override file (CSV with columns data,disc_side; "
                      "--side-overrides FILE on the command line, data.side_overrides in a config)")


@dataclass
class CanonicalImage:
    """One source image in the canonical frame: ``image`` (h, w, 3) uint8 at ``scale``,
    the ``frame`` to map points back, the source ``size`` (w, h), and the optic disc the
    eye-side detector found (``disc``: (x, y) full-scale canonical, None if not found;
    ``disc_confidence``: its distance from the field centre in field radii, see
    geometry.DiscSide), which can anchor the fovea ROI (gamma_kit.fovea.roi)."""

    id: str
    path: Path
    size: tuple[int, int]
    frame: CanonicalFrame
    scale: float
    image: np.ndarray
    disc: tuple[float, float] | None = None
    disc_confidence: float = 0.0


class CanonicalCache:
    """Decode-once cache of canonical images at one scale.

    Args:
        scale: canonical image scale (1.0 = 1956 x 1934).
        cache_dir: optional folder for .npy copies (reused across runs).
        side_overrides: id -> "left"/"right", skipping eye-side detection.
        in_memory: keep every image decoded in memory (training reads them every epoch); False
            for a single pass over many photos (prediction), which then holds one at a time.
        decode: ``DECODES`` (a config's ``data.decode``).
    """

    def __init__(self, scale: float, cache_dir: str | os.PathLike | None = None,
                 side_overrides: Mapping[str, str] | None = None, in_memory: bool = True,
                 decode: str = "full") -> None:
        if decode not in DECODES:
            raise ValueError(f"data.decode must be one of {DECODES}, got {decode!r}")
        self.decode = decode
        self.scale = float(scale)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.side_overrides = dict(side_overrides or {})
        self.in_memory = in_memory
        self._mem: dict[tuple[str, str], CanonicalImage] = {}

    @classmethod
    def for_config(cls, cfg: dict) -> "CanonicalCache":
        """The cache a run of the fovea config ``cfg`` reads its photos through: the codec's scale and
        ``data.decode``, ``data.cache_dir``, ``data.side_overrides``."""
        from gamma_kit.geometry import read_side_overrides

        data = cfg["data"]
        overrides = read_side_overrides(data["side_overrides"]) if data["side_overrides"] else {}
        return cls(cfg["codec"]["scale"], data["cache_dir"], overrides, decode=data["decode"])

    def check_serves(self, scale: float, decode: str, what: str) -> None:
        """ValueError unless this cache works at ``scale`` with ``decode``, as ``what`` (the config, the
        checkpoints) needs: a shared cache must give a run the pixels its own would."""
        if (self.scale, self.decode) != (float(scale), decode):
            raise ValueError(f"the canonical cache works at scale {self.scale} ({self.decode} decode), {what} at "
                             f"{scale} ({decode} decode)")

    def _disk_key(self, image_id: str, path: Path) -> str:
        st = path.stat()
        side = self.side_overrides.get(image_id, "auto")
        raw = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{self.scale}|{side}|disc"   # |disc: v2 sidecar
        if self.decode != "full":
            raw += f"|{self.decode}"
        return f"{image_id}_{hashlib.sha1(raw.encode()).hexdigest()[:12]}"

    def get(self, image_id: str, path: str | os.PathLike) -> CanonicalImage:
        """The canonical image of ``path`` (decoded and warped at most once).

        Raises ValueError naming the file when its eye side cannot be decided.
        """
        path = Path(path)
        key = (image_id, str(path))
        if key in self._mem:
            return self._mem[key]
        item = self._load_disk(image_id, path) if self.cache_dir else None
        if item is None:
            factor = reduced_decode_factor(image_size(path), self.scale) if self.decode == "reduced" else 1
            item = self._decode(image_id, path, factor)
            if item is None:            # the field is smaller than the size suggested: decode it whole
                item = self._decode(image_id, path, 1)
            if self.cache_dir:
                self._save_disk(item)
        if self.in_memory:
            self._mem[key] = item
        return item

    def _decode(self, image_id: str, path: Path, factor: int) -> CanonicalImage | None:
        """Decode (at 1/``factor``), check, find the eye side and warp one photo; None when the frame
        found does not allow ``factor`` (``CanonicalFrame.allows_factor``)."""
        image, factor, size = read_image_reduced(path, factor) if factor != 1 else (read_image(path), 1, None)
        try:
            with sharing_small(image):      # the check's field and the eye side's disc: one downscale
                fov = check_fundus_image(image, path, size=size)
                frame, det = CanonicalFrame.with_disc(image, disc_side=self.side_overrides.get(image_id),
                                                      name=str(path), fov=fov, factor=factor, size=size)
        except ValueError as err:
            msg = str(err) if str(path) in str(err) else f"{path}: {err}"
            if isinstance(err, EyeSideError):
                raise EyeSideError(msg if "override" in msg else f"{msg}; {SIDE_OVERRIDE_HINT}") from err
            raise ValueError(msg) from err
        if not frame.allows_factor(factor, self.scale):
            return None
        canon = frame.warp_image(image, scale=self.scale, factor=factor)
        disc = None if det is None else tuple(float(v) for v in frame.to_canonical([det.disc_xy])[0])
        return CanonicalImage(image_id, path, frame.image_size, frame, self.scale, canon,
                              disc, 0.0 if det is None else float(det.confidence))

    def _load_disk(self, image_id: str, path: Path) -> CanonicalImage | None:
        stem = self.cache_dir / self._disk_key(image_id, path)
        meta_path, npy_path = stem.with_suffix(".json"), stem.with_suffix(".npy")
        if not (meta_path.is_file() and npy_path.is_file()):
            return None
        try:
            meta = json.loads(meta_path.read_text())
            canon = np.load(npy_path)
        except (ValueError, OSError):
            return None   # a damaged cache entry is rebuilt
        frame = CanonicalFrame(tuple(meta["image_size"]), meta["frame_scale"], tuple(meta["offset"]),
                               meta["flipped"])
        disc = meta.get("disc")
        return CanonicalImage(image_id, path, tuple(meta["image_size"]), frame, self.scale, canon,
                              None if disc is None else (float(disc[0]), float(disc[1])),
                              float(meta.get("disc_confidence", 0.0)))

    def _save_disk(self, item: CanonicalImage) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        stem = self.cache_dir / self._disk_key(item.id, item.path)
        import io

        buf = io.BytesIO()
        np.save(buf, item.image)
        atomic_write_bytes(stem.with_suffix(".npy"), buf.getvalue())
        f = item.frame
        atomic_write_text(stem.with_suffix(".json"), json.dumps({
            "image_size": list(f.image_size), "frame_scale": f.scale, "offset": list(f.offset),
            "flipped": f.flipped, "source": str(item.path),
            "disc": None if item.disc is None else list(item.disc), "disc_confidence": item.disc_confidence}))

    def load_all(self, images: Mapping[str, Path], progress: bool = True) -> dict[str, CanonicalImage]:
        """Decode all ``images`` (id -> path) with a progress bar."""
        from tqdm import tqdm

        return {i: self.get(i, p) for i, p in tqdm(images.items(), desc="decode images", unit="img",
                                                    disable=not progress, leave=False)}


@dataclass
class FoveaItem:
    """A canonical image with its fovea in full-scale canonical coordinates (x, y)."""

    canon: CanonicalImage
    fovea: np.ndarray


def make_items(canon: Mapping[str, CanonicalImage], gt: pd.DataFrame, gt_name: str = "ground truth"
               ) -> list[FoveaItem]:
    """Pair canonical images with GT rows (image coordinates), checking every point lies
    inside its image (ValueError naming the id and ``gt_name``)."""
    items = []
    for image_id, c in canon.items():
        if image_id not in gt.index:
            raise ValueError(f"{gt_name}: no row for image {image_id!r} ({c.path})")
        x, y = float(gt.at[image_id, "Fovea_X"]), float(gt.at[image_id, "Fovea_Y"])
        w, h = c.size
        if not (0 <= x <= w and 0 <= y <= h):
            raise ValueError(f"{gt_name}: fovea of {image_id!r} at ({x:g}, {y:g}) lies outside its image "
                             f"{c.path.name} of size {w}x{h}")
        items.append(FoveaItem(c, c.frame.to_canonical([[x, y]])[0]))
    return items


def crop(image: np.ndarray, origin: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """(h, w, 3) window of ``image`` at integer ``origin`` (x, y) and ``size`` (w, h),
    returned as (3, h, w) float32; pixels outside the image are 0."""
    x0, y0 = int(origin[0]), int(origin[1])
    w, h = size
    out = np.zeros((3, h, w), np.float32)
    ih, iw = image.shape[:2]
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + w, iw), min(y0 + h, ih)
    if sx1 > sx0 and sy1 > sy0:
        out[:, sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1].transpose(2, 0, 1)
    return out


def roi_crop(canon: CanonicalImage, codec: HeatmapCodec, origin: tuple[int, int] | None = None) -> np.ndarray:
    """The ROI crop (3, h, w) float32 of a canonical image at the codec's scale, at crop corner
    ``origin`` (pixels of the scaled canonical image; None: the fixed ROI)."""
    if abs(canon.scale - codec.scale) > 1e-12:
        raise ValueError(f"canonical image at scale {canon.scale} but the codec works at {codec.scale}")
    return crop(canon.image, codec.roi_origin_px if origin is None else tuple(origin), codec.heatmap_size)


class FoveaCropDataset:
    """Crops and heatmap targets for training (``train=True``: random shifts) or
    validation (fixed ROI). ``dataset[k]`` -> (image (3, h, w), target (1, h, w)).

    Random shifts are drawn from ``np.random.default_rng([seed, epoch, k])``: call
    ``set_epoch`` each epoch for new, reproducible crops. ``photometric`` (training only; None =
    off): random darkening and haze (``photometric``), from its own stream ``[seed, epoch, k, 1]``.
    """

    def __init__(self, items: list[FoveaItem], codec: HeatmapCodec, train: bool = True,
                 shift: tuple[float, float] = (240, 180), seed: int = 0, photometric: dict | None = None) -> None:
        self.items, self.codec, self.train = items, codec, train
        self.shift = (float(shift[0]), float(shift[1]))
        self.seed, self.epoch = int(seed), 0
        self.photometric = check_photometric(photometric)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def crop_origin(self, k: int) -> tuple[int, int]:
        """Integer crop origin (x, y) in scaled canonical pixels for sample ``k``."""
        c = self.codec
        if not self.train:
            return c.roi_origin_px
        rng = np.random.default_rng([self.seed, self.epoch, k])
        d = rng.uniform(-1, 1, 2) * np.asarray(self.shift)
        centre = (self.items[k].fovea + d) * c.scale
        return int(np.floor(centre[0])) - c.width // 2, int(np.floor(centre[1])) - c.height // 2

    def __getitem__(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        item, c = self.items[k], self.codec
        ox, oy = self.crop_origin(k)
        image = crop(item.canon.image, (ox, oy), c.heatmap_size)
        if self.train and self.photometric is not None:
            image = photometric(image, np.random.default_rng([self.seed, self.epoch, k, 1]), self.photometric)
        target = c.encode(item.fovea * c.scale - np.array([ox, oy], np.float64))[None]
        return image, target


def iterate_batches(dataset: FoveaCropDataset, batch_size: int, shuffle: bool,
                    rng: np.random.Generator | None = None):
    """Yield (images (B, 3, h, w), targets (B, 1, h, w), indices) float32 batches.
    The last batch may be smaller."""
    order = np.arange(len(dataset))
    if shuffle:
        (rng or np.random.default_rng()).shuffle(order)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        pairs = [dataset[int(k)] for k in idx]
        yield np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]), idx
