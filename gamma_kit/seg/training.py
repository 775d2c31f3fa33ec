"""Train a PaddleSeg YAML config the way PaddleSeg's ``tools/train.py`` does.

``train_from_config`` = ``Config`` + ``SegBuilder`` + ``paddleseg.core.train`` (the pip
package has no ``tools/``), after ``compat.apply_compat()`` and input checks that turn
the usual mistakes into one clear message instead of a Paddle traceback:
a missing config, a missing list file, a list line naming missing files, labels
outside ``0..num_classes-1``.

A trained run folder (``save_dir``) holds PaddleSeg's ``iter_<n>/`` checkpoints and
``best_model/`` (when validating), plus what the kit adds: ``model.yml`` (the resolved
config, used to rebuild the model) in ``save_dir``, ``best_model/`` and ``last_model/``.
Any folder with ``model.pdparams`` and ``model.yml`` (or a run folder holding
``best_model``/``last_model``) is a *model directory* for ``predictor.load_model``
(``model_dir`` owns its files: ``write_model_dirs``, ``read_crop_roi``, the weight loaders).
When the training ``dataset_root`` holds a ``crops.json`` with a top-level ``"roi"`` object
(disc-centred crops), it is copied as ``roi.json`` into ``save_dir`` and each model
directory, so a model carries the crop geometry it was trained on.
Every weight file of a run (PaddleSeg's ``iter_<n>/`` and ``best_model/`` as well as
``last_model/``) is written through a temporary file and ``os.replace``.
Paths in configs are relative to the working directory (run from the repo root).

``log_file`` sends PaddleSeg's console output (its logger, the config dumps of
``SegBuilder``, the FLOPs table, the evaluation progress) to a file instead; ``progress``
then shows one progress bar over the iterations. ``console_defaults(log_file, progress)``
sets both for every training run inside a block that does not pass its own (the demo uses
it around other modules' calls).
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import warnings
from contextvars import ContextVar
from pathlib import Path

import cv2
import numpy as np
import yaml

import gamma_kit  # noqa: F401  (thread settings before paddle)
from gamma_kit.runtime import PADDLE_BATCHNORM_NOTICE
from gamma_kit.safety import Interrupted, RunLock, atomic_write_text, set_aside
from gamma_kit.seg.model_dir import (MODEL_CONFIG_NAME, WEIGHTS_NAME, load_checked_weights, read_crop_roi,
                                     write_model_dirs)
from gamma_kit.seg.prepare import read_list_file
from gamma_kit.seg.run_dir import (check_resume_model, check_resumed_config, check_save_dir, clean_leftovers,
                                   interrupted_line, resume_iter)

__all__ = ["load_config", "check_dataset_config", "build_from_config", "train_from_config", "run_training",
           "fit_schedule_opts", "schedule_note", "capture_console", "console_defaults", "evaluate_from_config"]


def load_config(path: str | os.PathLike, iters: int | None = None, batch_size: int | None = None,
                learning_rate: float | None = None, opts: list[str] | None = None):
    """Load a PaddleSeg YAML with the kit's models registered; ``opts`` are ``key.sub=value`` overrides.

    ``path`` is a file or a shipped config's name (``roi_liteunet_cpu.yml``, ``seg/roi_liteunet_cpu.yml``;
    ``gamma_kit.resources.resolve_config``: a path that exists wins).
    """
    from paddleseg.cvlibs import Config

    import gamma_kit.seg.models  # noqa: F401  (registers LiteUNet)
    from gamma_kit.resources import resolve_config

    path = resolve_config(path, "seg")
    if path.suffix not in (".yml", ".yaml"):
        raise ValueError(f"config {path} must be a .yml/.yaml file")
    try:
        return Config(str(path), learning_rate=learning_rate, batch_size=batch_size, iters=iters, opts=opts)
    except (AssertionError, KeyError, TypeError, RuntimeError, yaml.YAMLError) as exc:
        raise ValueError(f"config {path} cannot be loaded: {exc}") from exc


def _check_labels(pairs, num_classes: int, list_path: str) -> None:
    for _, label_path in pairs:
        lab = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)
        if lab is None:
            raise ValueError(f"{list_path}: label {label_path} cannot be read as an image")
        if lab.ndim != 2:
            raise ValueError(f"{list_path}: label {label_path} must be single-channel, got shape {lab.shape}")
        top = int(lab.max())
        if top >= num_classes:
            hint = (" (raw GAMMA masks use 0/128/255: run `python -m gamma_kit.seg prepare` to map them to 0/1/2)"
                    if top in (128, 255) else "")
            raise ValueError(f"{list_path}: label {label_path} has value {top}, outside 0..{num_classes - 1}"
                             f"{hint}")


def check_dataset_config(cfg, check_labels: bool = True, sections=("train_dataset", "val_dataset")) -> None:
    """Check the ``type: Dataset`` sections: root, list file, every listed file, label range."""
    for section in sections:
        dcfg = cfg.dic.get(section)
        if not dcfg or dcfg.get("type") != "Dataset":
            continue
        mode = dcfg.get("mode", "train" if section == "train_dataset" else "val")
        key = {"train": "train_path", "val": "val_path", "test": "test_path"}.get(mode)
        root = dcfg.get("dataset_root")
        if root is None or not Path(root).is_dir():
            raise FileNotFoundError(f"{section}.dataset_root {root!r} is not a folder (relative to {Path.cwd()}); "
                                    "prepare the data first: python -m gamma_kit.seg prepare --out <root>")
        if not dcfg.get(key):
            raise ValueError(f"{section}: mode {mode!r} needs {key}")
        pairs = read_list_file(dcfg[key], root, need_labels=mode != "test")
        if check_labels and mode != "test":
            _check_labels(pairs, int(dcfg.get("num_classes", 0) or cfg.dic.get("model", {})["num_classes"]),
                          dcfg[key])


def build_from_config(cfg, need_val: bool = True, need_optimizer: bool = True):
    """``SegBuilder`` components as tools/train.py gets them: (builder, model, train_ds, val_ds, optimizer, loss)."""
    from paddleseg.cvlibs import SegBuilder

    builder = SegBuilder(cfg)
    try:
        model = builder.model
        train_ds = builder.train_dataset
        val_ds = builder.val_dataset if need_val and cfg.dic.get("val_dataset") else None
        optimizer = builder.optimizer if need_optimizer else None
        loss = builder.loss
    except (RuntimeError, AssertionError) as exc:
        raise ValueError(f"cannot build the training components from the config: {exc}") from exc
    return builder, model, train_ds, val_ds, optimizer, loss


class _AtomicSavePaddle:
    """Stand-in for the ``paddle`` module inside ``paddleseg.core.train``: ``save`` goes through
    ``atomic_save_paddle`` (temporary file + fsync + ``os.replace``), everything else is paddle's."""

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    @staticmethod
    def save(obj, path, *args, **kwargs):
        from gamma_kit.safety import atomic_save_paddle
        if args or kwargs:      # protocol/config arguments: paddle's own save
            import paddle
            return paddle.save(obj, path, *args, **kwargs)
        return atomic_save_paddle(obj, path)


