"""gamma_kit.seg.compat: each PaddleSeg 2.8.0 patch shows its failure without it and works with it;
then PaddleSeg's own train + evaluate run a few iterations for DiceLoss and MixedLoss."""
from __future__ import annotations

import dataclasses
from pathlib import Path
import importlib

import numpy as np
import pytest

import gamma_kit  # noqa: F401
import paddle
from paddleseg.models.losses import CrossEntropyLoss, DiceLoss, MixedLoss
from paddleseg.utils import metrics

from gamma_kit.seg import compat


@pytest.fixture
def without(request):
    """Undo one patch for the test (if it was applied) and restore the applied state afterwards."""
    patch = compat.PATCHES[request.param]
    was = patch.is_applied()
    patch.undo()
    yield patch
    patch.undo()
    if was:
        patch.fix()


def _logits_labels(seed=0, ignore=True):
    rng = np.random.default_rng(seed)
    logits = paddle.to_tensor(rng.standard_normal((2, 3, 6, 6)).astype("float32"), stop_gradient=False)
    labels = rng.integers(0, 3, (2, 6, 6)).astype("int64")
    if ignore:
        labels[0, :2, :2] = 255
    return logits, paddle.to_tensor(labels)


@pytest.mark.parametrize("without", ["metrics_0d_concat"], indirect=True)
def test_metrics_patch(without):
    pred = paddle.to_tensor(np.array([[[[0, 1, 2], [2, 2, 1]]]], dtype="int64"))
    label = paddle.to_tensor(np.array([[[[0, 1, 1], [2, 255, 1]]]], dtype="int64"))
    assert without.probe()
    with pytest.raises((ValueError, RuntimeError)):
        metrics.calculate_area(pred, label, 3)
    without.fix()
    assert without.is_applied() and without.apply() is True
    inter, p_area, l_area = (t.numpy().tolist() for t in metrics.calculate_area(pred, label, 3))
    # pixel (1,1) is ignored in the label: prediction 2 there is not counted
    assert p_area == [1, 2, 2]
    assert l_area == [1, 3, 1]
    assert inter == [1, 2, 1]


@pytest.mark.parametrize("without", ["ce_int_promotion"], indirect=True)
def test_cross_entropy_patch(without):
    logits, labels = _logits_labels()
    assert without.probe()
    with pytest.raises(TypeError):
        CrossEntropyLoss()(logits, labels)
    without.fix()
    loss = CrossEntropyLoss()(logits, labels)
    # known answer: mean CE over non-ignored pixels
    lg = logits.numpy().transpose(0, 2, 3, 1)
    lb = labels.numpy()
    valid = lb != 255
    logp = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
    ce = -np.take_along_axis(logp, np.where(valid, lb, 0)[..., None], -1)[..., 0]
    assert float(loss) == pytest.approx(ce[valid].mean(), rel=1e-5)
    # class weights and top-k paths run too
    assert np.isfinite(float(CrossEntropyLoss(weight=[1.0, 2.0, 0.5])(logits, labels)))
    assert np.isfinite(float(CrossEntropyLoss(top_k_percent_pixels=0.5)(logits, labels)))


@pytest.mark.parametrize("without", ["dice_inplace_label"], indirect=True)
def test_dice_patch(without):
    ce = compat.PATCHES["ce_int_promotion"]
    ce.apply()
    logits, labels = _logits_labels()
    assert without.probe()
    with pytest.raises(RuntimeError, match="inplace"):
        losses = MixedLoss([CrossEntropyLoss(), DiceLoss()], [1, 1])(logits, labels)
        paddle.add_n(losses).backward()
    without.fix()
    logits, labels = _logits_labels()
    before = labels.numpy().copy()
    losses = MixedLoss([CrossEntropyLoss(), DiceLoss()], [1, 1])(logits, labels)
    paddle.add_n(losses).backward()
    assert np.array_equal(labels.numpy(), before)
    assert logits.grad is not None and np.isfinite(logits.grad.numpy()).all()


@pytest.mark.parametrize("without", ["train_log_0d_loss"], indirect=True)
def test_train_log_patch(without):
    assert without.probe()
    with pytest.raises(IndexError):
        compat._run_one_train_iteration()
    without.fix()
    compat._run_one_train_iteration()
    mod = importlib.import_module("paddleseg.core.train")
    assert mod.loss_computation.__wrapped__ is not None


def test_apply_is_idempotent_and_noop_when_fixed():
    first = compat.apply_compat()
    assert all(first.values())
    assert compat.apply_compat() == first
    # once patched, every probe sees a working PaddleSeg: a fixed PaddleSeg would get no patch
    assert not any(p.probe() for p in compat.PATCHES.values())
    with pytest.raises(KeyError):
        compat.apply_compat(("no_such_patch",))


def test_patch_skipped_when_bug_absent(monkeypatch):
    patch = compat.PATCHES["metrics_0d_concat"]
    was = patch.is_applied()
    patch.undo()
    try:
        fake = dataclasses.replace(patch, probe=lambda: False)     # the same patch where the bug is absent
        assert fake.apply() is False
        assert not patch.is_applied()
    finally:
        if was:
            patch.fix()


@pytest.mark.parametrize("without", ["train_log_0d_loss"], indirect=True)
def test_train_probe_is_single_process_under_the_launcher(without, monkeypatch):
    """Under paddle.distributed.launch (rank 1 of 2 here) the probe still sees the bug and neither
    initialises fleet nor shards its tiny data set; PaddleSeg's core.train does that later."""
    import paddle.distributed.fleet as fleet

    monkeypatch.setenv("PADDLE_TRAINERS_NUM", "2")
    monkeypatch.setenv("PADDLE_TRAINER_ID", "1")
    monkeypatch.setenv("PADDLE_RANK_IN_NODE", "1")
    assert paddle.distributed.ParallelEnv().nranks == 2

    def no_fleet(*args, **kwargs):
        raise AssertionError("the probe initialised fleet")

    monkeypatch.setattr(fleet, "init", no_fleet)
    assert without.probe()
    mod = importlib.import_module("paddleseg.core.train")
    assert mod.paddle is paddle          # the stand-in is gone after the probe


def test_prepare_paddleseg_registers_kit_models():
    from paddleseg.cvlibs import manager

    applied = compat.prepare_paddleseg()
    assert set(applied) == set(compat.PATCHES)
    assert "LiteUNet" in manager.MODELS.components_dict


@pytest.mark.slow
def test_probes_under_paddleseg_291(tmp_path):
    """A user with PaddleSeg 2.9.1's source tree: the probes run (its train loop ends a run without
    validation in UnboundLocalError, after the log step the probe watches) and only the patch 2.9.1
    still needs applies: the in-place Dice label."""
    import json
    import os
    import subprocess
    import sys

    tree = Path(__file__).resolve().parents[2] / "shared" / "vendor" / "PaddleSeg-2.9.1"
    if not tree.is_dir():
        pytest.skip(f"{tree} is not here (the vendored PaddleSeg trees live in ../shared/vendor)")
    code = "import json; from gamma_kit.seg.compat import apply_compat; print(json.dumps(apply_compat()))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(tree)})
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout.strip().splitlines()[-1]) == {
        "ce_int_promotion": False, "dice_inplace_label": True, "metrics_0d_concat": False, "train_log_0d_loss": False}
