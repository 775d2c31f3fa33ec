"""A fovea model on disk: find, read, check and average checkpoints, and read static exports back.

Everything that reads a fovea model from disk goes through here (prediction, export, the
trainer's ``--init-from`` and resume, the benchmarks); ``gamma_kit.fovea.export`` writes exports,
``gamma_kit.fovea.run_dir`` writes the checkpoints of a run.

Layouts read::

    <run>/fold<k>/best.pdparams, averaged.pdparams      # weights (a state dict of the model)
    <run>/fold<k>/config.yml                            # the config they were trained with
    <run>/fold<k>/ckpt-NNN/model.pdparams               # the last checkpoint set (``which="last"``;
                                                        # older runs: fold<k>/last.pdparams)
    <export>/export.json                                # manifest of an export, written last
    <export>/fold<k>/model.json | model.pdmodel, model.pdiparams, config.yml

A checkpoint is a ``.pdparams`` file with a ``config.yml`` in its fold folder (gamma_kit.fovea.run_dir
owns that layout). Errors name the file:
an empty or truncated checkpoint, one that does not fit its config, an export with a missing
or resized file.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

import gamma_kit  # noqa: F401  (threads before paddle)
from gamma_kit.fovea.config import build_model, model_signature
from gamma_kit.fovea.run_dir import fold_of, last_weights

__all__ = ["CHECKPOINT_CHOICES", "find_checkpoints", "read_state", "load_checkpoint", "average_weights",
           "MANIFEST_NAME", "MODEL_PREFIX", "CONFIG_NAME", "EXPORT_FORMAT", "BACKENDS", "ExportedModel",
           "load_exported"]

#: which checkpoint of a fold folder: auto (averaged where training wrote it, else best), best, last, averaged
CHECKPOINT_CHOICES = ("auto", "best", "last", "averaged")
#: the export's file names (gamma_kit.fovea.export writes them)
MANIFEST_NAME = "export.json"
MODEL_PREFIX = "model"
CONFIG_NAME = "config.yml"
EXPORT_FORMAT = 1
#: what runs an export: Paddle Inference, or onnxruntime on model.onnx (export --format onnx)
BACKENDS = ("paddle", "onnx")
_FOLD = re.compile(r"fold\d+")


def find_checkpoints(paths: Sequence[str | Path], which: str = "auto") -> list[Path]:
    """Expand run dirs (fold*/<which>.pdparams), fold dirs and files into checkpoint files.
    ``which="auto"``: averaged.pdparams where a fold folder has one (train.average_last), else
    best.pdparams."""
    if which not in CHECKPOINT_CHOICES:
        raise ValueError(f"which must be one of {CHECKPOINT_CHOICES}, got {which!r}")
    if which == "auto":
        return [f if f.name != "best.pdparams" or not (f.parent / "averaged.pdparams").is_file()
                else f.parent / "averaged.pdparams" for f in find_checkpoints(paths, "best")]
    out: list[Path] = []
    for p in map(Path, paths):
        # fold<k> folders only: not a fold set aside as fold<k>.old-<time>, nor a fold<k>.lock
        in_folds = [f for d in sorted(p.glob("fold*")) if _FOLD.fullmatch(d.name) and (f := _in_fold(d, which))] \
            if p.is_dir() else []
        if p.is_file():
            out.append(p)
        elif _in_fold(p, which):
            out.append(_in_fold(p, which))
        elif in_folds:
            out.extend(in_folds)
        else:
            raise FileNotFoundError(f"no checkpoint at {p} (expected a .pdparams file, a fold folder with "
                                    f"{which}.pdparams, or a run folder with fold*/{which}.pdparams)")
    if not out:
        raise ValueError("no checkpoints given")
    return out


def _in_fold(fold: Path, which: str) -> Path | None:
    """``fold/<which>.pdparams``; for ``last``, the weights of the fold's last checkpoint set."""
    if which == "last":
        return last_weights(fold) if fold.is_dir() else None
    return fold / f"{which}.pdparams" if (fold / f"{which}.pdparams").is_file() else None


def read_state(path: str | Path) -> dict:
    """``paddle.load`` of a checkpoint (weights or optimizer state), with one line naming the
    file when it is empty or broken."""
    import paddle

    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"checkpoint {path} is empty (0 bytes): an interrupted save? Use another checkpoint "
                         "(e.g. last.pdparams / best.pdparams of the same fold) or retrain")
    try:
        state = paddle.load(str(path))
    except Exception as err:  # paddle raises EOFError, ValueError, UnpicklingError, ... on broken files
        raise ValueError(f"checkpoint {path} ({size} bytes) cannot be read, truncated or not a Paddle "
                         f"state dict ({type(err).__name__}): use another checkpoint or retrain") from None
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path} holds a {type(state).__name__}, not a state dict of parameters")
    return state


def load_checkpoint(path: str | Path, cfg: dict | None = None):
    """Model from a ``.pdparams`` checkpoint (or a fold folder: its ``best.pdparams``) and
    the config.yml beside it.

    With ``cfg`` the checkpoint must have been trained with the same model and codec
    geometry (ValueError naming both otherwise). Every tensor must fit the model of the
    checkpoint's config. An empty or truncated file is a ValueError naming it.
    Returns (model in eval mode, cfg_of_checkpoint).
    """
    from gamma_kit.fovea.config import load_config

    path = Path(path)
    if path.is_dir():
        path = path / "best.pdparams"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    cfg_path = fold_of(path) / CONFIG_NAME
    ck_cfg = load_config(cfg_path) if cfg_path.is_file() else cfg
    if ck_cfg is None:
        raise FileNotFoundError(f"{path}: no config.yml beside the checkpoint; pass the config it was trained with")
    if cfg is not None and model_signature(cfg) != model_signature(ck_cfg):
        raise ValueError(f"checkpoint {path} was trained with another config ({model_signature(ck_cfg)}); "
                         f"this run uses {model_signature(cfg)}. Use a matching --config or another checkpoint.")
    state = read_state(path)
    model = build_model(ck_cfg)
    own = model.state_dict()
    bad = [k for k in own if k not in state or list(state[k].shape) != list(own[k].shape)]
    if bad:
        raise ValueError(f"checkpoint {path} does not fit the model of its config ({model_signature(ck_cfg)}): "
                         f"{len(bad)} mismatched tensors, e.g. {bad[:3]}")
    model.set_state_dict(state)
    model.eval()
    return model, ck_cfg


