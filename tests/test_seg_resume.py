"""Issue 17 items 1-3 for seg train: resumable from the last complete ``iter_<n>/`` whatever stops it,
one training per save dir, and a resume that keeps the run's config.

- A training killed (``os._exit``, as SIGKILL: no clean-up, a half-written temporary file left,
  the lock file left) before each of its checkpoint writes: the next start takes over the stale
  lock in one line, removes the temporary file and names an incomplete ``iter_<n>/`` in one line,
  and resumes from the last complete checkpoint, which is byte for byte the uninterrupted run's.
  (PaddleSeg's loop restarts its data order on resume, its own ``--resume_model`` too, so the
  losses after a resume are not those of an uninterrupted run; what the kit guarantees is the state
  resumed from.)
- Two processes: a second training into a save dir in use is refused in one line naming the first.
- --resume-model with another config (other --opts, another --iters) is refused naming the keys,
  and the run's model.yml is left as it was.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gamma_kit.seg.run_dir import latest_checkpoint
from seg_fixtures import make_prepared, small_transforms

pytestmark = pytest.mark.slow   # the fast loop: python -m pytest -q -m "not slow"

# seg train with the k-th paddle.save of the run (PaddleSeg's checkpoint writes, through the kit's
# atomic writer) stopped the way SIGKILL stops it: a part of the temporary file written, no clean-up
_KILLED_AT = """
import os, sys
from pathlib import Path
import gamma_kit.safety as safety
from gamma_kit.seg.__main__ import main
stop_at, calls = int(sys.argv[1]), [0]
real = safety.atomic_save_paddle
def save(obj, path):
    calls[0] += 1
    if calls[0] == stop_at:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / f".{path.name}.x1y2z3.tmp").write_bytes(b"half a checkpoint")
        os._exit(137)
    return real(obj, path)
safety.atomic_save_paddle = save
sys.exit(main(sys.argv[2:]))
"""


def _train_args(save_dir: str, iters: int = 4, *extra: str) -> list[str]:
    return ["train", "--config", "liteunet_gamma_cpu.yml", "--save-dir", save_dir, "--iters", str(iters),
            "--batch-size", "2", "--no-eval", "--device", "cpu", "--log-iters", "1", "--save-interval", "2",
            "--seed", "0", *extra, "--opts", small_transforms(32)[0]]


def _seg(cwd: Path, *args: str, code: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "gamma_kit.seg", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Tiny prepared data at work/data/seg_prepared (the configs' dataset_root), and an uninterrupted run."""
    w = tmp_path_factory.mktemp("seg_resume")
    make_prepared(w, n_train=4, n_test=1, size=(160, 128))
    res = _seg(w, *_train_args("reference"))
    assert res.returncode == 0, res.stderr[-2000:]
    return w


@pytest.mark.parametrize("stop_at,resume_from", [(1, None), (2, None), (3, "iter_2"), (4, "iter_2")])
def test_a_kill_before_any_checkpoint_write_resumes_from_the_last_complete_one(work, stop_at, resume_from):
    run = f"killed{stop_at}"
    res = _seg(work, str(stop_at), *_train_args(run), code=_KILLED_AT)
    assert res.returncode == 137
    assert (work / f"{run}.lock").is_file()                        # the kill left its lock file
    found = latest_checkpoint(work / run)
    assert (found.name if found else None) == resume_from
    if found is None:
        return
    for name in ("model.pdparams", "model.pdopt"):                 # the state resumed from is the run's own
        assert (found / name).read_bytes() == (work / "reference" / found.name / name).read_bytes()
    res = _seg(work, *_train_args(run, 4, "--resume-model", str(found)))
    assert res.returncode == 0, res.stderr[-2000:]
    notes = [ln for ln in res.stdout.splitlines() + res.stderr.splitlines() if ln.startswith("note:")]
    assert any("took over the lock of an earlier training that is no longer running" in ln for ln in notes)
    cleaned = [ln for ln in notes if "temporary file(s) an interrupted write left" in ln]
    assert len(cleaned) == 1
    if stop_at == 4:
        assert "iter_4 is incomplete (a write was interrupted) and will not be resumed from" in cleaned[0]
    assert not list((work / run).rglob("*.tmp")) and not (work / f"{run}.lock").exists()
    assert latest_checkpoint(work / run).name == "iter_4" and (work / run / "last_model" / "model.pdparams").is_file()


def test_a_second_training_into_a_save_dir_in_use_is_refused(work):
    first = subprocess.Popen([sys.executable, "-m", "gamma_kit.seg", *_train_args("busy", 100000)], cwd=work,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 120
        while not (work / "busy.lock").is_file() and time.time() < deadline and first.poll() is None:
            time.sleep(0.2)
        assert (work / "busy.lock").is_file(), "the first training never took its lock"
        res = _seg(work, *_train_args("busy", 4, "--set-aside-old-run"))
        assert res.returncode == 2 and res.stderr.count("\n") == 1
        assert res.stderr.startswith(f"error: {Path('busy')} is in use by another training (pid {first.pid} on ")
        assert not list(work.glob("busy.old-*"))                    # refused before setting anything aside
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)


def test_resume_with_another_config_is_refused_naming_the_keys(work):
    yml = (work / "reference" / "model.yml").read_bytes()
    ckpt = str(work / "reference" / "iter_2")
    res = _seg(work, *_train_args("reference", 6, "--resume-model", ckpt))
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert "this config differs from the one reference was trained with" in res.stderr and " in iters;" in res.stderr
    res = _seg(work, *_train_args("reference", 4, "--resume-model", ckpt, "--learning-rate", "0.5"))
    assert res.returncode == 2 and "lr_scheduler.learning_rate" in res.stderr
    assert (work / "reference" / "model.yml").read_bytes() == yml
