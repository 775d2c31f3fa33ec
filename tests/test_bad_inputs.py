"""Issue 10, table-driven: each bad input or fault a new user hits in the data layer, scoring,
runtime and safety modules gives one clear line, exit status 2 (130 for interrupts), no
traceback, and leaves every input file byte-identical (a checksum of the input folder is
taken before and after each case). Accepted inputs (a PNG named .jpg, bytes after the JPEG
end marker, an EXIF-rotated photo, GT sheets with a ``No.`` column or short numeric ids)
exit 0 with the right answer.

Cases marked ``cli`` run ``python -m gamma_kit.evaluate`` in a subprocess; ``call`` cases run
the library function the commands use through ``runtime.run_cli``, the same wrapper every
command's ``main`` uses.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from gamma_kit import data
from gamma_kit.data import (MIN_FUNDUS_SIDE, check_fundus_image, image_size, load_fovea_split, read_fovea_gt,
                            read_image, write_fovea_csv, write_image)
from gamma_kit.runtime import parse_int_list, run_cli

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def checksum(folder: Path) -> str:
    """sha256 over every file's relative path, mode and bytes below ``folder``."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(oct(p.stat().st_mode).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def photo(h: int = 300, w: int = 400, seed: int = 0) -> np.ndarray:
    """Smooth fundus-like RGB image: a textured disc of light on a black surround."""
    rng = np.random.default_rng(seed)
    img = cv2.normalize(cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3), np.uint8), (0, 0), 6), None, 60, 220,
                        cv2.NORM_MINMAX)
    yy, xx = np.mgrid[0:h, 0:w]
    img[(xx - w / 2) ** 2 + (yy - h / 2) ** 2 > (0.48 * min(h, w)) ** 2] = 0
    return img


