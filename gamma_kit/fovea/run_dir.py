"""The state of a fovea run folder on disk: what the trainer writes there and reads back on resume.

Run layout (nothing is written outside ``run_dir``)::

    runs/<name>/splits.json            # folds, computed once (gamma_kit.fovea.folds)
    runs/<name>/cv_metrics.json, training_curves.png   # after ``cv``
    runs/<name>/fold<k>.lock           # while a run trains fold k (gamma_kit.safety.RunLock)
    runs/<name>/fold<k>/config.yml     # resolved config of this fold (what predict builds)
    runs/<name>/fold<k>/best.pdparams  # lowest validation AED so far
    runs/<name>/fold<k>/last_checkpoint.json          # the pointer: {"folder": "ckpt-NNN", "epoch": N-1}
    runs/<name>/fold<k>/ckpt-NNN/model.pdparams, model.pdopt, state.json   # the set after epoch NNN
    runs/<name>/fold<k>/snapshots/epochNNN.pdparams   # weights-only snapshots (1-based epochs)
    runs/<name>/fold<k>/averaged.pdparams             # mean weights of the last epochs (train.average_last)
    runs/<name>/fold<k>/metrics.json   # per-epoch loss, validation AED, lr; best epoch
    runs/<name>/fold<k>/metrics.csv    # the same per epoch (epoch is 0-based, val_aed empty when not validated)
    runs/<name>/fold<k>/vdlrecords.*.log   # with use_vdl: VisualDL scalars (gamma_kit.fovea.trainer)

**Checkpoint sets.** Everything a resume needs is one set, ``ckpt-NNN/``: the weights, the
optimizer (with its learning-rate schedule), and ``state.json`` (epoch, history, best AED and epoch,
the config the run trains with, and the CRC-32 of every file of the set and of best.pdparams),
written last. A set is committed by replacing the small pointer file ``last_checkpoint.json``
(``os.replace``): before that instant the previous set is the run's state, after it the new one.
Then the set's ``best.pdparams`` (when the best epoch changed since the previous set) moves onto
``fold<k>/best.pdparams`` and the previous set is removed. A kill at any instant leaves a complete
set behind the pointer; what it interrupted (an unfinished set, a superseded one, a hidden
temporary file) is removed, and named in one line, at the next start (``clean_leftovers``), and a
best.pdparams not yet moved is moved then. A set is written once and never changed, so a CRC
mismatch means the file was changed afterwards (a disk fault or another program), not a kill.
Every file is written atomically (temporary file + fsync + rename, gamma_kit.safety).

Run folders of older versions (flat ``last.pdparams``, ``last.pdopt``, ``last_state.json``) are
read by predict and export (gamma_kit.fovea.checkpoints) but not resumed: one line says so.
Epochs are 0-based in the JSON and CSV files, 1-based in file and folder names and messages.
"""
from __future__ import annotations

import json
import re
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from gamma_kit.fovea.folds import make_splits, read_splits, write_splits
from gamma_kit.safety import atomic_save_paddle, atomic_write_text, fsync_replace, set_aside, temporary_leftovers

__all__ = ["RUN_FILES", "CSV_COLUMNS", "POINTER_NAME", "LEGACY_FILES", "RESUME_MAY_CHANGE", "file_crc",
           "splits_for", "fold_of", "last_weights", "LastCheckpoint", "FoldFolder", "resume_config"]

POINTER_NAME = "last_checkpoint.json"
SET_PREFIX = "ckpt-"
SET_STATE = "state.json"
_SET_NAME = re.compile(rf"{SET_PREFIX}\d{{3,}}")
WEIGHTS, OPTIMIZER, BEST = "model.pdparams", "model.pdopt", "best.pdparams"
#: the flat resume files of older versions (read for prediction, not resumed)
LEGACY_FILES = ("last_state.json", "last.pdparams", "last.pdopt")
#: files that make a fold folder "hold a run"
RUN_FILES = (POINTER_NAME, BEST, "metrics.json", "metrics.csv", *LEGACY_FILES)
CSV_COLUMNS = ("epoch", "train_loss", "val_aed", "lr", "seconds")
#: config keys a resume may change: where and how the run executes or logs, not what it learns
RESUME_MAY_CHANGE = ("train.device", "train.amp", "train.val_every", "train.checkpoint_every", "train.use_vdl",
                     "train.snapshot_every", "data.cache_dir")

