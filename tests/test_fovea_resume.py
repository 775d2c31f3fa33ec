"""Issue 17 items 1-3 for fovea train and cv: a run is resumable from its last complete checkpoint
set whatever stops it, one run at a time per fold folder, and a resume never changes the user's
files silently.

- A stop before every write of a run (run_dir.fault_hook), resumed, gives the numbers of an
  uninterrupted run, exactly; so does a full disk in the middle of a set.
- Two real processes: a training paused in its first epoch holds the fold; a second training into
  it is refused in one line naming the first; after a SIGKILL of the first, a resume takes over
  its stale lock (one line) and removes what the kill left (one line).
- Resume keeps the run's config: an edited fold config.yml, another --config, a longer cosine
  schedule or a shorter run are refused in one line naming the keys and values; a constant
  learning rate may train more epochs (said in one line); older flat run folders are refused for
  resume and still read by predict.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.slow   # the fast loop: python -m pytest -q -m "not slow"

import gamma_kit  # noqa: F401  (threads before paddle)
from gamma_kit.fovea import run_dir as run_dir_mod
from gamma_kit.fovea.checkpoints import find_checkpoints, load_checkpoint, read_state
from gamma_kit.fovea.config import load_config
from gamma_kit.fovea.dataset import CanonicalCache
from gamma_kit.fovea.demo import CPU_CONFIG
from gamma_kit.fovea.run_dir import FoldFolder
from gamma_kit.fovea.train import load_training_data, train_fold
from gamma_kit.safety import RunInUse, RunLock
from fovea_fixtures import tiny_synth

REPO = Path(__file__).resolve().parents[1]
TINY = ["model.width=4", "train.batch_size=4", "train.device=cpu", "train.epochs=2"]


class _Stop(BaseException):
    """What the fault hook raises: not an Exception, so nothing in the kit catches it (like a kill)."""


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return tiny_synth(tmp_path_factory.mktemp("fovea_resume") / "data", 10, 2, seed=11)


@pytest.fixture(scope="module")
def data(synth):
    return load_training_data(synth)


@pytest.fixture(scope="module")
def cache():
    return CanonicalCache.for_config(_cfg())    # the CPU config's scale and decode: every run decodes them once


def _cfg(*extra: str) -> dict:
    return load_config(CPU_CONFIG, TINY + list(extra))


def _train(run: Path, data, cache, *extra: str, **kw) -> dict:
    return train_fold(_cfg(*extra), 1, data, run, progress=False, cache=cache, **kw)


def _weights(fold: Path) -> dict:
    out = {}
    for which in ("best", "last", "averaged"):
        state = read_state(find_checkpoints([fold], which)[0])
        out.update({f"{which}/{k}": np.asarray(v.numpy() if hasattr(v, "numpy") else v) for k, v in state.items()})
    return out


def _leftovers(run: Path) -> list[str]:
    fold = run / "fold1"
    sets = sorted(p.name for p in fold.glob("ckpt-*"))
    return [p.name for p in run.rglob("*.tmp")] + [p.name for p in run.glob("*.lock")] + \
        [s for s in sets if s != FoldFolder(fold).read_last(False).folder.name]


@pytest.fixture(scope="module")
def whole(data, cache, tmp_path_factory):
    """An uninterrupted run: the labels of its writes, its metrics and weights."""
    run = tmp_path_factory.mktemp("whole") / "run"
    labels: list[str] = []
    run_dir_mod.fault_hook = labels.append
    try:
        m = _train(run, data, cache)
    finally:
        run_dir_mod.fault_hook = None
    return labels, m, _weights(run / "fold1")


def test_a_set_is_committed_by_its_pointer_after_its_files(whole):
    labels = whole[0]
    for n in (1, 2):
        at = {lab: k for k, lab in enumerate(labels)}
        s = f"ckpt-00{n}"
        assert at[f"{s}/model.pdparams"] < at[f"{s}/model.pdopt"] < at[f"{s}/state.json"]
        pointer = [k for k, lab in enumerate(labels) if lab == "last_checkpoint.json"][n - 1]
        assert at[f"{s}/state.json"] < pointer
        if f"{s}/best.pdparams" in at:
            assert at[f"{s}/model.pdopt"] < at[f"{s}/best.pdparams"] < at[f"{s}/state.json"]
    assert labels.index("remove ckpt-001") > [k for k, lab in enumerate(labels) if lab == "last_checkpoint.json"][1]
    assert labels[0] == "config.yml" and labels[-3:] == ["averaged.pdparams", "metrics.csv", "metrics.json"]
    assert labels.index("snapshots/epoch001.pdparams") < labels.index("last_checkpoint.json")


def test_a_stop_before_any_write_resumes_to_the_numbers_of_an_uninterrupted_run(whole, data, cache, tmp_path):
    labels, ref, ref_weights = whole
    for point, label in enumerate(labels):
        run = tmp_path / f"run{point}"
        count = [0]

        def stop(lab, count=count, point=point):
            count[0] += 1
            if count[0] > point:
                raise _Stop(lab)

        run_dir_mod.fault_hook = stop
        try:
            with pytest.raises(_Stop):
                _train(run, data, cache)
        finally:
            run_dir_mod.fault_hook = None
        fold = FoldFolder(run / "fold1")
        if fold.has_checkpoint():
            m = _train(run, data, cache, resume=True)
        else:                            # stopped before the first set: nothing to resume, a new start works
            with pytest.raises(ValueError, match="nothing to resume"):
                _train(run, data, cache, resume=True)
            m = _train(run, data, cache)
        assert m["history"] == [{**r, "seconds": h["seconds"]} for r, h in zip(ref["history"], m["history"])], label
        assert (m["best_epoch"], m["best_aed"], m["averaged_aed"]) == \
            (ref["best_epoch"], ref["best_aed"], ref["averaged_aed"]), label
        weights = _weights(run / "fold1")
        assert all(np.array_equal(weights[k], v) for k, v in ref_weights.items()), label
        assert not _leftovers(run), (label, _leftovers(run))
        rows = (run / "fold1" / "metrics.csv").read_text().splitlines()
        assert [r.split(",")[1] for r in rows[1:]] == [f"{r['train_loss']:.8g}" for r in ref["history"]], label


def test_a_full_disk_in_a_set_keeps_the_previous_one(data, cache, tmp_path, whole):
    import errno

    run = tmp_path / "run"

    def full(label):
        if label == "ckpt-002/model.pdopt":
            raise OSError(errno.ENOSPC, "No space left on device", str(run / "fold1" / label))

    run_dir_mod.fault_hook = full
    try:
        with pytest.raises(ValueError) as err:
            _train(run, data, cache, resume_command="CMD")
    finally:
        run_dir_mod.fault_hook = None
    msg = str(err.value)
    assert msg.startswith(f"output {run / 'fold1' / 'ckpt-002' / 'model.pdopt'}: No space left on device (the disk is full); "
                          f"epoch 1 is saved in {run / 'fold1'}") and msg.endswith("resume with CMD --resume when "
                                                                                    "there is room"), msg
    assert "killed" not in msg and not (run / "fold1" / "ckpt-002").exists() and not (run / "fold1.lock").exists()
    m = _train(run, data, cache, resume=True)
    assert [r["train_loss"] for r in m["history"]] == [r["train_loss"] for r in whole[1]["history"]]


def test_a_better_epoch_between_sets_reaches_best_with_the_next_set(data, cache, tmp_path, whole):
    run = tmp_path / "run"
    labels: list[str] = []
    run_dir_mod.fault_hook = labels.append
    try:
        m = _train(run, data, cache, checkpoint_every=5)      # one set, after the last epoch
    finally:
        run_dir_mod.fault_hook = None
    assert [lab for lab in labels if lab.startswith("ckpt")] == \
        ["ckpt-002/model.pdparams", "ckpt-002/model.pdopt", "ckpt-002/best.pdparams", "ckpt-002/state.json"]
    assert m["best_epoch"] == whole[1]["best_epoch"]
    best = read_state(run / "fold1" / "best.pdparams")
    assert all(np.array_equal(np.asarray(best[k]), whole[2][f"best/{k}"]) for k in best)


# ---------------------------------------------------------------------------------------------- two processes

_PAUSED = """
import sys, time
from pathlib import Path
import gamma_kit.fovea.run_dir as run_dir
def pause(label, marker=Path(sys.argv[1])):
    if label == "metrics.csv" and not marker.exists():      # epoch 1's set is committed
        marker.write_text("paused")
        time.sleep(120)
