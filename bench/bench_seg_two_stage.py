"""Segmentation inference per full-size photo: the whole-image path against the two-stage path
(stage 1 included), on the CPU; and, given trained models and a scored test set, the effect of
each post-processing step on both paths.

    python bench/bench_seg_two_stage.py [--roi-model DIR] [--whole-model DIR] [--data DIR] \
        [--repeat 3] [--md bench/results/seg_two_stage.md] [--json FILE]

Timing runs on synthetic photos at both GAMMA sizes (2992x2000, 1956x1934) from
``gamma_kit.synth``; without ``--roi-model`` / ``--whole-model`` the models are the shipped
configs with random weights (the time does not depend on the weights).

- whole image: ``SegPredictor.predict_labels`` of ``liteunet_gamma_cpu.yml`` (resize to 160,
  network, nearest back to the source size), and the original recipe's UNet 512 once;
- two-stage: ``predict_photo`` of ``roi_liteunet_cpu.yml``: stage 1 (disc location on the whole
  photo), ``DiscCrop`` at 512 px, resize to 192, network, paste back; then the default
  post-processing on the crop. With ``--tta`` also the flip TTA (4 crops in one batch).

With ``--data`` (a GAMMA-like task 3 folder with test masks) and trained models, every
post-processing variant is scored on the test photos (challenge metrics, per-image mean).
Memory in the RESULTS.md rows (``--json``): peak RSS minus the RSS before the block, warm-up
included, per path and photo size (Paddle keeps what it allocated, so a later block that fits
into it reads near 0).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, RssPeak, emit, fmt_mb, machine_info, row, versions  # noqa: E402

from gamma_kit.safety import atomic_write_text  # noqa: E402

SIZES = ((2992, 2000), (1956, 1934))
VARIANTS = {"none": (), "largest": ("largest",), "cup_in_disc": ("cup_in_disc",), "fill": ("fill",),
            "largest+cup_in_disc+fill": ("largest", "cup_in_disc", "fill"),
            "largest+cup_in_disc+fill+ellipse": ("largest", "cup_in_disc", "fill", "ellipse"),
            "ellipse": ("ellipse",)}


def _random_predictor(config: Path):
    import paddle
    from paddleseg.cvlibs import SegBuilder

    from gamma_kit.seg.predictor import SegPredictor, eval_transforms
    from gamma_kit.seg.prepare import RoiSettings
    from gamma_kit.seg.training import load_config

    paddle.seed(0)
    cfg = load_config(config)
    b = SegBuilder(cfg)
    roi = RoiSettings() if "roi_" in config.name else None
    return SegPredictor(b.model, eval_transforms(cfg), 3, roi=roi)


def _photos(work: Path) -> list[np.ndarray]:
    from gamma_kit.synth import render_fundus

    rng = np.random.default_rng(0)
    return [render_fundus(rng, size[0], size[1], side).image for size in SIZES for side in ("left", "right")]


def _time(fn, repeat: int) -> float:
    fn()   # warm-up
    best = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best.append(time.perf_counter() - t0)
    return float(np.median(best))


def timing(args) -> tuple[list[dict], list[dict]]:
    from gamma_kit.disc import locate_disc
    from gamma_kit.seg.postprocess import postprocess_labels
    from gamma_kit.seg.predictor import load_model

    roi = load_model(args.roi_model) if args.roi_model else _random_predictor(REPO / "configs/seg/roi_liteunet_cpu.yml")
    whole = (load_model(args.whole_model) if args.whole_model
             else _random_predictor(REPO / "configs/seg/liteunet_gamma_cpu.yml"))
    orig = _random_predictor(REPO / "configs/seg/unet_gamma_512.yml") if args.original else None
    photos = _photos(Path(args.work))
    rows, table = [], []
    for k, size in enumerate(SIZES):
        ims = photos[2 * k:2 * k + 2]
        per = lambda fn: _time(lambda: [fn(im) for im in ims], args.repeat) / len(ims)   # noqa: E731
        with RssPeak() as mem_whole:
            t_whole = per(lambda im: whole.predict_labels(im))
        t_stage1 = per(lambda im: locate_disc(im, name="bench"))
        with RssPeak() as mem_two:
            t_two = per(lambda im: roi.predict_photo(im).finished(postprocess_labels))
        t_tta = per(lambda im: roi.predict_photo(im, tta=True).finished(postprocess_labels)) if args.tta else None
        t_orig = _time(lambda: orig.predict_labels(ims[0]), 1) if orig is not None else None
        label = f"{size[0]}x{size[1]}"
        table.append({"size": label, "whole_s": t_whole, "stage1_s": t_stage1, "two_stage_s": t_two,
                      "two_stage_tta_s": t_tta, "original_unet512_s": t_orig})
        rows.append(row(f"Seg inference per photo {label}: two-stage (stage 1 + crop + LiteUNet 192 + paste + "
                        "post-processing) vs whole image (LiteUNet 160)",
                        f"{t_whole:.3f} s whole image" + (f"; original UNet 512 {t_orig:.2f} s" if t_orig else ""),
                        f"{t_two:.3f} s (stage 1 {t_stage1:.3f} s)" + (f"; with flip TTA {t_tta:.3f} s" if t_tta else ""),
                        t_whole / t_two, target="two-stage <= 1 s per photo", met=bool(t_two <= 1.0),
                        memory=f"whole {fmt_mb(mem_whole.peak_mb, 'RSS delta')}; two-stage "
                               f"{fmt_mb(mem_two.peak_mb, 'RSS delta')}",
                        note="" if args.roi_model or args.whole_model else "random weights (the time does not depend on them)"))
    return rows, table


def accuracy(args) -> list[dict]:
    """Post-processing variants on both paths (each model run once per photo, crops kept)."""
    from gamma_kit.data import MASK_EXTS, list_images, read_image, read_mask
    from gamma_kit.metrics import evaluate_seg
    from gamma_kit.seg.postprocess import postprocess_labels
    from gamma_kit.seg.predictor import load_model
    from gamma_kit.seg.submission import find_gt_mask_dir, test_images
    from gamma_kit.seg.prepare import labels_to_mask

    gt_dir = find_gt_mask_dir(args.data, "testing")
    gt = {i: read_mask(p) for i, p in list_images(gt_dir, MASK_EXTS).items()}
    files = test_images(args.data, "testing")
    out = []
    arms = []
    if args.whole_model:
        arms.append(("whole image", load_model(args.whole_model), False))
    if args.roi_model:
        arms.append(("two-stage", load_model(args.roi_model), False))
        if args.tta:
            arms.append(("two-stage + flip TTA", load_model(args.roi_model), True))
    for name, model, tta in arms:
        photos = {i: model.predict_photo(read_image(files[i]), name=files[i].name, tta=tta) for i in gt}
        base = None
        for vname, steps in VARIANTS.items():
            pp = (lambda lab, s=steps: postprocess_labels(lab, s)) if steps else None
            m = evaluate_seg({i: labels_to_mask(p.finished(pp)) for i, p in photos.items()}, gt)
            per = m["per_image"]["dice_disc"]
            base = per if base is None else base
            worse = int(((per - base) < -0.02).sum())   # photos whose disc Dice this variant lowers by > 0.02
            better = int(((per - base) > 0.02).sum())
            out.append({"path": name, "postprocess": vname, "worse": worse, "better": better,
                        **{k: m[k] for k in ("dice_disc", "dice_cup", "vcdr_mae", "n")}})
            print(f"{name:22s} {vname:34s} disc {m['dice_disc']:.4f} cup {m['dice_cup']:.4f} "
                  f"vCDR MAE {m['vcdr_mae']:.4f}  disc worse/better on {worse}/{better} photos", flush=True)
    return out


def write_md(path: Path, table: list[dict], acc: list[dict], args) -> None:
    lines = ["# Segmentation: two-stage vs whole-image inference (CPU)", "",
             f"Command: `python bench/bench_seg_two_stage.py {' '.join(sys.argv[1:])}`", "",
             f"Machine: {json.dumps(machine_info())}", "", f"Versions: {json.dumps(versions())}", "",
             "Seconds per full-size photo (median of repeats, 2 photos per size; image already decoded):", "",
             "| photo size | whole image (LiteUNet 160) | stage 1 alone | two-stage total (stage 1 + crop + "
             "LiteUNet 192 + paste + post-processing) | two-stage + flip TTA | original UNet 512 whole image |",
             "|---|---|---|---|---|---|"]
    f = lambda v: "-" if v is None else f"{v:.3f}"   # noqa: E731
    for t in table:
        lines.append(f"| {t['size']} | {f(t['whole_s'])} | {f(t['stage1_s'])} | {f(t['two_stage_s'])} | "
                     f"{f(t['two_stage_tta_s'])} | {f(t['original_unet512_s'])} |")
    if acc:
        lines += ["", f"Post-processing on the test photos of `{args.data}` (challenge metrics, per-image mean):", "",
                  "| path | post-processing | disc Dice | cup Dice | vCDR MAE | n | photos with disc Dice "
                  "lower / higher by > 0.02 than without |", "|---|---|---|---|---|---|---|"]
        for a in acc:
            lines.append(f"| {a['path']} | {a['postprocess']} | {a['dice_disc']:.4f} | {a['dice_cup']:.4f} | "
                         f"{a['vcdr_mae']:.4f} | {a['n']} | {a['worse']} / {a['better']} |")
    atomic_write_text(path, "\n".join(lines) + "\n")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--roi-model", default=None, help="trained two-stage model dir (default: random weights)")
    ap.add_argument("--whole-model", default=None, help="trained whole-image model dir (default: random weights)")
    ap.add_argument("--data", default=None, help="task 3 folder with test masks: score the post-processing variants")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tta", action="store_true", help="also time and score flip TTA")
    ap.add_argument("--original", action="store_true", help="also time the original UNet 512 once per size")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--work", default=None)
    ap.add_argument("--md", default=str(REPO / "bench" / "results" / "seg_two_stage.md"))
    ap.add_argument("--json", default=None)
    return ap


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    args.work = args.work or tempfile.mkdtemp(prefix="gk_seg2_")
    rows, table = ([], []) if args.no_timing else timing(args)
    acc = accuracy(args) if args.data else []
    if args.md:
        write_md(Path(args.md), table, acc, args)
    result = {"rows": rows, "notes": [], "timing": table, "postprocess": acc}
    emit(result, args.json)
    return result


if __name__ == "__main__":
    main()
