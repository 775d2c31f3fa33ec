"""Shared by the notebook tests: the committed-notebook checks, and an nbclient run with the
notebook's environment variables set, from ``notebooks/`` (where Jupyter and AI Studio start a
notebook) unless another working directory is given."""
from __future__ import annotations

import subprocess
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"


def assert_stripped_and_thin(notebook: Path) -> None:
    """No outputs or execution counts are committed, no code cell defines functions or classes
    (the logic lives in gamma_kit), and nothing is downloaded or read from a repo-relative config path."""
    nb = nbformat.read(notebook, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{notebook} has no code cells"
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]
        assert "def " not in cell.source and "class " not in cell.source, cell.source[:80]
        for banned in ("urllib", "requests", "http://", "https://", "configs/"):
            assert banned not in cell.source, f"{notebook}: {banned!r} in {cell.source[:80]!r}"


def _repo_files() -> list[str]:
    """Every file git would show in the repo (tracked, and untracked but not ignored)."""
    return sorted(subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                                 text=True, check=True).stdout.splitlines())


def execute(notebook: Path, env: dict[str, str], monkeypatch, cwd: Path = NOTEBOOKS) -> None:
    """Run every cell of ``notebook`` in a fresh kernel started in ``cwd`` with ``env`` exported;
    the run must leave no new file in the repository (outputs go to the notebook's WORK folder)."""
    nbclient = pytest.importorskip("nbclient")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    before = _repo_files()
    nb = nbformat.read(notebook, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}}).execute()
    added = sorted(set(_repo_files()) - set(before))
    assert not added, f"{notebook.name} run from {cwd} wrote into the repository: {added[:10]}"
