"""Both cores at work (issue 20.1-20.3): training time and the cores it keeps busy, one process
against ``--procs 2``, for fovea and seg, through the kit's own commands, in one run.

    python bench/bench_cores.py [--data DIR] [--epochs 4] [--iters 80] [--only fovea|seg] [--md FILE] [--json FILE]

Data: a synthetic GAMMA set at the challenge's sizes (2992x2000 and 1956x1934; ``--data``, or 100
training photos generated into a temporary folder). Fovea: ``fovea train --fold 1 --config
unet_heatmap_cpu.yml`` = 80 training + 20 validation photos per epoch (10 steps of 8 crops,
validation, a checkpoint set). Seg: ``seg prepare --roi --roi-copies 2`` + ``split`` of the same
photos, then ``seg train --config roi_liteunet_cpu.yml --no-eval`` at 192x192: one process of 4 crops
with the conv bias (the recipe before issue 20.3: batch 4 x 1500 iterations) against the recipe as
shipped (batch 8 over 2 processes of 4, no conv bias), projected over the same 6000 crops (750
iterations) and over the recipe's own 1500.

Each arm is the command a user runs, as a subprocess with ``--procs 1`` or ``--procs 2``. While it
trains, the CPU seconds of its whole process tree (psutil: the command and the processes it
started) are read whenever a unit of progress appears: a line of the fold's metrics.csv (an
epoch) or a line of PaddleSeg's training log (``--log-iters`` iterations). Rates and "cores busy"
(CPU seconds / wall seconds) run from the first unit to the last, so start-up, decoding and the
first epoch (warm-up) are not counted. "130 epochs" and the seg recipes' iterations are those rates
times the recipe's length: projections, not measured runs.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, emit, load_avg, machine_info, row, versions  # noqa: E402

FOVEA_EPOCHS = 130          # the CPU fovea recipe (configs/fovea/unet_heatmap_cpu.yml)
_RECIPE = yaml.safe_load((REPO / "configs" / "seg" / "roi_liteunet_cpu.yml").read_text())
#: the seg CPU recipe as shipped: (batch, iterations), read from its config
SEG_RECIPE = (int(_RECIPE["batch_size"]), int(_RECIPE["iters"]))
#: the seg recipe before issue 20.3: one process, batch 4 x 1500 iterations, conv bias
SEG_BEFORE = (4, 1500)
#: seg arms by --procs: (train flags, extra opts, (batch, iterations projected)); the recipe's arm is
#: projected over the crops of the one before
SEG_ARMS = {1: (["--batch-size", str(SEG_BEFORE[0])], ["model.conv_bias=True"], SEG_BEFORE),
            2: ([], [], (SEG_RECIPE[0], SEG_BEFORE[0] * SEG_BEFORE[1] // SEG_RECIPE[0]))}
TARGETS = {"cores": 1.8, "fovea_min": 20.0, "seg_min": 15.0}


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its living descendants."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def monitored(cmd: list[str], progress, cwd: Path, env: dict) -> dict:
    """Run ``cmd``; whenever ``progress(stdout_lines)`` grows, note (time, tree CPU, count).
    Returns the units, seconds per unit and cores busy between the first and the last note."""
    lines: list[str] = []
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    notes, last = [], 0
    while proc.poll() is None:
        n = progress(lines)
        if n > last:
            notes.append((time.perf_counter(), tree_cpu(proc.pid), n))
            last = n
        time.sleep(0.1)
    reader.join(timeout=5)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... failed ({proc.returncode}):\n{''.join(lines[-30:])}")
    (t0, c0, n0), (t1, c1, n1) = notes[0], notes[-2] if len(notes) > 2 else notes[-1]
    units = n1 - n0
    return {"units": units, "per_unit_s": (t1 - t0) / units if units else None,
            "cores": (c1 - c0) / (t1 - t0) if t1 > t0 else None}


def fovea_arm(data: Path, sides: Path, work: Path, procs: int, epochs: int, env: dict) -> dict:
    run = work / f"fovea_p{procs}"
    log = run / "fold1" / "metrics.csv"
    cmd = [sys.executable, "-m", "gamma_kit.fovea", "train", "--fold", "1", "--config", "unet_heatmap_cpu.yml",
           "--data-root", str(data), "--side-overrides", str(sides), "--run-dir", str(run), "--epochs", str(epochs),
           "--procs", str(procs), "--no-progress"]
    out = monitored(cmd, lambda _lines: max(0, len(log.read_text().splitlines()) - 1) if log.is_file() else 0,
                    work, env)
    history = json.loads((run / "fold1" / "metrics.json").read_text())["history"]
    out["epoch_seconds"] = [r["seconds"] for r in history]
    out["last_aed"] = history[-1]["val_aed"]
    return out


def seg_arm(prepared: Path, work: Path, procs: int, iters: int, env: dict) -> dict:
    opts = [f"train_dataset.dataset_root={prepared}", f"train_dataset.train_path={prepared / 'train_list.txt'}",
            f"val_dataset.dataset_root={prepared}", f"val_dataset.val_path={prepared / 'val_list.txt'}"]
    flags, extra, _ = SEG_ARMS[procs]
    cmd = [sys.executable, "-m", "gamma_kit.seg", "train", "--config", "roi_liteunet_cpu.yml", "--save-dir",
           str(work / f"seg_p{procs}"), "--iters", str(iters), "--no-eval", "--log-iters", "10", "--procs",
           str(procs), *flags, "--opts", *opts, *extra]
    out = monitored(cmd, lambda lines: sum("[TRAIN]" in ln for ln in list(lines)), work, env)
    out["per_unit_s"] = out["per_unit_s"] / 10 if out["per_unit_s"] else None      # a log line = 10 iterations
    out["units"] *= 10
    return out


def ensure_data(data: str | None, work: Path) -> tuple[Path, Path, Path]:
    """(synthetic GAMMA root, side-override CSV, prepared ROI seg folder)."""
    import pandas as pd

    root = Path(data) if data else work / "synth"
    if not (root / "synth_meta.csv").is_file():
        from gamma_kit.synth import generate

        generate(root, 100, 4, seed=0, progress=False)
    meta = pd.read_csv(root / "synth_meta.csv", dtype={"id": str})
    sides = work / "sides.csv"
    meta[["id", "disc_side"]].rename(columns={"id": "data"}).to_csv(sides, index=False)
    prepared = work / "seg_prepared"
    if not (prepared / "train_list.txt").is_file():
        for args in (["prepare", "--roi", "--roi-copies", "2", "--data-root", str(root), "--out", str(prepared)],
                     ["split", "--dataset-dir", str(prepared)]):
            subprocess.run([sys.executable, "-m", "gamma_kit.seg", *args], check=True, capture_output=True)
    return root, sides, prepared


def rows(res: dict) -> list[dict]:
    out, arms = [], []
    if res["fovea"]:
        arms.append(("Fovea CPU epoch (80 + 20 full-size photos)", res["fovea"]["1"], res["fovea"]["2"], "epoch",
                     (FOVEA_EPOCHS, FOVEA_EPOCHS), TARGETS["fovea_min"], ("--procs 1", "--procs 2"), None))
    if res["seg"]:
        (b1, n1), (b2, n2) = SEG_ARMS[1][2], SEG_ARMS[2][2]
        arms.append(("Seg two-stage CPU recipe (192 px)", res["seg"]["1"], res["seg"]["2"], "iteration",
                     (n1, n2), TARGETS["seg_min"],
                     (f"batch {b1}, one process", f"batch {b2}, 2 processes of {b2 // 2}"), (b1, b2)))
    for task, a1, a2, unit, (n1, n2), target, (l1, l2), batches in arms:
        if batches:     # iterations of different batches: compare the time per crop
            t1, t2 = a1["per_unit_s"] / batches[0], a2["per_unit_s"] / batches[1]
            out.append(row(f"{task}: seconds per crop", f"{t1:.3f} s ({l1}: {a1['per_unit_s']:.3f} s per {unit})",
                           f"{t2:.3f} s ({l2}: {a2['per_unit_s']:.3f} s per {unit})", t1 / t2))
        else:
            out.append(row(f"{task}: seconds per {unit}", f"{a1['per_unit_s']:.3f} s ({l1})",
                           f"{a2['per_unit_s']:.3f} s ({l2})", a1["per_unit_s"] / a2["per_unit_s"]))
        out.append(row(f"{task}: cores busy (of 2)", f"{a1['cores']:.2f}", f"{a2['cores']:.2f}", None,
                       f">= {TARGETS['cores']}", a2["cores"] >= TARGETS["cores"]))
        minutes = (a1["per_unit_s"] * n1 / 60, a2["per_unit_s"] * n2 / 60)
        length = f"the recipe's {n1} {unit}s" if n1 == n2 else \
            f"the crops of the recipe before ({n1} {unit}s of {batches[0]} / {n2} of {batches[1]})"
        out.append(row(f"{task}: {length} (projected)", f"{minutes[0]:.1f} min",
                       f"{minutes[1]:.1f} min", minutes[0] / minutes[1], f"<= {target:g} min", minutes[1] <= target,
                       note="rate x length, start-up and validation-free seg not included"))
        if batches:
            shipped = a2["per_unit_s"] * SEG_RECIPE[1] / 60
            out.append(row(f"{task}: the recipe as shipped, {SEG_RECIPE[1]} {unit}s of {batches[1]} (projected)",
                           "", f"{shipped:.1f} min", None, note="twice the crops, for accuracy (issue 19.2)"))
    return out


def markdown(result: dict) -> str:
    head = ("| measure | one process (before) | kit (--procs 2) | speed-up | target | met |\n"
            "|---|---|---|---|---|---|\n")
    def cells(r: dict) -> str:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        met = "" if r["met"] is None else ("yes" if r["met"] else "no")
        return f"| {r['measure']} | {r['original']} | {r['kit']} | {ratio} | {r['target']} | {met} |\n"

    body = "".join(cells(r) for r in result["rows"])
    m = result["machine"]
    fovea = result["fovea"]
    aed = (f" Fovea validation AED after the last epoch: {fovea['1']['last_aed']:.4f} (1 process) / "
           f"{fovea['2']['last_aed']:.4f} (2): a few epochs, not an accuracy figure." if fovea else "")
    return (f"# Both cores: training with --procs 2 (bench/bench_cores.py)\n\n"
            f"`{result['command']}` on {m.get('cpu', '?')}, {m.get('cores', '?')} cores, no GPU; "
            f"load average before: {result['load_before']}.\n\n{head}{body}\n"
            "Cores busy = CPU seconds of the command's process tree / wall seconds, from the first epoch (or log "
            f"line) to the last; start-up and the warm-up epoch are not counted.{aed}\n")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="synthetic GAMMA root (default: 100 photos generated into a temp folder)")
    ap.add_argument("--epochs", type=int, default=4, help="fovea epochs per arm (the first is a warm-up)")
    ap.add_argument("--iters", type=int, default=80, help="seg iterations per arm")
    ap.add_argument("--only", choices=("fovea", "seg"), help="one task's arms (default: both)")
    ap.add_argument("--md", default=str(REPO / "bench" / "results" / "cores.md"))
    ap.add_argument("--json")
    return ap


def command(a: argparse.Namespace) -> str:
    """The command line that reproduces the measurement: its own flags, not where the results went
    (``--md``, ``--json``: a reader elsewhere has other paths)."""
    flags = [f"--data {a.data}"] * bool(a.data) + [f"--only {a.only}"] * bool(a.only)
    return " ".join(["python bench/bench_cores.py", *flags, f"--epochs {a.epochs} --iters {a.iters}"])


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="gk_bench_cores_"))
    data, sides, prepared = ensure_data(a.data, work)
    env = {k: v for k, v in os.environ.items() if k not in ("GAMMA_KIT_PROCS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    res = {"command": command(a),
           "machine": machine_info(), "versions": versions(), "load_before": load_avg(), "fovea": {}, "seg": {}}
    for procs in (1, 2):
        if a.only in (None, "fovea"):
            res["fovea"][str(procs)] = fovea_arm(data, sides, work, procs, a.epochs, env)
        if a.only in (None, "seg"):
            res["seg"][str(procs)] = seg_arm(prepared, work, procs, a.iters, env)
    res["rows"] = rows(res)
    emit(res, a.json)
    if a.md:
        from gamma_kit.safety import atomic_write_text

        atomic_write_text(a.md, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
