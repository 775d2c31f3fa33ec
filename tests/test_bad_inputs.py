"""Issue 10, table-driven: each bad input or fault a new user hits in the data layer, scoring,
runtime and safety modules gives one clear line, exit status 2 (130 for interrupts), no
traceback, and leaves every input file byte-identical (a checksum of the input folder is
taken before and after each case). Accepted inputs (a PNG named .jpg, bytes after the JPEG
end marker, an EXIF-rotated photo, GT sheets with a ``No.`` column or short numeric ids, a
submission zip, a partial mask folder beside a complete one) exit 0 with the right answer.
An ``OSError`` line says whether the file was an input or an output (issue 17.7).

Cases marked ``cli`` run a command (``python -m gamma_kit.evaluate`` unless the case names
another: ``gamma_kit.synth``, ``gamma_kit.seg``) in a subprocess from the test's folder, as a
user would; ``call`` cases run the library function (or a command's ``main``) through
``cli.run_cli``, the same wrapper every command's ``main`` uses, where a fault has to be
simulated (a full disk, a read-only file system).
"""
from __future__ import annotations

import errno
import tempfile
import hashlib
import json
import os
import re
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
from gamma_kit.cli import parse_int_list, run_cli

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
PROGRESS_BAR = re.compile(r"^[\w ]+: +\d+%\|")      # a tqdm line, e.g. "prepare:  50%|#####     | 1/2 [..."
# Paddle's own import-time notice when OMP_NUM_THREADS > 1 (paddle/base/__init__.py prints it on every
# import; the kit sets the thread count); not the command's output, so the one-line rule skips it


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
    """``build(inp, out, monkeypatch)`` (plus the fixture named by ``needs``) writes the inputs under
    ``inp`` and returns either the command's argv (``cli``; run with the test's folder, the parent
    of ``inp`` and ``out``, as working directory) or a zero-argument body for ``run_cli`` (``call``).
    ``check(inp, out, stdout, stderr)`` asserts what else the case promises."""

    id: str
    build: Callable
    code: int
    message: str                  # expected substring of stderr (code != 0) or stdout (code 0)
    kind: str = "call"
    skip: str | None = None
    module: str = "gamma_kit.evaluate"
    needs: str | None = None
    check: Callable | None = None
    slow: bool = False            # marked slow (trains, or starts Paddle in another process): not in the fast loop


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
    real = tempfile.mkstemp

    def erofs(*a, dir=None, **k):
        raise OSError(errno.EROFS, "Read-only file system", dir)

    mp.setattr(tempfile, "mkstemp", erofs)
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


# --------------------------------------------------------------------------- synth --out
SYNTH = ["--train", "1", "--test", "0", "--sizes", "64x48", "--quiet"]


def _names_out_not_staging(inp, out, stdout, stderr):
    assert "partial" not in stderr                     # the hidden staging folder is never named
    assert not [p for p in out.iterdir() if p.name.startswith(".")]   # and none is left behind


def _names_the_file_in_the_way(inp, out, stdout, stderr):
    _names_out_not_staging(inp, out, stdout, stderr)
    assert f"{inp / 'taken'} is a file, not a folder" in stderr


def _synth_under_a_file(inp, out, mp):
    (inp / "taken").write_text("user's file")
    return ["--out", "input/taken/ds", *SYNTH]


def _synth_read_only_chmod(inp, out, mp):
    out.chmod(0o555)
    return ["--out", "output/ds", *SYNTH]


def _synth_read_only_fs(inp, out, mp):
    from gamma_kit.synth import __main__ as synth_cli
    from gamma_kit.synth import writer

    def erofs(*a, prefix="", dir=None, **k):
        raise OSError(errno.EROFS, "Read-only file system", os.path.join(dir, prefix + "abc123"))

    mp.setattr(writer.tempfile, "mkdtemp", erofs)
    return lambda: synth_cli.main(["--out", str(out / "ds"), *SYNTH])


def _synth_full_disk(inp, out, mp):
    from gamma_kit.synth import __main__ as synth_cli

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    mp.setattr(Path, "write_bytes", full)
    return lambda: synth_cli.main(["--out", str(out / "ds"), *SYNTH])


def _fovea_train_run_dir_under_a_file(inp, out, mp):
    from gamma_kit.synth import generate

    generate(inp / "data", 4, 0, seed=0, sizes=((300, 200),), progress=False)
    (out / "taken").write_text("")
    return ["train", "--fold", "1", "--data-root", "input/data", "--run-dir", "output/taken/run", "--device", "cpu",
            "--no-progress"]


# fovea train: checkpoint sets, one run per fold folder, resume keeps the run's settings (issue 17 items 1-3)
_FOVEA_HOLD = """
import sys, time
from gamma_kit.safety import RunLock
lock = RunLock(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "training").acquire()
print("ready", flush=True)
time.sleep(120)
"""
_FOVEA_KILL_AT = """
import os, signal, sys
import gamma_kit.safety as safety
real = safety.fsync_replace
def kill(tmp, path):
    if str(path).endswith(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)          # while the temporary file of that write exists
    return real(tmp, path)
safety.fsync_replace = kill
from gamma_kit.fovea.__main__ import main
sys.exit(main(sys.argv[2:]))
"""
_fovea_holders: dict[Path, subprocess.Popen] = {}


@pytest.fixture(scope="module")
def fovea_data(tmp_path_factory) -> Path:
    """Ten tiny synthetic training photos at the GAMMA aspect ratios (the fovea tests' data)."""
    from fovea_fixtures import tiny_synth

    return tiny_synth(tmp_path_factory.mktemp("fovea_data") / "data", 10, 0, seed=11)


