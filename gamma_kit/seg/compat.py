"""Compatibility layer: PaddleSeg 2.8.0 (PyPI) on Paddle 3.x.

PaddleSeg 2.8.0 predates 0-D tensors and Paddle's stricter dtype promotion. The kit's
path through it (``SegBuilder`` + ``core.train`` / ``core.evaluate``, ``DiceLoss``,
``CrossEntropyLoss``, ``MixedLoss``) fails in four places (SPEC 4):

1. ``train_log_0d_loss``: ``core/train.py`` logs ``loss.numpy()[0]``; a 0-D loss raises
   IndexError at the first log step. Fix: the training loss list is made of shape-[1]
   tensors (``core.train.loss_computation`` is wrapped), which every later use accepts.
2. ``metrics_0d_concat``: ``utils.metrics.calculate_area`` concatenates 0-D sums, so
   every evaluation fails. Fix: the same areas, stacked instead of concatenated.
3. ``ce_int_promotion``: ``CrossEntropyLoss`` multiplies its float32 mask by an int64
   tensor. Fix: the post-processing with the class-weight coefficients in float32.
4. ``dice_inplace_label``: ``DiceLoss`` writes into its label tensor, so a loss computed
   earlier from the same labels (CrossEntropy inside ``MixedLoss``) fails in backward.
   Fix: ``DiceLoss`` works on a copy of the labels.

Each patch has a probe that runs the original code on tiny tensors and reports whether
the bug shows; ``apply_compat()`` applies only the patches whose bug is present, so it
is a no-op on a fixed PaddleSeg. It is idempotent; the probes run once per process (about a second, most of it
Paddle warming up). The training probe runs as a single process even under
``paddle.distributed.launch`` (it must not initialise fleet before PaddleSeg's ``core.train`` does).

``prepare_paddleseg()`` is what ``tools/*.py`` call before PaddleSeg's own calls: the
patches, the kit's models registered in PaddleSeg's manager, and the one NumPy
deprecation warning patch 1 causes at every log step silenced.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import tempfile
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

import gamma_kit  # noqa: F401  (thread settings before paddle)
import paddle
import paddle.nn.functional as F

__all__ = ["Patch", "PATCHES", "apply_compat", "prepare_paddleseg"]


def _train_module():
    # paddleseg.core re-exports the function ``train`` under the module's name.
    return importlib.import_module("paddleseg.core.train")


# --------------------------------------------------------------------------- probes
class _TinyModel(paddle.nn.Layer):
    """1x1 convolution returning a logit list, as PaddleSeg models do."""

    def __init__(self, num_classes: int = 2):
        super().__init__()
        self.conv = paddle.nn.Conv2D(3, num_classes, 1)

    def forward(self, x):
        return [self.conv(x)]


class _TinyDataset(paddle.io.Dataset):
    def __init__(self, n: int = 2, size: int = 4, num_classes: int = 2):
        rng = np.random.default_rng(0)
        self.items = [{"img": rng.standard_normal((3, size, size)).astype("float32"),
                       "label": rng.integers(0, num_classes, (size, size)).astype("int64"),
                       "trans_info": []} for _ in range(n)]
        self.num_classes = num_classes
        self.ignore_index = 255

    def __getitem__(self, i):
        return self.items[i]

    def __len__(self):
        return len(self.items)


class _NoSleepTime:
    """Stand-in for the ``time`` module inside core.train during the probe (skips its 1 s sleep)."""

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    @staticmethod
    def sleep(_seconds):
        return None


class _OneRank:
    nranks = 1
    local_rank = 0
    rank = 0
    world_size = 1


class _Proxy:
    """Attribute access falls through to ``real``; attributes set on the proxy win."""

    def __init__(self, real, **overrides):
        self._real = real
        self.__dict__.update(overrides)

    def __getattr__(self, name):
        return getattr(self._real, name)


def _single_process_paddle(real):
    """Stand-in for ``paddle`` inside core.train during the probe: ``ParallelEnv()`` says one process
    and the batch sampler does not shard, so a probe under ``paddle.distributed.launch`` neither
    initialises fleet nor wraps the tiny model for data parallelism, and logs as rank 0 (where the
    bug shows)."""
    def sampler(dataset, **kwargs):
        return real.io.DistributedBatchSampler(dataset, num_replicas=1, rank=0, **kwargs)

    return _Proxy(real, distributed=_Proxy(real.distributed, ParallelEnv=_OneRank),
                  io=_Proxy(real.io, DistributedBatchSampler=sampler))


def _run_one_train_iteration() -> None:
    """Run PaddleSeg's ``core.train`` for one logged iteration on a 1x1-conv model (one process)."""
    mod = _train_module()
    model = _TinyModel()
    opt = paddle.optimizer.SGD(learning_rate=0.0, parameters=model.parameters())
    real_time, real_paddle = mod.time, mod.paddle
    mod.time = _NoSleepTime(real_time)
    mod.paddle = _single_process_paddle(real_paddle)
    try:
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
            mod.train(model, _TinyDataset(), optimizer=opt, save_dir=tmp, iters=1, batch_size=1,
                      save_interval=10, log_iters=1, losses={"types": [_dice_class()()], "coef": [1]})
    finally:
        mod.time, mod.paddle = real_time, real_paddle


