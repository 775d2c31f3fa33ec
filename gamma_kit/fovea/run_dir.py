"""The state of a fovea run folder on disk: what the trainer writes there and reads back on resume.

Run layout (nothing is written outside ``run_dir``)::

    runs/<name>/splits.json            # folds, computed once (gamma_kit.fovea.folds)
    runs/<name>/cv_metrics.json, training_curves.png   # after ``cv``
    runs/<name>/fold<k>/config.yml     # resolved config of this fold
    runs/<name>/fold<k>/best.pdparams  # lowest validation AED so far
    runs/<name>/fold<k>/last.pdparams, last.pdopt, last_state.json   # for --resume
    runs/<name>/fold<k>/snapshots/epochNNN.pdparams   # weights-only snapshots (1-based epochs)
    runs/<name>/fold<k>/averaged.pdparams             # mean weights of the last epochs (train.average_last)
    runs/<name>/fold<k>/metrics.json   # per-epoch loss, validation AED, lr; best epoch
    runs/<name>/fold<k>/metrics.csv    # the same per epoch (epoch is 0-based, val_aed empty when not validated)
    runs/<name>/fold<k>/vdlrecords.*.log   # with use_vdl: VisualDL scalars (gamma_kit.fovea.trainer)

Every file is written atomically (tmp + fsync + rename, gamma_kit.safety). last_state.json is
written after the checkpoints it names (with their CRC-32), so it always describes complete files.
Epochs are 0-based in the JSON and CSV files, 1-based in file names and messages.
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path

from gamma_kit.data import atomic_write_text
from gamma_kit.fovea.folds import make_splits, read_splits, write_splits
from gamma_kit.safety import atomic_save_paddle, set_aside

__all__ = ["RUN_FILES", "CSV_COLUMNS", "STATE_NAME", "file_crc", "splits_for", "FoldFolder"]

#: files that make a fold folder "hold a run"
RUN_FILES = ("last_state.json", "last.pdparams", "last.pdopt", "best.pdparams", "metrics.json", "metrics.csv")
CSV_COLUMNS = ("epoch", "train_loss", "val_aed", "lr", "seconds")
STATE_NAME = "last_state.json"


def file_crc(path: str | Path) -> str:
    """CRC-32 of a file as 8 hex digits (ties last_state.json to the files it names)."""
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


class FoldFolder:
    """``run_dir/fold<k>``: the checks before a run starts, the checkpoint files and logs it
    writes, and the state a resume reads back. ``files`` maps each checkpoint file written so
    far to its CRC-32 (the ``files`` of last_state.json)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.files: dict[str, str] = {}

    @property
    def state_path(self) -> Path:
        return self.path / STATE_NAME

    def prepare(self, resume: bool, set_aside_old_run: bool) -> Path | None:
        """Refuse to train over an earlier run unless resuming it or setting it aside; refuse
        ``resume`` with nothing to resume; create the folder. Returns where an old run was moved."""
        held = [f for f in RUN_FILES if (self.path / f).exists()]
        aside = None
        if resume:
            if not self.state_path.is_file():
                what = f" (it holds only {', '.join(held)})" if held else ""
                raise ValueError(f"--resume: nothing to resume in {self.path}: no {STATE_NAME}{what}; "
                                 "drop --resume to start a new run")
        elif held:
            if not set_aside_old_run:
                raise FileExistsError(f"{self.path} already holds a run ({', '.join(held)}): add --resume to "
                                      "continue it, or --set-aside-old-run to rename it aside and start again")
            aside = set_aside(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        return aside

    def read_last(self) -> dict:
        """last_state.json, checked against the files it names (one line naming the file otherwise)."""
        path = self.state_path
        try:
            state = json.loads(path.read_text())
            int(state["epoch"])
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: not a readable training state ({type(err).__name__}: {err}); "
                             "resume is not possible, start again with --set-aside-old-run") from None
        for name, crc in state.get("files", {}).items():
            f = self.path / name
            if not f.is_file():
                raise FileNotFoundError(f"--resume: {f} is missing (named by {path})")
            if f.stat().st_size and file_crc(f) != crc:
                raise ValueError(f"--resume: {f} does not match {path} (written by another epoch: the run was "
                                 "killed during a checkpoint); start again with --set-aside-old-run")
        self.files = dict(state.get("files", {}))
        return state

    def saved_epochs(self) -> int:
        """How many epochs the last complete checkpoint holds (0: none yet)."""
        return int(json.loads(self.state_path.read_text())["epoch"]) + 1 if self.state_path.is_file() else 0

    def model_files(self) -> tuple[Path, Path]:
        """(weights, optimizer state) of the last complete checkpoint."""
        return self.path / "last.pdparams", self.path / "last.pdopt"

    def _save(self, obj, name: str) -> None:
        path = self.path / name
        atomic_save_paddle(obj, path)
        self.files[name] = file_crc(path)

    def save_best(self, weights: dict) -> None:
        self._save(weights, "best.pdparams")

    def save_last(self, weights: dict, opt_state: dict, state: dict) -> None:
        """last.pdparams, last.pdopt, then last_state.json (``state`` plus the CRCs of every
        checkpoint file), in that order."""
        self._save(weights, "last.pdparams")
        self._save(opt_state, "last.pdopt")
        atomic_write_text(self.state_path, json.dumps({**state, "files": self.files}))

    def save_snapshot(self, weights: dict, epoch_number: int) -> Path:
        """``snapshots/epochNNN.pdparams`` (``epoch_number`` 1-based)."""
        path = self.snapshot_path(epoch_number)
        atomic_save_paddle(weights, path)
        return path

    def snapshot_path(self, epoch_number: int) -> Path:
        return self.path / "snapshots" / f"epoch{epoch_number:03d}.pdparams"

    def save_averaged(self, weights: dict) -> None:
        atomic_save_paddle(weights, self.path / "averaged.pdparams")

    def write_csv(self, history: list[dict]) -> None:
        """metrics.csv: one row per epoch of ``history`` (CSV_COLUMNS)."""
        atomic_write_text(self.path / "metrics.csv", _csv_text(history))

    def write_config(self, text: str) -> None:
        atomic_write_text(self.path / "config.yml", text)

    def write_metrics(self, metrics: dict) -> None:
        atomic_write_text(self.path / "metrics.json", json.dumps(metrics, indent=1))
