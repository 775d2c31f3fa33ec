"""Accuracy beside speed: the CPU fovea config against the original architecture on
EQUAL wall-clock training budgets, trained and scored with the fovea helper's own
``train_fold`` / ``predict``.

    python bench/bench_accuracy.py --data DIR [--budget 150] [--json FILE]          # synthetic test split
    python bench/bench_accuracy.py --idrid ../shared/data/idrid_fovea --budget 600   # IDRiD, fold 1 of 5

Arms (all at 1/4 scale, ROI 152x100, radius 20, kernel 20, same codec and data):
- ``cpu``: configs/fovea/unet_heatmap_cpu.yml (16 wide, 3x3, Adam 1e-3 cosine, batch 8);
- ``orig_arch_q``: the original U-Net (64 wide, 5x5, 87.9 M) and the original optimiser
  (Adam 5e-4 constant, batch 10), on the same 1/4-scale data; the full-scale original
  (608x400) cannot train here at all (tens of seconds per forward; see bench_models).
Each arm gets ``budget`` seconds: its epoch count is the budget divided by the wall time of
a one-epoch probe run made just before (at least one epoch: an arm whose epoch overruns the
budget reports that probe and its real time). Reported: the
epochs that fit, the wall time actually used, best validation AED, and on synthetic data
the test AED of the best checkpoint; the mean-training-position baseline for scale.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, emit, row  # noqa: E402


ARMS = {
    "cpu": ("CPU config (16 wide, 3x3)", []),
    "orig_arch_q": ("original U-Net (64 wide, 5x5) + original optimiser, 1/4 scale",
                    ["model.width=64", "model.kernel_size=5", "train.lr=0.0005", "train.lr_schedule=constant",
                     "train.batch_size=10"]),
}


def run_arm(name: str, data, out: Path, budget: float, cache, test=None, progress: bool = False) -> dict:
    """Train fold 1 of ``data`` for the epochs that fit ``budget``; score on ``test`` if given.

    The epoch cost is measured by a real one-epoch probe run (train_fold, epochs=1); when the
    budget holds fewer than two epochs the probe itself is the arm's result."""
    from gamma_kit.fovea.config import load_config
    from gamma_kit.fovea.predict import predict
    from gamma_kit.fovea.train import train_fold

    label, overrides = ARMS[name]
    cfg = load_config(REPO / "configs" / "fovea" / "unet_heatmap_cpu.yml", ["train.device=cpu", *overrides])
    cfg["train"]["epochs"] = 1
    t0 = time.perf_counter()
    m = train_fold(cfg, 1, data, out / f"{name}_probe", progress=progress, cache=cache)
    cost = time.perf_counter() - t0
    epochs = max(1, int(budget // cost))    # at least one epoch, even when it overruns the budget
    run = out / f"{name}_probe"
    wall = cost
    if epochs > 1:
        cfg["train"]["epochs"] = epochs
        t0 = time.perf_counter()
        m = train_fold(cfg, 1, data, out / name, progress=progress, cache=cache)
        wall = time.perf_counter() - t0
        run = out / name
    res = {"arm": name, "label": label, "epochs": epochs, "est_epoch_s": round(cost, 1),
           "train_wall_s": round(wall, 1), "best_val_aed": m["best_aed"], "best_epoch": m["best_epoch"],
           "last_val_aed": m["last_aed"], "n_train": m["n_train"], "n_val": m["n_val"]}
    if test is not None:
        images, gt_path = test
        p = predict([run / "fold1"], images, run / "test.csv", gt=gt_path, device="cpu", progress=False)
        res["test_aed"] = p["scores"]["aed"]
        res["n_test"] = p["scores"]["n"]
    return res


def baseline_aed(data, test_images, gt_path, cache) -> float:
    """AED of the mean canonical training fovea on the test split."""
    from gamma_kit.data import read_fovea_gt
    from gamma_kit.fovea.dataset import make_items
    from gamma_kit.fovea.demo import mean_position_baseline
    from gamma_kit.metrics import evaluate_fovea

    train = make_items({i: cache.get(i, p) for i, p in data.images.items()}, data.gt, data.gt_name)
    canon = {i: cache.get(i, p) for i, p in test_images.items()}
    pred = mean_position_baseline(train, canon)
    gt = read_fovea_gt(gt_path)
    return evaluate_fovea(pred.loc[list(gt.index)], gt, {i: c.size for i, c in canon.items()})["aed"]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="synthetic data root with a testing_GT split")
    ap.add_argument("--idrid", default=None, help="IDRiD folder (images/, fovea_GT.csv): fold 1 of 5")
    ap.add_argument("--budget", type=float, default=150.0, help="training seconds per arm")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--work", default=None, help="folder for runs (default: a temporary one)")
    ap.add_argument("--cache-dir", default=None, help="canonical image cache (reused across runs)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args(argv)
    if bool(args.data) == bool(args.idrid):
        ap.error("give exactly one of --data and --idrid")
    import warnings

    warnings.filterwarnings("ignore", message="When training, we now always track global mean")
    from gamma_kit.fovea.dataset import CanonicalCache
    from gamma_kit.fovea.train import load_training_data

    work = Path(args.work or tempfile.mkdtemp(prefix="gk_acc_"))
    from gamma_kit.fovea.config import load_config

    cpu = load_config(REPO / "configs" / "fovea" / "unet_heatmap_cpu.yml")       # every arm's scale and decode
    cache = CanonicalCache(cpu["codec"]["scale"], args.cache_dir, decode=cpu["data"]["decode"])
    test, base = None, None
    if args.data:
        from gamma_kit.data import list_images

        data = load_training_data(args.data)
        task = Path(args.data) / "task2_Fovea_localization"
        gt_path = sorted((task / "testing_GT").glob("*.xlsx"))[0]
        test_images = list_images(task / "testing" / "fundus color images")
        test = (test_images, gt_path)
        base = baseline_aed(data, test_images, gt_path, cache)
        where = f"synthetic ({len(data.images)} train/val GAMMA-size images, {len(test_images)} test)"
    else:
        idrid = Path(args.idrid)
        data = load_training_data(images=str(idrid / "images"), gt=str(idrid / "fovea_GT.csv"))
        where = f"IDRiD fold 1 of 5 ({len(data.images)} images, 4288x2848)"
    cache.load_all(data.images, progress=args.progress)
    results = [run_arm(a, data, work, args.budget, cache, test, args.progress) for a in args.arms.split(",")]
    rows = []
    for r in results:
        test_txt = f"; test AED {r['test_aed']:.4f} (n={r['n_test']})" if "test_aed" in r else ""
        rows.append(row(f"Accuracy, {where}, {args.budget:.0f} s budget: {r['label']}", "", 
                        f"val AED {r['best_val_aed']:.4f} (best, epoch {r['best_epoch'] + 1}/{r['epochs']}){test_txt}",
                        note=f"{r['epochs']} epochs (probe epoch {r['est_epoch_s']} s); trained {r['train_wall_s']} s wall; "
                             f"last-epoch val AED {r['last_val_aed']:.4f}"))
    notes = ["the full-scale original config (608x400, 87.9 M) is not an arm: it cannot train here at all "
             "(see the fovea forward / train-step rows)"]
    result = {"rows": rows, "notes": notes, "where": where, "budget_s": args.budget, "arms": results,
              "baseline_test_aed": base, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if base is not None:
        result["notes"].append(f"{where}: mean-training-position baseline test AED {base:.4f}")
    emit(result, args.json)
    return result


if __name__ == "__main__":
    main()
