"""Figures for fovea runs (matplotlib, files only, never a window).

Figures are ``matplotlib.figure.Figure`` objects drawn without pyplot, so no backend is chosen
or changed (a notebook or a user's own backend stays as it is) and nothing opens a window.

- ``plot_heatmap_examples``: ROI crop beside its predicted heatmap, predicted (red)
  and true (green) crosses; points in heatmap pixels (x, y).
- ``plot_fovea_distribution``: foveae in the full-scale canonical frame with the ROI.
- ``plot_training_curves``: loss and validation AED per epoch from metrics.json files.
- ``plot_prediction_figures``: the first two for what gamma_kit.fovea.inference.locate
  found, ground truth mapped into the crops by the same chain.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

__all__ = ["plot_heatmap_examples", "plot_fovea_distribution", "plot_training_curves",
           "plot_prediction_figures"]


#: Photos shown in ``heatmaps.png`` (prediction keeps their crops and heatmaps, no more).
EXAMPLES = 6


def _figure(**kw):
    """A new figure that belongs to no pyplot state (so no backend is selected or changed)."""
    from matplotlib.figure import Figure

    return Figure(**kw)


def _save(fig, path: str | Path) -> Path:
    """Write ``fig`` atomically (gamma_kit.safety.atomic_file), in the format of ``path``'s suffix."""
    from gamma_kit.safety import atomic_file

    path = Path(path)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    return path


def plot_heatmap_examples(path: str | Path, ids: Sequence[str], crops: np.ndarray, heatmaps: np.ndarray,
                          pred_xy: np.ndarray, true_xy: Mapping[str, np.ndarray] | None = None,
                          max_images: int = EXAMPLES) -> Path:
    """crops (N, 3, h, w) 0-255, heatmaps (N, h, w), pred_xy (N, 2) heatmap pixels."""
    n = min(len(ids), max_images)
    fig = _figure(figsize=(8, 2.6 * n))
    axes = fig.subplots(n, 2, squeeze=False)
    for k in range(n):
        img = np.clip(crops[k].transpose(1, 2, 0), 0, 255).astype(np.uint8)
        for ax, data, title in ((axes[k, 0], heatmaps[k], f"{ids[k]} heatmap"), (axes[k, 1], img, "ROI")):
            ax.imshow(data, cmap="viridis" if data.ndim == 2 else None)
            ax.plot(*pred_xy[k], "r+", ms=14, mew=2, label="predicted")
            if true_xy is not None and ids[k] in true_xy:
                ax.plot(*true_xy[ids[k]], "gx", ms=10, mew=2, label="true")
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    axes[0, 1].legend(loc="upper right", fontsize=7)
    return _save(fig, path)


def plot_fovea_distribution(path: str | Path, pred_canon: np.ndarray, true_canon: np.ndarray | None,
                            codec) -> Path:
    """Foveae (N, 2) in the full-scale canonical frame, with the codec's fixed ROI (a
    disc-anchored ROI moves per image; the rectangle is the original window)."""
    from matplotlib.patches import Rectangle

    from gamma_kit.geometry import CANONICAL_SIZE

    fig = _figure(figsize=(5, 5))
    ax = fig.subplots()
    ox, oy = codec.roi_origin
    w, h = codec.roi_size_full
    ax.add_patch(Rectangle((ox, oy), w, h, fill=False, color="k", lw=1, label="ROI"))
    ax.scatter(*np.asarray(pred_canon).T, s=12, c="r", marker="+", label="predicted")
    if true_canon is not None and len(true_canon):
        ax.scatter(*np.asarray(true_canon).T, s=10, c="g", marker="x", label="true")
    ax.set_xlim(0, CANONICAL_SIZE[0])
    ax.set_ylim(CANONICAL_SIZE[1], 0)
    ax.set_aspect("equal")
    ax.set_title("fovea in the canonical frame (disc on the left)", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_training_curves(path: str | Path, metrics_files: Sequence[str | Path]) -> Path:
    """Train loss and validation AED per epoch, one line per metrics.json (fold)."""
    fig = _figure(figsize=(10, 3.5))
    a1, a2 = fig.subplots(1, 2)
    for f in metrics_files:
        m = json.loads(Path(f).read_text())
        ep = [r["epoch"] for r in m["history"]]
        a1.plot(ep, [r["train_loss"] for r in m["history"]], label=f"fold {m['fold']}")
        a2.plot(ep, [r["val_aed"] for r in m["history"]], label=f"fold {m['fold']}")
    a1.set(xlabel="epoch", ylabel="train loss", yscale="log")
    a2.set(xlabel="epoch", ylabel="validation AED", yscale="log")
    a2.legend(fontsize=7)
    return _save(fig, path)


def plot_prediction_figures(fig_dir: str | Path, found, frames: Sequence, codec, gt=None) -> list[Path]:
    """``fig_dir/heatmaps.png`` (crops, mean heatmap over the models, predicted and true points)
    and ``fig_dir/fovea_canonical.png`` for ``found`` (gamma_kit.fovea.inference.Located);
    ``frames``: the CanonicalFrame of each image; ``gt``: optional table (index id, columns
    Fovea_X, Fovea_Y in image pixels), mapped to the crops by the inference chain."""
    from gamma_kit.fovea.inference import image_to_heatmap

    fig_dir = Path(fig_dir)
    true_xy, true_canon = None, None
    if gt is not None:
        known = [k for k, i in enumerate(found.ids) if i in gt.index]
        pts = gt.loc[[found.ids[k] for k in known], ["Fovea_X", "Fovea_Y"]].to_numpy(float)
        origins = None if found.origins is None else found.origins[known]
        in_crop = image_to_heatmap(codec, pts, [frames[k] for k in known], origins)
        true_xy = {found.ids[k]: p for k, p in zip(known, in_crop)}
        true_canon = codec.heatmap_to_canonical(in_crop, origins)
    return [plot_heatmap_examples(fig_dir / "heatmaps.png", found.ids, found.crops, np.mean(found.maps, axis=0),
                                  found.heatmap_xy, true_xy),
            plot_fovea_distribution(fig_dir / "fovea_canonical.png", found.canonical_xy, true_canon, codec)]
