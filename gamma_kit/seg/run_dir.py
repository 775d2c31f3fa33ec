"""A seg training run folder (``--save-dir``) on disk: what marks a run, which checkpoint resumes it.

PaddleSeg writes ``iter_<n>/model.pdparams`` and ``iter_<n>/model.pdopt`` every ``--save-interval``
iterations (the kit makes each file atomic); the kit adds ``model.yml`` (the run's resolved config) and
the model folders. A checkpoint is complete when both files are there and non-empty
(``latest_checkpoint``); ``clean_leftovers`` removes what a killed write left and names what cannot be
resumed from. A folder that holds a run needs ``--resume-model`` or ``--set-aside-old-run``
(``check_save_dir``); a resume must keep the run's config (``check_resumed_config``) and hand PaddleSeg
a checkpoint that fits the model (``check_resume_model``). The lock on the folder is
``gamma_kit.safety.RunLock``, taken by ``training.run_training``.
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from gamma_kit.safety import temporary_leftovers
from gamma_kit.seg.model_dir import MODEL_CONFIG_NAME, WEIGHTS_NAME, check_state_dict, load_paddle_file

__all__ = ["OPTIMIZER_NAME", "held_run_files", "check_save_dir", "check_resumed_config", "check_resume_model",
           "latest_checkpoint", "clean_leftovers", "interrupted_line", "resume_iter"]


OPTIMIZER_NAME = "model.pdopt"     # PaddleSeg's optimizer state beside the weights in iter_<n>/


def held_run_files(save_dir: Path) -> list[str]:
    """What in ``save_dir`` marks an earlier training run (``iter_<n>/``, ``last_model/``,
    ``best_model/``, ``model.yml``), sorted; empty when there is none (or no folder)."""
    if not save_dir.is_dir():
        return []
    return sorted(p.name for p in save_dir.iterdir()
                  if p.name in ("last_model", "best_model", MODEL_CONFIG_NAME) or
                  (p.is_dir() and p.name.startswith("iter_")))


def check_save_dir(save_dir: Path, resume_model: str | None, set_aside_old_run: bool) -> bool:
    """Refuse to train over an earlier run in ``save_dir`` unless resuming it (``resume_model``)
    or setting it aside; returns True when the old run is to be renamed aside before training."""
    held = held_run_files(save_dir)
    if resume_model is not None or not held:
        return False
    if not set_aside_old_run:
        shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
        ckpt = latest_checkpoint(save_dir)
        raise FileExistsError(f"{save_dir} already holds a run ({shown}): add --resume-model "
                              f"{ckpt if ckpt is not None else save_dir / 'iter_<n>'} to continue it, or "
                              "--set-aside-old-run to rename it aside and start again")
    return True


def _flat(d, prefix: str = "") -> dict:
    """{"a.b.c": value} of a nested dict (lists kept whole)."""
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def check_resumed_config(cfg, save_dir: Path) -> None:
    """A resumed run keeps the config it was trained with (``save_dir/model.yml``): a config that
    differs (an edited file, other ``--opts``, another ``--iters``) is refused in one line naming the
    differing keys, so that nothing rewrites the run's ``model.yml`` silently. No ``model.yml``
    (a run of PaddleSeg's own tools): nothing to compare."""
    path = save_dir / MODEL_CONFIG_NAME
    if not path.is_file():
        return
    try:
        old = _flat(yaml.safe_load(path.read_text()))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc}); it is the config this run was trained with") from exc
    new = _flat(yaml.safe_load(str(cfg)))
    differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if differ:
        shown = ", ".join(differ[:6]) + (", ..." if len(differ) > 6 else "")
        raise ValueError(f"--resume-model: this config differs from the one {save_dir} was trained with "
                         f"({path}) in {shown}; resume with --config {path} and the same flags, or train a new "
                         "run into another --save-dir")


