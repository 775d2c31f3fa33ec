"""Evaluate a trained model on a config's ``val_dataset``, as PaddleSeg's ``tools/val.py`` (same flags).

    python tools/val.py --config configs/seg/liteunet_gamma_cpu.yml \
        --model_path output/seg_cpu/best_model/model.pdparams --device cpu

Prints PaddleSeg's pooled mIoU / Acc / Kappa and per-class IoU (Dice = 2 IoU / (1 + IoU)).
The challenge averages Dice per image: ``python -m gamma_kit.seg predict ... --gt`` reports that.
The compat patches (``calculate_area`` on Paddle 3.x) and the kit's models are set up first, and
the weights are checked against the config (names and shapes; a mismatch is one line, exit 2).
A two-stage (ROI) config's val list holds disc-centred crops: the scores are crop scores, which
one log line says.
"""
import argparse

import _kit


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Model evaluation")
    # Common params
    parser.add_argument("--config", help="The path of config file.", type=str)
    parser.add_argument("--model_path", help="The path of trained weights to be loaded for evaluation.", type=str)
    parser.add_argument("--num_workers", help="Number of workers for data loader.", type=int, default=0)
    parser.add_argument("--device", help="Set the device place for evaluating model.", default="gpu",
                        choices=["cpu", "gpu", "xpu", "npu", "mlu"], type=str)
    _kit.add_aug_slide_args(parser, "aug_eval", "evaluation")
    # Other params
    parser.add_argument("--data_format", type=str, default="NCHW",
                        help='Data format of the input, "NCHW" or "NHWC" (NHWC: DeepLabV3P only).')
    parser.add_argument("--auc_roc", help="Whether to use auc_roc metric.", type=bool, default=False)
    parser.add_argument("--opts", help="Update the key-value pairs of all options.", default=None, nargs="+")
    return parser.parse_args(argv)


def merge_test_config(cfg, args):
    test_config = _kit.merge_aug_slide(cfg.test_config, args, "aug_eval")
    if args.auc_roc:
        test_config["auc_roc"] = args.auc_roc
    return test_config


def main(args):
    from paddleseg.core import evaluate
    from paddleseg.utils import logger

    from gamma_kit.seg import training

    cfg = _kit.load_config(args.config, opts=args.opts)
    training.check_dataset_config(cfg, sections=("val_dataset",))
    _kit.check_weights(args.model_path, required=False)
    builder, test_config = _kit.builder_on_device(cfg, args, merge_test_config)

    _kit.apply_data_format(cfg, args.data_format)

    model = builder.model
    if args.model_path:
        _kit.load_weights(model, args.model_path, args.config)
        logger.info("Loaded trained weights successfully.")
    val_dataset = builder.val_dataset
    if _kit.two_stage_roi(cfg, args.model_path) is not None:
        logger.info("two-stage (ROI) config: the scores below are on the disc-centred crops of val_path; full-photo "
                    "scores: python -m gamma_kit.seg predict --model RUN --data-root D --gt MASKS (or "
                    "python -m gamma_kit.evaluate seg --pred DIR --gt MASKS)")

    return evaluate(model, val_dataset, num_workers=args.num_workers, **test_config)


if __name__ == "__main__":
    raise SystemExit(_kit.run(main, parse_args()))
