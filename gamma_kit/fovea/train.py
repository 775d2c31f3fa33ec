"""Train the fovea heatmap U-Net on one fold (``train_fold``) or all (``cross_validate``).

Run layout (nothing is written outside ``run_dir``)::

    runs/<name>/splits.json            # folds, computed once (gamma_kit.fovea.folds)
    runs/<name>/cv_metrics.json, training_curves.png   # after ``cv``
    runs/<name>/fold<k>/config.yml     # resolved config of this fold
    runs/<name>/fold<k>/best.pdparams  # lowest validation AED so far
    runs/<name>/fold<k>/last.pdparams, last.pdopt, last_state.json   # for --resume
    runs/<name>/fold<k>/metrics.json   # per-epoch loss, validation AED, lr; best epoch

Validation AED is the challenge metric (gamma_kit.metrics): the fixed-ROI crop of each
validation image is decoded by the shared codec, mapped back to the original image
(CanonicalFrame.to_image) and normalised by the original image size.
"""
from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import gamma_kit  # noqa: F401  (threads before paddle)
from gamma_kit.data import atomic_write_text, list_images, load_fovea_split, read_fovea_gt
from gamma_kit.fovea.config import build_codec, build_model, dump_config, model_signature
from gamma_kit.fovea.dataset import CanonicalCache, FoveaCropDataset, iterate_batches, make_items
from gamma_kit.fovea.folds import get_fold, make_splits, read_splits, write_splits
from gamma_kit.geometry import read_side_overrides
from gamma_kit.metrics import evaluate_fovea

__all__ = ["FoveaData", "load_training_data", "train_fold", "cross_validate", "load_checkpoint",
           "predict_heatmaps"]


@dataclass
class FoveaData:
    """Training images (id -> path) and their GT (image coordinates)."""

    images: dict[str, Path]
    gt: pd.DataFrame
    gt_name: str


def load_training_data(data_root: str | None = None, images: str | None = None,
                       gt: str | None = None) -> FoveaData:
    """GAMMA layout under ``data_root`` (or $GAMMA_DATA), or any folder of ``images``
    with a ``gt`` table (csv/xlsx: data, Fovea_X, Fovea_Y), e.g. IDRiD."""
    if images is not None:
        if gt is None:
            raise ValueError("--images needs --gt (a csv/xlsx with columns data,Fovea_X,Fovea_Y)")
        imgs = list_images(images)
        table = read_fovea_gt(gt)
        missing = [i for i in table.index if i not in imgs]
        if missing:
            raise ValueError(f"{gt}: {len(missing)} id(s) have no image in {images}: {missing[:10]}")
        return FoveaData({i: imgs[i] for i in table.index}, table, str(gt))
    split = load_fovea_split(data_root, "training", gt_path=gt)
    if split.gt is None:
        raise FileNotFoundError(f"{split.root}: no fovea ground truth (*GT*.xlsx/csv); pass --gt FILE")
    return FoveaData({i: split.images[i] for i in split.gt.index}, split.gt, str(gt or split.root))


def _set_seed(seed: int) -> None:
    import random

    import paddle

    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    paddle.seed(seed)


def predict_heatmaps(model, crops: np.ndarray, batch_size: int = 8, amp: bool = False,
                     flip: bool = False) -> np.ndarray:
    """Heatmaps (N, h, w) float32 of (N, 3, h, w) crops in eval mode; ``flip`` averages
    with the mirrored crop's mirrored heatmap."""
    import paddle

    model.eval()
    out = []
    with paddle.no_grad():
        for s in range(0, len(crops), batch_size):
            x = paddle.to_tensor(crops[s:s + batch_size])
            with paddle.amp.auto_cast(enable=amp):
                y = model(x).astype("float32")
                if flip:
                    y = 0.5 * (y + paddle.flip(model(paddle.flip(x, [3])).astype("float32"), [3]))
            out.append(y.numpy()[:, 0])
    return np.concatenate(out) if out else np.zeros((0,) + crops.shape[2:], np.float32)


