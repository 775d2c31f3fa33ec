"""Fovea cross-validation on a CPU machine three ways (issue 20.2): one process per fold, each fold
on 2 data-parallel processes, and two folds side by side (``--parallel-folds``), one after another
in one run, with the wall time and the cores each kept busy.

    python bench/bench_cv_folds.py [--data DIR] [--epochs 3] [--md FILE] [--json FILE]

Data: a synthetic GAMMA set at the challenge's sizes (``--data``, or 100 training photos generated
into a temporary folder: 5 folds of 80 + 20). Each arm is the command a user runs:
``fovea cv --config unet_heatmap_cpu.yml --epochs E --cache-dir C`` with ``--procs 1``,
``--procs 2`` or ``--procs 2 --parallel-folds``; the decode cache is filled by a one-epoch fold
first (not counted), so the arms time training, validation and checkpoints. Cores busy = CPU
seconds of the command and every process it started (``RUSAGE_CHILDREN``) / wall seconds.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, load_avg, machine_info, publish, row, versions  # noqa: E402


#: arm name -> the cv flags it adds
ARMS = {"one process per fold": ["--procs", "1"],
        "2 data-parallel processes per fold": ["--procs", "2"],
        "2 folds side by side (--parallel-folds)": ["--procs", "2", "--parallel-folds"]}


def _cv(data: Path, work: Path, run: str, epochs: int, flags: list[str]) -> dict:
    """One ``fovea cv`` command: wall seconds and cores busy."""
    cmd = [sys.executable, "-m", "gamma_kit.fovea", "cv", "--data-root", str(data), "--config", "unet_heatmap_cpu.yml",
           "--epochs", str(epochs), "--cache-dir", str(work / "cache"), "--run-dir", str(work / run),
           "--device", "cpu", "--no-progress", *flags]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"seconds": wall, "cores": cpu / wall, "command": " ".join(cmd[1:])}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=None, help="synthetic GAMMA root (default: 100 photos generated)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--md", default=str(REPO / "bench" / "results" / "cv_folds.md"))
    ap.add_argument("--json", default=None)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    t0, load0 = time.time(), load_avg()
    with tempfile.TemporaryDirectory(prefix="bench_cv_folds_") as tmp:
        work = Path(tmp)
        data = Path(args.data) if args.data else work / "synth"
        if not args.data:
            from gamma_kit.synth import generate

            generate(data, 100, 0, seed=0, progress=False)
        _cv(data, work, "warm", 1, ["--folds", "1", "--procs", "1"])          # fills the decode cache
        res = {}
        for name, flags in ARMS.items():
            res[name] = r = _cv(data, work, f"run{len(res)}", args.epochs, flags)
            print(f"{name}: {r['seconds']:.0f} s, {r['cores']:.2f} cores busy", flush=True)
    m = machine_info()
    base = res["one process per fold"]["seconds"]
    rows, lines = [], []
    for name, r in res.items():
        rows.append(row(f"fovea cv, 5 folds x {args.epochs} epochs (80 + 20 photos): {name}",
                        f"{base:.0f} s (one process per fold)", f"{r['seconds']:.0f} s", base / r["seconds"],
                        note=f"{r['cores']:.2f} of {os.cpu_count()} cores busy"))
        lines.append(f"| {name} | {r['seconds']:.0f} s | {r['cores']:.2f} | {base / r['seconds']:.2f}x |")
    md = "\n".join([
        "# Fovea cross-validation on 2 CPU cores: sequential folds or --parallel-folds (issue 20.2)", "",
        (f"`python bench/bench_cv_folds.py --epochs {args.epochs}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
         f"{m['cpu']}, {m['cores']} cores, no GPU, load average {load0[0]:.2f} before; {time.time() - t0:.0f} s in "
         f"all). `fovea cv --config unet_heatmap_cpu.yml` over 100 full-size synthetic photos (2992x2000 and "
         f"1956x1934), 5 folds of 80 + 20, {args.epochs} epochs each, decode cache filled beforehand; the arms "
         "one after another."), "",
        "| arm | wall | cores busy (of 2) | vs one process |", "|---|---|---|---|", *lines, ""])
    publish(md, args.md, {"rows": rows, "where": m, "versions": versions(), "seconds": time.time() - t0}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
