"""End-to-end demo on the synthetic GAMMA stand-in (the README's first command).

    python -m gamma_kit.demo [--out demo_out] [--train 40] [--test 10] [--seed 0] [--device auto]

1. writes a synthetic GAMMA data set (both cameras, both eyes) under ``OUT/data``
   unless one is already there;
2. task 2: trains the CPU fovea config briefly, predicts the test images, writes the
   submission CSV and scores it against the baseline that puts every fovea at the mean
   canonical training position (``gamma_kit.fovea.demo``);
3. scores the task 3 baseline: an empty mask;
4. task 3: prepares the labels, trains the CPU segmentation config briefly, predicts,
   zips the BMPs and scores them (``gamma_kit.seg.demo``);
5. prints a table and writes ``OUT/results.json``.

Everything is written under ``OUT``; nothing else is touched. The console shows progress
bars and the summary table; what the libraries print (PaddleSeg's config dumps, training
and evaluation logs, FLOPs tables) goes to ``OUT/logs/fovea.log`` and ``OUT/logs/seg_train.log``
(``--verbose``: on the console instead).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from gamma_kit.data import find_mask_dir, find_task_dir, list_masks, read_mask
from gamma_kit.safety import atomic_write_text
from gamma_kit.metrics import evaluate_seg

__all__ = ["run_demo", "ensure_synthetic", "seg_empty_baseline", "main"]

TASKS = ("fovea", "seg")


def ensure_synthetic(data_dir: Path, n_train: int, n_test: int, seed: int,
                     sizes: tuple[tuple[int, int], ...] | None = None, progress: bool = True) -> Path:
    """Generate the synthetic data set into ``data_dir`` unless it already holds one.

    ``sizes``: camera sizes (w, h) used in turn; default the two GAMMA cameras.
    """
    from gamma_kit.synth import DEFAULT_SIZES, generate

    if (data_dir / "synth_meta.csv").is_file():
        print(f"using the synthetic data already in {data_dir}")
        return data_dir
    t = time.perf_counter()
    generate(data_dir, n_train, n_test, seed, sizes=tuple(sizes or DEFAULT_SIZES), progress=progress)
    print(f"synthetic data: {n_train} training + {n_test} test images in {time.perf_counter() - t:.0f} s -> {data_dir}")
    return data_dir


def seg_empty_baseline(data_dir: Path) -> dict:
    """Task 3 scores of an all-background prediction on the test split."""
    task = find_task_dir(data_dir, "seg")
    gt = {i: read_mask(p) for i, p in list_masks(find_mask_dir(task, "testing", required=True)).items()}
    res = evaluate_seg({i: np.full(m.shape, 255, np.uint8) for i, m in gt.items()}, gt)
    return {k: res[k] for k in ("dice_disc", "dice_cup", "vcdr_mae", "score", "n")}


def run_demo(out_dir: str | Path = "demo_out", n_train: int = 60, n_test: int = 20, seed: int = 0,
             device: str = "auto", tasks: tuple[str, ...] = TASKS, progress: bool = True,
             sizes: tuple[tuple[int, int], ...] | None = None, fovea_epochs: int = 12,
             seg_iters: int = 120, verbose: bool = False) -> dict:
    """Run the whole demo; returns the results written to ``OUT/results.json``.

    The defaults are sized for about 5 minutes on 2 CPU cores; tests shrink ``sizes``,
    ``fovea_epochs`` and ``seg_iters``. ``verbose``: library logs on the console instead of
    ``OUT/logs/``.
    """
    from gamma_kit.seg.training import capture_console, console_defaults

    out = Path(out_dir)
    logs = None if verbose else out / "logs"

    def log_to(name: str):
        return capture_console(None if logs is None else logs / name)

    t0 = time.perf_counter()
    data_dir = ensure_synthetic(out / "data", n_train, n_test, seed, sizes, progress)
    results: dict = {"baselines": {}, "seconds": {}}
    if "fovea" in tasks:
        from gamma_kit.fovea.demo import run_demo as fovea_demo

        t = time.perf_counter()
        with log_to("fovea.log"):
            fovea = fovea_demo(data_dir, out / "fovea", epochs=fovea_epochs, overrides=(f"train.device={device}",),
                               progress=progress)
        results["baselines"]["fovea_mean_position"] = {"aed": fovea.pop("baseline_aed"),
                                                       "score": fovea.pop("baseline_score")}
        results["fovea"] = fovea
        results["seconds"]["fovea"] = round(time.perf_counter() - t, 1)
    if "seg" in tasks:
        from gamma_kit.seg.demo import run_demo as seg_demo

        t = time.perf_counter()
        results["baselines"]["seg_empty_mask"] = seg_empty_baseline(data_dir)
        # stdout (PaddleSeg's logger, config dumps, FLOPs table) to the log; a bar over the iterations instead
        with log_to("seg_train.log"), console_defaults(None, progress=progress and logs is not None):
            results["seg"] = seg_demo(data_dir, out / "seg", iters=seg_iters, device=device, progress=progress)
        results["seconds"]["seg"] = round(time.perf_counter() - t, 1)
    results["seconds"]["total"] = round(time.perf_counter() - t0, 1)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2, default=_jsonable))
    print(summary_table(results))
    print(f"results: {out / 'results.json'}" + (f"; logs: {logs}" if logs is not None else ""))
    return results


def _jsonable(o):
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    return str(o)


def summary_table(results: dict) -> str:
    """A plain-text table: baseline and model for each task metric."""
    b = results["baselines"]
    rows = [("2 fovea", "fovea_mean_position", "fovea", ("aed", "score")),
            ("3 disc/cup", "seg_empty_mask", "seg", ("dice_disc", "dice_cup", "vcdr_mae", "score"))]
    lines = ["", f"{'task':<12}{'metric':<12}{'baseline':>10}{'model':>10}", "-" * 44]
    for task, base_key, key, metrics in rows:
        if key not in results:
            continue
        for m in metrics:
            base = b.get(base_key, {}).get(m)
            model = results[key].get(m)
            lines.append(f"{task:<12}{m:<12}" + "".join(f"{v:>10.4f}" if v is not None else f"{'-':>10}"
                                                          for v in (base, model)))
    lines.append("baselines: mean canonical training fovea (task 2), empty mask (task 3)")
    lines.append("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in results["seconds"].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from gamma_kit.runtime import DEVICE_CHOICES

    ap = argparse.ArgumentParser(prog="python -m gamma_kit.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    ap.add_argument("--train", type=int, default=60, help="synthetic training images (default 60)")
    ap.add_argument("--test", type=int, default=20, help="synthetic test images (default 20)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", choices=DEVICE_CHOICES, default="auto",
                    help="auto (default): a GPU when Paddle sees one")
    ap.add_argument("--tasks", default="fovea,seg", help="comma-separated subset of fovea,seg")
    ap.add_argument("--fovea-epochs", type=int, default=12, help="fovea training epochs (default 12)")
    ap.add_argument("--seg-iters", type=int, default=120, help="segmentation training iterations (default 120)")
    ap.add_argument("--sizes", default=None, help="synthetic camera sizes, e.g. 748x500,489x484 "
                                                 "(default: the two GAMMA cameras)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--verbose", action="store_true",
                    help="show the libraries' logs (PaddleSeg config dumps, training logs) on the console "
                         "instead of OUT/logs/*.log")
    args = ap.parse_args(argv)
    tasks = tuple(t for t in args.tasks.split(",") if t)
    bad = [t for t in tasks if t not in TASKS]
    if bad:
        ap.error(f"unknown task(s) {bad}; choose from {TASKS}")
    from gamma_kit.cli import run_cli
    from gamma_kit.synth import parse_sizes

    return run_cli(lambda: run_demo(
        args.out, args.train, args.test, args.seed, args.device, tasks, progress=not args.quiet,
        sizes=parse_sizes(args.sizes) if args.sizes else None, fovea_epochs=args.fovea_epochs,
        seg_iters=args.seg_iters, verbose=args.verbose))


if __name__ == "__main__":
    sys.exit(main())
