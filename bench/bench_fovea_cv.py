"""Fovea cross-validation on real photos: today's inference chain against improved ones, all
scored on the same trained snapshots, so every arm has the same training budget.

    # 1. train (snapshots every epoch; ~10 min per fold of 82 IDRiD photos at 40 epochs on 2 cores)
    python -m gamma_kit.fovea cv --images ../shared/data/idrid_fovea/images \\
        --gt ../shared/data/idrid_fovea/fovea_GT.csv --config configs/fovea/unet_heatmap_cpu.yml \\
        --epochs 40 --run-dir RUN --cache-dir CACHE --set train.snapshot_every=1
    # 2. score every variant on every snapshot
    python bench/bench_fovea_cv.py --run RUN --images ../shared/data/idrid_fovea/images \\
        --gt ../shared/data/idrid_fovea/fovea_GT.csv --cache-dir CACHE --out-md bench/results/fovea_cv_idrid.md

Variants (``VARIANTS``):

- ``fixed``: today's chain, the original fixed ROI at (1140, 1040), no TTA. Its per-epoch AED is
  the validation AED that training logged (the table says how far apart they are: 0 expected).
- ``fixed+flip``: with horizontal-flip TTA.
- ``disc`` / ``disc+flip``: the ROI centred on the detected optic disc plus the disc-to-fovea
  offset learned from the fold's own training photos (gamma_kit.fovea.roi).
- ``disc+flip+snapK``: heatmaps of the last K snapshots averaged (a snapshot ensemble);
  ``disc+flip+swaK``: their weights averaged; ``disc+flip+recentre``: a second pass with the
  ROI centred on the first estimate. These use the last epochs only, so they have no best row.
- ``+guard``: the outlier guard (roi.max_from_prior, ``--guard-px``): a position farther than
  that from the disc-anchored window centre, or an empty heatmap, becomes the centre.

Per variant: **last-epoch** AED (every photo predicted by the model of the fold that held it
out, pooled), **best-on-validation** AED (each fold at its own best epoch under that variant,
among the scored epochs, by default the second half of the run: optimistic, the validation
photos choose the epoch), the worst error and the number of photos
more than 100 px off, both in canonical px (the 1956 x 1934 frame, about GAMMA pixels), and
each fold's last-epoch AED.
"""
from __future__ import annotations

import argparse
import json
import pickle
import re
import sys
import time
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
from gamma_kit.fovea.roi import RoiPolicy, fit_disc_offset  # noqa: E402
from gamma_kit.fovea.train import load_training_data  # noqa: E402
from gamma_kit.metrics import fovea_ed  # noqa: E402

PER_EPOCH = ("fixed", "fixed+flip", "disc", "disc+flip", "disc+flip+guard")
FAR_PX = 100.0


