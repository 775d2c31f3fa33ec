"""Train the fovea heatmap U-Net on one fold (``train_fold``) or all (``cross_validate``).

Run layout (nothing is written outside ``run_dir``)::

    runs/<name>/splits.json            # folds, computed once (gamma_kit.fovea.folds)
    runs/<name>/cv_metrics.json, training_curves.png   # after ``cv``
    runs/<name>/fold<k>/config.yml     # resolved config of this fold
    runs/<name>/fold<k>/best.pdparams  # lowest validation AED so far
    runs/<name>/fold<k>/last.pdparams, last.pdopt, last_state.json   # for --resume
    runs/<name>/fold<k>/metrics.json   # per-epoch loss, validation AED, lr; best epoch
    runs/<name>/fold<k>/metrics.csv    # the same per epoch (epoch is 0-based, val_aed empty when not validated)
    runs/<name>/fold<k>/vdlrecords.*.log   # with use_vdl: VisualDL scalars Train/loss, Train/lr, Evaluate/AED

Every file is written atomically (tmp + fsync + rename). last_state.json is written after
the checkpoints it names (with their CRC-32), so it always describes complete files.

Validation AED is the challenge metric (gamma_kit.metrics): the fixed-ROI crop of each
validation image is decoded by the shared codec, mapped back to the original image
(CanonicalFrame.to_image) and normalised by the original image size.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import gamma_kit  # noqa: F401  (threads before paddle)
from gamma_kit.data import atomic_write_text, list_images, load_fovea_split, match_gt_to_images, read_fovea_gt
from gamma_kit.fovea.config import build_codec, build_model, dump_config, model_signature
from gamma_kit.fovea.dataset import CanonicalCache, FoveaCropDataset, iterate_batches, make_items
from gamma_kit.fovea.folds import get_fold, make_splits, read_splits, write_splits
from gamma_kit.fovea.roi import RoiPolicy, fit_disc_offset
from gamma_kit.geometry import read_side_overrides
from gamma_kit.safety import Interrupted, atomic_save_paddle, deferred_interrupts, set_aside

__all__ = ["FoveaData", "load_training_data", "train_fold", "cross_validate", "RUN_FILES", "LONG_RUN_HOURS"]


@dataclass
class FoveaData:
    """Training images (id -> path) and their GT (image coordinates)."""

    images: dict[str, Path]
    gt: pd.DataFrame
    gt_name: str


def load_training_data(data_root: str | None = None, images: str | None = None,
                       gt: str | None = None) -> FoveaData:
    """GAMMA layout under ``data_root`` (or $GAMMA_DATA), or any folder of ``images``
    with a ``gt`` table (csv/xlsx: data, Fovea_X, Fovea_Y), e.g. IDRiD."""
    if images is not None:
        if gt is None:
            raise ValueError("--images needs --gt (a csv/xlsx with columns data,Fovea_X,Fovea_Y)")
        imgs = list_images(images)
        table = match_gt_to_images(read_fovea_gt(gt), imgs, gt)   # ids by value; unlabelled images warned
        return FoveaData({i: imgs[i] for i in table.index}, table, str(gt))
    split = load_fovea_split(data_root, "training", gt_path=gt)
    if split.gt is None:
        raise FileNotFoundError(f"{split.root}: no fovea ground truth (*GT*.xlsx/csv); pass --gt FILE")
    return FoveaData({i: split.images[i] for i in split.gt.index}, split.gt, str(gt or split.root))


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


def _portable_opt_state(opt, model) -> dict:
    """Optimizer state keyed by structured parameter names (``enc.0.layer.0.weight``),
    not the process-global tensor names, so --resume works in any process."""
    return _rename_keys(opt.state_dict(), {p.name: f"@{n}" for n, p in model.named_parameters()})


def _load_portable_opt_state(opt, model, state: dict) -> None:
    opt.set_state_dict(_rename_keys(state, {f"@{n}": p.name for n, p in model.named_parameters()}))


def _splits_for(run_dir: Path, ids: list[str], cfg: dict, write: bool = True) -> list[dict]:
    path = run_dir / "splits.json"
    if path.is_file():
        splits = read_splits(path)
        known = set(sum((s["train"] + s["val"] for s in splits), []))
        if known != set(ids):
            raise ValueError(f"{path} was written for other images ({len(known)} ids) than this data "
                             f"({len(ids)} ids); use another --run-dir or delete it")
        return splits
    # the split has its own seed: changing train.seed must not move GAMMA off the original folds
    splits = make_splits(ids, n_folds=cfg["train"]["n_folds"], seed=cfg["data"]["split_seed"])
    if write:
        write_splits(path, splits)
    return splits


#: wall clock of the training steps (the long-run estimate); tests replace it to fake a slow device
_clock = time.perf_counter
#: a run whose estimate exceeds this many hours gets a one-line hint after its first steps
LONG_RUN_HOURS = 4.0
CPU_CONFIG_HINT = "configs/fovea/unet_heatmap_cpu.yml"
#: files that make a fold folder "hold a run"
RUN_FILES = ("last_state.json", "last.pdparams", "last.pdopt", "best.pdparams", "metrics.json", "metrics.csv")
CSV_COLUMNS = ("epoch", "train_loss", "val_aed", "lr", "seconds")


class _SignalGuard:
    """SIGINT / SIGTERM while training raise ``KeyboardInterrupt`` at once; inside
    ``writing()`` (``safety.deferred_interrupts``) they are held until the whole checkpoint set
    (best, last, optimizer, last_state.json) is on disk, then raised. Outside the main thread
    it does nothing."""

    def __init__(self) -> None:
        self._old: dict = {}

    def __enter__(self) -> "_SignalGuard":
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> bool:
        for s, h in self._old.items():
            signal.signal(s, h)
        return False

    @staticmethod
    def _on_signal(signum, _frame) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    @staticmethod
    def writing():
        return deferred_interrupts()

    @staticmethod
    def save(obj, path: Path) -> str:
        """``atomic_save_paddle`` (inside ``writing()`` a signal waits for the rest of the set);
        returns the CRC-32 of the file written (for last_state.json)."""
        atomic_save_paddle(obj, path)
        return _crc(path)


def _crc(path: Path) -> str:
    """CRC-32 of a file as 8 hex digits (ties last_state.json to the files it names)."""
    crc = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            crc = zlib.crc32(chunk, crc)
    return f"{crc:08x}"


def _finite(x) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def _fmt_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _check_fold_dir(fold_dir: Path, resume: bool, set_aside_old_run: bool) -> Path | None:
    """Refuse to train over an earlier run unless resuming it or setting it aside; refuse
    ``resume`` with nothing to resume. Returns where an old run was moved, if it was."""
    held = [f for f in RUN_FILES if (fold_dir / f).exists()]
    if resume:
        if not (fold_dir / "last_state.json").is_file():
            what = f" (it holds only {', '.join(held)})" if held else ""
            raise ValueError(f"--resume: nothing to resume in {fold_dir}: no last_state.json{what}; "
                             "drop --resume to start a new run")
        return None
    if held:
        if not set_aside_old_run:
            raise FileExistsError(f"{fold_dir} already holds a run ({', '.join(held)}): add --resume to continue "
                                  "it, or --set-aside-old-run to rename it aside and start again")
        return set_aside(fold_dir)
    return None


def _read_last_state(fold_dir: Path) -> dict:
    """last_state.json, checked against the files it names (one line naming the file otherwise)."""
    path = fold_dir / "last_state.json"
    try:
        state = json.loads(path.read_text())
        int(state["epoch"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a readable training state ({type(err).__name__}: {err}); "
                         "resume is not possible, start again with --set-aside-old-run") from None
    for name, crc in state.get("files", {}).items():
        f = fold_dir / name
        if not f.is_file():
            raise FileNotFoundError(f"--resume: {f} is missing (named by {path})")
        if f.stat().st_size and _crc(f) != crc:
            raise ValueError(f"--resume: {f} does not match {path} (written by another epoch: the run was killed "
                             "during a checkpoint); start again with --set-aside-old-run")
    return state


def _write_csv(path: Path, history: list[dict]) -> None:
    lines = [",".join(CSV_COLUMNS)]
    for r in history:
        lines.append(",".join("" if r.get(c) is None else (f"{r[c]:.8g}" if isinstance(r[c], float) else str(r[c]))
                              for c in CSV_COLUMNS))
    atomic_write_text(path, "\n".join(lines) + "\n")


class _VdlLog:
    """VisualDL scalars per epoch, tagged as PaddleSeg tags its own (Train/loss, Train/lr,
    Evaluate/<metric>), written into the fold folder; step = epoch number (1-based)."""

    def __init__(self, logdir: Path) -> None:
        try:
            from visualdl import LogWriter
        except ImportError as err:
            raise ValueError(f"--use-vdl needs VisualDL (pip install visualdl): {err}") from None
        self.writer = LogWriter(logdir=str(logdir))

    def add(self, rec: dict) -> None:
        step = rec["epoch"] + 1
        self.writer.add_scalar("Train/loss", rec["train_loss"], step)
        self.writer.add_scalar("Train/lr", rec["lr"], step)
        if rec.get("val_aed") is not None:
            self.writer.add_scalar("Evaluate/AED", rec["val_aed"], step)

    def close(self) -> None:
        self.writer.close()


def world_size() -> int:
    """Processes of this job as ``paddle.distributed.launch`` sets them (1 outside the launcher)."""
    return max(1, int(os.environ.get("PADDLE_TRAINERS_NUM", "1") or 1))


def _init_parallel() -> tuple[int, int]:
    """(rank, world size); initialises Paddle's collective environment once under the launcher
    (NCCL on GPUs, gloo on the CPU)."""
    world = world_size()
    if world == 1:
        return 0, 1
    import paddle.distributed as dist

    if not dist.is_initialized():
        dist.init_parallel_env()
    return dist.get_rank(), dist.get_world_size()


def _select_rank_device(device: str, world: int) -> str:
    """``select_device``, then, with several GPU processes, this rank's own GPU."""
    import paddle

    from gamma_kit.runtime import select_device

    chosen = select_device(device)
    if world > 1 and chosen.startswith("gpu"):
        import paddle.distributed as dist

        chosen = f"gpu:{dist.ParallelEnv().device_id}"
        paddle.set_device(chosen)
    return chosen