run_dir.fault_hook = pause
from gamma_kit.fovea.__main__ import main
sys.exit(main(sys.argv[2:]))
"""


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_two_trainings_in_one_fold_and_a_killed_ones_stale_lock(synth, tmp_path):
    (tmp_path / "tiny.yml").write_text(f"_base_: {CPU_CONFIG}\nname: tiny\nmodel: {{width: 4}}\n"
                                       "train: {epochs: 2, batch_size: 4, device: cpu}\n")
    run, marker = tmp_path / "run", tmp_path / "paused"
    args = ["train", "--fold", "1", "--config", str(tmp_path / "tiny.yml"), "--data-root", str(synth),
            "--run-dir", str(run), "--no-progress"]
    first = subprocess.Popen([sys.executable, "-c", _PAUSED, str(marker), *args], cwd=tmp_path, env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not marker.exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert marker.exists(), first.communicate()
        for extra in ([], ["--resume"], ["--set-aside-old-run"]):
            second = subprocess.run([sys.executable, "-m", "gamma_kit.fovea", *args, *extra], cwd=tmp_path,
                                    env=_env(), capture_output=True, text=True, timeout=300)
            lines = [ln for ln in second.stderr.splitlines() if ln.strip()]
            assert second.returncode == 2 and len(lines) == 1, second.stderr
            assert lines[0].startswith(f"error: {run / 'fold1'} is in use by another training (pid {first.pid} on "
                                       f"{socket.gethostname()}, started "), lines[0]
            assert "train --fold 1 --config " in lines[0]                             # names its command
        assert not list(tmp_path.glob("run/fold1.old-*"))                          # nothing set aside
    finally:
        first.send_signal(signal.SIGKILL)                                          # a kill at any instant
        first.communicate(timeout=60)
    assert (run / "fold1.lock").is_file()                                          # left by the killed process
    resumed = subprocess.run([sys.executable, "-m", "gamma_kit.fovea", *args, "--resume"], cwd=tmp_path, env=_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    notes = [ln for ln in resumed.stdout.splitlines() if ln.startswith("note:")]
    assert len(notes) == 1 and notes[0].startswith(f"note: {run / 'fold1'}: took over the lock of an earlier "
                                                   f"training that is no longer running (pid {first.pid} on ")
    assert [r["epoch"] for r in json.loads((run / "fold1" / "metrics.json").read_text())["history"]] == [0, 1]
    assert not (run / "fold1.lock").exists() and not list(run.rglob("*.tmp"))


def test_a_second_cross_validation_into_a_run_in_use_is_refused(synth, tmp_path):
    run, marker = tmp_path / "run", tmp_path / "held"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom gamma_kit.safety import RunLock\n"
                               "RunLock(sys.argv[1], 'cross-validation').acquire()\nopen(sys.argv[2], 'w').close()\n"
                               "time.sleep(600)", str(run), str(marker)], cwd=tmp_path, env=_env())
    try:
        deadline = time.time() + 60
        while not marker.exists() and holder.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert marker.exists()
        second = subprocess.run([sys.executable, "-m", "gamma_kit.fovea", "cv", "--config", CPU_CONFIG, "--data-root",
                                 str(synth), "--run-dir", str(run), "--no-progress", "--set", "train.device=cpu"],
                                cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
        lines = [ln for ln in second.stderr.splitlines() if ln.strip()]
        assert second.returncode == 2 and len(lines) == 1, second.stderr
        assert lines[0].startswith(f"error: {run} is in use by another cross-validation (pid {holder.pid} on "
                                   f"{socket.gethostname()}, started "), lines[0]
        assert not list(run.glob("fold*"))                                         # refused before any work
    finally:
        holder.kill()
        holder.wait(30)


def test_a_lock_of_another_host_or_a_live_process_is_refused(tmp_path):
    folder = tmp_path / "fold1"
    lock = tmp_path / "fold1.lock"
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "2026-01-01 00:00:00"}))
    with pytest.raises(RunInUse, match=r"in use by another training \(pid 1 on elsewhere.*delete .*fold1\.lock"):
        RunLock(folder, "training").acquire()
    lock.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "started": "x"}))  # alive
    with pytest.raises(RunInUse, match=f"pid {os.getppid()} on"):
        RunLock(folder, "training").acquire()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "started": "x"}))
    with RunLock(folder, "training") as held:
        assert held.note.startswith(f"note: {folder}: took over the lock") and lock.is_file()
        with pytest.raises(RunInUse, match=f"pid {os.getpid()} on"):             # flock: even this process
            RunLock(folder, "training").acquire()
    assert not lock.exists()


# ---------------------------------------------------------------------------------------------- resume settings

def test_an_edited_fold_config_is_refused_naming_the_keys(data, cache, tmp_path):
    run = tmp_path / "run"
    _train(run, data, cache)
    path = run / "fold1" / "config.yml"
    edited = path.read_text().replace("width: 4", "width: 8").replace("lr: 0.001", "lr: 0.002")
    path.write_text(edited)
    with pytest.raises(ValueError) as err:
        _train(run, data, cache, resume=True)
    assert f"{path} was edited after the run wrote it (model.width 4 -> 8, train.lr 0.001 -> 0.002)" in str(err.value)
    assert path.read_text() == edited                                        # the user's edit is left alone
    with pytest.raises(ValueError, match="config.yml was edited"):           # also when --config says the same
        _train(run, data, cache, "model.width=8", resume=True)


def test_a_run_written_before_new_config_keys_resumes(data, cache, tmp_path):
    """A run whose config.yml and checkpoint state were written before ``roi.prior_spread`` and
    ``roi.margin_sigmas`` existed (issue 19.3; the CPU config's roi then: disc, 250 px) resumes with
    the settings it had: the missing keys are read as their defaults (what that run did), not as an
    edit. The kit before this read them as edits and refused the IDRiD folds it had trained."""
    old = ("train.lr_schedule=constant", "roi.anchor=disc", "roi.max_from_prior=250", "roi.margin_sigmas=2.0")
    run = tmp_path / "run"
    _train(run, data, cache, *old)
    fold = run / "fold1"
    cfg = yaml.safe_load((fold / "config.yml").read_text())
    assert cfg["roi"].pop("prior_spread") is not None and cfg["roi"].pop("margin_sigmas") == 2.0
    (fold / "config.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    for state in fold.glob("ckpt-*/state.json"):
        st = json.loads(state.read_text())
        st["config"]["roi"] = {k: v for k, v in st["config"]["roi"].items()
                               if k not in ("prior_spread", "margin_sigmas")}
        state.write_text(json.dumps(st))
    m = _train(run, data, cache, *old, "train.epochs=3", resume=True)
    assert [r["epoch"] for r in m["history"]] == [0, 1, 2]


def test_another_config_on_resume_is_refused_with_the_runs_own_values(data, cache, tmp_path):
    run = tmp_path / "run"
    _train(run, data, cache)
    before = (run / "fold1" / "config.yml").read_bytes()
    with pytest.raises(ValueError) as err:
        _train(run, data, cache, "model.width=8", "loss.variance_reward=0.001", resume=True)
    assert "differs from the one" in str(err.value)
    assert "loss.variance_reward 0.0005 -> 0.001, model.width 4 -> 8" in str(err.value)
    assert (run / "fold1" / "config.yml").read_bytes() == before


def test_more_epochs_on_resume(data, cache, tmp_path, capsys):
    run = tmp_path / "run"
    _train(run, data, cache)
    with pytest.raises(ValueError, match=r"follows a cosine learning-rate schedule set for 2 epochs .*not stretched; "
                                         r"resume with --epochs 2, or .*--init-from "):
        _train(run, data, cache, "train.epochs=4", resume=True)
    with pytest.raises(ValueError, match="was set for 2 epochs; a run is not shortened"):
        _train(run, data, cache, "train.epochs=1", resume=True)
    const = tmp_path / "const"
    _train(const, data, cache, "train.lr_schedule=constant")
    capsys.readouterr()
    m = _train(const, data, cache, "train.lr_schedule=constant", "train.epochs=4", "train.snapshot_every=1",
               resume=True)
    notes = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("note:")]
    assert notes == [f"note: resuming {const / 'fold1'} with train.epochs 2 -> 4, train.snapshot_every 0 -> 1 "
                     "(config.yml updated)"]
    assert [r["epoch"] for r in m["history"]] == [0, 1, 2, 3] and {r["lr"] for r in m["history"]} == {0.001}
    assert load_config(const / "fold1" / "config.yml")["train"]["epochs"] == 4


def test_an_older_flat_run_is_read_but_not_resumed(data, cache, tmp_path):
    run = tmp_path / "run"
    _train(run, data, cache)
    fold = run / "fold1"
    last = FoldFolder(fold).read_last()
    os.replace(last.weights, fold / "last.pdparams")                   # what older versions wrote
    os.replace(last.optimizer, fold / "last.pdopt")
    (fold / "last_state.json").write_text(json.dumps({k: last.state[k] for k in ("epoch", "history")}))
    for p in (last.folder / "state.json", fold / "last_checkpoint.json"):
        p.unlink()
    last.folder.rmdir()
    assert find_checkpoints([run], "last") == [fold / "last.pdparams"]
    load_checkpoint(fold / "last.pdparams")
    with pytest.raises(ValueError, match="written by an older gamma_kit .* cannot be resumed; start again with "
                                         "--set-aside-old-run, or fine-tune from it with --init-from "):
        _train(run, data, cache, resume=True)


def test_folds_set_aside_are_not_part_of_an_ensemble(data, cache, tmp_path):
    run = tmp_path / "run"
    _train(run, data, cache)
    _train(run, data, cache, set_aside_old_run=True)
    assert [p.relative_to(run).as_posix() for p in find_checkpoints([run], "best")] == ["fold1/best.pdparams"]
    assert len(list(run.glob("fold1.old-*"))) == 1
