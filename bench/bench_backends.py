"""Inference backends side by side (issue 20.5): the dynamic model, Paddle Inference on the static
export, and onnxruntime on the same export converted by paddle2onnx, for both tasks, in one run.

    python bench/bench_backends.py [--photos 20] [--md bench/results/backends.md] [--json FILE]

Each (task, backend) predicts the same folder of full-size synthetic photos (``gamma_kit.synth`` at
2992x2000 and 1956x1934) in a fresh process that reports its wall time and peak RSS (``ru_maxrss``);
the models are those of ``bench_predict_memory`` (random weights: the time does not depend on them),
exported with ``--format onnx``. Seconds per photo include decoding, stage 1 (seg) or the canonical
frame (fovea) and writing the submission, as a user sees them; the first photo's warm-up is included.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_predict_memory import make_models, photo_folders  # noqa: E402
from common import REPO, emit, machine_info, row, versions  # noqa: E402

from gamma_kit.safety import atomic_write_text  # noqa: E402

BACKENDS = ("dynamic", "paddle", "onnx")

_PREDICT = """
import json, resource, sys, time
from pathlib import Path
task, backend, model, images, out = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5])
from gamma_kit.fovea.predict import predict
from gamma_kit.seg.export import StaticPredictor
from gamma_kit.seg.predictor import load_model
from gamma_kit.seg.submission import predict_folder
t0 = time.perf_counter()                      # imports done: the model's loading and the photos from here
if task == "fovea":
    kw = {"checkpoints": [model]} if backend == "dynamic" else {"checkpoints": None, "exported": model,
                                                                "backend": backend}
    n = len(predict(images=images, out_csv=out / "sub.csv", device="cpu", progress=False, **kw)["predictions"])
else:
    core = load_model(model, device="cpu") if backend == "dynamic" else StaticPredictor(model, device="cpu",
                                                                                           backend=backend)
    n = len(predict_folder(core, images, out, postprocess=True, progress=False, log=lambda *_: None).ids)
print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": time.perf_counter() - t0, "n": n}))
"""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=int, default=20)
    ap.add_argument("--md", default=str(REPO / "bench" / "results" / "backends.md"))
    ap.add_argument("--json", default=None)
    return ap


def _exports(models: dict[str, Path], work: Path) -> dict[str, Path]:
    from gamma_kit.fovea.export import export_static as fovea_export
    from gamma_kit.seg.export import export_static as seg_export

    return {"fovea": fovea_export(models["fovea"], work / "fovea_export", onnx=True),
            "seg": seg_export(models["seg"], work / "seg_export", onnx=True)}


def _run(task: str, backend: str, model: Path, images: Path, out: Path) -> dict:
    out.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", _PREDICT, task, backend, str(model), str(images), str(out)],
                          env=env, cwd=out, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"{task} {backend} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="bench_backends_") as tmp:
        work = Path(tmp)
        models = make_models(work)
        exports = _exports(models, work)
        images = photo_folders(work, [args.photos])[args.photos]
        res = {}
        for task in ("fovea", "seg"):
            for backend in BACKENDS:
                source = models[task] if backend == "dynamic" else exports[task]
                res[(task, backend)] = r = _run(task, backend, source, images, work / f"out_{task}_{backend}")
                print(f"{task} {backend}: {r['seconds'] / r['n']:.3f} s per photo, peak {r['peak_mb']:.0f} MiB",
                      flush=True)
    rows, lines = [], []
    for task in ("fovea", "seg"):
        per = {b: res[(task, b)]["seconds"] / res[(task, b)]["n"] for b in BACKENDS}
        mem = {b: res[(task, b)]["peak_mb"] for b in BACKENDS}
        rows.append(row(f"{task} predict per full-size photo: dynamic vs Paddle Inference vs onnxruntime",
                        f"dynamic {per['dynamic']:.3f} s", f"Paddle Inference {per['paddle']:.3f} s, onnxruntime "
                        f"{per['onnx']:.3f} s", per["dynamic"] / per["onnx"], "", None,
                        memory=", ".join(f"{b} {mem[b]:.0f} MiB" for b in BACKENDS),
                        note=f"{args.photos} photos, peak RSS of the whole process"))
        lines.append(f"| {task} | " + " | ".join(f"{per[b]:.3f} s, {mem[b]:.0f} MiB" for b in BACKENDS) + " |")
    m = machine_info()
    md = "\n".join([
        "# Inference backends: dynamic, Paddle Inference, onnxruntime (issue 20.5)", "",
        f"`python bench/bench_backends.py --photos {args.photos}` "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{m['cpu']}, {m['cores']} cores, no GPU; {time.time() - t0:.0f} s in all). Seconds per full-size photo "
        "(2992x2000 and 1956x1934) as `predict` spends them, model loading to submission (imports not counted), and "
        "the process's peak RSS; "
        "random weights (fovea: the CPU config, one fold; seg: two-stage `roi_liteunet_cpu.yml`, post-processed).", "",
        "| task | dynamic (`--checkpoints` / `--model`) | Paddle Inference (`--exported`) | onnxruntime (`--onnx`) |",
        "|---|---|---|---|", *lines, ""])
    atomic_write_text(args.md, md + "\n")
    emit({"rows": rows, "notes": [md], "machine": m, "versions": versions()}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
