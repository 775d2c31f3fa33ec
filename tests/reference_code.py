"""The kit's code at an earlier commit, for before/after tests of a redesign (issue 18).

``reference_tree(tmp_path_factory, commit)`` extracts ``gamma_kit/`` and ``configs/`` of ``commit``
from this checkout's git history into a temporary folder; ``run_with(code_root, ...)`` runs a
Python snippet with that code first on ``PYTHONPATH`` and one CPU thread. Tests skip when the
checkout has no git history or lacks the commit (an installed wheel, a shallow clone).
"""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, timeout=120)


def reference_tree(tmp_path_factory, commit: str) -> Path:
    """``gamma_kit/`` and ``configs/`` of ``commit`` in a temporary folder (skip without them)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("no git history in this checkout")
    if _git("cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
        pytest.skip(f"reference commit {commit[:10]} is not in this checkout's history")
    archive = _git("archive", "--format=tar", commit, "gamma_kit", "configs")
    if archive.returncode != 0:
        pytest.skip(f"git archive failed: {archive.stderr.decode(errors='replace')[:200]}")
    dest = tmp_path_factory.mktemp(f"reference-{commit[:10]}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def run_with(code_root: Path, args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python ARGS`` with the kit at ``code_root`` (first on ``PYTHONPATH``, one CPU thread) in ``cwd``
    (checked: ``cwd`` must not hold another kit, which ``python -m``/``-c`` would put first); fails the
    test with the end of stderr when it does not exit 0."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(code_root)}
    which = subprocess.run([sys.executable, "-c", "import gamma_kit; print(gamma_kit.__file__)"], cwd=cwd, env=env,
                           capture_output=True, text=True, timeout=120)
    assert Path(which.stdout.strip()).resolve().is_relative_to(Path(code_root).resolve()), \
        f"{cwd}: python imports the kit from {which.stdout.strip()!r}, not from {code_root}"
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{args[:3]} under {code_root}:\n{proc.stderr[-3000:]}"
    return proc
