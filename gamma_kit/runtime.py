"""Process-level set-up that must happen before ``import paddle``.

Paddle's CPU build uses one thread unless ``OMP_NUM_THREADS`` is set before it is
imported, and it loads two OpenMP runtimes (Intel libiomp5 and libgomp) that spin
against each other unless ``KMP_BLOCKTIME=0`` (SPEC 4: 4.6 s -> 1.4 s per small
U-Net step on 2 cores). ``configure_threads`` sets both, keeping any value the user
already exported. ``gamma_kit/__init__.py`` calls it, so importing ``gamma_kit``
before ``paddle`` is enough.
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

__all__ = ["configure_threads", "select_device", "resolve_device", "launcher_gpu_id", "DEVICE_CHOICES", "run_cli",
           "USER_ERRORS", "positive_int", "positive_float", "parse_int_list", "ArgumentValueError", "describe_error"]

#: What bad user input raises in the kit (a missing file, a bad value): the CLIs print
#: these as one line and exit 2, anything else keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError)

DEVICE_CHOICES = ("auto", "cpu", "gpu")


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


#: Paddle prints these two lines on stderr at import whenever OMP_NUM_THREADS > 1, which the kit
#: sets on purpose (configure_threads): noise before every message of every command.
PADDLE_IMPORT_NOISE = ("WARNING: OMP_NUM_THREADS set to", "PLEASE USE OMP_NUM_THREADS WISELY.")


class _LineFilter:
    """A stderr stand-in that drops whole lines starting with one of ``prefixes`` and passes
    everything else on to ``target`` (line by line; the rest is flushed on ``close``)."""

    def __init__(self, target, prefixes: tuple[str, ...]) -> None:
        self.target, self.prefixes, self._buf = target, prefixes, ""

    def write(self, text: str) -> int:
        self._buf += text
        *lines, self._buf = self._buf.split("\n")
        for line in lines:
            if not line.startswith(self.prefixes):
                self.target.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def close(self) -> None:
        if self._buf and not self._buf.startswith(self.prefixes):
            self.target.write(self._buf)
        self._buf = ""


class _QuietPaddleImport:
    """Meta-path finder: the first ``import paddle`` runs with ``PADDLE_IMPORT_NOISE`` filtered
    out of (Python-level) stderr; then it removes itself. Everything else Paddle prints passes."""

    def find_spec(self, name, path=None, target=None):
        if name != "paddle":
            return None
        import importlib.util

        sys.meta_path[:] = [f for f in sys.meta_path if f is not self]
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader, exec_module = spec.loader, spec.loader.exec_module

        class _Loader:
            def __getattr__(self, attr):      # get_resource_reader, is_package, ...: the real loader's
                return getattr(loader, attr)

            def create_module(self, spec):
                return loader.create_module(spec)

            def exec_module(self, module):
                saved, filt = sys.stderr, _LineFilter(sys.stderr, PADDLE_IMPORT_NOISE)
                sys.stderr = filt
                try:
                    exec_module(module)
                finally:
                    filt.close()
                    if sys.stderr is filt:
                        sys.stderr = saved

        spec.loader = _Loader()
        return spec


def quiet_paddle_import() -> None:
    """Drop Paddle's OMP_NUM_THREADS import warning (``PADDLE_IMPORT_NOISE``) from stderr: installs
    a one-shot import hook, unless Paddle is already imported."""
    if "paddle" not in sys.modules and not any(isinstance(f, _QuietPaddleImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietPaddleImport())


def launcher_gpu_id() -> int:
    """The GPU that ``paddle.distributed.launch`` gave this process (``FLAGS_selected_gpus``,
    as ``paddle.distributed.ParallelEnv().device_id`` reads it); 0 outside the launcher."""
    ids = os.environ.get("FLAGS_selected_gpus", "").split(",")[0].strip()
    if not ids:
        return 0
    if not ids.isdigit():
        raise ValueError(f"FLAGS_selected_gpus={os.environ['FLAGS_selected_gpus']!r}: expected GPU numbers "
                         "such as 0,1 (paddle.distributed.launch sets it)")
    return int(ids)


def resolve_device(device: str = "auto") -> str:
    """The Paddle device ``device`` names, without setting it: ``auto`` is the GPU when Paddle
    was built with CUDA and sees one, else the CPU; ``gpu`` without a GPU raises ``ValueError``.
    Under ``paddle.distributed.launch`` each process gets its own GPU (``launcher_gpu_id``).

    Returns ``"cpu"`` or ``"gpu:<k>"``.
    """
    if device not in DEVICE_CHOICES:
        raise ValueError(f"device must be one of {DEVICE_CHOICES}, got {device!r}")
    import paddle

    has_gpu = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if device == "gpu" and not has_gpu:
        raise ValueError("--device gpu was asked for, but this Paddle build sees no CUDA GPU "
                         "(install paddlepaddle-gpu, or use --device cpu / auto)")
    return f"gpu:{launcher_gpu_id()}" if (device == "gpu" or (device == "auto" and has_gpu)) else "cpu"


def select_device(device: str = "auto") -> str:
    """Set Paddle's global device to ``resolve_device(device)`` (several ranks under
    ``paddle.distributed.launch`` never share ``gpu:0``) and return it (``"cpu"`` or ``"gpu:<k>"``)."""
    import paddle

    chosen = resolve_device(device)
    paddle.set_device(chosen)
    return chosen


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


class InferenceModel:
    """A static model run by ``paddle.inference``, shared by the fovea and segmentation exports.

    ``model`` is the graph file (``.pdmodel``, the legacy program format, or ``.json``, Paddle 3's
    PIR format) or the common prefix of the files (``PREFIX.json`` or ``PREFIX.pdmodel`` +
    ``PREFIX.pdiparams``; the PIR graph is taken when both exist). ``params`` defaults to the
    graph's ``.pdiparams`` sibling.

    ``device``: ``auto`` / ``cpu`` / ``gpu`` (as ``resolve_device``, which leaves Paddle's global
    device alone) or ``gpu:<k>``. On the CPU oneDNN is disabled: Paddle 3.3.1's CPU inference
    raises NotImplementedError with it on PIR graphs (SPEC 4). ``run(x, output)`` feeds the first
    input and returns output number ``output`` as NumPy. A missing, empty or unloadable file is a
    one-line error naming it.
    """

    GRAPH_SUFFIXES = (".json", ".pdmodel")

    def __init__(self, model: "str | os.PathLike", device: str = "cpu", cpu_threads: int | None = None,
                 params: "str | os.PathLike | None" = None):
        from pathlib import Path

        import paddle.inference as paddle_infer

        model = Path(model)
        if model.suffix in self.GRAPH_SUFFIXES:
            graph = model if model.is_file() else None
            stem = model.with_suffix("")
        else:
            stem = model
            graph = next((model.with_name(model.name + s) for s in self.GRAPH_SUFFIXES
                          if model.with_name(model.name + s).is_file()), None)
        params = Path(params) if params is not None else stem.with_name(stem.name + ".pdiparams")
        if graph is None or not params.is_file():
            what = model.name if model.suffix in self.GRAPH_SUFFIXES else f"{stem.name}.json or .pdmodel"
            raise FileNotFoundError(f"{stem.parent}: no exported model ({what}, plus {params.name})")
        for f in (graph, params):
            if f.stat().st_size == 0:
                raise ValueError(f"{f}: empty file (0 bytes; an interrupted export?): export again")
        if not device.startswith("gpu:"):
            device = resolve_device(device)
        config = paddle_infer.Config(str(graph), str(params))
        if device.startswith("gpu"):
            config.enable_use_gpu(256, int(device.split(":")[1]))
        else:
            config.disable_gpu()
            config.disable_mkldnn()
            config.set_cpu_math_library_num_threads(cpu_threads or int(os.environ.get("OMP_NUM_THREADS", "1")))
        config.disable_glog_info()
        try:
            self.predictor = paddle_infer.create_predictor(config)
        except Exception as exc:  # paddle raises RuntimeError/ValueError/OSError for broken files
            raise ValueError(f"{graph} / {params.name}: cannot be loaded as an exported model (truncated or "
                             f"corrupt: {type(exc).__name__})") from None
        self.graph = graph
        self.device = device

    def run(self, x, output: int = 0):
        """(N, ...) float32 input -> output number ``output`` of the graph as a NumPy array."""
        import numpy as np

        x = np.ascontiguousarray(x, dtype=np.float32)
        handle = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        handle.reshape(list(x.shape))
        handle.copy_from_cpu(x)
        try:
            self.predictor.run()
        except Exception as exc:  # a graph that loads but does not run (another model's params)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ValueError(f"{self.graph}: the exported model failed to run ({type(exc).__name__}: "
                             f"{first[:200]})") from None
        names = self.predictor.get_output_names()
        if not 0 <= output < len(names):
            raise ValueError(f"{self.graph}: has {len(names)} output(s), output {output} was asked for "
                             "(an export of another kind?)")
        return self.predictor.get_output_handle(names[output]).copy_to_cpu()
