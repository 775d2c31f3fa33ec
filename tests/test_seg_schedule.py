"""``--iters`` means the same on every route (issue 16.11): the kit's ``seg train --iters N`` and
``tools/train.py --iters N`` (and PaddleSeg 2.9.1's own, when the vendor tree is there) train the
config's learning-rate schedule as written; ``--fit-schedule`` is the kit's explicit way to end a
warmup + cosine schedule at N, and the opts it names give tools/train.py the same schedule.

The schedules are read from PaddleSeg's own ``[TRAIN] ... lr: x`` log lines (one per iteration)."""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow   # runs PaddleSeg's training scripts; the fast loop: python -m pytest -q -m "not slow"

from seg_fixtures import make_prepared, small_transforms

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "seg" / "liteunet_gamma_cpu.yml"   # lr 0.003, warmup 20, cosine T_max 280, 300 iters
VENDOR_291 = REPO.parent / "shared" / "vendor" / "PaddleSeg-2.9.1"
ITERS = 24
LR_LINE = re.compile(r"\[TRAIN\] epoch: \d+, iter: (\d+)/(\d+), loss: [\d.]+, lr: ([\d.]+)")


def _lrs(text: str) -> list[float]:
    found = [(int(i), float(lr)) for i, _, lr in LR_LINE.findall(text)]
    assert [i for i, _ in found] == list(range(1, len(found) + 1)) and found, text[-2000:]
    return [lr for _, lr in found]


def _run(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=600,
                         env={**os.environ, **(env or {})})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def _cosine_with_warmup(step: int, lr: float, warm: int, t_max: int) -> float:
    """PaddleSeg's LinearWarmup over CosineAnnealingDecay: the rate used at ``step`` (0-based)."""
    if step < warm:
        return lr * step / warm
    return lr * (1 + math.cos(math.pi * (step - warm) / t_max)) / 2


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    w = tmp_path_factory.mktemp("schedule")
    make_prepared(w, n_train=2, n_test=1, size=(48, 40))
    return w


def _kit(work: Path, out: str, *extra: str) -> subprocess.CompletedProcess:
    return _run(["-m", "gamma_kit.seg", "train", "--config", CONFIG, "--iters", ITERS, "--batch-size", 1,
                 "--log-iters", 1, "--device", "cpu", "--no-eval", "--save-dir", out, *extra,
                 "--opts", small_transforms(32)[0]], work)


def _tools(work: Path, script: Path, out: str, *opts: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return _run([script, "--config", CONFIG, "--iters", ITERS, "--batch_size", 1, "--log_iters", 1,
                 "--device", "cpu", "--save_dir", out, "--opts", small_transforms(32)[0], *opts], work, env)


def test_iters_keeps_the_config_schedule_on_every_route(work):
    kit = _kit(work, "kit")
    kit_lrs = _lrs(kit.stdout)
    expected = [_cosine_with_warmup(s, 0.003, 20, 280) for s in range(ITERS)]
    assert kit_lrs == pytest.approx(expected, abs=1e-6)          # the log prints 6 decimals
    assert _lrs(_tools(work, REPO / "tools" / "train.py", "tools").stdout) == kit_lrs
    # one line tells the user that the schedule goes on past --iters, and how to end it
    note = [line for line in kit.stdout.splitlines() if line.startswith("note: the config's learning-rate")]
    assert len(note) == 1 and "spans 300 iterations" in note[0] and "--opts lr_scheduler.T_max=4 " in note[0]
    assert "--fit-schedule" in note[0]


def test_fit_schedule_equals_the_opts_it_names_on_tools_train(work):
    kit = _kit(work, "kit_fit", "--fit-schedule")
    line = next(line for line in kit.stdout.splitlines() if line.startswith("schedule fitted"))
    opts = line.split("--opts ", 1)[1].split()
    assert opts == ["lr_scheduler.T_max=4"]       # warmup 20 kept, the cosine ends at iteration 24
    kit_lrs = _lrs(kit.stdout)
    assert kit_lrs == pytest.approx([_cosine_with_warmup(s, 0.003, 20, 4) for s in range(ITERS)], abs=1e-6)
    assert _lrs(_tools(work, REPO / "tools" / "train.py", "tools_fit", *opts).stdout) == kit_lrs


@pytest.mark.skipif(not VENDOR_291.is_dir(), reason="no PaddleSeg 2.9.1 vendor tree beside the repo")
def test_paddleseg_291_own_train_gives_the_same_schedule(work, tmp_path):
    """PaddleSeg's own tools/train.py cannot build LiteUNet, so the same schedule is checked on the
    GPU recipe's UNet config through both the kit and PaddleSeg 2.9.1 itself."""
    unet = REPO / "configs" / "seg" / "unet_gamma_512.yml"
    kit = _run(["-m", "gamma_kit.seg", "train", "--config", unet, "--iters", 3, "--batch-size", 1, "--log-iters", 1,
                "--device", "cpu", "--no-eval", "--save-dir", "kit_unet", "--opts", small_transforms(32)[0]], work)
    # --do_eval: PaddleSeg 2.9.1's train ends in UnboundLocalError ('mean_iou') without it
    own = _run([VENDOR_291 / "tools" / "train.py", "--config", unet, "--iters", 3, "--batch_size", 1,
                "--log_iters", 1, "--device", "cpu", "--do_eval", "--save_dir", "own_unet",
                "--opts", *small_transforms(32)],
               work, env={"PYTHONPATH": str(VENDOR_291)})
    assert _lrs(own.stdout) == _lrs(kit.stdout) == pytest.approx([0.0, 4e-6, 8e-6], abs=1e-6)


def test_fit_schedule_without_iters_is_one_line(work):
    res = subprocess.run([sys.executable, "-m", "gamma_kit.seg", "train", "--config", str(CONFIG), "--fit-schedule",
                          "--device", "cpu", "--save-dir", "x"], cwd=work, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and res.stderr.strip().splitlines()[-1] == \
        "error: --fit-schedule needs --iters: it fits the config's schedule to them"
    assert not (work / "x").exists()
