"""The fovea trainer: one fold of the heatmap U-Net, as short named steps.

    Trainer(cfg, fold, data, run_dir, ...).run()
        prepare   the fold folder (refuse an earlier run, set it aside, or resume it), processes, device, split
        load      canonical images -> training / validation items; the ROI policy (a disc offset is
                  learned from this fold's training images only)
        build     seed, model (``init_from``), learning-rate schedule, Adam, AMP scaler, DataParallel
        restore   model, optimizer (with its schedule) and history from the last checkpoint (--resume)
        fit       per epoch: train_epoch (train_step per batch), validate, save; SIGINT/SIGTERM raise at
                  once, except while a checkpoint set is written (then they wait for the whole set)
        finish    averaged.pdparams (train.average_last) and metrics.json

Logging goes through callbacks (``on_train_start``, ``on_step``, ``on_epoch_end``, ``on_train_end``):
``ProgressBar`` (tqdm), ``LongRunWarning`` (one line when the first steps say the run will take more
than LONG_RUN_HOURS), ``CsvLog`` (metrics.csv) and ``VdlLog`` (VisualDL). Only rank 0 gets them.
The shape follows nnU-Net's trainer (named hooks around a plain loop) and PaddleSeg's
``core.train`` (rank 0 alone validates and writes); the files are those of gamma_kit.fovea.run_dir.

Epochs are 0-based in the history and callbacks, 1-based in messages. Validation AED is the
challenge metric (gamma_kit.fovea.inference.evaluate_items: decoded by the shared codec, mapped back
to the original image, normalised by its size).
"""
from __future__ import annotations

import math
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import gamma_kit  # noqa: F401  (threads before paddle)
from gamma_kit.fovea import inference
from gamma_kit.fovea.checkpoints import average_weights, load_checkpoint, read_state
from gamma_kit.fovea.config import build_codec, build_model, dump_config
from gamma_kit.fovea.dataset import CanonicalCache, FoveaCropDataset, iterate_batches, make_items
from gamma_kit.fovea.folds import get_fold
from gamma_kit.fovea.parallel import (any_over_ranks, barrier, broadcast_buffers, init_parallel, mean_over_ranks,
                                      sum_over_ranks, world_size)
from gamma_kit.fovea.roi import RoiPolicy
from gamma_kit.fovea.run_dir import FoldFolder, LastCheckpoint, resume_config, splits_for
from gamma_kit.runtime import PADDLE_BATCHNORM_NOTICE
from gamma_kit.metrics import fovea_score
from gamma_kit.safety import Interrupted, RunLock, deferred_interrupts, make_parent

__all__ = ["Trainer", "Settings", "Callback", "ProgressBar", "LongRunWarning", "CsvLog", "VdlLog",
           "LONG_RUN_HOURS", "CPU_CONFIG_HINT"]

#: wall clock of the training steps (the long-run estimate); tests replace it to fake a slow device
_clock = time.perf_counter
#: a run whose estimate exceeds this many hours gets a one-line hint after its first steps
LONG_RUN_HOURS = 4.0
CPU_CONFIG_HINT = "configs/fovea/unet_heatmap_cpu.yml"


