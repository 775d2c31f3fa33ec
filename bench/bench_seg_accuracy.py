"""Segmentation accuracy beside speed: the CPU config (LiteUNet at 160), the two-stage CPU config
(LiteUNet at 192 on disc-centred crops, predicted on the full photos through stage 1) and the original
recipe (PaddleSeg UNet at 512) on EQUAL wall-clock training budgets, trained, predicted
and scored with the seg helper's own functions (prepare, split, train_from_config,
predict_folder; challenge-style per-image Dice / vCDR from gamma_kit.metrics).

    python bench/bench_seg_accuracy.py --data DIR [--budget 150] [--arms cpu,roi,orig] [--json FILE]

Each arm's iteration count = budget / seconds per iteration, measured by a short probe
training run just before (LiteUNet: 5 iterations; UNet 512: 1 iteration; when the budget
holds fewer than two UNet iterations the probe is the arm's result). Random weights both
(no ImageNet weights exist for UNet; SPEC 3). No post-processing.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, emit, row  # noqa: E402

ARMS = {"cpu": ("CPU config: LiteUNet 160 (0.49 M)", REPO / "configs" / "seg" / "liteunet_gamma_cpu.yml", 5),
        "roi": ("two-stage CPU config: LiteUNet 192 on disc crops (0.49 M)",
                REPO / "configs" / "seg" / "roi_liteunet_cpu.yml", 5),
        "orig": ("original recipe: UNet 512 (13.4 M), DiceLoss", REPO / "configs" / "seg" / "unet_gamma_512.yml", 1)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--budget", type=float, default=150.0)
    ap.add_argument("--arms", default="cpu,orig", help=f"comma list of {', '.join(ARMS)} (roi: the two-stage arm)")
    ap.add_argument("--work", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    from gamma_kit.seg.submission import find_gt_mask_dir, predict_folder, test_images
    from gamma_kit.seg.prepare import RoiSettings, prepare_dataset, split_dataset
    from gamma_kit.seg.training import train_from_config

    work = Path(args.work or tempfile.mkdtemp(prefix="gk_segacc_"))
    gt_dir = find_gt_mask_dir(args.data, "testing")
    data_opts = {}

    def opts_for(two_stage: bool) -> list[str]:
        if two_stage not in data_opts:
            prepared = work / ("seg_roi_prepared" if two_stage else "seg_prepared")
            prepare_dataset(args.data, prepared, overwrite=True, progress=False,
                            roi=RoiSettings(copies=2) if two_stage else None)
            lists = split_dataset(prepared, val_value=0.1, seed=0)
            data_opts[two_stage] = [f"train_dataset.dataset_root={prepared}",
                                    f"train_dataset.train_path={lists['train_list.txt']}",
                                    f"val_dataset.dataset_root={prepared}",
                                    f"val_dataset.val_path={lists['val_list.txt']}"]
        return data_opts[two_stage]

    rows, arms = [], []
    for name in args.arms.split(","):
        label, cfg, probe = ARMS[name]
        opts = opts_for(name == "roi")
        t0 = time.perf_counter()
        run_dir = train_from_config(cfg, work / f"{name}_probe", iters=probe, opts=opts, fit_schedule=True,
                                    log=lambda line: None, device="cpu", seed=0,
                                    do_eval=False, log_iters=probe, set_aside_old_run=True)
        per_iter = (time.perf_counter() - t0) / probe
        iters = max(probe, int(args.budget // per_iter))
        wall = per_iter * probe
        if iters >= 2 * probe:
            t0 = time.perf_counter()
            run_dir = train_from_config(cfg, work / name, iters=iters, opts=opts, fit_schedule=True,
                                        log=lambda line: None, device="cpu", seed=0,
                                        do_eval=False, log_iters=max(1, iters // 5), set_aside_old_run=True)
            wall = time.perf_counter() - t0
        else:
            iters = probe
        run = predict_folder(run_dir, test_images(args.data, "testing"), work / f"{name}_pred", postprocess=False,
                             gt_dir=gt_dir, progress=False)
        m = run.metrics
        arms.append({"arm": name, "iters": iters, "per_iter_s": per_iter, "train_wall_s": wall,
                     **{k: m[k] for k in ("dice_disc", "dice_cup", "vcdr_mae", "n")},
                     "predict_s_per_image": run.seconds_per_image})
        rows.append(row(f"Seg accuracy, synthetic, {args.budget:.0f} s budget: {label}", "",
                        f"test Dice disc {m['dice_disc']:.3f}, cup {m['dice_cup']:.3f}, vCDR MAE {m['vcdr_mae']:.3f} "
                        f"(n={m['n']})",
                        note=f"{iters} iterations x batch 4 (probe {per_iter:.1f} s/iter); trained {wall:.0f} s wall; "
                             f"predict_folder {run.seconds_per_image:.2f} s/image"))
    result = {"rows": rows, "notes": [], "arms": arms}
    emit(result, args.json)
    return result


if __name__ == "__main__":
    main()
