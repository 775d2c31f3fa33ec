"""Benchmark: vectorised dark-kernel decoder (gamma_kit.fovea.codec) against a loop
re-statement of the original decoder, on full-scale 608x400 heatmaps (ks = 80).

    python bench/bench_fovea_decode.py [--n 20] [--loop-n 5] [--seed 0]

Prints the time per heatmap of each, the speed-up and whether every position agrees.
Heatmaps are target-like peaks plus noise (what a trained network emits), with a few
pure-noise maps. The loop is timed on the first ``--loop-n`` maps (it is slow) and
checked for agreement on all of them when ``--check-all`` is given.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from gamma_kit.fovea.codec import HeatmapCodec, parabolic_kernel


def original_loop_decode(heatmap: np.ndarray, kernel_size: int = 80) -> tuple[float, float]:
    """Loop re-statement of the original decoder on an (H, W) heatmap: windows at
    stride 2 over the original bounds, x outer / y inner, last maximum (>=) wins,
    starting from 0 as the original did."""
    kernel = parabolic_kernel(kernel_size)
    h, w = heatmap.shape
    best, x, y = 0.0, None, None
    for i in range((w - kernel_size) // 2):
        for j in range((h - kernel_size) // 2):
            value = np.mean(np.multiply(heatmap[j * 2:j * 2 + kernel_size, i * 2:i * 2 + kernel_size],
                                        kernel))
            if value >= best:
                best, x, y = value, i * 2 + kernel_size / 2, j * 2 + kernel_size / 2
    return x, y


def make_heatmaps(n: int, seed: int, codec: HeatmapCodec) -> np.ndarray:
    """(n, H, W) float32 heatmaps: random peaks with multiplicative noise, 1 in 5 pure noise."""
    rng = np.random.default_rng(seed)
    w, h = codec.heatmap_size
    pts = np.stack([rng.uniform(60, w - 60, n), rng.uniform(60, h - 60, n)], axis=1)
    maps = codec.encode(pts) * rng.uniform(0.5, 1.5, (n, h, w)).astype(np.float32)
    maps[::5] = rng.random((len(maps[::5]), h, w), dtype=np.float32) * 10
    return maps


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20, help="heatmaps for the vectorised timing")
    ap.add_argument("--loop-n", type=int, default=5, help="heatmaps for the loop timing")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    codec = HeatmapCodec()  # the original: 608x400, ks 80, stride 2
    maps = make_heatmaps(max(args.n, args.loop_n), args.seed, codec)
    codec.decode(maps[:1])  # warm-up (kernel FFT cache)
    t0 = time.perf_counter()
    fast = np.concatenate([codec.decode(m).xy for m in maps[:args.n]])
    t_fast = (time.perf_counter() - t0) / args.n
    t0 = time.perf_counter()
    slow = np.array([original_loop_decode(m) for m in maps[:args.loop_n]])
    t_loop = (time.perf_counter() - t0) / args.loop_n
    identical = bool(np.array_equal(fast[:args.loop_n], slow))
    result = {"heatmap": f"{codec.width}x{codec.height}", "kernel_size": codec.kernel_size,
              "vectorised_ms": round(t_fast * 1e3, 3), "loop_ms": round(t_loop * 1e3, 1),
              "speedup": round(t_loop / t_fast, 1), "identical_positions": identical,
              "n_compared": args.loop_n}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