def _probe_train_log() -> bool:
    try:
        _run_one_train_iteration()
    except IndexError:
        return True
    except UnboundLocalError:   # PaddleSeg 2.9.x ends a run without validation there, after the log step
        return False
    return False


def _probe_metrics() -> bool:
    pred = paddle.to_tensor(np.array([[[[0, 1], [1, 1]]]], dtype="int64"))
    try:
        _metrics_module().calculate_area(pred, pred, 2)
    except (ValueError, RuntimeError):
        return True
    return False


def _tiny_logits_labels(seed: int = 0):
    rng = np.random.default_rng(seed)
    logits = paddle.to_tensor(rng.standard_normal((2, 3, 4, 4)).astype("float32"), stop_gradient=False)
    labels = rng.integers(0, 3, (2, 4, 4)).astype("int64")
    labels[0, 0, 0] = 255
    return logits, paddle.to_tensor(labels)


def _probe_ce() -> bool:
    logits, labels = _tiny_logits_labels()
    try:
        _ce_class()()(logits, labels)
    except TypeError:
        return True
    return False


def _probe_dice() -> bool:
    logits, labels = _tiny_logits_labels()
    before = labels.numpy().copy()
    _dice_class()()(logits, labels)
    return not np.array_equal(before, labels.numpy())


# --------------------------------------------------------------------------- fixes
# Each fix builds the replacement from the original; ``Patch`` installs it (marking it and keeping
# the original as ``__wrapped__``, which ``undo`` puts back).
def _train_log_fix(original):
    def loss_computation(*args, **kwargs):
        return [paddle.reshape(loss, [1]) if loss.ndim == 0 else loss
                for loss in original(*args, **kwargs)]

    return loss_computation


def _metrics_fix(_original):
    def calculate_area(pred, label, num_classes, ignore_index=255):
        """Intersection, prediction and label pixel counts per class, each (num_classes,) int64."""
        if len(pred.shape) == 4:
            pred = paddle.squeeze(pred, axis=1)
        if len(label.shape) == 4:
            label = paddle.squeeze(label, axis=1)
        if pred.shape != label.shape:
            raise ValueError(f"Shape of `pred` and `label` should be equal, but there are "
                             f"{pred.shape} and {label.shape}.")
        valid = label != ignore_index
        classes = paddle.arange(num_classes, dtype=pred.dtype).reshape([-1] + [1] * pred.ndim)
        pred_1h = paddle.logical_and(pred.unsqueeze(0) == classes, valid.unsqueeze(0))
        label_1h = label.unsqueeze(0) == classes.astype(label.dtype)
        axes = list(range(1, pred.ndim + 1))
        count = lambda b: paddle.sum(paddle.cast(b, "int64"), axis=axes)  # noqa: E731
        return count(paddle.logical_and(pred_1h, label_1h)), count(pred_1h), count(label_1h)

    return calculate_area


def _ce_fix(_original):
    def _post_process_loss(self, logit, label, semantic_weights, loss):
        """Mask ignored pixels, weight, and average (top-k optional); dtypes made explicit."""
        if self.avg_non_ignore:
            mask = paddle.cast(label != self.ignore_index, dtype="float32")
        else:
            mask = paddle.ones(label.shape, dtype="float32")
        mask.stop_gradient = True
        label.stop_gradient = True
        if loss.ndim > mask.ndim:
            loss = paddle.squeeze(loss, axis=-1)
        loss = loss * mask
        if semantic_weights is not None:
            loss = loss * semantic_weights
        if self.weight is not None:
            valid_label = label * paddle.cast(mask, label.dtype)
            coef = paddle.sum(F.one_hot(valid_label, logit.shape[-1]) * self.weight, axis=-1)
        else:
            coef = paddle.ones(label.shape, dtype="float32")
        if self.top_k_percent_pixels == 1.0:
            return paddle.mean(loss) / (paddle.mean(mask * coef) + self.EPS)
        loss = loss.reshape((-1,))
        top_k_pixels = int(self.top_k_percent_pixels * loss.numel())
        loss, indices = paddle.topk(loss, top_k_pixels)
        coef = paddle.gather(coef.reshape((-1,)), indices)
        coef.stop_gradient = True
        return loss.mean() / (paddle.mean(coef) + self.EPS)

    return _post_process_loss


