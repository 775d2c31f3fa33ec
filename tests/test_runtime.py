"""cli and runtime: run_cli statuses and one-line messages, argparse value types, fold-list parsing, Paddle's import noise, devices."""
from __future__ import annotations

import argparse
import os
import sys
import errno
import warnings

import pytest

from gamma_kit.cli import ArgumentValueError, describe_error, parse_int_list, positive_float, positive_int, run_cli
from gamma_kit.safety import Interrupted


def test_run_cli_statuses(capsys):
    assert run_cli(lambda: None) == 0
    assert run_cli(lambda: {"a": 1}) == 0          # a function's result that is not a status
    assert run_cli(lambda: 3) == 3

    def missing():
        raise FileNotFoundError("/no/such/file.csv: expected a CSV with columns data,Fovea_X,Fovea_Y")

    assert run_cli(missing) == 2
    err = capsys.readouterr().err
    assert err == "error: /no/such/file.csv: expected a CSV with columns data,Fovea_X,Fovea_Y\n"
    with pytest.raises(ZeroDivisionError):          # a bug keeps its traceback
        run_cli(lambda: 1 / 0)


def _raise(exc):
    def body():
        raise exc
    return body


@pytest.mark.parametrize("exc, line", [
    (OSError(errno.ENOSPC, "No space left on device", "/out/sub.csv"),            # only writing gives these
     "error: output /out/sub.csv: No space left on device (the disk is full)"),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/x.bmp"),
     "error: output /mnt/ro/x.bmp: Read-only file system"),
    (PermissionError(errno.EACCES, "Permission denied", "out/x.csv"), "error: out/x.csv: Permission denied"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "gt.xlsx"), "error: gt.xlsx: No such file or directory"),
    (ValueError("a.csv: bad\nsecond line from a library"), "error: a.csv: bad second line from a library"),
])
def test_run_cli_one_line_errors(capsys, exc, line):
    assert run_cli(_raise(exc)) == 2
    assert capsys.readouterr().err == line + "\n"


def test_run_cli_interrupts(capsys):
    assert run_cli(_raise(KeyboardInterrupt())) == 130
    assert capsys.readouterr().err == "interrupted (Ctrl-C or SIGTERM)\n"
    assert run_cli(_raise(Interrupted("interrupted in epoch 37; resume with ... --resume"))) == 130
    assert capsys.readouterr().err == "interrupted in epoch 37; resume with ... --resume\n"
    assert run_cli(_raise(Interrupted("stopped at iteration 5"))) == 130
    assert capsys.readouterr().err == "interrupted: stopped at iteration 5\n"


def test_run_cli_prints_data_warnings_as_one_line(capsys):
    from gamma_kit.data import DataWarning

    def body():
        warnings.warn(DataWarning("2 image(s) have no row in gt.xlsx and are left out: ['0003',\n '0004']"))

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert run_cli(body) == 0
    assert capsys.readouterr().err == "warning: 2 image(s) have no row in gt.xlsx and are left out: ['0003', '0004']\n"


def test_describe_error_without_errno():
    assert describe_error(OSError("plain")) == "plain"
    assert describe_error(OSError(errno.ENOSPC, "No space left on device")) == \
        "No space left on device (the disk is full)"


