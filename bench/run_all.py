"""Run every gamma_kit benchmark and write bench/RESULTS.md (atomically).

    python bench/run_all.py            # full: ~19 min on 2 cores (+ ~4 min with --demo; longer when shared)
    python bench/run_all.py --quick    # development: smaller counts, original forward estimated
    python bench/run_all.py --demo     # also time `python -m gamma_kit.demo` (both tasks) once
    python bench/run_all.py --only fovea_epoch,disc_locate   # re-run parts, keep the others' last rows
    python bench/run_all.py --skip accuracy                  # everything but the accuracy arms
    python bench/run_all.py --list     # the parts and the estimated wall time of each; runs nothing

Parts (``--only`` / ``--skip`` names; see ``PARTS``): heatmap, dataset, models, fovea_epoch,
disc_locate (needs the IDRiD photos), seg_two_stage, predict_memory, backends, inference, cores, cv_folds,
synth_realism, accuracy (synthetic fovea and segmentation arms). Before running, the plan is printed with an estimate of each part's
wall time: the part's last measured duration in ``--raw-dir`` (same ``--quick`` mode; the
accuracy part scaled to ``--budget``), else a default for 2 idle cores.

Each benchmark runs in its own Python process (``bench/bench_*.py --json``) so its memory
figures start from a clean process and one failure does not stop the others; the table
collects their rows. A synthetic GAMMA-size data set (both cameras, both eyes) is
generated once into the work folder (default: a temporary folder) when a part needs it.
Raw JSON goes to ``--raw-dir`` (default ``runs/bench/``, git-ignored), one file per benchmark,
replaced only when the benchmark succeeds; the benchmarks' own Markdown goes there too (the
committed bench/results/*.md are not touched). A part that is not run (``--only``/``--skip``,
or its data is absent) keeps its rows from its last raw JSON, labelled "from a separate run on
<date>"; so does the demo row without ``--demo``. IDRiD accuracy is not part of the run (it
needs ~20 min): ``bench/bench_accuracy.py --idrid ... --json runs/bench/accuracy_idrid.json``
once, and later runs include that file's rows, labelled with its date.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, load_avg, machine_info, versions  # noqa: E402

from gamma_kit.safety import atomic_write_text  # noqa: E402

BENCH = Path(__file__).resolve().parent


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def run_bench(script: str, args: list[str], raw_dir: Path, name: str, timeout: float,
              stamp: dict | None = None) -> dict:
    """Run ``bench/<script>`` with ``--json``; returns its result, or an error row. On success the
    result, with its wall ``seconds``, ``date`` and ``stamp`` (e.g. quick, budget), replaces
    ``raw_dir/<name>.json``; a failure leaves the last good file in place."""
    out = raw_dir / f"{name}.json"
    new = raw_dir / f"{name}.new.json"
    new.unlink(missing_ok=True)
    cmd = [sys.executable, str(BENCH / script), *args, "--json", str(new)]
    print(f"[run_all] {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        err = proc.stderr[-2000:] if proc.returncode else ""
    except subprocess.TimeoutExpired:
        err = f"timed out after {timeout:.0f} s"
    dt = time.perf_counter() - t0
    if new.is_file() and not err:
        res = json.loads(new.read_text())
        res.update(seconds=round(dt, 1), date=_now(), **(stamp or {}))
        atomic_write_text(out, json.dumps(res, indent=1, default=float))
        new.unlink()
        print(f"[run_all] {name}: {dt:.0f} s", flush=True)
        return res
    new.unlink(missing_ok=True)
    print(f"[run_all] {name} FAILED: {err}", flush=True)
    return {"rows": [{"measure": f"{name} (FAILED)", "original": "", "kit": "", "ratio": None, "target": "",
                      "met": None, "memory": "", "note": err.strip().splitlines()[-1] if err.strip() else "failed"}],
            "notes": [f"{name} failed: {err}"], "seconds": round(dt, 1), "failed": True}


def previous(raw_dir: Path, name: str, how: str) -> dict | None:
    """The rows of ``raw_dir/<name>.json`` from an earlier run, each note ending "from a separate
    run on <date> (<how>)"; None when there is no such file or it cannot be read."""
    path = raw_dir / f"{name}.json"
    if not path.is_file():
        return None
    try:
        res = json.loads(path.read_text())
        rows = res["rows"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"[run_all] {path}: not a benchmark result ({exc}); its rows are left out", flush=True)
        return None
    date = res.get("date") or time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(path.stat().st_mtime))
    label = f"from a separate run on {date}{' with --quick' if res.get('quick') else ''} ({how})"
    for r in rows:
        r["note"] = f"{r['note']}; {label}" if r.get("note") else label
    res["previous"] = True
    return res


