"""What this installation of gamma_kit runs on: ``python -m gamma_kit.doctor`` (``gamma-kit-doctor``).

One line per item, ``label: value``: Python, gamma_kit, Paddle (with the CUDA and cuDNN it was
built with, or "CPU build"), PaddleSeg (version and where it is imported from), the devices
Paddle sees and what ``--device auto`` takes, the thread settings in force (``OMP_NUM_THREADS``,
``KMP_BLOCKTIME``, cores), which ``gamma_kit.seg.compat`` patches apply (their probes run, about a
second), where the shipped configs live, and the optional extras (visualdl, paddle2onnx,
onnxruntime). Nothing it finds missing is an error: such a line says "not installed" (or
"error: ..." when a check itself fails), and the command still exits 0. Paste its output into
a bug report.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import sys
from pathlib import Path
from typing import Callable

import gamma_kit  # noqa: F401  (the thread settings the kit uses, before paddle)

__all__ = ["OPTIONAL_EXTRAS", "checks", "report", "main"]

#: Optional packages the kit uses when present: VisualDL logs (``--use-vdl``), ONNX export and runtime.
OPTIONAL_EXTRAS = ("visualdl", "paddle2onnx", "onnxruntime")
NOT_INSTALLED = "not installed"


def _where(module) -> str:
    return str(Path(module.__file__).resolve().parent)


def _python() -> str:
    return f"{platform.python_version()} ({sys.executable})"


def _gamma_kit() -> str:
    kind = "source checkout" if (Path(gamma_kit.__file__).resolve().parents[1] / "setup.py").is_file() \
        else "installed package"
    return f"{gamma_kit.__version__} from {_where(gamma_kit)} ({kind})"


def _paddle() -> str:
    import paddle

    if paddle.is_compiled_with_cuda():
        build = f"CUDA {paddle.version.cuda()}, cuDNN {paddle.version.cudnn()}"
    else:
        build = "CPU build"
    return f"{paddle.__version__} ({build}) from {_where(paddle)}"


def _paddleseg() -> str:
    import paddleseg

    return f"{paddleseg.__version__} from {_where(paddleseg)}"


def _devices() -> str:
    import paddle

    from gamma_kit.runtime import launcher_gpu_id

    seen = ["cpu"]
    n_gpu = paddle.device.cuda.device_count() if paddle.is_compiled_with_cuda() else 0
    for i in range(n_gpu):
        props = paddle.device.cuda.get_device_properties(i)
        seen.append(f"gpu:{i} {props.name} {props.total_memory / 2 ** 30:.0f} GiB")
    seen += [f"{kind} (custom)" for kind in paddle.device.get_all_custom_device_type()]
    auto = f"gpu:{launcher_gpu_id()}" if n_gpu else "cpu"
    return f"{', '.join(seen)}; --device auto takes {auto}"


def _threads() -> str:
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    env = ", ".join(f"{k}={os.environ.get(k, '(unset)')}" for k in ("OMP_NUM_THREADS", "KMP_BLOCKTIME"))
    return f"{env}; {cores} cores ({usable} usable by this process)"


def _compat() -> str:
    from gamma_kit.seg.compat import PATCHES, apply_compat

    applied = apply_compat()
    on = [n for n, a in applied.items() if a]
    off = [n for n, a in applied.items() if not a]
    text = f"{len(on)} of {len(PATCHES)} apply"
    if on:
        text += f" ({', '.join(on)})"
    if off:
        text += f"; not needed: {', '.join(off)}"
    return text


def _configs() -> str:
    from gamma_kit.resources import TASKS, configs_dir, shipped_configs

    counts = ", ".join(f"{len(shipped_configs(t))} {t}" for t in TASKS)
    return f"{configs_dir()} ({counts}; python -m gamma_kit.seg configs / gamma_kit.fovea configs list them)"


def _extras() -> str:
    found = []
    for name in OPTIONAL_EXTRAS:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} {NOT_INSTALLED}")
    return ", ".join(found)


def checks() -> list[tuple[str, Callable[[], str]]]:
    """(label, function giving the line's value), in the order printed."""
    return [("Python", _python), ("gamma_kit", _gamma_kit), ("Paddle", _paddle), ("PaddleSeg", _paddleseg),
            ("devices", _devices), ("threads", _threads), ("compat patches", _compat), ("configs", _configs),
            ("optional", _extras)]


def report() -> list[tuple[str, str]]:
    """(label, value) per line. A missing module gives "not installed", any other failure
    "error: <message>", so one broken piece never hides the others."""
    lines = []
    for label, check in checks():
        try:
            value = check()
        except ModuleNotFoundError as exc:
            value = f"{NOT_INSTALLED} ({exc.name.split('.')[0]})" if exc.name else NOT_INSTALLED
        except Exception as exc:  # noqa: BLE001  (a diagnosis tool reports every failure and goes on)
            value = f"error: {' '.join(str(exc).split()) or type(exc).__name__}"
        lines.append((label, value))
    return lines


def main(argv: list[str] | None = None) -> int:
    import argparse

    argparse.ArgumentParser(prog="python -m gamma_kit.doctor", description=__doc__.split("\n\n")[0]).parse_args(argv)
    rows = report()
    width = max(len(label) for label, _ in rows) + 1
    for label, value in rows:
        print(f"{label + ':':<{width}} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