def test_positive_types():
    assert positive_int("3") == 3 and positive_float("0.5") == 0.5
    for bad, msg in (("0", "at least 1, got 0"), ("-2", "at least 1"), ("1.5", "whole number >= 1, got '1.5'")):
        with pytest.raises(argparse.ArgumentTypeError, match=msg):
            positive_int(bad)
    for bad in ("0", "-1", "nan", "inf", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            positive_float(bad)


@pytest.mark.parametrize("text, message", [
    ("1,x", "--folds: 'x' is not a whole number (expected comma-separated whole numbers such as 1,2,3; got '1,x')"),
    ("", "--folds: empty"), ("1,,2", "--folds: '' is not a whole number"),
    ("0,2", "--folds: 0 is out of range (each value must be 1..5; got '0,2')"),
    ("2,2", "--folds: [2] given more than once"),
])
def test_parse_int_list_messages(text, message):
    with pytest.raises(ValueError) as info:
        parse_int_list(text, "--folds", low=1, high=5)
    assert str(info.value).startswith(message)


def test_parse_int_list_as_argparse_type_and_in_run_cli(capsys):
    assert parse_int_list(" 1, 3 ,5", "--folds", 1, 5) == [1, 3, 5]
    ap = argparse.ArgumentParser(prog="fovea")
    ap.add_argument("--folds", type=lambda t: parse_int_list(t, "--folds", 1, 5))
    assert ap.parse_args(["--folds", "2,4"]).folds == [2, 4]
    with pytest.raises(SystemExit) as info:
        ap.parse_args(["--folds", "1,x"])
    assert info.value.code == 2
    assert "argument --folds: --folds: 'x' is not a whole number" in capsys.readouterr().err
    assert run_cli(lambda: parse_int_list("1,x", "--folds")) == 2
    assert capsys.readouterr().err.startswith("error: --folds: 'x' is not a whole number")
    assert issubclass(ArgumentValueError, ValueError) and issubclass(ArgumentValueError, argparse.ArgumentTypeError)


@pytest.mark.slow
def test_paddle_import_noise_is_dropped_and_other_output_kept():
    import subprocess

    code = ("import sys; import gamma_kit; print('before', file=sys.stderr); import paddle; "
            "print('after', paddle.__version__, file=sys.stderr)")
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "OMP_NUM_THREADS set to" not in res.stderr and "WISELY" not in res.stderr
    assert "before" in res.stderr and "after 3." in res.stderr
    # without the kit Paddle prints them: the filter, not the environment, removes them
    raw = subprocess.run([sys.executable, "-c", "import paddle"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert "OMP_NUM_THREADS set to 2" in raw.stderr


def test_line_filter_keeps_partial_and_unmatched_lines():
    import io

    from gamma_kit.runtime import _LineFilter

    out = io.StringIO()
    f = _LineFilter(out, ("NOISE",))
    f.write("keep 1\nNOISE a")
    f.write("b\nkeep ")
    f.write("2\ntail")
    f.close()
    assert out.getvalue() == "keep 1\nkeep 2\ntail"


class _FakeGpuPaddle:
    """Stand-in for the bits of ``paddle`` that ``select_device`` asks: a CUDA build seeing ``n`` GPUs."""

    def __init__(self, n: int):
        import types

        self.set_to = None
        cuda = types.SimpleNamespace(device_count=lambda: n)
        self.device = types.SimpleNamespace(is_compiled_with_cuda=lambda: True, cuda=cuda)

    def set_device(self, name):
        self.set_to = name


@pytest.mark.parametrize("env, device, expected", [
    (None, "gpu", "gpu:0"), ("3", "gpu", "gpu:3"), ("1,2", "auto", "gpu:1"), ("2", "cpu", "cpu")])
def test_select_device_gives_each_launcher_rank_its_own_gpu(monkeypatch, env, device, expected):
    from gamma_kit.runtime import select_device

    fake = _FakeGpuPaddle(4)
    monkeypatch.setitem(sys.modules, "paddle", fake)
    if env is None:
        monkeypatch.delenv("FLAGS_selected_gpus", raising=False)
    else:
        monkeypatch.setenv("FLAGS_selected_gpus", env)
    assert select_device(device) == expected and fake.set_to == expected


def test_select_device_bad_launcher_variable_is_one_line(monkeypatch):
    from gamma_kit.runtime import select_device

    monkeypatch.setitem(sys.modules, "paddle", _FakeGpuPaddle(2))
    monkeypatch.setenv("FLAGS_selected_gpus", "gpu0")
    with pytest.raises(ValueError, match="FLAGS_selected_gpus='gpu0'"):
        select_device("gpu")