def load_checkpoint(path: str | Path, cfg: dict | None = None):
    """Model from a ``.pdparams`` checkpoint and the config.yml beside it.

    With ``cfg`` the checkpoint must have been trained with the same model and codec
    geometry (ValueError naming both otherwise). Returns (model, cfg_of_checkpoint).
    """
    import paddle

    from gamma_kit.fovea.config import load_config

    path = Path(path)
    if path.is_dir():
        path = path / "best.pdparams"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    cfg_path = path.parent / "config.yml"
    ck_cfg = load_config(cfg_path) if cfg_path.is_file() else cfg
    if ck_cfg is None:
        raise FileNotFoundError(f"{path}: no config.yml beside the checkpoint; pass the config it was trained with")
    if cfg is not None and model_signature(cfg) != model_signature(ck_cfg):
        raise ValueError(f"checkpoint {path} was trained with another config ({model_signature(ck_cfg)}); "
                         f"this run uses {model_signature(cfg)}. Use a matching --config or another checkpoint.")
    model = build_model(ck_cfg)
    state = paddle.load(str(path))
    own = model.state_dict()
    bad = [k for k in own if k not in state or list(state[k].shape) != list(own[k].shape)]
    if bad:
        raise ValueError(f"checkpoint {path} does not fit the model of its config ({model_signature(ck_cfg)}): "
                         f"{len(bad)} mismatched tensors, e.g. {bad[:3]}")
    model.set_state_dict(state)
    return model, ck_cfg


def _rename_keys(state: dict, mapping: dict[str, str]) -> dict:
    """Rename optimizer-state keys that start with a parameter name (longest match)."""
    names = sorted(mapping, key=len, reverse=True)
    out = {}
    for key, value in state.items():
        if isinstance(value, dict):
            value = _rename_keys(value, mapping)
        new = key
        for n in names:
            if key == n or key.startswith(n + "_"):
                new = mapping[n] + key[len(n):]
                break
        out[new] = value
    return out


def _portable_opt_state(opt, model) -> dict:
    """Optimizer state keyed by structured parameter names (``enc.0.layer.0.weight``),
    not the process-global tensor names, so --resume works in any process."""
    return _rename_keys(opt.state_dict(), {p.name: f"@{n}" for n, p in model.named_parameters()})


def _load_portable_opt_state(opt, model, state: dict) -> None:
    opt.set_state_dict(_rename_keys(state, {f"@{n}": p.name for n, p in model.named_parameters()}))


def _evaluate(model, items, codec, amp: bool, batch_size: int) -> tuple[float, pd.DataFrame]:
    from gamma_kit.fovea.dataset import roi_crop

    crops = np.stack([roi_crop(it.canon, codec) for it in items])
    res = codec.decode(predict_heatmaps(model, crops, batch_size, amp))
    canon = codec.heatmap_to_canonical(res.xy)
    pred = np.stack([it.canon.frame.to_image(p[None])[0] for it, p in zip(items, canon)])
    ids = [it.canon.id for it in items]
    gt = np.stack([it.canon.frame.to_image(it.fovea[None])[0] for it in items])
    pred_df = pd.DataFrame(pred, columns=["Fovea_X", "Fovea_Y"], index=pd.Index(ids, name="data"))
    gt_df = pd.DataFrame(gt, columns=["Fovea_X", "Fovea_Y"], index=pd.Index(ids, name="data"))
    scores = evaluate_fovea(pred_df, gt_df, {it.canon.id: it.canon.size for it in items})
    return scores["aed"], pred_df


