"""Peak memory of prediction against the number of photos in one call (issue 17.8).

    python bench/bench_predict_memory.py [--counts 20,500] [--reference REV] [--md FILE] [--json FILE]

Both tasks predict a folder of full-size synthetic photos (``gamma_kit.synth`` at GAMMA's two
sizes, 2992x2000 and 1956x1934; 20 distinct photos, linked under as many names as a count asks),
each call in a fresh process that reports its own peak RSS (``ru_maxrss``) and wall time:

- fovea: ``fovea.predict.predict`` with one fold of ``configs/fovea/unet_heatmap_cpu.yml`` (random
  weights: memory does not depend on them; fixed ROI window);
- seg: the two-stage ``predict_folder`` with ``roi_liteunet_cpu.yml`` (random weights, ``roi.json``
  defaults), default post-processing.

The same calls run with the kit of ``--reference`` (default ce96093, before prediction streamed),
extracted from git into a temporary folder, in the same run. Target: the peak for the largest
count within 10 % of the peak for the smallest.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, emit, machine_info, row, versions  # noqa: E402

from gamma_kit.safety import atomic_write_text  # noqa: E402

SIZES = ((2992, 2000), (1956, 1934))
DISTINCT = 20

# Runs under either version of the kit; prints {"peak_mb", "seconds", "n"} on its last line.
_PREDICT = """
import json, resource, sys, time
from pathlib import Path
task, model, images, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
t0 = time.perf_counter()
if task == "fovea":
    from gamma_kit.fovea.predict import predict
    n = len(predict([model], images, out / "sub.csv", device="cpu", progress=False)["predictions"])
else:
    try:
        from gamma_kit.seg.submission import predict_folder
    except ImportError:                       # before the seg inference split
        from gamma_kit.seg.inference import predict_folder
    run = predict_folder(model, images, out, postprocess=True, progress=False, log=lambda *_: None)
    n = len(getattr(run, "ids", None) or getattr(run, "masks", {}))
import gamma_kit
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"peak_mb": peak, "seconds": time.perf_counter() - t0, "n": n, "code": gamma_kit.__file__}))
"""


def make_models(work: Path) -> dict[str, Path]:
    """A fovea run folder (fold1) and a two-stage seg model folder, random weights."""
    import paddle
    from paddleseg.cvlibs import SegBuilder

    from gamma_kit.fovea.config import build_model, dump_config, load_config as fovea_config
    from gamma_kit.seg.model_dir import MODEL_CONFIG_NAME, WEIGHTS_NAME, RoiSettings, write_roi
    from gamma_kit.seg.training import load_config as seg_config

    paddle.seed(0)
    fold = work / "fovea_run" / "fold1"
    fold.mkdir(parents=True)
    cfg = fovea_config("fovea/unet_heatmap_cpu.yml", ["train.device=cpu", "roi.anchor=fixed"])
    paddle.save(build_model(cfg).state_dict(), str(fold / "best.pdparams"))
    (fold / "config.yml").write_text(dump_config(cfg))
    seg = work / "seg_model"
    seg.mkdir()
    scfg = seg_config("roi_liteunet_cpu.yml")
    paddle.save(SegBuilder(scfg).model.state_dict(), str(seg / WEIGHTS_NAME))
    (seg / MODEL_CONFIG_NAME).write_text(str(scfg))
    write_roi(seg, RoiSettings())
    return {"fovea": work / "fovea_run", "seg": seg}


def fovea_copy(run: Path, dest: Path, older_kits: bool) -> Path:
    """A copy of the fovea run whose model decodes photos whole (``data.decode: full``); for
    ``older_kits`` the keys that kits before it do not know are dropped instead (``roi`` keys before
    issue 19.3, ``data.decode``: they decoded whole, ``data.photometric``: training only) and the guard
    gets a radius in px (the fixed window has no prior, so no guard acts either way): the same model,
    read alike by both kits."""
    import shutil

    import yaml

    shutil.copytree(run, dest)
    config = dest / "fold1" / "config.yml"
    cfg = yaml.safe_load(config.read_text())
    assert cfg["roi"]["anchor"] == "fixed"
    if older_kits:
        for key in ("prior_spread", "margin_sigmas"):
            cfg["roi"].pop(key, None)
        cfg["roi"]["max_from_prior"] = 250.0
        cfg["data"].pop("decode", None)
        cfg["data"].pop("photometric", None)          # issue 19.3: training only, off (null) here
    else:
        cfg["data"]["decode"] = "full"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dest


def seg_copy(seg: Path, dest: Path) -> Path:
    """The seg model for kits before LiteUNet's ``conv_bias`` (issue 20.3), which always build a conv bias:
    its ``model.yml`` without the key and its weights with every such bias zero, the same network (a zero
    bias adds nothing), so both kits give the same masks."""
    import shutil

    import paddle
    import yaml
    from paddleseg.cvlibs import SegBuilder

    from gamma_kit.seg.model_dir import MODEL_CONFIG_NAME, WEIGHTS_NAME
    from gamma_kit.seg.training import load_config as seg_config

    shutil.copytree(seg, dest)
    cfg = yaml.safe_load((dest / MODEL_CONFIG_NAME).read_text())
    cfg["model"].pop("conv_bias", None)
    (dest / MODEL_CONFIG_NAME).write_text(yaml.safe_dump(cfg, sort_keys=False))
    have = paddle.load(str(seg / WEIGHTS_NAME))
    state = SegBuilder(seg_config(dest / MODEL_CONFIG_NAME)).model.state_dict()
    assert set(have) <= set(state), sorted(set(have) - set(state))[:5]
    paddle.save({k: have[k] if k in have else paddle.zeros_like(v) for k, v in state.items()}, str(dest / WEIGHTS_NAME))
    return dest


def photo_folders(work: Path, counts: list[int]) -> dict[int, Path]:
    """``DISTINCT`` synthetic full-size photos, linked ``count`` times round-robin into one folder each."""
    from gamma_kit.data import list_images
    from gamma_kit.synth import generate

    generate(work / "synth", 0, DISTINCT, seed=5, sizes=SIZES, progress=False)
    photos = list(list_images(work / "synth" / "task2_Fovea_localization" / "testing" / "fundus color images").values())
    out = {}
    for n in counts:
        d = work / f"photos_{n}"
        d.mkdir()
        for k in range(n):
            os.link(photos[k % len(photos)], d / f"{k + 1:04d}.jpg")
        out[n] = d
    return out


def reference_tree(rev: str, work: Path) -> Path:
    """``gamma_kit/`` and ``configs/`` of ``rev`` from this checkout's git history."""
    tar = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev, "gamma_kit", "configs"],
                         capture_output=True, check=True).stdout
    dest = work / f"reference-{rev[:10]}"
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(dest, filter="data")
    return dest


