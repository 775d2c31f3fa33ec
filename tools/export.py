"""Export a trained model for inference, as PaddleSeg's ``tools/export.py`` (same flags and defaults).

    python tools/export.py --config configs/seg/liteunet_gamma_cpu.yml \
        --model_path output/seg_cpu/best_model/model.pdparams \
        --save_dir output/inference_model --input_shape 1 3 160 160

Writes ``model.pdmodel`` + ``model.pdiparams`` (Paddle's legacy program format, which PaddleSeg's
``deploy/python/infer.py`` runs on Paddle 3.3.1; its PIR ``model.json`` it does not) and
``deploy.yaml`` (transforms, input shape, output op) under ``--save_dir``; see
``gamma_kit.seg.export``. Then, with PaddleSeg 2.8 or 2.9's deploy script, on a CPU:

    python PaddleSeg/deploy/python/infer.py \
        --config output/inference_model/deploy.yaml --image_path IMAGES --save_dir output/infer --device cpu

(``--output_op none`` exports logits: add ``--with_argmax`` there). The weights are checked against
the config first (names and shapes). For ``python -m gamma_kit.seg predict --exported`` use
``python -m gamma_kit.seg export``, whose folder infer.py runs as well.
"""
import argparse
import os
from pathlib import Path

import _kit


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Export Inference Model.")
    parser.add_argument("--config", help="The path of config file.", type=str)
    parser.add_argument("--model_path", help="The path of trained weights for exporting inference model",
                        type=str)
    parser.add_argument("--save_dir", help="The directory for saving the exported inference model", type=str,
                        default="./output/inference_model")
    parser.add_argument("--input_shape", nargs="+", type=int, default=None,
                        help="Export the model with fixed input shape, e.g., `--input_shape 1 3 1024 1024`.")
    parser.add_argument("--output_op", choices=["argmax", "softmax", "none"], default="argmax",
                        help="The op appended to the inference model (the model outputs logits N*C*H*W). "
                             "Default: argmax.")
    parser.add_argument("--opts", help="Update the key-value pairs of all options.", default=None, nargs="+")
    return parser.parse_args(argv)


def main(args):
    import yaml
    from paddleseg.cvlibs import SegBuilder
    from paddleseg.utils import logger, utils

    from gamma_kit.safety import atomic_write_text
    from gamma_kit.seg.export import DEPLOY_NAME, OutputHead, deploy_info, save_inference_model

    cfg = _kit.load_config(args.config, opts=args.opts)
    _kit.check_weights(args.model_path, required=False)
    if args.input_shape is not None and len(args.input_shape) != 4:
        raise ValueError(f"--input_shape needs 4 numbers N C H W, got {args.input_shape}")
    if not cfg.val_dataset_cfg:
        raise ValueError(f"{args.config}: no val_dataset (its transforms go into deploy.yaml)")
    _kit.prepare()
    builder = SegBuilder(cfg)

    utils.show_env_info()
    utils.show_cfg_info(cfg)
    os.environ["PADDLESEG_EXPORT_STAGE"] = "True"

    model = builder.model
    if args.model_path is not None:
        _kit.load_weights(model, args.model_path, args.config)
        logger.info("Loaded trained params successfully.")
    shape = [None, 3, None, None] if args.input_shape is None else args.input_shape
    graph = save_inference_model(OutputHead(model, (args.output_op,)), shape, args.save_dir)
    deploy = deploy_info(graph, cfg.val_dataset_cfg.get("transforms"), shape, args.output_op)
    logger.info("\n---------------Deploy Information---------------\n" + yaml.dump(deploy))
    atomic_write_text(Path(args.save_dir) / DEPLOY_NAME, yaml.dump(deploy))
    logger.info(f"The inference model is saved in {args.save_dir}")


if __name__ == "__main__":
    raise SystemExit(_kit.run(main, parse_args()))
