"""Command line for fovea localisation (arguments only; the work is in train/predict/demo).

    python -m gamma_kit.fovea --fold 3                  # shortcut: = train --fold 3, the original recipe
    python -m gamma_kit.fovea train --fold 1 --config configs/fovea/unet_heatmap_cpu.yml
    python -m gamma_kit.fovea cv --config ... [--folds 1,2]
    python -m gamma_kit.fovea predict --checkpoints runs/unet_heatmap --out submission.csv
    python -m gamma_kit.fovea demo --data-root DIR --work-dir demo_out
    python -m gamma_kit.fovea configs                   # the shipped configs and their paths

Data: --data-root (or $GAMMA_DATA) with the GAMMA layout, or --images DIR --gt FILE.
--config takes a file or a shipped config's name (unet_heatmap_cpu.yml, fovea/...; a path that exists wins).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

import gamma_kit  # noqa: F401  (threads before paddle)
from gamma_kit.fovea.checkpoints import CHECKPOINT_CHOICES
from gamma_kit.fovea.inference import ENSEMBLES
from gamma_kit.resources import config_path
from gamma_kit.cli import positive_float, positive_int, procs_count
from gamma_kit.procs import DEFAULT_PROCS, MIN_RANK_BATCH, PROCS_ENV, local_processes
from gamma_kit.runtime import DEVICE_CHOICES, resolve_device

COMMANDS = ("train", "cv", "predict", "export", "demo", "configs")
DEFAULT_CONFIG = config_path("fovea/unet_heatmap.yml")
EPILOG = """shortcut:
  python -m gamma_kit.fovea --fold K [train options]
                        = train --fold K: one fold of the original recipe (configs/fovea/unet_heatmap.yml,
                          88 M parameters, 200 epochs; meant for a GPU). On a CPU add
                          --config unet_heatmap_cpu.yml (~14 s per epoch of 80 images).
  python -m paddle.distributed.launch --gpus 0,1,2,3 gamma-kit-fovea train --fold 3
                        one fold data-parallel on 4 GPUs (global batch and lr as one process;
                        rank 0 writes; tested with 2 CPU processes, untested on GPUs). The
                        launcher takes a script or a command, not -m: gamma-kit-fovea is this CLI
                        (or give the path of gamma_kit/fovea/__main__.py).
  python -m paddle.distributed.launch --gpus 0,1,2,3 gamma-kit-fovea cv --parallel-folds
                        one fold per GPU (add --ips host1,host2 for several machines)
