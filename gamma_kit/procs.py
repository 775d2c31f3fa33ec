"""Training processes on one machine, started by the kit (``--procs``) instead of
``paddle.distributed.launch``: how many (``local_processes``) and the start, the wait and the
errors (``spawn_local``). Both tasks use it: fovea ``train`` / ``cv`` and seg ``train``.

Why processes on a CPU: Paddle's CPU convolution (80 % of a training step, forward and backward)
loops over the samples of a batch one at a time, with matrix products too small for two threads
to share, so one process keeps about one core busy whatever ``OMP_NUM_THREADS`` says
(bench/bench_cores.py). Processes of one thread each, every one taking an equal share of each
global batch (gradients averaged over gloo), keep every core busy, ~1.5x faster on 2 cores.
BatchNorm statistics are per process, over its share of each batch: fewer samples there cost
accuracy. Both tasks default to ``auto`` (``DEFAULT_PROCS``): a CPU recipe's batch of 8 goes to 2
processes of 4 on 2 cores (seg: the BatchNorm batch of the one-process recipe before it; fovea: as
accurate as one process over 130 epochs on two IDRiD folds, docs/results.md); configs of batch 4
keep one process, and so does a GPU (one process per GPU). (BatchNorm synced over the processes was
tried: exact, but gloo's all-reduces at every layer, forward and backward, made a fovea epoch 9.7 s
against 6.3 s with BatchNorm per process and 11.0 s for one process.)
"""
from __future__ import annotations

import logging
import multiprocessing.connection
import os
import shutil
import signal
import tempfile
import time
import warnings
from typing import Any, Callable

__all__ = ["PROCS_ENV", "SYNC_ENV", "DEFAULT_PROCS", "MIN_RANK_BATCH", "local_processes",
           "rank_batch", "spawn_local", "RankFailed", "STOP_GRACE_S"]

#: the default of ``--procs`` where the user sets one (otherwise 1)
PROCS_ENV = "GAMMA_KIT_PROCS"
#: a folder that the processes of one spawn_local job share for waiting on each other (parallel.barrier)
SYNC_ENV = "GAMMA_KIT_SYNC_DIR"
#: ``--procs`` of fovea and seg training when neither the flag nor ``$GAMMA_KIT_PROCS`` says otherwise:
#: ``auto``, one process per core while each keeps ``MIN_RANK_BATCH`` samples of a batch (the CPU recipes'
#: batch 8: 2 processes of 4 on 2 cores; batch 4: 1; a GPU: 1). Fovea's CPU recipe as 2 processes of 4
#: trained two IDRiD folds of 130 epochs in 16.1-16.3 min each, last-epoch AED 0.0121 against 0.0133 for one
#: process of 8; seg's former batch-4 recipe as 2 processes of 2 lost 0.07 disc Dice (docs/results.md)
DEFAULT_PROCS = "auto"
#: ``--procs auto`` keeps at least this many samples of each global batch on every process (BatchNorm
#: statistics are per process): the CPU recipes (batch 8) get 2 processes on 2 cores, batch 4 gets 1
MIN_RANK_BATCH = 4
#: warnings no user can act on, in each spawned process: Paddle's import (before gamma_kit's filter,
#: gamma_kit/__init__) and fleet's communication groups, which name ranks that are not in them
_CHILD_WARNINGS = "ignore:No ccache found:UserWarning,ignore:Current global rank:UserWarning"