def time_demo(work: Path, timeout: float) -> dict:
    """Wall seconds of ``python -m gamma_kit.demo`` (both tasks, defaults) in a fresh folder."""
    out = work / "demo_out"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "gamma_kit.demo", "--out", str(out)]
    print(f"[run_all] {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        ok, tail = proc.returncode == 0, (proc.stdout + proc.stderr)[-1500:]
    except subprocess.TimeoutExpired:
        ok, tail = False, f"timed out after {timeout:.0f} s"
    dt = time.perf_counter() - t0
    res = {}
    if (out / "results.json").is_file():
        res = json.loads((out / "results.json").read_text())
    print(f"[run_all] demo: {dt:.0f} s, ok={ok}", flush=True)
    return {"seconds": dt, "ok": ok, "tail": tail, "results": res}


def idrid_cv(run_dir: Path, models: dict | None) -> dict | None:
    """Rows for an IDRiD cross-validation run of the CPU config written by ``python -m gamma_kit.fovea cv``
    (fold*/metrics.json, or its last checkpoint set's state while a fold is running), with the original config's
    estimated cost for the same epochs."""
    from gamma_kit.fovea.run_dir import FoldFolder

    folds = {}
    for d in sorted(run_dir.glob("fold*")):
        f = d / "metrics.json"
        if f.is_file():
            m = json.loads(f.read_text())
            folds[d.name] = (m["best_aed"], len(m["history"]), m["n_train"],
                             sum(h["seconds"] for h in m["history"]) / max(1, len(m["history"])), True)
        elif FoldFolder(d).progress_state() is not None:
            m = FoldFolder(d).progress_state()
            folds[d.name] = (m["best_aed"], len(m["history"]), None,
                             sum(h["seconds"] for h in m["history"]) / max(1, len(m["history"])), False)
    if not folds:
        return None
    done = {k: v for k, v in folds.items() if v[4]}
    per = ", ".join(f"{k} {v[0]:.4f}{'' if v[4] else ' (running)'}" for k, v in folds.items())
    mean = sum(v[0] for v in done.values()) / len(done) if done else float("nan")
    epochs = max(v[1] for v in folds.values())
    sec = sum(v[3] for v in folds.values()) / len(folds)
    n_train = next((v[2] for v in done.values() if v[2]), 82)
    orig = ""
    if models and "raw" in models:
        est = models["raw"]["step_orig_per_image_s"] * n_train * epochs
        orig = (f"not trainable here: {epochs} epochs of {n_train} images at the measured/estimated "
                f"{models['raw']['step_orig_per_image_s']:.0f} s per image-step = ~{est / 3600:.0f} h per fold")
    rows = [{"measure": f"Accuracy, IDRiD 5-fold CV (103 images), CPU config, {epochs} epochs/fold",
             "original": orig, "kit": f"best val AED, mean of {len(done)} finished folds {mean:.4f}",
             "ratio": None, "target": "", "met": None, "memory": "",
             "note": f"per fold: {per}; ~{sec:.0f} s/epoch while the cores were shared; run {run_dir} "
                     "(python -m gamma_kit.fovea cv, the fovea helper's run)"}]
    return {"rows": rows, "notes": []}


def accuracy_budget(args) -> float:
    """Accuracy: training seconds per arm (``--budget``, else 120 s, 20 s with ``--quick``)."""
    return args.budget or (20.0 if args.quick else 120.0)


class Unavailable(Exception):
    """A part cannot run here (its data is absent); the message says why."""


@dataclass
class Context:
    """What the parts' job lists are built from: the parsed arguments and the folders."""
    args: argparse.Namespace
    work: Path
    raw: Path

    @property
    def q(self) -> list[str]:
        return ["--quick"] if self.args.quick else []

    @property
    def budget(self) -> float:
        return accuracy_budget(self.args)

    def synth(self, name: str, n_train: int, n_test: int, seed: int) -> Path:
        """``work/<name>``: a synthetic GAMMA-size set, generated the first time it is needed."""
        out = self.work / name
        if not (out / "synth_meta.csv").is_file():
            from gamma_kit.synth import generate

            t0 = time.perf_counter()
            generate(out, n_train, n_test, seed=seed, progress=False)
            print(f"[run_all] synthetic data {n_train}+{n_test} in {time.perf_counter() - t0:.0f} s -> {out}",
                  flush=True)
        return out

    @property
    def bench_data(self) -> Path:
        """The set of the dataset and models benchmarks (made by ``make_bench_data``)."""
        return self.work / "synth"

    def make_bench_data(self) -> Path:
        return self.synth(self.bench_data.name, *((15, 5) if self.args.quick else (40, 8)), seed=0)

    def idrid(self) -> Path:
        """The IDRiD folder (``--idrid``, else the benchmarks' default beside the repository)."""
        if self.args.idrid:
            return Path(self.args.idrid)
        from bench_disc_locate import DEFAULT

        return DEFAULT


@dataclass(frozen=True)
class Job:
    """One benchmark process: ``bench/<script> <args> --json <raw>/<key>.json``."""
    key: str
    script: str
    args: list[str]
    timeout_s: float = 1800
    prepare: Callable[[], object] | None = None     # run first (e.g. generate its data)


@dataclass(frozen=True)
class Part:
    """A named part of the run: its result keys (rows, in table order), what it measures, its
    default wall-time estimate (full, quick) in seconds on 2 cores, and its jobs. The defaults were measured
    on 2026-12-02 under the CPU lock while another job used one of the two cores (an idle machine is faster);
    heatmap/dataset/models/accuracy/demo from the 2026-11-22 full run."""
    keys: tuple[str, ...]
    what: str
    estimate_s: tuple[float, float]
    jobs: Callable[[Context], list[Job]]
    budget_scaled: bool = False      # the estimate scales with --budget (per 120 s full, 20 s quick)


def _fovea_epoch_jobs(ctx: Context) -> list[Job]:
    import bench_fovea_epoch

    n_images, epochs = (25, 2) if ctx.args.quick else (bench_fovea_epoch.N_IMAGES, 4)
    data = ctx.work / f"synth_epoch_{n_images}"
    return [Job("fovea_epoch", "bench_fovea_epoch.py",
                ["--data", str(data), "--epochs", str(epochs), "--md", str(ctx.raw / "fovea_epoch.md")], 3600,
                prepare=lambda: bench_fovea_epoch.ensure_data(None, n_images, data))]


def _disc_locate_jobs(ctx: Context) -> list[Job]:
    idrid = ctx.idrid()
    if not (idrid / "optic_disc_center_GT.csv").is_file():
        raise Unavailable(f"no IDRiD photos at {idrid} (optic_disc_center_GT.csv; give --idrid)")
    return [Job("disc_locate", "bench_disc_locate.py",
                ["--data", str(idrid), "--out", str(ctx.raw / "disc_locate.md"),
                 *(["--limit", "10"] if ctx.args.quick else [])])]


def _seg_two_stage_jobs(ctx: Context) -> list[Job]:
    quick = ctx.args.quick
    return [Job("seg_two_stage", "bench_seg_two_stage.py",
                ["--tta", *([] if quick else ["--original"]), "--repeat", "1" if quick else "3",
                 "--work", str(ctx.work / "seg_two_stage"), "--md", str(ctx.raw / "seg_two_stage.md")])]


def _predict_memory_jobs(ctx: Context) -> list[Job]:
    counts = "4,40" if ctx.args.quick else "20,500"
    return [Job("predict_memory", "bench_predict_memory.py",
                ["--counts", counts, "--md", str(ctx.raw / "predict_memory.md")], 3600)]


def _backends_jobs(ctx: Context) -> list[Job]:
    return [Job("backends", "bench_backends.py", ["--photos", "4" if ctx.args.quick else "20",
                                                  "--md", str(ctx.raw / "backends.md")], 3600)]


def _inference_jobs(ctx: Context) -> list[Job]:
    return [Job("inference", "bench_inference.py", ["--photos", "8" if ctx.args.quick else "40",
                                                    "--md", str(ctx.raw / "inference.md")], 3600)]


def _cores_jobs(ctx: Context) -> list[Job]:
    quick = ctx.args.quick
    return [Job("cores", "bench_cores.py", ["--epochs", "2" if quick else "4", "--iters", "20" if quick else "80",
                                            "--md", str(ctx.raw / "cores.md")], 3600)]


def _cv_folds_jobs(ctx: Context) -> list[Job]:
    return [Job("cv_folds", "bench_cv_folds.py", ["--epochs", "1" if ctx.args.quick else "3",
                                                  "--md", str(ctx.raw / "cv_folds.md")], 3600)]


def _synth_realism_jobs(ctx: Context) -> list[Job]:
    quick = ctx.args.quick
    return [Job("synth_realism", "bench_synth_realism.py",
                ["--n", "6" if quick else "40", "--idrid", str(ctx.idrid()), "--out", str(ctx.raw / "synth_realism.md"),
                 *(["--idrid-limit", "10"] if quick else [])])]


def _accuracy_jobs(ctx: Context) -> list[Job]:
    # a set of its own: one epoch of the original architecture (batch 10) must fit in minutes
    quick = ctx.args.quick
    acc = ctx.work / "synth_acc"
    make = lambda: ctx.synth("synth_acc", 12 if quick else 30, 6, seed=1)   # noqa: E731
    budget = ["--budget", str(ctx.budget)]
    arms = ["--arms", "cpu"] if quick else []
    return [Job("accuracy_synth", "bench_accuracy.py",
                ["--data", str(acc), *budget, "--work", str(ctx.work / "acc"), *arms,
                 "--cache-dir", str(ctx.work / "canon_cache")], 3600, prepare=make),
            Job("accuracy_seg", "bench_seg_accuracy.py",
                ["--data", str(acc), *budget, "--work", str(ctx.work / "segacc"), *arms], 3600, prepare=make)]


PARTS: dict[str, Part] = {
    "heatmap": Part(("heatmap",), "heatmap target and decode vs the original loops", (45, 15),
                    lambda ctx: [Job("heatmap", "bench_heatmap.py", ctx.q)]),
    "dataset": Part(("dataset",), "fovea training samples vs the original reader", (40, 20),
                    lambda ctx: [Job("dataset", "bench_dataset.py", ["--data", str(ctx.bench_data), *ctx.q],
                                     prepare=ctx.make_bench_data)]),
    "models": Part(("models",), "model sizes, forward, train step, ensemble, seg inference", (100, 40),
                   lambda ctx: [Job("models", "bench_models.py", ["--data", str(ctx.bench_data), *ctx.q], 3600,
                                    prepare=ctx.make_bench_data)]),
    "fovea_epoch": Part(("fovea_epoch",), "a whole CPU fovea epoch (train_fold) vs a plain loop", (270, 50),
                        _fovea_epoch_jobs),
    "disc_locate": Part(("disc_locate",), "stage 1 on the IDRiD photos vs the old detector", (40, 7),
                        _disc_locate_jobs),
    "seg_two_stage": Part(("seg_two_stage",), "seg inference per photo: two-stage vs whole image", (50, 15),
                          _seg_two_stage_jobs),
    "predict_memory": Part(("predict_memory",), "predict peak RSS, 20 vs 500 full-size photos, vs before streaming",
                           (820, 120), _predict_memory_jobs),
    "backends": Part(("backends",), "predict per photo and peak RSS: dynamic, Paddle Inference, onnxruntime",
                     (180, 60), _backends_jobs),
    "inference": Part(("inference",), "predict per full-size photo vs the kit of 7f35240, same answers", (60, 20),
                      _inference_jobs),
    "cores": Part(("cores",), "training with --procs 1 vs 2: time and cores busy, fovea and seg", (420, 150),
                  _cores_jobs),
    "cv_folds": Part(("cv_folds",), "fovea cv on 2 cores: one process, --procs 2, --parallel-folds", (560, 260),
                     _cv_folds_jobs),
    "synth_realism": Part(("synth_realism",), "synthetic disc region vs real photos, both renderers", (80, 10),
                          _synth_realism_jobs),
    "accuracy": Part(("accuracy_synth", "accuracy_seg"), "equal-budget accuracy arms (fovea, seg), synthetic",
                     (510, 70), _accuracy_jobs, budget_scaled=True),
}
ORDER = ["heatmap", "dataset", "models", "fovea_epoch", "disc_locate", "seg_two_stage", "predict_memory",
         "backends", "inference", "cores", "cv_folds", "synth_realism", "accuracy_synth", "accuracy_idrid", "accuracy_idrid_cv", "accuracy_seg"]   # table order of result keys
DEMO_ESTIMATE_S = 240.0
DURATIONS = "_durations.json"       # in --raw-dir: the last measured wall time of each part, per mode


def select_parts(only: str | None, skip: str | None) -> list[str]:
    """Part names to run, in ``PARTS`` order: ``only`` (comma list; default all) minus ``skip``.
    Raises ``ValueError`` naming an unknown part."""
    def names(text: str | None) -> list[str]:
        out = [n.strip() for n in (text or "").split(",") if n.strip()]
        bad = [n for n in out if n not in PARTS]
        if bad:
            raise ValueError(f"unknown part(s) {', '.join(bad)}; parts: {', '.join(PARTS)}")
        return out

    chosen, skipped = set(names(only) or PARTS), set(names(skip))
    return [n for n in PARTS if n in chosen and n not in skipped]


def _mode(args) -> str:
    return "quick" if args.quick else "full"


def estimate(name: str, args, durations: dict) -> tuple[float, str]:
    """Estimated wall seconds of part ``name`` and where the figure comes from."""
    rec = durations.get(name, {}).get(_mode(args))
    part = PARTS[name]
    budget = accuracy_budget(args)
    if rec:
        sec = rec["seconds"]
        if part.budget_scaled and rec.get("budget"):
            sec *= budget / rec["budget"]
        return sec, f"last {_mode(args)} run {rec['date']}"
    sec = part.estimate_s[1 if args.quick else 0]
    if part.budget_scaled:
        sec *= budget / (20.0 if args.quick else 120.0)
    return sec, "default estimate"


def _fmt_duration(sec: float) -> str:
    return f"{sec:.0f} s" if sec < 120 else f"{sec / 60:.1f} min"


def print_plan(names: list[str], args, durations: dict, demo: bool) -> float:
    """Print each part to run with its estimated wall time; returns the total (seconds)."""
    print("[run_all] plan (estimated wall time on 2 cores; longer while other jobs share them):", flush=True)
    total = 0.0
    for name in names:
        sec, src = estimate(name, args, durations)
        total += sec
        print(f"[run_all]   {name:14s} ~{_fmt_duration(sec):9s} ({src}): {PARTS[name].what}", flush=True)
    if demo:
        rec = durations.get("demo", {}).get("full")
        sec = rec["seconds"] if rec else DEMO_ESTIMATE_S
        total += sec
        print(f"[run_all]   {'demo':14s} ~{_fmt_duration(sec):9s} "
              f"({'last run ' + rec['date'] if rec else 'default estimate'}): python -m gamma_kit.demo", flush=True)
    kept = [n for n in PARTS if n not in names]
    if kept:
        print(f"[run_all]   not run (rows from their last raw JSON, if any): {', '.join(kept)}", flush=True)
    print(f"[run_all]   total ~{_fmt_duration(total)}", flush=True)
    return total


def load_durations(raw: Path) -> dict:
    try:
        return json.loads((raw / DURATIONS).read_text())
    except (OSError, ValueError):
        return {}


def record_duration(raw: Path, name: str, args, seconds: float) -> None:
    """Store a part's measured wall time (for the next plan's estimate)."""
    durations = load_durations(raw)
    rec = {"seconds": round(seconds, 1), "date": _now()}
    if name in PARTS and PARTS[name].budget_scaled:
        rec["budget"] = accuracy_budget(args)
    durations.setdefault(name, {})[_mode(args) if name != "demo" else "full"] = rec
    atomic_write_text(raw / DURATIONS, json.dumps(durations, indent=1))


def run_part(name: str, ctx: Context) -> dict[str, dict] | None:
    """Run part ``name``; its results by key, or None when it cannot run here (said why)."""
    try:
        jobs = PARTS[name].jobs(ctx)
    except Unavailable as exc:
        print(f"[run_all] {name} not run: {exc}", flush=True)
        return None
    t0 = time.perf_counter()
    out = {}
    stamp = {"quick": bool(ctx.args.quick)}
    if PARTS[name].budget_scaled:
        stamp["budget"] = ctx.budget
    for job in jobs:
        if job.prepare is not None:
            job.prepare()
        out[job.key] = run_bench(job.script, job.args, ctx.raw, job.key, job.timeout_s, stamp)
    if not any(r.get("failed") for r in out.values()):
        record_duration(ctx.raw, name, ctx.args, time.perf_counter() - t0)
    return out


def _fmt_ratio(r) -> str:
    if r is None:
        return ""
    return f"{r:,.0f}x" if r >= 100 else f"{r:.1f}x"


def _cell(text: str) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


def _gpu_line(gpus: list[str] | None) -> str:
    """The machine section's GPU line, from what Paddle saw (``common.machine_info``'s ``gpus``)."""
    if gpus is None:
        return "- GPU: not recorded by this run"
    if not gpus:
        return ("- GPU: **none** (Paddle saw no CUDA device): no GPU figures. The original configs are GPU recipes; "
                "on a GPU their forward passes take milliseconds and the CPU-side speed-ups here (decode, dataset) "
                "matter more.")
    return f"- GPU: {len(gpus)} seen by Paddle ({', '.join(sorted(set(gpus)))}); each row says its device"


def render(machine: dict, vers: dict, results: dict, demo: dict | None, args, seconds: float,
           load_end: tuple) -> str:
    """RESULTS.md text."""
    flags = "".join(f" --{k} {getattr(args, k)}" for k in ("only", "skip") if getattr(args, k, None))
    lines = ["# gamma_kit benchmarks", "",
             f"Written by `python bench/run_all.py{' --quick' if args.quick else ''}{' --demo' if args.demo else ''}"
             f"{flags}` on {_now()} in {seconds / 60:.1f} min. "
             "Each row times the kit and a faithful re-statement of the original method **in the same process and "
             "run**; *ratio* = original time / kit time (for parameters: original / kit count). Rows whose note "
             "ends \"from a separate run on <date>\" come from that run's raw JSON (a part not re-run this time, "
             "`--only` / `--skip`).", "",
             "## Machine", "",
             f"- CPU: {machine['cpu']}, {machine['cores']} usable cores (os.cpu_count {machine['cpu_count']}), "
             f"{machine['memory_gb']} GiB memory; {machine['os']}",
             f"- Threads: OMP_NUM_THREADS={machine['OMP_NUM_THREADS']}, KMP_BLOCKTIME={machine['KMP_BLOCKTIME']} "
             "(set by `import gamma_kit` before Paddle)",
             f"- Load average (1/5/15 min) at start {machine['load_avg']}, at end {[round(x, 2) for x in load_end]}: "
             "other jobs shared these cores during the run, so absolute times are inflated by roughly the load / "
             "cores; ratios measured in the same process are the robust figures.",
             "- Versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()),
             _gpu_line(machine.get("gpus")),
             "", "## Results", "",
             "| Measure | Original | Kit | Ratio | Target | Met | Peak memory | Notes |",
             "|---|---|---|---|---|---|---|---|"]
    order = ORDER + [k for k in results if k not in ORDER]
    for name in order:
        if name not in results:
            continue
        for r in results[name]["rows"]:
            met = "" if r.get("met") is None else ("yes" if r["met"] else "**no**")
            lines.append("| " + " | ".join(_cell(x) for x in (r["measure"], r["original"], r["kit"],
                                                                 _fmt_ratio(r.get("ratio")), r.get("target", ""),
                                                                 met, r.get("memory", ""), r.get("note", ""))) + " |")
    if demo is not None:
        ok = demo["ok"] and demo["seconds"] <= 300
        res = demo.get("results", {})
        extra = []
        if "fovea" in res:
            f = res["fovea"]
            base = res.get("baselines", {}).get("fovea_mean_position", {}).get("aed") or float("nan")
            extra.append(f"fovea test AED {f.get('aed') or float('nan'):.4f} (mean-position baseline {base:.4f})")
        if "seg" in res:
            g = res["seg"]
            extra.append(f"seg Dice disc {g.get('dice_disc') or float('nan'):.3f}, cup "
                         f"{g.get('dice_cup') or float('nan'):.3f}, vCDR MAE {g.get('vcdr_mae') or float('nan'):.3f}")
        if demo.get("from"):
            extra.append(demo["from"])
        lines.append(f"| Demo `python -m gamma_kit.demo` (both tasks, defaults) | | {demo['seconds']:.0f} s | | "
                     f"<= 300 s | {'yes' if ok else '**no**'} | | {'ran OK' if demo['ok'] else 'FAILED'}; "
                     f"{_cell('; '.join(extra))} |")
    else:
        lines.append("| Demo `python -m gamma_kit.demo` | | not timed in this run (`--demo`) | | <= 300 s | | | |")
    lines += ["", "## How each figure is measured", "",
              "- Memory: *tracemalloc* = peak Python/NumPy allocation inside the block; *RSS delta* = peak resident "
              "set size (psutil, sampled every 5 ms) minus the RSS before the block, for Paddle, whose allocator "
              "tracemalloc does not see (a delta near 0 means the block fit into memory the process already held).",
              "- Fovea CPU epoch: `bench/bench_fovea_epoch.py` on fold 1 of 100 synthetic GAMMA-size photos (80 train, "
              "20 val): `train_fold` as the CLI runs it (validation, checkpoints, logs) against a plain loop over the "
              "same model, optimiser and batches; first epoch of each arm a warm-up. Stage 1 "
              "(`bench/bench_disc_locate.py`) runs on the real IDRiD photos (`--idrid`; not run without them); "
              "synthetic realism (`bench/bench_synth_realism.py`) compares the first and the current renderer with "
              "them; the two-stage seg rows time models with random weights. Each writes its own Markdown "
              "next to the raw JSON.",
              "- Originals (`bench/originals.py`, `bench/bench_fovea_decode.py`) are per-pixel / per-window Python "
              "loops on purpose: they restate the original code. The kit has no such loops.",
              "- The original fovea config (87.9 M parameters, 608x400) cannot be trained on this CPU: its batch-10 "
              "train step is *estimated* (one measured forward x 10 x the train-step/forward ratio of the same "
              "architecture at 152x100) and its 5-fold ensemble is one measured forward x 5 plus measured overheads.",
              "- Accuracy rows compare arms on **equal wall-clock training budgets** at 1/4 scale (the full-scale "
              "original cannot run a single epoch in the budget), trained and scored by `gamma_kit.fovea` itself "
              "(train_fold / predict); segmentation arms likewise by `gamma_kit.seg` (train_from_config / predict_folder, "
              "per-image Dice and vCDR). Synthetic photos are cartoons: their AEDs check that the methods learn, not "
              "how they do on real eyes. Reference (SPEC 2): original on a GPU, GAMMA folds 1-5 ED 0.0082, 0.0071, "
              "0.0087, 0.0088, 0.0077; CPU config, 30 min/fold on GAMMA: 0.0089, 0.0065 (folds 1, 2)."]
    notes = list(dict.fromkeys(n for name in order if name in results for n in results[name].get("notes", [])))
    if notes:
        lines += ["", "## Notes from the benchmarks", ""] + [f"- {_cell(n)}" for n in notes]
    lines += ["", "## Per-benchmark wall time", "",
              ", ".join(f"{k} {v['seconds']} s{' (earlier run)' if v.get('previous') else ''}"
                        for k, v in results.items() if "seconds" in v) +
              (f", demo {demo['seconds']:.0f} s{' (earlier run)' if demo.get('from') else ''}" if demo else ""), ""]
    return "\n".join(lines)


def previous_demo(raw: Path) -> dict | None:
    """The demo timing of an earlier ``--demo`` run (``raw/demo.json``), labelled with its date."""
    try:
        demo = json.loads((raw / "demo.json").read_text())
        demo["from"] = f"from a separate run on {demo['date']} (--demo)"
        return demo
    except (OSError, ValueError, KeyError, TypeError):
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small counts; estimate the original forward")
    ap.add_argument("--demo", action="store_true", help="also time python -m gamma_kit.demo once")
    ap.add_argument("--work", default=None, help="work folder (synthetic data, runs); default temporary")
    ap.add_argument("--raw-dir", default=str(REPO / "runs" / "bench"), help="raw JSON per benchmark")
    ap.add_argument("--out", default=str(BENCH / "RESULTS.md"))
    ap.add_argument("--budget", type=float, default=None, help="accuracy: training seconds per arm")
    ap.add_argument("--idrid", default=None,
                    help="IDRiD folder for disc_locate and synth_realism (default ../shared/data/idrid_fovea)")
    ap.add_argument("--idrid-run", default=str(REPO / "runs" / "idrid_cv_cpu"),
                    help="an IDRiD CV run of the CPU config to report (python -m gamma_kit.fovea cv)")
    ap.add_argument("--only", default=None, metavar="NAME[,NAME]",
                    help=f"run only these parts ({', '.join(PARTS)}); the others keep their last rows")
    ap.add_argument("--skip", default=None, metavar="NAME[,NAME]", help="run all parts but these")
    ap.add_argument("--list", action="store_true", help="print the parts and their estimates; run nothing")
    args = ap.parse_args(argv)
    try:
        names = select_parts(args.only, args.skip)
    except ValueError as exc:
        ap.error(str(exc))
    raw = Path(args.raw_dir)
    durations = load_durations(raw)
    print_plan(names, args, durations, args.demo)
    if args.list:
        return 0
    t_start = time.perf_counter()
    machine, vers = machine_info(), versions()
    raw.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gk_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    ctx = Context(args, work, raw)

    results: dict[str, dict] = {}
    ran = set()
    for name in names:
        print(f"[run_all] == {name} (estimated ~{_fmt_duration(estimate(name, args, durations)[0])})", flush=True)
        out = run_part(name, ctx)
        if out is not None:
            results.update(out)
            ran.add(name)
    for name, part in PARTS.items():
        if name in ran:
            continue
        for key in part.keys:
            res = previous(raw, key, f"run_all.py --only {name}")
            if res is not None:
                results[key] = res
    idrid = previous(raw, "accuracy_idrid", "bench_accuracy.py --idrid")
    if idrid is not None:
        results["accuracy_idrid"] = idrid
    if args.idrid_run and Path(args.idrid_run).is_dir():
        cv = idrid_cv(Path(args.idrid_run), results.get("models"))
        if cv:
            results["accuracy_idrid_cv"] = cv
    if args.demo:
        demo = time_demo(work, 1800)
        if demo["ok"]:
            atomic_write_text(raw / "demo.json", json.dumps({**demo, "date": _now()}, indent=1))
            record_duration(raw, "demo", args, demo["seconds"])
    else:
        demo = previous_demo(raw)
    seconds = time.perf_counter() - t_start
    text = render(machine, vers, results, demo, args, seconds, load_avg())
    atomic_write_text(args.out, text)
    print(text)
    print(f"[run_all] wrote {args.out} in {seconds / 60:.1f} min")
    return 1 if any(r.get("failed") for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