def check_resume_model(resume_model: str | os.PathLike, model=None, cfg_path: str = "the config") -> int:
    """Check a PaddleSeg checkpoint folder before ``--resume-model`` hands it to PaddleSeg, which
    would fail with a traceback (or, for weights of another model, warn and train from random
    weights): it must be named ``<...>_<n>`` (``iter_<n>``, the iteration PaddleSeg resumes
    from) and hold a loadable ``model.pdparams`` and ``model.pdopt``; with ``model``, the weights
    must fit it (``model_dir.check_state_dict``; without ``model`` the files are not loaded).
    Returns ``n``."""
    d = Path(resume_model)
    hint = "resume from another iter_<n> checkpoint or train without --resume-model"
    if not d.is_dir():
        raise FileNotFoundError(f"resume_model {d} is not a folder (give a checkpoint folder iter_<n> "
                                "from an earlier run's --save-dir)")
    tail = os.path.normpath(os.fspath(d)).split("_")[-1]      # exactly how PaddleSeg's resume reads it
    if not tail.isdigit():
        raise ValueError(f"resume_model {d}: expected a checkpoint folder named iter_<n> (PaddleSeg takes the "
                         "iteration from the name), as train writes them under --save-dir")
    for name in (WEIGHTS_NAME, OPTIMIZER_NAME):
        if not (d / name).is_file():
            raise FileNotFoundError(f"resume_model {d} holds no {name} (nothing to resume); {hint}")
        if (d / name).stat().st_size == 0:
            raise ValueError(f"{d / name}: empty file (0 bytes; an interrupted save?): {hint}")
    if model is not None:          # the loads, once the model exists to check the weights against
        state = load_paddle_file(d / WEIGHTS_NAME, hint)
        load_paddle_file(d / OPTIMIZER_NAME, hint)
        if not isinstance(state, dict):
            raise ValueError(f"{d / WEIGHTS_NAME}: holds no parameter dictionary; {hint}")
        check_state_dict(state, model, d / WEIGHTS_NAME, cfg_path)
    return int(tail)


def latest_checkpoint(save_dir: str | os.PathLike) -> Path | None:
    """The complete ``iter_<n>/`` checkpoint (weights and optimizer state) with the largest ``n``
    in ``save_dir``, or None."""
    found = [(int(d.name[5:]), d) for d in Path(save_dir).glob("iter_*")
             if d.name[5:].isdigit() and all((d / f).is_file() and (d / f).stat().st_size
                                             for f in (WEIGHTS_NAME, OPTIMIZER_NAME))]
    return max(found)[1] if found else None


def clean_leftovers(save_dir: Path) -> str | None:
    """Remove the hidden temporary files a killed write left in ``save_dir`` and its ``iter_<n>/``
    (``safety.temporary_leftovers``) and name the ``iter_<n>/`` folders that lack weights or optimizer
    state (``latest_checkpoint`` passes them over; PaddleSeg rewrites them when it gets there again);
    returns the one line that says so, or None when there was nothing."""
    gone = temporary_leftovers(save_dir)
    for p in gone:
        p.unlink()
    partial = sorted(d.name for d in save_dir.glob("iter_*") if d.is_dir() and d.name[5:].isdigit()
                     and not all((d / f).is_file() and (d / f).stat().st_size for f in (WEIGHTS_NAME, OPTIMIZER_NAME)))
    if not gone and not partial:
        return None
    parts = []
    if gone:
        parts.append(f"removed {len(gone)} temporary file(s) an interrupted write left "
                     f"({', '.join(str(p.relative_to(save_dir)) for p in gone[:3])})")
    if partial:
        parts.append(f"{', '.join(partial)} {'is' if len(partial) == 1 else 'are'} incomplete (a write was "
                     "interrupted) and will not be resumed from")
    return f"note: {save_dir}: " + "; ".join(parts)


def interrupted_line(save_dir: str | os.PathLike) -> str:
    """The one line for a training run stopped by Ctrl-C / SIGTERM: how to resume, or why it cannot."""
    ckpt = latest_checkpoint(save_dir)
    if ckpt is None:
        return (f"interrupted before the first checkpoint in {save_dir} (PaddleSeg writes one every --save-interval "
                "iterations, by default only at the end): nothing to resume; rerun the train command, with "
                "--save-interval N to keep checkpoints as it goes")
    return (f"interrupted; the last checkpoint is {ckpt}: resume with the same train command plus "
            f"--resume-model {ckpt}")


def resume_iter(resume_model: str | None) -> int:
    """The iteration a PaddleSeg checkpoint folder ``iter_<n>`` resumes from (0 when unknown)."""
    if resume_model is None:
        return 0
    tail = Path(resume_model).name
    return int(tail.split("_")[-1]) if tail.startswith("iter_") and tail.split("_")[-1].isdigit() else 0
