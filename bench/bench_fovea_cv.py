"""Fovea cross-validation: where the ROI goes (issue 19.3), all rules scored on the same trained
snapshots, so every arm has the same training budget.

    # 1. train (snapshots every epoch; two folds at a time, one process each)
    python -m gamma_kit.fovea cv --images ../shared/data/idrid_fovea/images \\
        --gt ../shared/data/idrid_fovea/fovea_GT.csv --config configs/fovea/unet_heatmap_cpu.yml \\
        --epochs 30 --run-dir RUN --cache-dir CACHE --procs 2 --parallel-folds --set train.snapshot_every=1
    # 2. score every variant on every snapshot and on the averaged weights
    python bench/bench_fovea_cv.py --run RUN --images ../shared/data/idrid_fovea/images \\
        --gt ../shared/data/idrid_fovea/fovea_GT.csv --cache-dir CACHE --out-md bench/results/fovea_cv_idrid.md

Variants (``VARIANTS``; gamma_kit.fovea.roi says what each anchor does):

- ``fixed``: the original fixed ROI at (1140, 1040); ``fixed+guard``: the same window, with the
  outlier guard measured from the disc-based estimate.
- ``disc``: the ROI centred on the detected optic disc plus the disc-to-fovea offset learned
  from the fold's own training photos; ``disc+guard250``: with issue 12's 250 px guard (the CPU
  config's rule before issue 19.3).
- ``auto(k=K)``: the fixed ROI, moved only as far as keeps the disc-based estimate within
  ``reach - K * spread`` of its centre (issue 19.3).
- ``+guard``: the outlier guard: a position farther than the radius from the disc-based
  estimate, or an empty heatmap, becomes the estimate; the radius is learned
  (``roi.GUARD_SIGMAS`` x the larger spread, at least ``roi.GUARD_MIN_PX``) unless named
  (``guard250``: 250 px).
- ``+flip``: horizontal-flip TTA.

Per variant: **last-epoch** AED (every photo predicted by the model of the fold that held it
out, pooled), **averaged** AED (the last ``--last-k`` epochs' weights averaged: what predict
uses by default), **best-on-validation** AED (each fold at its own best epoch under that
variant, among the scored epochs, by default the second half of the run: optimistic), and for
the averaged weights the median and worst error and the photos more than 100 px off (canonical
px, the 1956 x 1934 frame, about GAMMA pixels) and each fold's AED.
"""
from __future__ import annotations

import argparse
import json
import pickle
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import gamma_kit  # noqa: E402,F401  (threads before paddle)
from gamma_kit.safety import atomic_write_text  # noqa: E402
from gamma_kit.fovea.checkpoints import average_weights, read_state  # noqa: E402
from gamma_kit.fovea.config import build_codec, build_model, load_config  # noqa: E402
from gamma_kit.fovea.dataset import CanonicalCache, make_items  # noqa: E402
from gamma_kit.fovea.folds import get_fold, read_splits  # noqa: E402
from gamma_kit.fovea.inference import predict_heatmaps, roi_crops, roi_origins  # noqa: E402
from gamma_kit.fovea.roi import RoiPolicy, fit_disc_prior  # noqa: E402
from gamma_kit.fovea.train import load_training_data  # noqa: E402
from gamma_kit.metrics import fovea_ed  # noqa: E402

FAR_PX = 100.0
#: variant -> (ROI placement, flip TTA, guard radius: None off, px, or "auto" (roi.GUARD_SIGMAS x the learned spread))
VARIANTS = {
    "fixed": ("fixed", False, None),                  # the original window (configs/fovea/unet_heatmap.yml)
    "fixed+guard": ("fixed_prior", False, "auto"),    # the window stays; the guard alone
    "disc": ("disc", False, None),
    "disc+guard250": ("disc", False, 250.0),          # issue 12's rule (the CPU config before issue 19.3)
    "auto(k=2)": ("auto2", False, None),              # issue 19.3: fixed unless the estimate is out of reach
    "auto(k=2)+guard": ("auto2", False, "auto"),
    "auto(k=1)+guard": ("auto1", False, "auto"),
    "auto(k=0)+guard": ("auto0", False, "auto"),
    "auto(k=1)+flip+guard": ("auto1", True, "auto"),
}


