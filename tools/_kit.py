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


def builder_on_device(cfg, args, merge_test_config):
    """What PaddleSeg's val.py and predict.py do after reading the config: the kit's patches, a
    ``SegBuilder``, the test config merged with the flags, the environment and config shown, the
    device set. Returns (builder, test_config)."""
    from paddleseg.cvlibs import SegBuilder
    from paddleseg.utils import utils

    prepare()
    builder = SegBuilder(cfg)
    test_config = merge_test_config(cfg, args)
    utils.show_env_info()
    utils.show_cfg_info(cfg)
    utils.set_device(args.device)
    return builder, test_config


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


def load_weights(model, model_path, config) -> None:
    """Load ``--model_path`` into ``model`` after checking names and shapes against ``--config``
    (``gamma_kit.seg.model_dir.load_checked_weights``): a mismatch is one line, not PaddleSeg's
    warning per parameter followed by results from random weights."""
    from gamma_kit.seg.model_dir import load_checked_weights

    check_weights(model_path, required=True)
    load_checked_weights(model, model_path, config)


def two_stage_roi(cfg, model_path):
    """The crop geometry of a two-stage (ROI) setup, else None: ``roi.json`` beside ``--model_path``
    (or in its parent, the run folder; what the model was trained with), else the ``"roi"`` of
    ``crops.json`` in the config's ``dataset_root`` (``prepare --roi`` data)."""
    from gamma_kit.seg.model_dir import CROPS_NAME, RoiSettings, read_crop_roi, read_roi

    if model_path is not None:
        roi = read_roi(Path(model_path).parent)
        if roi is not None:
            return roi
    roi = read_crop_roi(cfg)
    if roi is None:
        return None
    return RoiSettings.from_json(roi, f"{cfg.dic['train_dataset']['dataset_root']}/{CROPS_NAME}")


def predict_two_stage(predictor, image_list, image_dir, save_dir, custom_color=None) -> None:
    """``paddleseg.core.predict``'s outputs, from the kit's two-stage path: each full photo through
    ``predictor.predict_photo`` (stage 1, crop, segment, paste back), the (H, W) label map at the
    photo's size written as PaddleSeg does (``pseudo_color_prediction/<name>.png`` and
    ``added_prediction/<name>``, by PaddleSeg's own ``visualize`` helpers), each file atomically. A
    crop window outside ``gamma_kit.crop.window_problem``'s rule is named in a warning line."""
    import io
    import os

    import cv2
    from paddleseg.utils import logger, progbar, visualize

    from gamma_kit.data import check_photo_sizes, read_image
    from gamma_kit.safety import atomic_write_bytes

    check_photo_sizes(image_list)
    added_dir, pred_dir = Path(save_dir) / "added_prediction", Path(save_dir) / "pseudo_color_prediction"
    color_map = visualize.get_color_map_list(256, custom_color=custom_color)
    bar = progbar.Progbar(target=len(image_list), verbose=1)
    unsure = []
    for k, im_path in enumerate(image_list):
        im_file = im_path.replace(image_dir, "") if image_dir is not None else os.path.basename(im_path)
        im_file = im_file.lstrip("/\\")
        photo = predictor.predict_photo(read_image(im_path), name=os.path.basename(im_path))
        if photo.location is not None and (photo.location.unsure or photo.fallback):
            unsure.append(os.path.basename(im_path))
        if photo.crop_note:
            logger.warning(f"crop of {os.path.basename(im_path)}: {photo.crop_note}; segmented anyway")
        ok, added = cv2.imencode(os.path.splitext(im_file)[1] or ".png",
                                 visualize.visualize(im_path, photo.labels, color_map, weight=0.6))
        atomic_write_bytes(added_dir / im_file, added.tobytes())
        buf = io.BytesIO()
        visualize.get_pseudo_color_map(photo.labels, color_map).save(buf, format="PNG")
        atomic_write_bytes(pred_dir / (os.path.splitext(im_file)[0] + ".png"), buf.getvalue())
        bar.update(k + 1)
    if unsure:
        logger.warning(f"stage 1 was unsure or found no disc on {len(unsure)} of {len(image_list)} photo(s): "
                       f"{unsure[:10]} (python -m gamma_kit.seg predict lists them in stage1_report.json)")
    logger.info(f"Predicted images are saved in {added_dir} and {pred_dir} .")


def run(main, args) -> int:
    """``main(args)`` with the kit's CLI error handling (one ``error:`` line, exit 2)."""
    from gamma_kit.cli import run_cli

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