def measure(code: Path, task: str, model: Path, images: Path, out: Path, script: str = _PREDICT) -> dict:
    """``script`` (reads task, model, images, out; prints one JSON line with ``code``, where it found
    gamma_kit) in a fresh process with the kit under ``code`` first on the path."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    # run outside the checkout: python -c puts the working folder first on sys.path, before PYTHONPATH
    proc = subprocess.run([sys.executable, "-c", script, task, str(model), str(images), str(out)], env=env,
                          capture_output=True, text=True, timeout=7200, cwd=out.parent)
    if proc.returncode != 0:
        raise RuntimeError(f"{task} predict under {code} failed:\n{proc.stderr[-2000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    if not Path(res["code"]).resolve().is_relative_to(Path(code).resolve()):
        raise RuntimeError(f"{task} predict ran the kit at {res['code']}, not the one under {code}")
    return res


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--counts", default="20,500", help="photo counts per call (default 20,500)")
    ap.add_argument("--reference", default="ce96093", help="the kit before streaming (git revision)")
    ap.add_argument("--md", default=str(REPO / "bench" / "results" / "predict_memory.md"))
    ap.add_argument("--json", default=None)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    counts = sorted(int(c) for c in args.counts.split(","))
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        work = Path(tmp)
        models, folders = make_models(work), photo_folders(work, counts)
        codes = {"kit": REPO, "reference": reference_tree(args.reference, work)}
        older = {"fovea": fovea_copy(models["fovea"], work / "fovea_old", older_kits=True),
                 "seg": seg_copy(models["seg"], work / "seg_old")}
        res = {}
        for task in ("fovea", "seg"):
            for who, code in codes.items():
                for n in counts:
                    out = work / f"out_{task}_{who}_{n}"
                    model = older[task] if who == "reference" else models[task]
                    res[(task, who, n)] = r = measure(code, task, model, folders[n], out)
                    print(f"{task} {who} {n} photos: peak {r['peak_mb']:.0f} MiB, {r['seconds']:.1f} s", flush=True)
    lo, hi = counts[0], counts[-1]
    rows, lines = [], []
    for task in ("fovea", "seg"):
        grow = {who: res[(task, who, hi)]["peak_mb"] / res[(task, who, lo)]["peak_mb"] - 1 for who in codes}
        text = {who: f"{res[(task, who, lo)]['peak_mb']:.0f} -> {res[(task, who, hi)]['peak_mb']:.0f} MiB "
                     f"({grow[who]:+.0%})" for who in codes}
        rows.append(row(f"{task} predict peak RSS, {lo} -> {hi} full-size photos in one call",
                        f"{text['reference']} (kit at {args.reference})", text["kit"],
                        res[(task, "reference", hi)]["peak_mb"] / res[(task, "kit", hi)]["peak_mb"],
                        "within 10 %", bool(grow["kit"] <= 0.10),
                        note=f"{hi} photos: {res[(task, 'kit', hi)]['seconds'] / hi:.2f} s per photo (kit), "
                             f"{res[(task, 'reference', hi)]['seconds'] / hi:.2f} s (before)"))
        lines.append(f"| {task} | " + " | ".join(
            f"{res[(task, who, n)]['peak_mb']:.0f} MiB, {res[(task, who, n)]['seconds']:.0f} s"
            for who in ("reference", "kit") for n in counts) + " |")
    m = machine_info()
    head = " | ".join(f"{who} {n} photos" for who in (f"before ({args.reference})", "kit") for n in counts)
    md = "\n".join([
        "# Prediction memory against the number of photos (issue 17.8)", "",
        f"`python bench/bench_predict_memory.py --counts {args.counts}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{m.get('cpu', '')}, {m.get('cores', '')} cores, no GPU; {time.time() - t0:.0f} s in all).", "",
        f"Peak RSS of the whole predicting process (`ru_maxrss`) and its wall time; {DISTINCT} distinct synthetic "
        "photos at 2992x2000 and 1956x1934 under as many names as the count; random weights (fovea: the CPU "
        "config, one fold; seg: two-stage `roi_liteunet_cpu.yml` with post-processing).", "",
        f"| task | {head} |", "|---" * (1 + 2 * len(counts)) + "|", *lines, "",
        "Before, fovea predict decoded every photo into memory before the network ran, and seg predict kept every "
        "mask (and its raw twin) for scoring at the end; now both hold one chunk of photos at a time and score "
        "photo by photo, with the same numbers (tests/test_fovea_inference.py, tests/test_seg_same_numbers.py).",
    ])
    atomic_write_text(args.md, md + "\n")
    emit({"rows": rows, "notes": [md], "machine": m, "versions": versions()}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
