"""How many training processes ``--procs`` starts on one machine (gamma_kit.procs.local_processes)
and its argument type. The processes themselves: tests/test_fovea_distributed.py."""
from __future__ import annotations

import argparse

import pytest

from gamma_kit.cli import procs_count
from gamma_kit.procs import local_processes


@pytest.mark.parametrize("requested, device, batch, folds, cores, expected", [
    ("auto", "cpu", 8, False, 2, 2),        # the CPU config on this kind of machine: both cores
    ("auto", "cpu", 4, False, 2, 1),        # each process keeps 4 samples of a batch
    ("auto", "cpu", 8, False, 1, 1),        # one core: one process
    ("auto", "cpu", 16, False, 4, 4),
    ("auto", "cpu", 12, False, 4, 3),       # a divisor of the batch
    ("auto", "cpu", 10, False, 16, 2),
    ("auto", "gpu:0", 8, False, 16, 1),     # GPUs: paddle.distributed.launch, one process per GPU
    ("auto", "cpu", 4, True, 2, 2),         # folds side by side: each trains its whole batch
    (2, "cpu", 8, False, 2, 2),
    (1, "cpu", 8, False, 2, 1),
    (3, "cpu", 9, True, 2, 3),              # asked for: taken as it is
])
def test_local_processes(requested, device, batch, folds, cores, expected):
    assert local_processes(requested, device, batch, folds, cores=cores) == expected


def test_local_processes_refuses_a_count_that_does_not_divide_the_batch():
    with pytest.raises(ValueError, match=r"--procs 3 does not divide the batch size 8"):
        local_processes(3, "cpu", 8)


def test_under_a_launcher_the_processes_exist_already(monkeypatch):
    monkeypatch.setenv("PADDLE_TRAINERS_NUM", "2")
    assert local_processes("auto", "cpu", 8, cores=2) == 1
    assert local_processes(2, "cpu", 8, cores=2) == 1


def test_procs_argument():
    assert procs_count("auto") == "auto" and procs_count("AUTO") == "auto" and procs_count("2") == 2
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError):
            procs_count(bad)
