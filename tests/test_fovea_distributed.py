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
    assert json.loads(proc.stdout)["n_train"] == \
        json.loads((launched / "fold1" / "metrics.json").read_text())["n_train"]
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



def _buffers_on_two_ranks() -> dict:
    """Run on each of 2 ranks (procs.spawn_local): BatchNorm statistics made different per rank, then
    broadcast_buffers; the sums show whether every rank holds rank 0's values."""
    import paddle

    from gamma_kit.fovea.parallel import broadcast_buffers, init_parallel, mean_over_ranks, sum_over_ranks

    rank, world = init_parallel()
    bn = paddle.nn.BatchNorm2D(3)
    stats = [bn._mean, bn._variance]
    for t in stats:
        t.set_value(paddle.full(t.shape, float(rank + 1)))
    before = float(sum(t.sum() for t in stats))
    spread_before = abs(mean_over_ranks(before, world) - before)
    broadcast_buffers(bn, world)
    after = float(sum(t.sum() for t in stats))
    weight = float(bn.weight.sum())                      # trained parameters are not touched
    return {"rank": rank, "after": after, "weight": weight, "spread_before": spread_before,
            "spread_after": abs(mean_over_ranks(after, world) - after), "ranks_summed": sum_over_ranks(rank + 1, world)}


def test_broadcast_buffers_gives_every_rank_rank_0s_batchnorm_statistics():
    """What the shared validation rests on: after broadcast_buffers every rank holds rank 0's running
    statistics (they differed before; Paddle keeps them as parameters without gradient, not buffers),
    and sum_over_ranks adds every rank's value (1 + 2)."""
    from gamma_kit.procs import spawn_local

    out = spawn_local(_buffers_on_two_ranks, {}, 2)
    assert out["rank"] == 0 and out["after"] == 6.0     # 3 means of 1 + 3 variances of 1: rank 0's (rank 1 had 12)
    assert out["weight"] == 3.0
    assert out["spread_before"] == 3.0 and out["spread_after"] == 0.0 and out["ranks_summed"] == 3.0

def _rank_0_late(sleep_s: float) -> dict:
    """Run on each of 2 ranks: rank 0 arrives at the barrier ``sleep_s`` late."""
    import os
    import time

    from gamma_kit.fovea.parallel import barrier, init_parallel
    from gamma_kit.procs import SYNC_ENV

    rank, world = init_parallel()
    t0 = time.monotonic()
    if rank == 0:
        time.sleep(sleep_s)
    barrier(world, "late")
    return {"waited": time.monotonic() - t0, "sync": os.environ[SYNC_ENV]}


def test_a_rank_waits_at_the_barrier_as_long_as_the_others_take():
    """gloo's barrier gives up after about 30 s: ``cv --procs 2 --parallel-folds`` with 3 folds failed
    when rank 1, its folds done, waited for rank 0's third fold. The ranks of --procs meet through
    marker files in their job's folder, which the parent removes afterwards."""
    from gamma_kit.procs import spawn_local

    out = spawn_local(_rank_0_late, {"sleep_s": 40.0}, 2)
    assert out["waited"] >= 40.0
    assert not Path(out["sync"]).exists()


def test_procs_2_validation_is_rank_0s_model_on_every_photo(setup):
    """With 2 processes each scores half of the validation photos on rank 0's BatchNorm statistics
    (broadcast first) and the distances are summed: the logged AED of every epoch equals what one
    process gets from rank 0's saved weights of that epoch on all the photos (bench_fovea_cv re-scores
    the snapshots and reports the largest difference; without the broadcast, rank 1's photo is scored
    on its own statistics and the difference is 0.02 here)."""
    root = setup
    _kit(root, "cv", "--folds", "1", "--run-dir", str(root / "shared_val"), "--procs", "2", "--epochs", "6",
         "--lr", "0.01", "--set", "train.snapshot_every=1", "roi.anchor=fixed", "train.average_last=0")
    task = root / "data" / "task2_Fovea_localization" / "training"
    out = root / "shared_val_scores"
    # one thread, as each rank ran: the barely trained model's flat peaks move with the last float bit
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "bench_fovea_cv.py"), "--run", str(root / "shared_val"),
                           "--images", str(task / "fundus color images"), "--gt", str(next(task.glob("*GT*.xlsx"))),
                           "--last-k", "1", "--from-epoch", "1", "--out-md", str(out / "cv.md"), "--json",
                           str(out / "cv.json")], cwd=root, env={**_env(), "MKL_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    folds = json.loads((out / "cv.json").read_text())["folds"]
    assert folds and all(f["logged_diff"] < 1e-6 for f in folds.values()), folds
