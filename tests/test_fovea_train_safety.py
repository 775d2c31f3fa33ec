"""Fovea training faults and bad inputs (issue 10 items 2, 3, 7, 9; issue 12 item 3 and 6):
checkpoint sets checked against their state.json, a SIGTERM during a checkpoint write followed by a
resume, no silent overwrite of an earlier run, one-line errors for bad flags and broken
checkpoints, a NaN validation AED, the long-run hint, VisualDL + CSV logs."""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import gamma_kit  # noqa: F401  (threads before paddle)
from gamma_kit.fovea import trainer as trainer_mod
from gamma_kit.fovea.__main__ import main as cli_main
from gamma_kit.fovea.config import load_config
from gamma_kit.fovea.demo import CPU_CONFIG
from gamma_kit.fovea.run_dir import FoldFolder
from gamma_kit.fovea.train import load_training_data, train_fold
from gamma_kit.safety import Interrupted
from fovea_fixtures import tiny_synth

REPO = Path(__file__).resolve().parents[1]
TINY = ["model.width=4", "train.batch_size=4", "train.device=cpu"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return tiny_synth(tmp_path_factory.mktemp("fovea_safety") / "data", 10, 2, seed=11)


@pytest.fixture(scope="module")
def tiny_yml(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny.yml"
    path.write_text(f"_base_: {CPU_CONFIG}\nname: tiny\nmodel: {{width: 4}}\ntrain: {{epochs: 3, batch_size: 4}}\n")
    return path


def _cfg(*extra):
    return load_config(CPU_CONFIG, TINY + list(extra))


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _cli(args, capsys):
    try:
        rc = cli_main([str(a) for a in args])
    except SystemExit as exc:        # argparse refuses a flag before run_cli
        rc = exc.code
    return rc, capsys.readouterr().err


BAD_FLAGS = [
    (["train", "--fold", "1", "--epochs", "0"], "--epochs: must be at least 1, got 0"),
    (["train", "--fold", "1", "--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
    (["train", "--fold", "0"], "--fold: must be at least 1, got 0"),
    (["train", "--fold", "1", "--epochs", "two"], "expected a whole number >= 1, got 'two'"),
    (["cv", "--folds", "1,x"], "--folds: folds: 'x' is not a whole number (expected comma-separated whole numbers"),
    (["cv", "--folds", "0,1"], "folds: 0 is out of range (each value must be >= 1"),
    (["cv", "--folds", "1,1"], "folds: [1] given more than once"),
    (["train", "--fold", "1", "--lr", "-1"], "--lr: must be a finite number > 0"),
]


@pytest.mark.parametrize("args,message", BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_flags_are_refused_in_one_line(args, message, capsys):
    rc, err = _cli(args, capsys)
    assert rc == 2 and message in err and "Traceback" not in err


def test_resume_faults_in_one_line(synth, tiny_yml, tmp_path, capsys):
    base = ["train", "--fold", "1", "--config", tiny_yml, "--data-root", synth, "--device", "cpu", "--no-progress"]
    cases = [
        (["--run-dir", tmp_path / "empty", "--resume"], "nothing to resume in"),
        (["--run-dir", tmp_path / "x", "--resume", "--init-from", tmp_path / "a.pdparams"], "cannot be combined"),
    ]
    for extra, message in cases:
        rc, err = _cli(base + extra, capsys)
        errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert rc == 2 and len(errors) == 1 and message in errors[0] and "Traceback" not in err, err
    assert not (tmp_path / "empty" / "fold1").exists() or not any((tmp_path / "empty" / "fold1").iterdir())


@pytest.mark.slow
def test_an_earlier_run_is_kept_or_set_aside(synth, tiny_yml, tmp_path, capsys):
    run = tmp_path / "run"
    base = ["train", "--fold", "2", "--config", tiny_yml, "--data-root", synth, "--run-dir", run,
            "--device", "cpu", "--no-progress", "--epochs", "1"]
    assert _cli(base, capsys)[0] == 0
    before = _digest(run / "fold2")
    rc, err = _cli(base, capsys)                      # same folder again, no flag: refused, nothing touched
    assert rc == 2 and "already holds a run" in err and "--set-aside-old-run" in err
    assert _digest(run / "fold2") == before
    rc, err = _cli(base + ["--set-aside-old-run"], capsys)
    assert rc == 0
    aside = [p for p in run.iterdir() if p.name.startswith("fold2.old-")]
    assert len(aside) == 1 and _digest(aside[0]) == before     # renamed whole, byte for byte
    assert (run / "fold2" / "best.pdparams").is_file()


@pytest.mark.slow
def test_broken_checkpoints_on_resume_name_the_file(synth, tmp_path):
    data = load_training_data(synth)
    constant = ["train.lr_schedule=constant"]           # so the resume may add an epoch
    train_fold(_cfg("train.epochs=1", *constant), 1, data, tmp_path / "r", progress=False)
    d = tmp_path / "r" / "fold1"
    files = ("ckpt-001/model.pdparams", "ckpt-001/model.pdopt", "ckpt-001/state.json", "best.pdparams",
             "last_checkpoint.json")
    good = {f: (d / f).read_bytes() for f in files}
    changed = "changed after the checkpoint set was complete"
    faults = [
        ("ckpt-001/model.pdparams", b"", "ckpt-001/model.pdparams does not match its CRC in "),
        ("ckpt-001/model.pdopt", good["ckpt-001/model.pdopt"][:1000], changed),
        ("best.pdparams", good["best.pdparams"][:-10], "best.pdparams does not match its CRC in "),
        ("ckpt-001/state.json", b"{not json", "ckpt-001/state.json: not a readable checkpoint state"),
        ("last_checkpoint.json", b"[]", "last_checkpoint.json: not a readable checkpoint pointer"),
        ("last_checkpoint.json", b'{"folder": "ckpt-009"}', "names the checkpoint set 'ckpt-009', which is not in"),
    ]
    for name, content, message in faults:
        (d / name).write_bytes(content)
        with pytest.raises((ValueError, FileNotFoundError)) as err:
            train_fold(_cfg("train.epochs=2", *constant), 1, data, tmp_path / "r", resume=True, progress=False)
        assert message in str(err.value) and "\n" not in str(err.value), str(err.value)
        assert "killed" not in str(err.value)
        (d / name).write_bytes(good[name])
    m = train_fold(_cfg("train.epochs=2", *constant), 1, data, tmp_path / "r", resume=True, progress=False)
    assert [r["epoch"] for r in m["history"]] == [0, 1]


@pytest.mark.slow
def test_nan_validation_aed_still_saves_best(synth, tmp_path, monkeypatch):
    import gamma_kit.fovea.inference as inference

    monkeypatch.setattr(inference, "evaluate_items", lambda *a, **k: (math.nan, None))
    m = train_fold(_cfg("train.epochs=2"), 1, load_training_data(synth), tmp_path / "r", progress=False)
    assert (tmp_path / "r" / "fold1" / "best.pdparams").is_file()
    assert m["best_epoch"] == 0 and m["best_aed"] is None and m["history"][0]["val_aed"] is None
    json.loads((tmp_path / "r" / "fold1" / "metrics.json").read_text())   # strict JSON (no NaN)


_SLOW_SAVE = """
import sys, time
import gamma_kit
import paddle
real, n = paddle.save, [0]
def slow(obj, path, *a, **k):
    n[0] += 1
    if n[0] == int(sys.argv[1]):
        open(sys.argv[2], "w").write("writing")
        time.sleep(4)
    return real(obj, path, *a, **k)
paddle.save = slow
from gamma_kit.fovea.__main__ import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.slow
def test_sigterm_during_a_checkpoint_write_then_resume(synth, tiny_yml, tmp_path, capsys):
    """The 5th paddle.save (epoch 2's ckpt-002/model.pdparams: epoch 1 saved weights, optimizer,
    best and a snapshot) is slowed down; SIGTERM arrives in the middle of it. The write and the rest
    of the set complete, the set's state.json names complete files, the process says how to resume and exits 130; the resumed run gives
    the same losses as an uninterrupted run."""
    run, marker = tmp_path / "run", tmp_path / "marker"
    args = ["train", "--fold", "1", "--config", str(tiny_yml), "--data-root", str(synth), "--run-dir", str(run),
            "--device", "cpu", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_SAVE, "5", str(marker), *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), proc.communicate()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert proc.returncode == 130, err
    assert lines[-1].startswith("interrupted in epoch 2 of 3") and lines[-1].endswith("--resume")
    assert "Traceback" not in err and not list((run / "fold1").glob("*.tmp")) and not list((run / "fold1").glob(".*"))
    last = FoldFolder(run / "fold1").read_last()         # CRCs match: every named file is complete
    assert last.folder.name == "ckpt-002" and last.state["epoch"] == 1
    assert set(last.state["files"]) == {"model.pdparams", "model.pdopt"} and last.state["best"]
    assert sorted(p.name for p in (run / "fold1").glob("ckpt-*")) == ["ckpt-002"] and not (run / "fold1.lock").exists()
    command = lines[-1].split("resume with ", 1)[1]
    assert command.startswith("python -m gamma_kit.fovea train --fold 1") and "--resume" in command
    rc, _ = _cli(args[:] + ["--resume"], capsys)
    assert rc == 0
    resumed = json.loads((run / "fold1" / "metrics.json").read_text())
    assert [r["epoch"] for r in resumed["history"]] == [0, 1, 2]
    whole = train_fold(load_config(tiny_yml, ["train.device=cpu"]), 1, load_training_data(synth), tmp_path / "whole",
                       progress=False)
    np.testing.assert_allclose([r["train_loss"] for r in resumed["history"]],
                               [r["train_loss"] for r in whole["history"]], rtol=1e-4)


@pytest.mark.slow
def test_ctrl_c_during_a_step_names_the_epoch_and_the_resume_command(synth, tmp_path, monkeypatch):
    calls = [0]

    def clock():
        calls[0] += 1
        if calls[0] == 7:          # 2 steps per epoch (8 images, batch 4), 2 clock reads per step: in epoch 2
            os.kill(os.getpid(), signal.SIGINT)
        return time.perf_counter()

    monkeypatch.setattr(trainer_mod, "_clock", clock)
    data = load_training_data(synth)
    with pytest.raises(Interrupted) as err:
        train_fold(_cfg("train.epochs=3"), 1, data, tmp_path / "r", progress=False, resume_command="CMD")
    assert str(err.value).startswith("interrupted in epoch 2 of 3 (epoch 1 is saved in ")
    assert str(err.value).endswith("resume with CMD --resume")
    assert FoldFolder(tmp_path / "r" / "fold1").saved_epochs() == 1
    monkeypatch.setattr(trainer_mod, "_clock", time.perf_counter)
    m = train_fold(_cfg("train.epochs=3"), 1, data, tmp_path / "r", resume=True, progress=False)
    assert [r["epoch"] for r in m["history"]] == [0, 1, 2]


@pytest.mark.slow
def test_long_run_hint_after_the_first_steps(synth, tmp_path, monkeypatch, capsys):
    ticks = iter(range(0, 10 ** 9, 5000))               # every step "takes" 5000 s: over 4 h, under 40 h
    monkeypatch.setattr(trainer_mod, "_clock", lambda: next(ticks))
    train_fold(_cfg("train.epochs=2"), 1, load_training_data(synth), tmp_path / "r", progress=False)
    err = capsys.readouterr().err
    hint = [ln for ln in err.splitlines() if ln.startswith("note:")]
    assert len(hint) == 1 and "configs/fovea/unet_heatmap_cpu.yml" in hint[0]
    assert "one epoch of this config takes ~2.8 h" in hint[0] and "2 epochs take ~5.6 h" in hint[0]
    ticks = iter(range(0, 10 ** 12, 10 ** 6))           # far over: said after the very first step
    monkeypatch.setattr(trainer_mod, "_clock", lambda: next(ticks))
    train_fold(_cfg("train.epochs=2"), 1, load_training_data(synth), tmp_path / "s", progress=False)
    hint = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("note:")]
    assert len(hint) == 1 and "one epoch of this config takes ~23.1 days" in hint[0]
    monkeypatch.setattr(trainer_mod, "_clock", time.perf_counter)   # a quick run: no hint
    train_fold(_cfg("train.epochs=1"), 1, load_training_data(synth), tmp_path / "q", progress=False)
    assert "note:" not in capsys.readouterr().err


@pytest.mark.slow
def test_vdl_and_csv_logs_hold_the_same_numbers(synth, tmp_path):
    m = train_fold(_cfg("train.epochs=3"), 1, load_training_data(synth), tmp_path / "r", progress=False,
                   use_vdl=True, val_every=2)
    d = tmp_path / "r" / "fold1"
    rows = list(csv.DictReader((d / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert rows[0]["val_aed"] == "" and float(rows[1]["val_aed"]) == pytest.approx(m["history"][1]["val_aed"])
    assert float(rows[2]["lr"]) == pytest.approx(m["history"][2]["lr"])
    from visualdl import LogReader

    logs = sorted(d.glob("vdlrecords.*.log"))
    assert logs
    reader = LogReader(file_path=str(logs[0]))
    loss = [r.value for r in reader.get_data("scalar", "Train/loss")]
    aed = [(r.id, r.value) for r in reader.get_data("scalar", "Evaluate/AED")]
    np.testing.assert_allclose(loss, [h["train_loss"] for h in m["history"]], rtol=1e-6)
    assert [s for s, _ in aed] == [2, 3]


def test_top_level_help_shows_the_fold_shortcut(capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    assert "python -m gamma_kit.fovea --fold K" in out and "unet_heatmap_cpu.yml" in out
    from gamma_kit.fovea.__main__ import build_parser

    args = build_parser().parse_args(["train", "--fold", "3"])    # what `--fold 3` becomes
    assert args.fold == 3 and args.config.endswith("unet_heatmap.yml")
