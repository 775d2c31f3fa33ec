"""gamma_kit.seg.training: the crop ROI travels with the model (roi.json), bad iteration counts are
refused before anything runs, every weight file is written atomically, log_file keeps PaddleSeg's
console output (config dumps, FLOPs table) off stdout, and --resume-model continues from its
checkpoint (broken checkpoints: tests/test_bad_inputs.py), and a second run into a folder that
holds one is refused unless it resumes or sets the old run aside (renamed, never deleted)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gamma_kit.seg import run_dir, training
from gamma_kit.seg.model_dir import ROI_NAME
from gamma_kit.seg.training import train_from_config
from seg_fixtures import make_prepared, small_transforms

CPU = "configs/seg/liteunet_gamma_cpu.yml"


@pytest.fixture
def prepared(tmp_path, monkeypatch):
    """Tiny prepared data at tmp/data/seg_prepared (the configs' dataset_root) and the cwd there."""
    from gamma_kit.resources import config_path

    root = make_prepared(tmp_path, n_train=4, n_test=1, size=(160, 128))
    monkeypatch.chdir(tmp_path)
    return root, config_path("seg/liteunet_gamma_cpu.yml")


def _train(cfg, out, **kw):
    return train_from_config(cfg, out, iters=2, batch_size=2, opts=list(small_transforms(32)), device="cpu",
                             log_iters=1, seed=0, **kw)


def test_roi_json_written_to_run_and_model_dirs(prepared, tmp_path, capsys):
    root, cfg = prepared
    roi = {"scale": 2.0, "size": 160, "centre": "disc"}
    (root / "crops.json").write_text(json.dumps({"roi": roi, "crops": {"0001": [1, 2, 3, 4]}}))
    run = _train(cfg, tmp_path / "run", log_file=tmp_path / "logs" / "seg_train.log")
    for d in (run, run / "last_model", run / "best_model"):
        assert json.loads((d / ROI_NAME).read_text()) == roi, d
        assert (d / "model.yml").is_file()
    assert (run / "last_model" / "model.pdparams").is_file() and (run / "best_model" / "model.pdparams").is_file()
    # every weight file went through a temporary file: none is left behind
    assert not list(run.rglob("*.tmp"))
    # PaddleSeg's console output is in the log file, not on stdout
    out = capsys.readouterr().out
    log = (tmp_path / "logs" / "seg_train.log").read_text()
    assert "[TRAIN]" in log and "Total Flops" in log and "type: LiteUNet" in log
    assert "[TRAIN]" not in out and "Total Flops" not in out and "type: LiteUNet" not in out


@pytest.mark.slow
def test_resume_model_continues_from_its_iteration(prepared, tmp_path):
    # as a user trains and resumes: each run a new process. (Within one process Paddle numbers the
    # parameters on from the models built before, and PaddleSeg's saved optimizer state names them.)
    root, cfg = prepared

    def train(save_dir, iters, *extra):
        res = subprocess.run([sys.executable, "-m", "gamma_kit.seg", "train", "--config", str(cfg), "--save-dir",
                              save_dir, "--iters", str(iters), "--batch-size", "2", "--no-eval", "--device", "cpu",
                              "--log-iters", "1", "--save-interval", "1", *extra, "--opts", small_transforms(32)[0]],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        return res.stdout

    train("run", 1)
    ckpt = tmp_path / "run" / "iter_1"
    assert run_dir.check_resume_model(ckpt) == 1
    out = train("resumed", 2, "--resume-model", str(ckpt))
    assert "iter: 2/2" in out and "iter: 1/2" not in out                   # only iteration 2 ran
    assert (tmp_path / "resumed" / "last_model" / "model.pdparams").is_file()
    with pytest.raises(ValueError, match=r"expected a checkpoint folder named iter_<n>"):
        run_dir.check_resume_model(tmp_path / "run" / "last_model")


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_second_run_refused_then_set_aside_whole(prepared, tmp_path, capsys):
    # issue 10: training into a folder that holds a run needs --resume-model or --set-aside-old-run
    root, cfg = prepared
    run = _train(cfg, tmp_path / "run")                       # with evaluation: best_model/ too
    first = _files(run)
    assert {"best_model/model.pdparams", "iter_2/model.pdparams", "last_model/model.pdparams"} <= set(first)
    with pytest.raises(FileExistsError, match=r"run already holds a run \(best_model, iter_2, last_model, "
                       r"model.yml\): add --resume-model \S+iter_2 to continue it, or --set-aside-old-run"):
        _train(cfg, run, do_eval=False)
    assert _files(run) == first                               # refused before any work: byte-identical
    _train(cfg, run, do_eval=False, set_aside_old_run=True)
    aside = list(tmp_path.glob("run.old-*"))
    assert len(aside) == 1 and _files(aside[0]) == first      # renamed whole, nothing deleted
    assert f"set the earlier run aside: {run} -> {aside[0]}" in capsys.readouterr().err
    # the new run starts empty: no best_model/ of the old run for predict to take (this one does not evaluate)
    assert not (run / "best_model").exists() and (run / "last_model" / "model.pdparams").is_file()
    from gamma_kit.seg.model_dir import resolve_model_dir
    assert resolve_model_dir(run) == run / "last_model"


def test_no_roi_json_without_crops_roi(prepared, tmp_path):
    root, cfg = prepared
    (root / "crops.json").write_text(json.dumps({"crops": {}}))          # no top-level "roi"
    run = _train(cfg, tmp_path / "run", do_eval=False)
    assert not list(run.rglob(ROI_NAME))
    assert (run / "last_model" / "model.pdparams").is_file()


def test_broken_crops_json_refused_before_training(prepared, tmp_path):
    root, cfg = prepared
    (root / "crops.json").write_text("{not json")
    with pytest.raises(ValueError, match="crops.json"):
        _train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kw", [{"iters": 0}, {"iters": -3}, {"batch_size": 0}])
def test_non_positive_counts_refused(kw, tmp_path):
    from gamma_kit.resources import config_path

    args = {"iters": 2, **kw}
    with pytest.raises(ValueError, match=f"{next(iter(kw))} must be positive"):
        train_from_config(config_path("seg/liteunet_gamma_cpu.yml"), tmp_path / "run", **args)
    cfg = training.load_config(config_path("seg/liteunet_gamma_cpu.yml"))
    cfg.dic["iters"] = 0
    with pytest.raises(ValueError, match="iters must be a positive"):
        training.run_training(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_atomic_save_proxy_restored():
    import importlib

    import paddle

    mod = importlib.import_module("paddleseg.core.train")
    before = mod.loss_computation
    with training._train_module_hooks(3, 0, progress=False):
        assert mod.paddle is not paddle and mod.paddle.nn is paddle.nn
    assert mod.paddle is paddle and mod.loss_computation is before


@pytest.mark.parametrize("rank,locked", [("0", True), ("1", False)])
def test_each_launcher_rank_trains_on_its_own_gpu_and_rank_0_alone_locks(prepared, tmp_path, monkeypatch, rank,
                                                                          locked):
    """Issue 16.10 / 17.2 under paddle.distributed.launch (its variables set, a 2-GPU CUDA build faked):
    the rank's process trains on the GPU the launcher gave it, and only process 0 holds the save dir's lock."""
    import paddle
    import paddleseg.core

    root, cfg = prepared
    seen = {}
    monkeypatch.setenv("FLAGS_selected_gpus", "1")
    monkeypatch.setenv("PADDLE_TRAINER_ID", rank)
    monkeypatch.setattr(paddle.device, "is_compiled_with_cuda", lambda: True)
    monkeypatch.setattr(paddle.device.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(paddle, "set_device", lambda d: seen.setdefault("device", d))

    def fake_train(*a, save_dir, **k):
        seen["lock"] = (tmp_path / "run.lock").is_file()

    monkeypatch.setattr(paddleseg.core, "train", fake_train)
    train_from_config(cfg, tmp_path / "run", iters=1, batch_size=2, opts=list(small_transforms(32)), device="auto",
                      do_eval=False)
    assert seen == {"device": "gpu:1", "lock": locked}
    assert not (tmp_path / "run.lock").exists()                 # released at the end


@pytest.mark.slow
def test_seg_train_procs_2_splits_each_batch_and_says_things_once(prepared, tmp_path):
    """seg train --procs 2 (issue 20.1): two processes of this machine (gloo), each on half of every batch
    of the config (batch_size stays the recipe's global batch: model.yml keeps it), the run's files as one
    process writes them, the progress bar and the closing line once, and nothing else on stderr. A batch
    that 3 processes cannot share is refused in one line."""
    root, cfg = prepared
    env = {**os.environ, "GAMMA_KIT_PROCS": "auto"}
    base = [sys.executable, "-m", "gamma_kit.seg", "train", "--config", str(cfg), "--iters", "4", "--batch-size",
            "2", "--no-eval", "--log-iters", "1", "--opts", *small_transforms(32)]
    proc = subprocess.run(base + ["--save-dir", str(tmp_path / "two"), "--procs", "2"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("trained model in") == 1
    assert "batch_size: 2" in (tmp_path / "two" / "model.yml").read_text()      # one sample per process
    assert (tmp_path / "two" / "last_model" / "model.pdparams").is_file() and (tmp_path / "two" / "iter_4").is_dir()
    for noise in ("Traceback", "FatalError", "leaked", "topology.py", "Modified FLAGS", "Warning"):
        assert noise not in proc.stderr, proc.stderr[-3000:]
    bad = subprocess.run(base + ["--save-dir", str(tmp_path / "three"), "--procs", "3"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0, bad.stderr[-2000:]
    assert "--procs 3 does not divide the batch size 2" in bad.stderr and not (tmp_path / "three").exists()