#: called with a label (the file or step, e.g. "ckpt-002/model.pdopt", "last_checkpoint.json") before
#: every write into a fold folder; tests stop the process there to check every kill point
fault_hook: Callable[[str], None] | None = None


def _step(label: str) -> None:
    if fault_hook is not None:
        fault_hook(label)


def file_crc(path: str | Path) -> str:
    """CRC-32 of a file as 8 hex digits (ties a set's state.json to the files it names)."""
    crc = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            crc = zlib.crc32(chunk, crc)
    return f"{crc:08x}"


def splits_for(run_dir: Path, ids: list[str], cfg: dict, write: bool = True) -> list[dict]:
    """The run's folds: ``run_dir/splits.json`` when it exists (refused when written for other
    images), else computed from ``data.split_seed`` and written (``write``: rank 0 only)."""
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


def _csv_text(history: list[dict]) -> str:
    lines = [",".join(CSV_COLUMNS)]
    for r in history:
        lines.append(",".join("" if r.get(c) is None else (f"{r[c]:.8g}" if isinstance(r[c], float) else str(r[c]))
                              for c in CSV_COLUMNS))
    return "\n".join(lines) + "\n"


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise TypeError(f"a {type(data).__name__}, not an object")
        return data
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: not a readable {what} ({type(err).__name__}: {err}); resume is not possible, "
                         "start again with --set-aside-old-run") from None


def _pointed_set(fold: Path) -> Path | None:
    """The set folder the pointer names (None without a pointer); one line when it is broken."""
    pointer = fold / POINTER_NAME
    if not pointer.is_file():
        return None
    name = str(_read_json(pointer, "checkpoint pointer").get("folder", ""))
    if not name.startswith(SET_PREFIX) or "/" in name or not (fold / name).is_dir():
        raise FileNotFoundError(f"{pointer} names the checkpoint set {name!r}, which is not in {fold}")
    return fold / name


def fold_of(checkpoint: str | Path) -> Path:
    """The fold folder a checkpoint file belongs to: its folder, or for a file of a checkpoint set
    (``fold<k>/ckpt-NNN/model.pdparams``) the folder above (where config.yml is)."""
    parent = Path(checkpoint).parent
    return parent.parent if _SET_NAME.fullmatch(parent.name) else parent


def last_weights(fold: str | Path) -> Path | None:
    """The weights of the fold's last complete checkpoint (a set's model.pdparams, or an older run's
    last.pdparams), or None (gamma_kit.fovea.checkpoints reads it for ``which="last"``)."""
    fold = Path(fold)
    try:
        s = _pointed_set(fold)
    except (ValueError, FileNotFoundError):
        s = None
    if s is not None and (s / WEIGHTS).is_file():
        return s / WEIGHTS
    return fold / "last.pdparams" if (fold / "last.pdparams").is_file() else None


@dataclass
class LastCheckpoint:
    """A complete checkpoint set: its folder and its state.json."""

    folder: Path
    state: dict

    @property
    def weights(self) -> Path:
        return self.folder / WEIGHTS

    @property
    def optimizer(self) -> Path:
        return self.folder / OPTIMIZER

    @property
    def epochs_done(self) -> int:
        return int(self.state["epoch"]) + 1


