"""Predict fovea positions for a folder of images with one or many fold checkpoints.

Each image goes to the canonical frame (eye side detected, or taken from an override
file), its fixed-ROI crop goes through every model, and the heatmaps are decoded by
the shared codec. Ensembles: ``coords`` (the original: decode each model, average the
positions) or ``heatmap`` (average the heatmaps, decode once); ``flip`` adds
horizontal-flip test-time augmentation. Positions go back to the original image with
``CanonicalFrame.to_image``. Output: a CSV ``data,Fovea_X,Fovea_Y`` (original image
pixels, x = column), scored with gamma_kit.metrics when ground truth is given.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

import gamma_kit  # noqa: F401  (threads before paddle)
from gamma_kit.data import atomic_write_text, list_images, read_fovea_gt, write_fovea_csv
from gamma_kit.fovea.config import build_codec
from gamma_kit.fovea.dataset import SIDE_OVERRIDE_HINT, CanonicalCache, roi_crop
from gamma_kit.geometry import read_side_overrides
from gamma_kit.metrics import evaluate_fovea

__all__ = ["ENSEMBLES", "find_checkpoints", "predict", "check_gt_inside"]

ENSEMBLES = ("coords", "heatmap")


def find_checkpoints(paths: Sequence[str | Path], which: str = "best") -> list[Path]:
    """Expand run dirs (fold*/<which>.pdparams), fold dirs and files into checkpoint files."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            out.append(p)
        elif (p / f"{which}.pdparams").is_file():
            out.append(p / f"{which}.pdparams")
        elif p.is_dir() and sorted(p.glob(f"fold*/{which}.pdparams")):
            out.extend(sorted(p.glob(f"fold*/{which}.pdparams")))
        else:
            raise FileNotFoundError(f"no checkpoint at {p} (expected a .pdparams file, a fold folder with "
                                    f"{which}.pdparams, or a run folder with fold*/{which}.pdparams)")
    if not out:
        raise ValueError("no checkpoints given")
    return out


def check_gt_inside(gt: pd.DataFrame, sizes: dict[str, tuple[int, int]], name: str) -> None:
    """ValueError naming the ids whose GT point lies outside their image."""
    bad = [f"{i} ({gt.at[i, 'Fovea_X']:g}, {gt.at[i, 'Fovea_Y']:g}) not in {sizes[i][0]}x{sizes[i][1]}"
           for i in gt.index if i in sizes and not (0 <= gt.at[i, "Fovea_X"] <= sizes[i][0]
                                                  and 0 <= gt.at[i, "Fovea_Y"] <= sizes[i][1])]
    if bad:
        raise ValueError(f"{name}: ground-truth fovea outside the image for {len(bad)} id(s): {bad[:5]}")


