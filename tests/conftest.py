"""Shared fixtures. Data-free tests always run; real-data tests skip when the data is absent.

IDRiD photos: ``$IDRID_DIR`` or ../shared/data/idrid_fovea beside the repository.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import gamma_kit  # noqa: F401  (sets the thread variables before anything imports paddle)

# one training process (the default) even where a developer's $GAMMA_KIT_PROCS asks for more: the tests
# that compare numbers compare one process's; tests/test_procs.py and test_fovea_distributed.py cover --procs
os.environ["GAMMA_KIT_PROCS"] = "1"

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


# ------------------------------------------------------------------ where the time goes (issue 18.6)
_SECONDS: dict[str, list] = {}          # nodeid -> [seconds of setup + call + teardown, marked slow]


def pytest_runtest_logreport(report):
    entry = _SECONDS.setdefault(report.nodeid, [0.0, "slow" in report.keywords])
    entry[0] += report.duration


def pytest_terminal_summary(terminalreporter):
    """One line for the fast loop's total, one per file of the tests marked slow (what CI spends its
    time on), so that .ci/run's output shows them."""
    if not _SECONDS:
        return
    fast = sum(s for s, slow in _SECONDS.values() if not slow)
    per_file: dict[str, float] = {}
    for nodeid, (s, slow) in _SECONDS.items():
        if slow:
            name = nodeid.split("::")[0].rsplit("/", 1)[-1]
            per_file[name] = per_file.get(name, 0.0) + s
    tr = terminalreporter
    tr.write_sep("-", "time by part")
    tr.write_line(f"fast loop (-m 'not slow'): {fast:.0f} s in {sum(1 for _, sl in _SECONDS.values() if not sl)} "
                  "tests")
    for name, s in sorted(per_file.items(), key=lambda kv: -kv[1]):
        tr.write_line(f"slow: {name}: {s:.0f} s")
