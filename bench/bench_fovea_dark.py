"""Fovea on dark and hazy photos (issue 19.3): each fold's validation photos, darkened and hazed four
ways, predicted by that fold's own model, against the photos as they are.

    # 1. a cross-validation run on photos with fovea ground truth (e.g. the 103 IDRiD photos)
    python -m gamma_kit.fovea cv --images ../shared/data/idrid_fovea/images \\
        --gt ../shared/data/idrid_fovea/fovea_GT.csv --config configs/fovea/unet_heatmap_cpu.yml \\
        --epochs 30 --folds 1,2 --run-dir RUN --procs 2 --parallel-folds
    # 2. its validation photos, darkened, through predict
    python bench/bench_fovea_dark.py --run RUN --images ../shared/data/idrid_fovea/images \\
        --gt ../shared/data/idrid_fovea/fovea_GT.csv --out-md bench/results/fovea_dark.md

Copies (``VARIANTS``, each written as a JPEG of quality 95 beside the others in a temporary folder):
``dark_0.5`` / ``dark_0.3``: every channel x 0.5 / x 0.3 (an under-exposed photo); ``gamma_2``: the
0..1 values squared (dark mid-tones, the highlights kept); ``haze_0.5``: inside the field of view
(pixels above a sum of 30), half way to the field's mean colour (low contrast, as a cataract).
Each fold's copies go through ``python -m gamma_kit.fovea predict --checkpoints RUN/foldK --gt``
(the default checkpoint, ``--which``), so the photo check, eye side, disc, window, network and
guard all see the darkened photo. Per copy: the AED pooled over the folds' photos, the median and
largest distance (normalised by the photo's size, as AED), and the photos predict flagged in its
``_report.csv`` and where their answer came from (network, guard, fallback).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine_info, publish, versions  # noqa: E402

VARIANTS = ("as_is", "dark_0.5", "dark_0.3", "gamma_2", "haze_0.5")
#: a pixel whose channels sum above this is inside the field of view (the black surround sums near 0)
FIELD_SUM = 30


def darkened(image: np.ndarray, variant: str) -> np.ndarray:
    """``image`` (H, W, 3) uint8 as copy ``variant`` of ``VARIANTS`` (uint8)."""
    f = image.astype(np.float32)
    if variant == "as_is":
        return image
    if variant.startswith("dark_"):
        out = f * float(variant.split("_")[1])
    elif variant == "gamma_2":
        out = 255.0 * (f / 255.0) ** 2
    elif variant == "haze_0.5":
        field = f.sum(axis=2) > FIELD_SUM
        mean = f[field].mean(axis=0) if field.any() else np.zeros(3, np.float32)
        out = np.where(field[..., None], 0.5 * f + 0.5 * mean, f)
    else:
        raise ValueError(f"unknown variant {variant!r}; one of {VARIANTS}")
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _gt_rows(gt: Path, ids: set[str]) -> str:
    lines = gt.read_text().splitlines()
    return "\n".join([lines[0]] + [ln for ln in lines[1:] if ln.split(",")[0] in ids]) + "\n"


def write_copies(fold: int, ids: list[str], found: dict[str, Path], gt: Path, variants: list[str], work: Path) -> None:
    """Each of one fold's validation photos decoded once and written as every copy of ``variants``
    (``work/foldK/<variant>/<id>.jpg``), and the fold's ground-truth rows (``work/gt_foldK.csv``)."""
    import cv2

    for v in variants:
        (work / f"fold{fold}" / v).mkdir(parents=True)
    for i in ids:
        img = cv2.imread(str(found[i]))
        if img is None:
            raise ValueError(f"{found[i]}: not readable")
        for v in variants:
            cv2.imwrite(str(work / f"fold{fold}" / v / f"{i}.jpg"), darkened(img, v), [cv2.IMWRITE_JPEG_QUALITY, 95])
    (work / f"gt_fold{fold}.csv").write_text(_gt_rows(gt, set(ids)))


