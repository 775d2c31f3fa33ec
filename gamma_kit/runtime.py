"""Process-level set-up: threads before ``import paddle``, Paddle's import noise, the device.

Paddle's CPU build uses one thread unless ``OMP_NUM_THREADS`` is set before it is
imported, and it loads two OpenMP runtimes (Intel libiomp5 and libgomp) that spin
against each other unless ``KMP_BLOCKTIME=0`` (SPEC 4: 4.6 s -> 1.4 s per small
U-Net step on 2 cores). ``configure_threads`` sets both, keeping any value the user
already exported. ``gamma_kit/__init__.py`` calls it, so importing ``gamma_kit``
before ``paddle`` is enough. ``resolve_device`` / ``select_device`` turn ``--device
auto|cpu|gpu`` into Paddle's device, one GPU per rank under ``paddle.distributed.launch``.

The CLI harness (one-line errors, signals, argument types) is ``gamma_kit.cli``; the Paddle
Inference engine for exported models is ``gamma_kit.engine``.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

__all__ = ["configure_threads", "quiet_paddle_import", "select_device", "resolve_device", "launcher_gpu_id",
           "launcher_rank", "launcher_world", "DEVICE_CHOICES", "filtered_stderr", "PADDLE_FLAGS_BANNER"]

DEVICE_CHOICES = ("auto", "cpu", "gpu")


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
#: Paddle's collective set-up (init_parallel_env, fleet.init) prints its non-default flags on stderr as a
#: banner of these lines: not for the user
PADDLE_FLAGS_BANNER = ("=======================", "FLAGS(name=")
#: Paddle 3 warns on every BatchNorm forward in train mode; the behaviour is the intended one, so the
#: kit's training loops (fovea and seg) filter it
PADDLE_BATCHNORM_NOTICE = "When training, we now always track global mean"


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


@contextlib.contextmanager
def filtered_stderr(prefixes: tuple[str, ...]) -> Iterator[None]:
    """Within the block, Python-level stderr lines starting with one of ``prefixes`` are dropped."""
    saved, filt = sys.stderr, _LineFilter(sys.stderr, prefixes)
    sys.stderr = filt
    try:
        yield
    finally:
        filt.close()
        if sys.stderr is filt:
            sys.stderr = saved


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
                with filtered_stderr(PADDLE_IMPORT_NOISE):
                    exec_module(module)

        spec.loader = _Loader()
        return spec


def quiet_paddle_import() -> None:
    """Drop Paddle's OMP_NUM_THREADS import warning (``PADDLE_IMPORT_NOISE``) from stderr: installs
    a one-shot import hook, unless Paddle is already imported."""
    if "paddle" not in sys.modules and not any(isinstance(f, _QuietPaddleImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietPaddleImport())


def launcher_rank() -> int:
    """This process's rank under ``paddle.distributed.launch`` (``PADDLE_TRAINER_ID``), before any
    collective set-up; 0 outside the launcher. Rank 0 alone takes a run folder's lock."""
    rank = os.environ.get("PADDLE_TRAINER_ID", "").strip()
    return int(rank) if rank.isdigit() else 0


def launcher_world() -> int:
    """Processes of this job as ``paddle.distributed.launch`` (or ``procs.spawn_local``) sets them
    (``PADDLE_TRAINERS_NUM``); 1 outside a launcher."""
    return max(1, int(os.environ.get("PADDLE_TRAINERS_NUM", "1") or 1))


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
