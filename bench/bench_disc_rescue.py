"""Stage 1's other candidates (issue 19.1): photos rescued and photos made worse when stage 2 doubts
its first crop, on synthetic photos full of decoys and on the 103 real IDRiD photos.

    python bench/bench_disc_rescue.py [--model DIR | --train-iters 600] [--decoys 40] [--idrid DIR]
        [--md bench/results/disc_rescue.md] [--json FILE]

One two-stage model (``--model``, else ``roi_liteunet_cpu.yml`` trained ``--train-iters`` iterations on
60 synthetic photos, ``prepare --roi --roi-copies 2``, kept in ``--work`` when given) predicts every photo
twice through ``PredictorCore.predict_photo``: rescue off (stage 1's first crop, the kit before issue
19.1) and on (where ``disc_check`` doubts the first crop, its other candidate places are segmented
too and the crop that looks most like a disc is kept). Every photo whose crop changed is listed.

- Synthetic decoys: ``gamma_kit.synth`` photos at GAMMA's sizes with every decoy switched on (bright
  lesions: exudates, drusen, cotton-wool spots; peripapillary atrophy; vessel sheen and the macular
  ring reflex), scored against their masks: disc Dice per photo; rescued = Dice up by more than 0.1,
  worse = down by more than 0.02; and photos under 0.85 disc Dice.
- IDRiD: the disc is found when the centre of the segmented disc (largest component) lies within one
  nominal disc radius (250 px at 4288 px, as ``bench_disc_locate``) of the expert's centre; worse = found
  without rescue, lost with it.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, emit, machine_info, row  # noqa: E402

from gamma_kit.safety import atomic_write_text  # noqa: E402

NOMINAL_RADIUS_PX = 250.0        # IDRiD, source px (bench_disc_locate)
SIZES = ((2992, 2000), (1956, 1934))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="a two-stage seg model folder (default: train one)")
    ap.add_argument("--train-iters", type=int, default=600)
    ap.add_argument("--decoys", type=int, default=40, help="synthetic photos with every decoy on (0: none)")
    ap.add_argument("--idrid", default=str(REPO.parent / "shared" / "data" / "idrid_fovea"))
    ap.add_argument("--work", default=None)
    ap.add_argument("--md", default=str(REPO / "bench" / "results" / "disc_rescue.md"))
    ap.add_argument("--json", default=None)
    return ap


@contextlib.contextmanager
def every_decoy():
    """``gamma_kit.synth.render`` with every decoy in every photo."""
    from gamma_kit.synth import render

    saved = (dict(render.LESION_PROBABILITY), render.PPA_PROBABILITY, render.YOUNG_EYE)
    render.LESION_PROBABILITY.update({k: 1.0 for k in render.LESION_PROBABILITY})
    render.PPA_PROBABILITY, render.YOUNG_EYE = 1.0, 1.0
    try:
        yield
    finally:
        render.LESION_PROBABILITY.update(saved[0])
        render.PPA_PROBABILITY, render.YOUNG_EYE = saved[1], saved[2]


def train_model(work: Path, iters: int) -> Path:
    from gamma_kit.seg.prepare import prepare_dataset, split_dataset
    from gamma_kit.seg.model_dir import RoiSettings
    from gamma_kit.seg.training import train_from_config
    from gamma_kit.synth import generate

    generate(work / "train_synth", 60, 0, seed=11, sizes=SIZES, progress=False)
    prep = work / "prep"
    prepare_dataset(work / "train_synth", prep, roi=RoiSettings(copies=2), progress=False)
    split_dataset(prep, val_value=0.05, seed=0)
    opts = [f"train_dataset.dataset_root={prep}", f"train_dataset.train_path={prep / 'train_list.txt'}",
            f"val_dataset.dataset_root={prep}", f"val_dataset.val_path={prep / 'val_list.txt'}"]
    return train_from_config("roi_liteunet_cpu.yml", work / "model", iters=iters, opts=opts, device="cpu",
                             do_eval=False, seed=0, fit_schedule=True, progress=True, log_file=work / "train.log")


def runner_up_check(core, image, truth_xy, radius: float) -> dict:
    """The rule not shipped: compare stage 1's first crop with its runner-up's by ``disc_likeness``
    whatever the verdict. Whether each crop holds the disc (its segmented centre within ``radius`` of
    the truth) and both scores."""
    from gamma_kit.disc import locate_disc

    loc = locate_disc(image)
    first = core._crop_at(image, loc.xy, loc.diameter, False)
    if not loc.alternatives:
        return {}
    alt = core._crop_at(image, loc.alternatives[0], loc.diameter, False)

    def holds(t):
        c = t.verdict.centre
        if c is None:
            return False
        f = t.crop.side / t.prob.shape[1]
        return bool(np.hypot(t.crop.x0 + c[0] * f - truth_xy[0], t.crop.y0 + c[1] * f - truth_xy[1]) <= radius)

    return {"first_ok": holds(first), "alt_ok": holds(alt), "s_first": first.score, "s_alt": alt.score}


def ablation_lines(df: pd.DataFrame, label: str) -> list[str]:
    """What always comparing with the runner-up (switch when its score beats the first's by a margin)
    would have gained (the runner-up held the disc, the first did not) and lost."""
    d = df.dropna(subset=["s_alt"])
    lines = []
    for margin in (0.0, 0.05, 0.1):
        switch = d["s_alt"] > d["s_first"] + margin
        gained = int((switch & ~d["first_ok"] & d["alt_ok"]).sum())
        lost = int((switch & d["first_ok"] & ~d["alt_ok"]).sum())
        lines.append(f"| {label} | {margin:g} | {int(switch.sum())} | {gained} | {lost} |")
    return lines


def both_ways(core, image, name):
    """(labels without rescue, seconds, labels with rescue, seconds, the rescue note)."""
    core.rescue = False
    t0 = time.perf_counter()
    off = core.predict_photo(image, name=name)
    t1 = time.perf_counter()
    core.rescue = True
    on = core.predict_photo(image, name=name)
    t2 = time.perf_counter()
    return off.labels, t1 - t0, on.labels, t2 - t1, on.rescue


def disc_centre(labels: np.ndarray):
    from gamma_kit.geometry import largest_component

    part = largest_component(labels <= 1)
    return None if part is None else part.centre


def decoy_rows(core, work: Path, n: int) -> pd.DataFrame:
    from gamma_kit.data import load_seg_split, read_image, read_mask
    from gamma_kit.metrics import dice, disc_of
    from gamma_kit.seg.prepare import labels_to_mask
    from gamma_kit.synth import generate

    if not (work / "decoys").is_dir():                    # --work: the set of an earlier run is reused
        with every_decoy():
            generate(work / "decoys", 0, n, seed=23, sizes=SIZES, progress=False)
    split = load_seg_split(work / "decoys", "testing", mask_dir=work / "decoys" / "task3_disc_cup_segmentation"
                           / "testing_GT" / "Disc_Cup_Mask")
    rows = []
    for i, path in tqdm(split.images.items(), desc="decoys"):
        image, truth = read_image(path), read_mask(split.masks[i])
        off, t_off, on, t_on, note = both_ways(core, image, path.name)
        ys, xs = np.nonzero(disc_of(truth))
        rows.append({"id": i, "off": dice(disc_of(labels_to_mask(off)), disc_of(truth)),
                     "on": dice(disc_of(labels_to_mask(on)), disc_of(truth)), "t_off": t_off, "t_on": t_on,
                     "note": note, **runner_up_check(core, image, (xs.mean() + 0.5, ys.mean() + 0.5),
                                                     (xs.max() - xs.min() + 1) / 2)})
    return pd.DataFrame(rows)


def idrid_rows(core, data: Path) -> pd.DataFrame:
    from gamma_kit.data import read_image

    gt = pd.read_csv(data / "optic_disc_center_GT.csv", dtype={"data": str}).set_index("data")
    rows = []
    for i in tqdm(gt.index, desc="idrid"):
        image = read_image(data / "images" / f"{i}.jpg")
        off, t_off, on, t_on, note = both_ways(core, image, f"{i}.jpg")
        truth = (float(gt.loc[i, "OD_X"]), float(gt.loc[i, "OD_Y"]))
        err = [np.inf if c is None else float(np.hypot(c[0] - truth[0], c[1] - truth[1]))
               for c in (disc_centre(off), disc_centre(on))]
        rows.append({"id": i, "err_off": err[0], "err_on": err[1], "t_off": t_off, "t_on": t_on, "note": note,
                     **runner_up_check(core, image, truth, NOMINAL_RADIUS_PX)})
    return pd.DataFrame(rows)


def _changed(df: pd.DataFrame, cols: list[str]) -> list[str]:
    """Markdown lines listing the photos whose crop the rescue changed (id, the two figures, its note)."""
    moved = df[df["note"] != ""]
    if moved.empty:
        return []
    return [f"| photo | {cols[0]} | {cols[1]} | why |", "|---|---|---|---|",
            *(f"| {r.id} | {getattr(r, cols[0]):.3g} | {getattr(r, cols[1]):.3g} | {r.note} |"
              for r in moved.itertuples()), ""]


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from gamma_kit.seg.predictor import load_model

    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="bench_rescue_") as tmp:
        work = Path(args.work or tmp)
        trained = work / "model"
        trained_before = (trained / "last_model").is_dir()                   # --work: reused
        model = Path(args.model) if args.model else (trained if trained_before else train_model(work, args.train_iters))
        core = load_model(model, device="cpu")
        dec = decoy_rows(core, work, args.decoys) if args.decoys else None
        idrid = Path(args.idrid)
        idr = idrid_rows(core, idrid) if (idrid / "optic_disc_center_GT.csv").is_file() else None
    rows, lines = [], []
    model_text = args.model or f"roi_liteunet_cpu.yml, {args.train_iters} iterations on 60 synthetic photos"
    if dec is not None:
        up, down = (dec["on"] - dec["off"] > 0.1).sum(), (dec["off"] - dec["on"] > 0.02).sum()
        low_off, low_on = (dec["off"] < 0.85).sum(), (dec["on"] < 0.85).sum()
        rows.append(row(f"stage 1 candidates on {len(dec)} synthetic photos with every decoy (disc Dice)",
                        f"mean {dec['off'].mean():.3f}, {low_off} under 0.85", f"mean {dec['on'].mean():.3f}, "
                        f"{low_on} under 0.85; {up} rescued, {down} worse", None, "none worse", bool(down == 0),
                        note=f"{dec['t_on'].mean():.2f} s vs {dec['t_off'].mean():.2f} s per photo; "
                             f"model: {model_text}"))
        lines += ["## Synthetic photos with every decoy", "",
                  f"{len(dec)} photos (`gamma_kit.synth`, seed 23, GAMMA sizes; exudates, drusen, cotton-wool spots, "
                  "PPA, vessel sheen and the macular ring in every photo).", "",
                  "| | disc Dice mean | min | under 0.85 | s per photo |", "|---|---|---|---|---|",
                  f"| first crop (no rescue) | {dec['off'].mean():.3f} | {dec['off'].min():.3f} | {low_off} | "
                  f"{dec['t_off'].mean():.2f} |",
                  f"| rescue | {dec['on'].mean():.3f} | {dec['on'].min():.3f} | {low_on} | {dec['t_on'].mean():.2f} |",
                  "", f"Rescued (Dice up > 0.1): {up}; worse (down > 0.02): {down}; rescue kept another crop on "
                  f"{(dec['note'] != '').sum()} photo(s).", "", *_changed(dec, ["off", "on"])]
    if idr is not None:
        found_off, found_on = (idr["err_off"] <= NOMINAL_RADIUS_PX), (idr["err_on"] <= NOMINAL_RADIUS_PX)
        worse = int((found_off & ~found_on).sum())
        rows.append(row(f"stage 1 candidates on the {len(idr)} IDRiD photos (segmented disc within one radius)",
                        f"{found_off.sum()} / {len(idr)}", f"{found_on.sum()} / {len(idr)}; {worse} worse", None,
                        f"{len(idr)} / {len(idr)}, none worse", bool(found_on.all() and worse == 0),
                        note=f"{idr['t_on'].mean():.2f} s vs {idr['t_off'].mean():.2f} s per photo"))
        lines += ["## IDRiD (103 real photos, expert disc centres)", "",
                  "| | disc found | median centre error px | s per photo |", "|---|---|---|---|",
                  f"| first crop (no rescue) | {found_off.sum()} / {len(idr)} | {idr['err_off'].median():.0f} | "
                  f"{idr['t_off'].mean():.2f} |",
                  f"| rescue | {found_on.sum()} / {len(idr)} | {idr['err_on'].median():.0f} | "
                  f"{idr['t_on'].mean():.2f} |",
                  "", f"Found without rescue and lost with it: {worse}; rescue kept another crop on "
                  f"{(idr['note'] != '').sum()} photo(s).", "", *_changed(idr, ["err_off", "err_on"])]
    ablation = [*(ablation_lines(dec, "synthetic decoys") if dec is not None else []),
                *(ablation_lines(idr, "IDRiD") if idr is not None else [])]
    if ablation:
        lines += ["## The rule not shipped: always compare with the runner-up", "",
                  "Stage 1's first crop against its runner-up's by `disc_likeness` on every photo, switching when "
                  "the runner-up scores higher by the margin (a crop holds the disc when its segmented centre lies "
                  "within one disc radius of the truth):", "",
                  "| photos | margin | switched | gained | lost |", "|---|---|---|---|---|", *ablation, ""]
    m = machine_info()
    reused = "" if args.model or not args.work or not trained_before else " (the model of an earlier run, reused)"
    md = "\n".join(["# Stage 1's other candidates when stage 2 doubts its crop (issue 19.1)", "",
                    f"`python bench/bench_disc_rescue.py{' --model ' + args.model if args.model else ''} "
                    f"--train-iters {args.train_iters} --decoys {args.decoys}{' --work W' if args.work else ''}` "
                    f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {m['cpu']}, {m['cores']} cores, no GPU; "
                    f"{time.time() - t_start:.0f} s). Model: {model_text}{reused}.", "", *lines])
    atomic_write_text(args.md, md + "\n")
    emit({"rows": rows, "notes": [md], "machine": m}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
