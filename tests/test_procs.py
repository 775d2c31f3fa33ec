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


@pytest.mark.parametrize("env, expected", [(None, "auto"), ("1", 1), ("2", 2)])
def test_seg_train_defaults_to_auto_and_the_environment_overrides_it(monkeypatch, env, expected):
    from gamma_kit.seg.__main__ import build_parser

    if env is None:
        monkeypatch.delenv("GAMMA_KIT_PROCS", raising=False)
    else:
        monkeypatch.setenv("GAMMA_KIT_PROCS", env)
    args = build_parser().parse_args(["train", "--config", "roi_liteunet_cpu.yml"])
    assert procs_count(str(args.procs)) == expected


@pytest.mark.parametrize("config, cores, processes", [
    ("roi_liteunet_cpu.yml", 2, 2),          # the CPU recipe: 2 processes of 4 crops, as batch 4 on one before
    ("roi_liteunet_cpu.yml", 1, 1),
    ("liteunet_gamma_cpu.yml", 2, 1),        # batch 4: one process keeps its BatchNorm batch
    ("unet_gamma_512.yml", 2, 1),
    ("roi_unet_512.yml", 2, 1),
])
def test_seg_auto_keeps_four_samples_per_process_for_every_shipped_config(config, cores, processes):
    from gamma_kit.seg.training import load_config

    batch = load_config(config).batch_size
    n = local_processes("auto", "cpu", batch, cores=cores)
    assert n == processes and batch // n >= 4