def predict_copies(run: Path, fold: int, variant: str, work: Path, which: str) -> dict:
    """One fold's copies ``variant`` (``write_copies``) predicted by that fold's model: per-photo distances
    and the report rows, or the error predict gave."""
    import pandas as pd

    out = work / f"fold{fold}_{variant}.csv"
    proc = subprocess.run([sys.executable, "-m", "gamma_kit.fovea", "predict", "--checkpoints", str(run / f"fold{fold}"),
                           "--images", str(work / f"fold{fold}" / variant), "--out", str(out),
                           "--gt", str(work / f"gt_fold{fold}.csv"), "--which", which, "--no-progress"],
                          capture_output=True, text=True, cwd=REPO)
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    per = json.loads(out.with_name(out.stem + "_scores.json").read_text())["per_image"]
    report = pd.read_csv(out.with_name(out.stem + "_report.csv"), dtype={"id": str})
    rows = [{"id": r["id"], "ed": float(per[r["id"]]), "source": r["source"],
             "flags": "" if pd.isna(r["flags"]) else str(r["flags"])} for _, r in report.iterrows()]
    return {"rows": rows}


def summarise(per_variant: dict[str, list[dict]]) -> list[dict]:
    """One row per variant: AED (mean distance), median, largest, the photos flagged, the sources."""
    out = []
    for variant, rows in per_variant.items():
        ed = np.array([r["ed"] for r in rows])
        sources = {s: sum(r["source"] == s for r in rows) for s in sorted({r["source"] for r in rows})}
        worst = max(rows, key=lambda r: r["ed"]) if rows else None
        out.append({"variant": variant, "n": len(rows), "aed": float(ed.mean()) if len(ed) else None,
                    "median": float(np.median(ed)) if len(ed) else None, "max": float(ed.max()) if len(ed) else None,
                    "flagged": sum(bool(r["flags"]) for r in rows), "sources": sources,
                    "worst": f"{worst['id']} ({worst['source']}; {worst['flags'] or 'no flag'})" if worst else ""})
    return out


def markdown(result: dict) -> str:
    head = ("| copy | photos | AED | median / largest | flagged | answer from | worst photo |\n"
            "|---|---|---|---|---|---|---|\n")
    body = "".join(
        f"| {r['variant']} | {r['n']} | {r['aed']:.4f} | {r['median']:.4f} / {r['max']:.4f} | {r['flagged']} | "
        f"{', '.join(f'{k} {v}' for k, v in r['sources'].items())} | {r['worst']} |\n" for r in result["rows"])
    errors = "".join(f"\nFold {k}, {v}: {e}\n" for (k, v), e in result.get("errors", {}).items())
    return (f"# Fovea on dark and hazy copies of the validation photos (bench/bench_fovea_dark.py)\n\n"
            f"`{result['command']}`: run `{result['run']}` ({result['config']}, checkpoint `{result['which']}`), "
            f"folds {result['folds']}, {result['machine'].get('cpu', '?')}. Distances are normalised by the "
            "photo's size, as the challenge's AED.\n\n" + head + body + errors)


def command(a: argparse.Namespace) -> str:
    """The measurement's own command line (not where its files went: ``--out-md``, ``--json``)."""
    flags = [f"--run {a.run} --images {a.images} --gt {a.gt}"] + [f"--which {a.which}"] * (a.which != "auto") + \
        [f"--variants {a.variants}"] * (a.variants != ",".join(VARIANTS))
    return " ".join(["python bench/bench_fovea_dark.py", *flags])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, help="a fovea cv run folder (splits.json, foldK/)")
    ap.add_argument("--images", required=True)
    ap.add_argument("--gt", required=True)
    ap.add_argument("--which", default="auto", help="predict's --which (default auto: the averaged weights)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out-md")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    run, variants = Path(a.run), a.variants.split(",")
    splits = [s for s in json.loads((run / "splits.json").read_text()) if (run / f"fold{s['fold']}").is_dir()]
    per, errors = {v: [] for v in variants}, {}
    from gamma_kit.data import list_images

    found = list_images(a.images)
    with tempfile.TemporaryDirectory(prefix="gk_dark_") as tmp:
        for s in splits:
            write_copies(s["fold"], s["val"], found, Path(a.gt), variants, Path(tmp))
            for v in variants:
                got = predict_copies(run, s["fold"], v, Path(tmp), a.which)
                if "error" in got:
                    errors[(s["fold"], v)] = got["error"]
                else:
                    per[v] += got["rows"]
    import yaml

    cfg = yaml.safe_load((run / f"fold{splits[0]['fold']}" / "config.yml").read_text())["name"] if splits else "?"
    result = {"command": command(a),
              "run": str(run), "config": cfg, "which": a.which, "folds": [s["fold"] for s in splits],
              "machine": machine_info(), "versions": versions(), "rows": summarise(per), "errors": errors}
    publish(markdown(result), a.out_md, {**result, "errors": {f"{k}:{v}": e for (k, v), e in errors.items()}},
            a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