def _fovea_args(inp: Path, data_dir: Path, run: Path, epochs: int = 1) -> list[str]:
    """A copy of the data and a width-4 CPU config (cosine schedule) in ``inp``; train fold 1 into ``run``."""
    import shutil

    from gamma_kit.fovea.demo import CPU_CONFIG

    shutil.copytree(data_dir, inp / "data")
    (inp / "tiny.yml").write_text(f"_base_: {CPU_CONFIG}\nname: tiny\nmodel: {{width: 4}}\n"
                                  f"train: {{epochs: {epochs}, batch_size: 4, device: cpu}}\n")
    return ["train", "--fold", "1", "--config", str(inp / "tiny.yml"), "--data-root", str(inp / "data"),
            "--run-dir", str(run), "--no-progress"]


def _fovea_trained(inp: Path, data_dir: Path) -> list[str]:
    """A finished 1-epoch run in ``inp/run`` (an input: a refused resume must leave it as it is)."""
    from gamma_kit.fovea.__main__ import main as fovea_main

    args = _fovea_args(inp, data_dir, inp / "run")
    assert fovea_main(args) == 0
    return args


def _fovea_fold_in_use(inp, out, mp, data_dir):
    args = _fovea_args(inp, data_dir, inp / "run")
    holder = subprocess.Popen([sys.executable, "-c", _FOVEA_HOLD, str(inp / "run" / "fold1")], text=True,
                              stdout=subprocess.PIPE)
    _fovea_holders[inp] = holder
    assert holder.stdout.readline().strip() == "ready"
    return args


def _fovea_holder_named(inp, out, stdout, stderr):
    holder = _fovea_holders.pop(inp)
    holder.kill()
    holder.wait()
    assert f"(pid {holder.pid} on " in stderr and not (inp / "run" / "fold1").exists()


def _fovea_edited_config(inp, out, mp, data_dir):
    args = _fovea_trained(inp, data_dir)
    cfg = inp / "run" / "fold1" / "config.yml"
    cfg.write_text(cfg.read_text().replace("width: 4", "width: 8"))
    return args + ["--resume"]


def _fovea_more_cosine_epochs(inp, out, mp, data_dir):
    return _fovea_trained(inp, data_dir) + ["--resume", "--epochs", "3"]


def _fovea_full_disk(inp, out, mp, data_dir):
    import paddle

    from gamma_kit.fovea.__main__ import main as fovea_main

    real = paddle.save

    def full(obj, path, *a, **k):
        if "ckpt-002" in str(path) and ".model.pdopt." in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(obj, path, *a, **k)

    mp.setattr(paddle, "save", full)
    args = _fovea_args(inp, data_dir, out / "run", epochs=2)
    return lambda: fovea_main(args)


def _fovea_previous_set_kept(inp, out, stdout, stderr):
    from gamma_kit.fovea.run_dir import FoldFolder

    fold = out / "run" / "fold1"
    assert FoldFolder(fold).saved_epochs() == 1 and not (fold / "ckpt-002").exists()
    assert not (out / "run" / "fold1.lock").exists() and "killed" not in stderr


def _fovea_killed_mid_write(inp, out, mp, data_dir):
    args = _fovea_args(inp, data_dir, out / "run", epochs=2)
    r = subprocess.run([sys.executable, "-c", _FOVEA_KILL_AT, "ckpt-002/model.pdopt", *args], capture_output=True,
                       text=True, timeout=300)
    fold = out / "run" / "fold1"
    assert r.returncode == -9, r.stderr[-2000:]
    assert list((fold / "ckpt-002").glob(".model.pdopt.*.tmp")) and (out / "run" / "fold1.lock").is_file()
    return args + ["--resume"]


def _fovea_resumed_clean(inp, out, stdout, stderr):
    fold = out / "run" / "fold1"
    assert "note: removed what an interrupted checkpoint write left in " in stdout and "ckpt-002/" in stdout
    assert [r["epoch"] for r in json.loads((fold / "metrics.json").read_text())["history"]] == [0, 1]
    assert sorted(p.name for p in fold.glob("ckpt-*")) == ["ckpt-002"] and not (out / "run" / "fold1.lock").exists()


def _synth_ctrl_c(inp, out, mp):
    from gamma_kit.synth import __main__ as synth_cli
    from gamma_kit.synth import writer

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    mp.setattr(writer, "render_fundus", ctrl_c)
    return lambda: synth_cli.main(["--out", str(out / "ds"), *SYNTH])


def _nothing_left(inp, out, stdout, stderr):
    assert not list(out.iterdir())                     # no partial data set, no staging folder


# --------------------------------------------------------------------------- seg prepare / predict photos
def _seg_task(inp: Path, n: int = 3) -> tuple[Path, Path]:
    """A tiny task 3 training split (160x128 photos, the smallest accepted) under ``inp/gamma``."""
    from seg_fixtures import make_tiny_seg_data

    task = make_tiny_seg_data(inp / "gamma", n_train=n, n_test=1, size=(160, 128), seed=0)
    return task / "training" / data.IMAGE_DIR, task / "training" / "Disc_Cup_Mask"


def _shrink_pair(imgs: Path, masks: Path, i: str, size: tuple[int, int]) -> None:
    img = cv2.imread(str(imgs / f"{i}.jpg"))
    cv2.imwrite(str(imgs / f"{i}.jpg"), cv2.resize(img, size, interpolation=cv2.INTER_AREA))
    mask = cv2.imread(str(masks / f"{i}.bmp"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(masks / f"{i}.bmp"), cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST))