"""


def fold_list(text: str) -> list[int]:
    """argparse type: comma-separated 1-based folds, e.g. ``1,2`` (``cli.parse_int_list``)."""
    from gamma_kit.cli import parse_int_list

    return parse_int_list(text, "folds", low=1)


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", help="GAMMA data root (default: $GAMMA_DATA)")
    p.add_argument("--images", help="folder of images (other layouts, e.g. IDRiD); needs --gt")
    p.add_argument("--gt", help="fovea ground truth csv/xlsx (data,Fovea_X,Fovea_Y)")
    p.add_argument("--side-overrides", help="CSV data,disc_side for images whose eye side is not detected")
    p.add_argument("--cache-dir", help="keep decoded canonical images here as .npy")
    p.add_argument("--device", choices=DEVICE_CHOICES,
                   help="default auto (a GPU when Paddle sees one; train/cv: the config's train.device, auto "
                        "in the shipped configs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _train_args(p: argparse.ArgumentParser) -> None:
    _data_args(p)
    p.add_argument("--config", default=str(DEFAULT_CONFIG),
                   help="YAML config: a file or a shipped config's name, e.g. unet_heatmap_cpu.yml (default: the "
                        "original recipe; the configs command lists them)")
    p.add_argument("--run-dir", help="run folder (default: runs/<config name>)")
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--lr", type=positive_float)
    p.add_argument("--amp", action="store_true", help="float16 autocast (GPU only)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the last complete checkpoint set (fold<k>/ckpt-NNN/) with the run's own "
                        "config: an edited fold<k>/config.yml or other --config/--set values are refused naming the "
                        "keys; --device, --amp, --val-every, --checkpoint-every, --use-vdl, --cache-dir may change; "
                        "--epochs may grow only under a constant learning rate (the added epochs train at it); a "
                        "cosine schedule is not stretched: train more epochs as a new run with --init-from")
    p.add_argument("--set-aside-old-run", action="store_true",
                   help="a fold folder that already holds a run is renamed to fold<k>.old-<time> (never deleted)")
    p.add_argument("--val-every", type=positive_int, help="validate every N epochs (default 1; always the last)")
    p.add_argument("--checkpoint-every", type=positive_int,
                   help="write a checkpoint set (weights, optimizer, state) every N epochs (default 1; always the "
                        "last)")
    p.add_argument("--use-vdl", action="store_true", help="VisualDL logs (loss, validation AED, lr) in the fold folder")
    p.add_argument("--procs", type=procs_count, default=os.environ.get(PROCS_ENV, DEFAULT_PROCS),
                   help=f"training processes on this machine (default {DEFAULT_PROCS}; $GAMMA_KIT_PROCS sets another). "
                        f"auto: one per core while each keeps {MIN_RANK_BATCH} samples of a batch (the CPU config's "
                        "batch 8: 2 processes of 4 on 2 cores, ~1.6x faster and as accurate over 130 epochs on two "
                        "IDRiD folds; docs/results.md), 1 on a GPU. N: N data-parallel processes of one thread, "
                        "each on an equal share of every batch (BatchNorm statistics are per process). With "
                        "--parallel-folds: folds side by side, one process each")
    p.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE", help="config overrides")


def build_parser() -> argparse.ArgumentParser:
    prog = "python -m gamma_kit.fovea"
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0], epilog=EPILOG,
                                 usage=f"{prog} [-h] {{train,cv,predict,export,demo,configs}} ...\n       {prog} --fold K "
                                       "[train options]   (= train --fold K)",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True, metavar="{train,cv,predict,export,demo,configs}", prog=prog)
    t = sub.add_parser("train", help="train one fold (also: python -m gamma_kit.fovea --fold K)")
    t.add_argument("--fold", type=positive_int, required=True, help="1-based fold")
    t.add_argument("--init-from", help="checkpoint to fine-tune from (same model config; not with --resume)")
    _train_args(t)
    c = sub.add_parser("cv", help="train all folds")
    c.add_argument("--folds", type=fold_list, help="comma-separated subset, e.g. 1,2")
    c.add_argument("--parallel-folds", action="store_true",
                   help="under paddle.distributed.launch: one fold per process/GPU instead of data-parallel folds")
    _train_args(c)
    p = sub.add_parser("predict", help="predict a folder of images and write the submission CSV")
    _data_args(p)
    models = p.add_mutually_exclusive_group(required=True)
    models.add_argument("--checkpoints", nargs="+", help="run folder(s), fold folder(s) or .pdparams")
    models.add_argument("--exported", help="folder written by the export command (runs Paddle Inference)")
    models.add_argument("--onnx", help="folder written by export --format onnx (runs onnxruntime; the onnx extra)")
    p.add_argument("--out", required=True, help="submission CSV to write")
    p.add_argument("--ensemble", choices=ENSEMBLES, default="coords")
    p.add_argument("--flip", action="store_true", help="horizontal-flip test-time augmentation")
    p.add_argument("--which", choices=CHECKPOINT_CHOICES, default="auto",
                   help="checkpoint of each fold folder: averaged (the mean weights of the last epochs, "
                        "train.average_last), best on validation, last epoch; auto (default): averaged where "
                        "training wrote it, else best")
    p.add_argument("--figures", help="folder for heatmap / distribution figures")
    p.add_argument("--review", action="store_true",
                   help="write <out stem>_review/review_001.png ...: thumbnails with the point, most flags first")
    p.add_argument("--amp", action="store_true", help="float16 autocast (GPU only)")
    from gamma_kit.fovea.export import add_export_cli

    add_export_cli(sub)
    d = sub.add_parser("demo", help="short CPU train + predict + score on a (synthetic) dataset")
    d.add_argument("--data-root", required=True)
    d.add_argument("--work-dir", required=True)
    d.add_argument("--epochs", type=positive_int, default=None)
    d.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="auto (default): a GPU when Paddle sees one")
    sub.add_parser("configs", help="list the shipped configs (names for --config) and their paths")
    return ap


def _config(args) -> dict:
    from gamma_kit.fovea.config import load_config

    sets = list(args.set)
    for flag, key in (("epochs", "train.epochs"), ("batch_size", "train.batch_size"), ("lr", "train.lr"),
                      ("device", "train.device"), ("cache_dir", "data.cache_dir"),
                      ("side_overrides", "data.side_overrides")):
        if getattr(args, flag, None) is not None:
            sets.append(f"{key}={getattr(args, flag)}")
    if args.amp:
        sets.append("train.amp=true")
    return load_config(args.config, sets)


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run; user-input errors print one line and return 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help"):
        argv.insert(0, "train")
    from gamma_kit.cli import run_cli

    args = build_parser().parse_args(argv)
    return run_cli(lambda: _run(args, argv))


def resume_command(argv: list[str]) -> str:
    """The command line that continues this run: the same arguments without --resume,
    --set-aside-old-run and --init-from (the caller appends --resume)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--resume", "--set-aside-old-run"):
            continue
        if a == "--init-from":
            skip = True
            continue
        if a.startswith("--init-from="):
            continue
        out.append(a)
    return " ".join(shlex.quote(a) for a in ["python", "-m", "gamma_kit.fovea", *out])


