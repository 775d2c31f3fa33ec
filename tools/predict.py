"""Predict images with a trained model, as PaddleSeg's ``tools/predict.py`` (same flags and defaults).

    python tools/predict.py --config configs/seg/liteunet_gamma_cpu.yml \
        --model_path output/seg_cpu/best_model/model.pdparams \
        --image_path data/seg_prepared/JPEGImages --save_dir output/result --device cpu

Writes PaddleSeg's ``pseudo_color_prediction/`` (label maps 0/1/2 as a palette PNG) and
``added_prediction/`` (overlays) under ``--save_dir``, at each image's size. The weights are
checked against the config first (names and shapes; a mismatch is one line, exit 2).

A two-stage (ROI) model, trained on disc-centred crops (``roi.json`` beside ``--model_path``, or
``crops.json`` in the config's ``dataset_root``), takes the kit's two-stage path on full photos
(``gamma_kit.seg.predictor``: stage 1 locates the disc, the crop is segmented and pasted back),
said in one log line; ``--aug_pred`` and ``--is_slide`` are refused there. For GAMMA submissions
(0/128/255 BMPs, zipped, stage 1's report) use ``python -m gamma_kit.seg predict``.
"""
import argparse
from pathlib import Path

import _kit


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Model prediction")
    # Common params
    parser.add_argument("--config", help="The path of config file.", type=str)
    parser.add_argument("--model_path", help="The path of trained weights for prediction.", type=str)
    parser.add_argument("--image_path", type=str,
                        help="The image to predict: an image, a file list of image paths, or a folder of images")
    parser.add_argument("--save_dir", help="The directory for saving the predicted results.", type=str,
                        default="./output/result")
    parser.add_argument("--device", help="Set the device place for predicting model.", default="gpu",
                        choices=["cpu", "gpu", "xpu", "npu", "mlu"], type=str)
    _kit.add_aug_slide_args(parser, "aug_pred", "prediction")
    # Custom color map
    parser.add_argument("--custom_color", nargs="+", type=int,
                        help="Save images with a custom color map. Default: None, PaddleSeg's color map.")
    parser.add_argument("--opts", help="Update the key-value pairs of all options.", default=None, nargs="+")
    return parser.parse_args(argv)


def merge_test_config(cfg, args):
    test_config = cfg.test_config
    for key in ("aug_eval", "auc_roc"):     # evaluation-only keys that predict does not take
        test_config.pop(key, None)
    test_config = _kit.merge_aug_slide(test_config, args, "aug_pred")
    if args.custom_color:
        test_config["custom_color"] = args.custom_color
    return test_config


def main(args):
    from paddleseg.core import predict
    from paddleseg.transforms import Compose
    from paddleseg.utils import get_image_list, logger

    from gamma_kit.safety import check_output_path

    cfg = _kit.load_config(args.config, opts=args.opts)
    _kit.check_weights(args.model_path, required=True)
    if args.image_path is None or not Path(args.image_path).exists():
        raise FileNotFoundError(f"--image_path {args.image_path} does not exist (an image, a list file or a folder)")
    check_output_path(args.save_dir, [args.image_path], "--save_dir")
    roi = _kit.two_stage_roi(cfg, args.model_path)
    if roi is not None and (args.aug_pred or args.is_slide):
        raise ValueError("--aug_pred / --is_slide: not on the two-stage path of this ROI model; flip TTA there is "
                         "python -m gamma_kit.seg predict --model RUN --images DIR --out OUT --tta")
    builder, test_config = _kit.builder_on_device(cfg, args, merge_test_config)

    model = builder.model
    _kit.load_weights(model, args.model_path, args.config)
    image_list, image_dir = get_image_list(args.image_path)
    if not image_list:
        raise ValueError(f"--image_path {args.image_path}: no images found")
    logger.info("The number of images: {}".format(len(image_list)))

    if roi is not None:
        from gamma_kit.seg.predictor import SegPredictor, eval_transforms

        logger.info(f"two-stage (ROI) model, trained on disc-centred crops ({roi.size} px, window {roi.factor:g} x "
                    "the disc): stage 1 locates the disc on each full photo, the crop is segmented and pasted back "
                    "at the photo's size (gamma_kit.seg.predictor; python -m gamma_kit.seg predict for submissions)")
        predictor = SegPredictor(model, eval_transforms(cfg), int(cfg.model_cfg.get("num_classes", 3)),
                                 roi=roi)
        _kit.predict_two_stage(predictor, image_list, image_dir, args.save_dir, test_config.get("custom_color"))
        return
    predict(model, model_path=args.model_path, transforms=Compose(builder.val_transforms), image_list=image_list,
            image_dir=image_dir, save_dir=args.save_dir, **test_config)


if __name__ == "__main__":
    raise SystemExit(_kit.run(main, parse_args()))