def jpeg(img: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


def gamma_mask(cup_rows: int = 5) -> np.ndarray:
    m = np.full((20, 10), 255, np.uint8)
    m[4:14, 2:8] = 128
    m[6:6 + cup_rows, 3:7] = 0
    return m


def fovea_set(inp: Path, names=("0101.jpg", "0102.jpg"), gt: str = "data,Fovea_X,Fovea_Y\n0101,50,100\n0102,200,50\n",
              pred: str = "data,Fovea_X,Fovea_Y\n0102,200,52\n0101,53,100\n") -> list[str]:
    """Two test images (100x200 and 400x100), GT and a prediction; known AED 0.025."""
    (inp / "imgs").mkdir()
    write_image(inp / "imgs" / names[0], np.zeros((200, 100, 3), np.uint8))
    write_image(inp / "imgs" / names[1], np.zeros((100, 400, 3), np.uint8))
    (inp / "gt.csv").write_text(gt)
    (inp / "pred.csv").write_text(pred)
    return ["fovea", "--pred", str(inp / "pred.csv"), "--gt", str(inp / "gt.csv"), "--images", str(inp / "imgs")]


def seg_set(inp: Path, pred_name: str = "0101.bmp", pred_mask: np.ndarray | None = None) -> list[str]:
    (inp / "gt").mkdir()
    (inp / "pred").mkdir()
    write_image(inp / "gt" / "0101.bmp", gamma_mask())
    mask = gamma_mask() if pred_mask is None else pred_mask
    if pred_name.endswith(".jpg"):
        (inp / "pred" / pred_name).write_bytes(cv2.imencode(".jpg", mask)[1].tobytes())
    else:
        write_image(inp / "pred" / pred_name, mask)
    return ["seg", "--pred", str(inp / "pred"), "--gt", str(inp / "gt")]


@dataclass
class Case:
    """``build(inp, out, monkeypatch)`` writes the inputs under ``inp`` and returns either
    evaluate's argv (``cli``) or a zero-argument body for ``run_cli`` (``call``)."""

    id: str
    build: Callable
    code: int
    message: str                  # expected substring of stderr (code != 0) or stdout (code 0)
    kind: str = "call"
    skip: str | None = None


def _corrupt(inp, out, mp):
    good = jpeg(photo())
    mid = len(good) // 2
    (inp / "0001.jpg").write_bytes(good[:mid] + good[mid + 1000:])        # a piece of the scan missing
    return lambda: read_image(inp / "0001.jpg")


def _truncated(inp, out, mp):
    good = jpeg(photo())
    (inp / "0001.jpg").write_bytes(good[: len(good) // 2])
    return lambda: read_image(inp / "0001.jpg")


def _accept_and_report(path: Path):
    def body():
        img = read_image(path)
        check_fundus_image(img, path.name)
        assert image_size(path) == img.shape[1::-1]
        print(f"ok {img.shape[1]}x{img.shape[0]}")
    return body


def _png_named_jpg(inp, out, mp):
    (inp / "0001.jpg").write_bytes(cv2.imencode(".png", photo())[1].tobytes())
    return _accept_and_report(inp / "0001.jpg")


def _trailing(inp, out, mp):
    (inp / "0001.jpg").write_bytes(jpeg(photo()) + b"\0camera maker's trailer\xff\xd8" * 50)
    return _accept_and_report(inp / "0001.jpg")


def _exif_rotated(inp, out, mp):
    exif = Image.Exif()
    exif[0x0112] = 6                                                          # rotate 90 degrees to show
    Image.fromarray(photo(300, 400)).save(inp / "0001.jpg", "JPEG", exif=exif.tobytes(), quality=95)
    return _accept_and_report(inp / "0001.jpg")


def _tiny(inp, out, mp):
    write_image(inp / "0001.png", np.full((10, 10, 3), 120, np.uint8))
    return lambda: check_fundus_image(read_image(inp / "0001.png"), inp / "0001.png")


def _noise(inp, out, mp):
    write_image(inp / "0001.png", np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8))
    return lambda: check_fundus_image(read_image(inp / "0001.png"), inp / "0001.png")


def _write_csv_to(target: Path):
    return lambda: write_fovea_csv(target, pd.DataFrame({"Fovea_X": [1.0], "Fovea_Y": [2.0]}, index=["0101"]))


def _full_disk(inp, out, mp):
    (inp / "gt.csv").write_text("data,Fovea_X,Fovea_Y\n0101,1,2\n")

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    mp.setattr(os, "replace", full)
    return _write_csv_to(out / "sub.csv")


def _read_only_chmod(inp, out, mp):
    (inp / "gt.csv").write_text("data,Fovea_X,Fovea_Y\n0101,1,2\n")
    out.chmod(0o555)
    return _write_csv_to(out / "sub.csv")


def _read_only_fs(inp, out, mp):
    (inp / "gt.csv").write_text("data,Fovea_X,Fovea_Y\n0101,1,2\n")
    real = data.tempfile.mkstemp

    def erofs(*a, dir=None, **k):
        raise OSError(errno.EROFS, "Read-only file system", dir)

    mp.setattr(data.tempfile, "mkstemp", erofs)
    assert real
    return _write_csv_to(out / "sub.csv")


def _under_a_file(inp, out, mp):
    (inp / "gt.csv").write_text("data,Fovea_X,Fovea_Y\n0101,1,2\n")
    (out / "taken").write_text("")
    return _write_csv_to(out / "taken" / "sub.csv")


def _interrupted(inp, out, mp):
    (inp / "gt.csv").write_text("data,Fovea_X,Fovea_Y\n0101,1,2\n")

    def body():
        read_fovea_gt(inp / "gt.csv")
        raise KeyboardInterrupt
    return body


def _unlabelled(inp, out, mp):
    t = inp / "task2_Fovea_localization" / "training"
    (t / data.IMAGE_DIR).mkdir(parents=True)
    for k in (1, 2, 3):
        write_image(t / data.IMAGE_DIR / f"{k}.jpg", photo(160, 160))         # short names
    (t / "fovea_localization_training_GT.csv").write_text("No.,data,Fovea_X,Fovea_Y\n1,1,10,20\n2,2,30,40\n")

    def body():
        split = load_fovea_split(inp, "training")
        print(split.gt.to_dict("index"))
    return body


def _gt_two_id_columns(inp, out, mp):
    (inp / "gt.csv").write_text("No.,name,Fovea_X,Fovea_Y\n1,0001,1,2\n")
    return lambda: read_fovea_gt(inp / "gt.csv")


def _folds(inp, out, mp):
    return lambda: parse_int_list("1,x", "--folds", 1, 5)


CASES = [
    Case("corrupt JPEG (piece of the scan missing)", _corrupt, 2, "0001.jpg: JPEG data is corrupt (libjpeg: Corrupt JPEG data"),
    Case("JPEG truncated mid-stream", _truncated, 2, "0001.jpg: JPEG is truncated"),
    Case("PNG named .jpg accepted", _png_named_jpg, 0, "ok 400x300"),
    Case("bytes after the JPEG end marker accepted", _trailing, 0, "ok 400x300"),
    Case("EXIF-rotated JPEG: size == pixels", _exif_rotated, 0, "ok 300x400"),
    Case("10x10 image", _tiny, 2, f"0001.png: image is 10x10 px; fundus photos need at least {MIN_FUNDUS_SIDE} px"),
    Case("random noise as a fundus", _noise, 2, "0001.png: no circular field of view on a dark surround "
                                                "(not a fundus photograph?)"),
    Case("full disk while writing", _full_disk, 2, "sub.csv: No space left on device (the disk is full)"),
    Case("read-only folder (chmod)", _read_only_chmod, 2, "sub.csv: Permission denied",
         skip="runs as root, where chmod does not stop writes (the simulated read-only file system case covers it)"
         if IS_ROOT else None),
    Case("read-only file system (simulated EROFS)", _read_only_fs, 2, "sub.csv: Read-only file system"),
    Case("output path under a file", _under_a_file, 2, "taken/sub.csv: cannot create a folder here: "),
    Case("Ctrl-C", _interrupted, 130, "interrupted (Ctrl-C or SIGTERM)"),
    Case("training image without a GT row; GT with No. column and short ids", _unlabelled, 0,
         "{'1': {'Fovea_X': 10.0, 'Fovea_Y': 20.0}, '2': {'Fovea_X': 30.0, 'Fovea_Y': 40.0}}"),
    Case("GT without data column, two candidates", _gt_two_id_columns, 2, "no 'data' column, and several other"),
    Case("--folds 1,x", _folds, 2, "--folds: 'x' is not a whole number (expected comma-separated whole numbers"),
    # evaluate CLI, in a subprocess
    Case("GT with a No. column before data", lambda inp, out, mp: fovea_set(
        inp, gt="No.,data,Fovea_X,Fovea_Y\n1,0102,200,50\n2,0101,50,100\n") + ["--json"], 0,
        '"aed": 0.025', kind="cli"),
    Case("images 1.jpg, GT id 1", lambda inp, out, mp: fovea_set(
        inp, names=("101.jpg", "102.jpg"), gt="data,Fovea_X,Fovea_Y\n101,50,100\n102,200,50\n") + ["--json"], 0,
        '"aed": 0.025', kind="cli"),
    Case("images 0101.jpg, GT id 101 (a number in the sheet)", lambda inp, out, mp: fovea_set(
        inp, gt="data,Fovea_X,Fovea_Y\n101.0,50,100\n102.0,200,50\n") + ["--json"], 0, '"aed": 0.025', kind="cli"),
    Case("evaluate --json with an infinite distance", lambda inp, out, mp: fovea_set(
        inp, pred="data,Fovea_X,Fovea_Y\n0101,1e308,100\n0102,200,52\n") + ["--json"], 0,
        '{"aed": null, "score": 0.0, "n": 2}', kind="cli"),
    Case("prediction with inf", lambda inp, out, mp: fovea_set(
        inp, pred="data,Fovea_X,Fovea_Y\n0101,inf,100\n0102,200,52\n"), 2,
        "pred.csv: non-numeric, empty or infinite Fovea_X/Fovea_Y for id(s) ['0101']", kind="cli"),
    Case("JPEG mask", lambda inp, out, mp: seg_set(inp, "0101.jpg"), 2,
         "mask(s) saved as JPEG (0101.jpg); JPEG's lossy compression changes the 0/128/255 values", kind="cli"),
    Case("0/1/2 labels instead of a GAMMA mask", lambda inp, out, mp: seg_set(
        inp, "0101.png", (gamma_mask() // 127).astype(np.uint8)), 2,
        "(these look like 0/1/2 training labels, not a GAMMA mask)", kind="cli"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path, monkeypatch, capsys):
    if case.skip:
        pytest.skip(case.skip)
    inp, out = tmp_path / "input", tmp_path / "output"
    inp.mkdir()
    out.mkdir()
    target = case.build(inp, out, monkeypatch)
    before = checksum(inp)
    try:
        if case.kind == "cli":
            r = subprocess.run([sys.executable, "-m", "gamma_kit.evaluate", *target], capture_output=True, text=True,
                               timeout=120)
            code, stdout, stderr = r.returncode, r.stdout, r.stderr
        else:
            code = run_cli(target)
            captured = capsys.readouterr()
            stdout, stderr = captured.out, captured.err
    finally:
        out.chmod(0o755)
    assert code == case.code, (stdout, stderr)
    assert "Traceback" not in stderr and "Traceback" not in stdout
    if case.code == 0:
        assert case.message in stdout
        if case.kind == "cli" and "--json" in target:
            json.loads(stdout, parse_constant=lambda name: pytest.fail(f"not JSON: {name}"))
    else:
        assert case.message in stderr
        lines = [ln for ln in stderr.splitlines() if ln]
        assert len(lines) == 1, stderr                                     # one line
        assert lines[0].startswith("error: " if case.code == 2 else "interrupted")
    assert checksum(inp) == before                                         # no input changed
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]      # no temporary file left


def test_unlabelled_training_image_is_one_warning_line(tmp_path, monkeypatch, capsys):
    body = _unlabelled(tmp_path, tmp_path, monkeypatch)
    assert run_cli(body) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: 1 image(s) have no row in ") and err.endswith("are left out: ['3']\n")
    assert err.count("\n") == 1