def _predict(args) -> None:
    """fovea predict: the submission CSV, its report and, on request, figures and review sheets."""
    from gamma_kit.fovea.predict import predict

    images = args.images
    if images is None:
        from gamma_kit.data import load_fovea_split

        images = load_fovea_split(args.data_root, "testing").images
    out = predict(args.checkpoints, images, args.out, ensemble=args.ensemble, flip=args.flip,
                  side_overrides=args.side_overrides, gt=args.gt, device=args.device or "auto",
                  figures_dir=args.figures, cache_dir=args.cache_dir, amp=args.amp, progress=not args.no_progress,
                  exported=args.exported or args.onnx, which=args.which, review=args.review,
                  backend="onnx" if args.onnx else "paddle")
    print(f"wrote {args.out} ({len(out['predictions'])} images, {out['n_models']} model(s))")
    print(f"per-photo report: {out['report']} ({out['flagged']} photo(s) flagged)"
          + (f"; review sheets: {out['review'][0].parent}" if out["review"] else ""))
    if out["empty"]:
        print(f"warning: empty heatmaps (fallback position used) for {out['empty']}")
    if out["roi_fallback"]:
        print(f"note: no usable optic disc to anchor the ROI, fixed window used for {len(out['roi_fallback'])} "
              f"image(s): {out['roi_fallback'][:10]}")
    if out["guarded"]:
        print(f"note: the network's fovea lay far from the disc-based estimate (or its heatmap was empty) for "
              f"{len(out['guarded'])} image(s), the estimate was used: {out['guarded'][:10]}")
    if out["scores"]:
        print(json.dumps({k: out["scores"][k] for k in ("aed", "score", "n")}))


def _run(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    if getattr(args, "run", None) is not None:      # commands that bring their own runner (export)
        return args.run(args)
    if args.command == "configs":
        from gamma_kit.resources import format_config_list

        print(format_config_list("fovea"))
        return 0
    if args.command in ("train", "cv"):
        from gamma_kit.fovea.train import cross_validate, load_training_data, train_fold

        if args.resume and getattr(args, "init_from", None):
            raise ValueError("--resume continues a run from its own last checkpoint; it cannot be combined with "
                             "--init-from (fine-tune into a new --run-dir instead)")
        cfg = _config(args)
        data = load_training_data(args.data_root, args.images, args.gt)
        run_dir = Path(args.run_dir or Path("runs") / cfg["name"])
        procs = local_processes(args.procs, resolve_device(cfg["train"]["device"]), int(cfg["train"]["batch_size"]),
                                getattr(args, "parallel_folds", False))
        kw = {"processes": procs, "set_aside_old_run": args.set_aside_old_run, "val_every": args.val_every,
              "checkpoint_every": args.checkpoint_every, "use_vdl": True if args.use_vdl else None,
              "resume_command": resume_command(list(argv or []))}
        if args.command == "train":
            out = train_fold(cfg, args.fold, data, run_dir, resume=args.resume, init_from=args.init_from,
                             progress=not args.no_progress, **kw)
            out = {k: v for k, v in out.items() if k != "history"}
        else:
            out = cross_validate(cfg, data, run_dir, args.folds, resume=args.resume, progress=not args.no_progress,
                                 parallel_folds=args.parallel_folds, **kw)
        if os.environ.get("PADDLE_TRAINER_ID", "0") == "0":      # under paddle.distributed.launch: rank 0 reports
            print(json.dumps(out, indent=1))
    elif args.command == "predict":
        _predict(args)
    else:
        from gamma_kit.fovea.demo import run_demo

        kw = {} if args.epochs is None else {"epochs": args.epochs}
        print(json.dumps(run_demo(args.data_root, args.work_dir, overrides=(f"train.device={args.device}",), **kw),
                         indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