class FoldFolder:
    """``run_dir/fold<k>``: the checks before a run starts, the checkpoint sets and logs it
    writes, and the set a resume reads back."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.best_crc: str | None = None       # best.pdparams as the last set recorded it

    @property
    def pointer(self) -> Path:
        return self.path / POINTER_NAME

    def has_checkpoint(self) -> bool:
        """A complete set (or an older run's last_state.json) to resume from."""
        return self.pointer.is_file() or (self.path / LEGACY_FILES[0]).is_file()

    def prepare(self, resume: bool, set_aside_old_run: bool) -> Path | None:
        """Refuse to train over an earlier run unless resuming it or setting it aside; refuse
        ``resume`` with nothing (or an older run) to resume; create the folder. Returns where an
        old run was moved."""
        held = [f for f in RUN_FILES if (self.path / f).exists()]
        if resume:
            self._check_resumable(held)
            return None
        aside = None
        if held:
            if not set_aside_old_run:
                raise FileExistsError(f"{self.path} already holds a run ({', '.join(held)}): add --resume to "
                                      "continue it, or --set-aside-old-run to rename it aside and start again")
            aside = set_aside(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        return aside

    def _check_resumable(self, held: list[str]) -> None:
        if self.pointer.is_file():
            return
        if (self.path / LEGACY_FILES[0]).is_file():
            raise ValueError(f"--resume: {self.path} was written by an older gamma_kit (flat last.pdparams, "
                             "last.pdopt, last_state.json): predict and export read it, but it cannot be resumed; "
                             f"start again with --set-aside-old-run, or fine-tune from it with --init-from "
                             f"{self.path / 'last.pdparams'} into a new --run-dir")
        partial = sorted(p.name for p in self.path.glob(f"{SET_PREFIX}*") if p.is_dir())
        what = f" (it holds only {', '.join(held)})" if held else ""
        left = f"; {', '.join(partial)} was left unfinished by an interrupted write" if partial else ""
        raise ValueError(f"--resume: nothing to resume in {self.path}: no complete checkpoint set "
                         f"({POINTER_NAME}){what}{left}; drop --resume to start a new run")

    def clean_leftovers(self) -> list[str]:
        """Remove what an interrupted write left (sets the pointer does not name, hidden temporary
        files and folders); returns their names for the one line that says so."""
        if not self.path.is_dir():
            return []
        try:
            keep = _pointed_set(self.path)
        except (ValueError, FileNotFoundError):
            return []                 # a broken pointer: leave everything for the resume to name
        sets = [p for p in self.path.glob(f"{SET_PREFIX}*") if _SET_NAME.fullmatch(p.name) and p.is_dir()]
        sets = [p for p in sets if p != keep]
        temporary = [p for p in temporary_leftovers(self.path) if p.parent not in sets]
        gone = []
        for p in sorted(sets + temporary):
            _step(f"remove {p.relative_to(self.path)}")
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            gone.append(str(p.relative_to(self.path)) + ("/" if p in sets else ""))
        return gone

    def read_last(self, finish_commit: bool = True) -> LastCheckpoint:
        """The set the pointer names, checked against the CRCs in its state.json (one line naming the
        file otherwise). ``finish_commit`` (rank 0): a best.pdparams its commit had not moved yet is
        moved now, and fold<k>/best.pdparams is checked against the set's record of it."""
        folder = _pointed_set(self.path)
        if folder is None:
            self._check_resumable([f for f in RUN_FILES if (self.path / f).exists()])
        state = _read_json(folder / SET_STATE, "checkpoint state") if (folder / SET_STATE).is_file() else None
        if state is None or not isinstance(state.get("history"), list) or "epoch" not in state:
            raise ValueError(f"{folder}: the checkpoint set has no readable {SET_STATE}; resume is not possible, "
                             "start again with --set-aside-old-run")
        for name, crc in state.get("files", {}).items():
            self._check_crc(folder / name, crc, folder / SET_STATE)
        self.best_crc = state.get("best")
        if finish_commit:
            if (folder / BEST).is_file():
                self._publish_best(folder)
            if self.best_crc is not None:
                self._check_crc(self.path / BEST, self.best_crc, folder / SET_STATE)
        return LastCheckpoint(folder, state)

    @staticmethod
    def _check_crc(f: Path, crc: str, named_by: Path) -> None:
        if not f.is_file():
            raise FileNotFoundError(f"--resume: {f} is missing (named by {named_by})")
        if file_crc(f) != crc:
            raise ValueError(f"--resume: {f} does not match its CRC in {named_by}: it changed after the checkpoint "
                             "set was complete (a disk fault, or another program wrote it); resume is not possible, "
                             "start again with --set-aside-old-run")

    def progress_state(self) -> dict | None:
        """The last complete set's state.json (an older run's last_state.json), unchecked, or None:
        for showing how far a running fold is, not for resuming."""
        try:
            folder = _pointed_set(self.path)
            path = folder / SET_STATE if folder is not None else self.path / LEGACY_FILES[0]
            return json.loads(path.read_text()) if path.is_file() else None
        except (ValueError, FileNotFoundError):
            return None

    def saved_epochs(self) -> int:
        """How many epochs the last complete checkpoint set holds (0: none yet)."""
        if not self.pointer.is_file():
            return 0
        return int(_read_json(self.pointer, "checkpoint pointer").get("epoch", -1)) + 1

    def commit(self, epoch: int, weights: dict, opt_state: dict, best: dict | None, state: dict) -> None:
        """Write the set ``ckpt-<epoch + 1>/`` (weights, optimizer state, ``best`` weights when the best
        epoch changed since the previous set, then state.json with ``state`` and the CRCs), switch the
        pointer to it, move its best.pdparams onto the fold's, remove the previous set. On an error
        (a full disk) the unfinished set is removed and the previous one stays the run's state."""
        previous = _pointed_set(self.path)
        folder = self.path / f"{SET_PREFIX}{epoch + 1:03d}"
        if folder == previous:
            raise ValueError(f"{folder} is the run's current checkpoint set; it is never rewritten")
        try:
            best_crc = self._write_set(folder, weights, opt_state, best, state)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        _step(POINTER_NAME)
        atomic_write_text(self.pointer, json.dumps({"folder": folder.name, "epoch": epoch}))
        self.best_crc = best_crc
        if best is not None:
            self._publish_best(folder)
        if previous is not None:
            _step(f"remove {previous.name}")
            shutil.rmtree(previous, ignore_errors=True)

    def _write_set(self, folder: Path, weights: dict, opt_state: dict, best: dict | None, state: dict) -> str | None:
        """The files of one set, state.json last; returns the CRC of the best weights it records."""
        if folder.exists():                   # an unfinished set of an earlier attempt at this epoch
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        files, best_crc = {}, self.best_crc
        for name, obj in ((WEIGHTS, weights), (OPTIMIZER, opt_state), (BEST, best)):
            if obj is None:
                continue
            _step(f"{folder.name}/{name}")
            atomic_save_paddle(obj, folder / name)
            files[name] = file_crc(folder / name)
        if best is not None:
            best_crc = files.pop(BEST)        # checked where it ends up, fold<k>/best.pdparams
        _step(f"{folder.name}/{SET_STATE}")
        atomic_write_text(folder / SET_STATE, json.dumps({**state, "files": files, "best": best_crc}))
        return best_crc

    def _publish_best(self, folder: Path) -> None:
        _step(BEST)
        fsync_replace(folder / BEST, self.path / BEST)

    def save_snapshot(self, weights: dict, epoch_number: int) -> Path:
        """``snapshots/epochNNN.pdparams`` (``epoch_number`` 1-based)."""
        path = self.snapshot_path(epoch_number)
        _step(f"snapshots/{path.name}")
        atomic_save_paddle(weights, path)
        return path

    def snapshot_path(self, epoch_number: int) -> Path:
        return self.path / "snapshots" / f"epoch{epoch_number:03d}.pdparams"

    def save_averaged(self, weights: dict) -> None:
        _step("averaged.pdparams")
        atomic_save_paddle(weights, self.path / "averaged.pdparams")

    def write_csv(self, history: list[dict]) -> None:
        """metrics.csv: one row per epoch of ``history`` (CSV_COLUMNS)."""
        _step("metrics.csv")
        atomic_write_text(self.path / "metrics.csv", _csv_text(history))

    def write_config(self, text: str) -> None:
        _step("config.yml")
        atomic_write_text(self.path / "config.yml", text)

    def write_metrics(self, metrics: dict) -> None:
        _step("metrics.json")
        atomic_write_text(self.path / "metrics.json", json.dumps(metrics, indent=1))


# ---------------------------------------------------------------------------------------------- resume


def _flat(cfg: dict, prefix: str = "") -> dict:
    """``{"train.lr": 0.001, ...}`` of a nested config (lists compared whole)."""
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _differences(a: dict, b: dict, skip: tuple = ()) -> dict[str, tuple]:
    fa, fb = _flat(json.loads(json.dumps(a))), _flat(json.loads(json.dumps(b)))
    return {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb))
            if k not in skip and fa.get(k) != fb.get(k)}