@dataclass(frozen=True)
class Settings:
    """The loop's numbers: ``cfg['train']`` with the call's overrides, each checked (>= 1, or >= 0
    for the optional snapshot / averaging counts)."""

    epochs: int
    batch_size: int
    val_every: int
    checkpoint_every: int
    snapshot_every: int
    average_last: int
    use_vdl: bool

    @classmethod
    def of(cls, tcfg: dict, fold: int, val_every: int | None = None, checkpoint_every: int | None = None,
           use_vdl: bool | None = None) -> "Settings":
        epochs = int(tcfg["epochs"])
        s = cls(epochs=epochs, batch_size=int(tcfg["batch_size"]),
                val_every=int(val_every or tcfg.get("val_every", 1)),
                checkpoint_every=int(checkpoint_every or tcfg.get("checkpoint_every", 1)),
                snapshot_every=int(tcfg.get("snapshot_every", 0)),
                average_last=min(int(tcfg.get("average_last", 0)), epochs),
                use_vdl=bool(tcfg.get("use_vdl", False) if use_vdl is None else use_vdl))
        for name, v in (("epochs", s.epochs), ("batch size", s.batch_size), ("val_every", s.val_every),
                        ("checkpoint_every", s.checkpoint_every), ("fold", fold)):
            if v < 1:
                raise ValueError(f"{name} must be at least 1, got {v}")
        return s

    def validates(self, epoch: int) -> bool:
        return epoch == self.epochs - 1 or (epoch + 1) % self.val_every == 0

    def checkpoints(self, epoch: int) -> bool:
        return epoch == self.epochs - 1 or (epoch + 1) % self.checkpoint_every == 0

    def snapshots(self, epoch: int) -> bool:
        """Weights-only snapshot after ``epoch``: every ``snapshot_every`` epochs and the last ``average_last``."""
        return bool(self.snapshot_every and (epoch + 1) % self.snapshot_every == 0) \
            or epoch >= self.epochs - self.average_last


# ---------------------------------------------------------------------------------------------- callbacks

class Callback:
    """Hooks the trainer calls on rank 0; each does nothing unless overridden."""

    def on_train_start(self, t: "Trainer") -> None:
        """After restore, before the first epoch of this call."""

    def on_step(self, t: "Trainer", seconds: float) -> None:
        """After each training step (``seconds`` by the trainer's clock)."""

    def on_epoch_end(self, t: "Trainer", rec: dict) -> None:
        """After an epoch's checkpoints are written (inside the block that holds signals back)."""

    def on_train_end(self, t: "Trainer") -> None:
        """Always, also after an interruption or an error."""


