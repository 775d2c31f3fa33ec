"""The original notebook's PaddleX 2 workflow, on PaddleSeg (PaddleX 2 cannot run on Paddle 3, SPEC 3).

    from gamma_kit.seg import paddlex_api as pdx
    from gamma_kit.seg.paddlex_api import transforms as T

    pdx.split_dataset("data/seg_prepared", val_value=0.0001)
    train_tf = T.Compose([T.Resize(target_size=512, interp="AREA"), T.RandomHorizontalFlip(),
                          T.RandomVerticalFlip(), T.RandomDistort(), T.RandomBlur(prob=0.05), T.Normalize()])
    eval_tf = T.Compose([T.Resize(target_size=512, interp="AREA"), T.Normalize()])
    train_ds = pdx.SegDataset("data/seg_prepared", "data/seg_prepared/train_list.txt",
                              "data/seg_prepared/labels.txt", train_tf, shuffle=True)
    eval_ds = pdx.SegDataset("data/seg_prepared", "data/seg_prepared/val_list.txt",
                             "data/seg_prepared/labels.txt", eval_tf)
    model = pdx.UNet(num_classes=3, use_mixed_loss=[("DiceLoss", 1)])
    model.train(num_epochs=150, train_dataset=train_ds, train_batch_size=4, eval_dataset=eval_ds,
                learning_rate=0.001, warmup_steps=250, warmup_start_lr=0.0, save_interval_epochs=5,
                save_dir="output/unet", use_vdl=True, pretrain_weights="IMAGENET",
                optimizer={"type": "SGD", "momentum": 0.9, "weight_decay": 1e-4}, lr_schedule="cosine")
    model = pdx.load_model("output/unet/best_model")
    result = model.predict("0101.jpg")   # {"label_map": (H, W) uint8 0/1/2, "score_map": (H, W, 3)}

Behind it, ``UNet.train`` writes an ordinary PaddleSeg YAML (``save_dir/train_config.yml``)
and trains it with ``training.run_training``, so both routes share one code path.
Differences from PaddleX 2, on purpose: ``pretrain_weights="IMAGENET"`` warns and trains
from scratch (no ImageNet UNet weights exist, nothing downloads); ``use_mixed_loss=True``
means CrossEntropy + Dice with weight 1 each; ``base_channels=`` (kit only) selects the
smaller ``LiteUNet`` for CPUs; ``lr_schedule="cosine"`` (kit only) selects the notebook's
cosine decay instead of PaddleX 2's default polynomial decay. The notebook's recipe is thus
``optimizer={"type": "SGD", "momentum": 0.9, "weight_decay": 1e-4}, lr_schedule="cosine"``.
"""
from __future__ import annotations

import os
import types
import warnings
from pathlib import Path

import numpy as np
import yaml

import gamma_kit  # noqa: F401  (thread settings before paddle)
from gamma_kit.safety import atomic_write_text
from gamma_kit.seg.predictor import SegPredictor
from gamma_kit.seg.predictor import load_model as _load_predictor
from gamma_kit.seg.prepare import read_list_file, split_dataset as _split

__all__ = ["transforms", "SegDataset", "UNet", "load_model", "split_dataset", "PaddleXModel"]


# --------------------------------------------------------------------------- transforms
class _Transform:
    """A PaddleSeg transform described by its registry name and arguments."""

    seg_type = ""

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def to_config(self) -> dict:
        return {"type": self.seg_type, **self.kwargs}

    def __repr__(self) -> str:
        return f"T.{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.kwargs.items())})"


def _size(target_size) -> list[int]:
    if isinstance(target_size, int):
        return [target_size, target_size]
    if len(target_size) != 2:
        raise ValueError(f"target_size must be an int or (w, h), got {target_size!r}")
    return [int(target_size[0]), int(target_size[1])]


class Resize(_Transform):
    """Resize to ``target_size`` (int or (w, h)); ``interp`` one of NEAREST, LINEAR, CUBIC, AREA, LANCZOS4."""

    seg_type = "Resize"

    def __init__(self, target_size=512, interp: str = "LINEAR"):
        super().__init__(target_size=_size(target_size), interp=interp)


class _RandomTransform(_Transform):
    """A PaddleSeg transform applied with probability ``prob`` (the class's ``default_prob`` unless given)."""

    default_prob = 0.5

    def __init__(self, prob: float | None = None):
        super().__init__(prob=self.default_prob if prob is None else prob)