def _prepare_small_photo(inp, out, mp):
    imgs, masks = _seg_task(inp)
    _shrink_pair(imgs, masks, "0002", (150, MIN_FUNDUS_SIDE - 1))
    return ["prepare", "--data-root", "input/gamma", "--out", "output/prep"]


def _prepare_noise_photo(inp, out, mp):
    imgs, _ = _seg_task(inp)
    write_image(imgs / "0002.jpg", np.random.default_rng(0).integers(0, 256, (128, 160, 3), dtype=np.uint8))
    return ["prepare", "--data-root", "input/gamma", "--out", "output/prep"]


def _prepare_all_rejected(inp, out, mp):
    imgs, masks = _seg_task(inp, n=2)
    for i in ("0001", "0002"):
        _shrink_pair(imgs, masks, i, (100, 80))
    return ["prepare", "--data-root", "input/gamma", "--out", "output/prep"]


def _prepare_full_disk(inp, out, mp):
    import shutil

    from gamma_kit.seg.__main__ import main as seg_main

    _seg_task(inp)
    real = shutil.copyfile

    def full(a, b, **k):
        real(a, b, **k)
        raise OSError(errno.ENOSPC, "No space left on device", b)       # as the OS names the temporary file

    mp.setattr(shutil, "copyfile", full)
    return lambda: seg_main(["prepare", "--data-root", str(inp / "gamma"), "--out", str(out / "prep")])


def _prepare_out_under_a_file(inp, out, mp):
    _seg_task(inp)
    (out / "taken").write_text("")
    return ["prepare", "--data-root", "input/gamma", "--out", "output/taken/prep"]


def _prepared_without(*ids):
    def check(inp, out, stdout, stderr):
        written = sorted(p.stem for p in (out / "prep" / "JPEGImages").iterdir())
        assert written == sorted({"0001", "0002", "0003"} - set(ids))       # never copied
        report = json.loads((out / "prep" / "prepare_report.json").read_text())
        assert sorted(report["bad_pairs"]) == sorted(ids)
    return check


def _predict_small_photo(inp, out, mp, model_dir):
    (inp / "photos").mkdir()
    write_image(inp / "photos" / "0001.jpg", photo(300, 400))
    write_image(inp / "photos" / "0002.jpg", photo(MIN_FUNDUS_SIDE - 1, 190))
    return ["predict", "--model", str(model_dir), "--images", "input/photos", "--out", "output/pred"]


def _predict_out_under_a_file(inp, out, mp, model_dir):
    (inp / "photos").mkdir()
    write_image(inp / "photos" / "0001.jpg", photo(300, 400))
    (out / "taken").write_text("")
    return ["predict", "--model", str(model_dir), "--images", "input/photos", "--out", "output/taken/pred"]


def _predict_noise_photo(inp, out, mp, model_dir):
    (inp / "photos").mkdir()
    write_image(inp / "photos" / "0001.jpg", photo(300, 400))
    write_image(inp / "photos" / "0002.png", np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8))
    return ["predict", "--model", str(model_dir), "--images", "input/photos", "--out", "output/pred"]


def _noise_named_not_fundus(inp, out, stdout, stderr):
    warned = [ln for ln in stderr.splitlines() if ln.startswith("warning:")]
    assert len(warned) == 1 and "1 of 2 photo(s) show no circular field of view" in warned[0] \
        and "predicted anyway: ['0002.png']" in warned[0], stderr
    doubted = json.loads((out / "pred" / "predict_manifest.json").read_text())["not_fundus"]
    assert [d["id"] for d in doubted] == ["0002"] and "(not a fundus photograph?)" in doubted[0]["reason"]


def _nothing_predicted(inp, out, stdout, stderr):
    assert not (out / "pred").exists()                 # refused before any work


def _seg_train_resume(fault: str):
    """seg train --resume-model on a checkpoint folder with ``fault``; tiny prepared data in ``inp``."""
    def build(inp, out, mp, model_dir):
        from gamma_kit.resources import config_path
        from gamma_kit.seg.__main__ import main as seg_main
        from seg_fixtures import make_prepared, small_transforms

        root = make_prepared(inp, n_train=2, n_test=1)
        ckpt = inp / "old_run" / "iter_2"
        ckpt.mkdir(parents=True)
        weights = (model_dir / "model.pdparams").read_bytes()
        opts = [f"train_dataset.dataset_root={root}", f"train_dataset.train_path={root / 'train_list.txt'}",
                small_transforms(32)[0]]
        if fault == "empty":
            (ckpt / "model.pdparams").write_bytes(b"")
            (ckpt / "model.pdopt").write_bytes(b"")
        elif fault == "truncated":
            (ckpt / "model.pdparams").write_bytes(weights[:1000])
            (ckpt / "model.pdopt").write_bytes(weights[:1000])
        elif fault == "other model":
            (ckpt / "model.pdparams").write_bytes(weights)
            (ckpt / "model.pdopt").write_bytes(weights)
            opts.append("model.base_channels=4")
        argv = ["train", "--config", str(config_path("seg/liteunet_gamma_cpu.yml")), "--save-dir", str(out / "run"),
                "--iters", "1", "--batch-size", "1", "--no-eval", "--device", "cpu", "--resume-model", str(ckpt),
                "--opts", *opts]
        return lambda: seg_main(argv)
    return build


