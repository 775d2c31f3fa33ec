"""Does the synthetic disc region still flatter? Real IDRiD disc crops against the first and the
current synthetic renderer, measured the same way in one run.

    python bench/bench_synth_realism.py [--n 40] [--idrid ../shared/data/idrid_fovea] [--old-rev 3747b96]
                                        [--out bench/results/synth_realism.md] [--json FILE]
                                        [--idrid-limit N]

Three sets: the 103 real IDRiD photos (disc centres from ``optic_disc_center_GT.csv``, no
masks), ``--n`` photos of the first renderer (``gamma_kit/synth/render.py`` as of
``--old-rev``, read with ``git show``; history is not touched) and ``--n`` of the current
one, at the two GAMMA sizes, both eyes, the same seeds. Everything is measured on the photo
resized to 512 rows (the scale of SPEC 7).

Mask-free statistics, the same code for all three sets (radial medians of luminance
around the given disc centre; the disc radius R is where the profile falls fastest):
estimated disc diameter, disc/surround contrast, central pallor (r < 0.35 R against
0.6-0.9 R: a cup/rim proxy), disc edge width (10-90 % of the fall, in R), disc
chromaticity, share of dark (vessel) pixels on the disc, and the classical detector's
(``geometry.detect_disc_side``) centre error. With the masks (synthetic only): the true
cup/rim contrast (``cup_rim_contrast``) and cheap naive probes whose cup Dice should be
low on data that behaves like real photos: Otsu inside the true disc (brighter class =
cup), the brightest 20 % of the disc pixels as cup, and the brightest 0.7 % of the field
as disc. Also render time per full-size photo (CPU s, both generators), the tracemalloc peak
of one 2992x2000 render of each (an extra, untimed call) and whether the fovea ground truth of
each seed is unchanged. ``--json`` writes the medians per set and the RESULTS.md rows
(``rows``, ``notes``: see bench/common.py) for bench/run_all.py.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, fmt_mb, load_avg, machine_info, numpy_peak, row  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from tqdm import tqdm  # noqa: E402

from gamma_kit.safety import atomic_write_text  # noqa: E402
from gamma_kit.geometry import detect_disc_side  # noqa: E402
from gamma_kit.metrics import cup_of, dice, disc_of  # noqa: E402
from gamma_kit.synth import render as current  # noqa: E402
from gamma_kit.synth.render import cup_rim_contrast  # noqa: E402

DEFAULT_IDRID = REPO.parent / "shared" / "data" / "idrid_fovea"
OLD_REV = "3747b96"                    # last commit of the first renderer
SIZES = ((2992, 2000), (1956, 1934))
ROWS = 512                              # statistics on the photo resized to 512 rows (SPEC 7)
LUMA = np.float32([0.299, 0.587, 0.114])
R_SEARCH = (18, 70)                     # disc radius search range, px at 512 rows (real: 30-57)
MEDIAN_RADIUS_512 = 40                  # half the median real disc height at 512 rows (SPEC 7)


def load_old_renderer(rev: str):
    """The renderer module as of git ``rev``, imported from a temporary copy."""
    src = subprocess.run(["git", "show", f"{rev}:gamma_kit/synth/render.py"], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp(prefix="gk_old_render_")) / "render_old.py"
    path.write_text(src, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("render_old", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["render_old"] = module            # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def to_512(image: np.ndarray) -> tuple[np.ndarray, float]:
    """``image`` resized (area) to 512 rows, and the factor (small = f * full)."""
    f = ROWS / image.shape[0]
    return cv2.resize(image, (round(image.shape[1] * f), ROWS), interpolation=cv2.INTER_AREA), f


def radial_stats(img: np.ndarray, centre: tuple[float, float]) -> dict:
    """Mask-free disc statistics of an RGB ``img`` (512 rows) around ``centre`` (x, y), px.

    Radial profile = median luminance in 1-px rings (smoothed); R = the radius in
    ``R_SEARCH`` where it falls fastest.
    """
    lum = img.astype(np.float32) @ LUMA
    cx, cy = centre
    half = 2 * R_SEARCH[1] + 2
    x0, y0 = max(0, int(cx) - half), max(0, int(cy) - half)
    win, rgb = lum[y0:int(cy) + half, x0:int(cx) + half], img[y0:int(cy) + half, x0:int(cx) + half].astype(np.float32)
    yy, xx = np.mgrid[:win.shape[0], :win.shape[1]]
    r = np.hypot(xx + x0 + 0.5 - cx, yy + y0 + 0.5 - cy)
    inside_field = win > 8
    rb = np.minimum(r.astype(int), half)
    prof = np.array([np.median(win[(rb == k) & inside_field]) if ((rb == k) & inside_field).any() else np.nan
                     for k in range(half)], np.float32)
    prof = pd.Series(prof).interpolate(limit_direction="both").to_numpy(np.float32)
    smooth = cv2.GaussianBlur(prof[None, :], (0, 0), 2.0).ravel()
    lo, hi = R_SEARCH
    R = lo + int(np.argmin(np.gradient(smooth)[lo:hi]))

    def med(a: float, b: float) -> float:
        sel = (r >= a * R) & (r < b * R) & inside_field
        return float(np.median(win[sel])) if sel.any() else float("nan")

    rim, out, centre_ = med(0.5, 0.9), med(1.4, 2.0), med(0.0, 0.35)
    levels = rim - np.array([0.1, 0.9]) * (rim - out)
    rs = np.arange(half)
    after = rs >= 0.5 * R
    r10 = rs[after & (smooth < levels[0])]
    r90 = rs[after & (smooth < levels[1])]
    edge = (r90[0] - r10[0]) / R if len(r10) and len(r90) else float("nan")
    disc = (r < 0.9 * R) & inside_field
    chroma = rgb[disc].sum(axis=0) / max(rgb[disc].sum(), 1e-6)
    return {"diam512": 2.0 * R, "disc_contrast": rim / max(out, 1e-6) - 1, "pallor": centre_ / max(rim, 1e-6) - 1,
            "edge_width": edge, "red": float(chroma[0]), "green": float(chroma[1]),
            "dark_share": float((win[disc] < 0.8 * np.median(win[disc])).mean())}


def naive_probes(img: np.ndarray, mask: np.ndarray) -> dict:
    """Cup and disc Dice of three cheap rules on ``img`` (512 rows) with its ``mask`` (same size)."""
    lum = cv2.GaussianBlur(img.astype(np.float32) @ LUMA, (0, 0), 1.0)
    disc, cup = disc_of(mask), cup_of(mask)
    vals = lum[disc]
    u8 = cv2.normalize(vals, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    t, _ = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    otsu = np.zeros_like(disc)
    otsu[disc] = u8.ravel() > t
    top = np.zeros_like(disc)
    top[disc] = vals >= np.percentile(vals, 80)
    field = lum > 15
    bright = field & (lum >= np.percentile(lum[field], 99.3))
    return {"otsu_cup_dice": dice(otsu, cup), "top20_cup_dice": dice(top, cup), "bright_disc_dice": dice(bright, disc)}


def synthetic_set(module, n: int, seed: int) -> tuple[pd.DataFrame, list[tuple[float, float]], float]:
    """Render ``n`` full-size photos with ``module``; statistics per photo, fovea points, CPU s/photo."""
    rows, foveae, cpu = [], [], 0.0
    for k in tqdm(range(n), desc=module.__name__.split(".")[-1], unit="img"):
        size, side = SIZES[k % 2], ("left", "right")[k // 2 % 2]
        t0 = time.process_time()
        s = module.render_fundus(np.random.default_rng([seed, k]), *size, side)
        cpu += time.process_time() - t0
        foveae.append(s.fovea_xy)
        small, f = to_512(s.image)
        mask = cv2.resize(s.mask, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_NEAREST)
        centre = (s.disc_xy[0] * f, s.disc_xy[1] * f)
        det = detect_disc_side(s.image)
        row = radial_stats(small, centre)
        row.update(naive_probes(small, mask))
        row["true_diam512"] = float(disc_of(s.mask).any(axis=1).sum() * f)
        row["cup_rim_contrast"] = cup_rim_contrast(small, mask)
        row["detector_err512"] = float(np.hypot(det.disc_xy[0] - s.disc_xy[0], det.disc_xy[1] - s.disc_xy[1]) * f)
        row["detector_off"] = row["detector_err512"] > s.disc_diameter / 2 * f
        row["side_wrong"] = det.side != side
        rows.append(row)
    return pd.DataFrame(rows), foveae, cpu / n


def idrid_set(root: Path, limit: int = 0) -> pd.DataFrame:
    """Mask-free statistics and the detector's error on the real IDRiD photos (the first
    ``limit`` when > 0)."""
    gt = pd.read_csv(root / "optic_disc_center_GT.csv", dtype={"data": str})
    gt = gt.head(limit) if limit else gt
    rows = []
    for r in tqdm(gt.itertuples(), total=len(gt), desc="idrid", unit="img"):
        img = cv2.cvtColor(cv2.imread(str(root / "images" / f"{r.data}.jpg")), cv2.COLOR_BGR2RGB)
        small, f = to_512(img)
        row = radial_stats(small, (r.OD_X * f, r.OD_Y * f))
        det = detect_disc_side(img)
        row["detector_err512"] = float(np.hypot(det.disc_xy[0] - r.OD_X, det.disc_xy[1] - r.OD_Y) * f)
        row["detector_off"] = row["detector_err512"] > MEDIAN_RADIUS_512
        rows.append(row)
    return pd.DataFrame(rows)


STATS = [  # (column, label, format)
    ("diam512", "disc diameter at 512 rows, px (profile estimate)", "{:.0f}"),
    ("true_diam512", "disc height at 512 rows, px (mask; real: 60-113, median 80)", "{:.0f}"),
    ("disc_contrast", "disc / surround contrast", "{:.2f}"),
    ("pallor", "central pallor, r < 0.35 R vs 0.6-0.9 R (cup/rim proxy)", "{:.3f}"),
    ("cup_rim_contrast", "cup / rim contrast (mask)", "{:.3f}"),
    ("edge_width", "disc edge width, 10-90 % of the fall, in R", "{:.2f}"),
    ("red", "disc chromaticity r", "{:.3f}"),
    ("green", "disc chromaticity g", "{:.3f}"),
    ("dark_share", "dark (vessel) share of the disc", "{:.3f}"),
    ("otsu_cup_dice", "naive cup Dice: Otsu inside the true disc", "{:.3f}"),
    ("top20_cup_dice", "naive cup Dice: brightest 20 % of the disc", "{:.3f}"),
    ("bright_disc_dice", "naive disc Dice: brightest 0.7 % of the field", "{:.3f}"),
    ("detector_err512", "classical detector centre error, px at 512 rows", "{:.1f}"),
]


def summarise(df: pd.DataFrame | None, col: str, fmt: str) -> str:
    if df is None or col not in df or df[col].isna().all():
        return "-"
    v = df[col].dropna()
    p10, p50, p90 = np.percentile(v, [10, 50, 90])
    return f"{fmt.format(p50)} ({fmt.format(p10)}-{fmt.format(p90)})"


REALISM_ROWS = ("disc_contrast", "pallor", "dark_share")   # RESULTS.md rows with a real reference: closer is better
PROBE_ROWS = ("otsu_cup_dice",)        # RESULTS.md rows of a naive probe: lower = the disc region flatters less


def render_peak_mb(module, seed: int) -> float:
    """tracemalloc peak (MiB) of one 2992x2000 render by ``module`` (untimed)."""
    with numpy_peak() as mem:
        module.render_fundus(np.random.default_rng([seed, 0]), *SIZES[0], "left")
    return mem["mb"]


def _median(df: pd.DataFrame | None, col: str) -> float | None:
    return None if df is None or col not in df or df[col].isna().all() else float(df[col].median())


def result_rows(real: pd.DataFrame | None, old_df: pd.DataFrame, new_df: pd.DataFrame, old_rev: str,
                render: dict) -> list[dict]:
    """RESULTS.md rows: the first renderer (``old_rev``) as the original, the current one as the kit.
    ``render``: ``old_cpu_s``, ``new_cpu_s`` (CPU s per photo), ``old_mb``, ``new_mb`` (tracemalloc
    peak of one render), ``same_fovea`` (seeds whose fovea is unchanged)."""
    labels = {col: (label, fmt) for col, label, fmt in STATS}
    n = len(new_df)
    out = []
    for col in REALISM_ROWS + PROBE_ROWS:
        label, fmt = labels[col]
        old, new, ref = _median(old_df, col), _median(new_df, col), _median(real, col)
        if col in REALISM_ROWS:
            target = f"closer to real IDRiD ({'absent' if ref is None else fmt.format(ref)})"
            met = None if ref is None else abs(new - ref) < abs(old - ref)
        else:
            target, met = "lower than the first renderer", new < old
        out.append(row(f"Synthetic disc realism: {label}", f"{fmt.format(old)} (first renderer, {old_rev})",
                       f"{fmt.format(new)} (current renderer)", None, target, met, "",
                       f"median (10th-90th percentile) of {n} photos per renderer: first {summarise(old_df, col, fmt)}, "
                       f"current {summarise(new_df, col, fmt)}, real {summarise(real, col, fmt)}"))
    out.append(row("Synthetic photo render, CPU s per full-size photo (2992x2000 / 1956x1934)",
                   f"{render['old_cpu_s']:.3f} s (first renderer, {old_rev})",
                   f"{render['new_cpu_s']:.3f} s (current renderer)", render["old_cpu_s"] / render["new_cpu_s"],
                   "", None, f"first {fmt_mb(render['old_mb'], 'tracemalloc')}; current "
                   f"{fmt_mb(render['new_mb'], 'tracemalloc')} (one 2992x2000 render)",
                   f"{n} photos each, both sizes and eyes, the same seeds; fovea ground truth identical for "
                   f"{render['same_fovea']}/{n} seeds"))
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40, help="synthetic photos per generator (default 40)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--idrid", type=Path, default=DEFAULT_IDRID, help="IDRiD folder (skipped when absent)")
    ap.add_argument("--idrid-limit", type=int, default=0, help="only the first N IDRiD photos (a quick look)")
    ap.add_argument("--old-rev", default=OLD_REV, help=f"git revision of the first renderer (default {OLD_REV})")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "synth_realism.md")
    ap.add_argument("--json", type=Path, help="also write the summary and the RESULTS.md rows as JSON")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.n < 2:
        ap.error("--n must be at least 2")

    t_start = time.perf_counter()
    old = load_old_renderer(args.old_rev)
    real = idrid_set(args.idrid, args.idrid_limit) if (args.idrid / "optic_disc_center_GT.csv").is_file() else None
    old_df, old_fovea, old_cpu = synthetic_set(old, args.n, args.seed)
    new_df, new_fovea, new_cpu = synthetic_set(current, args.n, args.seed)
    same_fovea = sum(a == b for a, b in zip(old_fovea, new_fovea))

    sets = ((f"real IDRiD ({len(real)})" if real is not None else "real IDRiD (absent)", real),
            (f"first renderer ({args.old_rev}, {args.n})", old_df), (f"current renderer ({args.n})", new_df))
    lines = ["# Synthetic disc region against real photos",
             "",
             f"`python bench/bench_synth_realism.py --n {args.n} --seed {args.seed} --old-rev {args.old_rev}` "
             "(under the CPU lock). Median (10th-90th percentile) per photo, on the photo resized to 512 rows. "
             "Real photos have no masks here: mask rows are synthetic only.",
             "",
             "| measure | " + " | ".join(name for name, _ in sets) + " |",
             "|---|" + "---|" * len(sets)]
    for col, label, fmt in STATS:
        lines.append(f"| {label} | " + " | ".join(summarise(df, col, fmt) for _, df in sets) + " |")
    share = [f"{int(df['detector_off'].sum())}/{len(df)}" if df is not None else "-" for _, df in sets]
    lines.append("| classical detector off by more than one disc radius | " + " | ".join(share) + " |")
    sides = ["-"] + [f"{int(df['side_wrong'].sum())}/{len(df)}" for _, df in sets[1:]]
    lines.append("| classical detector: wrong eye side | " + " | ".join(sides) + " |")
    lines.append(f"| render CPU s per full-size photo (2992x2000 / 1956x1934) | - | {old_cpu:.3f} | "
                 f"{new_cpu:.3f} ({new_cpu / old_cpu:.2f}x the first) |")
    lines.append(f"| fovea ground truth identical for the same seed | - | - | {same_fovea}/{args.n} |")
    info = machine_info()
    lines += ["", f"Machine: {info['cpu']}, {info['cores']} cores; load average at the end "
                  f"{', '.join(f'{x:.2f}' for x in load_avg())}; total {time.perf_counter() - t_start:.0f} s."]
    text = "\n".join(lines) + "\n"
    print(text)
    atomic_write_text(args.out, text)
    if args.json:
        summary = {name: (None if df is None else {c: float(df[c].median()) for c, _, _ in STATS if c in df})
                   for name, df in sets}
        summary["render_cpu_s"] = {"first": old_cpu, "current": new_cpu}
        render = {"old_cpu_s": old_cpu, "new_cpu_s": new_cpu, "old_mb": render_peak_mb(old, args.seed),
                  "new_mb": render_peak_mb(current, args.seed), "same_fovea": same_fovea}
        summary["rows"] = result_rows(real, old_df, new_df, args.old_rev, render)
        summary["notes"] = []
        atomic_write_text(args.json, json.dumps(summary, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
