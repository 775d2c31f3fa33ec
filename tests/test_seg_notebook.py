"""notebooks/disc_cup_segmentation.ipynb runs end to end on tiny synthetic data on the CPU (parametrised
through its environment variables: unzip, prepare, train the CPU config briefly, predict, zip), on its
default two-stage path (ROI crops, roi.json, locate -> crop -> paste back) and on the whole-image path,
and is committed without outputs."""
from __future__ import annotations

import shutil
import zipfile

import pytest

from notebook_runner import REPO, assert_stripped_and_thin, execute
from seg_fixtures import make_seg_data, small_transforms

NOTEBOOK = REPO / "notebooks" / "disc_cup_segmentation.ipynb"


def test_notebook_is_stripped_and_thin():
    assert_stripped_and_thin(NOTEBOOK)


@pytest.mark.parametrize("two_stage", [True, False])
def test_notebook_runs_on_tiny_synthetic_data(tmp_path, monkeypatch, two_stage):
    make_seg_data(tmp_path / "src", n_train=5, n_test=2, seed=5, sizes=((240, 160), (160, 158)))
    archive = tmp_path / "task3_disc_cup_segmentation.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted((tmp_path / "src").rglob("*")):
            if p.is_file() and "task3" in str(p):
                zf.write(p, p.relative_to(tmp_path / "src"))
    shutil.rmtree(tmp_path / "src")
    env = {"SEG_DATA_ZIP": str(archive), "GAMMA_DATA": str(tmp_path / "data"),
           "SEG_PREPARED": str(tmp_path / "prepared"), "SEG_WORK_DIR": str(tmp_path / "work"),
           "SEG_CONFIG": str(REPO / "configs" / "seg" / ("roi_liteunet_cpu.yml" if two_stage else
                                                         "liteunet_gamma_cpu.yml")), "SEG_ITERS": "2",
           "SEG_TWO_STAGE": "1" if two_stage else "0", "SEG_ROI_SIZE": "48", "SEG_ROI_COPIES": "1",
           "SEG_OPTS": ";".join(small_transforms(32)), "SEG_VAL_VALUE": "0.2", "SEG_DEVICE": "cpu",
           "SEG_NUM_WORKERS": "0",
           "PYTHONPATH": str(REPO)}
    execute(NOTEBOOK, env, monkeypatch)
    sub = tmp_path / "work" / "submission"
    with zipfile.ZipFile(sub / "Disc_Cup_Segmentations.zip") as zf:
        assert sorted(zf.namelist()) == ["Disc_Cup_Segmentations/0006.bmp", "Disc_Cup_Segmentations/0007.bmp"]
    assert (tmp_path / "work" / "run" / "last_model" / "model.pdparams").is_file()
    assert (tmp_path / "prepared" / "train_list.txt").is_file()
    assert len(list((tmp_path / "work" / "overlays").glob("*.png"))) == 2
    assert (tmp_path / "work" / "run" / "last_model" / "roi.json").is_file() == two_stage
    assert (sub / "stage1_report.json").is_file() == two_stage
