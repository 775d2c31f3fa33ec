"""Shared fixtures. Data-free tests always run; real-data tests skip when the data is absent.

IDRiD photos: ``$IDRID_DIR`` or ../shared/data/idrid_fovea beside the repository.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import gamma_kit  # noqa: F401  (sets the thread variables before anything imports paddle)

REPO = Path(__file__).resolve().parents[1]


def idrid_dir() -> Path | None:
    d = Path(os.environ.get("IDRID_DIR", REPO.parent / "shared" / "data" / "idrid_fovea"))
    return d if (d / "images").is_dir() and (d / "fovea_GT.csv").is_file() else None


@pytest.fixture(scope="session")
def idrid() -> Path:
    d = idrid_dir()
    if d is None:
        pytest.skip("IDRiD photos not present (set IDRID_DIR or place shared/data/idrid_fovea beside the repo)")
    return d
