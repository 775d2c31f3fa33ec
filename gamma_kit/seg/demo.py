"""End-to-end segmentation demo: prepare -> split -> train (CPU config) -> predict -> zip -> score.

``run_demo(data_root, work_dir)`` needs a GAMMA-like task 3 folder with training masks,
and testing images with masks in ``testing/`` or ``testing_GT/`` (``gamma_kit.synth``
writes one). Everything goes under ``work_dir``; the user's data is only read.
With the defaults it takes about 1-2 minutes on 2 CPU cores.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import gamma_kit  # noqa: F401  (thread settings before paddle)

__all__ = ["run_demo", "CPU_CONFIG"]

CPU_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "seg" / "liteunet_gamma_cpu.yml"


def run_demo(data_root: str | os.PathLike, work_dir: str | os.PathLike, iters: int = 120,
             config: str | os.PathLike = CPU_CONFIG, val_value: float = 0.1, postprocess: bool = True,
             seed: int = 0, device: str = "cpu", progress: bool = False) -> dict:
    """Run the whole task 3 pipeline briefly; return the test metrics and timings.

    Returns {"dice_disc", "dice_cup", "vcdr_mae", "score", "n", "dice_disc_raw", "dice_cup_raw",
    "vcdr_mae_raw", "train_seconds", "seconds_per_image", "zip", "pred_dir", "model_dir"};
    ``*_raw`` are without post-processing.
    """
    from gamma_kit.seg.inference import find_gt_mask_dir, predict_folder, test_images
    from gamma_kit.seg.prepare import prepare_dataset, split_dataset
    from gamma_kit.seg.training import train_from_config

    work = Path(work_dir)
    prepared = work / "seg_prepared"
    prepare_dataset(data_root, prepared, overwrite=True, progress=progress)
    lists = split_dataset(prepared, val_value=val_value, seed=seed)
    gt_dir = find_gt_mask_dir(data_root, "testing")
    if gt_dir is None:
        raise FileNotFoundError(f"{data_root}: the demo scores the test split, but found no testing masks "
                                "(testing/Disc_Cup_Mask or testing_GT/Disc_Cup_Mask)")
    opts = [f"train_dataset.dataset_root={prepared}", f"train_dataset.train_path={lists['train_list.txt']}",
            f"val_dataset.dataset_root={prepared}", f"val_dataset.val_path={lists['val_list.txt']}"]
    t0 = time.perf_counter()
    # no PaddleSeg evaluation of the val split at the end: the demo scores the test split per image
    run_dir = train_from_config(config, work / "seg_run", iters=iters, opts=opts, device=device, seed=seed,
                                log_iters=max(1, iters // 5), do_eval=False)
    train_seconds = time.perf_counter() - t0
    run = predict_folder(run_dir, test_images(data_root, "testing"), work / "seg_submission",
                         postprocess=postprocess, gt_dir=gt_dir, overlay_dir=work / "seg_overlays",
                         progress=progress)
    out = {k: run.metrics[k] for k in ("dice_disc", "dice_cup", "vcdr_mae", "score", "n")}
    out.update({f"{k}_raw": run.metrics_raw[k] for k in ("dice_disc", "dice_cup", "vcdr_mae")})
    out.update(train_seconds=train_seconds, seconds_per_image=run.seconds_per_image, zip=str(run.zip_path),
               pred_dir=str(run.pred_dir), model_dir=str(run_dir))
    return out
