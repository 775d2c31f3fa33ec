"""End-to-end demo on the synthetic GAMMA stand-in (the README's first command).

    python -m gamma_kit.demo [--out demo_out] [--train 40] [--test 10] [--seed 0] [--device auto]

1. writes a synthetic GAMMA data set (both cameras, both eyes) under ``OUT/data``
   unless one is already there;
2. scores the trivial baselines: the mean canonical training fovea, and an empty mask;
3. task 2: trains the CPU fovea config briefly, predicts the test images, writes the
   submission CSV and scores it (``gamma_kit.fovea.demo``);
4. task 3: prepares the labels, trains the CPU segmentation config briefly, predicts,
   zips the BMPs and scores them (``gamma_kit.seg.demo``);
5. prints a table and writes ``OUT/results.json``.

Everything is written under ``OUT``; nothing else is touched.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from gamma_kit.baselines import empty_mask_baseline, mean_position_baseline
from gamma_kit.data import (atomic_write_text, find_task_dir, image_size, list_images, load_fovea_split,
                            load_seg_split, read_fovea_gt, read_mask)
from gamma_kit.metrics import evaluate_fovea, evaluate_seg

__all__ = ["run_demo", "ensure_synthetic", "baselines", "main"]

TASKS = ("fovea", "seg")


def ensure_synthetic(data_dir: Path, n_train: int, n_test: int, seed: int) -> Path:
    """Generate the synthetic data set into ``data_dir`` unless it already holds one."""
    from gamma_kit.synth import generate

    if (data_dir / "synth_meta.csv").is_file():
        print(f"using the synthetic data already in {data_dir}")
        return data_dir
    t = time.perf_counter()
    generate(data_dir, n_train, n_test, seed)
    print(f"synthetic data: {n_train} training + {n_test} test images in {time.perf_counter() - t:.0f} s -> {data_dir}")
    return data_dir


def _fovea_test_gt(data_dir: Path):
    task = find_task_dir(data_dir, "fovea")
    gt_files = sorted((task / "testing_GT").glob("*.xlsx"))
    if not gt_files:
        raise FileNotFoundError(f"{task / 'testing_GT'}: no test ground truth (.xlsx)")
    return read_fovea_gt(gt_files[0]), list_images(task / "testing" / "fundus color images")


def baselines(data_dir: Path) -> dict:
    """Scores of the trivial baselines on the test split: what a model must beat."""
    train = load_fovea_split(data_dir, "training")
    gt, test_images = _fovea_test_gt(data_dir)
    pred = mean_position_baseline(train, test_images)
    sizes = {i: image_size(test_images[i]) for i in gt.index}
    fovea = evaluate_fovea(pred.loc[gt.index], gt, sizes)
    seg_task = find_task_dir(data_dir, "seg")
    gt_masks = {i: read_mask(p) for i, p in list_images(seg_task / "testing_GT" / "Disc_Cup_Mask").items()}
    seg = evaluate_seg(empty_mask_baseline({i: m.shape for i, m in gt_masks.items()}), gt_masks)
    return {"fovea_mean_position": {k: fovea[k] for k in ("aed", "score", "n")},
            "seg_empty_mask": {k: seg[k] for k in ("dice_disc", "dice_cup", "vcdr_mae", "score", "n")}}


def run_demo(out_dir: str | Path = "demo_out", n_train: int = 40, n_test: int = 10, seed: int = 0,
             device: str = "auto", tasks: tuple[str, ...] = TASKS) -> dict:
    """Run the whole demo; returns the results written to ``OUT/results.json``."""
    out = Path(out_dir)
    t0 = time.perf_counter()
    data_dir = ensure_synthetic(out / "data", n_train, n_test, seed)
    results: dict = {"baselines": baselines(data_dir), "seconds": {}}
    if "fovea" in tasks:
        from gamma_kit.fovea.demo import run_demo as fovea_demo

        t = time.perf_counter()
        results["fovea"] = fovea_demo(data_dir, out / "fovea", device=device)
        results["seconds"]["fovea"] = round(time.perf_counter() - t, 1)
    if "seg" in tasks:
        from gamma_kit.seg.demo import run_demo as seg_demo

        t = time.perf_counter()
        results["seg"] = seg_demo(data_dir, out / "seg", device=device)
        results["seconds"]["seg"] = round(time.perf_counter() - t, 1)
    results["seconds"]["total"] = round(time.perf_counter() - t0, 1)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2, default=_jsonable))
    print(summary_table(results))
    print(f"results: {out / 'results.json'}")
    return results


def _jsonable(o):
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    return str(o)


def summary_table(results: dict) -> str:
    b = results["baselines"]
    lines = ["", "task                       metric      baseline      model",
             "-" * 60]
    f = results.get("fovea", {})
    for k in ("aed", "score"):
        lines.append(f"2 fovea                    {k:<10}  {b['fovea_mean_position'][k]:>8.4f}   "
                     + (f"{f[k]:>8.4f}" if k in f else "       -"))
    s = results.get("seg", {})
    for k in ("dice_disc", "dice_cup", "vcdr_mae", "score"):
        lines.append(f"3 disc/cup                 {k:<10}  {b['seg_empty_mask'][k]:>8.4f}   "
                     + (f"{s[k]:>8.4f}" if k in s else "       -"))
    lines.append("baselines: mean canonical training fovea; empty mask.  "
                 f"time: {results['seconds'].get('total', 0):.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gamma_kit.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    ap.add_argument("--train", type=int, default=40, help="synthetic training images (default 40)")
    ap.add_argument("--test", type=int, default=10, help="synthetic test images (default 10)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    ap.add_argument("--tasks", default="fovea,seg", help="comma-separated subset of fovea,seg")
    args = ap.parse_args(argv)
    tasks = tuple(t for t in args.tasks.split(",") if t)
    bad = [t for t in tasks if t not in TASKS]
    if bad:
        ap.error(f"unknown task(s) {bad}; choose from {TASKS}")
    try:
        run_demo(args.out, args.train, args.test, args.seed, args.device, tasks)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
