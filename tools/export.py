"""Export a trained model for inference, as PaddleSeg's ``tools/export.py`` (same flags and defaults).

    python tools/export.py --config configs/seg/liteunet_gamma_cpu.yml \
        --model_path output/seg_cpu/best_model/model.pdparams \
        --save_dir output/inference_model --input_shape 1 3 160 160

Writes ``paddle.jit.save``'s files under ``--save_dir`` and ``deploy.yaml`` (transforms, input
shape, output op). On Paddle 3.x the graph is ``model.json`` (``model.pdmodel`` on 2.x);
``deploy.yaml`` names the file that was written. CPU inference through ``paddle.inference``
needs ``config.disable_mkldnn()`` on Paddle 3.3.1; ``gamma_kit.seg.export.StaticPredictor``
does that for exports of ``python -m gamma_kit.seg export``.
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
    import paddle
    import yaml
    from paddleseg.cvlibs import SegBuilder
    from paddleseg.deploy.export import WrappedModel
    from paddleseg.utils import logger, utils

    from gamma_kit.data import atomic_write_text

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
        model.set_dict(paddle.load(args.model_path))
        logger.info("Loaded trained params successfully.")
    if args.output_op != "none":
        model = WrappedModel(model, args.output_op)

    shape = [None, 3, None, None] if args.input_shape is None else args.input_shape
    model.eval()
    model = paddle.jit.to_static(model, input_spec=[paddle.static.InputSpec(shape=shape, dtype="float32")])
    save_dir = Path(args.save_dir)
    paddle.jit.save(model, str(save_dir / "model"))

    graph = "model.json" if (save_dir / "model.json").is_file() else "model.pdmodel"
    deploy_info = {"Deploy": {"model": graph, "params": "model.pdiparams",
                              "transforms": cfg.val_dataset_cfg.get("transforms"), "input_shape": shape,
                              "output_op": args.output_op,
                              "output_dtype": "int32" if args.output_op == "argmax" else "float32"}}
    logger.info("\n---------------Deploy Information---------------\n" + yaml.dump(deploy_info))
    atomic_write_text(save_dir / "deploy.yaml", yaml.dump(deploy_info))
    logger.info(f"The inference model is saved in {save_dir}")


if __name__ == "__main__":
    raise SystemExit(_kit.run(main, parse_args()))
