"""configs/seg: every YAML loads with PaddleSeg's Config, the main one is the original recipe, and each
trains and evaluates through SegBuilder + paddleseg.core.train as tools/train.py does (tiny data, CPU)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import gamma_kit  # noqa: F401
import paddle
from paddleseg.core import evaluate, train
from paddleseg.cvlibs import Config, SegBuilder

import gamma_kit.seg.models  # noqa: F401  (registers LiteUNet, as the kit's train does)
from gamma_kit.seg.compat import apply_compat
from seg_fixtures import make_prepared, small_transforms

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "seg"
TRAINABLE = sorted(p.name for p in CONFIGS.glob("*.yml"))


def test_config_set():
    assert {"unet_gamma_512.yml", "unet_gamma_512_mixedloss.yml", "liteunet_gamma_cpu.yml"} <= set(TRAINABLE)
    assert (CONFIGS / "_base_" / "gamma_seg_dataset.yml").is_file()


def test_base_is_a_partial_dataset_config():
    """Like PaddleSeg's own _base_ files it holds data only, so Config's sanity check rejects it alone."""
    from paddleseg.cvlibs.config import parse_from_yaml

    d = parse_from_yaml(str(CONFIGS / "_base_" / "gamma_seg_dataset.yml"))
    assert set(d) == {"batch_size", "iters", "train_dataset", "val_dataset"}
    with pytest.raises(RuntimeError, match="No optimizer"):
        Config(str(CONFIGS / "_base_" / "gamma_seg_dataset.yml"))


@pytest.mark.parametrize("name", TRAINABLE)
def test_every_yaml_loads(name):
    cfg = Config(str(CONFIGS / name))
    assert cfg.train_dataset_cfg["num_classes"] == 3
    assert cfg.train_dataset_cfg["dataset_root"] == "data/seg_prepared"
    assert cfg.val_dataset_cfg["val_path"] == "data/seg_prepared/val_list.txt"


def test_main_config_is_the_original_recipe():
    cfg = Config(str(CONFIGS / "unet_gamma_512.yml"))
    d = cfg.dic
    assert d["model"]["type"] == "UNet" and d["model"]["num_classes"] == 3
    assert d["loss"] == {"types": [{"type": "DiceLoss"}], "coef": [1]}
    assert cfg.batch_size == 4 and cfg.iters == 3750 == 150 * (100 // 4)
    assert d["optimizer"] == {"type": "SGD", "momentum": 0.9, "weight_decay": 1.0e-4}
    tr = [t["type"] for t in d["train_dataset"]["transforms"]]
    assert tr == ["Resize", "RandomHorizontalFlip", "RandomVerticalFlip", "RandomDistort", "RandomBlur", "Normalize"]
    resize, hflip, vflip, distort, blur, norm = d["train_dataset"]["transforms"]
    assert resize == {"type": "Resize", "target_size": [512, 512], "interp": "AREA"}
    assert hflip["prob"] == vflip["prob"] == 0.5 and blur["prob"] == 0.05
    assert distort["hue_range"] == 18 and distort["brightness_range"] == 0.5
    assert norm["mean"] == norm["std"] == [0.5, 0.5, 0.5]
    assert [t["type"] for t in d["val_dataset"]["transforms"]] == ["Resize", "Normalize"]

    builder = SegBuilder(cfg)
    opt = builder.optimizer
    assert isinstance(opt, paddle.optimizer.Momentum)
    sched = builder.lr_scheduler

    def lr_at(step):
        sched.step(step)
        return sched()

    assert lr_at(0) == pytest.approx(0.0)
    assert lr_at(125) == pytest.approx(5e-4)
    assert lr_at(250) == pytest.approx(1e-3)
    assert lr_at(250 + 1875) == pytest.approx(1e-3 * (1 + math.cos(math.pi * 0.5)) / 2, rel=1e-4)
    assert lr_at(3749) < 1e-4


def test_mixed_and_cpu_variants():
    mixed = Config(str(CONFIGS / "unet_gamma_512_mixedloss.yml")).dic
    assert mixed["loss"]["types"][0]["type"] == "MixedLoss"
    assert [t["type"] for t in mixed["loss"]["types"][0]["losses"]] == ["DiceLoss", "CrossEntropyLoss"]
    assert mixed["iters"] == 3750 and mixed["model"]["type"] == "UNet"
    cpu = Config(str(CONFIGS / "liteunet_gamma_cpu.yml")).dic
    assert cpu["model"]["type"] == "LiteUNet"
    assert cpu["train_dataset"]["transforms"][0]["target_size"][0] <= 256
    roi = Config(str(CONFIGS / "roi_liteunet_cpu.yml")).dic      # the CPU recipe of issues 19.2 / 20.3
    assert (roi["batch_size"], roi["iters"], roi["model"]["conv_bias"]) == (8, 1500, False)
    sched = roi["lr_scheduler"]
    assert sched["warmup_iters"] + sched["T_max"] == roi["iters"]   # the rate reaches 0 at the last step


@pytest.mark.slow
@pytest.mark.parametrize("name", TRAINABLE)
def test_yaml_trains_and_evaluates_like_tools_train(name, tmp_path, monkeypatch):
    """tools/train.py --config configs/seg/<name>, run from a folder holding data/seg_prepared."""
    make_prepared(tmp_path, n_train=4, n_test=1, size=(160, 128))
    monkeypatch.chdir(tmp_path)
    apply_compat()
    paddle.set_device("cpu")
    cfg = Config(str(CONFIGS / name), iters=2, batch_size=2, opts=list(small_transforms(32)))
    builder = SegBuilder(cfg)
    model = builder.model
    train(model, builder.train_dataset, val_dataset=builder.val_dataset, optimizer=builder.optimizer,
          save_dir=str(tmp_path / "out"), iters=cfg.iters, batch_size=cfg.batch_size, save_interval=2,
          log_iters=1, losses=builder.loss, test_config=cfg.test_config)
    assert (tmp_path / "out" / "iter_2" / "model.pdparams").is_file()
    assert (tmp_path / "out" / "best_model" / "model.pdparams").is_file()
    miou, acc, class_iou, _, _ = evaluate(model, builder.val_dataset, print_detail=False)
    assert 0.0 <= miou <= 1.0 and np.asarray(class_iou).shape == (3,)
