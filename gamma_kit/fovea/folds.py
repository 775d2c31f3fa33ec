"""Cross-validation folds, computed once and stored as ``splits.json`` (nnU-Net style).

For GAMMA's 100 training ids (0001-0100) the default is the original split: the ids'
positions 0..99 in sorted order are shuffled with Python ``random.seed(1024);
random.shuffle``, and fold k (1-based) validates on ``shuffled[(k-1)*20 : k*20]``.
Any other id set gets a seeded 5-fold split of the same form (shuffle, then
contiguous blocks; the last folds take the remainder).

splits.json: ``[{"fold": 1, "train": [ids], "val": [ids]}, ...]`` with string ids.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Iterable, Sequence

from gamma_kit.safety import atomic_write_text

__all__ = ["ORIGINAL_SEED", "make_splits", "original_gamma_splits", "write_splits", "read_splits",
           "get_fold", "is_gamma_training_ids"]

ORIGINAL_SEED = 1024
N_FOLDS = 5


def is_gamma_training_ids(ids: Iterable[str]) -> bool:
    """True for exactly the ids 0001..0100 (GAMMA's training set)."""
    return sorted(ids) == [f"{i:04d}" for i in range(1, 101)]


def _shuffled_positions(n: int, seed: int) -> list[int]:
    order = list(range(n))
    random.Random(seed).shuffle(order)   # same sequence as random.seed(seed); random.shuffle
    return order


def original_gamma_splits() -> list[dict]:
    """The original's 5 folds over GAMMA ids 0001-0100 (20 validation ids each)."""
    ids = [f"{i:04d}" for i in range(1, 101)]
    order = _shuffled_positions(100, ORIGINAL_SEED)
    out = []
    for k in range(1, N_FOLDS + 1):
        val_pos = order[(k - 1) * 20:k * 20]
        val = [ids[p] for p in val_pos]
        out.append({"fold": k, "train": [i for i in ids if i not in set(val)], "val": val})
    return out


def make_splits(ids: Sequence[str], n_folds: int = N_FOLDS, seed: int = ORIGINAL_SEED,
                original: bool | None = None) -> list[dict]:
    """Folds over ``ids``. ``original=None`` uses the original split when ``ids``
    are GAMMA's 0001-0100, else a seeded shuffle cut into ``n_folds`` blocks."""
    ids = sorted(str(i) for i in ids)
    if len(set(ids)) != len(ids):
        raise ValueError("image ids must be unique")
    if original is None:
        original = is_gamma_training_ids(ids) and n_folds == N_FOLDS and seed == ORIGINAL_SEED
    if original:
        if not is_gamma_training_ids(ids):
            raise ValueError("the original split needs exactly GAMMA's training ids 0001-0100")
        return original_gamma_splits()
    if not 2 <= n_folds <= len(ids):
        raise ValueError(f"need 2 <= n_folds <= number of images ({len(ids)}), got {n_folds}")
    order = _shuffled_positions(len(ids), seed)
    bounds = [round(k * len(ids) / n_folds) for k in range(n_folds + 1)]
    out = []
    for k in range(n_folds):
        val = sorted(ids[p] for p in order[bounds[k]:bounds[k + 1]])
        out.append({"fold": k + 1, "train": [i for i in ids if i not in set(val)], "val": val})
    return out


def write_splits(path: str | Path, splits: list[dict]) -> Path:
    """Write splits.json atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(splits, indent=1))
    return path


def read_splits(path: str | Path) -> list[dict]:
    """Read splits.json (FileNotFoundError / ValueError naming the file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"splits file not found: {path}")
    try:
        splits = json.loads(path.read_text())
        ok = all({"fold", "train", "val"} <= set(s) for s in splits)
    except (json.JSONDecodeError, TypeError) as err:
        raise ValueError(f"{path}: not a splits.json list of {{fold, train, val}}: {err}") from err
    if not ok:
        raise ValueError(f"{path}: every entry needs keys fold, train, val")
    return splits


def get_fold(splits: list[dict], fold: int) -> dict:
    """The entry for 1-based ``fold`` (ValueError listing the folds available)."""
    for s in splits:
        if int(s["fold"]) == int(fold):
            return s
    raise ValueError(f"fold {fold} not in splits (folds: {[s['fold'] for s in splits]})")