def _seg_train_ctrl_c(saved: tuple[str, ...]):
    """seg train stopped by Ctrl-C after PaddleSeg saved ``saved`` (files under the run folder)."""
    def build(inp, out, mp):
        import paddleseg.core

        from gamma_kit.resources import config_path
        from gamma_kit.seg.__main__ import main as seg_main
        from seg_fixtures import make_prepared, small_transforms

        root = make_prepared(inp, n_train=2, n_test=1)

        def train_then_ctrl_c(*a, save_dir, **k):
            for rel in saved:
                (Path(save_dir) / rel).parent.mkdir(parents=True, exist_ok=True)
                (Path(save_dir) / rel).write_bytes(b"checkpoint")
            raise KeyboardInterrupt

        mp.setattr(paddleseg.core, "train", train_then_ctrl_c)
        return lambda: seg_main(["train", "--config", str(config_path("seg/liteunet_gamma_cpu.yml")), "--save-dir",
                                 str(out / "run"), "--iters", "4", "--batch-size", "1", "--no-eval", "--device", "cpu",
                                 "--opts", f"train_dataset.dataset_root={root}",
                                 f"train_dataset.train_path={root / 'train_list.txt'}", small_transforms(32)[0]])
    return build


def _seg_train_into_a_run(inp, out, mp, model_dir):
    """seg train --save-dir naming a folder that holds an earlier run (here under input/, so the
    checksum shows its files untouched) and no --resume-model / --set-aside-old-run."""
    from gamma_kit.resources import config_path
    from gamma_kit.seg.__main__ import main as seg_main
    from seg_fixtures import make_prepared, small_transforms

    root = make_prepared(inp, n_train=2, n_test=1)
    run = inp / "run"
    for d in (run / "iter_2", run / "last_model"):
        d.mkdir(parents=True)
        for name in ("model.pdparams", "model.pdopt", "model.yml"):
            (d / name).write_bytes((model_dir / "model.pdparams").read_bytes() if name == "model.pdparams"
                                   else (model_dir / "model.yml").read_bytes())
    (run / "model.yml").write_bytes((model_dir / "model.yml").read_bytes())
    return lambda: seg_main(["train", "--config", str(config_path("seg/liteunet_gamma_cpu.yml")), "--save-dir",
                             str(run), "--iters", "1", "--batch-size", "1", "--no-eval", "--device", "cpu",
                             "--opts", f"train_dataset.dataset_root={root}",
                             f"train_dataset.train_path={root / 'train_list.txt'}", small_transforms(32)[0]])


def _no_run_aside(inp, out, stdout, stderr):
    assert not list(inp.glob("run.old-*"))              # refused: nothing renamed either


def _seg_evaluate_other_model(inp, out, mp, model_dir):
    from gamma_kit.resources import config_path
    from gamma_kit.seg.__main__ import main as seg_main
    from seg_fixtures import make_prepared

    root = make_prepared(inp, n_train=2, n_test=1, val_value=0.5)
    cfg = out / "other.yml"                 # the CPU config with a narrower model
    cfg.write_text(f"_base_: {config_path('seg/liteunet_gamma_cpu.yml')}\nmodel:\n  base_channels: 4\n"
                   f"val_dataset:\n  dataset_root: {root}\n  val_path: {root / 'val_list.txt'}\n")
    return lambda: seg_main(["evaluate", "--config", str(cfg), "--model", str(model_dir), "--device", "cpu"])


@pytest.fixture(scope="module")
def seg_model(tmp_path_factory) -> Path:
    """An untrained LiteUNet model directory (CPU config, 32 px transforms): enough for checks that
    come before the network, with no training."""
    from paddleseg.cvlibs import SegBuilder

    from gamma_kit.safety import atomic_write_text
    from gamma_kit.resources import config_path
    from gamma_kit.safety import atomic_save_paddle
    from gamma_kit.seg.model_dir import MODEL_CONFIG_NAME, WEIGHTS_NAME
    from gamma_kit.seg.training import load_config
    from seg_fixtures import small_transforms

    d = tmp_path_factory.mktemp("seg_model")
    cfg = load_config(config_path("seg/liteunet_gamma_cpu.yml"), opts=list(small_transforms(32)))
    atomic_write_text(d / MODEL_CONFIG_NAME, str(cfg))
    atomic_save_paddle(SegBuilder(cfg).model.state_dict(), d / WEIGHTS_NAME)
    return d