def local_processes(requested: str | int, device: str, batch_size: int, parallel_folds: bool = False,
                    cores: int | None = None, min_rank_batch: int = MIN_RANK_BATCH) -> int:
    """How many training processes to start on this machine for ``--procs requested``.

    Under ``paddle.distributed.launch`` the launcher has already started them: 1. ``auto``: on the
    CPU, as many as there are cores while every process keeps ``min_rank_batch`` samples of each
    global batch of ``batch_size`` (which they must divide; folds trained side by side need
    neither), so 2 on a 2-core machine for batch 8; on a GPU, 1 (``paddle.distributed.launch``
    gives one process per GPU). A number is taken as it is, if it divides the batch
    (ValueError naming both otherwise)."""
    from gamma_kit.runtime import launcher_world

    if launcher_world() > 1:
        return 1
    if requested == "auto":
        if not str(device).startswith("cpu"):
            return 1
        n = max(1, cores or os.cpu_count() or 1)
        if not parallel_folds:
            n = min(n, max(1, batch_size // min_rank_batch))
            while n > 1 and batch_size % n:
                n -= 1
        return n
    n = int(requested)
    if not parallel_folds:
        rank_batch(n, batch_size)
    return n


def rank_batch(processes: int, batch_size: int) -> int:
    """The samples each of ``processes`` takes from a global batch of ``batch_size``; ValueError
    naming both when they do not divide it."""
    if batch_size % processes:
        raise ValueError(f"--procs {processes} does not divide the batch size {batch_size}: each process takes an "
                         f"equal share of every batch (use a divisor of {batch_size}, or --batch-size)")
    return batch_size // processes


class RankFailed(RuntimeError):
    """A training process ended without a result (killed, or crashed in Paddle); the one line."""


def _rank_main(fn: Callable[..., Any], kwargs: dict) -> tuple[str, Any]:
    """What each spawned process runs: ``fn(**kwargs)``; an exception comes back as a value, so
    the parent raises the kit's own one-line error, not a traceback of the child. The process
    leaves the terminal's process group (Ctrl-C reaches the parent alone, which passes exactly one
    signal on) and asks Linux for SIGTERM when the parent dies (no orphan trains on)."""
    os.setpgrp()
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)    # Python's, not Paddle's C++ report of a "FatalError"
    logging.disable(logging.INFO)                # fleet's topology lines, one set per process
    import threading

    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())   # not a multiprocessing lock: a rank killed holding one "leaks" it
    from gamma_kit.runtime import PADDLE_FLAGS_BANNER, filtered_stderr

    try:
        with filtered_stderr(PADDLE_FLAGS_BANNER):
            return "ok", fn(**kwargs)
    except BaseException as exc:             # noqa: BLE001  (KeyboardInterrupt included: the parent decides)
        try:
            import pickle

            pickle.dumps(exc)
            return "error", exc
        except Exception:                    # noqa: BLE001  an exception that does not pickle: its text
            return "error", RuntimeError(f"{type(exc).__name__}: {exc}")


