"""Process-level set-up that must happen before ``import paddle``.

Paddle's CPU build uses one thread unless ``OMP_NUM_THREADS`` is set before it is
imported, and it loads two OpenMP runtimes (Intel libiomp5 and libgomp) that spin
against each other unless ``KMP_BLOCKTIME=0`` (SPEC 4: 4.6 s -> 1.4 s per small
U-Net step on 2 cores). ``configure_threads`` sets both, keeping any value the user
already exported. ``gamma_kit/__init__.py`` calls it, so importing ``gamma_kit``
before ``paddle`` is enough.
"""
from __future__ import annotations

import os
import sys
from typing import Callable

__all__ = ["configure_threads", "select_device", "run_cli", "USER_ERRORS", "positive_int", "positive_float"]

#: What bad user input raises in the kit (a missing file, a bad value): the CLIs print
#: these as one line and exit 2, anything else keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError)

DEVICE_CHOICES = ("auto", "cpu", "gpu")


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (iterations, epochs, batch sizes), with a clear message."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (learning rates, budgets)."""
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def configure_threads(num_threads: int | None = None) -> int:
    """Set OpenMP thread variables for Paddle unless the user already set them.

    Returns the thread count in force. Has no effect on the running process if
    Paddle was already imported (a warning is printed in that case).
    """
    n = num_threads or os.cpu_count() or 1
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    os.environ.setdefault("KMP_BLOCKTIME", "0")
    os.environ.setdefault("MKL_NUM_THREADS", os.environ["OMP_NUM_THREADS"])
    if "paddle" in sys.modules and num_threads is not None:
        print("gamma_kit: paddle was imported before gamma_kit; thread settings may not apply",
              file=sys.stderr)
    return int(os.environ["OMP_NUM_THREADS"])


def select_device(device: str = "auto") -> str:
    """Select the Paddle device: ``auto`` takes the GPU when Paddle was built with
    CUDA and sees one, else the CPU. ``gpu`` without a GPU raises ``ValueError``.

    Returns the device string that was set (``"cpu"`` or ``"gpu:0"``).
    """
    if device not in DEVICE_CHOICES:
        raise ValueError(f"device must be one of {DEVICE_CHOICES}, got {device!r}")
    import paddle

    has_gpu = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if device == "gpu" and not has_gpu:
        raise ValueError("--device gpu was asked for, but this Paddle build sees no CUDA GPU "
                         "(install paddlepaddle-gpu, or use --device cpu / auto)")
    chosen = "gpu:0" if (device == "gpu" or (device == "auto" and has_gpu)) else "cpu"
    paddle.set_device(chosen)
    return chosen


def run_cli(call: Callable[[], object]) -> int:
    """Run a CLI body and return its exit status: what it returns if that is an int, else 0;
    2 after printing a user error (``USER_ERRORS``) as one ``error: ...`` line on stderr;
    130 after an interruption (``safety.Interrupted`` carries the line to print, e.g. how to resume)."""
    from gamma_kit.safety import Interrupted

    try:
        code = call()
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C); nothing half-written was left behind", file=sys.stderr)
        return 130
    return code if isinstance(code, int) and not isinstance(code, bool) else 0