def _splits_for(run_dir: Path, ids: list[str], cfg: dict) -> list[dict]:
    path = run_dir / "splits.json"
    if path.is_file():
        splits = read_splits(path)
        known = set(sum((s["train"] + s["val"] for s in splits), []))
        if known != set(ids):
            raise ValueError(f"{path} was written for other images ({len(known)} ids) than this data "
                             f"({len(ids)} ids); use another --run-dir or delete it")
        return splits
    # the split has its own seed: changing train.seed must not move GAMMA off the original folds
    splits = make_splits(ids, n_folds=cfg["train"]["n_folds"], seed=cfg["data"]["split_seed"])
    write_splits(path, splits)
    return splits


def train_fold(cfg: dict, fold: int, data: FoveaData, run_dir: str | Path, resume: bool = False,
               init_from: str | Path | None = None, progress: bool = True,
               cache: CanonicalCache | None = None) -> dict:
    """Train fold ``fold`` (1-based) of ``data`` with ``cfg``; returns the metrics dict
    (also written to ``run_dir/fold<k>/metrics.json``)."""
    import paddle
    from tqdm import tqdm

    from gamma_kit.fovea.loss import heatmap_loss
    from gamma_kit.runtime import select_device

    # Paddle 3 warns on every BatchNorm forward in train mode; the behaviour is the intended one
    warnings.filterwarnings("ignore", message="When training, we now always track global mean")
    run_dir = Path(run_dir)
    fold_dir = run_dir / f"fold{fold}"
    fold_dir.mkdir(parents=True, exist_ok=True)
    tcfg = cfg["train"]
    device = select_device(tcfg["device"])
    amp = bool(tcfg["amp"]) and device.startswith("gpu")
    split = get_fold(_splits_for(run_dir, list(data.images), cfg), fold)
    atomic_write_text(fold_dir / "config.yml", dump_config(cfg))

    codec = build_codec(cfg)
    overrides = read_side_overrides(cfg["data"]["side_overrides"]) if cfg["data"]["side_overrides"] else {}
    cache = cache or CanonicalCache(codec.scale, cfg["data"]["cache_dir"], overrides)
    canon = cache.load_all({i: data.images[i] for i in split["train"] + split["val"]}, progress)
    train_items = make_items({i: canon[i] for i in split["train"]}, data.gt, data.gt_name)
    val_items = make_items({i: canon[i] for i in split["val"]}, data.gt, data.gt_name)

    _set_seed(int(tcfg["seed"]) + fold)
    model = build_model(cfg)
    if init_from is not None:
        src, _ = load_checkpoint(init_from, cfg)
        model.set_state_dict(src.state_dict())
    bs, epochs = int(tcfg["batch_size"]), int(tcfg["epochs"])
    steps = max(1, math.ceil(len(train_items) / bs))
    if tcfg["lr_schedule"] == "cosine":
        lr = paddle.optimizer.lr.CosineAnnealingDecay(float(tcfg["lr"]), T_max=epochs * steps,
                                                      eta_min=float(tcfg["min_lr"]))
    else:
        lr = float(tcfg["lr"])
    opt = paddle.optimizer.Adam(learning_rate=lr, parameters=model.parameters(),
                                weight_decay=paddle.regularizer.L2Decay(float(tcfg["weight_decay"])))
    scaler = paddle.amp.GradScaler() if amp else None

    history: list[dict] = []
    best_aed, best_epoch, start = math.inf, -1, 0
    if resume and (fold_dir / "last_state.json").is_file():
        state = json.loads((fold_dir / "last_state.json").read_text())
        model.set_state_dict(paddle.load(str(fold_dir / "last.pdparams")))
        _load_portable_opt_state(opt, model, paddle.load(str(fold_dir / "last.pdopt")))
        history, best_aed, best_epoch = state["history"], state["best_aed"], state["best_epoch"]
        start = state["epoch"] + 1
        if isinstance(lr, paddle.optimizer.lr.LRScheduler):
            lr.last_epoch = start * steps - 1
            lr.step()

    ds = FoveaCropDataset(train_items, codec, train=True, shift=tuple(cfg["data"]["shift"]),
                          seed=int(tcfg["seed"]) + fold)
    rng = np.random.default_rng([int(tcfg["seed"]), fold])
    bar = tqdm(range(start, epochs), desc=f"fold {fold}", unit="epoch", disable=not progress,
               initial=start, total=epochs)
    for epoch in bar:
        t0 = time.perf_counter()
        ds.set_epoch(epoch)
        model.train()
        losses = []
        for x, y, _ in iterate_batches(ds, bs, shuffle=True, rng=rng):
            x, y = paddle.to_tensor(x), paddle.to_tensor(y)
            with paddle.amp.auto_cast(enable=amp):
                pred = model(x)
            loss = heatmap_loss(pred.astype("float32"), y, cfg["loss"]["variance_reward"])
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            opt.clear_grad()
            if isinstance(lr, paddle.optimizer.lr.LRScheduler):
                lr.step()
            losses.append(float(loss))
        aed, _ = _evaluate(model, val_items, codec, amp, bs)
        rec = {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_aed": aed,
               "lr": float(opt.get_lr()), "seconds": round(time.perf_counter() - t0, 2)}
        history.append(rec)
        if aed < best_aed:
            best_aed, best_epoch = aed, epoch
            paddle.save(model.state_dict(), str(fold_dir / "best.pdparams"))
        paddle.save(model.state_dict(), str(fold_dir / "last.pdparams"))
        paddle.save(_portable_opt_state(opt, model), str(fold_dir / "last.pdopt"))
        atomic_write_text(fold_dir / "last_state.json", json.dumps(
            {"epoch": epoch, "best_aed": best_aed, "best_epoch": best_epoch, "history": history}))
        bar.set_postfix(loss=f"{rec['train_loss']:.3f}", aed=f"{aed:.4f}", best=f"{best_aed:.4f}")
    metrics = {"fold": fold, "config": cfg["name"], "device": device, "n_train": len(train_items),
               "n_val": len(val_items), "best_aed": best_aed, "best_epoch": best_epoch,
               "best_score": 1 / (best_aed + 0.1) if math.isfinite(best_aed) else None,
               "last_aed": history[-1]["val_aed"] if history else None, "history": history}
    atomic_write_text(fold_dir / "metrics.json", json.dumps(metrics, indent=1))
    return metrics


