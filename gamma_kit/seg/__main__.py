"""Command line for GAMMA task 3 (optic disc / cup segmentation).

    python -m gamma_kit.seg prepare  --data-root D --out data/seg_prepared
    python -m gamma_kit.seg split    --dataset-dir data/seg_prepared [--val-value 0.0001 --seed 0]
    python -m gamma_kit.seg train    --config configs/seg/liteunet_gamma_cpu.yml --save-dir output/seg_cpu
    python -m gamma_kit.seg predict  --model output/seg_cpu --data-root D --out output/seg_pred [--postprocess]
    python -m gamma_kit.seg evaluate --pred output/seg_pred/Disc_Cup_Segmentations --gt <mask folder>
    python -m gamma_kit.seg export   --model output/seg_cpu --out output/seg_export
    python -m gamma_kit.seg demo     --data-root D --work-dir demo_out/seg
    python -m gamma_kit.seg configs  # the shipped configs and their paths

``--config`` takes a file or a shipped config's name (``roi_liteunet_cpu.yml``, ``seg/...``;
``gamma_kit.resources.resolve_config``: a path that exists wins). The configs' data paths are
relative to the working directory (the repo root, or ``--opts`` them). Each command only
parses its arguments and calls a function of ``gamma_kit.seg``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import gamma_kit  # noqa: F401  (thread settings before paddle)
from gamma_kit.cli import positive_float, positive_int, procs_count
from gamma_kit.procs import DEFAULT_PROCS, MIN_RANK_BATCH, PROCS_ENV
from gamma_kit.runtime import DEVICE_CHOICES
from gamma_kit.seg.postprocess import POSTPROCESS_STEPS
from gamma_kit.seg.predictor import UPSAMPLE_MODES


def _summary(metrics: dict) -> str:
    keys = ("dice_disc", "dice_cup", "vcdr_mae", "score", "n")
    return "  ".join(f"{k}={metrics[k]:.4f}" if isinstance(metrics[k], float) else f"{k}={metrics[k]}"
                     for k in keys if k in metrics)


def cmd_prepare(a) -> None:
    from gamma_kit.seg.model_dir import RoiSettings
    from gamma_kit.seg.prepare import prepare_dataset
    roi_flags = [f for f in ("roi_factor", "roi_side", "roi_size", "roi_jitter", "roi_scale_jitter", "roi_copies")
                 if getattr(a, f) is not None]
    if roi_flags and not a.roi:
        raise ValueError(f"--{roi_flags[0].replace('_', '-')} needs --roi (disc-centred crops)")
    roi = None
    if a.roi:
        given = {k[4:]: getattr(a, k) for k in roi_flags}
        roi = RoiSettings(**given)
    report = prepare_dataset(a.data_root, a.out, split=a.split, mask_dir=a.mask_dir, overwrite=a.overwrite,
                             roi=roi)
    print(report.summary())


def cmd_split(a) -> None:
    from gamma_kit.seg.prepare import split_dataset
    for name, path in split_dataset(a.dataset_dir, a.val_value, a.test_value, a.seed).items():
        n = len(Path(path).read_text().splitlines())
        print(f"{path}: {n} line(s)")


def cmd_train(a) -> None:
    from gamma_kit.procs import local_processes
    from gamma_kit.runtime import resolve_device
    from gamma_kit.seg.training import load_config, train_from_config

    batch = a.batch_size or load_config(a.config, opts=a.opts).batch_size
    procs = local_processes(a.procs, resolve_device(a.device), int(batch))
    out = train_from_config(a.config, a.save_dir, iters=a.iters, batch_size=a.batch_size, processes=procs,
                            learning_rate=a.learning_rate, opts=a.opts, fit_schedule=a.fit_schedule,
                            device=a.device, do_eval=not a.no_eval,
                            save_interval=a.save_interval, log_iters=a.log_iters, use_vdl=a.use_vdl,
                            seed=a.seed, resume_model=a.resume_model, num_workers=a.num_workers,
                            set_aside_old_run=a.set_aside_old_run)
    print(f"trained model in {out} (best_model/ and last_model/ are model directories)")


def cmd_predict(a) -> None:
    from gamma_kit.data import list_images
    from gamma_kit.seg.predictor import load_model
    from gamma_kit.seg.submission import find_gt_mask_dir, predict_folder, test_images

    if sum(x is not None for x in (a.model, a.exported, a.onnx)) != 1:
        raise ValueError("give exactly one of --model (a trained model directory), --exported (an export folder) or "
                         "--onnx (an export folder written with --format onnx)")
    if a.whole_image and a.stage1_model is not None:
        raise ValueError("--stage1-model is stage 1 of a two-stage model; --whole-image runs the model on whole photos")
    stage1 = load_model(a.stage1_model, device=a.device) if a.stage1_model is not None else None
    if stage1 is not None and stage1.roi is not None:
        raise ValueError(f"--stage1-model {a.stage1_model} is a two-stage (ROI) model; stage 1 needs a "
                         "whole-image model")
    if a.exported is not None or a.onnx is not None:
        from gamma_kit.seg.export import StaticPredictor
        model = StaticPredictor(a.exported or a.onnx, stage1=stage1, device=a.device, whole_image=a.whole_image,
                                rescue=not a.no_rescue, backend="onnx" if a.onnx else "paddle")
    else:
        model = load_model(a.model, device=a.device, stage1=stage1, whole_image=a.whole_image, rescue=not a.no_rescue)
    if a.images is not None:
        images = list_images(a.images)
    else:
        images = test_images(a.data_root, a.split)
    gt = a.gt
    if gt is None and a.data_root is not None and a.images is None:
        gt = find_gt_mask_dir(a.data_root, a.split)
    inputs = [a.images, a.data_root, a.model, a.exported, a.onnx, a.stage1_model]
    run = predict_folder(model, images, a.out, postprocess=a.postprocess, gt_dir=gt, tta=a.tta, inputs=inputs,
                         overlay_dir=Path(a.out) / "overlays" if a.overlays else None, upsample=a.upsample,
                         review_dir=Path(a.out) / "review" if a.review else None)
    kind = "two-stage" if getattr(model, "roi", None) is not None else "whole-image"
    print(f"wrote {len(run.ids)} masks ({kind}{', flip TTA' if a.tta else ''}) to {run.pred_dir} "
          f"and {run.zip_path}")
    print(f"time per image: {run.seconds_per_image:.3f} s (network {run.model_seconds_per_image:.3f} s)")
    print(f"per-photo report: {run.report} ({run.flagged} of {len(run.ids)} photo(s) flagged)"
          + (f"; review sheets: {run.review[0].parent}" if run.review else ""))
    if run.metrics is not None:
        print(f"scored against {gt}: {_summary(run.metrics)}")
        if a.postprocess:
            print(f"without post-processing: {_summary(run.metrics_raw)}")


def cmd_evaluate(a) -> None:
    if a.config is not None:
        from gamma_kit.seg.training import evaluate_from_config
        if a.model is None:
            raise ValueError("--config needs --model (weights or a model directory)")
        print(json.dumps(evaluate_from_config(a.config, a.model, device=a.device), indent=1))
        return
    from gamma_kit.scoring import score_seg_folders
    if a.pred is None or a.gt is None:
        raise ValueError("give --pred (predicted masks) and --gt (ground-truth masks), or --config and --model")
    res = score_seg_folders(a.pred, a.gt)
    print(json.dumps({k: res[k] for k in ("dice_disc", "dice_cup", "vcdr_mae", "score", "n")})
          if a.json else _summary(res))


def cmd_export(a) -> None:
    from gamma_kit.seg.export import export_static
    out = export_static(a.model, a.out, whole_image=a.whole_image, onnx=a.format == "onnx")
    print(f"exported to {out} (predict with: python -m gamma_kit.seg predict "
          f"{'--onnx' if a.format == 'onnx' else '--exported'} {out} ...)")


def cmd_configs(a) -> None:
    from gamma_kit.resources import format_config_list
    print(format_config_list("seg"))


def cmd_demo(a) -> None:
    from gamma_kit.seg.demo import run_demo
    res = run_demo(a.data_root, a.work_dir, iters=a.iters, device=a.device)
    print(json.dumps(res, indent=1))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m gamma_kit.seg", description="GAMMA task 3: optic disc/cup segmentation")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="JPEGImages/ + Annotations/ (0/1/2 PNG) in a new folder")
    p.add_argument("--data-root", default=None, help="GAMMA task 3 folder or a parent (default $GAMMA_DATA)")
    p.add_argument("--out", default="data/seg_prepared", help="new output folder (default data/seg_prepared)")
    p.add_argument("--split", default="training")
    p.add_argument("--mask-dir", default=None, help="mask folder if not <split>/Disc_Cup_Mask(s)")
    p.add_argument("--overwrite", action="store_true",
                   help="rewrite a folder that prepare wrote before (its old files are removed first)")
    p.add_argument("--roi", action="store_true",
                   help="two-stage training data: disc-centred crops (+ crops.json) instead of whole photos")
    p.add_argument("--roi-factor", type=positive_float, default=None,
                   help="crop side = FACTOR x the disc diameter (default 2)")
    p.add_argument("--roi-side", type=positive_int, default=None, help="fixed crop side in source px instead")
    p.add_argument("--roi-size", type=positive_int, default=None, help="crop size in px as written (default 512)")
    p.add_argument("--roi-jitter", type=float, default=None,
                   help="random centre offset, up to this share of the side per axis (default 0.125)")
    p.add_argument("--roi-scale-jitter", type=float, default=None,
                   help="random disc-diameter factor 1 +- this (default 0.15)")
    p.add_argument("--roi-copies", type=positive_int, default=None,
                   help="jittered crops per photo (default 1)")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("split", help="train_list.txt, val_list.txt, labels.txt (paddlex --split_dataset)")
    p.add_argument("--dataset-dir", default="data/seg_prepared")
    p.add_argument("--val-value", type=float, default=0.0001, help="validation share (>0 gives at least 1 image)")
    p.add_argument("--test-value", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("train", help="train a PaddleSeg YAML (as tools/train.py --config)")
    p.add_argument("--config", required=True,
                   help="PaddleSeg YAML: a file, or a shipped config's name (see the configs command)")
    p.add_argument("--save-dir", default="output/seg")
    p.add_argument("--iters", type=positive_int, default=None,
                   help="training iterations, as tools/train.py --iters: the config's learning-rate schedule is "
                        "kept as written (see --fit-schedule)")
    p.add_argument("--fit-schedule", action="store_true",
                   help="with --iters: end the config's warmup + cosine schedule at the last iteration (adds the "
                        "lr_scheduler opts that tools/train.py --opts would need; they are printed)")
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--learning-rate", type=positive_float, default=None)
    p.add_argument("--opts", nargs="*", default=None, help="config overrides key.sub=value")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES,
                   help="auto (default): a GPU when Paddle sees one")
    p.add_argument("--no-eval", action="store_true", help="skip validation")
    p.add_argument("--save-interval", type=positive_int, default=None, help="iterations between checkpoints (default: end)")
    p.add_argument("--log-iters", type=positive_int, default=10)
    p.add_argument("--use-vdl", action="store_true", help="VisualDL logs in the save dir")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--resume-model", default=None, help="continue from a checkpoint folder <save-dir>/iter_<n>")
    p.add_argument("--set-aside-old-run", action="store_true",
                   help="a save dir that already holds a run is renamed to <save-dir>.old-<time> (never deleted)")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--procs", type=procs_count, default=os.environ.get(PROCS_ENV, DEFAULT_PROCS),
                   help=f"training processes on this machine (default {DEFAULT_PROCS}; $GAMMA_KIT_PROCS sets "
                        f"another). auto: one per core while each keeps {MIN_RANK_BATCH} samples of a batch, 1 on a "
                        "GPU (the CPU recipe's batch 8: 2 processes of 4 on 2 cores, ~1.8x faster per crop than one; "
                        "configs of batch 4: 1). N: N data-parallel processes of one thread, batch_size split "
                        "between them; BatchNorm statistics are per process, so keep 4 samples each (2 of 2 "
                        "lost 0.07 disc Dice, docs/results.md)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="Disc_Cup_Segmentations/<id>.bmp + zip (scored if masks exist)")
    p.add_argument("--model", default=None, help="trained model directory (run folder or best_model/)")
    p.add_argument("--exported", default=None, help="static export folder (CPU paddle.inference)")
    p.add_argument("--onnx", default=None, help="export folder written with --format onnx (onnxruntime)")
    p.add_argument("--data-root", default=None, help="GAMMA task 3 folder or parent (default $GAMMA_DATA)")
    p.add_argument("--split", default="testing")
    p.add_argument("--images", default=None, help="a folder of images instead of --data-root/--split")
    p.add_argument("--gt", default=None, help="ground-truth mask folder to score against")
    p.add_argument("--out", default="output/seg_pred")
    p.add_argument("--postprocess", nargs="?", const="default", default=None,
                   help="clean the masks (raw scores printed too): 'default' (largest disc, cup inside the disc, "
                        f"holes filled) or a comma list of {','.join(POSTPROCESS_STEPS)}")
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation (mean soft-max of 4 flips)")
    p.add_argument("--stage1-model", default=None,
                   help="whole-image model directory: stage 1's learned disc finder, and the fallback where "
                        "stage 1 finds no disc (two-stage models only)")
    p.add_argument("--whole-image", action="store_true",
                   help="run the network on whole photos although the model folder says it was trained on "
                        "disc-centred crops and has lost its roi.json (refused without this flag)")
    p.add_argument("--no-rescue", action="store_true",
                   help="keep stage 1's first crop even where stage 2 doubts its disc (by default stage 1's other "
                        "candidate places are segmented too and the crop that looks most like a disc is kept)")
    p.add_argument("--overlays", action="store_true", help="write OUT/overlays/<id>.png")
    p.add_argument("--review", action="store_true",
                   help="write OUT/review/review_001.png ...: thumbnails with the outlines, most flags first")
    p.add_argument("--upsample", default="nearest", choices=UPSAMPLE_MODES,
                   help="label map to the source size: nearest arg-max (original) or bilinear logits")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES,
                   help="auto (default): a GPU when Paddle sees one")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="challenge metrics of predicted masks (or PaddleSeg's pooled IoU)")
    p.add_argument("--pred", default=None, help="folder of predicted <id>.bmp masks")
    p.add_argument("--gt", default=None, help="folder of ground-truth masks")
    p.add_argument("--config", default=None, help="with --model: PaddleSeg evaluation of val_dataset "
                                                   "(a file or a shipped config's name)")
    p.add_argument("--model", default=None)
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES,
                   help="auto (default): a GPU when Paddle sees one")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export", help="static graph (paddle.jit.save) + deploy.yml")
    p.add_argument("--model", required=True)
    p.add_argument("--out", default="output/seg_export")
    p.add_argument("--whole-image", action="store_true",
                   help="export a model folder that says it was trained on crops but has lost its roi.json as a "
                        "whole-image model")
    p.add_argument("--format", choices=("paddle", "onnx"), default="paddle",
                   help="onnx: also model.onnx, for predict --onnx (onnxruntime; the onnx extra)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("demo", help="prepare, train briefly, predict, zip and score on a synthetic/small set")
    p.add_argument("--data-root", default=None)
    p.add_argument("--work-dir", default="demo_out/seg")
    p.add_argument("--iters", type=positive_int, default=None,
                   help="training iterations (default: the demo's, small)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES,
                   help="auto (default): a GPU when Paddle sees one")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("configs", help="list the shipped configs (names for --config) and their paths")
    p.set_defaults(func=cmd_configs)
    return ap


def main(argv: list[str] | None = None) -> int:
    from gamma_kit.cli import run_cli

    args = build_parser().parse_args(argv)
    return run_cli(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
