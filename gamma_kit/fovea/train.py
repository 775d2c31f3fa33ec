"""Train the fovea heatmap U-Net on one fold (``train_fold``) or all (``cross_validate``): the
entry points the CLI, the demo, the notebooks and the benchmarks call.

The work is in gamma_kit.fovea.trainer (the loop, as named steps with logging callbacks),
gamma_kit.fovea.run_dir (what the run folder holds: splits, checkpoints, logs; its layout is
documented there) and gamma_kit.fovea.parallel (several processes under paddle.distributed.launch).
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

import gamma_kit  # noqa: F401  (threads before paddle)
from gamma_kit.data import list_images, load_fovea_split, match_gt_to_images, read_fovea_gt
from gamma_kit.fovea.dataset import CanonicalCache
from gamma_kit.fovea.parallel import barrier, init_parallel, rank_and_world, world_size
from gamma_kit.procs import spawn_local
from gamma_kit.fovea.run_dir import POINTER_NAME, RUN_FILES, FoldFolder
from gamma_kit.fovea.trainer import LONG_RUN_HOURS, Trainer
from gamma_kit.runtime import launcher_rank
from gamma_kit.safety import RunLock, atomic_write_text

__all__ = ["FoveaData", "load_training_data", "train_fold", "cross_validate", "pool_folds", "RUN_FILES",
           "LONG_RUN_HOURS"]


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


def train_fold(cfg: dict, fold: int, data: FoveaData, run_dir: str | Path, resume: bool = False,
               init_from: str | Path | None = None, progress: bool = True,
               cache: CanonicalCache | None = None, set_aside_old_run: bool = False,
               resume_command: str | None = None, val_every: int | None = None,
               checkpoint_every: int | None = None, use_vdl: bool | None = None,
               data_parallel: bool | None = None, processes: int = 1) -> dict:
    """Train fold ``fold`` (1-based) of ``data`` with ``cfg``; returns the metrics dict
    (also written to ``run_dir/fold<k>/metrics.json``, per epoch to ``metrics.csv``).

    Safety (gamma_kit.fovea.run_dir): the fold folder is locked while the run trains (a second
    run into it is refused in one line naming the first; a lock left by a killed process is
    taken over). Each checkpoint is a set ``ckpt-NNN/`` (weights, optimizer, state) committed by
    replacing one pointer file, so a kill at any instant, or a full disk, leaves the previous
    complete set to resume from; what the kill left is removed (and named) at the next start.
    SIGINT/SIGTERM during a set wait for it to finish; an interruption raises
    ``safety.Interrupted`` ("interrupted in epoch N; resume with ``resume_command`` --resume").
    A fold folder that already holds a run needs ``resume`` or ``set_aside_old_run`` (renamed,
    never deleted). ``resume`` continues after the last complete set with the run's own config
    (``run_dir.resume_config``: an edited fold config.yml or another config is refused naming the
    keys; device, AMP, the validation / checkpoint / snapshot intervals, VisualDL and the cache
    folder may change; ``train.epochs`` may grow under a constant learning rate only); it cannot
    be combined with ``init_from``.

    ``val_every`` / ``checkpoint_every`` (default: ``cfg['train']`` keys, else 1):
    validation AED and a checkpoint set every that many epochs and always after the last one
    (a better epoch between sets reaches best.pdparams with the next set).
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
    checkpoints and logs; every rank reads the same checkpoint set on resume. BatchNorm statistics
    are per rank (not synchronised), so the losses differ slightly from one process.
    Tested with 2 CPU processes (gloo); untested on GPUs.

    ``processes`` > 1 (``--procs``; ``procs.local_processes`` picks it): that many processes of
    this machine train the fold that way (``procs.spawn_local``), without a launcher; the
    result is rank 0's.
    """
    if processes > 1:
        return spawn_local(train_fold, dict(
            cfg=cfg, fold=fold, data=data, run_dir=run_dir, resume=resume, init_from=init_from, progress=progress,
            cache=cache, set_aside_old_run=set_aside_old_run, resume_command=resume_command, val_every=val_every,
            checkpoint_every=checkpoint_every, use_vdl=use_vdl, data_parallel=data_parallel), processes)
    return Trainer(cfg, fold, data, run_dir, resume=resume, init_from=init_from, progress=progress, cache=cache,
                   set_aside_old_run=set_aside_old_run, resume_command=resume_command, val_every=val_every,
                   checkpoint_every=checkpoint_every, use_vdl=use_vdl, data_parallel=data_parallel).run()


def cross_validate(cfg: dict, data: FoveaData, run_dir: str | Path, folds: list[int] | None = None,
                   resume: bool = False, progress: bool = True, parallel_folds: bool = False, processes: int = 1,
                   **fold_kw) -> dict:
    """Train every fold (sharing one image cache); writes ``run_dir/cv_metrics.json`` and
    ``run_dir/training_curves.png``. ``resume`` continues the folds that have a checkpoint
    set and starts the others; ``fold_kw`` go to :func:`train_fold`
    (``set_aside_old_run``, ``resume_command``, ``val_every``, ``checkpoint_every``, ``use_vdl``).

    ``parallel_folds`` under ``paddle.distributed.launch`` (N processes, e.g. one per GPU):
    process r trains folds r+1, r+1+N, ... on its own device, each fold single-device; after
    a barrier process 0 pools every fold's metrics.json. Tested with 2 CPU processes.
    A second cross-validation into ``run_dir`` while one runs is refused in one line naming it
    (``safety.RunLock``). ``processes`` > 1: that many processes of this machine, started here
    (``procs.spawn_local``), as the launcher's would be: data-parallel folds, or with
    ``parallel_folds`` one fold per process.
    """
    if processes > 1:
        return spawn_local(cross_validate, dict(cfg=cfg, data=data, run_dir=run_dir, folds=folds, resume=resume,
                                                progress=progress, parallel_folds=parallel_folds, **fold_kw), processes)
    run_dir = Path(run_dir)
    # one cross-validation per run folder: the launcher's process 0 holds <run_dir>.lock (each fold
    # is locked as well, by the trainer)
    with RunLock(run_dir, "cross-validation") if launcher_rank() == 0 else contextlib.nullcontext():
        return _cross_validate(cfg, data, run_dir, folds, resume, progress, parallel_folds, fold_kw)


def _cross_validate(cfg: dict, data: FoveaData, run_dir: Path, folds: list[int] | None, resume: bool,
                    progress: bool, parallel_folds: bool, fold_kw: dict) -> dict:
    cache = CanonicalCache.for_config(cfg)
    folds = folds or list(range(1, int(cfg["train"]["n_folds"]) + 1))
    started = {k: FoldFolder(run_dir / f"fold{k}").has_checkpoint() for k in folds}
    if resume and not any(started.values()):
        raise ValueError(f"--resume: nothing to resume in {run_dir}: no fold{{k}}/{POINTER_NAME} (a complete "
                         f"checkpoint set) for folds {folds}; drop --resume to start a new run")
    rank, world = init_parallel() if parallel_folds else (0, 1)
    per_fold = {k: train_fold(cfg, k, data, run_dir, resume=resume and started[k], progress=progress and rank == 0,
                              cache=cache, data_parallel=False if parallel_folds else None, **fold_kw)
                for k in folds[rank::world]}
    if world > 1:
        barrier(world, "cv-folds-done")
        if rank != 0:
            return {"folds": {k: {"best_aed": m["best_aed"], "last_aed": m["last_aed"], "n_val": m["n_val"]}
                              for k, m in per_fold.items()}, "rank": rank}
        per_fold = {k: json.loads((run_dir / f"fold{k}" / "metrics.json").read_text()) for k in folds}
    if world_size() > 1 and not parallel_folds and rank_and_world()[0] != 0:   # data-parallel folds: rank 0 pools
        return {"rank": rank_and_world()[0]}
    out = pool_folds(per_fold)
    atomic_write_text(run_dir / "cv_metrics.json", json.dumps(out, indent=1))
    from gamma_kit.fovea.figures import plot_training_curves

    plot_training_curves(run_dir / "training_curves.png", [run_dir / f"fold{k}" / "metrics.json" for k in folds])
    return out


def pool_folds(per_fold: dict[int, dict]) -> dict:
    """cv_metrics.json from each fold's metrics: the folds' AEDs and their means weighted by the
    number of validation images (None when a fold lacks the value)."""
    n = sum(m["n_val"] for m in per_fold.values())

    def pooled(key: str) -> float | None:
        vals = [(m.get(key), m["n_val"]) for m in per_fold.values()]   # metrics.json of older runs lack keys
        return None if any(v is None for v, _ in vals) else sum(v * w for v, w in vals) / n

    return {"folds": {k: {"best_aed": m["best_aed"], "last_aed": m["last_aed"],
                          "averaged_aed": m.get("averaged_aed"), "n_val": m["n_val"]} for k, m in per_fold.items()},
            "mean_best_aed": pooled("best_aed"), "mean_last_aed": pooled("last_aed"),
            "mean_averaged_aed": pooled("averaged_aed")}
