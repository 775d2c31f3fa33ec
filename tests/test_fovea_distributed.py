"""Data-parallel fovea training through Paddle's own launcher, with 2 CPU processes (gloo):
``python -m paddle.distributed.launch --nproc_per_node 2 gamma_kit/fovea/__main__.py train ...``.
Compared with one process on the same data: the same learning rates and validation images,
close losses (BatchNorm statistics are per rank, so not identical), rank 0 alone writes,
and a resume across both ranks continues after the last epoch. Also ``cv --parallel-folds``."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
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


@pytest.fixture(scope="module")
def launched(setup):
    """Fold 1 trained by 2 processes of paddle.distributed.launch (run folder ``dp``)."""
    _launch(setup, "dp", "train", "--fold", "1", "--run-dir", str(setup / "dp"))
    return setup / "dp"


def test_two_cpu_processes_train_one_fold_like_one_process(setup, launched):
    root = setup
    one = subprocess.run([sys.executable, str(MAIN), "train", "--fold", "1", "--config", str(root / "tiny.yml"),
                          "--data-root", str(root / "data"), "--run-dir", str(root / "one"), "--no-progress"],
                         cwd=root, env=_env(), capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
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


def _kit(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(MAIN), *args, "--config", str(root / "tiny.yml"), "--data-root",
                           str(root / "data"), "--no-progress"], cwd=root, env=_env(), capture_output=True,
                          text=True, timeout=600)
    assert not check or proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_procs_2_trains_as_the_launcher_does(setup, launched):
    """--procs 2 starts the two processes itself (no launcher, no launcher logs) and trains as
    paddle.distributed.launch --nproc_per_node 2 does: the same learning rates and split, losses equal
    to float32 rounding; nothing on stderr."""
    root = setup
    proc = _kit(root, "train", "--fold", "1", "--run-dir", str(root / "spawned"), "--procs", "2")
    mine, theirs = _history(root / "spawned"), _history(launched)
    assert [r["lr"] for r in mine] == [r["lr"] for r in theirs] and len(mine) == 2
    # not bit for bit: the two start Paddle differently (the launcher's environment and flags), and float32
    # sums of the all-reduced gradients drift apart in the 6th digit within two epochs (3.7227806 / 3.7227821)
    np.testing.assert_allclose([r["train_loss"] for r in mine], [r["train_loss"] for r in theirs], rtol=1e-3)
    assert json.loads(proc.stdout)["n_train"] == json.loads((launched / "fold1" / "metrics.json").read_text())["n_train"]
    assert proc.stderr.strip() == "", proc.stderr[-2000:]          # no Paddle banners, gloo INFO lines or warnings
    assert sorted(p.name for p in (root / "spawned").iterdir()) == ["fold1", "splits.json"]


def _quiet_failure(proc: subprocess.CompletedProcess, code: int, text: str) -> None:
    err = proc.stderr.strip()
    assert proc.returncode == code, err[-2000:]
    assert err.count("\n") == 0 and text in err, err[-2000:]      # one line
    for noise in ("Traceback", "FatalError", "leaked", "Error Message Summary"):
        assert noise not in proc.stdout + proc.stderr


def test_procs_2_refusal_is_one_line(setup):
    """A refusal on rank 0 (a run folder that holds a run) stops the other process too: one line, exit 2."""
    root = setup
    _kit(root, "train", "--fold", "1", "--run-dir", str(root / "held"), "--procs", "1", "--epochs", "1")
    proc = _kit(root, "train", "--fold", "1", "--run-dir", str(root / "held"), "--procs", "2", check=False)
    _quiet_failure(proc, 2, "already holds a run")
    bad = _kit(root, "train", "--fold", "1", "--run-dir", str(root / "x"), "--procs", "3", check=False)
    _quiet_failure(bad, 2, "--procs 3 does not divide the batch size 4")


def test_procs_2_ctrl_c_then_resume_gives_the_numbers_of_an_uninterrupted_run(setup):
    """Ctrl-C reaches the parent (the processes it started are in their own process group): it
    passes one SIGINT on, both stop at the same step, rank 0 names the resume command (exit 130),
    and --resume continues to the losses of a run that was never stopped."""
    root = setup
    epochs = ["--epochs", "6", "--procs", "2"]
    _kit(root, "train", "--fold", "1", "--run-dir", str(root / "whole"), *epochs)
    cmd = [sys.executable, str(MAIN), "train", "--fold", "1", "--run-dir", str(root / "cut"), *epochs, "--config",
           str(root / "tiny.yml"), "--data-root", str(root / "data"), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=root, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    log = root / "cut" / "fold1" / "metrics.csv"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and \
            not (log.is_file() and len(log.read_text().splitlines()) >= 2):      # header + the first epoch
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    _quiet_failure(subprocess.CompletedProcess(cmd, proc.returncode, out, err), 130, "--resume")
    assert "interrupted in epoch" in err
    assert not [p for p in (root / "cut" / "fold1").iterdir() if p.name.startswith(".")]   # no temp files left
    _kit(root, "train", "--fold", "1", "--run-dir", str(root / "cut"), *epochs, "--resume")
    same = [{k: v for k, v in r.items() if k != "seconds"} for r in _history(root / "cut")]
    assert same == [{k: v for k, v in r.items() if k != "seconds"} for r in _history(root / "whole")]
