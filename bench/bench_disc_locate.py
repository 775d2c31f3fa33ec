"""Stage 1 (optic-disc localisation) on the 103 real IDRiD photographs: the kit's classical
``gamma_kit.disc.locate_disc`` against the detector it replaced, in the same run.

    flock /tmp/gamma_cpu.lock python bench/bench_disc_locate.py [--data ../shared/data/idrid_fovea]
        [--out bench/results/disc_locate.md] [--overlays /tmp/disc]
        [--figure bench/results/disc_locate_cases.png] [--limit N] [--json FILE]

Ground truth: ``optic_disc_center_GT.csv`` (expert disc centres, source px of 4288 x 2848
photos); eye side from ``fovea_GT.csv`` (disc left of the fovea = "left").

A miss is a centre more than one disc radius from the truth. Two radii are used:
- ``NOMINAL_RADIUS_PX`` = 250 source px (30 px at 512 px width), a fixed nominal IDRiD disc
  radius: 0.145 x the FOV radius (1708 px), the median ratio of the kit's outline fits, and
  checked by eye on overlays of the photos. It is the same for both detectors, so it is the
  fair yardstick; it is also the tighter one for discs larger than the median.
- half of the kit's own estimated diameter for that photo (the radius a disc-centred crop
  would be built from; the old detector has no diameter, so only the nominal one applies).
Times are per photo for the detector alone (from the decoded full-size RGB array, downscale
included); JPEG decoding is reported on its own line. Memory: tracemalloc peak of each detector
on the first photo (an extra, untimed call). ``--json`` writes the RESULTS.md row
(``{"rows": [...], "notes": [...]}``, see bench/common.py) for bench/run_all.py.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, emit, fmt_mb, load_avg, machine_info, numpy_peak, row  # noqa: E402

from gamma_kit.data import read_image
from gamma_kit.safety import atomic_write_bytes, atomic_write_text  # noqa: E402
from gamma_kit.disc import locate_disc  # noqa: E402
from gamma_kit.geometry import FieldOfView, _fov_mask, _small, detect_fov  # noqa: E402

DEFAULT = REPO.parent / "shared" / "data" / "idrid_fovea"
NOMINAL_RADIUS_PX = 250.0          # IDRiD disc radius, source px (see the module docstring)
AT_WIDTH = 512                     # errors are also given at this image width


def old_disc_xy(image: np.ndarray, fov: FieldOfView) -> tuple[float, float]:
    """Faithful re-statement of the detector before stage 1 (geometry.detect_disc_side at commit
    d7fb6b9): band-pass brightness (disc-sized blur minus a 4x wider blur) + 0.5 x vertical-vessel
    density, standardised inside 0.85 FOV radii, arg-max."""
    small, f = _small(image)
    r = fov.radius * f
    cx, cy = fov.cx * f, fov.cy * f
    field = _fov_mask(small)
    lum = small.astype(np.float32) @ np.float32([0.5, 0.4, 0.1])
    disc_sigma = 0.05 * r
    bright = cv2.GaussianBlur(lum, (0, 0), disc_sigma) - cv2.GaussianBlur(lum, (0, 0), 4 * disc_sigma)
    vessel_kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (int(0.05 * r) | 1,) * 2)
    vessels = cv2.morphologyEx(small[..., 1], cv2.MORPH_BLACKHAT, vessel_kernel).astype(np.float32)
    vertical = np.abs(cv2.Sobel(vessels, cv2.CV_32F, 1, 0, ksize=3))
    rim_free = cv2.erode(field.astype(np.uint8), np.ones((max(1, int(0.08 * r)),) * 2, np.uint8)).astype(bool)
    vertical = cv2.GaussianBlur(np.where(rim_free, vertical, 0), (0, 0), disc_sigma)
    yy, xx = np.ogrid[: lum.shape[0], : lum.shape[1]]
    inside = ((xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= (0.85 * r) ** 2) & field

    def standardise(a: np.ndarray) -> np.ndarray:
        v = a[inside]
        return (a - v.mean()) / (v.std() + 1e-6)

    score = np.where(inside, standardise(bright) + 0.5 * standardise(vertical), -np.inf)
    y, x = np.unravel_index(int(np.argmax(score)), score.shape)
    return (x + 0.5) / f, (y + 0.5) / f


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def overlay(image: np.ndarray, truth: tuple[float, float], found: dict[str, tuple[tuple[float, float], float]],
            title: str = "") -> np.ndarray:
    """A 512-wide RGB copy: truth (green cross, nominal-radius circle), the kit's disc (magenta,
    its estimated radius) and the old detector's (cyan, nominal radius)."""
    small, f = _small(image)
    small = np.ascontiguousarray(small)
    t = tuple(int(round(v * f)) for v in truth)
    cv2.drawMarker(small, t, (0, 255, 0), cv2.MARKER_CROSS, 14, 2)
    cv2.circle(small, t, int(NOMINAL_RADIUS_PX * f), (0, 255, 0), 1)
    for (xy, radius), colour in zip(found.values(), [(255, 0, 255), (0, 255, 255)]):
        cv2.circle(small, tuple(int(round(v * f)) for v in xy), max(1, int(radius * f)), colour, 2)
    if title:
        cv2.putText(small, title, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
    return small


def montage(views: list[tuple[str, np.ndarray, tuple[float, float]]], width: int, cols: int = 3,
            tile: int = 160) -> np.ndarray:
    """Tiles of ``overlay`` views cropped around the true disc (200 px of the 512-wide copy)."""
    tiles = []
    for name, view, truth in views:
        f = view.shape[1] / width
        x, y = int(truth[0] * f), int(truth[1] * f)
        pad = cv2.copyMakeBorder(view, 100, 100, 100, 100, cv2.BORDER_CONSTANT)
        crop = cv2.resize(pad[y:y + 200, x:x + 200], (tile, tile), interpolation=cv2.INTER_AREA)
        cv2.rectangle(crop, (0, 0), (tile - 1, 14), (0, 0, 0), -1)
        cv2.putText(crop, name, (3, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
        tiles.append(crop)
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % cols)
    return np.vstack([np.hstack(tiles[i:i + cols]) for i in range(0, len(tiles), cols)])


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub markdown table of a small DataFrame (no tabulate dependency)."""
    rows = [list(df.columns), ["---"] * len(df.columns)] + df.astype(str).values.tolist()
    return "\n".join("| " + " | ".join(map(str, r)) + " |" for r in rows)


def summarise(df: pd.DataFrame, label: str, width: int, est_radius: pd.Series | None) -> dict:
    err = df["err"]
    row = {"detector": label, "median err px (src)": f"{err.median():.0f}", "max err px (src)": f"{err.max():.0f}",
           f"median / max err px at {AT_WIDTH}": f"{err.median() * AT_WIDTH / width:.1f} / "
                                               f"{err.max() * AT_WIDTH / width:.1f}",
           f"> nominal radius ({NOMINAL_RADIUS_PX:.0f} px)": f"{(err > NOMINAL_RADIUS_PX).sum()} / {len(df)}",
           "> half est. diameter": "n/a" if est_radius is None else f"{(err > est_radius).sum()} / {len(df)}",
           "side correct": f"{(df['side'] == df['truth']).sum()} / {len(df)}",
           "s per photo": f"{df['t'].median():.3f}"}
    return row


def measure(data: Path, limit: int = 0) -> dict:
    """Both detectors on the photos of ``data`` (the first ``limit`` when > 0): per-photo frames
    ``old`` and ``new`` (err, t, side, truth, xy; the kit's also diameter, rel, conf, unsure, gt,
    note), the row lists behind them, JPEG decode seconds, the source width and the tracemalloc
    peak MiB of each detector on the first photo."""
    od = pd.read_csv(data / "optic_disc_center_GT.csv", dtype={"data": str}).set_index("data")
    fv = pd.read_csv(data / "fovea_GT.csv", dtype={"data": str}).set_index("data")
    ids = list(od.index[:limit] if limit else od.index)
    old_rows, new_rows, decode = [], [], []
    width = None
    memory = {}
    for i in tqdm(ids, desc="disc locate"):
        img, t_dec = _timed(lambda: read_image(data / "images" / f"{i}.jpg"))
        decode.append(t_dec)
        width = img.shape[1]
        gt = (float(od.loc[i, "OD_X"]), float(od.loc[i, "OD_Y"]))
        truth = "left" if gt[0] < fv.loc[i, "Fovea_X"] else "right"

        def old():
            fov = detect_fov(img)
            return fov, old_disc_xy(img, fov)

        if not memory:                                              # untimed: tracemalloc slows the call
            for name, fn in (("old", old), ("new", lambda: locate_disc(img, name=i))):
                with numpy_peak() as mem:
                    fn()
                memory[name] = mem["mb"]
        (fov, old_xy), t_old = _timed(old)
        loc, t_loc = _timed(lambda: locate_disc(img, name=i))      # FOV detection included, as before
        side = "left" if loc.xy[0] < fov.cx else "right"           # = detect_disc_side: the same detector
        old_rows.append(dict(id=i, err=float(np.hypot(old_xy[0] - gt[0], old_xy[1] - gt[1])), t=t_old,
                             side="left" if old_xy[0] < fov.cx else "right", truth=truth, xy=old_xy))
        new_rows.append(dict(id=i, err=float(np.hypot(loc.xy[0] - gt[0], loc.xy[1] - gt[1])), t=t_loc,
                             side=side, truth=truth, xy=loc.xy, diameter=loc.diameter,
                             rel=loc.diameter / (2 * fov.radius), conf=loc.confidence, unsure=loc.unsure,
                             gt=gt, note=loc.note))
    return {"old": pd.DataFrame(old_rows), "new": pd.DataFrame(new_rows), "old_rows": old_rows,
            "new_rows": new_rows, "decode": decode, "width": width, "memory_mb": memory}


def result_rows(m: dict, details: Path | None = None) -> list[dict]:
    """The RESULTS.md row of a ``measure`` result: time per photo as the ratio (before / kit),
    misses (> the nominal radius) against the target of none; ``details``: the Markdown file."""
    old_df, new_df, width = m["old"], m["new"], m["width"]
    n = len(new_df)

    def cell(df: pd.DataFrame) -> str:
        err = df["err"]
        return (f"{df['t'].median():.3f} s; {(err > NOMINAL_RADIUS_PX).sum()} / {n} off by more than a disc radius, "
                f"median / max error {err.median():.0f} / {err.max():.0f} px; eye side "
                f"{(df['side'] == df['truth']).sum()} / {n}")

    return [row(f"Stage 1 disc location per IDRiD photo ({n} photos, {width} px wide): before (detect_disc_side at "
                "d7fb6b9, re-stated) vs locate_disc",
                cell(old_df), cell(new_df), old_df["t"].median() / new_df["t"].median(),
                f"0 of {n} off by more than a disc radius", bool((new_df["err"] > NOMINAL_RADIUS_PX).sum() == 0),
                f"before {fmt_mb(m['memory_mb']['old'], 'tracemalloc')}; kit "
                f"{fmt_mb(m['memory_mb']['new'], 'tracemalloc')} (first photo)",
                f"median time per photo, detector alone (FOV included; JPEG decode {np.median(m['decode']):.3f} s "
                f"not included); disc radius = nominal {NOMINAL_RADIUS_PX:.0f} source px; errors in source px"
                + (f"; details: {_shown(details)}" if details else ""))]


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT, help="IDRiD folder with images/ and the GT CSVs")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "disc_locate.md")
    ap.add_argument("--overlays", type=Path, default=None, help="write PNG overlays of the worst photos here")
    ap.add_argument("--figure", type=Path, default=None,
                    help="write a PNG montage of the old detector's 5 worst photos and the kit's worst here")
    ap.add_argument("--limit", type=int, default=0, help="only the first N photos (a quick look)")
    ap.add_argument("--json", default=None, help="also write the RESULTS.md row as JSON (bench/run_all.py)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not (args.data / "optic_disc_center_GT.csv").is_file():
        raise SystemExit(f"error: {args.data}: no optic_disc_center_GT.csv (give --data the IDRiD folder)")
    meas = measure(args.data, args.limit)
    old_df, new_df, width = meas["old"], meas["new"], meas["width"]
    old_rows, new_rows, decode = meas["old_rows"], meas["new_rows"], meas["decode"]
    table = pd.DataFrame([summarise(old_df, "before (re-stated, detect_disc_side at d7fb6b9)", width, None),
                          summarise(new_df, "kit: locate_disc, classical", width, new_df["diameter"] / 2)])
    d = new_df["diameter"]
    worst = new_df.sort_values("err", ascending=False).head(5)
    m = machine_info()
    cli = sys.argv[1:] if argv is None else argv
    lines = [
        "# Stage 1: optic-disc localisation on 103 real IDRiD photos (4288 x 2848)",
        "",
        f"Command: `flock /tmp/gamma_cpu.lock python bench/bench_disc_locate.py{''.join(' ' + a for a in cli)}` "
        f"({time.strftime('%Y-%m-%d %H:%M')}, "
        f"{m['cpu']}, {m['cores']} cores, load {load_avg()[0]:.2f}). Ground truth: optic_disc_center_GT.csv.",
        "",
        markdown_table(table),
        "",
        f"- Nominal radius {NOMINAL_RADIUS_PX:.0f} px = 0.145 x FOV radius (see the script's docstring); "
        f"'half est. diameter' uses the kit's own diameter estimate per photo.",
        f"- Diameter estimates: {d.min():.0f}-{d.max():.0f} px (median {d.median():.0f}), "
        f"{new_df['rel'].min():.3f}-{new_df['rel'].max():.3f} x the FOV diameter "
        f"(prior 0.12-0.22); at {AT_WIDTH} px width {d.min() * AT_WIDTH / width:.0f}-"
        f"{d.max() * AT_WIDTH / width:.0f} px.",
        f"- Confidence: min {new_df['conf'].min():.2f}, median {new_df['conf'].median():.2f}; "
        f"reported unsure: {int(new_df['unsure'].sum())} / {len(new_df)}.",
        f"- Time per photo (median): kit {new_df['t'].median():.3f} s (locate_disc alone, FOV included), "
        f"before {old_df['t'].median():.3f} s (FOV included); "
        f"JPEG decode {np.median(decode):.3f} s (not included).",
        "- Largest kit errors (src px): " + ", ".join(f"{r.id} {r.err:.0f}" for r in worst.itertuples()),
        "- Largest errors before (src px): " + ", ".join(
            f"{r.id} {r.err:.0f}" for r in old_df.sort_values("err", ascending=False).head(5).itertuples()),
    ]
    if args.figure:
        lines.append(f"- Figure `{args.figure.name}`: the old detector's 5 worst photos and the kit's worst, cropped "
                     "around the true disc (green cross; thin green circle = nominal radius); magenta = kit "
                     "(its estimated radius), cyan = before (nominal radius).")
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, text)
    print(text)
    if args.overlays or args.figure:
        bad = list(old_df.sort_values("err", ascending=False).head(5)["id"]) + list(worst["id"][:1])
        views = []
        for r_new, r_old in zip(new_rows, old_rows):
            if r_new["id"] in bad:
                img = read_image(args.data / "images" / f"{r_new['id']}.jpg")
                view = overlay(img, r_new["gt"], {"kit": (r_new["xy"], r_new["diameter"] / 2),
                                                  "before": (r_old["xy"], NOMINAL_RADIUS_PX)})
                views.append((r_new["id"], view, r_new["gt"]))
                if args.overlays:
                    args.overlays.mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(args.overlays / f"{r_new['id']}.png"), cv2.cvtColor(view, cv2.COLOR_RGB2BGR))
        if args.figure:
            views.sort(key=lambda v: bad.index(v[0]))
            fig = montage([(i.replace("IDRiD_", ""), v, gt) for i, v, gt in views], width)
            ok, png = cv2.imencode(".png", cv2.cvtColor(fig, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
            atomic_write_bytes(args.figure, png.tobytes())
            print(f"figure: {args.figure}")
        if args.overlays:
            print(f"overlays: {args.overlays}")
    if args.json:
        emit({"rows": result_rows(meas, args.out), "notes": []}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