def train_fold(cfg: dict, fold: int, data: FoveaData, run_dir: str | Path, resume: bool = False,
               init_from: str | Path | None = None, progress: bool = True,
               cache: CanonicalCache | None = None, set_aside_old_run: bool = False,
               resume_command: str | None = None, val_every: int | None = None,
               checkpoint_every: int | None = None, use_vdl: bool | None = None,
               data_parallel: bool | None = None) -> dict:
    """Train fold ``fold`` (1-based) of ``data`` with ``cfg``; returns the metrics dict
    (also written to ``run_dir/fold<k>/metrics.json``, per epoch to ``metrics.csv``).

    Safety: every checkpoint is written atomically, best first, then last.pdparams and
    last.pdopt, then last_state.json (which names them with their CRC-32); SIGINT/SIGTERM
    during that set wait for it to finish; an interruption raises ``safety.Interrupted``
    ("interrupted in epoch N; resume with ``resume_command`` --resume"). A fold folder
    that already holds a run needs ``resume`` or ``set_aside_old_run`` (renamed, never
    deleted). ``resume`` continues after the last complete epoch; it cannot be combined
    with ``init_from``.

    ``val_every`` / ``checkpoint_every`` (default: ``cfg['train']`` keys, else 1):
    validation AED and last.* every that many epochs and always after the last one.
    ``cfg['train']['snapshot_every']`` (0: off): weights-only ``snapshots/epochNNN.pdparams``
    every that many epochs (1-based epoch numbers), for snapshot ensembles and weight averaging.
    ``cfg['train']['average_last']`` (0: off): snapshots of the last K epochs (all of a shorter run), then
    ``averaged.pdparams`` = their mean weights (BatchNorm statistics averaged too), validated
    as ``averaged_aed``.
    ``use_vdl``: VisualDL scalars in the fold folder. A NaN validation AED never blocks
    best.pdparams: the first validated epoch is always saved as best.

    ``data_parallel`` (default: on when started by ``paddle.distributed.launch`` with more
    than one process): ``paddle.DataParallel``; every global batch of ``batch_size`` (the
    same batches, shuffled per epoch, and the same learning-rate schedule as one process)
    is split between the ranks, gradients are averaged; rank 0 alone validates and writes
    checkpoints and logs; every rank reads the same last.* on resume. BatchNorm statistics
    are per rank (not synchronised), so the losses differ slightly from one process.
    Tested with 2 CPU processes (gloo); untested on GPUs.
    """
    import paddle
    from tqdm import tqdm

    from gamma_kit.fovea.inference import _read_state, evaluate_items, load_checkpoint
    from gamma_kit.fovea.loss import heatmap_loss

    if resume and init_from is not None:
        raise ValueError("--resume continues a run from its own last.pdparams; it cannot be combined with "
                         "--init-from (fine-tune into a new run folder instead)")
    tcfg = cfg["train"]
    val_every = int(val_every or tcfg.get("val_every", 1))
    checkpoint_every = int(checkpoint_every or tcfg.get("checkpoint_every", 1))
    use_vdl = bool(tcfg.get("use_vdl", False) if use_vdl is None else use_vdl)
    snapshot_every = int(tcfg.get("snapshot_every", 0))
    bs, epochs = int(tcfg["batch_size"]), int(tcfg["epochs"])
    average_last = min(int(tcfg.get("average_last", 0)), epochs)
    for name, v in (("epochs", epochs), ("batch size", bs), ("val_every", val_every),
                    ("checkpoint_every", checkpoint_every), ("fold", fold)):
        if v < 1:
            raise ValueError(f"{name} must be at least 1, got {v}")
    # Paddle 3 warns on every BatchNorm forward in train mode; the behaviour is the intended one
    warnings.filterwarnings("ignore", message="When training, we now always track global mean")
    run_dir = Path(run_dir)
    fold_dir = run_dir / f"fold{fold}"
    resume_command = resume_command or f"train_fold(cfg, {fold}, data, {str(run_dir)!r}, resume=True)"
    dp = world_size() > 1 if data_parallel is None else bool(data_parallel)
    rank, world = _init_parallel() if dp else (0, 1)
    if bs % world:
        raise ValueError(f"batch size {bs} cannot be split evenly over {world} processes; use a multiple of {world}")
    main = rank == 0                      # rank 0 alone checks the folder and writes files
    progress = progress and main
    if main:
        aside = _check_fold_dir(fold_dir, resume, set_aside_old_run)
        if aside is not None and progress:
            tqdm.write(f"set the earlier run aside: {fold_dir} -> {aside}")
        fold_dir.mkdir(parents=True, exist_ok=True)
    device = _select_rank_device(tcfg["device"], world_size())   # under the launcher: this rank's GPU
    amp = bool(tcfg["amp"]) and device.startswith("gpu")
    split = get_fold(_splits_for(run_dir, list(data.images), cfg, write=main), fold)
    state = _read_last_state(fold_dir) if resume else None
    if main and resume and (fold_dir / "config.yml").is_file():
        from gamma_kit.fovea.config import load_config

        old = model_signature(load_config(fold_dir / "config.yml"))
        if old != model_signature(cfg):
            raise ValueError(f"--resume: {fold_dir} was trained with another model ({old}); this config has "
                             f"{model_signature(cfg)}")
    codec = build_codec(cfg)
    overrides = read_side_overrides(cfg["data"]["side_overrides"]) if cfg["data"]["side_overrides"] else {}
    cache = cache or CanonicalCache(codec.scale, cfg["data"]["cache_dir"], overrides)
    canon = cache.load_all({i: data.images[i] for i in split["train"] + split["val"]}, progress)
    train_items = make_items({i: canon[i] for i in split["train"]}, data.gt, data.gt_name)
    val_items = make_items({i: canon[i] for i in split["val"]}, data.gt, data.gt_name)
    roi = RoiPolicy.from_config(cfg)
    if roi.anchor == "disc" and roi.disc_offset is None:   # learned from this fold's training images only
        roi = dataclasses.replace(roi, disc_offset=fit_disc_offset(train_items))
        cfg = {**cfg, "roi": roi.as_config()}
    if main:
        atomic_write_text(fold_dir / "config.yml", dump_config(cfg))

    seed = int(tcfg["seed"]) + fold
    _set_seed(seed)
    model = build_model(cfg)
    if init_from is not None:
        src, _ = load_checkpoint(init_from, cfg)
        model.set_state_dict(src.state_dict())
    steps = max(1, math.ceil(len(train_items) / bs))
    if tcfg["lr_schedule"] == "cosine":
        lr = paddle.optimizer.lr.CosineAnnealingDecay(float(tcfg["lr"]), T_max=epochs * steps,
                                                      eta_min=float(tcfg["min_lr"]))
    else:
        lr = float(tcfg["lr"])
    opt = paddle.optimizer.Adam(learning_rate=lr, parameters=model.parameters(),
                                weight_decay=paddle.regularizer.L2Decay(float(tcfg["weight_decay"])))
    scaler = paddle.amp.GradScaler() if amp else None
    net = paddle.DataParallel(model) if world > 1 else model   # forward/backward; model = the weights

    history: list[dict] = []
    best_aed, best_epoch, start = math.inf, -1, 0
    files: dict[str, str] = {}
    if state is not None:
        model.set_state_dict(_read_state(fold_dir / "last.pdparams"))
        _load_portable_opt_state(opt, model, _read_state(fold_dir / "last.pdopt"))
        history, best_epoch = state["history"], int(state["best_epoch"])
        best_aed = math.inf if state["best_aed"] is None else float(state["best_aed"])
        files = dict(state.get("files", {}))
        start = int(state["epoch"]) + 1
        # the optimizer state carries the schedule (last step and its lr): the cosine decay is
        # recursive in its last lr, so it must not be stepped again here

    ds = FoveaCropDataset(train_items, codec, train=True, shift=tuple(cfg["data"]["shift"]), seed=seed)
    vdl = _VdlLog(fold_dir) if use_vdl and main else None
    bar = tqdm(range(start, epochs), desc=f"fold {fold}", unit="epoch", disable=not progress,
               initial=start, total=epochs)
    step_times: list[float] = []
    warned = False
    epoch = start
    try:
        with _SignalGuard() as guard:
            for epoch in bar:
                t0 = time.perf_counter()
                ds.set_epoch(epoch)
                paddle.seed(seed * 100003 + epoch)   # dropout masks per epoch: a resumed run repeats them
                model.train()
                losses = []
                batches = iterate_batches(ds, bs, shuffle=True, rng=np.random.default_rng([seed, epoch]))
                for x, y, _ in batches:
                    ts = _clock()
                    if world > 1:                       # this rank's share of the global batch
                        x, y = x[rank::world], y[rank::world]
                    x, y = paddle.to_tensor(x), paddle.to_tensor(y)
                    with paddle.amp.auto_cast(enable=amp):
                        pred = net(x)
                    loss = heatmap_loss(pred.astype("float32"), y, cfg["loss"]["variance_reward"])
                    if scaler is not None:
                        scaler.scale(loss).backward()
                        scaler.step(opt)
                        scaler.update()
                    else:
                        loss.backward()
                        opt.step()
                    opt.clear_grad()
                    if isinstance(lr, paddle.optimizer.lr.LRScheduler):
                        lr.step()
                    losses.append(float(loss))
                    step_times.append(_clock() - ts)
                    if main and not warned and len(step_times) in (1, min(3, steps)):
                        # after the first step only when far over (it includes the warm-up)
                        margin = 10.0 if len(step_times) < min(3, steps) else 1.0
                        warned = _warn_if_long(step_times, steps, epochs - epoch, device, margin)
                last = epoch == epochs - 1
                aed = None
                if main and (last or (epoch + 1) % val_every == 0):
                    aed, _ = evaluate_items(model, val_items, codec, amp, bs, roi)
                mean_loss = float(np.mean(losses))
                if world > 1:                           # the epoch's loss over every rank's shards
                    import paddle.distributed as dist

                    t = paddle.to_tensor([mean_loss], dtype="float64")
                    dist.all_reduce(t)
                    mean_loss = float(t.numpy()[0]) / world
                rec = {"epoch": epoch, "train_loss": mean_loss, "val_aed": _finite(aed),
                       "lr": float(opt.get_lr()), "seconds": round(time.perf_counter() - t0, 2)}
                history.append(rec)
                if not main:
                    continue
                with guard.writing():
                    # best: the first validated epoch always (even with a NaN AED), then any lower AED
                    if aed is not None and (best_epoch < 0 or (math.isfinite(aed) and not aed >= best_aed)):
                        best_aed, best_epoch = (aed if math.isfinite(aed) else math.inf), epoch
                        files["best.pdparams"] = guard.save(model.state_dict(), fold_dir / "best.pdparams")
                    if last or (epoch + 1) % checkpoint_every == 0:
                        files["last.pdparams"] = guard.save(model.state_dict(), fold_dir / "last.pdparams")
                        files["last.pdopt"] = guard.save(_portable_opt_state(opt, model), fold_dir / "last.pdopt")
                        atomic_write_text(fold_dir / "last_state.json", json.dumps(
                            {"epoch": epoch, "best_aed": _finite(best_aed), "best_epoch": best_epoch,
                             "history": history, "files": files}))
                    if (snapshot_every and (epoch + 1) % snapshot_every == 0) or epoch >= epochs - average_last:
                        guard.save(model.state_dict(), fold_dir / "snapshots" / f"epoch{epoch + 1:03d}.pdparams")
                    _write_csv(fold_dir / "metrics.csv", history)
                    if vdl is not None:
                        vdl.add(rec)
                bar.set_postfix(loss=f"{rec['train_loss']:.3f}", aed="-" if aed is None else f"{aed:.4f}",
                                best=f"{best_aed:.4f}")
    except KeyboardInterrupt:
        bar.close()
        saved = int(json.loads((fold_dir / "last_state.json").read_text())["epoch"]) + 1 \
            if (fold_dir / "last_state.json").is_file() else 0
        done = {0: "no epoch was saved yet", 1: "epoch 1 is saved"}.get(saved, f"epochs 1-{saved} are saved")
        raise Interrupted(f"interrupted in epoch {epoch + 1} of {epochs} ({done} in {fold_dir}); "
                          f"resume with {resume_command} --resume") from None
    finally:
        if vdl is not None:
            vdl.close()
    bar.close()
    if world > 1:
        import paddle.distributed as dist

        dist.barrier()                   # every rank leaves after rank 0's last files are written
    averaged_aed = None
    if main and average_last:      # the last epochs' snapshots are on disk, so this survives a resume
        from gamma_kit.fovea.inference import average_weights

        snaps = [fold_dir / "snapshots" / f"epoch{e:03d}.pdparams" for e in range(epochs - average_last + 1, epochs + 1)]
        model.set_state_dict(average_weights(snaps))
        atomic_save_paddle(model.state_dict(), fold_dir / "averaged.pdparams")
        averaged_aed, _ = evaluate_items(model, val_items, codec, amp, bs, roi)
    metrics = {"fold": fold, "config": cfg["name"], "device": device, "n_train": len(train_items),
               "n_val": len(val_items), "best_aed": _finite(best_aed), "best_epoch": best_epoch,
               "best_score": 1 / (best_aed + 0.1) if math.isfinite(best_aed) else None,
               "last_aed": history[-1]["val_aed"] if history else None,
               "averaged_aed": _finite(averaged_aed), "history": history}
    if main:
        atomic_write_text(fold_dir / "metrics.json", json.dumps(metrics, indent=1))
    return metrics


