"""The wheel ships the configs: setup.py's build step copies <repo>/configs into gamma_kit/_configs,
where gamma_kit.resources finds them in an installed wheel; _base_ paths resolve inside the copy.
(.ci/check_wheel.sh installs the wheel into a fresh venv and runs the demo from a temporary folder.)"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.skipif(importlib.util.find_spec("wheel") is None,
                                reason="building a wheel offline needs the wheel package (the test extra)")]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel from a copy of the tree (tracked and untracked, not ignored files)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    for name in files:
        f = REPO / name
        if f.is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes(f.read_bytes())
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                          "-w", str(tmp / "dist"), "."], cwd=src, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    (whl,) = (tmp / "dist").glob("gamma_kit-*.whl")
    return whl


def test_wheel_carries_every_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {n.removeprefix("gamma_kit/_configs/") for n in names if n.startswith("gamma_kit/_configs/")}
    expected = {str(p.relative_to(REPO / "configs")) for p in (REPO / "configs").rglob("*.yml")}
    assert expected and shipped == expected
    assert "gamma_kit/resources.py" in names and "gamma_kit/seg/training.py" in names
    assert "gamma_kit/doctor.py" in names
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "gamma-kit-doctor = gamma_kit.doctor:main" in scripts and "gamma-kit-seg = gamma_kit.seg.__main__:main" in scripts
    assert not any(n.startswith(("configs/", "tests/", "tools/")) for n in names)


def test_configs_resolve_inside_the_unpacked_wheel(wheel, tmp_path, monkeypatch):
    """config_path finds the packaged copy first; PaddleSeg's Config resolves _base_ inside it; a config
    named as shipped (--config NAME.yml, from a folder without such a file) is the packaged copy."""
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    res = subprocess.run(
        [sys.executable, "-c",
         "import sys; sys.path.insert(0, sys.argv[1]);"
         "import gamma_kit.resources as r; from gamma_kit.seg.training import load_config;"
         "p = r.config_path('seg/unet_gamma_512_mixedloss.yml'); cfg = load_config('unet_gamma_512_mixedloss.yml');"
         "assert cfg.dic == load_config(p).dic; print(p); print(r.resolve_config('unet_heatmap_cpu.yml', 'fovea'));"
         "print(cfg.train_dataset_cfg['dataset_root'], cfg.iters, cfg.dic['loss']['types'][0]['type'])",
         str(tmp_path / "site")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    seg, fovea, summary = res.stdout.strip().splitlines()[-3:]
    site = (tmp_path / "site" / "gamma_kit" / "_configs").resolve()
    assert Path(seg).resolve() == site / "seg" / "unet_gamma_512_mixedloss.yml"
    assert Path(fovea).resolve() == site / "fovea" / "unet_heatmap_cpu.yml"
    # unet_gamma_512_mixedloss -> unet_gamma_512 -> _base_/gamma_seg_dataset: both levels resolved
    assert summary == "data/seg_prepared 3750 MixedLoss"


def test_ci_runs_the_readme_test_command_and_the_wheel_check():
    lines = (REPO / ".ci" / "run").read_text().splitlines()
    assert 'pip install -q -c constraints.txt -e ".[cpu,test]"' in lines
    assert lines.index("python -m pytest -q") > lines.index('pip install -q -c constraints.txt -e ".[cpu,test]"')
    assert "bash .ci/check_wheel.sh" in lines
