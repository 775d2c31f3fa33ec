"""Smoke tests of the benchmark harness (bench/): the original re-statements agree with
the kit on tiny inputs, and RESULTS.md renders from benchmark rows. Runs in seconds."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402
import originals  # noqa: E402
import run_all  # noqa: E402

from gamma_kit.fovea.codec import HeatmapCodec  # noqa: E402


def test_original_target_loop_matches_codec_encode():
    codec = HeatmapCodec(roi_size=(60, 40), radius=12, kernel_size=12)
    for x, y in [(20.0, 15.0), (33.3, 7.9), (0.0, 39.5)]:
        loop = originals.original_target_loop(x, y, 60, 40, radius=12)
        assert loop.shape == (40, 60)
        np.testing.assert_array_equal(loop, codec.encode(np.array([x, y])))


def test_original_decode_fallback_and_loop_agree_with_codec():
    codec = HeatmapCodec(roi_size=(64, 48), radius=10, kernel_size=16, on_empty="original",
                         empty_sum=1000.0)
    hm = codec.encode(np.array([30.0, 20.0])) * 40
    assert originals.original_decode(hm, 16) == tuple(codec.decode(hm).xy[0])
    empty = np.zeros((48, 64), np.float32)
    assert originals.original_decode(empty, 16) == (384.0, 240.0)


def test_render_writes_table_with_ratio_and_targets(tmp_path):
    rows = [common.row("Decode", "1 s", "5 ms", 200.0, ">= 100x", True, "1 MiB (tracemalloc)", "n=3"),
            common.row("Segmentation", "3 s", "2 s", 1.5, "<= 1 s", False)]
    machine = {"cpu": "test cpu", "cores": 2, "cpu_count": 2, "memory_gb": 1.0, "os": "x",
               "OMP_NUM_THREADS": "2", "KMP_BLOCKTIME": "0", "load_avg": [0.1, 0.1, 0.1]}
    args = argparse.Namespace(quick=True, demo=False)
    text = run_all.render(machine, {"python": "3"}, {"heatmap": {"rows": rows, "notes": ["hello"]}}, None, args,
                          12.0, (0.2, 0.2, 0.2))
    assert "| Decode | 1 s | 5 ms | 200x | >= 100x | yes |" in text
    assert "| Segmentation | 3 s | 2 s | 1.5x | <= 1 s | **no** |" in text
    assert "no GPU" in text or "none lent" in text
    assert "- hello" in text


def test_time_call_and_memory_helpers():
    t = common.time_call(lambda: sum(range(1000)), repeat=3, warmup=1)
    assert t["n"] == 3 and 0 <= t["min"] <= t["median"]
    with common.numpy_peak() as mem:
        np.ones(2 ** 20)   # 8 MiB
    assert mem["mb"] >= 7.9
    with common.RssPeak() as rss:
        pass
    assert rss.peak_mb >= 0
    assert common.fmt_s(0.0123) == "12.3 ms" and common.fmt_s(2.5) == "2.5 s"