class _CountingLoss:
    """Wraps ``core.train.loss_computation`` (called once per iteration) to advance a progress bar."""

    def __init__(self, inner, bar):
        self.inner, self.bar = inner, bar

    def __call__(self, *args, **kwargs):
        out = self.inner(*args, **kwargs)
        self.bar.update(1)
        return out

    def __getattr__(self, name):
        return getattr(self.inner, name)


@contextlib.contextmanager
def _train_module_hooks(iters: int, start_iter: int, progress: bool):
    """During ``core.train``: atomic weight saves, and (``progress``) one tqdm bar over the iterations."""
    mod = importlib.import_module("paddleseg.core.train")
    real_paddle, real_loss = mod.paddle, mod.loss_computation
    bar = None
    mod.paddle = _AtomicSavePaddle(real_paddle)
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=iters, initial=start_iter, desc="seg train", unit="it", file=sys.stderr)
        mod.loss_computation = _CountingLoss(real_loss, bar)
    try:
        yield
    finally:
        mod.paddle, mod.loss_computation = real_paddle, real_loss
        if bar is not None:
            bar.close()


_CONSOLE_DEFAULTS: ContextVar[tuple[Path | None, bool] | None] = ContextVar("gamma_kit_seg_console", default=None)


@contextlib.contextmanager
def console_defaults(log_file: str | os.PathLike | None, progress: bool = True):
    """Within the block, ``run_training`` calls that pass no ``log_file``/``progress`` use these."""
    token = _CONSOLE_DEFAULTS.set((Path(log_file) if log_file is not None else None, bool(progress)))
    try:
        yield
    finally:
        _CONSOLE_DEFAULTS.reset(token)


