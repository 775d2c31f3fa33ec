"""Seconds per full-size photo of both tasks' prediction, today's kit against an earlier one, in one
run, and whether the answers are the same (issue 20.4).

    python bench/bench_inference.py [--photos 40] [--reference 7f35240] [--md FILE] [--json FILE]

Each (task, kit) predicts the same folder of full-size synthetic photos (``gamma_kit.synth`` at
GAMMA's two sizes, 2992x2000 and 1956x1934; ``bench_predict_memory``'s 20 distinct photos linked
under ``--photos`` names) in a fresh process, on the CPU, with the models of ``bench_predict_memory``
(random weights: the time does not depend on them): fovea ``predict`` with one fold of
``unet_heatmap_cpu.yml``; seg ``predict_folder`` with two-stage ``roi_liteunet_cpu.yml``,
post-processed. The time runs from the model's loading to the written submission (decode, photo
check, eye side or stage 1, network, writing; imports not counted), divided by the photos. The
reference kit (``--reference``, a git revision, extracted into a temporary folder) runs the same
calls on the same models; fovea runs a third time with the model's ``data.decode`` set to ``full``
(the photos decoded whole), so the half-size decode's share of the change shows. Answers, each
against the reference: the fovea CSVs' largest difference in px and the seg masks' differing pixels.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_predict_memory import (fovea_copy, make_models, measure, photo_folders, reference_tree,  # noqa: E402
                                  seg_copy)
from common import REPO, load_avg, machine_info, publish, row, versions  # noqa: E402


TARGET_S = 0.1          # issue 20.4: per full-size photo on 2 cores, each task

_PREDICT = """
import json, sys, time
from pathlib import Path
task, model, images, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
import gamma_kit
import paddle                                  # imported lazily by both kits: not counted either
from gamma_kit.fovea.predict import predict
from gamma_kit.seg.predictor import load_model
from gamma_kit.seg.submission import predict_folder
t0 = time.perf_counter()                      # imports done
if task == "fovea":
    n = len(predict([model], images, out / "sub.csv", device="cpu", progress=False)["predictions"])
else:
    n = len(predict_folder(load_model(model, device="cpu"), images, out, postprocess=True, progress=False,
                           log=lambda *_: None).ids)
print(json.dumps({"seconds": time.perf_counter() - t0, "n": n, "code": str(Path(gamma_kit.__file__).parent)}))
"""


def _run(code: Path, task: str, model: Path, images: Path, out: Path) -> dict:
    out.mkdir(parents=True)
    return measure(code, task, model, images, out, _PREDICT)


def _same_answers(task: str, a: Path, b: Path) -> str:
    """How far the two kits' answers are apart."""
    import pandas as pd

    from gamma_kit.data import list_masks, read_mask

    if task == "fovea":
        x, y = (pd.read_csv(p / "sub.csv", dtype={"data": str}).set_index("data").sort_index() for p in (a, b))
        px = float(np.abs(x.values - y.values).max())
        # random weights give flat heatmaps whose peak any change of the input can move (trained weights: a
        # half-size decode moved positions 0.5-0.7 px, 6 px at most; docs/results.md)
        return f"largest position difference {px:.3g} px" + (" (random weights: a flat heatmap's peak)" if px else "")
    ma, mb = (list_masks(p / "Disc_Cup_Segmentations") for p in (a, b))
    differ = sum(int((read_mask(ma[i]) != read_mask(mb[i])).sum()) for i in ma)
    return f"{differ} mask pixels differ over {len(ma)} photos"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=int, default=40)
    ap.add_argument("--reference", default="7f35240", help="the kit to compare with (git revision)")
    ap.add_argument("--md", default=str(REPO / "bench" / "results" / "inference.md"))
    ap.add_argument("--json", default=None)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.time()
    load0 = load_avg()
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as tmp:
        work = Path(tmp)
        models, images = make_models(work), photo_folders(work, [args.photos])[args.photos]
        reference = reference_tree(args.reference, work)
        # (task, arm) -> (code, model): the kit with the shipped configs, the reference kit on the same
        # model, and the fovea model with data.decode: full (the reduced decode's share of the change)
        arms = {("fovea", "reference"): (reference, fovea_copy(models["fovea"], work / "fovea_old", True)),
                ("fovea", "kit"): (REPO, models["fovea"]),
                ("fovea", "kit, whole decode"): (REPO, fovea_copy(models["fovea"], work / "fovea_full", False)),
                ("seg", "reference"): (reference, seg_copy(models["seg"], work / "seg_old")),
                ("seg", "kit"): (REPO, models["seg"])}
        res, same = {}, {}
        for (task, who), (code, model) in arms.items():
            res[(task, who)] = r = _run(code, task, model, images, work / f"out_{task}_{who}")
            print(f"{task} {who}: {r['seconds'] / r['n']:.3f} s per photo", flush=True)
            if who != "reference":
                same[(task, who)] = _same_answers(task, work / f"out_{task}_reference", work / f"out_{task}_{who}")
    m = machine_info()
    rows, lines = [], []
    for (task, who) in same:
        old, new = (res[(task, w)]["seconds"] / res[(task, w)]["n"] for w in ("reference", who))
        what = "" if who == "kit" else f" ({who.split(', ')[1]})"
        rows.append(row(f"{task} predict per full-size photo (decode to submission){what}",
                        f"{args.reference} {old:.3f} s", f"{new:.3f} s", old / new, f"<= {TARGET_S} s",
                        new <= TARGET_S, note=same[(task, who)]))
        lines.append(f"| {task}{what} | {old:.3f} s | {new:.3f} s | {old / new:.2f}x "
                     f"| {'yes' if new <= TARGET_S else 'no'} | {same[(task, who)]} |")
    md = "\n".join([
        "# Prediction speed per full-size photo (issue 20.4)", "",
        (f"`python bench/bench_inference.py --photos {args.photos} --reference {args.reference}` "
         f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {m['cpu']}, {m['cores']} cores, no GPU, "
         f"load average {load0[0]:.2f} before; {time.time() - t0:.0f} s in all). {args.photos} full-size synthetic "
         "photos (2992x2000 and 1956x1934), random weights, CPU; seconds per photo from the model's loading to the "
         "written submission (imports not counted), the two kits one after the other in fresh processes."), "",
        f"| task | {args.reference} | kit | ratio | <= {TARGET_S} s | same answers |", "|---|---|---|---|---|---|",
        *lines, ""])
    publish(md, args.md, {"rows": rows, "where": m, "versions": versions(), "seconds": time.time() - t0}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