def _interrupt(signum, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _die_with_parent() -> None:
    """prctl(PR_SET_PDEATHSIG, SIGTERM) where Linux offers it; elsewhere nothing."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))
    except (OSError, AttributeError):
        pass


def spawn_local(fn: Callable[..., Any], kwargs: dict, processes: int) -> Any:
    """Run ``fn(**kwargs)`` in ``processes`` processes of this machine as one data-parallel job
    (``paddle.distributed.spawn``, gloo on the CPU), each with ``cores // processes`` threads, and
    return rank 0's result.

    A kit error in any process (bad input, a refused resume, a full disk) is raised here as the
    same exception, so the command prints its usual one line; when one process fails, the others
    are stopped (``_wait``: rank 0 by SIGTERM, which the trainer holds back until a checkpoint set
    being written is complete). The processes leave the terminal's process group, so Ctrl-C
    reaches this process alone, which passes one SIGINT on (SIGTERM likewise): each stops at the
    same step, and rank 0's ``safety.Interrupted`` (how to resume) is raised here."""
    import paddle.distributed as dist

    threads = max(1, (os.cpu_count() or 1) // processes)
    sync = tempfile.mkdtemp(prefix="gamma_kit_sync_")
    warn = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), _CHILD_WARNINGS]))
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), PROCS_ENV: "1", "PYTHONWARNINGS": warn,
           "GLOG_minloglevel": os.environ.get("GLOG_minloglevel", "1"),   # gloo's connection lines are INFO
           SYNC_ENV: sync}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with warnings.catch_warnings():     # "trained under CPUONLY mode by using GLOO": what was asked for
            warnings.simplefilter("ignore", UserWarning)
            logging.disable(logging.INFO)   # the free ports it found
            ctx = dist.spawn(_rank_main, args=(fn, kwargs), nprocs=processes, backend="gloo", join=False)
    finally:
        logging.disable(logging.NOTSET)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        results = _wait(ctx.processes, ctx.return_queues)
    finally:
        shutil.rmtree(sync, ignore_errors=True)       # the job's own marker files, nothing of the user's
    for q in ctx.return_queues + ctx.error_queues:
        q.close()
    del ctx             # its queues' semaphores go now, not at exit (where Python warns of "leaked" ones)
    errors = [v for r, (status, v) in sorted(results.items()) if status == "error"]
    from gamma_kit.safety import Interrupted

    stops = (KeyboardInterrupt, Interrupted)     # also what the others say when one failed and they were stopped
    kit_errors = [e for e in errors if not isinstance(e, (*stops, RankFailed))]
    if errors:          # the cause first (rank 0's names the run), then an interruption, then a lost process
        raise (kit_errors or [e for e in errors if isinstance(e, stops)] or errors)[0]
    return results[0][1]


#: after one process fails, rank 0 (the one that writes) gets SIGTERM and this long to stop before
#: SIGKILL; the others, which write nothing, SIGKILL at once (a process waiting on a collective of
#: the failed one cannot stop by itself; checkpoint sets survive a kill at any instant)
STOP_GRACE_S = 30.0


def _wait(procs: list, queues: list) -> dict[int, tuple[str, Any]]:
    """Wait for every process; collect (status, value) per rank. Ctrl-C / SIGTERM here are passed
    on to every process (each stops at its next step and rank 0 names the resume command). A
    process that fails, or ends without a result, stops the others."""
    results: dict[int, tuple[str, Any]] = {}
    kill_at: float | None = None

    def signal_all(sig: int, ranks: range | None = None) -> None:
        for r, p in enumerate(procs):
            if r not in results and p.is_alive() and (ranks is None or r in ranks):
                try:
                    os.kill(p.pid, sig)
                except OSError:
                    pass

    old_term = signal.getsignal(signal.SIGTERM)
    main = _in_main_thread()
    if main:
        signal.signal(signal.SIGTERM, lambda *_: signal_all(signal.SIGTERM))
    try:
        while len(results) < len(procs):
            try:
                alive = {p.sentinel: r for r, p in enumerate(procs) if r not in results}
                for sentinel in multiprocessing.connection.wait(list(alive), timeout=1.0):
                    rank = alive[sentinel]
                    procs[rank].join()
                    q = queues[rank]
                    results[rank] = q.get() if not q.empty() else \
                        ("error", RankFailed(_ended(rank, len(procs), procs[rank].exitcode)))
                    if results[rank][0] == "error" and kill_at is None:
                        kill_at = time.monotonic() + STOP_GRACE_S
                        signal_all(signal.SIGKILL, range(1, len(procs)))   # they write nothing
                        signal_all(signal.SIGTERM, range(0, 1))            # it may be writing a checkpoint set
                if kill_at is not None and time.monotonic() > kill_at:
                    signal_all(signal.SIGKILL)
            except KeyboardInterrupt:
                signal_all(signal.SIGINT)
    finally:
        if main:
            signal.signal(signal.SIGTERM, old_term)
    return results


def _ended(rank: int, n: int, code: int | None) -> str:
    how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit status {code}"
    return (f"training process {rank} of {n} ended with {how} before it finished; the run folder keeps its "
            "last complete checkpoint set (resume with --resume)")


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
