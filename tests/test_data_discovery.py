"""data.find_challenge_data: the challenge data where platforms put it ($GAMMA_DATA, AI Studio's
/home/aistudio/data/data<N>/, data/), unpacked once from the zip into the caller's folder, never
into the folder searched; None when there is none (the notebooks then use synthetic data)."""
from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

import gamma_kit.data.layouts as layouts
from gamma_kit.data import CHALLENGE_ZIPS, find_challenge_data, find_task_dir, load_fovea_split
from gamma_kit.synth import generate


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("synth") / "s", 3, 1, seed=2, sizes=[(320, 214)], progress=False)


def _zip_task(synth: Path, task_dir: str, archive: Path) -> Path:
    """The task folder of ``synth`` zipped as the challenge ships it (one top folder)."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted((synth / task_dir).rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(synth))
    return archive


@pytest.fixture
def no_platform(monkeypatch, tmp_path):
    """No $GAMMA_DATA, no AI Studio mount, an empty working directory."""
    monkeypatch.delenv("GAMMA_DATA", raising=False)
    monkeypatch.setattr(layouts, "AISTUDIO_DATA", tmp_path / "no_aistudio")
    monkeypatch.chdir(tmp_path)


def test_aistudio_mounted_zip_is_unpacked_once_into_the_work_folder(synth, tmp_path, monkeypatch, no_platform):
    mount = tmp_path / "aistudio" / "data"
    archive = _zip_task(synth, "task2_Fovea_localization", mount / "data123456" / CHALLENGE_ZIPS["fovea"])
    (mount / "data000001").mkdir()                       # another data set, without GAMMA
    monkeypatch.setattr(layouts, "AISTUDIO_DATA", mount)
    before = sorted(p.relative_to(mount) for p in mount.rglob("*"))
    work = tmp_path / "work" / "data"
    root = find_challenge_data("fovea", work)
    assert root == work / "task2_Fovea_localization"
    split = load_fovea_split(root, "training")
    assert split.ids == ["0001", "0002", "0003"] and split.gt is not None
    assert [p.name for p in work.iterdir()] == ["task2_Fovea_localization"]     # no staging left behind
    assert sorted(p.relative_to(mount) for p in mount.rglob("*")) == before      # the mount is only read
    # once: a second call does not unpack again (a file added in between survives)
    marker = root / "task2_Fovea_localization" / "kept.txt"
    marker.write_text("x")
    assert find_challenge_data("fovea", work) == root and marker.read_text() == "x"
    assert archive.is_file()
    assert find_challenge_data("seg", work, search=[mount, *mount.iterdir()]) is None   # no task-3 zip there


def test_gamma_data_first_and_unpacked_layouts_as_they_are(synth, tmp_path, monkeypatch, no_platform):
    _zip_task(synth, "task3_disc_cup_segmentation", tmp_path / "zips" / CHALLENGE_ZIPS["seg"])
    monkeypatch.setenv("GAMMA_DATA", str(tmp_path / "zips"))
    root = find_challenge_data("seg", tmp_path / "work")
    assert find_task_dir(root, "seg").name == "task3_disc_cup_segmentation"
    assert root.parent == tmp_path / "work"
    # an unpacked layout is used where it lies, nothing is copied
    monkeypatch.setenv("GAMMA_DATA", str(synth))
    assert find_challenge_data("fovea", tmp_path / "work2") == synth and not (tmp_path / "work2").exists()
    # without $GAMMA_DATA, ./data is searched (as from the repo root); search= replaces the defaults
    monkeypatch.delenv("GAMMA_DATA")
    _zip_task(synth, "task2_Fovea_localization", tmp_path / "data" / CHALLENGE_ZIPS["fovea"])
    assert find_challenge_data("fovea", tmp_path / "w") == tmp_path / "w" / "task2_Fovea_localization"
    assert find_challenge_data("fovea", tmp_path / "w3", search=[tmp_path / "none", synth]) == synth


def test_nothing_found_bad_zip_and_bad_task(tmp_path, monkeypatch, no_platform):
    assert find_challenge_data("fovea", tmp_path / "work", search=[tmp_path]) is None
    (tmp_path / CHALLENGE_ZIPS["fovea"]).write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="is not a zip archive"):
        find_challenge_data("fovea", tmp_path / "work", search=[tmp_path])
    assert list((tmp_path / "work").iterdir()) == []      # the failed staging folder is gone
    with pytest.raises(ValueError, match="task must be one of"):
        find_challenge_data("fundus", tmp_path)