class RandomHorizontalFlip(_RandomTransform):
    seg_type = "RandomHorizontalFlip"


class RandomVerticalFlip(_RandomTransform):
    seg_type = "RandomVerticalFlip"


class RandomDistort(_Transform):
    """Brightness / contrast / saturation (range 0.5, prob 0.5) and hue (range 18, prob 0.5), as PaddleX 2."""

    seg_type = "RandomDistort"

    def __init__(self, brightness_range=0.5, brightness_prob=0.5, contrast_range=0.5, contrast_prob=0.5,
                 saturation_range=0.5, saturation_prob=0.5, hue_range=18, hue_prob=0.5):
        super().__init__(brightness_range=brightness_range, brightness_prob=brightness_prob,
                         contrast_range=contrast_range, contrast_prob=contrast_prob,
                         saturation_range=saturation_range, saturation_prob=saturation_prob,
                         hue_range=hue_range, hue_prob=hue_prob)


class RandomBlur(_RandomTransform):
    seg_type = "RandomBlur"
    default_prob = 0.1


class Normalize(_Transform):
    """(x / 255 - mean) / std per channel; PaddleX 2's defaults mean = std = 0.5."""

    seg_type = "Normalize"

    def __init__(self, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)):
        super().__init__(mean=[float(m) for m in mean], std=[float(s) for s in std])


class Compose:
    """An ordered list of the transforms above."""

    def __init__(self, transforms: list):
        if not isinstance(transforms, (list, tuple)) or not all(isinstance(t, _Transform) for t in transforms):
            raise TypeError("T.Compose takes a list of gamma_kit.seg.paddlex_api.transforms objects")
        self.transforms = list(transforms)

    def to_config(self) -> list[dict]:
        return [t.to_config() for t in self.transforms]

    def __repr__(self) -> str:
        return f"T.Compose({self.transforms!r})"


transforms = types.SimpleNamespace(Compose=Compose, Resize=Resize, RandomHorizontalFlip=RandomHorizontalFlip,
                                   RandomVerticalFlip=RandomVerticalFlip, RandomDistort=RandomDistort,
                                   RandomBlur=RandomBlur, Normalize=Normalize)


# --------------------------------------------------------------------------- data
def split_dataset(dataset_dir: str | os.PathLike, val_value: float = 0.0001, test_value: float = 0.0,
                  seed: int = 0) -> dict[str, Path]:
    """``paddlex --split_dataset --format SEG --dataset_dir D --val_value V --test_value T``."""
    return _split(dataset_dir, val_value=val_value, test_value=test_value, seed=seed)


class SegDataset:
    """PaddleX-2-style dataset description: ``data_dir``, a list file, ``labels.txt`` and transforms.

    Checks the list file at construction (every line's files must exist under ``data_dir``).
    """

    def __init__(self, data_dir: str | os.PathLike, file_list: str | os.PathLike,
                 label_list: str | os.PathLike | None = None, transforms: Compose | None = None,
                 shuffle: bool = False, num_workers: int = 0):
        if not isinstance(transforms, Compose):
            raise TypeError("SegDataset needs transforms=T.Compose([...])")
        self.data_dir, self.file_list = Path(data_dir), Path(file_list)
        self.items = read_list_file(self.file_list, self.data_dir)
        self.labels = None
        if label_list is not None:
            if not Path(label_list).is_file():
                raise FileNotFoundError(f"label_list {label_list} not found (split_dataset writes labels.txt)")
            self.labels = [x for x in Path(label_list).read_text(encoding="utf-8").split() if x]
        self.transforms = transforms
        self.shuffle = shuffle
        self.num_workers = num_workers

    def __len__(self) -> int:
        return len(self.items)

    def to_config(self, mode: str, num_classes: int) -> dict:
        key = "train_path" if mode == "train" else "val_path"
        return {"type": "Dataset", "dataset_root": str(self.data_dir), key: str(self.file_list),
                "num_classes": num_classes, "mode": mode, "transforms": self.transforms.to_config()}