def _listing(diff: dict[str, tuple], limit: int = 6) -> str:
    items = [f"{k} {old!r} -> {new!r}" for k, (old, new) in diff.items()]
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


def resume_config(requested: dict, trained: dict, on_file: dict | None, fold: Path) -> tuple[dict, dict]:
    """The config a resume trains with, and the keys it changes from the run's (key -> (old, new)).

    ``trained``: what the run trained with (its last set's state.json); ``requested``: --config with
    --set and the flags; ``on_file``: fold<k>/config.yml as it is now (None: missing). The run keeps
    its own settings: config.yml edited since the run wrote it is refused, and so is a requested
    config that differs in more than RESUME_MAY_CHANGE, each in one line naming the keys.
    ``train.epochs`` may grow under a constant learning rate (the added epochs train at it); a
    cosine schedule was set for the run's epochs and is not stretched (a longer run is a
    fine-tuning into a new run folder with --init-from). The learned ``roi.disc_offset`` and
    ``roi.prior_spread`` and the config's ``name`` come from the run.
    """
    skip = ("name",)
    if on_file is not None:
        edited = _differences(trained, on_file, skip)
        if edited:
            raise ValueError(f"--resume: {fold / 'config.yml'} was edited after the run wrote it ({_listing(edited)}); "
                             "resume continues with the settings the run trained with: undo the edit (give "
                             "changes with --set or the flags instead), or start a new run with --set-aside-old-run")
    for learned in ("disc_offset", "prior_spread"):      # learned by the run from its training images
        if requested.get("roi", {}).get(learned) is None:
            skip += (f"roi.{learned}",)
    diff = _differences(trained, requested, skip)
    epochs = diff.pop("train.epochs", None)
    refused = {k: v for k, v in diff.items() if k not in RESUME_MAY_CHANGE}
    if refused:
        raise ValueError(f"--resume: this config differs from the one {fold} was trained with: {_listing(refused)}; "
                         "resume continues a run with its own settings: give the same --config and --set, or start "
                         "a new run (--set-aside-old-run, or another --run-dir)")
    if epochs is not None:
        _check_more_epochs(trained, *epochs, fold)
        diff["train.epochs"] = epochs
    out = json.loads(json.dumps(trained))
    for key, (_, new) in diff.items():
        section, name = key.split(".", 1)
        out[section][name] = new
    return out, diff


def _check_more_epochs(trained: dict, old: int, new: int, fold: Path) -> None:
    epochs = f"{old} epoch" + ("s" if old != 1 else "")
    if new < old:
        raise ValueError(f"--resume --epochs {new}: {fold} was set for {epochs}; a run is not shortened "
                         f"(resume with --epochs {old})")
    if trained["train"]["lr_schedule"] != "constant":
        raise ValueError(f"--resume --epochs {new}: {fold} follows a {trained['train']['lr_schedule']} learning-rate "
                         f"schedule set for {epochs} (to train.min_lr {trained['train']['min_lr']:g} at its end), "
                         f"which is not stretched; resume with --epochs {old}, or train more epochs as a new run "
                         f"fine-tuned from this one: --init-from {fold} --run-dir NEW_DIR")
