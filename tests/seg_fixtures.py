"""Tiny synthetic GAMMA task 3 data for the segmentation tests.

Uses ``gamma_kit.synth`` when it is importable; otherwise draws its own images: a red
fundus disc on black, a bright optic disc ellipse with a brighter cup inside, at a
random position. Masks follow GAMMA: 0 = cup, 128 = disc rim, 255 = background.
Photos are at least ``MIN_FUNDUS_SIDE`` (128) px on the short side, the smallest that
``prepare`` and ``predict`` accept: a smaller size asked for is scaled up to it.
"""
from __future__ import annotations

from pathlib import Path

import math

import cv2
import numpy as np

from gamma_kit.data import MIN_FUNDUS_SIDE

TASK = "task3_disc_cup_segmentation"


def fundus_size(size: tuple[int, int]) -> tuple[int, int]:
    """``size`` = (w, h), scaled up (aspect kept, rounded up) to a short side of ``MIN_FUNDUS_SIDE``
    px when it is below that; the commands refuse smaller photos."""
    w, h = size
    if min(w, h) >= MIN_FUNDUS_SIDE:
        return w, h
    f = MIN_FUNDUS_SIDE / min(w, h)
    return max(MIN_FUNDUS_SIDE, math.ceil(w * f - 1e-9)), max(MIN_FUNDUS_SIDE, math.ceil(h * f - 1e-9))


def draw_fundus(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One (H, W, 3) RGB image and its (H, W) GAMMA mask, ``size`` = (w, h)."""
    w, h = size
    img = np.zeros((h, w, 3), np.uint8)
    cv2.circle(img, (w // 2, h // 2), int(0.48 * min(w, h)), (150, 40, 20), -1)
    noise = rng.normal(0, 6, img.shape)
    mask = np.full((h, w), 255, np.uint8)
    cx = int(w * rng.uniform(0.3, 0.7))
    cy = int(h * rng.uniform(0.35, 0.65))
    r = int(min(w, h) * rng.uniform(0.09, 0.13))
    ry = int(r * rng.uniform(1.0, 1.15))
    ratio = rng.uniform(0.4, 0.65)
    cv2.ellipse(img, (cx, cy), (r, ry), 0, 0, 360, (235, 160, 90), -1)
    cv2.ellipse(mask, (cx, cy), (r, ry), 0, 0, 360, 128, -1)
    cv2.ellipse(img, (cx, cy), (int(r * ratio), int(ry * ratio)), 0, 0, 360, (255, 235, 190), -1)
    cv2.ellipse(mask, (cx, cy), (int(r * ratio), int(ry * ratio)), 0, 0, 360, 0, -1)
    img = np.clip(img + noise, 0, 255).astype(np.uint8)
    return img, mask


def make_tiny_seg_data(root: Path, n_train: int = 6, n_test: int = 3, size: tuple[int, int] = (160, 128),
                       seed: int = 0) -> Path:
    """Write ``root/task3_disc_cup_segmentation/{training,testing,testing_GT}``; return the task folder.
    ``size`` (w, h) is lifted by ``fundus_size``."""
    size = fundus_size(size)
    rng = np.random.default_rng(seed)
    task = Path(root) / TASK
    for split, ids, mask_split in (("training", range(1, n_train + 1), "training"),
                                   ("testing", range(n_train + 1, n_train + n_test + 1), "testing_GT")):
        (task / split / "fundus color images").mkdir(parents=True, exist_ok=True)
        (task / mask_split / "Disc_Cup_Mask").mkdir(parents=True, exist_ok=True)
        for k in ids:
            img, mask = draw_fundus(rng, size)
            cv2.imwrite(str(task / split / "fundus color images" / f"{k:04d}.jpg"),
                        cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
            cv2.imwrite(str(task / mask_split / "Disc_Cup_Mask" / f"{k:04d}.bmp"), mask)
    return task


def make_seg_data(root: Path, n_train: int = 6, n_test: int = 3, seed: int = 0,
                  sizes: tuple[tuple[int, int], ...] = ((240, 160), (160, 158))) -> Path:
    """Synthetic task 3 data from ``gamma_kit.synth`` if present, else from ``make_tiny_seg_data``."""
    try:
        from gamma_kit.synth import generate
    except ImportError:
        return make_tiny_seg_data(root, n_train, n_test, sizes[0], seed)
    generate(root, n_train, n_test, seed, sizes=sizes)
    return Path(root) / TASK


def make_prepared(workdir: Path, n_train: int = 6, n_test: int = 2, size: tuple[int, int] = (160, 128),
                  seed: int = 0, val_value: float = 0.34) -> Path:
    """Tiny data prepared and split at ``workdir/data/seg_prepared`` (the configs' default root);
    ``size`` (w, h) is lifted by ``fundus_size``."""
    from gamma_kit.seg.prepare import prepare_dataset, split_dataset

    make_tiny_seg_data(Path(workdir) / "gamma", n_train, n_test, size, seed)
    out = Path(workdir) / "data" / "seg_prepared"
    prepare_dataset(Path(workdir) / "gamma", out, progress=False)
    split_dataset(out, val_value=val_value, seed=seed)
    return out


def small_transforms(size: int = 64) -> tuple[str, str]:
    """``opts`` values replacing the configs' train/val transforms by cheap ones at ``size`` px."""
    train = (f"[{{'type': 'Resize', 'target_size': [{size}, {size}], 'interp': 'AREA'}}, "
             "{'type': 'RandomHorizontalFlip', 'prob': 0.5}, {'type': 'Normalize', 'mean': [0.5, 0.5, 0.5], "
             "'std': [0.5, 0.5, 0.5]}]")
    val = (f"[{{'type': 'Resize', 'target_size': [{size}, {size}], 'interp': 'AREA'}}, "
           "{'type': 'Normalize', 'mean': [0.5, 0.5, 0.5], 'std': [0.5, 0.5, 0.5]}]")
    return f"train_dataset.transforms={train}", f"val_dataset.transforms={val}"


def dataset_opts(prepared: Path, train_list: str = "train_list.txt", val_list: str = "val_list.txt",
                 size: int = 32) -> list[str]:
    """``opts`` pointing a config's train/val datasets at the prepared folder ``prepared`` (absolute
    list paths), with ``small_transforms(size)``."""
    return [f"train_dataset.dataset_root={prepared}", f"train_dataset.train_path={prepared / train_list}",
            f"val_dataset.dataset_root={prepared}", f"val_dataset.val_path={prepared / val_list}",
            *small_transforms(size)]


def brightness_predictor():
    """A stand-in two-stage predictor (``seg.predictor.PredictorCore`` on 64-px crops) whose network
    segments by brightness: disc where the crop is bright, cup where it is brighter (as
    ``draw_fundus`` paints them), as one-hot logits."""
    from gamma_kit.seg.model_dir import RoiSettings
    from gamma_kit.seg.predictor import PredictorCore, build_transforms

    class BrightnessNet(PredictorCore):
        def _forward(self, x):
            v = (x.mean(axis=1) * 0.5 + 0.5) * 255                 # back to 0-255 brightness
            labels = np.where(v > 200, 0, np.where(v > 120, 1, 2))
            return (labels[:, None] == np.arange(3)[None, :, None, None]).astype(np.float32) * 10

    transforms = build_transforms([{"type": "Resize", "target_size": [64, 64], "interp": "AREA"},
                                   {"type": "Normalize", "mean": [0.5] * 3, "std": [0.5] * 3}])
    return BrightnessNet(transforms, 3, roi=RoiSettings(size=64))