def average_weights(paths: Sequence[str | Path]) -> dict:
    """The element-wise mean of the state dicts in ``paths`` (checkpoints of one model, e.g.
    the last snapshots of a run: stochastic weight averaging without a BatchNorm refit; the
    BatchNorm running statistics are averaged too). Integer tensors come from the last file.
    ValueError naming the file that does not match the first."""
    import paddle

    if not len(paths):
        raise ValueError("no checkpoints to average")
    states = [read_state(Path(p)) for p in paths]
    ref = states[0]
    for p, st in zip(paths, states):
        if set(st) != set(ref) or any(list(st[k].shape) != list(ref[k].shape) for k in ref):
            raise ValueError(f"checkpoint {p} does not match {paths[0]}: average checkpoints of one model")
    out = {}
    for k, v in ref.items():
        arrs = [np.asarray(st[k].numpy() if hasattr(st[k], "numpy") else st[k]) for st in states]
        mean = np.mean(arrs, axis=0).astype(arrs[0].dtype) if np.issubdtype(arrs[0].dtype, np.floating) else arrs[-1]
        out[k] = paddle.to_tensor(mean)
    return out


class ExportedModel:
    """One exported fold model run by ``paddle.inference`` (``backend="paddle"``) or by onnxruntime on
    its ``model.onnx`` (``backend="onnx"``, exported with ``--format onnx``).

    ``predict_heatmaps(crops (N, 3, h, w) float32, batch_size, flip)`` -> (N, h, w) float32,
    as gamma_kit.fovea.inference.predict_heatmaps does for a dynamic model.
    """

    def __init__(self, model_dir: str | os.PathLike, device: str = "auto", cpu_threads: int | None = None,
                 backend: str = "paddle") -> None:
        from gamma_kit.engine import ONNX_NAME, InferenceModel, OnnxModel

        d = Path(model_dir)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.model = (OnnxModel(d / ONNX_NAME, device, cpu_threads) if backend == "onnx"
                      else InferenceModel(d / MODEL_PREFIX, device, cpu_threads))
        self.path = d

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.model.run(x)[:, 0]

    def predict_heatmaps(self, crops: np.ndarray, batch_size: int = 8, flip: bool = False) -> np.ndarray:
        """Heatmaps (N, h, w) float32; ``flip`` averages with the mirrored map of the mirrored crop."""
        crops = np.asarray(crops, dtype=np.float32)
        out = []
        for s in range(0, len(crops), batch_size):
            x = crops[s:s + batch_size]
            y = self._run(x).astype(np.float32)
            if flip:
                y = np.float32(0.5) * (y + self._run(x[..., ::-1])[..., ::-1])
            out.append(y)
        return np.concatenate(out) if out else np.zeros((0,) + crops.shape[2:], np.float32)


def _read_manifest(d: Path) -> list[dict]:
    """The ``models`` entries of ``d/export.json`` (one line naming the file when it is missing or broken)."""
    manifest = d / MANIFEST_NAME
    if not d.is_dir():
        raise FileNotFoundError(f"export folder not found: {d}")
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} not found: not a finished fovea export (run "
                                "python -m gamma_kit.fovea export --checkpoints RUN --out DIR)")
    try:
        entries = json.loads(manifest.read_text())["models"]
    except (ValueError, KeyError, TypeError):
        entries = None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{manifest}: broken export manifest (expected JSON with a non-empty 'models' list)")
    return entries


def load_exported(export_dir: str | os.PathLike, device: str = "auto", backend: str = "paddle"
                  ) -> tuple[list[ExportedModel], list[dict], list[Path]]:
    """Models, configs and model folders of an export folder, after checking the manifest
    and that every file it lists is there with the size the export wrote; ``backend``: see
    ``ExportedModel`` (an export without ``model.onnx`` is refused for ``onnx`` in one line)."""
    from gamma_kit.engine import ONNX_NAME
    from gamma_kit.fovea.config import load_config

    d = Path(export_dir)
    manifest = d / MANIFEST_NAME
    models, cfgs, dirs = [], [], []
    for e in _read_manifest(d):
        md = d / str(e.get("name", ""))
        for fname, size in (e.get("files") or {}).items():
            p = md / fname
            if not p.is_file():
                raise FileNotFoundError(f"{p}: missing from the export (listed in {manifest}); export again")
            if p.stat().st_size != int(size):
                raise ValueError(f"{p} is {p.stat().st_size} bytes, the export wrote {size} "
                                 "(truncated or replaced?); export again")
        if not (md / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{md / CONFIG_NAME}: missing from the export; export again")
        cfgs.append(load_config(md / CONFIG_NAME))
        if backend == "onnx" and ONNX_NAME not in (e.get("files") or {}):
            raise FileNotFoundError(f"{md / ONNX_NAME}: this export has no ONNX model; export with --format onnx")
        models.append(ExportedModel(md, device=device, backend=backend))
        dirs.append(md)
    return models, cfgs, dirs