def _heatmaps(model, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps of the crops and of their mirror images mirrored back: (plain, flip TTA)."""
    plain = predict_heatmaps(model, crops)
    mirrored = predict_heatmaps(model, np.ascontiguousarray(crops[..., ::-1]))[..., ::-1]
    return plain, 0.5 * (plain + mirrored)


def _score(codec, maps: np.ndarray, origins: np.ndarray, items, guard: tuple | None = None) -> dict:
    """Decode ``maps`` of ROI crops at ``origins`` (``guard``: (RoiPolicy, priors, anchored), the
    policy's outlier guard): canonical/image points, ED, canonical px error."""
    res = codec.decode(maps)
    canon = codec.heatmap_to_canonical(res.xy, origins)
    guarded = np.zeros(len(canon), bool)
    if guard is not None:
        canon, guarded = guard[0].guard(canon, guard[1], guard[2], res.empty)
    image = np.stack([it.canon.frame.to_image(p[None])[0] for it, p in zip(items, canon)])
    gt_image = np.stack([it.canon.frame.to_image(it.fovea[None])[0] for it in items])
    ed = fovea_ed(image, gt_image, np.array([it.canon.size for it in items]))
    px = np.hypot(*(canon - np.stack([it.fovea for it in items])).T)
    return {"ed": ed, "px": px, "canon": canon, "empty": res.empty, "guarded": guarded}


def _snapshots(fold_dir: Path) -> dict[int, Path]:
    snaps = {int(re.search(r"(\d+)", p.stem).group(1)): p for p in (fold_dir / "snapshots").glob("epoch*.pdparams")}
    if not snaps:
        raise SystemExit(f"error: {fold_dir / 'snapshots'}: no epochNNN.pdparams (train with "
                         "--set train.snapshot_every=1)")
    return dict(sorted(snaps.items()))


def placements_of(train, reach) -> dict[str, RoiPolicy]:
    """The ROI placements the variants use, learned from a fold's training items."""
    offset, spread = fit_disc_prior(train)
    learned = {"disc_offset": offset, "prior_spread": spread, "reach": tuple(reach)}
    far = {**learned, "reach": (1e9, 1e9)}          # out of reach never: the fixed window, with a prior
    return {"fixed": RoiPolicy(), "fixed_prior": RoiPolicy("auto", **far), "disc": RoiPolicy("disc", **learned),
            "auto2": RoiPolicy("auto", **learned, margin_sigmas=2.0),
            "auto1": RoiPolicy("auto", **learned, margin_sigmas=1.0),
            "auto0": RoiPolicy("auto", **learned, margin_sigmas=0.0)}


def run_fold(fold: int, run: Path, data, cache: CanonicalCache, k_last: int, from_epoch: int | None = None) -> dict:
    """Every variant on every snapshot of one fold, and on the last ``k_last`` snapshots' averaged
    weights: {"variants": {variant: {epoch: score dict}}, "averaged": {variant: score dict}, ...}."""
    fold_dir = run / f"fold{fold}"
    cfg = load_config(fold_dir / "config.yml")
    codec = build_codec(cfg)
    split = get_fold(read_splits(run / "splits.json"), fold)
    canon = cache.load_all({i: data.images[i] for i in split["train"] + split["val"]}, progress=False)
    train = make_items({i: canon[i] for i in split["train"]}, data.gt, data.gt_name)
    val = make_items({i: canon[i] for i in split["val"]}, data.gt, data.gt_name)
    canons = [v.canon for v in val]
    pols = placements_of(train, cfg["data"]["shift"])
    placed = {k: roi_origins(canons, codec, pol) for k, pol in pols.items()}     # origins, centres, priors, anchored
    crops = {k: roi_crops(canons, codec, got[0]) for k, got in placed.items()}
    guards = {name: None if g is None else (replace(pols[place], max_from_prior=g), placed[place][2], placed[place][3])
              for name, (place, _, g) in VARIANTS.items()}

    def score_all(model) -> dict[str, dict]:
        maps = {k: _heatmaps(model, c) for k, c in crops.items()}
        return {name: _score(codec, maps[place][int(flip)], placed[place][0], val, guards[name])
                for name, (place, flip, _) in VARIANTS.items()}

    model = build_model(cfg)
    model.eval()
    snaps = _snapshots(fold_dir)
    snaps = {e: p for e, p in snaps.items() if e >= (from_epoch or max(snaps) // 2 + 1)}
    out: dict[str, dict[int, dict]] = {v: {} for v in VARIANTS}
    for epoch, path in snaps.items():
        model.set_state_dict(read_state(path))
        for name, score in score_all(model).items():
            out[name][epoch] = score
    last = max(snaps)
    model.set_state_dict(average_weights([p for e, p in snaps.items() if e > last - k_last]))
    averaged = score_all(model)
    logged = pd.read_csv(fold_dir / "metrics.csv").set_index("epoch")["val_aed"]
    own = RoiPolicy.from_config(cfg)          # training validated with its own policy, no flip
    own_guard = None if own.anchor == "fixed" else own.max_from_prior      # the fixed window has no prior to guard
    mine = [n for n, v in VARIANTS.items() if v == (own.anchor, False, own_guard)]
    check = max((abs(float(out[mine[0]][e]["ed"].mean()) - float(logged.loc[e - 1])) for e in snaps
                 if mine and (e - 1) in logged.index and np.isfinite(logged.loc[e - 1])), default=np.nan)
    moved = {k: int(np.any(np.abs(placed[k][1] - np.asarray(codec.roi_centre)) > 0.5, axis=1).sum()) for k in pols}
    guard_auto = replace(pols["auto2"], max_from_prior="auto").guard_radius
    return {"variants": out, "averaged": averaged, "ids": [v.canon.id for v in val], "offset": pols["disc"].disc_offset,
            "spread": pols["disc"].prior_spread, "guard_auto": guard_auto, "moved": moved, "n_val": len(val),
            "last": last, "first": min(snaps), "logged_diff": check, "logged_variant": mine[0] if mine else None}


def summarise(folds: dict[int, dict]) -> pd.DataFrame:
    """One row per variant: last-epoch, averaged-weights and best-on-validation AED (pooled over
    the folds), and for the averaged weights the median and worst px and photos > 100 px."""
    rows = []
    for name in VARIANTS:
        last_ed, avg_ed, avg_px, best_ed, per_fold, best_epochs = [], [], [], [], [], []
        for f in folds.values():
            scores = f["variants"][name]
            last_ed.append(scores[f["last"]]["ed"])
            avg_ed.append(f["averaged"][name]["ed"]), avg_px.append(f["averaged"][name]["px"])
            per_fold.append(float(f["averaged"][name]["ed"].mean()))
            e = min(scores, key=lambda ep: (float(scores[ep]["ed"].mean()), -ep))
            best_ed.append(scores[e]["ed"]), best_epochs.append(e)
        ap = np.concatenate(avg_px)
        rows.append({"variant": name, "last_aed": float(np.concatenate(last_ed).mean()),
                     "avg_aed": float(np.concatenate(avg_ed).mean()), "best_aed": float(np.concatenate(best_ed).mean()),
                     "avg_median_px": float(np.median(ap)), "avg_worst_px": float(ap.max()),
                     "avg_far": int((ap > FAR_PX).sum()), "per_fold_avg": per_fold, "best_epochs": best_epochs,
                     "n": int(len(ap))})
    return pd.DataFrame(rows).set_index("variant")


def markdown(table: pd.DataFrame, folds: dict, args, seconds: float) -> str:
    f1 = next(iter(folds.values()))
    lines = [f"# Fovea {len(folds)}-fold CV on {args.images}: ROI rules on the same snapshots", "",
             f"Written by `python bench/bench_fovea_cv.py --run {args.run_label} --images {args.images} "
             f"--gt {args.gt}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} in {seconds:.0f} s. "
             f"{table['n'].iloc[0]} photos, each predicted by the fold model that held it out. Last epoch = "
             f"{f1['last']}; averaged = the weights of the last {args.last_k} epochs averaged (predict's default "
             f"`averaged.pdparams`); best-on-validation chooses among epochs {f1['first']}-{f1['last']} "
             "(optimistic: the validation photos choose). AED = mean Euclidean distance normalised by the photo's "
             "size (the challenge's); px = canonical pixels (1956 x 1934 frame, about GAMMA pixels).", "",
             "| variant | last-epoch AED | averaged AED | best-on-val AED | averaged: median / worst px "
             "| averaged: photos > 100 px | per-fold averaged AED |", "|---|---|---|---|---|---|---|"]
    for name, r in table.iterrows():
        lines.append(f"| {name} | {r['last_aed']:.4f} | {r['avg_aed']:.4f} | {r['best_aed']:.4f} "
                     f"| {r['avg_median_px']:.0f} / {r['avg_worst_px']:.0f} | {r['avg_far']} "
                     f"| {', '.join(f'{v:.4f}' for v in r['per_fold_avg'])} |")
    lines += ["", "Per fold, learned from the fold's training photos: the disc-to-fovea offset, the spread of the "
              "foveae around disc + offset (1.4826 MAD per axis) and the auto guard's radius; photos whose window "
              "moved from the fixed one under `disc` / `auto(k=2)` / `auto(k=1)` / `auto(k=0)`; the largest difference "
              "between the variant training validated with and the AED it logged:", ""]
    for k, f in folds.items():
        mv = f["moved"]
        lines.append(f"- fold {k}: offset ({f['offset'][0]:.0f}, {f['offset'][1]:.0f}) px, spread "
                     f"({f['spread'][0]:.0f}, {f['spread'][1]:.0f}) px, auto guard {f['guard_auto']:.0f} px; moved "
                     f"{mv['disc']} / {mv['auto2']} / {mv['auto1']} / {mv['auto0']} of {f['n_val']}; "
                     f"logged ({f['logged_variant']}) difference {f['logged_diff']:.1e}")
    return "\n".join(lines) + "\n"


def figure(folds: dict, path: Path, rule: str = "auto(k=1)+guard") -> None:
    """Per-photo canonical error of the averaged weights: the fixed window and the disc window
    against ``rule``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def px(name):
        return np.concatenate([f["averaged"][name]["px"] for f in folds.values()])

    b = px(rule)
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 4.2), dpi=110, sharey=True)
    for ax, other in zip(axes, ("fixed", "disc+guard250")):
        a = px(other)
        top = max(a.max(), b.max()) * 1.1
        ax.scatter(a, b, s=12, alpha=0.7)
        ax.plot([1, top], [1, top], "k--", lw=0.8)
        ax.axhline(FAR_PX, color="r", lw=0.6), ax.axvline(FAR_PX, color="r", lw=0.6)
        ax.set(xscale="log", yscale="log", xlim=(1, top), ylim=(1, top), xlabel=f"{other}: error (canonical px)",
               title="per photo, averaged weights")
    axes[0].set_ylabel(f"{rule}: error (px)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a `gamma_kit.fovea cv` run with fold*/snapshots")
    ap.add_argument("--run-label", default="RUN", help="how the run folder is named in the output")
    ap.add_argument("--images", required=True)
    ap.add_argument("--gt", required=True)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--folds", default=None, help="comma-separated subset (default: every fold folder)")
    ap.add_argument("--last-k", type=int, default=5, help="snapshots averaged by the snap/swa variants")
    ap.add_argument("--from-epoch", type=int, default=None,
                    help="score snapshots from this epoch on (default: the second half of the run); the best "
                         "rows choose among these")
    ap.add_argument("--keep", type=Path, default=None,
                    help="folder for per-fold results (pickles), reused while a fold's snapshots are unchanged")
    ap.add_argument("--out-md", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    data = load_training_data(images=args.images, gt=args.gt)
    cfg = load_config(args.run / "fold1" / "config.yml")
    cache = CanonicalCache(cfg["codec"]["scale"], args.cache_dir, decode=cfg["data"]["decode"])   # as the run's
    from tqdm import tqdm

    folds = {}
    ks = sorted(int(d.name[4:]) for d in args.run.glob("fold[0-9]*") if d.name[4:].isdigit())
    if args.folds:
        ks = [int(k) for k in args.folds.split(",")]
    for k in tqdm(ks, desc="folds", unit="fold"):
        saved = args.keep / f"fold{k}.pkl" if args.keep else None
        key = (sorted(p.name for p in (args.run / f"fold{k}" / "snapshots").glob("*.pdparams")), args.last_k,
               args.from_epoch, sorted(VARIANTS.items()))
        if saved is not None and saved.is_file():
            got = pickle.loads(saved.read_bytes())
            if got["key"] == key:
                folds[k] = got["result"]
                continue
        folds[k] = run_fold(k, args.run, data, cache, args.last_k, args.from_epoch)
        if saved is not None:
            from gamma_kit.safety import atomic_write_bytes

            atomic_write_bytes(saved, pickle.dumps({"key": key, "result": folds[k]}))
    table = summarise(folds)
    md = markdown(table, folds, args, time.perf_counter() - t0)
    print(md)
    if args.out_md:
        atomic_write_text(args.out_md, md)
        figure(folds, args.out_md.with_suffix(".png"))
    if args.json:
        per_image = {name: {i: [float(ed), float(px)] for f in folds.values()
                            for i, ed, px in zip(f["ids"], f["averaged"][name]["ed"], f["averaged"][name]["px"])}
                     for name in VARIANTS}
        atomic_write_text(args.json, json.dumps({"table": json.loads(table.to_json(orient="index")),
                                                 "per_image_averaged_ed_px": per_image,
                                                 "folds": {k: {kk: vv for kk, vv in f.items()
                                                               if kk not in ("variants", "averaged")}
                                                           for k, f in folds.items()}}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