def _warn_if_long(step_times: list[float], steps: int, epochs_left: int, device: str, margin: float = 1.0) -> bool:
    """One line (stderr) when the first steps say this run will take more than ``margin`` x
    LONG_RUN_HOURS here; returns whether it was printed."""
    from tqdm import tqdm

    per_step = float(np.mean(step_times[1:] if len(step_times) > 1 else step_times))   # first step warms up
    epoch_s = per_step * steps
    total = epoch_s * epochs_left
    if total <= margin * LONG_RUN_HOURS * 3600:
        return False
    tqdm.write(f"note: on {device} one epoch of this config takes ~{_fmt_duration(epoch_s)}, so {epochs_left} "
               f"epochs take ~{_fmt_duration(total)}; on a CPU use --config {CPU_CONFIG_HINT} "
               "(a 1/4-scale version of the method, ~14 s per epoch of 80 images on 2 cores)", file=sys.stderr)
    return True


def cross_validate(cfg: dict, data: FoveaData, run_dir: str | Path, folds: list[int] | None = None,
                   resume: bool = False, progress: bool = True, parallel_folds: bool = False, **fold_kw) -> dict:
    """Train every fold (sharing one image cache); writes ``run_dir/cv_metrics.json`` and
    ``run_dir/training_curves.png``. ``resume`` continues the folds that have a
    last_state.json and starts the others; ``fold_kw`` go to :func:`train_fold`
    (``set_aside_old_run``, ``resume_command``, ``val_every``, ``checkpoint_every``, ``use_vdl``).

    ``parallel_folds`` under ``paddle.distributed.launch`` (N processes, e.g. one per GPU):
    process r trains folds r+1, r+1+N, ... on its own device, each fold single-device; after
    a barrier process 0 pools every fold's metrics.json. Tested with 2 CPU processes.
    """
    run_dir = Path(run_dir)
    overrides = read_side_overrides(cfg["data"]["side_overrides"]) if cfg["data"]["side_overrides"] else {}
    cache = CanonicalCache(cfg["codec"]["scale"], cfg["data"]["cache_dir"], overrides)
    folds = folds or list(range(1, int(cfg["train"]["n_folds"]) + 1))
    started = {k: (run_dir / f"fold{k}" / "last_state.json").is_file() for k in folds}
    if resume and not any(started.values()):
        raise ValueError(f"--resume: nothing to resume in {run_dir}: no fold{{k}}/last_state.json for folds {folds}; "
                         "drop --resume to start a new run")
    rank, world = _init_parallel() if parallel_folds else (0, 1)
    mine = folds[rank::world]
    per_fold = {k: train_fold(cfg, k, data, run_dir, resume=resume and started[k], progress=progress and rank == 0,
                              cache=cache, data_parallel=False if parallel_folds else None, **fold_kw)
                for k in mine}
    if world > 1:
        import paddle.distributed as dist

        dist.barrier()
        if rank != 0:
            return {"folds": {k: {"best_aed": m["best_aed"], "last_aed": m["last_aed"], "n_val": m["n_val"]}
                              for k, m in per_fold.items()}, "rank": rank}
        per_fold = {k: json.loads((run_dir / f"fold{k}" / "metrics.json").read_text()) for k in folds}
    if world_size() > 1 and not parallel_folds:
        import paddle.distributed as dist

        if dist.is_initialized() and dist.get_rank() != 0:     # data-parallel folds: rank 0 pools
            return {"rank": dist.get_rank()}
    n = sum(m["n_val"] for m in per_fold.values())

    def pooled(key: str) -> float | None:
        vals = [(m.get(key), m["n_val"]) for m in per_fold.values()]   # metrics.json of older runs lack keys
        return None if any(v is None for v, _ in vals) else sum(v * w for v, w in vals) / n

    out = {"folds": {k: {"best_aed": m["best_aed"], "last_aed": m["last_aed"],
                         "averaged_aed": m.get("averaged_aed"), "n_val": m["n_val"]} for k, m in per_fold.items()},
           "mean_best_aed": pooled("best_aed"), "mean_last_aed": pooled("last_aed"),
           "mean_averaged_aed": pooled("averaged_aed")}
    atomic_write_text(run_dir / "cv_metrics.json", json.dumps(out, indent=1))
    from gamma_kit.fovea.figures import plot_training_curves

    plot_training_curves(run_dir / "training_curves.png", [run_dir / f"fold{k}" / "metrics.json" for k in folds])
    return out