# --------------------------------------------------------------------------- model
class PaddleXModel:
    """A trained model with PaddleX 2's ``predict``; ``net`` is the Paddle layer."""

    def __init__(self, predictor: SegPredictor):
        self._predictor = predictor

    @property
    def net(self):
        return self._predictor.model

    @property
    def two_stage(self) -> bool:
        """True for a model trained on ``prepare --roi`` crops (locate -> crop -> segment -> paste back)."""
        return self._predictor.roi is not None

    def predict(self, img: np.ndarray | str | os.PathLike, transforms=None, tta: bool = False) -> dict:
        """{"label_map": (H, W) uint8 labels 0/1/2 at the source size, "score_map": (H, W, C) float32}.

        ``img`` is an RGB uint8 array or an image path; a list gives a list of results.
        ``transforms`` is ignored (the model's own eval transforms are used). A two-stage model
        locates the disc, segments the crop and pastes it back; ``tta`` (kit only) averages flips.
        """
        if isinstance(img, (list, tuple)):
            return [self._predictor.predict(i, tta=tta) for i in img]
        return self._predictor.predict(img, tta=tta)


def _loss_config(use_mixed_loss) -> dict:
    from paddleseg.cvlibs import manager

    if use_mixed_loss is False or use_mixed_loss is None:
        pairs = [("CrossEntropyLoss", 1.0)]
    elif use_mixed_loss is True:
        pairs = [("CrossEntropyLoss", 1.0), ("DiceLoss", 1.0)]
    else:
        pairs = [(str(n), float(c)) for n, c in use_mixed_loss]
    unknown = [n for n, _ in pairs if n not in manager.LOSSES.components_dict]
    if unknown or not pairs:
        raise ValueError(f"use_mixed_loss: unknown loss name(s) {unknown}; known: "
                         f"{sorted(manager.LOSSES.components_dict)[:20]} ...")
    if len(pairs) == 1:
        return {"types": [{"type": pairs[0][0]}], "coef": [pairs[0][1]]}
    return {"types": [{"type": "MixedLoss", "losses": [{"type": n} for n, _ in pairs],
                       "coef": [c for _, c in pairs]}], "coef": [1]}