@contextlib.contextmanager
def capture_console(log_file: str | os.PathLike | None):
    """Send ``sys.stdout`` (PaddleSeg's logger, ``SegBuilder``'s config dumps, ``paddle.flops``'
    table, PaddleSeg's evaluation progress) to ``log_file`` (appended) for the block; None: no change.
    Progress bars (stderr) and warnings stay on the console."""
    if log_file is None:
        yield None
        return
    path = Path(log_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f, contextlib.redirect_stdout(f):
        yield path


def _cosine_schedule(cfg) -> dict | None:
    """The config's warmup + ``CosineAnnealingDecay`` settings, or None for another schedule
    (PaddleSeg derives a ``PolynomialDecay``'s steps from the iterations itself)."""
    lr = cfg.dic.get("lr_scheduler") or {}
    if lr.get("type") != "CosineAnnealingDecay" or "T_max" not in lr:
        return None
    return {"warmup": int(lr.get("warmup_iters", 0)), "T_max": int(lr["T_max"]),
            "lr": float(lr.get("learning_rate", 0.0)), "eta_min": float(lr.get("eta_min", 0.0))}


def fit_schedule_opts(cfg, iters: int) -> list[str]:
    """The ``--opts`` that end ``cfg``'s warmup + cosine schedule at iteration ``iters``.

    ``--iters`` means what it means in PaddleSeg's ``tools/train.py`` on every route: the
    iterations, with the config's schedule as written (a cosine ``T_max`` is a number of its own).
    To train a shorter run to the end of its schedule, pass these opts (any route's ``--opts``;
    ``seg train --fit-schedule`` adds them): a ``T_max`` equal to the config's iterations (the
    original recipe's) becomes ``iters``, otherwise ``iters - warmup``; a warmup as long as the
    run becomes a tenth of it (and the cosine the rest). Empty for other schedules and when nothing changes.
    """
    sched = _cosine_schedule(cfg)
    iters = int(iters)
    if sched is None or iters <= 0:
        return []
    warm = sched["warmup"]
    if warm >= iters:
        warm = max(1, iters // 10)
        t_max = iters - warm
    else:
        t_max = iters if sched["T_max"] == int(cfg.iters) else iters - warm
    opts = []
    if warm != sched["warmup"]:
        opts.append(f"lr_scheduler.warmup_iters={warm}")
    if max(1, t_max) != sched["T_max"]:
        opts.append(f"lr_scheduler.T_max={max(1, t_max)}")
    return opts


def schedule_note(cfg, iters: int) -> str | None:
    """One line when ``iters`` stop training before ``cfg``'s cosine schedule ends (``cfg``: the
    config as loaded, before ``--iters``), naming the rate it stops at and the opts that fit the
    schedule (``fit_schedule_opts``); None when the schedule ends in time or is not a cosine."""
    import math

    sched = _cosine_schedule(cfg)
    iters = int(iters)
    if sched is None or iters >= sched["warmup"] + sched["T_max"]:
        return None
    warm, t_max = sched["warmup"], sched["T_max"]
    if iters < warm:
        rate = sched["lr"] * iters / warm
    else:
        rate = sched["eta_min"] + (sched["lr"] - sched["eta_min"]) * (1 + math.cos(math.pi * (iters - warm) / t_max)) / 2
    return (f"note: the config's learning-rate schedule spans {warm + t_max} iterations (warmup {warm} + cosine "
            f"T_max {t_max}); --iters {iters} stops it with the rate at {rate:.3g} (peak {sched['lr']:.3g}); to "
            f"end the schedule there add --opts {' '.join(fit_schedule_opts(cfg, iters))} (seg train: --fit-schedule)")


def run_training(cfg, save_dir: str | os.PathLike, device: str = "auto", do_eval: bool = True,
                 save_interval: int | None = None, log_iters: int = 10, keep_checkpoint_max: int = 5,
                 use_vdl: bool = False, seed: int | None = None, resume_model: str | None = None,
                 num_workers: int = 0, check_labels: bool = True, optimizer=None, model=None,
                 log_file: str | os.PathLike | None = None, progress: bool | None = None,
                 set_aside_old_run: bool = False, rank_batch: int | None = None) -> Path:
    """Train a loaded ``Config`` with ``SegBuilder`` + ``paddleseg.core.train`` (tools/train.py's calls).

    ``save_dir`` is locked while the run writes there (``safety.RunLock``: ``<save_dir>.lock``, taken
    by the launcher's process 0): a second training into it is refused in one line naming the first.
    A ``save_dir`` that already holds a run (``held_run_files``) needs ``resume_model`` or
    ``set_aside_old_run`` (the whole folder is renamed to ``<save_dir>.old-<time>``, never
    deleted, once the inputs are checked); otherwise FileExistsError, before any work. A resumed
    run keeps the ``model.yml`` it was trained with: another config is refused naming the keys.

    ``optimizer``/``model`` override the builder's (used by the PaddleX-style API).
    Writes ``model.yml`` and ``last_model/`` (see the module docstring); returns ``save_dir``.
    ``log_file``: PaddleSeg's console output goes there (appended) instead of stdout;
    ``progress``: a tqdm bar over the iterations (on stderr). Unset, both come from an enclosing
    ``console_defaults`` block (default: PaddleSeg's output on stdout, no bar); rank 0 alone shows it.
    ``rank_batch``: the samples each process takes per iteration when the kit started the processes
    (``train_from_config(processes=N)``: the config's batch_size / N, so the recipe's batch is the
    global one); unset, PaddleSeg's own rule: batch_size per process (``tools/train.py``).
    """
    from gamma_kit.runtime import launcher_rank

    progress = progress if launcher_rank() == 0 else False
    save_dir = Path(save_dir)
    _check_run_settings(cfg, save_interval, log_iters)
    main = launcher_rank() == 0                 # process 0 alone checks, writes and locks the save dir
    with RunLock(save_dir, "training") if main else contextlib.nullcontext():
        move_aside = check_save_dir(save_dir, resume_model, set_aside_old_run) if main else False
        if main and resume_model is not None and (note := clean_leftovers(save_dir)):
            print(note, file=sys.stderr)
        log_file, progress = _console_settings(log_file, progress)
        sections = ("train_dataset", "val_dataset") if do_eval else ("train_dataset",)
        check_dataset_config(cfg, check_labels=check_labels, sections=sections)
        roi = read_crop_roi(cfg)
        if resume_model is not None:
            check_resume_model(resume_model)           # before the model is built: a bad folder fails fast
            check_resumed_config(cfg, save_dir)
        with capture_console(log_file):
            built = _build(cfg, device, seed, do_eval, model, optimizer)
        if resume_model is not None:
            check_resume_model(resume_model, built[0], "this run's config (with its --opts)")
        if move_aside:
            aside = set_aside(save_dir)
            print(f"set the earlier run aside: {save_dir} -> {aside}", file=sys.stderr)
        if main:
            save_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(save_dir / MODEL_CONFIG_NAME, str(cfg))
        _train_loop(cfg, save_dir, built, resume_model, save_interval, log_iters, keep_checkpoint_max, use_vdl,
                    num_workers, log_file, progress, rank_batch or cfg.batch_size)
        if main:
            write_model_dirs(cfg, save_dir, cfg.iters, roi)
    return save_dir


def _check_run_settings(cfg, save_interval: int | None, log_iters: int | None) -> None:
    """One line for non-positive iterations, batch size, save interval or log interval."""
    if cfg.iters is None or int(cfg.iters) <= 0:
        raise ValueError(f"iters must be a positive number of iterations, got {cfg.iters}")
    if int(cfg.batch_size) <= 0:
        raise ValueError(f"batch_size must be positive, got {cfg.batch_size}")
    for name, value in (("save_interval", save_interval), ("log_iters", log_iters)):
        if value is not None and int(value) <= 0:
            raise ValueError(f"{name} must be positive, got {value}")


def _console_settings(log_file, progress) -> tuple:
    """(log file, progress bar) of a run: as given, else from an enclosing ``console_defaults`` block."""
    defaults = _CONSOLE_DEFAULTS.get()
    if log_file is None and defaults is not None:
        log_file = defaults[0]
    if progress is None:
        progress = defaults[1] if defaults is not None else False
    return log_file, progress


def _build(cfg, device: str, seed: int | None, do_eval: bool, model, optimizer) -> tuple:
    """(model, train set, val set, optimizer, losses) on ``device``, PaddleSeg patched and seeded;
    ``model``/``optimizer`` replace the builder's when given."""
    from paddleseg.utils import utils as seg_utils

    from gamma_kit.runtime import select_device
    from gamma_kit.seg.compat import apply_compat

    apply_compat()
    select_device(device)
    if seed is not None:
        seg_utils.set_seed(seed)
    _, b_model, train_ds, val_ds, b_opt, loss = build_from_config(cfg, need_val=do_eval,
                                                                  need_optimizer=optimizer is None)
    if len(train_ds) < cfg.batch_size:
        raise ValueError(f"{len(train_ds)} training image(s) but batch_size {cfg.batch_size}: "
                         "PaddleSeg drops incomplete batches, so nothing would train")
    return model or b_model, train_ds, val_ds, optimizer or b_opt, loss


def _train_loop(cfg, save_dir: Path, built: tuple, resume_model, save_interval, log_iters, keep_checkpoint_max,
                use_vdl: bool, num_workers: int, log_file, progress: bool, batch_size: int) -> None:
    """``paddleseg.core.train`` with the kit's hooks (atomic saves, one progress bar); Ctrl-C ends in
    ``Interrupted`` naming the checkpoint to resume from."""
    from paddleseg.core import train as seg_train

    model, train_ds, val_ds, optimizer, loss = built
    if use_vdl and importlib.util.find_spec("visualdl") is None:
        warnings.warn("use_vdl: visualdl is not installed (pip install visualdl); training without its logs",
                      UserWarning, stacklevel=3)
        use_vdl = False
    with warnings.catch_warnings(), capture_console(log_file), \
            _train_module_hooks(cfg.iters, resume_iter(resume_model), progress):
        # the compat patch hands core.train shape-[1] losses, which it turns into floats at every
        # log step; NumPy >= 1.25 deprecates that conversion (harmless under the numpy<2 pin)
        warnings.filterwarnings("ignore", "Conversion of an array with ndim > 0 to a scalar",
                                DeprecationWarning)
        warnings.filterwarnings("ignore", message=PADDLE_BATCHNORM_NOTICE)
        try:
            seg_train(model, train_ds, val_dataset=val_ds, optimizer=optimizer, save_dir=str(save_dir),
                      iters=cfg.iters, batch_size=batch_size, resume_model=resume_model,
                      save_interval=save_interval or cfg.iters, log_iters=log_iters, num_workers=num_workers,
                      use_vdl=use_vdl, losses=loss, keep_checkpoint_max=keep_checkpoint_max,
                      test_config=cfg.test_config, to_static_training=cfg.to_static_training)
        except KeyboardInterrupt:
            raise Interrupted(interrupted_line(save_dir)) from None


def train_from_config(config: str | os.PathLike, save_dir: str | os.PathLike = "output/seg",
                      iters: int | None = None, batch_size: int | None = None,
                      learning_rate: float | None = None, opts: list[str] | None = None,
                      fit_schedule: bool = False, log=None, processes: int = 1, **kwargs) -> Path:
    """Train ``config`` (PaddleSeg YAML) into ``save_dir``; returns ``save_dir``.

    ``iters``/``batch_size``/``learning_rate``/``opts`` override the YAML exactly as
    tools/train.py's flags do (the learning-rate schedule stays the config's);
    ``fit_schedule`` also adds ``fit_schedule_opts`` so a warmup + cosine schedule ends at
    ``iters``. ``log`` (default: print to stdout, beside PaddleSeg's own log) gets the one line naming the fitted opts, or the
    ``schedule_note`` when ``iters`` stop the schedule early. Other keyword arguments go to
    ``run_training`` (device, do_eval, save_interval,
    log_iters, seed, resume_model, set_aside_old_run, ...);
    ``save_interval`` defaults to the iterations (one evaluation and checkpoint at the end).

    ``processes`` > 1 (``seg train --procs``; ``procs.local_processes`` picks it): that many processes of
    this machine train together (``procs.spawn_local``, gloo; PaddleSeg's data-parallel loop), each on
    ``batch_size / processes`` samples of every iteration, so the config's batch, iterations and
    schedule stay the recipe's (the data order differs from one process). Returns ``save_dir``.
    """
    if processes > 1:
        from gamma_kit.procs import rank_batch, spawn_local

        batch = int(batch_size or load_config(config, opts=opts).batch_size)
        return spawn_local(train_from_config, dict(
            config=config, save_dir=save_dir, iters=iters, batch_size=batch_size, learning_rate=learning_rate,
            opts=opts, fit_schedule=fit_schedule, log=log, rank_batch=rank_batch(processes, batch), **kwargs),
            processes)
    from gamma_kit.runtime import launcher_rank

    if launcher_rank() != 0:
        log = log or (lambda _line: None)       # rank 0 says it once
    for name, value in (("iters", iters), ("batch_size", batch_size)):
        if value is not None and int(value) <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
    if learning_rate is not None and learning_rate <= 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate}")
    opts = list(opts or [])
    if fit_schedule and not iters:
        raise ValueError("--fit-schedule needs --iters: it fits the config's schedule to them")
    if iters:
        log = log or print
        base = load_config(config, batch_size=batch_size, learning_rate=learning_rate, opts=opts or None)
        if fit_schedule:
            extra = fit_schedule_opts(base, iters)
            log(f"schedule fitted to {iters} iterations: --opts {' '.join(extra) or '(none needed)'}")
            opts += extra
        elif (note := schedule_note(base, iters)) is not None:
            log(note)
    cfg = load_config(config, iters=iters, batch_size=batch_size, learning_rate=learning_rate, opts=opts or None)
    return run_training(cfg, save_dir, **kwargs)


def evaluate_from_config(config: str | os.PathLike, model_path: str | os.PathLike,
                         opts: list[str] | None = None, device: str = "auto") -> dict[str, float]:
    """PaddleSeg's pooled evaluation of ``val_dataset``: {"miou", "acc", "kappa", "iou_<k>", "dice_<k>"}.

    PaddleSeg pools pixels over the dataset; the challenge averages per image
    (``gamma_kit.metrics.evaluate_seg``), which ``gamma_kit.seg.submission`` reports.
    """
    from paddleseg.core import evaluate
    from paddleseg.cvlibs import SegBuilder

    from gamma_kit.runtime import select_device
    from gamma_kit.seg.compat import apply_compat

    cfg = load_config(config, opts=opts)
    check_dataset_config(cfg, sections=("val_dataset",))
    weights = Path(model_path)
    if weights.is_dir():
        weights = weights / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"no weights at {weights} (expected a model.pdparams file or a folder holding one)")
    apply_compat()
    select_device(device)
    builder = SegBuilder(cfg)
    model = builder.model
    # PaddleSeg's load_entire_model skips mismatching weights with a warning and evaluates random ones
    load_checked_weights(model, weights, config)
    miou, acc, class_iou, _, kappa = evaluate(model, builder.val_dataset, print_detail=False,
                                              **cfg.test_config)
    out = {"miou": float(miou), "acc": float(acc), "kappa": float(kappa)}
    for k, iou in enumerate(np.asarray(class_iou, dtype=float)):
        out[f"iou_{k}"] = float(iou)
        out[f"dice_{k}"] = float(2 * iou / (1 + iou))
    return out
