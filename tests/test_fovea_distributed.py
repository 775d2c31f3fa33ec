"""Data-parallel fovea training through Paddle's own launcher, with 2 CPU processes (gloo):
``python -m paddle.distributed.launch --nproc_per_node 2 gamma_kit/fovea/__main__.py train ...``.
Compared with one process on the same data: the same learning rates and validation images,
close losses (BatchNorm statistics are per rank, so not identical), rank 0 alone writes,
and a resume across both ranks continues after the last epoch. Also ``cv --parallel-folds``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gamma_kit  # noqa: F401
from gamma_kit.fovea.demo import CPU_CONFIG
from fovea_fixtures import tiny_synth

pytestmark = pytest.mark.slow   # the fast loop: python -m pytest -q -m "not slow"

REPO = Path(__file__).resolve().parents[1]
MAIN = REPO / "gamma_kit" / "fovea" / "__main__.py"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("fovea_dp")
    tiny_synth(root / "data", 10, 2, seed=3)
    (root / "tiny.yml").write_text(f"_base_: {CPU_CONFIG}\nname: tiny\nmodel: {{width: 4}}\n"
                                   "train: {epochs: 2, batch_size: 4, device: cpu}\n")
    return root


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _launch(root: Path, tag: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir",
           str(root / f"log_{tag}"), str(MAIN), *args, "--config", str(root / "tiny.yml"),
           "--data-root", str(root / "data"), "--no-progress"]
    proc = subprocess.run(cmd, cwd=root, env=_env(), capture_output=True, text=True, timeout=600)
    logs = "".join(p.read_text() for p in sorted((root / f"log_{tag}").glob("workerlog.*")))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:] + logs[-4000:]
    return proc


def _history(run: Path, fold: int = 1) -> list[dict]:
    return json.loads((run / f"fold{fold}" / "metrics.json").read_text())["history"]


def test_two_cpu_processes_train_one_fold_like_one_process(setup):
    root = setup
    one = subprocess.run([sys.executable, str(MAIN), "train", "--fold", "1", "--config", str(root / "tiny.yml"),
                          "--data-root", str(root / "data"), "--run-dir", str(root / "one"), "--no-progress"],
                         cwd=root, env=_env(), capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    _launch(root, "dp", "train", "--fold", "1", "--run-dir", str(root / "dp"))
    h1, h2 = _history(root / "one"), _history(root / "dp")
    assert [r["epoch"] for r in h2] == [0, 1]
    assert [r["lr"] for r in h2] == [r["lr"] for r in h1]                  # same global batches and schedule
    np.testing.assert_allclose(h2[0]["train_loss"], h1[0]["train_loss"], rtol=0.1)
    assert all(np.isfinite(r["val_aed"]) for r in h2)
    assert sorted(p.name for p in (root / "dp").iterdir()) == ["fold1", "splits.json"]   # rank 0 alone wrote
    assert (root / "dp" / "fold1" / "best.pdparams").is_file()
    # resume across both ranks: a third epoch after the two saved ones (a resume adds epochs to a
    # constant learning rate only; the cosine run above is not stretched)
    constant = ["--set", "train.lr_schedule=constant"]
    _launch(root, "c2", "train", "--fold", "1", "--run-dir", str(root / "dpc"), *constant)
    h2 = _history(root / "dpc")
    _launch(root, "resume", "train", "--fold", "1", "--run-dir", str(root / "dpc"), "--resume", "--epochs", "3",
            *constant)
    h3 = _history(root / "dpc")
    assert [r["epoch"] for r in h3] == [0, 1, 2] and h3[:2] == h2


def test_parallel_folds_one_fold_per_process(setup):
    root = setup
    _launch(root, "pf", "cv", "--folds", "1,2", "--parallel-folds", "--run-dir", str(root / "pf"))
    cv = json.loads((root / "pf" / "cv_metrics.json").read_text())
    assert sorted(cv["folds"]) == ["1", "2"] and np.isfinite(cv["mean_best_aed"])
    for k in (1, 2):
        assert len(_history(root / "pf", k)) == 2