class UNet:
    """``paddlex.seg.UNet(num_classes, use_mixed_loss)``; ``base_channels`` (kit only) picks LiteUNet."""

    def __init__(self, num_classes: int = 2, use_mixed_loss=False, use_deconv: bool = False,
                 align_corners: bool = False, base_channels: int | None = None, levels: int = 4):
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.loss_cfg = _loss_config(use_mixed_loss)
        if base_channels is None:
            self.model_cfg = {"type": "UNet", "num_classes": num_classes, "use_deconv": use_deconv,
                              "align_corners": align_corners}
        else:
            self.model_cfg = {"type": "LiteUNet", "num_classes": num_classes, "base_channels": base_channels,
                              "levels": levels, "align_corners": align_corners}
        self.trained: PaddleXModel | None = None

    def train(self, num_epochs: int, train_dataset: SegDataset, train_batch_size: int = 2,
              eval_dataset: SegDataset | None = None, optimizer=None, save_interval_epochs: int = 1,
              log_interval_steps: int = 2, save_dir: str | os.PathLike = "output",
              pretrain_weights: str | None = None, learning_rate: float = 0.01, lr_decay_power: float = 0.9,
              warmup_steps: int = 0, warmup_start_lr: float = 0.0, use_vdl: bool = False,
              early_stop: bool = False, lr_schedule: str = "poly", device: str = "auto",
              seed: int | None = None) -> PaddleXModel:
        """Train as PaddleX 2 did; returns the trained model (also written to ``save_dir``).

        Steps = ``num_epochs * (len(train_dataset) // train_batch_size)``. ``optimizer`` may be a
        ``paddle.optimizer.Optimizer`` built on ``self.net.parameters()`` after ``build()``, or a
        PaddleSeg optimizer dict (e.g. ``{"type": "SGD", "momentum": 0.9, "weight_decay": 4e-5}``).
        Without ``optimizer``: Momentum 0.9, L2 4e-5, polynomial decay (``lr_decay_power``) to 0 after
        the warmup, as PaddleX 2's default optimiser. ``lr_schedule="cosine"`` (kit only) gives the
        original notebook's cosine decay over all steps. ``early_stop`` is accepted and unused.
        """
        from gamma_kit.seg.training import load_config, run_training

        if not isinstance(train_dataset, SegDataset):
            raise TypeError("train_dataset must be a SegDataset")
        steps_per_epoch = len(train_dataset) // train_batch_size
        if steps_per_epoch < 1:
            raise ValueError(f"{len(train_dataset)} training image(s) cannot fill one batch of {train_batch_size}")
        iters = num_epochs * steps_per_epoch
        if warmup_steps >= iters:
            raise ValueError(f"warmup_steps ({warmup_steps}) must be below the total steps ({iters})")
        model_cfg = dict(self.model_cfg)
        if pretrain_weights == "IMAGENET":
            warnings.warn("pretrain_weights='IMAGENET': there are no ImageNet weights for UNet and nothing is "
                          "downloaded here; training starts from scratch", UserWarning, stacklevel=2)
        elif pretrain_weights:
            if not Path(pretrain_weights).is_file():
                raise FileNotFoundError(f"pretrain_weights {pretrain_weights} is not a .pdparams file")
            model_cfg["pretrained"] = str(pretrain_weights)
        if lr_schedule == "cosine":
            lr_cfg = {"type": "CosineAnnealingDecay", "learning_rate": float(learning_rate), "T_max": iters,
                      "eta_min": 0.0}
        elif lr_schedule == "poly":
            lr_cfg = {"type": "PolynomialDecay", "learning_rate": float(learning_rate), "end_lr": 0.0,
                      "power": float(lr_decay_power), "decay_steps": max(1, iters - warmup_steps)}
        else:
            raise ValueError(f"lr_schedule must be 'poly' or 'cosine', got {lr_schedule!r}")
        if warmup_steps > 0:
            lr_cfg.update(warmup_iters=int(warmup_steps), warmup_start_lr=float(warmup_start_lr))
        opt_cfg = optimizer if isinstance(optimizer, dict) else {"type": "SGD", "momentum": 0.9,
                                                                 "weight_decay": 4e-5}
        cfg_dict = {"batch_size": int(train_batch_size), "iters": int(iters),
                    "train_dataset": train_dataset.to_config("train", self.num_classes),
                    "model": model_cfg, "loss": self.loss_cfg, "optimizer": opt_cfg, "lr_scheduler": lr_cfg}
        if eval_dataset is not None:
            cfg_dict["val_dataset"] = eval_dataset.to_config("val", self.num_classes)
        save_dir = Path(save_dir)
        save_dir.mkdir(parents=True, exist_ok=True)
        cfg_path = atomic_write_text(save_dir / "train_config.yml", yaml.safe_dump(cfg_dict, sort_keys=False))
        cfg = load_config(cfg_path)     # the one config loader: it registers the kit's models (LiteUNet)
        opt_obj = None if optimizer is None or isinstance(optimizer, dict) else optimizer
        run_training(cfg, save_dir, device=device, do_eval=eval_dataset is not None,
                     save_interval=max(1, save_interval_epochs * steps_per_epoch), log_iters=log_interval_steps,
                     use_vdl=use_vdl, seed=seed, optimizer=opt_obj, model=getattr(self, "_net", None))
        self.trained = load_model(save_dir)
        return self.trained

    def build(self):
        """Build (once) and return the Paddle layer, e.g. to make a custom optimizer on its parameters."""
        if getattr(self, "_net", None) is None:
            from paddleseg.cvlibs import manager

            import gamma_kit.seg.models  # noqa: F401

            cfg = dict(self.model_cfg)
            self._net = manager.MODELS[cfg.pop("type")](**cfg)
        return self._net

    @property
    def net(self):
        return self.build() if self.trained is None else self.trained.net

    def predict(self, img, transforms=None) -> dict:
        if self.trained is None:
            raise ValueError("this UNet is not trained: call .train(...) or use load_model(dir)")
        return self.trained.predict(img, transforms)


def load_model(model_dir: str | os.PathLike, device: str = "auto", stage1=None) -> PaddleXModel:
    """``paddlex.load_model(dir)``: a run folder (best_model/ or last_model/ inside) or a model folder.
    A two-stage (ROI) model may take ``stage1`` (kit only): a whole-image model directory or model."""
    if isinstance(stage1, PaddleXModel):
        stage1 = stage1._predictor
    return PaddleXModel(_load_predictor(model_dir, device=device, stage1=stage1))
