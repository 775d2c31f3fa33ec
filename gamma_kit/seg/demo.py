"""End-to-end segmentation demo: prepare -> split -> train (CPU config) -> predict -> zip -> score.

``run_demo(data_root, work_dir)`` needs a GAMMA-like task 3 folder with training masks,
and testing images with masks in ``testing/`` or ``testing_GT/`` (``gamma_kit.synth``
writes one). Everything goes under ``work_dir``; the user's data is only read.

By default it runs the two-stage path (issue 9): ``prepare --roi`` crops around the
ground-truth disc, the ROI CPU config (``roi_liteunet_cpu.yml``) trained briefly at a
smaller input (``size``, 128 px) so that it stays fast, then predict on the full test
photos: locate the disc, crop, segment, paste back. ``two_stage=False`` gives the
whole-image CPU config (``liteunet_gamma_cpu.yml``) as before. With the defaults the seg
demo takes about a minute on 2 CPU cores (measured: 51 s training, 0.11 s per test photo; on 24
synthetic training photos disc Dice 0.835, cup 0.530: 120 iterations are few for stage 2, whose
full config trains 1500).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import gamma_kit  # noqa: F401  (thread settings before paddle)
from gamma_kit.resources import config_path

__all__ = ["run_demo", "CPU_CONFIG", "ROI_CPU_CONFIG", "DEMO_ITERS", "DEMO_SIZE", "DEMO_BATCH",
           "resized_transforms_opts"]

CPU_CONFIG = config_path("seg/liteunet_gamma_cpu.yml")
ROI_CPU_CONFIG = config_path("seg/roi_liteunet_cpu.yml")
DEMO_ITERS = 120
DEMO_SIZE = 128          # network input of the demo's ROI model (the full config uses 192)
DEMO_BATCH = 4           # crops per step in one process (the full config: 8, over 2 processes)
DEMO_CROP_SIZE = 256     # crop size as prepare writes it for the demo


def resized_transforms_opts(config: str | os.PathLike, size: int) -> list[str]:
    """``opts`` that keep the config's train/val transforms but resize to ``size`` x ``size``."""
    from gamma_kit.seg.training import load_config

    cfg = load_config(config)
    opts = []
    for section in ("train_dataset", "val_dataset"):
        ops = []
        for t in (cfg.dic.get(section) or {}).get("transforms", []):
            t = dict(t)
            if t["type"] == "Resize":
                t["target_size"] = [int(size), int(size)]
            ops.append(t)
        if ops:
            opts.append(f"{section}.transforms={ops!r}")
    return opts


def run_demo(data_root: str | os.PathLike, work_dir: str | os.PathLike, iters: int | None = None,
             config: str | os.PathLike | None = None, val_value: float = 0.1, postprocess=True,
             seed: int = 0, device: str = "auto", progress: bool = False, two_stage: bool = True,
             size: int | None = DEMO_SIZE, roi_copies: int = 2, tta: bool = False) -> dict:
    """Run the whole task 3 pipeline briefly; return the test metrics and timings.

    ``two_stage`` (default): ROI crops and the ROI CPU config at ``size`` px (None: the config's
    own size); else the whole-image CPU config. ``iters`` defaults to ``DEMO_ITERS``.
    Returns {"dice_disc", "dice_cup", "vcdr_mae", "score", "n", "dice_disc_raw", "dice_cup_raw",
    "vcdr_mae_raw", "train_seconds", "seconds_per_image", "zip", "pred_dir", "model_dir",
    "two_stage", "stage1_unsure"}; ``*_raw`` are without post-processing.
    """
    from gamma_kit.seg.submission import find_gt_mask_dir, predict_folder, test_images
    from gamma_kit.seg.prepare import RoiSettings, prepare_dataset, split_dataset
    from gamma_kit.seg.training import train_from_config

    iters = DEMO_ITERS if iters is None else iters
    config = config or (ROI_CPU_CONFIG if two_stage else CPU_CONFIG)
    work = Path(work_dir)
    prepared = work / ("seg_roi_prepared" if two_stage else "seg_prepared")
    roi = RoiSettings(size=DEMO_CROP_SIZE, copies=roi_copies, seed=seed) if two_stage else None
    prepare_dataset(data_root, prepared, overwrite=True, progress=progress, roi=roi)
    lists = split_dataset(prepared, val_value=val_value, seed=seed)
    gt_dir = find_gt_mask_dir(data_root, "testing")
    if gt_dir is None:
        raise FileNotFoundError(f"{data_root}: the demo scores the test split, but found no testing masks "
                                "(testing/Disc_Cup_Mask or testing_GT/Disc_Cup_Mask)")
    opts = [f"train_dataset.dataset_root={prepared}", f"train_dataset.train_path={lists['train_list.txt']}",
            f"val_dataset.dataset_root={prepared}", f"val_dataset.val_path={lists['val_list.txt']}"]
    if two_stage and size is not None:
        opts += resized_transforms_opts(config, size)
    if two_stage:   # a short warmup: the config's 50 of 1500 iterations would be 40 % of a demo's run
        warm = max(1, iters // 12)
        opts += [f"lr_scheduler.warmup_iters={warm}", f"lr_scheduler.T_max={max(1, iters - warm)}"]
    t0 = time.perf_counter()
    # no PaddleSeg evaluation of the val split at the end: the demo scores the test split per image
    run_dir = train_from_config(config, work / ("seg_roi_run" if two_stage else "seg_run"), iters=iters, opts=opts,
                                batch_size=DEMO_BATCH, fit_schedule=True, log=lambda line: None,
                                device=device, seed=seed, log_iters=max(1, iters // 5), do_eval=False,
                                set_aside_old_run=True)
    train_seconds = time.perf_counter() - t0
    if two_stage and not (Path(run_dir) / "last_model" / "roi.json").is_file():
        raise ValueError(f"{run_dir}: training wrote no roi.json for the ROI model (is crops.json in {prepared}?)")
    run = predict_folder(run_dir, test_images(data_root, "testing"), work / "seg_submission",
                         postprocess=postprocess, gt_dir=gt_dir, overlay_dir=work / "seg_overlays",
                         progress=progress, tta=tta, log=lambda line: None)
    out = {k: run.metrics[k] for k in ("dice_disc", "dice_cup", "vcdr_mae", "score", "n")}
    out.update({f"{k}_raw": run.metrics_raw[k] for k in ("dice_disc", "dice_cup", "vcdr_mae")})
    out.update(train_seconds=train_seconds, seconds_per_image=run.seconds_per_image, zip=str(run.zip_path),
               pred_dir=str(run.pred_dir), model_dir=str(run_dir), two_stage=two_stage,
               stage1_unsure=len(run.stage1))
    return out
