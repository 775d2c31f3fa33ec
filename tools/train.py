"""Train a PaddleSeg YAML config, as PaddleSeg's ``tools/train.py`` (same flags and defaults).

    python tools/train.py --config configs/seg/liteunet_gamma_cpu.yml --do_eval --use_vdl \
        --save_interval 100 --save_dir output/seg_cpu --device cpu
    python -m paddle.distributed.launch --gpus 0,1,2,3 tools/train.py \
        --config configs/seg/unet_gamma_512.yml --do_eval --use_vdl --save_dir output/seg_unet

Differences from PaddleSeg's script: the compat patches for pip paddleseg 2.8.0 on Paddle 3.x
and the kit's models (``LiteUNet``) are set up first; the datasets are checked first (missing
files, labels outside 0..num_classes-1 as one clear error); at the end, rank 0 writes the kit's
``model.yml`` and ``last_model/`` (+ ``roi.json`` for disc-crop data) so
``python -m gamma_kit.seg predict --model <save_dir>`` can use the run.
Multi-GPU: ``core.train`` initialises fleet itself when the launcher starts several ranks.
"""
import argparse
from pathlib import Path

import _kit


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Model training")
    # Common params
    parser.add_argument("--config", help="The path of config file.", type=str)
    parser.add_argument("--device", help="Set the device place for training model.", default="gpu",
                        choices=["cpu", "gpu", "xpu", "npu", "mlu"], type=str)
    parser.add_argument("--save_dir", help="The directory for saving the model snapshot.", type=str,
                        default="./output")
    parser.add_argument("--num_workers", help="Number of workers for data loader.", type=int, default=0)
    parser.add_argument("--do_eval", help="Whether to do evaluation in training.", action="store_true")
    parser.add_argument("--use_vdl", help="Whether to record the data to VisualDL in training.",
                        action="store_true")
    # Runtime params
    parser.add_argument("--resume_model", help="The path of the model to resume training.", type=str)
    parser.add_argument("--iters", help="Iterations in training.", type=int)
    parser.add_argument("--batch_size", help="Mini batch size of one gpu or cpu.", type=int)
    parser.add_argument("--learning_rate", help="Learning rate.", type=float)
    parser.add_argument("--save_interval", help="How many iters to save a model snapshot once during training.",
                        type=int, default=1000)
    parser.add_argument("--log_iters", help="Display logging information at every `log_iters`.", default=10,
                        type=int)
    parser.add_argument("--keep_checkpoint_max", help="Maximum number of checkpoints to save.", type=int,
                        default=5)
    # Other params
    parser.add_argument("--seed", help="Set the random seed in training.", default=None, type=int)
    parser.add_argument("--precision", default="fp32", type=str, choices=["fp32", "fp16"],
                        help="Use AMP (auto mixed precision) if precision='fp16'.")
    parser.add_argument("--amp_level", default="O1", type=str, choices=["O1", "O2"],
                        help="Auto mixed precision level (O1: lists of ops in fp16; O2: pure fp16).")
    parser.add_argument("--profiler_options", type=str, help="The option of train profiler.")
    parser.add_argument("--data_format", type=str, default="NCHW",
                        help='Data format of the input, "NCHW" or "NHWC" (NHWC: DeepLabV3P only).')
    parser.add_argument("--repeats", type=int, default=1,
                        help="Repeat the samples in the dataset for `repeats` times in each epoch.")
    parser.add_argument("--opts", help="Update the key-value pairs of all options.", nargs="+")
    return parser.parse_args(argv)


def main(args):
    import paddle
    from paddleseg.core import train
    from paddleseg.cvlibs import SegBuilder
    from paddleseg.utils import utils

    from gamma_kit.seg import model_dir as model_folder
    from gamma_kit.seg import training

    for name in ("iters", "batch_size", "save_interval", "log_iters", "repeats"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ValueError(f"--{name} must be positive, got {value}")
    if args.resume_model is not None and not (Path(args.resume_model) / "model.pdparams").is_file():
        raise FileNotFoundError(f"--resume_model {args.resume_model} holds no model.pdparams")
    cfg = _kit.load_config(args.config, learning_rate=args.learning_rate, iters=args.iters,
                           batch_size=args.batch_size, opts=args.opts)
    training.check_dataset_config(cfg, sections=("train_dataset", "val_dataset") if args.do_eval
                                  else ("train_dataset",))
    roi = model_folder.read_crop_roi(cfg)
    _kit.prepare()
    builder = SegBuilder(cfg)

    utils.show_env_info()
    utils.show_cfg_info(cfg)
    utils.set_seed(args.seed)
    utils.set_device(args.device)
    utils.set_cv2_num_threads(args.num_workers)

    _kit.apply_data_format(cfg, args.data_format)

    model = utils.convert_sync_batchnorm(builder.model, args.device)
    train_dataset = builder.train_dataset
    if args.repeats > 1:
        train_dataset.file_list *= args.repeats
    val_dataset = builder.val_dataset if args.do_eval else None
    optimizer = builder.optimizer
    loss = builder.loss

    train(model, train_dataset, val_dataset=val_dataset, optimizer=optimizer, save_dir=args.save_dir,
          iters=cfg.iters, batch_size=cfg.batch_size, resume_model=args.resume_model,
          save_interval=args.save_interval, log_iters=args.log_iters, num_workers=args.num_workers,
          use_vdl=args.use_vdl, losses=loss, keep_checkpoint_max=args.keep_checkpoint_max,
          test_config=cfg.test_config, precision=args.precision, amp_level=args.amp_level,
          profiler_options=args.profiler_options, to_static_training=cfg.to_static_training)

    if paddle.distributed.ParallelEnv().local_rank == 0:
        model_folder.write_model_dirs(cfg, Path(args.save_dir), cfg.iters, roi)


if __name__ == "__main__":
    raise SystemExit(_kit.run(main, parse_args()))
