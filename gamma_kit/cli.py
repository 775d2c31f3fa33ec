"""The harness every command line shares: one-line errors, Ctrl-C / SIGTERM, argument types.

``run_cli(call)`` runs a CLI body: a user error or an ``OSError`` prints one ``error: ...`` line
naming the path and the side it was on (``describe_error``) and exits 2; an interrupt prints one
line (with the resume command where the body gives one, ``safety.Interrupted``) and exits 130.
``positive_int``, ``positive_float`` and ``parse_int_list`` are argparse types with clear messages.
"""
from __future__ import annotations

import argparse
import contextlib
import errno as _errno
import os
import signal
import sys
import threading
import warnings
from typing import Callable, Iterator

__all__ = ["run_cli", "USER_ERRORS", "positive_int", "positive_float", "procs_count", "parse_int_list",
           "ArgumentValueError", "describe_error"]

#: What bad user input raises in the kit (a missing file, a bad value): the CLIs print
#: these as one line and exit 2, anything else keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError)


class ArgumentValueError(ValueError, argparse.ArgumentTypeError):
    """A bad command-line value: argparse prints its message (as a type= function) and so
    does ``run_cli`` (it is a ``ValueError``)."""


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (iterations, epochs, batch sizes), with a clear message."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def procs_count(text: str) -> str | int:
    """argparse type of ``--procs``: ``auto`` or a whole number >= 1."""
    return "auto" if str(text).strip().lower() == "auto" else positive_int(text)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (learning rates, budgets)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def parse_int_list(text: str, what: str = "list", low: int | None = None, high: int | None = None,
                   unique: bool = True) -> list[int]:
    """Parse ``"1,3,5"`` into ``[1, 3, 5]`` (spaces allowed); ``what`` names the option in the
    message (e.g. ``"--folds"``), ``low``/``high`` bound each value (inclusive), and with
    ``unique`` a repeated value is refused. Raises ``ArgumentValueError`` (a ``ValueError``
    that argparse also understands), e.g. ``--folds: 'x' is not a whole number (expected
    comma-separated whole numbers such as 1,2,3; got '1,x')``.
    """
    expected = f"expected comma-separated whole numbers such as 1,2,3; got {text!r}"
    parts = [p.strip() for p in str(text).split(",")]
    if not str(text).strip():
        raise ArgumentValueError(f"{what}: empty ({expected})")
    values = []
    for p in parts:
        try:
            values.append(int(p))
        except ValueError:
            raise ArgumentValueError(f"{what}: {p!r} is not a whole number ({expected})") from None
    for v in values:
        if (low is not None and v < low) or (high is not None and v > high):
            rng = f"{low}..{high}" if low is not None and high is not None else \
                (f">= {low}" if low is not None else f"<= {high}")
            raise ArgumentValueError(f"{what}: {v} is out of range (each value must be {rng}; got {text!r})")
    if unique and len(set(values)) != len(values):
        dup = sorted({v for v in values if values.count(v) > 1})
        raise ArgumentValueError(f"{what}: {dup} given more than once (got {text!r})")
    return values


# strerror already says "Read-only file system" / "Permission denied"; these two need a plain word
_ERRNO_HINTS = {_errno.ENOSPC: "the disk is full", _errno.EDQUOT: "the disk quota is used up"}
#: errnos that only writing gives: the file named is an output, whoever raised the error
_WRITE_ERRNOS = {_errno.ENOSPC, _errno.EDQUOT, _errno.EROFS, _errno.EFBIG}


def describe_error(exc: BaseException) -> str:
    """One line for the user: an ``OSError`` as ``input PATH: reason`` or ``output PATH: reason``,
    others as their message.

    The side is the error's ``side`` attribute (``safety.with_path`` sets it: the kit's writers
    mark outputs, ``data.reading`` marks inputs), else ``output`` for errors only writing gives
    (full disk, quota, read-only file system); a path that is a command-line option
    (``--out DIR``) already says which side it is on.
    """
    if isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
        path = exc.filename if exc.filename is not None else None
        hint = _ERRNO_HINTS.get(exc.errno)
        reason = exc.strerror + (f" ({hint})" if hint else "")
        side = getattr(exc, "side", None) or ("output" if exc.errno in _WRITE_ERRNOS else None)
        if path is None:
            text = reason
        elif side and not os.fspath(path).startswith("-"):
            text = f"{side} {os.fspath(path)}: {reason}"
        else:
            text = f"{path}: {reason}"
    else:
        text = str(exc) or type(exc).__name__
        if isinstance(exc, OSError) and getattr(exc, "side", None):
            text = f"{exc.side} {text}"
    return " ".join(text.split())   # one line, even when a library put newlines in its message


@contextlib.contextmanager
def _cli_signals_and_warnings() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C (``KeyboardInterrupt``), and the kit's ``DataWarning``s
    print as one ``warning: ...`` line, for the duration of a CLI call."""
    from gamma_kit.data import DataWarning

    old_show = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DataWarning):
            print(f"warning: {' '.join(str(message).split())}", file=sys.stderr)
        else:
            old_show(message, category, filename, lineno, file, line)

    def on_term(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    main = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, on_term) if main else None
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = old_show
        if main:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if old_term is None else old_term)


def run_cli(call: Callable[[], object]) -> int:
    """Run a CLI body and return its exit status: what it returns if that is an int, else 0.

    - a user error (``USER_ERRORS``) or any ``OSError`` (full disk, read-only folder,
      permission denied): one ``error: ...`` line on stderr naming the path, status 2;
    - ``safety.Interrupted``: its message (e.g. how to resume) as one line, status 130;
    - Ctrl-C or SIGTERM (``KeyboardInterrupt``): one line, status 130.

    Anything else is a bug and keeps its traceback.
    """
    from gamma_kit.safety import Interrupted

    try:
        with _cli_signals_and_warnings():
            code = call()
    except (*USER_ERRORS, OSError) as exc:
        print(f"error: {describe_error(exc)}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        text = describe_error(exc)
        print(text if text.lower().startswith("interrupted") else f"interrupted: {text}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C or SIGTERM)", file=sys.stderr)
        return 130
    return code if isinstance(code, int) and not isinstance(code, bool) else 0
