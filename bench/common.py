"""Shared helpers of the gamma_kit benchmarks: machine description, timers, peak memory.

Every ``bench/bench_*.py`` script prints and (with ``--json FILE``) writes a dict
``{"rows": [row, ...], "notes": [...]}``; a row is one line of the RESULTS.md table:
``{"measure", "original", "kit", "ratio", "target", "met", "memory", "note"}``
(original/kit are human-readable strings with units; ratio = original / kit time).
bench/run_all.py stores each result in its raw folder with ``seconds`` (wall time of the
process), ``date`` and ``quick`` added, and shows the rows of one not re-run from there.

Memory: ``numpy_peak`` uses tracemalloc (bytes allocated by Python/NumPy inside the
block); ``RssPeak`` samples the process RSS every few milliseconds with psutil and
reports peak minus the RSS at the start (for Paddle, whose allocations tracemalloc
does not see).
"""
from __future__ import annotations

import json
import os
import platform
import sys
import threading
import time
import tracemalloc
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import gamma_kit  # noqa: E402,F401  (thread settings before paddle)

__all__ = ["REPO", "machine_info", "versions", "time_call", "RssPeak", "numpy_peak", "fmt_s", "fmt_mb",
           "row", "emit", "publish", "load_avg"]


def load_avg() -> tuple[float, float, float]:
    """1/5/15-minute load averages (other processes competing for the cores)."""
    try:
        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def machine_info() -> dict:
    """CPU model, logical cores usable by this process, memory, OS, thread settings."""
    import psutil

    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu": model, "cores": usable, "cpu_count": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2 ** 30, 1),
            "os": platform.platform(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "KMP_BLOCKTIME": os.environ.get("KMP_BLOCKTIME"), "load_avg": [round(x, 2) for x in load_avg()],
            "gpus": gpu_names()}


def gpu_names() -> list[str]:
    """Names of the CUDA GPUs this Paddle build sees (empty on a CPU build or without a GPU)."""
    import paddle

    if not paddle.device.is_compiled_with_cuda():
        return []
    return [paddle.device.cuda.get_device_name(k) for k in range(paddle.device.cuda.device_count())]


def versions() -> dict:
    """Versions of the interpreter and the libraries the kit runs on."""
    import cv2
    import numpy as np

    out = {"python": platform.python_version(), "numpy": np.__version__, "opencv": cv2.__version__}
    for name in ("paddle", "paddleseg", "pandas", "scipy"):
        try:
            mod = __import__(name)
            out[name] = getattr(mod, "__version__", "?")
        except Exception as exc:  # a missing optional library is reported, not fatal
            out[name] = f"unavailable ({type(exc).__name__})"
    return out


def time_call(fn: Callable[[], object], repeat: int = 3, warmup: int = 1) -> dict:
    """Wall and CPU seconds of ``fn()``: median and min over ``repeat`` runs after ``warmup``."""
    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    walls.sort()
    return {"median": walls[len(walls) // 2], "min": walls[0], "cpu": sorted(cpus)[len(cpus) // 2],
            "n": repeat}


class RssPeak:
    """Context manager: ``.peak_mb`` = max sampled RSS minus the RSS on entry (MiB)."""

    def __init__(self, interval: float = 0.005) -> None:
        import psutil

        self._proc = psutil.Process()
        self.interval = interval
        self.base = self.peak = 0
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssPeak":
        self.base = self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def peak_mb(self) -> float:
        return (self.peak - self.base) / 2 ** 20


@contextmanager
def numpy_peak():
    """Yields a dict whose ``"mb"`` is the tracemalloc peak (MiB) of the block."""
    out = {"mb": float("nan")}
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        yield out
    finally:
        out["mb"] = tracemalloc.get_traced_memory()[1] / 2 ** 20
        tracemalloc.stop()


def fmt_s(seconds: float) -> str:
    """Seconds with a unit that keeps 2-3 significant digits."""
    if seconds != seconds:
        return "n/a"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def fmt_mb(mb: float, how: str) -> str:
    return f"{mb:.0f} MiB ({how})" if mb >= 10 else f"{mb:.1f} MiB ({how})"


def row(measure: str, original: str, kit: str, ratio: float | None = None, target: str = "",
        met: bool | None = None, memory: str = "", note: str = "") -> dict:
    """One table row (see the module docstring)."""
    return {"measure": measure, "original": original, "kit": kit,
            "ratio": None if ratio is None else float(ratio), "target": target, "met": met,
            "memory": memory, "note": note}


def emit(result: dict, json_path: str | None) -> None:
    """Print ``result`` and write it to ``json_path`` (atomically) when given."""
    from gamma_kit.safety import atomic_write_text

    text = json.dumps(result, indent=1, default=float)
    print(text)
    if json_path:
        atomic_write_text(json_path, text)


def publish(md: str, md_path: str | None, result: dict, json_path: str | None) -> None:
    """A benchmark's end: print its Markdown ``md`` and write it to ``md_path`` (atomically) when given,
    then ``emit`` its ``result``."""
    from gamma_kit.safety import atomic_write_text

    print(md)
    if md_path:
        atomic_write_text(md_path, md)
    emit(result, json_path)
