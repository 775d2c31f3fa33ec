"""python -m gamma_kit.doctor prints one line per item with this environment's real values, and
reports a missing package as "not installed" instead of failing."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

import gamma_kit  # noqa: F401
import paddle
import pytest
import paddleseg

from gamma_kit.doctor import OPTIONAL_EXTRAS
from gamma_kit.resources import configs_dir

LABELS = ("Python", "gamma_kit", "Paddle", "PaddleSeg", "devices", "threads", "compat patches", "configs",
          "optional")


def _doctor(code: str = "from gamma_kit.doctor import main; main()", **env) -> dict[str, str]:
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, **env}, cwd=Path(__file__).parent)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.strip().splitlines()
    assert len(lines) == len(LABELS), res.stdout
    rows = dict(line.split(":", 1) for line in lines)
    assert tuple(rows) == LABELS
    return {k: v.strip() for k, v in rows.items()}


@pytest.mark.slow
def test_doctor_prints_the_real_values():
    rows = _doctor("import runpy; runpy.run_module('gamma_kit.doctor', run_name='__main__')",
                   OMP_NUM_THREADS="1", KMP_BLOCKTIME="7")
    assert rows["Python"].startswith(platform.python_version() + " ")
    build = "CPU build" if not paddle.is_compiled_with_cuda() else f"CUDA {paddle.version.cuda()}"
    assert rows["Paddle"].startswith(f"{paddle.__version__} ({build}")
    assert rows["Paddle"].endswith(str(Path(paddle.__file__).resolve().parent))
    assert rows["PaddleSeg"] == f"{paddleseg.__version__} from {Path(paddleseg.__file__).resolve().parent}"
    assert rows["gamma_kit"].startswith(f"{gamma_kit.__version__} from {Path(gamma_kit.__file__).resolve().parent}")
    # the user's thread settings are kept and shown
    assert rows["threads"].startswith(f"OMP_NUM_THREADS=1, KMP_BLOCKTIME=7; {os.cpu_count()} cores")
    n_gpu = paddle.device.cuda.device_count() if paddle.is_compiled_with_cuda() else 0
    assert rows["devices"].startswith("cpu") and rows["devices"].count("gpu:") == n_gpu + (n_gpu > 0)
    assert rows["devices"].endswith(f"--device auto takes {'gpu:0' if n_gpu else 'cpu'}")
    # pip paddleseg 2.8.0 on Paddle 3 needs all four patches (a fixed PaddleSeg would list fewer)
    if paddleseg.__version__ == "2.8.0" and int(paddle.__version__.split(".")[0]) >= 3:
        assert rows["compat patches"].startswith("4 of 4 apply (")
    assert rows["configs"].startswith(f"{configs_dir()} (2 fovea, ")
    for name in OPTIONAL_EXTRAS:
        try:
            expected = f"{name} {importlib.metadata.version(name)}"
        except importlib.metadata.PackageNotFoundError:
            expected = f"{name} not installed"
        assert expected in rows["optional"]


@pytest.mark.slow
def test_doctor_says_not_installed_for_a_missing_package():
    # None in sys.modules makes "import paddleseg" fail as it does where PaddleSeg is not installed
    rows = _doctor("import sys; sys.modules['paddleseg'] = None; from gamma_kit.doctor import main; main()")
    assert rows["PaddleSeg"] == "not installed (paddleseg)"
    assert rows["compat patches"] == "not installed (paddleseg)"
    assert rows["Paddle"].startswith(paddle.__version__)      # the other lines are still there