def predict(checkpoints: Sequence[str | Path], images: str | Path | dict, out_csv: str | Path,
            ensemble: str = "coords", flip: bool = False, side_overrides: str | Path | None = None,
            gt: str | Path | None = None, device: str = "auto", figures_dir: str | Path | None = None,
            cache_dir: str | Path | None = None, amp: bool = False, progress: bool = True,
            cache: CanonicalCache | None = None) -> dict:
    """Predict every image of ``images`` (a folder, or id -> path) and write ``out_csv``.

    ``amp``: float16 autocast on a GPU (ignored on the CPU). ``cache``: a
    :class:`CanonicalCache` at the checkpoints' scale to share decoded images with the
    caller (otherwise one is made here, with ``cache_dir`` and ``side_overrides``).
    Returns ``{"predictions": DataFrame, "n_models", "empty": [ids], "scores": dict | None}``;
    scores (AED, score, per image) are also written to ``<out_csv stem>_scores.json``.
    """
    from tqdm import tqdm

    from gamma_kit.fovea.train import load_checkpoint, predict_heatmaps
    from gamma_kit.runtime import select_device

    if ensemble not in ENSEMBLES:
        raise ValueError(f"ensemble must be one of {ENSEMBLES}, got {ensemble!r}")
    dev = select_device(device)
    amp = bool(amp) and dev.startswith("gpu")   # float16 autocast only helps (and works) on a GPU
    files = find_checkpoints(checkpoints)
    models, cfgs = zip(*(load_checkpoint(f) for f in files))
    codecs = [build_codec(c) for c in cfgs]
    ref = codecs[0]
    for f, c in zip(files, codecs):
        if (c.scale, c.heatmap_size, c.roi_origin_px) != (ref.scale, ref.heatmap_size, ref.roi_origin_px):
            raise ValueError(f"checkpoint {f} works at scale {c.scale} / ROI {c.heatmap_size} but {files[0]} at "
                             f"{ref.scale} / {ref.heatmap_size}: ensemble checkpoints of one config")
    paths = list_images(images) if not isinstance(images, dict) else dict(images)
    if cache is None:
        overrides = read_side_overrides(side_overrides) if side_overrides else {}
        cache = CanonicalCache(ref.scale, cache_dir, overrides)
    elif cache.scale != ref.scale:
        raise ValueError(f"the canonical cache works at scale {cache.scale}, the checkpoints at {ref.scale}")
    canon, failed = {}, []
    for i, p in tqdm(paths.items(), desc="load images", unit="img", disable=not progress, leave=False):
        try:
            canon[i] = cache.get(i, p)
        except ValueError as err:
            if "side" not in str(err):
                raise
            failed.append(str(p))
    if failed:
        raise ValueError(f"cannot decide the eye side of {len(failed)} image(s): {failed[:10]}; for each, "
                         f"{SIDE_OVERRIDE_HINT}")
    ids = list(canon)
    crops = np.stack([roi_crop(canon[i], ref) for i in ids])
    maps = [predict_heatmaps(m, crops, batch_size=8, amp=amp, flip=flip) for m in models]
    if ensemble == "heatmap":
        res = ref.decode(np.mean(maps, axis=0))
        xy, empty = res.xy, res.empty
    else:
        decoded = [c.decode(h) for c, h in zip(codecs, maps)]
        # empty maps are NaN under on_empty="nan": average the models that found the fovea
        stack = np.stack([d.xy for d in decoded])
        empty = np.all([d.empty for d in decoded], axis=0)
        with np.errstate(invalid="ignore"):
            xy = np.nanmean(stack, axis=0) if np.isnan(stack).any() else stack.mean(axis=0)
    if np.isnan(xy).any():   # every model empty and on_empty="nan": use the original fallback
        from gamma_kit.fovea.codec import ORIGINAL_EMPTY_FALLBACK

        xy = np.where(np.isnan(xy), np.asarray(ORIGINAL_EMPTY_FALLBACK) * ref.scale, xy)
    canon_xy = ref.heatmap_to_canonical(xy)
    pred = np.stack([canon[i].frame.to_image(p[None])[0] for i, p in zip(ids, canon_xy)])
    pred_df = pd.DataFrame(pred, columns=["Fovea_X", "Fovea_Y"], index=pd.Index(ids, name="data"))
    write_fovea_csv(out_csv, pred_df)
    out = {"predictions": pred_df, "n_models": len(models), "device": dev,
           "empty": [i for i, e in zip(ids, empty) if e], "scores": None}
    gt_df = None
    if gt is not None:
        gt_df = read_fovea_gt(gt)
        sizes = {i: canon[i].size for i in ids}
        check_gt_inside(gt_df, sizes, str(gt))
        scores = evaluate_fovea(pred_df.loc[[i for i in ids if i in gt_df.index]], gt_df, sizes)
        out["scores"] = scores
        atomic_write_text(Path(out_csv).with_name(Path(out_csv).stem + "_scores.json"), json.dumps(
            {"aed": scores["aed"], "score": scores["score"], "n": scores["n"],
             "per_image": scores["per_image"]["ed"].to_dict()}, indent=1))
    if figures_dir is not None:
        from gamma_kit.fovea.figures import plot_fovea_distribution, plot_heatmap_examples

        fig_dir = Path(figures_dir)
        mean_map = np.mean(maps, axis=0)
        true_xy = None
        if gt_df is not None:
            true_xy = {i: ref.canonical_to_heatmap(canon[i].frame.to_canonical(
                gt_df.loc[[i], ["Fovea_X", "Fovea_Y"]].to_numpy()))[0] for i in ids if i in gt_df.index}
        plot_heatmap_examples(fig_dir / "heatmaps.png", ids, crops, mean_map, xy, true_xy)
        plot_fovea_distribution(fig_dir / "fovea_canonical.png", canon_xy,
                                None if gt_df is None else np.stack(
                                    [canon[i].frame.to_canonical(gt_df.loc[[i], ["Fovea_X", "Fovea_Y"]]
                                                                 .to_numpy())[0] for i in ids if i in gt_df.index]),
                                ref)
    return out
