"""Fovea run configuration: YAML files with ``_base_`` inheritance (PaddleSeg style),
merged over ``DEFAULTS`` and overridden by ``section.key=value`` strings (CLI flags).

Sections: ``codec`` (HeatmapCodec arguments; sizes in full-scale canonical pixels; the defaults are
gamma_kit.fovea.codec.ORIGINAL_CODEC, the one copy of the original constants),
``roi`` (where the ROI sits: the fixed window or anchored on the detected disc, gamma_kit.fovea.roi),
``model`` (FoveaUNet arguments), ``loss``, ``data`` (crop shift, caches), ``train``.
Unknown keys raise ``ValueError`` naming the key and the allowed ones.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable

import yaml

from gamma_kit.fovea.augment import check_photometric
from gamma_kit.fovea.codec import ORIGINAL_CODEC
from gamma_kit.fovea.roi import DEFAULT_ROI, RoiPolicy

__all__ = ["DEFAULTS", "completed", "load_config", "apply_overrides", "merge", "dump_config", "build_codec",
           "build_model", "model_signature"]

DEFAULTS: dict[str, dict[str, Any]] = {
    "codec": copy.deepcopy(ORIGINAL_CODEC),      # the original constants live in codec.py only
    "roi": copy.deepcopy(DEFAULT_ROI),           # where the ROI sits in each image (gamma_kit.fovea.roi)
    "model": {"width": 64, "kernel_size": 5, "levels": 5, "dropout": 0.2},
    "loss": {"variance_reward": 0.0005},
    # decode: full | reduced (JPEGs at half size where the codec's scale allows; fovea.dataset.DECODES)
    # photometric: null (the original) or random darkening / haze of training crops (fovea.augment)
    "data": {"shift": [240, 180], "cache_dir": None, "side_overrides": None, "split_seed": 1024, "decode": "full",
             "photometric": None},
    "train": {"epochs": 200, "batch_size": 10, "lr": 5.0e-4, "weight_decay": 1.0e-3,
              "lr_schedule": "constant", "min_lr": 0.0, "seed": 1024, "amp": False, "device": "auto",
              "n_folds": 5,
              # validation AED every this many epochs (and always after the last one)
              "val_every": 1,
              # VisualDL logs (train loss, validation AED, lr) in the fold folder
              "use_vdl": False,
              # a checkpoint set (weights, optimizer, state; gamma_kit.fovea.run_dir) every this many
              # epochs (and always after the last one)
              "checkpoint_every": 1,
              # weights-only snapshots/epochNNN.pdparams every this many epochs (0: none); for
              # snapshot ensembles and weight averaging (gamma_kit.fovea.inference.average_weights)
              "snapshot_every": 0,
              # averaged.pdparams: the mean of the weights of the last this many epochs (0: none;
              # a run shorter than that averages all its epochs)
              "average_last": 0},
}
LR_SCHEDULES = ("constant", "cosine")


def merge(base: dict, update: dict, where: str = "config") -> dict:
    """Recursive merge of ``update`` into a copy of ``base``; unknown keys are errors."""
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        if key not in out:
            raise ValueError(f"{where}: unknown key {key!r} (allowed: {sorted(out)})")
        if isinstance(out[key], dict):
            if not isinstance(value, dict):
                raise ValueError(f"{where}: {key!r} must be a mapping, got {value!r}")
            out[key] = merge(out[key], value, f"{where}.{key}")
        else:
            out[key] = value
    return out


def completed(cfg: dict) -> dict:
    """``cfg`` with the DEFAULTS of keys it lacks: a config a run wrote before those keys existed,
    read as what that run did (each new key's default keeps the old behaviour)."""
    rest = {k: v for k, v in cfg.items() if k in DEFAULTS}
    return {**{k: v for k, v in cfg.items() if k not in DEFAULTS}, **merge(DEFAULTS, rest)}


def _read_yaml(path: Path, seen: tuple = ()) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    if path.resolve() in seen:
        raise ValueError(f"{path}: _base_ cycle")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config must be a YAML mapping")
    base = data.pop("_base_", None)
    name = data.pop("name", None)
    if base:
        parent = _read_yaml((path.parent / base), seen + (path.resolve(),))
        for k, v in data.items():
            if isinstance(v, dict) and isinstance(parent.get(k), dict):
                parent[k] = {**parent[k], **v}
            else:
                parent[k] = v
        data = parent
    data["name"] = name or data.get("name") or path.stem
    return data


def _parse_value(text: str) -> Any:
    return yaml.safe_load(text)


def apply_overrides(cfg: dict, overrides: Iterable[str]) -> dict:
    """Apply ``section.key=value`` strings (values parsed as YAML)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides or ():
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ValueError(f"override {item!r} must look like section.key=value (e.g. train.epochs=5)")
        dotted, value = item.split("=", 1)
        section, key = dotted.split(".", 1)
        cfg = merge(cfg, {section: {key: _parse_value(value)}}, "override")
    return cfg


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> dict:
    """DEFAULTS <- YAML file (with ``_base_``) <- overrides. Returns a plain dict.

    ``path`` is a file or a shipped config's name (``unet_heatmap_cpu.yml``, ``fovea/unet_heatmap_cpu.yml``;
    ``gamma_kit.resources.resolve_config``: a path that exists wins).
    """
    from gamma_kit.resources import resolve_config

    cfg = copy.deepcopy(DEFAULTS)
    cfg["name"] = "default"
    if path is not None:
        data = _read_yaml(resolve_config(path, "fovea"))
        name = data.pop("name")
        cfg = merge({k: v for k, v in cfg.items() if k != "name"}, data, str(path))
        cfg["name"] = name
    name = cfg.pop("name")
    cfg = apply_overrides(cfg, overrides)
    cfg["name"] = name
    if cfg["train"]["lr_schedule"] not in LR_SCHEDULES:
        raise ValueError(f"train.lr_schedule must be one of {LR_SCHEDULES}, got {cfg['train']['lr_schedule']!r}")
    for key in ("val_every", "checkpoint_every", "epochs", "batch_size", "n_folds"):
        v = cfg["train"][key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"train.{key} must be a positive integer, got {v!r}")
    snap = cfg["train"]["snapshot_every"]
    if isinstance(snap, bool) or not isinstance(snap, int) or snap < 0:
        raise ValueError(f"train.snapshot_every must be 0 (off) or a positive integer, got {snap!r}")
    avg = cfg["train"]["average_last"]
    if isinstance(avg, bool) or not isinstance(avg, int) or avg < 0:
        raise ValueError(f"train.average_last must be 0 (off) or a positive whole number of epochs, got {avg!r}")
    if not isinstance(cfg["train"]["use_vdl"], bool):
        raise ValueError(f"train.use_vdl must be true or false, got {cfg['train']['use_vdl']!r}")
    check_photometric(cfg["data"]["photometric"])
    build_codec(cfg)   # validates the codec section
    RoiPolicy.from_config(cfg)   # ... and the roi section
    return cfg


def dump_config(cfg: dict) -> str:
    """YAML text of a resolved config."""
    return yaml.safe_dump(cfg, sort_keys=False)


def build_codec(cfg: dict):
    """HeatmapCodec from ``cfg['codec']``."""
    from gamma_kit.fovea.codec import HeatmapCodec

    return HeatmapCodec(**cfg["codec"])


def build_model(cfg: dict):
    """FoveaUNet from ``cfg['model']`` (imports paddle)."""
    from gamma_kit.fovea.model import FoveaUNet

    return FoveaUNet(**cfg["model"])


def model_signature(cfg: dict) -> dict:
    """What a checkpoint must agree on to be loaded: model and codec geometry."""
    c = cfg["codec"]
    return {"model": dict(cfg["model"]), "scale": c["scale"], "roi_size": list(c["roi_size"])}
