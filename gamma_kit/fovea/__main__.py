"""Command line for fovea localisation (arguments only; the work is in train/predict/demo).

    python -m gamma_kit.fovea --fold 3                  # = train fold 3, default config
    python -m gamma_kit.fovea train --fold 1 --config configs/fovea/unet_heatmap_cpu.yml
    python -m gamma_kit.fovea cv --config ... [--folds 1,2]
    python -m gamma_kit.fovea predict --checkpoints runs/unet_heatmap --out submission.csv
    python -m gamma_kit.fovea demo --data-root DIR --work-dir demo_out

Data: --data-root (or $GAMMA_DATA) with the GAMMA layout, or --images DIR --gt FILE.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import gamma_kit  # noqa: F401  (threads before paddle)

COMMANDS = ("train", "cv", "predict", "demo")
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "fovea" / "unet_heatmap.yml"


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", help="GAMMA data root (default: $GAMMA_DATA)")
    p.add_argument("--images", help="folder of images (other layouts, e.g. IDRiD); needs --gt")
    p.add_argument("--gt", help="fovea ground truth csv/xlsx (data,Fovea_X,Fovea_Y)")
    p.add_argument("--side-overrides", help="CSV data,disc_side for images whose eye side is not detected")
    p.add_argument("--cache-dir", help="keep decoded canonical images here as .npy")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"))
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _train_args(p: argparse.ArgumentParser) -> None:
    _data_args(p)
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config (default: the original recipe)")
    p.add_argument("--run-dir", help="run folder (default: runs/<config name>)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--amp", action="store_true", help="float16 autocast (GPU only)")
    p.add_argument("--resume", action="store_true", help="continue from fold<k>/last.* in the run folder")
    p.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE", help="config overrides")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m gamma_kit.fovea", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one fold")
    t.add_argument("--fold", type=int, required=True, help="1-based fold")
    t.add_argument("--init-from", help="checkpoint to fine-tune from (same model config)")
    _train_args(t)
    c = sub.add_parser("cv", help="train all folds")
    c.add_argument("--folds", help="comma-separated subset, e.g. 1,2")
    _train_args(c)
    p = sub.add_parser("predict", help="predict a folder of images and write the submission CSV")
    _data_args(p)
    p.add_argument("--checkpoints", nargs="+", required=True, help="run folder(s), fold folder(s) or .pdparams")
    p.add_argument("--out", required=True, help="submission CSV to write")
    p.add_argument("--ensemble", choices=("coords", "heatmap"), default="coords")
    p.add_argument("--flip", action="store_true", help="horizontal-flip test-time augmentation")
    p.add_argument("--figures", help="folder for heatmap / distribution figures")
    p.add_argument("--amp", action="store_true", help="float16 autocast (GPU only)")
    d = sub.add_parser("demo", help="short CPU train + predict + score on a (synthetic) dataset")
    d.add_argument("--data-root", required=True)
    d.add_argument("--work-dir", required=True)
    d.add_argument("--epochs", type=int, default=None)
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
    from gamma_kit.runtime import run_cli

    args = build_parser().parse_args(argv)
    return run_cli(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    if args.command in ("train", "cv"):
        from gamma_kit.fovea.train import cross_validate, load_training_data, train_fold

        cfg = _config(args)
        data = load_training_data(args.data_root, args.images, args.gt)
        run_dir = Path(args.run_dir or Path("runs") / cfg["name"])
        if args.command == "train":
            m = train_fold(cfg, args.fold, data, run_dir, resume=args.resume, init_from=args.init_from,
                           progress=not args.no_progress)
            print(json.dumps({k: v for k, v in m.items() if k != "history"}, indent=1))
        else:
            folds = [int(f) for f in args.folds.split(",")] if args.folds else None
            print(json.dumps(cross_validate(cfg, data, run_dir, folds, resume=args.resume,
                                            progress=not args.no_progress), indent=1))
    elif args.command == "predict":
        from gamma_kit.fovea.predict import predict

        images = args.images
        gt = args.gt
        if images is None:
            from gamma_kit.data import load_fovea_split

            split = load_fovea_split(args.data_root, "testing")
            images = split.images
        out = predict(args.checkpoints, images, args.out, ensemble=args.ensemble, flip=args.flip,
                      side_overrides=args.side_overrides, gt=gt, device=args.device or "auto",
                      figures_dir=args.figures, cache_dir=args.cache_dir, amp=args.amp, progress=not args.no_progress)
        print(f"wrote {args.out} ({len(out['predictions'])} images, {out['n_models']} model(s))")
        if out["empty"]:
            print(f"warning: empty heatmaps (fallback position used) for {out['empty']}")
        if out["scores"]:
            print(json.dumps({k: out["scores"][k] for k in ("aed", "score", "n")}))
    else:
        from gamma_kit.fovea.demo import run_demo

        kw = {} if args.epochs is None else {"epochs": args.epochs}
        print(json.dumps(run_demo(args.data_root, args.work_dir, **kw), indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