# --------------------------------------------------------------------------- issue 17: locks, resumed configs, stage 2
def _hold(folder: Path, what: str) -> subprocess.Popen:
    """Another process holding ``folder``'s run lock (``safety.RunLock``) until it is killed."""
    holder = subprocess.Popen([sys.executable, "-c", _FOVEA_HOLD, str(folder), what], text=True,
                              stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == "ready"
    _fovea_holders[folder.parent] = holder
    return holder


def _holder_named_and_nothing_written(folder: str):
    def check(inp, out, stdout, stderr):
        holder = _fovea_holders.pop(inp)
        holder.kill()
        holder.wait()
        assert f"(pid {holder.pid} on " in stderr and not (inp / folder).exists()
    return check


def _seg_train_args(root: Path, save_dir: Path, *extra: str) -> list[str]:
    from gamma_kit.resources import config_path
    from seg_fixtures import small_transforms

    return ["train", "--config", str(config_path("seg/liteunet_gamma_cpu.yml")), "--save-dir", str(save_dir),
            "--iters", "1", "--batch-size", "1", "--no-eval", "--device", "cpu", *extra,
            "--opts", f"train_dataset.dataset_root={root}", f"train_dataset.train_path={root / 'train_list.txt'}",
            small_transforms(32)[0]]


def _seg_save_dir_in_use(inp, out, mp, model_dir):
    from gamma_kit.seg.__main__ import main as seg_main
    from seg_fixtures import make_prepared

    root = make_prepared(inp, n_train=2, n_test=1)
    _hold(inp / "run", "training")
    return lambda: seg_main(_seg_train_args(root, inp / "run", "--set-aside-old-run"))


def _seg_resume_other_config(inp, out, mp, model_dir):
    """A run in ``inp/run`` trained with the untrained model's config, resumed with other --opts."""
    import shutil

    from gamma_kit.seg.__main__ import main as seg_main
    from seg_fixtures import make_prepared

    root = make_prepared(inp, n_train=2, n_test=1)
    (inp / "run" / "iter_2").mkdir(parents=True)
    shutil.copy(model_dir / "model.yml", inp / "run" / "model.yml")
    for name in ("model.pdparams", "model.pdopt"):
        shutil.copy(model_dir / "model.pdparams", inp / "run" / "iter_2" / name)
    return lambda: seg_main(_seg_train_args(root, inp / "run", "--resume-model", str(inp / "run" / "iter_2")))


def _fovea_cv_in_use(inp, out, mp, data_dir):
    args = _fovea_args(inp, data_dir, inp / "run")
    _hold(inp / "run", "cross-validation")
    return ["cv", *[a for a in args[3:]]]


def _painted_disc(inp, out, mp):
    """Three tiny photos with a disc, one with its disc painted over, one field without a disc, and a
    stand-in stage 2 network that segments what is bright (tests/test_seg_stage2.py)."""
    from seg_fixtures import brightness_predictor, draw_fundus

    from gamma_kit.seg.submission import predict_folder

    rng = np.random.default_rng(4)
    (inp / "photos").mkdir()
    for k in range(3):
        write_image(inp / "photos" / f"000{k + 1}.jpg", draw_fundus(rng, (240, 160))[0])
    img, mask = draw_fundus(rng, (240, 160))
    img[cv2.dilate((mask < 255).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)] = (150, 40, 20)
    write_image(inp / "photos" / "painted.jpg", img)
    return lambda: print(len(predict_folder(brightness_predictor(), inp / "photos", out / "pred", progress=False).ids))


def _every_mask_written_and_the_painted_one_listed(inp, out, stdout, stderr):
    assert len(list((out / "pred" / "Disc_Cup_Segmentations").glob("*.bmp"))) == 4 and stdout.strip().endswith("4")
    report = json.loads((out / "pred" / "stage1_report.json").read_text())
    assert [d["id"] for d in report["stage2"]] == ["painted"]


# --------------------------------------------------------------------------- issue 17: zips, rotations, leftovers, sides
def _seg_submission(inp: Path, members: dict[str, np.ndarray]) -> list[str]:
    """GT masks 0101 and 0102 in ``inp/gt`` and a submission zip ``inp/submission.zip`` holding ``members``."""
    import zipfile

    (inp / "gt").mkdir()
    write_image(inp / "gt" / "0101.bmp", gamma_mask())
    write_image(inp / "gt" / "0102.bmp", gamma_mask(4))
    with zipfile.ZipFile(inp / "submission.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for name, mask in members.items():
            zf.writestr(name, cv2.imencode(".bmp", mask)[1].tobytes())
    return ["seg", "--pred", "input/submission.zip", "--gt", "input/gt"]


def _nothing_unpacked(inp, out, stdout, stderr):
    assert sorted(p.name for p in inp.parent.iterdir()) == ["input", "output"] and not list(out.iterdir())
    assert sorted(p.name for p in inp.iterdir()) == ["gt", "submission.zip"]


def _exif_turned_training_photo(inp, out, mp, data_dir):
    """fovea train where one training photo carries EXIF orientation 8: the kit shows it turned 90 degrees."""
    args = _fovea_args(inp, data_dir, out / "run")
    photo_path = inp / "data" / "task2_Fovea_localization" / "training" / data.IMAGE_DIR / "0001.jpg"
    exif = Image.Exif()
    exif[0x0112] = 8
    pixels = Image.open(photo_path)
    pixels.load()
    pixels.save(photo_path, "JPEG", quality=95, exif=exif.tobytes())
    return args


def _two_mask_folders(partial: int, full: int):
    """seg prepare on a 3-photo split whose Disc_Cup_Mask keeps ``partial`` masks, beside a Disc_Cup_Masks
    holding ``full`` of them."""
    def build(inp, out, mp):
        imgs, masks = _seg_task(inp)
        other = masks.parent / "Disc_Cup_Masks"
        other.mkdir()
        for k, m in enumerate(sorted(masks.iterdir()), 1):
            if k <= full:
                (other / m.name).write_bytes(m.read_bytes())
            if k > partial:
                m.unlink()
        return ["prepare", "--data-root", "input/gamma", "--out", "output/prep"]
    return build


def _took_the_full_folder(inp, out, stdout, stderr):
    lines = [ln for ln in re.split(r"[\r\n]", stderr) if ln.strip() and not PROGRESS_BAR.match(ln)]
    assert len(lines) == 1 and lines[0].startswith("warning: input/gamma/task3_disc_cup_segmentation/training: two "
                                                   "mask folders, Disc_Cup_Mask (1 masks) and Disc_Cup_Masks (3 "
                                                   "masks); using Disc_Cup_Masks, the one with a mask for each of "
                                                   "the 3 photos"), stderr
    assert sorted(p.stem for p in (out / "prep" / "Annotations").iterdir()) == ["0001", "0002", "0003"]


def _mask_of_another_camera(inp, out, mp):
    imgs, masks = _seg_task(inp)
    mask = cv2.imread(str(masks / "0002.bmp"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(masks / "0002.bmp"), cv2.resize(mask, (240, 128), interpolation=cv2.INTER_NEAREST))
    return ["prepare", "--data-root", "input/gamma", "--out", "output/prep"]


def _prepare_checks_mask_shapes() -> str | None:
    """None once seg prepare refuses a mask of another aspect ratio (it calls data.check_mask_fits)."""
    import gamma_kit.seg.prepare as prepare

    return None if "check_mask_fits" in vars(prepare) else (
        "seg prepare still resizes every photo to its mask: gamma_kit/seg/prepare.py must call data.check_mask_fits "
        "(seg code, another agent's)")


def _photo_unreadable(inp, out, mp):
    write_image(inp / "0001.jpg", photo())

    def io_error(path, *a, **k):
        raise OSError(errno.EIO, "Input/output error", str(path))

    mp.setattr(np, "fromfile", io_error)
    return lambda: read_image(inp / "0001.jpg")


def _gt_unreadable(inp, out, mp):
    (inp / "gt.csv").write_text("data,Fovea_X,Fovea_Y\n0101,1,2\n")

    def denied(path, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    mp.setattr(pd, "read_csv", denied)
    return lambda: read_fovea_gt(inp / "gt.csv")


def _prepare_photo_unreadable_while_copying(inp, out, mp):
    import shutil

    from gamma_kit.seg.__main__ import main as seg_main

    _seg_task(inp)

    def io_error(a, b, **k):
        raise OSError(errno.EIO, "Input/output error", a)                # reading the source failed

    mp.setattr(shutil, "copyfile", io_error)
    return lambda: seg_main(["prepare", "--data-root", str(inp / "gamma"), "--out", str(out / "prep")])


def _side(side: str, where: str):
    """The error line names ``where`` (``input`` or ``output``, the test's folder) as ``side``."""
    def check(inp, out, stdout, stderr):
        folder = {"input": inp, "output": out}[where]
        assert re.search(rf"(^|\n)error: {side} {re.escape(str(folder))}/", stderr), stderr   # after tqdm's bar
    return check


CASES = [
    Case("corrupt JPEG (piece of the scan missing)", _corrupt, 2, "0001.jpg: JPEG data is corrupt (libjpeg: Corrupt JPEG data"),
    Case("JPEG truncated mid-stream", _truncated, 2, "0001.jpg: JPEG is truncated"),
    Case("PNG named .jpg accepted", _png_named_jpg, 0, "ok 400x300"),
    Case("bytes after the JPEG end marker accepted", _trailing, 0, "ok 400x300"),
    Case("EXIF-rotated JPEG: size == pixels", _exif_rotated, 0, "ok 300x400"),
    Case("10x10 image", _tiny, 2, f"0001.png: image is 10x10 px; fundus photos need at least {MIN_FUNDUS_SIDE} px"),
    Case("random noise as a fundus", _noise, 2, "0001.png: no circular field of view on a dark surround "
                                                "(not a fundus photograph?)"),
    Case("full disk while writing", _full_disk, 2, "sub.csv: No space left on device (the disk is full)",
         check=_side("output", "output")),
    Case("read-only folder (chmod)", _read_only_chmod, 2, "sub.csv: Permission denied", check=_side("output", "output"),
         skip="runs as root, where chmod does not stop writes (the simulated read-only file system case covers it)"
         if IS_ROOT else None),
    Case("read-only file system (simulated EROFS)", _read_only_fs, 2, "sub.csv: Read-only file system",
         check=_side("output", "output")),
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
    # synth --out X: the error names --out X, before any rendering
    Case("synth --out under a file", _synth_under_a_file, 2, "error: --out input/taken/ds: ", kind="cli",
         module="gamma_kit.synth", check=_names_the_file_in_the_way),
    Case("synth --out in a read-only folder (chmod)", _synth_read_only_chmod, 2,
         "error: --out output/ds: cannot write in ", kind="cli", module="gamma_kit.synth",
         check=_names_out_not_staging,
         skip="runs as root, where chmod does not stop writes (the simulated read-only file system case covers it)"
         if IS_ROOT else None),
    Case("synth --out on a read-only file system (simulated EROFS)", _synth_read_only_fs, 2,
         "/output/ds: Read-only file system", check=_names_out_not_staging),
    Case("synth: disk full while writing", _synth_full_disk, 2,
         "/output/ds: No space left on device (the disk is full)", check=_names_out_not_staging),
    Case("Ctrl-C during synth", _synth_ctrl_c, 130, "interrupted (Ctrl-C or SIGTERM)", check=_nothing_left),
    # fovea train: an unwritable run folder is one line before any training
    Case("fovea train --run-dir under a file", _fovea_train_run_dir_under_a_file, 2,
         "error: output/taken/run/fold1: ", kind="cli", module="gamma_kit.fovea"),
    # fovea train: one run per fold folder, a kill or a full disk leaves a resumable run, resume keeps the settings
    Case("fovea train into a fold another training is using", _fovea_fold_in_use, 2,
         "/input/run/fold1 is in use by another training (pid ", kind="cli", module="gamma_kit.fovea",
         needs="fovea_data", check=_fovea_holder_named, slow=True),
    Case("fovea train --resume with an edited fold config.yml", _fovea_edited_config, 2,
         "/input/run/fold1/config.yml was edited after the run wrote it (model.width 4 -> 8)", kind="cli",
         module="gamma_kit.fovea", needs="fovea_data", slow=True),
    Case("fovea train --resume --epochs beyond a cosine schedule", _fovea_more_cosine_epochs, 2,
         "--resume --epochs 3: ", kind="cli", module="gamma_kit.fovea", needs="fovea_data", slow=True),
    Case("fovea train: disk full while writing a checkpoint set", _fovea_full_disk, 2,
         "/output/run/fold1/ckpt-002/model.pdopt: No space left on device (the disk is full); epoch 1 is saved in ",
         needs="fovea_data", check=_fovea_previous_set_kept, slow=True),
    Case("fovea cv into a run folder another cross-validation is using", _fovea_cv_in_use, 2,
         "/input/run is in use by another cross-validation (pid ", kind="cli", module="gamma_kit.fovea",
         needs="fovea_data", check=_holder_named_and_nothing_written("run/fold1"), slow=True),
    Case("seg train into a --save-dir another training is using", _seg_save_dir_in_use, 2,
         "/input/run is in use by another training (pid ", needs="seg_model",
         check=_holder_named_and_nothing_written("run")),
    Case("seg train --resume-model with another config than the run's", _seg_resume_other_config, 2,
         "--resume-model: this config differs from the one ", needs="seg_model"),
    Case("seg predict: a photo whose disc is painted out (named, every mask written)", _painted_disc, 0,
         "stage 2 doubts the disc of painted.jpg: no disc segmented in the crop; its mask is written anyway",
         check=_every_mask_written_and_the_painted_one_listed),
    Case("fovea train --resume after a SIGKILL inside a checkpoint write (stale lock, temporary file)",
         _fovea_killed_mid_write, 0, "took over the lock of an earlier training that is no longer running (pid ",
         kind="cli", module="gamma_kit.fovea", needs="fovea_data", check=_fovea_resumed_clean, slow=True),
    # seg prepare: a photo that is no usable fundus photograph is skipped and reported, never copied
    Case("seg prepare: a photo below the minimum size", _prepare_small_photo, 0,
         f"skipped 0002: input/gamma/task3_disc_cup_segmentation/training/fundus color images/0002.jpg: image is "
         f"150x{MIN_FUNDUS_SIDE - 1} px; fundus photos need at least {MIN_FUNDUS_SIDE} px on the short side",
         kind="cli", module="gamma_kit.seg", check=_prepared_without("0002")),
    Case("seg prepare: random noise as a photo", _prepare_noise_photo, 0,
         "fundus color images/0002.jpg: no circular field of view on a dark surround (not a fundus photograph?)",
         kind="cli", module="gamma_kit.seg", check=_prepared_without("0002")),
    Case("seg prepare: every photo rejected", _prepare_all_rejected, 2,
         "training: no usable image/mask pair; reasons: ", kind="cli", module="gamma_kit.seg", slow=True),
    Case("seg prepare --out under a file", _prepare_out_under_a_file, 2,
         "error: output folder output/taken/prep: ", kind="cli", module="gamma_kit.seg"),
    Case("seg prepare: disk full while copying a photo", _prepare_full_disk, 2,
         "/output/prep/JPEGImages/0001.jpg: No space left on device (the disk is full)", check=_side("output", "output")),
    # seg predict: photos below the minimum size are refused before any work
    Case("seg predict: a photo below the minimum size", _predict_small_photo, 2,
         f"error: input/photos/0002.jpg: image is 190x{MIN_FUNDUS_SIDE - 1} px; fundus photos need at least "
         f"{MIN_FUNDUS_SIDE} px on the short side", kind="cli", module="gamma_kit.seg", needs="seg_model",
         check=_nothing_predicted, slow=True),
    Case("seg predict: random noise as a photo (predicted, named in a warning)", _predict_noise_photo, 0,
         "wrote 2 masks (whole-image) to output/pred/Disc_Cup_Segmentations", kind="cli", module="gamma_kit.seg",
         needs="seg_model", check=_noise_named_not_fundus, slow=True),
    # seg train --resume-model / seg evaluate --config: checkpoints checked before PaddleSeg loads them
    Case("seg train --resume-model with nothing to resume", _seg_train_resume("nothing"), 2,
         "old_run/iter_2 holds no model.pdparams (nothing to resume)", needs="seg_model"),
    Case("seg train --resume-model with a 0-byte checkpoint", _seg_train_resume("empty"), 2,
         "old_run/iter_2/model.pdparams: empty file (0 bytes; an interrupted save?)", needs="seg_model"),
    Case("seg train --resume-model with a truncated checkpoint", _seg_train_resume("truncated"), 2,
         "old_run/iter_2/model.pdparams: cannot be loaded as Paddle weights (truncated or corrupt",
         needs="seg_model"),
    Case("seg train --resume-model with another config's weights", _seg_train_resume("other model"), 2,
         "old_run/iter_2/model.pdparams does not match the model in this run's config (with its --opts): ",
         needs="seg_model"),
    Case("Ctrl-C during seg train: resume hint", _seg_train_ctrl_c(
        ("iter_1/model.pdparams", "iter_1/model.pdopt", "iter_2/model.pdparams")), 130,
        "run/iter_1: resume with the same train command plus --resume-model "),    # iter_2 is incomplete
    Case("Ctrl-C during seg train before a checkpoint", _seg_train_ctrl_c(()), 130,
         "interrupted before the first checkpoint in "),
    Case("seg train into a --save-dir that holds a run", _seg_train_into_a_run, 2,
         "/input/run already holds a run (iter_2, last_model, model.yml): add --resume-model ", needs="seg_model",
         check=_no_run_aside),
    Case("seg evaluate --config with another config's weights", _seg_evaluate_other_model, 2,
         "model.pdparams does not match the model in ", needs="seg_model"),
    Case("seg predict --out under a file", _predict_out_under_a_file, 2,
         "error: output folder output/taken/pred: ", kind="cli", module="gamma_kit.seg", needs="seg_model", slow=True),
    # issue 17: a submission zip is scored as the challenge reads it, in memory
    Case("evaluate seg --pred submission.zip", lambda inp, out, mp: _seg_submission(
        inp, {"Disc_Cup_Segmentations/0101.bmp": gamma_mask(), "Disc_Cup_Segmentations/0102.bmp": gamma_mask(4)})
        + ["--json"], 0, '"dice_disc": 1.0, "dice_cup": 1.0, "vcdr_mae": 0.0', kind="cli", check=_nothing_unpacked),
    Case("evaluate seg --pred a zip of the masks without their folder", lambda inp, out, mp: _seg_submission(
        inp, {"0101.bmp": gamma_mask(), "0102.bmp": gamma_mask(4)}), 2,
        "error: input/submission.zip: not a GAMMA task 3 submission: expected Disc_Cup_Segmentations/<id>.bmp (or "
        ".png) at the top of the zip, as the challenge takes it; its 2 image file(s) lie in the top of the zip (zip "
        "the Disc_Cup_Segmentations folder itself, not its contents)", kind="cli", check=_nothing_unpacked),
    Case("evaluate seg --pred a zip with the folder one level down", lambda inp, out, mp: _seg_submission(
        inp, {"team/Disc_Cup_Segmentations/0101.bmp": gamma_mask()}), 2,
        "its 1 image file(s) lie in team/Disc_Cup_Segmentations/", kind="cli", check=_nothing_unpacked),
    Case("evaluate seg: a predicted mask of another size than its ground truth", lambda inp, out, mp: _seg_submission(
        inp, {"Disc_Cup_Segmentations/0101.bmp": gamma_mask(), "Disc_Cup_Segmentations/0102.bmp":
              cv2.resize(gamma_mask(4), (20, 20), interpolation=cv2.INTER_NEAREST)}), 2,
        "input/submission.zip/Disc_Cup_Segmentations/0102.bmp: mask size 20x20 differs from its image 10x20",
        kind="cli"),
    # issue 17: the eye-side refusal of a photo that an EXIF tag turns names the tag
    Case("fovea train: a training photo turned 90 degrees by its EXIF tag", _exif_turned_training_photo, 2,
         "training/fundus color images/0001.jpg: cannot decide the eye side (", kind="cli", module="gamma_kit.fovea",
         needs="fovea_data", slow=True, check=lambda inp, out, stdout, stderr: (
             "the file has EXIF orientation 8: shown turned 90 degrees counter-clockwise (the kit reads photos as a "
             "viewer shows them, which puts the disc above or below the centre)" in stderr) or pytest.fail(stderr)),
    # issue 17 leftovers: two mask folders, masks of another camera
    Case("seg prepare: a partial Disc_Cup_Mask beside a full Disc_Cup_Masks", _two_mask_folders(1, 3), 0,
         "prepared 3 image/label pairs from", kind="cli", module="gamma_kit.seg", check=_took_the_full_folder),
    Case("seg prepare: two partial mask folders", _two_mask_folders(2, 1), 2,
         "error: input/gamma/task3_disc_cup_segmentation/training: two mask folders, Disc_Cup_Mask (2 masks) and "
         "Disc_Cup_Masks (1 masks), and neither has a mask for each of the 3 photos in fundus color images/: keep "
         "one of them", kind="cli", module="gamma_kit.seg"),
    Case("seg prepare: a mask of another camera's size (another aspect ratio)", _mask_of_another_camera, 0,
         "skipped 0002: input/gamma/task3_disc_cup_segmentation/training/Disc_Cup_Mask/0002.bmp: mask is 240x128 px "
         "but its photo 0002.jpg is 160x128 (w x h): another aspect ratio", kind="cli", module="gamma_kit.seg",
         check=_prepared_without("0002"), skip=_prepare_checks_mask_shapes()),
    # issue 17: an OSError names the file and whether it was an input or an output
    Case("I/O error reading a photo", _photo_unreadable, 2, "0001.jpg: Input/output error",
         check=_side("input", "input")),
    Case("GT table without read permission", _gt_unreadable, 2, "gt.csv: Permission denied",
         check=_side("input", "input")),
    Case("seg prepare: I/O error reading a photo while copying it", _prepare_photo_unreadable_while_copying, 2,
         "/fundus color images/0001.jpg: Input/output error", check=_side("input", "input")),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=pytest.mark.slow if c.slow else ()) for c in CASES])
def test_bad_input(case: Case, tmp_path, monkeypatch, capsys, request):
    if case.skip:
        pytest.skip(case.skip)
    inp, out = tmp_path / "input", tmp_path / "output"
    inp.mkdir()
    out.mkdir()
    extra = [request.getfixturevalue(case.needs)] if case.needs else []
    target = case.build(inp, out, monkeypatch, *extra)
    before = checksum(inp)
    try:
        if case.kind == "cli":
            r = subprocess.run([sys.executable, "-m", case.module, *target], capture_output=True, text=True,
                               timeout=300, cwd=tmp_path)
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
        lines = [ln for ln in stderr.splitlines()
                 if ln and not PROGRESS_BAR.match(ln)]   # Paddle's import warning is dropped by gamma_kit
        assert len(lines) == 1, stderr                                     # one line (besides tqdm's bar)
        assert lines[0].startswith("error: " if case.code == 2 else "interrupted")
    assert checksum(inp) == before                                         # no input changed
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]      # no temporary file left
    if case.check is not None:
        case.check(inp, out, stdout, stderr)


def test_unlabelled_training_image_is_one_warning_line(tmp_path, monkeypatch, capsys):
    body = _unlabelled(tmp_path, tmp_path, monkeypatch)
    assert run_cli(body) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: 1 image(s) have no row in ") and err.endswith("are left out: ['3']\n")
    assert err.count("\n") == 1
