"""Issue 18: splitting seg inference (predictor / post-processing / submission), the data layer and
the runtime changed no number of the segmentation path.

One tiny two-stage run goes through the CLI twice, by the code of ``REFERENCE_COMMIT`` (from this
checkout's git history) and by this checkout, each in its own subprocess with one CPU thread and the
same relative paths: ``prepare --roi`` (every file written, byte for byte), ``split``, ``train`` for 3
iterations (the weights and optimizer state of ``last_model``/``iter_3``, byte for byte), ``predict
--postprocess --gt`` (every mask, the manifest, ``stage1_report.json`` but for the ``"stage2"`` and
``"rescued"`` lists that issues 17.4 and 19.1 add, the zip's members and the printed scores; the masks
are streamed now; ``--no-rescue`` keeps stage 1's first crop as the reference did; ``seg_report.csv`` is
new), ``export`` +
``predict --exported`` (the masks) and ``evaluate seg`` on the zip.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

import reference_code
from seg_fixtures import make_tiny_seg_data, small_transforms

pytestmark = pytest.mark.slow   # the fast loop: python -m pytest -q -m "not slow"

#: HEAD before the seg inference / data / runtime split (issue 18.3).
REFERENCE_COMMIT = "ce96093372852f190196c3fe4b5ca7581c386a3f"


def _steps(data: Path, new: bool) -> list[list[str]]:
    """The commands of the run; ``new``: this checkout, whose predict may also try stage 1's other
    candidates (issue 19.1, not in the reference): --no-rescue keeps its first crop, as before."""
    task = data / "task3_disc_cup_segmentation"
    images, gt = task / "testing" / "fundus color images", task / "testing_GT" / "Disc_Cup_Mask"
    opts = ["train_dataset.dataset_root=prep", "train_dataset.train_path=prep/train_list.txt",
            "val_dataset.dataset_root=prep", "val_dataset.val_path=prep/val_list.txt", *small_transforms(32)]
    seg = ["-m", "gamma_kit.seg"]
    same = ["--no-rescue"] if new else []
    if new:     # the recipe dropped the conv bias before BatchNorm (issue 20.3); the reference's model had it
        opts.append("model.conv_bias=True")
    return [[*seg, "prepare", "--data-root", str(data), "--out", "prep", "--roi", "--roi-size", "48",
             "--roi-copies", "2"],
            [*seg, "split", "--dataset-dir", "prep", "--val-value", "0.34", "--seed", "0"],
            [*seg, "train", "--config", "roi_liteunet_cpu.yml", "--save-dir", "run", "--iters", "3",
             "--batch-size", "2", "--seed", "0", "--save-interval", "3", "--log-iters", "1", "--device", "cpu",
             "--opts", *opts],
            [*seg, "predict", "--model", "run", "--images", str(images), "--gt", str(gt), "--out", "pred",
             "--postprocess", "--device", "cpu", *same],
            [*seg, "export", "--model", "run", "--out", "export"],
            [*seg, "predict", "--exported", "export", "--images", str(images), "--out", "pred_exported",
             "--device", "cpu", *same],
            ["-m", "gamma_kit.evaluate", "seg", "--pred", "pred/Disc_Cup_Segmentations.zip", "--gt", str(gt),
             "--json"]]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(code_root: Path, data: Path, work: Path, new: bool) -> dict:
    """Every step with the kit at ``code_root`` in ``work``; the numbers and files to compare."""
    work.mkdir()
    printed = [reference_code.run_with(code_root, step, work).stdout for step in _steps(data, new)]
    files = {}
    for folder in ("prep", "pred", "pred_exported"):
        for p in sorted((work / folder).rglob("*")):
            if p.is_file() and p.suffix != ".zip" and p.name not in ("stage1_report.json", "seg_report.csv"):
                files[str(p.relative_to(work))] = _digest(p)
    reports = {}
    for folder in ("pred", "pred_exported"):       # issue 17.4 adds what stage 2 doubts; the rest stays
        report = json.loads((work / folder / "stage1_report.json").read_text())
        reports[folder] = {k: v for k, v in report.items() if k not in ("stage2", "rescued")}
    for rel in ("run/last_model/model.pdparams", "run/iter_3/model.pdparams", "run/iter_3/model.pdopt",
                "run/roi.json", "export/roi.json"):
        files[rel] = _digest(work / rel)
    with zipfile.ZipFile(work / "pred" / "Disc_Cup_Segmentations.zip") as zf:
        members = {i.filename: hashlib.sha256(zf.read(i)).hexdigest() for i in zf.infolist()}
    scores = [ln for ln in printed[3].splitlines() if "Dice" in ln or "dice" in ln]
    return {"files": files, "reports": reports, "zip": members, "scores": scores, "evaluate": printed[-1]}


def test_seg_numbers_equal_the_reference_commit(tmp_path_factory, tmp_path):
    reference = reference_code.reference_tree(tmp_path_factory, REFERENCE_COMMIT)
    data = tmp_path / "data"
    make_tiny_seg_data(data, n_train=6, n_test=3, size=(240, 160), seed=3)
    before = _run(reference, data, tmp_path / "before", new=False)
    after = _run(reference_code.REPO, data, tmp_path / "after", new=True)
    assert len(after["files"]) > 20 and after["scores"] and '"dice_disc"' in after["evaluate"]
    assert sorted(after["files"]) == sorted(before["files"])
    for rel, digest in before["files"].items():
        assert after["files"][rel] == digest, rel
    assert after["reports"] == before["reports"]
    assert (tmp_path / "after" / "pred" / "seg_report.csv").is_file()        # new with issue 19.4
    assert after["zip"] == before["zip"]
    assert after["scores"] == before["scores"]
    assert after["evaluate"] == before["evaluate"]