def _heatmaps(model, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps of the crops and of their mirror images mirrored back: (plain, flip TTA)."""
    plain = predict_heatmaps(model, crops)
    mirrored = predict_heatmaps(model, np.ascontiguousarray(crops[..., ::-1]))[..., ::-1]
    return plain, 0.5 * (plain + mirrored)


def _score(codec, maps: np.ndarray, origins: np.ndarray, items, guard: tuple | None = None) -> dict:
    """Decode ``maps`` of ROI crops at ``origins`` (``guard``: (RoiPolicy, centres, anchored), the
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


def run_fold(fold: int, run: Path, data, cache: CanonicalCache, k_last: int, from_epoch: int | None = None,
             guard_px: float = 250.0) -> dict:
    """Every variant on every snapshot of one fold: {variant: {epoch: score dict}}."""
    fold_dir = run / f"fold{fold}"
    cfg = load_config(fold_dir / "config.yml")
    codec = build_codec(cfg)
    split = get_fold(read_splits(run / "splits.json"), fold)
    canon = cache.load_all({i: data.images[i] for i in split["train"] + split["val"]}, progress=False)
    train = make_items({i: canon[i] for i in split["train"]}, data.gt, data.gt_name)
    val = make_items({i: canon[i] for i in split["val"]}, data.gt, data.gt_name)
    disc = RoiPolicy("disc", fit_disc_offset(train), max_from_prior=guard_px)
    placements = {"fixed": roi_origins([v.canon for v in val], codec, None)[0]}
    placements["disc"], centres, anchored = roi_origins([v.canon for v in val], codec, disc)
    guard = (disc, centres, anchored)
    crops = {k: roi_crops([v.canon for v in val], codec, o) for k, o in placements.items()}
    model = build_model(cfg)
    model.eval()
    snaps = _snapshots(fold_dir)
    snaps = {e: p for e, p in snaps.items() if e >= (from_epoch or max(snaps) // 2 + 1)}
    out: dict[str, dict[int, dict]] = {v: {} for v in PER_EPOCH}
    last_maps = []
    for epoch, path in snaps.items():
        model.set_state_dict(read_state(path))
        for place in ("fixed", "disc"):
            plain, flip = _heatmaps(model, crops[place])
            out[place][epoch] = _score(codec, plain, placements[place], val)
            out[place + "+flip"][epoch] = _score(codec, flip, placements[place], val)
            if place == "disc":
                out["disc+flip+guard"][epoch] = _score(codec, flip, placements[place], val, guard)
            if place == "disc" and epoch > max(snaps) - k_last:
                last_maps.append(flip)
    last = max(snaps)
    snap_maps = np.mean(last_maps, axis=0)
    out[f"disc+flip+snap{k_last}"] = {last: _score(codec, snap_maps, placements["disc"], val)}
    out[f"disc+flip+snap{k_last}+guard"] = {last: _score(codec, snap_maps, placements["disc"], val, guard)}
    model.set_state_dict(average_weights([p for e, p in snaps.items() if e > last - k_last]))
    swa_maps = _heatmaps(model, crops["disc"])[1]
    out[f"disc+flip+swa{k_last}"] = {last: _score(codec, swa_maps, placements["disc"], val)}
    out[f"disc+flip+swa{k_last}+guard"] = {last: _score(codec, swa_maps, placements["disc"], val, guard)}
    model.set_state_dict(read_state(snaps[last]))
    first = out["disc+flip"][last]["canon"]
    re_origins = codec.origins_px(first)
    re_maps = _heatmaps(model, roi_crops([v.canon for v in val], codec, re_origins))[1]
    out["disc+flip+recentre"] = {last: _score(codec, re_maps, re_origins, val)}
    logged = pd.read_csv(fold_dir / "metrics.csv").set_index("epoch")["val_aed"]
    check = max(abs(float(out["fixed"][e]["ed"].mean()) - float(logged.loc[e - 1])) for e in snaps
                if (e - 1) in logged.index and np.isfinite(logged.loc[e - 1]))
    return {"variants": out, "ids": [v.canon.id for v in val], "offset": disc.disc_offset,
            "anchored": int(anchored.sum()), "n_val": len(val), "last": last, "first": min(snaps),
            "logged_diff": check}


def summarise(folds: dict[int, dict]) -> pd.DataFrame:
    """One row per variant: last and best-on-validation AED (pooled), worst px, photos > 100 px."""
    rows = []
    for name in next(iter(folds.values()))["variants"]:
        last_ed, last_px, best_ed, best_px, per_fold, best_epochs = [], [], [], [], [], []
        for k, f in folds.items():
            scores = f["variants"][name]
            s = scores[f["last"]]
            last_ed.append(s["ed"]), last_px.append(s["px"]), per_fold.append(float(s["ed"].mean()))
            if len(scores) > 1:
                e = min(scores, key=lambda ep: (float(scores[ep]["ed"].mean()), -ep))
                best_ed.append(scores[e]["ed"]), best_px.append(scores[e]["px"]), best_epochs.append(e)
        le, lp = np.concatenate(last_ed), np.concatenate(last_px)
        row = {"variant": name, "last_aed": float(le.mean()), "last_worst_px": float(lp.max()),
               "last_far": int((lp > FAR_PX).sum()), "last_median_px": float(np.median(lp)),
               "per_fold_last": per_fold, "n": int(len(le))}
        if best_ed:
            be, bp = np.concatenate(best_ed), np.concatenate(best_px)
            row.update(best_aed=float(be.mean()), best_worst_px=float(bp.max()), best_far=int((bp > FAR_PX).sum()),
                       best_epochs=best_epochs)
        rows.append(row)
    return pd.DataFrame(rows).set_index("variant")


def markdown(table: pd.DataFrame, folds: dict, args, seconds: float) -> str:
    f1 = next(iter(folds.values()))
    lines = [f"# Fovea {len(folds)}-fold CV on {args.images}: inference variants on the same snapshots", "",
             f"Written by `python bench/bench_fovea_cv.py --run {args.run_label} --images {args.images} "
             f"--gt {args.gt}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} in {seconds:.0f} s. "
             f"{table['n'].iloc[0]} photos, each predicted by the fold model that held it out; last epoch = "
             f"{f1['last']}; best-on-validation chooses among epochs {f1['first']}-{f1['last']}. AED = mean Euclidean distance normalised by the photo's size (the challenge's); "
             f"px = canonical pixels (1956 x 1934 frame, about GAMMA pixels).", "",
             "| variant | last-epoch AED | best-on-val AED | last: median / worst px | last: photos > 100 px "
             "| best: worst px | per-fold last AED |", "|---|---|---|---|---|---|---|"]
    for name, r in table.iterrows():
        best = "-" if pd.isna(r.get("best_aed", np.nan)) else f"{r['best_aed']:.4f}"
        bworst = "-" if pd.isna(r.get("best_worst_px", np.nan)) else f"{r['best_worst_px']:.0f}"
        lines.append(f"| {name} | {r['last_aed']:.4f} | {best} | {r['last_median_px']:.0f} / {r['last_worst_px']:.0f} "
                     f"| {r['last_far']} | {bworst} | {', '.join(f'{v:.4f}' for v in r['per_fold_last'])} |")
    lines += ["", "Per fold: disc-to-fovea offset learned from the fold's training photos, photos whose ROI the "
              "disc anchored (the rest: fixed window), best epochs of `fixed` / `disc+flip`, and the largest "
              "difference between `fixed` here and the validation AED training logged:", ""]
    for k, f in folds.items():
        be = [table.loc[v, "best_epochs"][list(folds).index(k)] for v in ("fixed", "disc+flip")]
        lines.append(f"- fold {k}: offset ({f['offset'][0]:.0f}, {f['offset'][1]:.0f}) px, anchored {f['anchored']}/"
                     f"{f['n_val']}, best epochs {be[0]} / {be[1]}, logged-AED difference {f['logged_diff']:.1e}")
    return "\n".join(lines) + "\n"


def figure(folds: dict, path: Path, k_last: int) -> None:
    """Per-photo canonical error, last epoch: today's fixed window against what the CPU config
    does now (disc-anchored ROI, averaged weights of the last ``k_last`` epochs, flip, guard)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = np.concatenate([f["variants"]["fixed"][f["last"]]["px"] for f in folds.values()])
    cpu = f"disc+flip+swa{k_last}+guard"
    b = np.concatenate([f["variants"][cpu][f["last"]]["px"] for f in folds.values()])
    fig, ax = plt.subplots(figsize=(4.6, 4.2), dpi=110)
    ax.scatter(a, b, s=12, alpha=0.7)
    top = max(a.max(), b.max()) * 1.1
    ax.plot([1, top], [1, top], "k--", lw=0.8)
    ax.axhline(FAR_PX, color="r", lw=0.6), ax.axvline(FAR_PX, color="r", lw=0.6)
    ax.set(xscale="log", yscale="log", xlim=(1, top), ylim=(1, top), xlabel="fixed ROI: error (canonical px)",
           ylabel=f"{cpu}: error (px)", title="per photo, last epoch")
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
    ap.add_argument("--guard-px", type=float, default=250.0,
                    help="outlier guard radius of the +guard variants (roi.max_from_prior; the CPU config's 250)")
    ap.add_argument("--out-md", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    data = load_training_data(images=args.images, gt=args.gt)
    cfg = load_config(args.run / "fold1" / "config.yml")
    cache = CanonicalCache(cfg["codec"]["scale"], args.cache_dir)
    from tqdm import tqdm

    folds = {}
    ks = sorted(int(d.name[4:]) for d in args.run.glob("fold[0-9]*") if d.name[4:].isdigit())
    if args.folds:
        ks = [int(k) for k in args.folds.split(",")]
    for k in tqdm(ks, desc="folds", unit="fold"):
        saved = args.keep / f"fold{k}.pkl" if args.keep else None
        key = (sorted(p.name for p in (args.run / f"fold{k}" / "snapshots").glob("*.pdparams")), args.last_k,
               args.from_epoch, args.guard_px)
        if saved is not None and saved.is_file():
            got = pickle.loads(saved.read_bytes())
            if got["key"] == key:
                folds[k] = got["result"]
                continue
        folds[k] = run_fold(k, args.run, data, cache, args.last_k, args.from_epoch, args.guard_px)
        if saved is not None:
            from gamma_kit.safety import atomic_write_bytes

            atomic_write_bytes(saved, pickle.dumps({"key": key, "result": folds[k]}))
    table = summarise(folds)
    md = markdown(table, folds, args, time.perf_counter() - t0)
    print(md)
    if args.out_md:
        atomic_write_text(args.out_md, md)
        figure(folds, args.out_md.with_suffix(".png"), args.last_k)
    if args.json:
        per_image = {name: {i: [float(ed), float(px)] for f in folds.values()
                            for i, ed, px in zip(f["ids"], f["variants"][name][f["last"]]["ed"],
                                                 f["variants"][name][f["last"]]["px"])}
                     for name in next(iter(folds.values()))["variants"]}
        atomic_write_text(args.json, json.dumps({"table": json.loads(table.to_json(orient="index")),
                                                 "per_image_last_ed_px": per_image,
                                                 "folds": {k: {kk: vv for kk, vv in f.items() if kk != "variants"}
                                                           for k, f in folds.items()}}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