def cross_validate(cfg: dict, data: FoveaData, run_dir: str | Path, folds: list[int] | None = None,
                   resume: bool = False, progress: bool = True) -> dict:
    """Train every fold (sharing one image cache); writes ``run_dir/cv_metrics.json`` and
    ``run_dir/training_curves.png``."""
    run_dir = Path(run_dir)
    overrides = read_side_overrides(cfg["data"]["side_overrides"]) if cfg["data"]["side_overrides"] else {}
    cache = CanonicalCache(cfg["codec"]["scale"], cfg["data"]["cache_dir"], overrides)
    folds = folds or list(range(1, int(cfg["train"]["n_folds"]) + 1))
    per_fold = {k: train_fold(cfg, k, data, run_dir, resume=resume, progress=progress, cache=cache)
                for k in folds}
    n = sum(m["n_val"] for m in per_fold.values())
    out = {"folds": {k: {"best_aed": m["best_aed"], "last_aed": m["last_aed"], "n_val": m["n_val"]}
                     for k, m in per_fold.items()},
           "mean_best_aed": sum(m["best_aed"] * m["n_val"] for m in per_fold.values()) / n,
           "mean_last_aed": sum(m["last_aed"] * m["n_val"] for m in per_fold.values()) / n}
    atomic_write_text(run_dir / "cv_metrics.json", json.dumps(out, indent=1))
    from gamma_kit.fovea.figures import plot_training_curves

    plot_training_curves(run_dir / "training_curves.png", [run_dir / f"fold{k}" / "metrics.json" for k in folds])
    return out
