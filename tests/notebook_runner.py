"""Shared by the notebook tests: the committed-notebook checks and an nbclient run with
the notebook's environment variables set, from the repository root."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]


def assert_stripped_and_thin(notebook: Path) -> None:
    """No outputs or execution counts are committed, and no code cell defines functions or
    classes (the logic lives in gamma_kit)."""
    nb = nbformat.read(notebook, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{notebook} has no code cells"
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]
        assert "def " not in cell.source and "class " not in cell.source, cell.source[:80]


def execute(notebook: Path, env: dict[str, str], monkeypatch) -> None:
    """Run every cell of ``notebook`` in a fresh kernel with ``env`` exported."""
    nbclient = pytest.importorskip("nbclient")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    nb = nbformat.read(notebook, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO)}}).execute()