def _dice_fix(original):
    def forward(self, logits, labels):
        return original(self, logits, labels.clone())

    return forward


# --------------------------------------------------------------------------- registry
def _metrics_module():
    from paddleseg.utils import metrics
    return metrics


def _ce_class():
    from paddleseg.models.losses import CrossEntropyLoss
    return CrossEntropyLoss


def _dice_class():
    from paddleseg.models.losses import DiceLoss
    return DiceLoss


@dataclass(frozen=True)
class Patch:
    """One targeted fix: ``owner().<attr>`` is replaced by ``make(original)``.

    ``probe()`` is True when the installed PaddleSeg shows the bug. The installed replacement
    carries ``_gamma_kit_compat`` (so ``is_applied`` can tell) and the original as ``__wrapped__``.
    """

    name: str
    description: str
    probe: Callable[[], bool]
    owner: Callable[[], object]
    attr: str
    make: Callable[[Callable], Callable]

    def current(self) -> Callable:
        return getattr(self.owner(), self.attr)

    def is_applied(self) -> bool:
        return bool(getattr(self.current(), "_gamma_kit_compat", False))

    def fix(self) -> None:
        """Install the replacement (whether or not the bug shows; ``apply`` asks the probe first)."""
        if self.is_applied():
            return
        original = self.current()
        replacement = self.make(original)
        replacement.__wrapped__ = original
        replacement._gamma_kit_compat = True
        setattr(self.owner(), self.attr, replacement)

    def undo(self) -> None:
        """Put the original back (a no-op when the patch is not installed)."""
        current = self.current()
        setattr(self.owner(), self.attr, getattr(current, "__wrapped__", current))

    def apply(self) -> bool:
        """Apply the fix if the bug shows; return whether it was (or already is) applied."""
        if self.is_applied():
            return True
        if not self.probe():
            return False
        self.fix()
        return True


PATCHES: dict[str, Patch] = {p.name: p for p in (
    Patch("train_log_0d_loss", "core.train indexes a 0-D loss with [0] when logging",
          _probe_train_log, _train_module, "loss_computation", _train_log_fix),
    Patch("metrics_0d_concat", "utils.metrics.calculate_area concatenates 0-D sums",
          _probe_metrics, _metrics_module, "calculate_area", _metrics_fix),
    Patch("ce_int_promotion", "CrossEntropyLoss multiplies a float32 mask by an int64 tensor",
          _probe_ce, _ce_class, "_post_process_loss", _ce_fix),
    Patch("dice_inplace_label", "DiceLoss modifies its label tensor in place",
          _probe_dice, _dice_class, "forward", _dice_fix),
)}

# train_log's probe runs a real loss through core.train: the loss patches go first.
_ORDER = ("ce_int_promotion", "dice_inplace_label", "metrics_0d_concat", "train_log_0d_loss")


def apply_compat(names: tuple[str, ...] | None = None) -> dict[str, bool]:
    """Apply the needed patches (all, or ``names``); return {patch name: applied}."""
    chosen = _ORDER if names is None else tuple(n for n in _ORDER if n in names)
    unknown = set(names or ()) - set(PATCHES)
    if unknown:
        raise KeyError(f"unknown compat patch(es) {sorted(unknown)}; known: {sorted(PATCHES)}")
    return {name: PATCHES[name].apply() for name in chosen}


def prepare_paddleseg() -> dict[str, bool]:
    """Make PaddleSeg's own calls work with the kit: what ``tools/*.py`` run first.

    Applies the needed patches (``apply_compat``), registers the kit's models (``LiteUNet``) in
    PaddleSeg's model manager so YAML ``model.type`` finds them, and silences NumPy's
    "Conversion of an array with ndim > 0 to a scalar" DeprecationWarning, which patch 1's
    shape-[1] losses raise at every log step of ``core.train`` (harmless under numpy<2).
    Returns {patch name: applied}.
    """
    import gamma_kit.seg.models  # noqa: F401  (registers the kit's models)

    warnings.filterwarnings("ignore", "Conversion of an array with ndim > 0 to a scalar", DeprecationWarning)
    return apply_compat()
