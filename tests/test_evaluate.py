"""The evaluate CLI on tiny hand-made files, with known answers."""
import json
import subprocess
import sys

import numpy as np
import pytest

from gamma_kit.data import write_image
from gamma_kit.evaluate import main


def _fovea_files(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    write_image(imgs / "0101.jpg", np.zeros((200, 100, 3), np.uint8))   # W=100, H=200
    write_image(imgs / "0102.jpg", np.zeros((100, 400, 3), np.uint8))   # W=400, H=100
    (tmp_path / "gt.csv").write_text("data,Fovea_X,Fovea_Y\n0101,50,100\n0102,200,50\n")
    (tmp_path / "pred.csv").write_text("data,Fovea_X,Fovea_Y\n0102,200,52\n0101,53,100\n")
    return imgs


def test_fovea_json(tmp_path, capsys):
    imgs = _fovea_files(tmp_path)
    assert main(["fovea", "--pred", str(tmp_path / "pred.csv"), "--gt", str(tmp_path / "gt.csv"),
                 "--images", str(imgs), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    # ED: 3/100 = 0.03 and 2/100 = 0.02 -> AED 0.025
    assert out == pytest.approx({"aed": 0.025, "score": 1 / 0.125, "n": 2})


def test_fovea_gt_outside_image(tmp_path, capsys):
    imgs = _fovea_files(tmp_path)
    (tmp_path / "gt.csv").write_text("data,Fovea_X,Fovea_Y\n0101,500,100\n0102,200,50\n")
    assert main(["fovea", "--pred", str(tmp_path / "pred.csv"), "--gt", str(tmp_path / "gt.csv"),
                 "--images", str(imgs)]) == 2
    assert "fovea outside its image" in capsys.readouterr().err


def test_fovea_missing_files_are_named(tmp_path, capsys):
    imgs = _fovea_files(tmp_path)
    args = ["fovea", "--pred", str(tmp_path / "sub.csv"), "--gt", str(tmp_path / "gt.csv"), "--images", str(imgs)]
    assert main(args) == 2
    assert capsys.readouterr().err == f"error: prediction CSV not found: {tmp_path / 'sub.csv'}\n"
    args[2], args[4] = str(tmp_path / "pred.csv"), str(tmp_path / "truth.xlsx")
    assert main(args) == 2
    assert capsys.readouterr().err == f"error: ground-truth file not found: {tmp_path / 'truth.xlsx'}\n"


def _mask(cup_rows):
    m = np.full((20, 10), 255, np.uint8)
    m[4:14, 2:8] = 128
    m[6:6 + cup_rows, 3:7] = 0
    return m


def test_seg_json_via_module(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir(), pred.mkdir()
    write_image(gt / "0101.bmp", _mask(5))      # vCDR 0.5
    write_image(pred / "0101.bmp", _mask(5))
    write_image(gt / "0102.bmp", _mask(4))      # vCDR 0.4
    write_image(pred / "0102.bmp", _mask(6))    # vCDR 0.6, cup Dice 2*16/(16+24) = 0.8
    r = subprocess.run([sys.executable, "-m", "gamma_kit.evaluate", "seg", "--pred", str(pred), "--gt", str(gt),
                        "--json", "--weights", "0,1,0"], capture_output=True, text=True, check=True)
    out = json.loads(r.stdout)
    assert out["n"] == 2 and out["dice_disc"] == 1.0
    assert out["dice_cup"] == pytest.approx(0.9)
    assert out["vcdr_mae"] == pytest.approx(0.1)
    assert out["score"] == pytest.approx(0.9)


def test_seg_missing_prediction(tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir(), pred.mkdir()
    write_image(gt / "0101.bmp", _mask(5))
    write_image(gt / "0102.bmp", _mask(5))
    write_image(pred / "0101.bmp", _mask(5))
    assert main(["seg", "--pred", str(pred), "--gt", str(gt)]) == 2
    assert "no predicted mask for 1 id(s)" in capsys.readouterr().err


def _strict_json(text):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def test_fovea_json_is_strict_with_an_infinite_distance(tmp_path):
    imgs = _fovea_files(tmp_path)
    (tmp_path / "pred.csv").write_text("data,Fovea_X,Fovea_Y\n0101,1e308,100\n0102,200,52\n")
    r = subprocess.run([sys.executable, "-m", "gamma_kit.evaluate", "fovea", "--pred", str(tmp_path / "pred.csv"),
                        "--gt", str(tmp_path / "gt.csv"), "--images", str(imgs), "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == ""
    assert _strict_json(r.stdout) == {"aed": None, "score": 0.0, "n": 2}


def test_to_json_maps_non_finite_to_null():
    from gamma_kit.scoring import to_json

    assert to_json({"a": float("inf"), "b": [float("nan"), 1.5], "c": 2}) == '{"a": null, "b": [null, 1.5], "c": 2}'


def test_fovea_numeric_ids_and_no_column(tmp_path, capsys):
    imgs = _fovea_files(tmp_path)
    (imgs / "0101.jpg").rename(imgs / "101.jpg")                      # image 101.jpg, GT id 0101
    (tmp_path / "gt.csv").write_text("No.,data,Fovea_X,Fovea_Y\n1,0101,50,100\n2,0102,200,50\n")
    (tmp_path / "pred.csv").write_text("data,Fovea_X,Fovea_Y\n102,200,52\n101,53,100\n")
    assert main(["fovea", "--pred", str(tmp_path / "pred.csv"), "--gt", str(tmp_path / "gt.csv"),
                 "--images", str(imgs), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == pytest.approx({"aed": 0.025, "score": 1 / 0.125, "n": 2})


def test_seg_jpeg_mask_and_label_values_are_named(tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir(), pred.mkdir()
    write_image(gt / "0101.bmp", _mask(5))
    write_image(pred / "0101.jpg", _mask(5))
    assert main(["seg", "--pred", str(pred), "--gt", str(gt)]) == 2
    assert capsys.readouterr().err == (f"error: {pred}: mask(s) saved as JPEG (0101.jpg); JPEG's lossy compression "
                                       "changes the 0/128/255 values: save masks as .bmp or .png\n")
    (pred / "0101.jpg").unlink()
    write_image(pred / "101.png", (_mask(5) // 127).astype(np.uint8))        # 0/1/2 labels, short id
    assert main(["seg", "--pred", str(pred), "--gt", str(gt)]) == 2
    assert "101.png: mask values must be in {0, 128, 255}" in capsys.readouterr().err


def test_bad_weights_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["seg", "--pred", str(tmp_path), "--gt", str(tmp_path), "--weights", "1,x"])
    assert info.value.code == 2
    assert "--weights needs three numbers 'disc,cup,vcdr'" in capsys.readouterr().err


def _submission(tmp_path, members):
    import zipfile

    import cv2

    z = tmp_path / "submission.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, mask in members.items():
            zf.writestr(name, cv2.imencode(".bmp", mask)[1].tobytes())
    return z


def test_seg_scores_a_submission_zip_like_its_folder(tmp_path):
    gt = tmp_path / "gt"
    gt.mkdir()
    write_image(gt / "0101.bmp", _mask(5))
    write_image(gt / "0102.bmp", _mask(4))
    z = _submission(tmp_path, {"Disc_Cup_Segmentations/0101.bmp": _mask(5), "Disc_Cup_Segmentations/102.bmp": _mask(6)})
    before = sorted(p.name for p in tmp_path.rglob("*"))
    r = subprocess.run([sys.executable, "-m", "gamma_kit.evaluate", "seg", "--pred", str(z), "--gt", str(gt),
                        "--json", "--weights", "0,1,0"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    out = json.loads(r.stdout)                           # the known answers of test_seg_json_via_module
    assert out["n"] == 2 and out["dice_disc"] == 1.0
    assert out["dice_cup"] == pytest.approx(0.9) and out["vcdr_mae"] == pytest.approx(0.1)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before         # nothing unpacked anywhere


def test_seg_zip_with_a_wrong_layout_or_missing_masks_is_one_line(tmp_path, capsys):
    gt = tmp_path / "gt"
    gt.mkdir()
    write_image(gt / "0101.bmp", _mask(5))
    write_image(gt / "0102.bmp", _mask(5))
    z = _submission(tmp_path, {"0101.bmp": _mask(5), "0102.bmp": _mask(5)})
    assert main(["seg", "--pred", str(z), "--gt", str(gt)]) == 2
    assert capsys.readouterr().err == (
        f"error: {z}: not a GAMMA task 3 submission: expected Disc_Cup_Segmentations/<id>.bmp (or .png) at the top "
        "of the zip, as the challenge takes it; its 2 image file(s) lie in the top of the zip (zip the "
        "Disc_Cup_Segmentations folder itself, not its contents)\n")
    z = _submission(tmp_path, {"Disc_Cup_Segmentations/0101.bmp": _mask(5)})
    assert main(["seg", "--pred", str(z), "--gt", str(gt)]) == 2
    assert capsys.readouterr().err == f"error: {z}: no predicted mask for 1 id(s) of {gt}: ['0102']\n"
    assert main(["seg", "--pred", str(z), "--gt", str(z)]) == 2             # ground truth stays a folder
    assert capsys.readouterr().err == f"error: {z}: a file, not a folder (mask folder expected)\n"
