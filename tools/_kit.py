"""What every script in tools/ does first (PaddleSeg's tools/ layout, run from the repo root).

Puts this checkout on ``sys.path`` (so the scripts run from a clone that is not installed,
as PaddleSeg's do), imports ``gamma_kit`` before Paddle (thread settings), and
``prepare_paddleseg()``: the compat patches for PaddleSeg 2.8.0 on Paddle 3.x and the kit's
models registered in PaddleSeg's manager. Then each script makes PaddleSeg's own calls.
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import gamma_kit  # noqa: E402,F401  (OMP/KMP thread settings before paddle)


def prepare() -> None:
    """Compat patches + the kit's models (``gamma_kit.seg.compat.prepare_paddleseg``)."""
    from gamma_kit.seg.compat import prepare_paddleseg

    prepare_paddleseg()


def load_config(path, **overrides):
    """PaddleSeg's ``Config(path, ...)``, with a missing or unreadable file as one clear error."""
    from gamma_kit.seg.training import load_config as kit_load

    if path is None:
        raise ValueError("no configuration file specified, please set --config")
    return kit_load(path, **overrides)


def check_weights(model_path, required: bool = False) -> None:
    """``--model_path`` must name a weights file (PaddleSeg's ``.../model.pdparams``) when given or required."""
    if (model_path is not None or required) and (model_path is None or not Path(model_path).is_file()):
        raise FileNotFoundError(f"--model_path {model_path} is not a file (expected .../model.pdparams)")


def run(main, args) -> int:
    """``main(args)`` with the kit's CLI error handling (one ``error:`` line, exit 2)."""
    from gamma_kit.runtime import run_cli

    return run_cli(lambda: main(args))


def add_aug_slide_args(parser, aug_flag: str, what: str) -> None:
    """PaddleSeg's test-time augmentation and sliding-window flags (``--aug_eval`` / ``--aug_pred``)."""
    parser.add_argument(f"--{aug_flag}", action="store_true",
                        help=f"Whether to use mulit-scales and flip augment for {what}.")
    parser.add_argument("--scales", nargs="+", type=float, default=1.0,
                        help="Scales for augment, e.g., `--scales 0.75 1.0 1.25`.")
    parser.add_argument("--flip_horizontal", help="Whether to use flip horizontally augment.", action="store_true")
    parser.add_argument("--flip_vertical", help="Whether to use flip vertically augment.", action="store_true")
    parser.add_argument("--is_slide", action="store_true",
                        help=f"Whether to {what.replace('evaluation', 'evaluate').replace('prediction', 'predict')} "
                             "images in sliding window method.")
    parser.add_argument("--crop_size", nargs=2, type=int,
                        help="The crop size of sliding window, width then height, e.g. `--crop_size 512 512`")
    parser.add_argument("--stride", nargs=2, type=int,
                        help="The stride of sliding window, width then height, e.g. `--stride 512 512`")


def merge_aug_slide(test_config: dict, args, aug_flag: str) -> dict:
    """``test_config`` updated from the flags of ``add_aug_slide_args`` (as PaddleSeg's merge_test_config)."""
    if getattr(args, aug_flag):
        test_config.update({aug_flag: True, "scales": args.scales, "flip_horizontal": args.flip_horizontal,
                            "flip_vertical": args.flip_vertical})
    if args.is_slide:
        test_config.update(is_slide=True, crop_size=args.crop_size, stride=args.stride)
    return test_config


def apply_data_format(cfg, data_format: str) -> None:
    """PaddleSeg's ``--data_format NHWC`` (DeepLabV3P only): set it on the model, backbone and losses."""
    if data_format == "NCHW":
        return
    if data_format != "NHWC":
        raise ValueError(f'--data_format must be "NCHW" or "NHWC", got {data_format!r}')
    if cfg.dic["model"]["type"] != "DeepLabV3P":
        raise ValueError('The "NHWC" data format only supports the DeepLabV3P model')
    cfg.dic["model"]["data_format"] = data_format
    cfg.dic["model"]["backbone"]["data_format"] = data_format
    for loss_cfg in cfg.dic["loss"]["types"]:
        loss_cfg["data_format"] = data_format
