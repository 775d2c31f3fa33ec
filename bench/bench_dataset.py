"""Training-sample throughput of the fovea dataset: the original per-sample pipeline
against gamma_kit.fovea.dataset, on synthetic GAMMA-size photos (2992x2000, 1956x1934).

    python bench/bench_dataset.py --data DIR [--quick] [--json FILE]

Original (bench/originals.py, loops on purpose): per sample read the GT xlsx with pandas,
decode the full JPEG, crop/flip to the canonical frame, random-shift 608x400 crop, loop
target. Kit: ``CanonicalCache`` decodes each image once (timed separately: a one-time
cost per image, amortised over all epochs), then ``FoveaCropDataset.__getitem__`` /
``iterate_batches`` cut crops and targets from memory. Both at the original full scale;
the CPU config (1/4 scale) is timed too. Without ``--data`` a synthetic set is generated
in a temporary folder.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, emit, fmt_mb, fmt_s, numpy_peak, row  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from gamma_kit.data import load_fovea_split  # noqa: E402
from gamma_kit.fovea.codec import HeatmapCodec  # noqa: E402
from gamma_kit.fovea.config import build_codec, load_config  # noqa: E402
from gamma_kit.fovea.dataset import CanonicalCache, FoveaCropDataset, iterate_batches, make_items  # noqa: E402
from originals import OriginalFoveaDataset  # noqa: E402


def ensure_data(data: str | None, n_train: int) -> Path:
    """The synthetic GAMMA-size data set at ``data``, or a fresh one in a temporary folder."""
    if data:
        return Path(data)
    from gamma_kit.synth import generate

    out = Path(tempfile.mkdtemp(prefix="gk_bench_")) / "synth"
    generate(out, n_train, 4, seed=0, progress=False)
    return out


def time_kit_samples(split, codec: HeatmapCodec, epochs: int, sides: dict[str, str] | None = None
                     ) -> tuple[FoveaCropDataset, float, float, float]:
    """Decode ``split`` once into a CanonicalCache at the codec's scale (``sides``: eye-side
    overrides, e.g. from synth_meta.csv, for photos whose side the detector cannot decide; the
    disc detection still runs), then read every training sample for ``epochs`` epochs.
    Returns (dataset, decode s/image, s/sample, cache MiB/image)."""
    cache = CanonicalCache(codec.scale, side_overrides=sides)
    t0 = time.perf_counter()
    canon = cache.load_all(split.images, progress=False)
    t_decode = (time.perf_counter() - t0) / len(canon)
    ds = FoveaCropDataset(make_items(canon, split.gt), codec, train=True, seed=0)
    ds[0]   # warm-up
    t0 = time.perf_counter()
    for e in range(epochs):
        ds.set_epoch(e)
        for k in range(len(ds)):
            ds[k]
    t_item = (time.perf_counter() - t0) / (epochs * len(ds))
    cache_mb = sum(c.image.nbytes for c in canon.values()) / 2 ** 20 / len(canon)
    return ds, t_decode, t_item, cache_mb


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="synthetic data root (python -m gamma_kit.synth)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    root = ensure_data(args.data, 8)
    split = load_fovea_split(root, "training")
    gt_xlsx = sorted((root / "task2_Fovea_localization" / "training").glob("*GT*.xlsx"))[0]
    meta = pd.read_csv(root / "synth_meta.csv", dtype={"id": str})
    sides = dict(zip(meta["id"].str.zfill(4), meta["disc_side"]))
    n_orig = 3 if args.quick else 10
    epochs = 2 if args.quick else 5
    rows, notes = [], []

    # ---- original, per sample (with a breakdown of one sample)
    orig = OriginalFoveaDataset(split.images, gt_xlsx, sides, seed=0)
    orig[0]   # warm-up (imports, file cache)
    t0 = time.perf_counter()
    for k in range(n_orig):
        orig[k % len(orig)]
    t_orig = (time.perf_counter() - t0) / n_orig
    with numpy_peak() as mem_orig:
        orig[0]
    t0 = time.perf_counter()
    pd.read_excel(gt_xlsx)
    t_xlsx = time.perf_counter() - t0
    import cv2

    t0 = time.perf_counter()
    cv2.imread(str(split.images[orig.ids[0]]))
    t_jpeg = time.perf_counter() - t0

    # ---- kit, full scale: one-time decode, then crops from memory
    ds, t_decode, t_item, cache_mb = time_kit_samples(split, HeatmapCodec(), epochs, sides)
    t0 = time.perf_counter()
    n = 0
    for e in range(epochs):
        ds.set_epoch(e)
        for x, _, _ in iterate_batches(ds, 10, shuffle=True, rng=np.random.default_rng(e)):
            n += len(x)
    t_batch = (time.perf_counter() - t0) / n
    with numpy_peak() as mem_kit:
        ds[0]
    ratio = t_orig / t_item
    # amortised over a 200-epoch training run (the original recipe), the one-time decode adds t_decode / 200
    t_amort = t_item + t_decode / 200
    rows.append(row("Fovea training sample, 608x400 crop + target (per sample)",
                    f"{fmt_s(t_orig)} (xlsx {fmt_s(t_xlsx)} + JPEG {fmt_s(t_jpeg)} + loop target)",
                    f"{fmt_s(t_item)} (__getitem__); {fmt_s(t_batch)} (batches of 10)", ratio,
                    target=">= 20x", met=bool(ratio >= 20),
                    memory=f"original {fmt_mb(mem_orig['mb'], 'tracemalloc')}; kit {fmt_mb(mem_kit['mb'], 'tracemalloc')}"
                           f" + cache {cache_mb:.0f} MiB/image (array bytes)",
                    note=f"kit decodes each image once ({fmt_s(t_decode)}/image incl. eye-side detection), "
                         f"{t_orig / t_amort:.0f}x with that amortised over 200 epochs; {len(split.images)} images, "
                         f"{epochs} epochs"))

    # ---- kit, CPU config (1/4 scale)
    codec_q = build_codec(load_config(REPO / "configs" / "fovea" / "unet_heatmap_cpu.yml"))
    _, t_decode_q, t_item_q, cache_q_mb = time_kit_samples(split, codec_q, epochs, sides)
    rows.append(row("Fovea training sample, CPU config 152x100 (per sample)", f"{fmt_s(t_orig)} (full-scale original)",
                    f"{fmt_s(t_item_q)} (__getitem__)", t_orig / t_item_q,
                    memory=f"cache {cache_q_mb:.1f} MiB/image (array bytes)",
                    note=f"one-time decode {fmt_s(t_decode_q)}/image"))
    result = {"rows": rows, "notes": notes}
    emit(result, args.json)
    return result


if __name__ == "__main__":
    main()
