"""bench/bench_fovea_cv.py on a tiny cross-validation run: every variant is scored on every
fold, the ``fixed`` variant reproduces the validation AED that training logged, and the
table, the per-photo JSON and the figure are written. Nothing timed is asserted."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import bench_fovea_cv  # noqa: E402

from fovea_fixtures import tiny_synth  # noqa: E402
from gamma_kit.fovea.config import load_config  # noqa: E402
from gamma_kit.fovea.demo import CPU_CONFIG  # noqa: E402
from gamma_kit.fovea.roi import GUARD_MIN_PX, GUARD_SIGMAS  # noqa: E402
from gamma_kit.fovea.train import cross_validate, load_training_data  # noqa: E402


@pytest.mark.slow
def test_bench_scores_every_variant_and_matches_training(tmp_path):
    data = tiny_synth(tmp_path / "data", 10, 0, seed=8)
    cfg = load_config(CPU_CONFIG, ["model.width=4", "train.epochs=3", "train.batch_size=4", "train.device=cpu",
                                   "train.snapshot_every=1", "roi.anchor=fixed", "train.average_last=0"])
    run = tmp_path / "run"
    cross_validate(cfg, load_training_data(data), run, progress=False, folds=[1, 2])
    task = data / "task2_Fovea_localization" / "training"
    out = tmp_path / "res" / "cv.md"
    rc = bench_fovea_cv.main(["--run", str(run), "--images", str(task / "fundus color images"),
                              "--gt", str(next(task.glob("*GT*.xlsx"))), "--last-k", "2", "--from-epoch", "1",
                              "--out-md", str(out), "--json", str(tmp_path / "res" / "cv.json"),
                              "--keep", str(tmp_path / "keep")])
    assert rc == 0
    res = json.loads((tmp_path / "res" / "cv.json").read_text())
    table = res["table"]
    assert set(table) == set(bench_fovea_cv.VARIANTS)
    assert all(r["n"] == 4 for r in table.values())                       # 2 photos held out by each of 2 folds
    # the fixed chain is training's validation: the same AED at every scored epoch
    assert all(f["logged_variant"] == "fixed" and f["logged_diff"] < 1e-6 for f in res["folds"].values())
    for r in table.values():                                              # the best epoch is one of the scored ones
        assert r["best_aed"] <= r["last_aed"] + 1e-12
    assert len(res["per_image_averaged_ed_px"]["disc+guard250"]) == 4
    # with 2 snapshots averaged, the averaged weights are not the last epoch's
    assert table["fixed"]["avg_aed"] != table["fixed"]["last_aed"]
    for f in res["folds"].values():
        assert f["moved"]["fixed"] == f["moved"]["fixed_prior"] == 0
        assert f["moved"]["auto0"] <= f["moved"]["auto1"] <= f["moved"]["auto2"]
        assert f["guard_auto"] == pytest.approx(max(GUARD_MIN_PX, GUARD_SIGMAS * max(f["spread"])))
    text = out.read_text()
    assert "| fixed |" in text and "averaged AED" in text and out.with_suffix(".png").stat().st_size > 1000
    # a second run reuses the kept per-fold results
    assert bench_fovea_cv.main(["--run", str(run), "--images", str(task / "fundus color images"),
                                "--gt", str(next(task.glob("*GT*.xlsx"))), "--last-k", "2", "--from-epoch", "1",
                                "--keep", str(tmp_path / "keep")]) == 0
