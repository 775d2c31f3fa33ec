"""notebooks/disc_cup_segmentation.ipynb runs end to end on tiny synthetic data on the CPU (parametrised
through its environment variables): the challenge zip found in $GAMMA_DATA and unpacked once into the work
folder, prepare, train a shipped CPU config named as shipped, predict, zip. The default two-stage path (ROI
crops, roi.json, locate -> crop -> paste back) runs from notebooks/, as Jupyter and AI Studio start it; the
whole-image path from the repository root. Committed without outputs."""
from __future__ import annotations

import shutil
import zipfile

import pytest

from notebook_runner import NOTEBOOKS, REPO, assert_stripped_and_thin, execute
from seg_fixtures import make_seg_data, small_transforms

pytestmark = pytest.mark.slow   # the fast loop: python -m pytest -q -m "not slow"

NOTEBOOK = REPO / "notebooks" / "disc_cup_segmentation.ipynb"


def test_notebook_is_stripped_and_thin():
    assert_stripped_and_thin(NOTEBOOK)


@pytest.mark.parametrize("two_stage, cwd", [(True, NOTEBOOKS), (False, REPO)], ids=["two_stage-notebooks",
                                                                                     "whole-repo_root"])
def test_notebook_runs_on_tiny_synthetic_data(tmp_path, monkeypatch, two_stage, cwd):
    make_seg_data(tmp_path / "src", n_train=5, n_test=2, seed=5, sizes=((240, 160), (160, 158)))
    archive = tmp_path / "mounted" / "task3_disc_cup_segmentation.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted((tmp_path / "src").rglob("*")):
            if p.is_file() and "task3" in str(p):
                zf.write(p, p.relative_to(tmp_path / "src"))
    shutil.rmtree(tmp_path / "src")
    env = {"GAMMA_DATA": str(archive.parent), "GAMMA_WORK": str(tmp_path / "work"),
           "SEG_CONFIG": "roi_liteunet_cpu.yml" if two_stage else "seg/liteunet_gamma_cpu.yml", "SEG_ITERS": "2",
           "SEG_TWO_STAGE": "1" if two_stage else "0", "SEG_ROI_SIZE": "48", "SEG_ROI_COPIES": "1",
           # 4 training crops: a batch of 2 (the two-stage CPU recipe's 8 needs 8 crops)
           "SEG_OPTS": ";".join([*small_transforms(32), "batch_size=2"]), "SEG_VAL_VALUE": "0.2", "SEG_DEVICE": "cpu",
           "SEG_NUM_WORKERS": "0"}
    execute(NOTEBOOK, env, monkeypatch, cwd=cwd)
    work = tmp_path / "work" / "seg"
    sub = work / "submission"
    with zipfile.ZipFile(sub / "Disc_Cup_Segmentations.zip") as zf:
        assert sorted(zf.namelist()) == ["Disc_Cup_Segmentations/0006.bmp", "Disc_Cup_Segmentations/0007.bmp"]
    assert (work / "run" / "last_model" / "model.pdparams").is_file()
    assert (work / ("prepared_roi" if two_stage else "prepared") / "train_list.txt").is_file()
    assert len(list((work / "overlays").glob("*.png"))) == 2
    assert (work / "run" / "last_model" / "roi.json").is_file() == two_stage
    assert (sub / "stage1_report.json").is_file() == two_stage
    # the zip was unpacked into the work folder, next to nothing else; the mounted folder holds only the zip
    unpacked = tmp_path / "work" / "data" / "task3_disc_cup_segmentation"
    assert (unpacked / "task3_disc_cup_segmentation" / "training" / "Disc_Cup_Mask").is_dir()
    assert [p.name for p in archive.parent.iterdir()] == [archive.name]
