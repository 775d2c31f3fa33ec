"""gamma_kit.seg.paddlex_api: the original notebook's PaddleX 2 calls, on tiny data; the documented
workflow with every option also in a fresh process (nothing imported beforehand registers LiteUNet)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import yaml

import gamma_kit  # noqa: F401
import paddle

from gamma_kit.data import read_image
from gamma_kit.seg import paddlex_api as pdx
from gamma_kit.seg.paddlex_api import transforms as T
from seg_fixtures import make_tiny_seg_data


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from gamma_kit.seg.prepare import prepare_dataset

    tmp = tmp_path_factory.mktemp("pdx")
    make_tiny_seg_data(tmp / "gamma", n_train=5, n_test=1, size=(144, 128), seed=4)
    prepare_dataset(tmp / "gamma", tmp / "prep", progress=False)
    pdx.split_dataset(str(tmp / "prep"), val_value=0.0001)
    return tmp


def _datasets(prep, size=32):
    train_tf = T.Compose([T.Resize(target_size=size, interp="AREA"), T.RandomHorizontalFlip(),
                          T.RandomVerticalFlip(), T.RandomDistort(), T.RandomBlur(prob=0.05), T.Normalize()])
    eval_tf = T.Compose([T.Resize(target_size=size, interp="AREA"), T.Normalize()])
    train = pdx.SegDataset(data_dir=str(prep), file_list=str(prep / "train_list.txt"),
                           label_list=str(prep / "labels.txt"), transforms=train_tf, shuffle=True)
    val = pdx.SegDataset(data_dir=str(prep), file_list=str(prep / "val_list.txt"),
                         label_list=str(prep / "labels.txt"), transforms=eval_tf)
    return train, val


def test_transforms_map_to_paddleseg():
    tf = T.Compose([T.Resize(target_size=512, interp="AREA"), T.RandomHorizontalFlip(), T.RandomVerticalFlip(),
                    T.RandomDistort(), T.RandomBlur(prob=0.05), T.Normalize()])
    cfg = tf.to_config()
    assert cfg[0] == {"type": "Resize", "target_size": [512, 512], "interp": "AREA"}
    assert [c["type"] for c in cfg] == ["Resize", "RandomHorizontalFlip", "RandomVerticalFlip", "RandomDistort",
                                        "RandomBlur", "Normalize"]
    assert cfg[3]["hue_range"] == 18 and cfg[5] == {"type": "Normalize", "mean": [0.5] * 3, "std": [0.5] * 3}
    with pytest.raises(TypeError):
        T.Compose(["Resize"])
    with pytest.raises(ValueError):
        T.Resize(target_size=(1, 2, 3))


def test_split_and_dataset(prepared):
    train, val = _datasets(prepared / "prep")
    assert len(train) == 4 and len(val) == 1
    assert train.labels == ["0", "1", "2"]
    with pytest.raises(FileNotFoundError, match="not found"):
        pdx.SegDataset(str(prepared / "prep"), str(prepared / "prep" / "none.txt"), transforms=T.Compose([]))


@pytest.mark.slow
def test_unet_train_imagenet_warning_load_predict(prepared):
    train, val = _datasets(prepared / "prep")
    model = pdx.UNet(num_classes=3, use_mixed_loss=[("DiceLoss", 1)])
    with pytest.warns(UserWarning, match="IMAGENET.*scratch"):
        trained = model.train(num_epochs=1, train_dataset=train, train_batch_size=2, eval_dataset=val,
                              learning_rate=0.001, warmup_steps=1, warmup_start_lr=0.0, save_interval_epochs=1,
                              save_dir=str(prepared / "unet"), use_vdl=False, pretrain_weights="IMAGENET",
                              optimizer={"type": "SGD", "momentum": 0.9, "weight_decay": 1e-4},
                              lr_schedule="cosine", device="cpu")
    cfg = yaml.safe_load((prepared / "unet" / "train_config.yml").read_text())
    assert cfg["iters"] == 2 and cfg["model"]["type"] == "UNet"
    assert cfg["loss"] == {"types": [{"type": "DiceLoss"}], "coef": [1.0]}
    assert cfg["lr_scheduler"]["warmup_iters"] == 1 and cfg["lr_scheduler"]["type"] == "CosineAnnealingDecay"
    loaded = pdx.load_model(str(prepared / "unet" / "best_model"))
    path = next((prepared / "gamma").rglob("testing/fundus color images/*.jpg"))
    for result in (loaded.predict(str(path)), trained.predict(read_image(path)), model.predict(str(path))):
        assert result["label_map"].shape == (128, 144) and result["label_map"].dtype == np.uint8
        assert result["score_map"].shape == (128, 144, 3)
    assert isinstance(loaded.net, paddle.nn.Layer)


def test_lite_unet_mixed_loss_custom_optimizer(prepared):
    train, _ = _datasets(prepared / "prep")
    model = pdx.UNet(num_classes=3, use_mixed_loss=True, base_channels=4, levels=2)
    net = model.build()
    opt = paddle.optimizer.Adam(learning_rate=1e-3, parameters=net.parameters())
    before = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    model.train(num_epochs=1, train_dataset=train, train_batch_size=2, optimizer=opt,
                save_dir=str(prepared / "lite"), device="cpu")
    changed = [k for k, v in net.state_dict().items() if not np.array_equal(v.numpy(), before[k])]
    assert changed, "the custom optimizer did not update the network it was built on"
    cfg = yaml.safe_load((prepared / "lite" / "train_config.yml").read_text())
    assert cfg["model"]["type"] == "LiteUNet"
    assert [t["type"] for t in cfg["loss"]["types"][0]["losses"]] == ["CrossEntropyLoss", "DiceLoss"]
    assert cfg["lr_scheduler"]["type"] == "PolynomialDecay"
    assert pdx.load_model(str(prepared / "lite")).predict(np.zeros((40, 50, 3), np.uint8))["label_map"].shape == (40, 50)


def test_bad_arguments(prepared):
    train, _ = _datasets(prepared / "prep")
    with pytest.raises(ValueError, match="unknown loss"):
        pdx.UNet(num_classes=3, use_mixed_loss=[("NoSuchLoss", 1)])
    with pytest.raises(ValueError, match="cannot fill one batch"):
        pdx.UNet(num_classes=3).train(num_epochs=1, train_dataset=train, train_batch_size=16,
                                      save_dir=str(prepared / "x"))
    with pytest.raises(ValueError, match="not trained"):
        pdx.UNet(num_classes=3).predict(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="no trained weights"):
        pdx.load_model(str(prepared / "prep"))


FRESH_PROCESS = textwrap.dedent("""
    import json, sys, warnings
    from pathlib import Path
    from gamma_kit.seg import paddlex_api as pdx
    from gamma_kit.seg.paddlex_api import transforms as T

    prep, out = Path(sys.argv[1]), Path(sys.argv[2])
    pdx.split_dataset(str(prep), val_value=0.0001)
    train_tf = T.Compose([T.Resize(target_size=32, interp="AREA"), T.RandomHorizontalFlip(),
                          T.RandomVerticalFlip(), T.RandomDistort(), T.RandomBlur(prob=0.05), T.Normalize()])
    eval_tf = T.Compose([T.Resize(target_size=32, interp="AREA"), T.Normalize()])
    train_ds = pdx.SegDataset(str(prep), str(prep / "train_list.txt"), str(prep / "labels.txt"), train_tf,
                              shuffle=True)
    eval_ds = pdx.SegDataset(str(prep), str(prep / "val_list.txt"), str(prep / "labels.txt"), eval_tf)
    # the module docstring's recipe, with the kit's LiteUNet (base_channels) at a tiny size
    model = pdx.UNet(num_classes=3, use_mixed_loss=[("DiceLoss", 1)], base_channels=4, levels=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.train(num_epochs=1, train_dataset=train_ds, train_batch_size=2, eval_dataset=eval_ds,
                    learning_rate=0.001, warmup_steps=1, warmup_start_lr=0.0, save_interval_epochs=1,
                    log_interval_steps=1, save_dir=str(out / "lite"), use_vdl=True, pretrain_weights="IMAGENET",
                    optimizer={"type": "SGD", "momentum": 0.9, "weight_decay": 1e-4}, lr_schedule="cosine",
                    early_stop=True, device="cpu", seed=0)
    loaded = pdx.load_model(str(out / "lite" / "best_model"), device="cpu")
    photo = sys.argv[3]
    one, flipped = loaded.predict(photo), loaded.predict([photo], tta=True)[0]
    # the other documented options: use_mixed_loss=True (CE + Dice), fine-tuning from a .pdparams,
    # the default polynomial decay with lr_decay_power, align_corners
    tuned = pdx.UNet(num_classes=3, use_mixed_loss=True, base_channels=4, levels=2, align_corners=True)
    tuned.train(num_epochs=1, train_dataset=train_ds, train_batch_size=2, learning_rate=0.01, lr_decay_power=0.5,
                pretrain_weights=str(out / "lite" / "best_model" / "model.pdparams"), save_dir=str(out / "tuned"),
                device="cpu")
    print(json.dumps({"warnings": [str(w.message) for w in caught],
                      "label_shape": list(one["label_map"].shape), "score_shape": list(one["score_map"].shape),
                      "tta_shape": list(flipped["label_map"].shape), "two_stage": loaded.two_stage,
                      "tuned_shape": list(tuned.predict(photo)["label_map"].shape)}))
""")


@pytest.mark.slow
def test_documented_options_in_a_fresh_process(prepared, tmp_path):
    """PaddleX 2's calls with every documented option, LiteUNet (base_channels) included, in a new
    interpreter that imports nothing but the API first (issue 16.9: it failed with 'LiteUNet was not found')."""
    from gamma_kit.seg.models import LiteUNet

    photo = next((prepared / "gamma").rglob("testing/fundus color images/*.jpg"))
    res = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(prepared / "prep"), str(tmp_path), str(photo)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert any("IMAGENET" in w and "scratch" in w for w in out["warnings"])
    assert out["label_shape"] == out["tta_shape"] == out["tuned_shape"] == [128, 144]
    assert out["score_shape"] == [128, 144, 3] and out["two_stage"] is False
    lite = yaml.safe_load((tmp_path / "lite" / "train_config.yml").read_text())
    assert lite["model"] == {"type": "LiteUNet", "num_classes": 3, "base_channels": 4, "levels": 2,
                             "align_corners": False}
    assert lite["lr_scheduler"]["type"] == "CosineAnnealingDecay" and lite["lr_scheduler"]["warmup_iters"] == 1
    assert lite["optimizer"] == {"type": "SGD", "momentum": 0.9, "weight_decay": 1e-4}
    assert "val_dataset" in lite and lite["train_dataset"]["transforms"][3]["type"] == "RandomDistort"
    # the weights really are a base_channels=4, 2-level LiteUNet's
    saved = paddle.load(str(tmp_path / "lite" / "best_model" / "model.pdparams"))
    expected = LiteUNet(num_classes=3, base_channels=4, levels=2).state_dict()
    assert {k: list(v.shape) for k, v in saved.items()} == {k: list(v.shape) for k, v in expected.items()}
    assert list((tmp_path / "lite").rglob("vdlrecords.*")), "use_vdl=True wrote no VisualDL log"
    tuned = yaml.safe_load((tmp_path / "tuned" / "train_config.yml").read_text())
    assert tuned["model"]["pretrained"].endswith("model.pdparams") and tuned["model"]["align_corners"] is True
    assert tuned["lr_scheduler"]["type"] == "PolynomialDecay" and tuned["lr_scheduler"]["power"] == 0.5
    assert [t["type"] for t in tuned["loss"]["types"][0]["losses"]] == ["CrossEntropyLoss", "DiceLoss"]