class ProgressBar(Callback):
    """A tqdm bar over the epochs with the last loss, AED and best AED."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.bar = enabled, None

    def on_train_start(self, t: "Trainer") -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=t.settings.epochs, initial=t.start, desc=f"fold {t.fold}", unit="epoch",
                        disable=not self.enabled)

    def on_epoch_end(self, t: "Trainer", rec: dict) -> None:
        aed = rec["val_aed"]
        self.bar.set_postfix(loss=f"{rec['train_loss']:.3f}", aed="-" if aed is None else f"{aed:.4f}",
                             best=f"{t.best_aed:.4f}")
        self.bar.update(1)

    def on_train_end(self, t: "Trainer") -> None:
        if self.bar is not None:
            self.bar.close()


def _fmt_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


class LongRunWarning(Callback):
    """One line (stderr) when the first steps say the rest of the run takes more than
    LONG_RUN_HOURS here: checked after the first step (only when 10x over: it includes the
    warm-up) and after the third."""

    def __init__(self) -> None:
        self.step_times: list[float] = []
        self.warned = False

    def on_step(self, t: "Trainer", seconds: float) -> None:
        self.step_times.append(seconds)
        first = min(3, t.steps)
        if not self.warned and len(self.step_times) in (1, first):
            margin = 10.0 if len(self.step_times) < first else 1.0
            self.warned = self._warn(t.steps, t.settings.epochs - t.epoch, t.device, margin)

    def _warn(self, steps: int, epochs_left: int, device: str, margin: float) -> bool:
        from tqdm import tqdm

        times = self.step_times
        per_step = float(np.mean(times[1:] if len(times) > 1 else times))   # the first step warms up
        epoch_s = per_step * steps
        total = epoch_s * epochs_left
        if total <= margin * LONG_RUN_HOURS * 3600:
            return False
        tqdm.write(f"note: on {device} one epoch of this config takes ~{_fmt_duration(epoch_s)}, so {epochs_left} "
                   f"epochs take ~{_fmt_duration(total)}; on a CPU use --config {CPU_CONFIG_HINT} "
                   "(a 1/4-scale version of the method, ~14 s per epoch of 80 images on 2 cores)", file=sys.stderr)
        return True


class CsvLog(Callback):
    """metrics.csv in the fold folder, rewritten after every epoch."""

    def on_epoch_end(self, t: "Trainer", rec: dict) -> None:
        t.folder.write_csv(t.history)


class VdlLog(Callback):
    """VisualDL scalars per epoch, tagged as PaddleSeg tags its own (Train/loss, Train/lr,
    Evaluate/<metric>), written into the fold folder; step = epoch number (1-based)."""

    def __init__(self, logdir: Path) -> None:
        try:
            from visualdl import LogWriter
        except ImportError as err:
            raise ValueError(f"--use-vdl needs VisualDL (pip install visualdl): {err}") from None
        self.writer = LogWriter(logdir=str(logdir))

    def on_epoch_end(self, t: "Trainer", rec: dict) -> None:
        step = rec["epoch"] + 1
        self.writer.add_scalar("Train/loss", rec["train_loss"], step)
        self.writer.add_scalar("Train/lr", rec["lr"], step)
        if rec.get("val_aed") is not None:
            self.writer.add_scalar("Evaluate/AED", rec["val_aed"], step)

    def on_train_end(self, t: "Trainer") -> None:
        self.writer.close()


# ---------------------------------------------------------------------------------------------- plumbing

class _SignalGuard:
    """SIGINT / SIGTERM while training stop it at the next step boundary: the handler only records
    the signal in ``pending``, and ``Trainer._stop_if_asked`` (between steps and epochs) raises
    ``KeyboardInterrupt``. Raised inside the handler, it could land in Python code that Paddle runs
    in the backward pass (the reflect padding's PyLayer), which Paddle turns into an unreadable C++
    error. A second signal raises at once (a run that hangs still stops). Inside
    ``safety.deferred_interrupts`` both wait for the block. Outside the main thread it does nothing."""

    def __init__(self) -> None:
        self._old: dict = {}
        self.pending: int | None = None

    def __enter__(self) -> "_SignalGuard":
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> bool:
        for s, h in self._old.items():
            signal.signal(s, h)
        return False

    def _on_signal(self, signum, _frame) -> None:
        if self.pending is not None:
            raise KeyboardInterrupt(f"signal {signum}")
        self.pending = signum


def _set_seed(seed: int) -> None:
    import random

    import paddle

    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    paddle.seed(seed)


def _rename_keys(state: dict, mapping: dict[str, str]) -> dict:
    """Rename optimizer-state keys that start with a parameter name (longest match)."""
    names = sorted(mapping, key=len, reverse=True)
    out = {}
    for key, value in state.items():
        if isinstance(value, dict):
            value = _rename_keys(value, mapping)
        new = key
        for n in names:
            if key == n or key.startswith(n + "_"):
                new = mapping[n] + key[len(n):]
                break
        out[new] = value
    return out


def portable_opt_state(opt, model) -> dict:
    """Optimizer state keyed by structured parameter names (``enc.0.layer.0.weight``),
    not the process-global tensor names, so --resume works in any process."""
    return _rename_keys(opt.state_dict(), {p.name: f"@{n}" for n, p in model.named_parameters()})


def load_portable_opt_state(opt, model, state: dict) -> None:
    opt.set_state_dict(_rename_keys(state, {f"@{n}": p.name for n, p in model.named_parameters()}))


def _finite(x) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


# ---------------------------------------------------------------------------------------------- the trainer

class Trainer:
    """One fold (1-based ``fold``) of ``data`` (gamma_kit.fovea.train.FoveaData) with ``cfg``, into
    ``run_dir/fold<k>``; the arguments are those of :func:`gamma_kit.fovea.train.train_fold`."""

    def __init__(self, cfg: dict, fold: int, data, run_dir: str | Path, resume: bool = False,
                 init_from: str | Path | None = None, progress: bool = True, cache: CanonicalCache | None = None,
                 set_aside_old_run: bool = False, resume_command: str | None = None,
                 val_every: int | None = None, checkpoint_every: int | None = None,
                 use_vdl: bool | None = None, data_parallel: bool | None = None) -> None:
        if resume and init_from is not None:
            raise ValueError("--resume continues a run from its own last checkpoint; it cannot be combined with "
                             "--init-from (fine-tune into a new run folder instead)")
        self._flags = (val_every, checkpoint_every, use_vdl)
        self.settings = Settings.of(cfg["train"], fold, *self._flags)
        self.cfg, self.fold, self.data, self.cache = cfg, fold, data, cache
        self.run_dir = Path(run_dir)
        self.folder = FoldFolder(self.run_dir / f"fold{fold}")
        self.resume, self.init_from, self.set_aside_old_run = resume, init_from, set_aside_old_run
        self.resume_command = resume_command or f"train_fold(cfg, {fold}, data, {str(self.run_dir)!r}, resume=True)"
        self.dp = world_size() > 1 if data_parallel is None else bool(data_parallel)
        self.progress = progress
        self.history: list[dict] = []
        self.best_aed, self.best_epoch, self.start, self.epoch = math.inf, -1, 0, 0
        self.callbacks: list[Callback] = []
        self.guard = _SignalGuard()      # entered by fit; outside it, never stops
        self.lock: RunLock | None = None
        self.write_config = not resume         # a resume keeps the run's config.yml unless it changes a key
        self._best: dict | None = None          # best weights not yet in a checkpoint set (checkpoint_every > 1)
        self._best_changed = False

    def run(self) -> dict:
        """prepare, load, build, restore, fit, finish; returns the metrics dict (metrics.json)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=PADDLE_BATCHNORM_NOTICE)
            try:
                last = self.prepare()
                self.load()
                self.build()
                if last is not None:
                    self.restore(last)
                self.fit()
                return self.finish()
            finally:
                if self.lock is not None:
                    self.lock.release()

    # -- steps before the loop

    def prepare(self) -> LastCheckpoint | None:
        """Processes, the fold folder (locked, checked, leftovers removed), the config of a resume,
        the device and the split; returns the last checkpoint set (resume)."""
        from gamma_kit.runtime import select_device

        self.rank, self.world = init_parallel() if self.dp else (0, 1)
        if self.settings.batch_size % self.world:
            raise ValueError(f"batch size {self.settings.batch_size} cannot be split evenly over {self.world} "
                             f"processes; use a multiple of {self.world}")
        self.main = self.rank == 0                 # rank 0 alone checks the folder and writes files
        self.progress = self.progress and self.main
        if self.main:
            self._claim_folder()
        last = self.folder.read_last(finish_commit=self.main) if self.resume else None   # every rank reads it
        if last is not None:
            self._resume_config(last)
        self.device = select_device(self.cfg["train"]["device"])   # under the launcher: this rank's GPU
        self.amp = bool(self.cfg["train"]["amp"]) and self.device.startswith("gpu")
        self.split = get_fold(splits_for(self.run_dir, list(self.data.images), self.cfg, write=self.main), self.fold)
        return last

    def _claim_folder(self) -> None:
        """Lock the fold folder (a second run is refused), refuse or set aside an earlier run, and
        remove what an interrupted write left (named in one line)."""
        make_parent(self.folder.path)              # a --run-dir under a file: one line naming the fold folder
        self.lock = RunLock(self.folder.path, "training").acquire()
        aside = self.folder.prepare(self.resume, self.set_aside_old_run)
        if aside is not None and self.progress:
            from tqdm import tqdm

            tqdm.write(f"set the earlier run aside: {self.folder.path} -> {aside}")
        gone = self.folder.clean_leftovers()
        if gone:
            print(f"note: removed what an interrupted checkpoint write left in {self.folder.path}: {', '.join(gone)}",
                  flush=True)

    def _resume_config(self, last: LastCheckpoint) -> None:
        """The run's own config (run_dir.resume_config: an edited config.yml or a differing --config is
        refused in one line); the keys a resume may change are said in one line and written to config.yml."""
        from gamma_kit.fovea.config import completed, load_config

        path = self.folder.path / "config.yml"
        # rank 0 checks the file (the other ranks could read it while rank 0 rewrites it)
        on_file = load_config(path) if self.main and path.is_file() else None
        self.cfg, changed = resume_config(self.cfg, completed(last.state["config"]), on_file, self.folder.path)
        self.settings = Settings.of(self.cfg["train"], self.fold, *self._flags)
        self.write_config = bool(changed) or on_file is None
        if not self.main:
            return
        if changed:
            print(f"note: resuming {self.folder.path} with " + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in
                                                                        sorted(changed.items())) + " (config.yml updated)",
                  flush=True)
        elif on_file is None:
            print(f"note: {path} was missing; written again from the run's checkpoint", flush=True)

    def load(self) -> None:
        """Canonical images of this fold -> items; the ROI policy; config.yml written (rank 0)."""
        cfg, data = self.cfg, self.data
        self.codec = build_codec(cfg)
        cache = self.cache or CanonicalCache.for_config(cfg)
        cache.check_serves(self.codec.scale, cfg["data"]["decode"], "the config")
        ids = self.split["train"] + self.split["val"]
        canon = cache.load_all({i: data.images[i] for i in ids}, self.progress)
        self.train_items = make_items({i: canon[i] for i in self.split["train"]}, data.gt, data.gt_name)
        self.val_items = make_items({i: canon[i] for i in self.split["val"]}, data.gt, data.gt_name)
        self.roi = RoiPolicy.from_config(cfg)
        if self.roi.needs_fit:                   # offset (and spread) learned from this fold's training images
            self.roi = self.roi.fitted(self.train_items)
            self.cfg = {**cfg, "roi": self.roi.as_config()}
        if self.main and self.write_config:
            self.folder.write_config(dump_config(self.cfg))

    def build(self) -> None:
        """Seeded model (``init_from`` weights), schedule, optimizer, AMP scaler, DataParallel wrapper."""
        import paddle

        tcfg, s = self.cfg["train"], self.settings
        self.seed = int(tcfg["seed"]) + self.fold
        _set_seed(self.seed)
        self.model = build_model(self.cfg)
        if self.init_from is not None:
            src, _ = load_checkpoint(self.init_from, self.cfg)
            self.model.set_state_dict(src.state_dict())
        self.steps = max(1, math.ceil(len(self.train_items) / s.batch_size))
        if tcfg["lr_schedule"] == "cosine":
            self.lr = paddle.optimizer.lr.CosineAnnealingDecay(float(tcfg["lr"]), T_max=s.epochs * self.steps,
                                                               eta_min=float(tcfg["min_lr"]))
        else:
            self.lr = float(tcfg["lr"])
        self.opt = paddle.optimizer.Adam(learning_rate=self.lr, parameters=self.model.parameters(),
                                         weight_decay=paddle.regularizer.L2Decay(float(tcfg["weight_decay"])))
        self.scaler = paddle.amp.GradScaler() if self.amp else None
        self.net = paddle.DataParallel(self.model) if self.world > 1 else self.model   # forward/backward
        self.ds = FoveaCropDataset(self.train_items, self.codec, train=True, shift=tuple(self.cfg["data"]["shift"]),
                                   seed=self.seed, photometric=self.cfg["data"]["photometric"])

    def restore(self, last: LastCheckpoint) -> None:
        """Model, optimizer and history of the last checkpoint set (every rank reads the same files)."""
        self.model.set_state_dict(read_state(last.weights))
        # the optimizer state carries the schedule (last step and its lr): the cosine decay is
        # recursive in its last lr, so it must not be stepped again here
        load_portable_opt_state(self.opt, self.model, read_state(last.optimizer))
        state = last.state
        self.history, self.best_epoch = state["history"], int(state["best_epoch"])
        self.best_aed = math.inf if state["best_aed"] is None else float(state["best_aed"])
        self.start = last.epochs_done

    # -- the loop

    def fit(self) -> None:
        """Epochs ``start`` .. epochs - 1; an interruption becomes ``safety.Interrupted`` naming
        the saved epochs and the resume command."""
        if self.main:
            self.callbacks = [ProgressBar(self.progress), LongRunWarning(), CsvLog()]
            if self.settings.use_vdl:
                self.callbacks.append(VdlLog(self.folder.path))
        self.epoch = self.start
        try:
            with _SignalGuard() as self.guard:
                for cb in self.callbacks:
                    cb.on_train_start(self)
                for epoch in range(self.start, self.settings.epochs):
                    self.epoch = epoch
                    self.run_epoch(epoch)
                    self._stop_if_asked()
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted in epoch {self.epoch + 1} of {self.settings.epochs} ({self._saved()}); "
                              f"resume with {self.resume_command} --resume") from None
        finally:
            for cb in self.callbacks:
                cb.on_train_end(self)

    def run_epoch(self, epoch: int) -> None:
        """Train, validate (rank 0, on validation epochs), record, save (rank 0)."""
        t0 = time.perf_counter()
        loss = self.train_epoch(epoch)
        aed = self.validate() if self.settings.validates(epoch) else None     # every rank takes a share
        loss = mean_over_ranks(loss, self.world)         # the epoch's loss over every rank's shards
        rec = {"epoch": epoch, "train_loss": loss, "val_aed": _finite(aed), "lr": float(self.opt.get_lr()),
               "seconds": round(time.perf_counter() - t0, 2)}
        self.history.append(rec)
        if self.main:
            self.save(epoch, aed, rec)

    def _stop_if_asked(self) -> None:
        """``KeyboardInterrupt`` when a signal reached this process, or any rank (all stop at the same
        step: one that stopped alone would leave the others waiting on its gradients)."""
        if any_over_ranks(self.guard.pending is not None, self.world):
            raise KeyboardInterrupt("signal")

    def train_epoch(self, epoch: int) -> float:
        """One pass over the training crops of ``epoch``; returns this rank's mean loss."""
        import paddle

        self.ds.set_epoch(epoch)
        paddle.seed(self.seed * 100003 + epoch)      # dropout masks per epoch: a resumed run repeats them
        self.model.train()
        losses = []
        batches = iterate_batches(self.ds, self.settings.batch_size, shuffle=True,
                                  rng=np.random.default_rng([self.seed, epoch]))
        for x, y, _ in batches:
            self._stop_if_asked()
            ts = _clock()
            losses.append(self.train_step(x, y))
            seconds = _clock() - ts
            for cb in self.callbacks:
                cb.on_step(self, seconds)
        self._stop_if_asked()       # a signal in the epoch's last step: stop before its validation and save
        return float(np.mean(losses))

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One optimizer step on a global batch (crops (B, 3, h, w), heatmaps (B, 1, h, w)); with
        several ranks this rank takes every world-th sample. Returns the loss."""
        import paddle

        from gamma_kit.fovea.loss import heatmap_loss

        if self.world > 1:
            x, y = x[self.rank::self.world], y[self.rank::self.world]
        x, y = paddle.to_tensor(x), paddle.to_tensor(y)
        with paddle.amp.auto_cast(enable=self.amp):
            pred = self.net(x)
        loss = heatmap_loss(pred.astype("float32"), y, self.cfg["loss"]["variance_reward"])
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            loss.backward()
            self.opt.step()
        self.opt.clear_grad()
        if isinstance(self.lr, paddle.optimizer.lr.LRScheduler):
            self.lr.step()
        return float(loss)

    def validate(self, alone: bool = False) -> float:
        """Validation AED of the model as it is now (inference.evaluate_items); ``alone``: this rank
        scores every photo. Otherwise, with several ranks (called on every rank), each scores every
        world-th photo on rank 0's BatchNorm statistics (broadcast first: they are per process, and
        rank 0's are the ones saved) and the distances are summed over the ranks: the AED of rank 0's
        model on all photos, in 1 / world of the time."""
        if self.world == 1 or alone:
            aed, _ = inference.evaluate_items(self.model, self.val_items, self.codec, self.amp,
                                              self.settings.batch_size, self.roi)
            return aed
        broadcast_buffers(self.model, self.world)
        share = self.val_items[self.rank::self.world]
        total = 0.0
        if share:
            aed, _ = inference.evaluate_items(self.model, share, self.codec, self.amp, self.settings.batch_size,
                                              self.roi)
            total = aed * len(share)
        return sum_over_ranks(total, self.world) / len(self.val_items)

    def save(self, epoch: int, aed: float | None, rec: dict) -> None:
        """best (the first validated epoch always, even with a NaN AED, then any lower AED), a
        snapshot, the checkpoint set (run_dir.FoldFolder.commit), then the callbacks; signals wait for
        all of it. A write that fails (a full disk) is one line naming the file and how to resume."""
        s, weights = self.settings, self.model.state_dict()
        try:
            with deferred_interrupts():
                if aed is not None and (self.best_epoch < 0 or (math.isfinite(aed) and not aed >= self.best_aed)):
                    self.best_aed, self.best_epoch = (aed if math.isfinite(aed) else math.inf), epoch
                    self._best_changed = True
                    # held until the next set when this epoch writes none
                    self._best = None if s.checkpoints(epoch) else {k: np.array(v.numpy()) for k, v in weights.items()}
                if s.snapshots(epoch):        # before the set: a set on disk implies its epoch's snapshot
                    self.folder.save_snapshot(weights, epoch + 1)
                if s.checkpoints(epoch):
                    self._commit(epoch, weights)
                for cb in self.callbacks:
                    cb.on_epoch_end(self, rec)
        except OSError as exc:
            raise self._write_error(exc) from exc

    def _commit(self, epoch: int, weights: dict) -> None:
        best = (weights if self.best_epoch == epoch else self._best) if self._best_changed else None
        self.folder.commit(epoch, weights, portable_opt_state(self.opt, self.model), best,
                           {"epoch": epoch, "best_aed": _finite(self.best_aed), "best_epoch": self.best_epoch,
                            "history": self.history, "config": self.cfg})
        self._best, self._best_changed = None, False

    def _saved(self) -> str:
        saved = self.folder.saved_epochs()
        done = {0: "no epoch was saved yet", 1: "epoch 1 is saved"}.get(saved, f"epochs 1-{saved} are saved")
        return f"{done} in {self.folder.path}"

    def _write_error(self, exc: OSError) -> ValueError:
        import errno

        from gamma_kit.cli import describe_error

        when = "when there is room" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "when it can be written"
        return ValueError(f"{describe_error(exc)}; {self._saved()} (the unfinished checkpoint was removed); "
                          f"resume with {self.resume_command} --resume {when}")

    # -- after the loop

    def finish(self) -> dict:
        """Averaged weights (rank 0; the snapshots are on disk, so this survives a resume) and metrics.json."""
        barrier(self.world, f"fold{self.fold}-finish")   # every rank leaves after rank 0's last files are written
        s, averaged_aed = self.settings, None
        if self.main and s.average_last:
            snaps = [self.folder.snapshot_path(e) for e in range(s.epochs - s.average_last + 1, s.epochs + 1)]
            self.model.set_state_dict(average_weights(snaps))
            self.folder.save_averaged(self.model.state_dict())
            averaged_aed = self.validate(alone=True)      # rank 0's averaged weights; the others have left
        best = self.best_aed
        metrics = {"fold": self.fold, "config": self.cfg["name"], "device": self.device,
                   "n_train": len(self.train_items), "n_val": len(self.val_items), "best_aed": _finite(best),
                   "best_epoch": self.best_epoch, "best_score": fovea_score(best) if math.isfinite(best) else None,
                   "last_aed": self.history[-1]["val_aed"] if self.history else None,
                   "averaged_aed": _finite(averaged_aed), "history": self.history}
        if self.main:
            self.folder.write_csv(self.history)     # also when a stop came between a set and its epoch's row
            self.folder.write_metrics(metrics)
        return metrics
