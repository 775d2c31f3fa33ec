"""Several processes of one fovea training, under ``paddle.distributed.launch`` (GPUs, machines) or
started by the kit on one machine (``gamma_kit.procs.spawn_local``, ``--procs``): the world size,
Paddle's collective set-up, and the few reductions the trainer and cross-validation need.

Outside the launcher every function is a no-op on one process (rank 0 of a world of 1), so the
trainer calls them unconditionally. The device of each rank is chosen by
``gamma_kit.runtime.select_device`` (rank-aware through ``FLAGS_selected_gpus``). Collectives run
on NCCL on GPUs and gloo on the CPU; both are tested with 2 CPU processes only.
"""
from __future__ import annotations

__all__ = ["world_size", "init_parallel", "rank_and_world", "mean_over_ranks", "sum_over_ranks", "any_over_ranks",
           "broadcast_buffers", "barrier"]


def world_size() -> int:
    """Processes of this job as ``paddle.distributed.launch`` sets them (1 outside the launcher)."""
    from gamma_kit.runtime import launcher_world

    return launcher_world()


def init_parallel() -> tuple[int, int]:
    """(rank, world size); initialises Paddle's collective environment once under the launcher
    (NCCL on GPUs, gloo on the CPU)."""
    world = world_size()
    if world == 1:
        return 0, 1
    import paddle.distributed as dist

    if not dist.is_initialized():
        from gamma_kit.runtime import PADDLE_FLAGS_BANNER, filtered_stderr

        with filtered_stderr(PADDLE_FLAGS_BANNER):
            dist.init_parallel_env()
    return dist.get_rank(), dist.get_world_size()


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of an initialised collective environment; (0, 1) without one."""
    if world_size() == 1:
        return 0, 1
    import paddle.distributed as dist

    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def sum_over_ranks(value: float, world: int) -> float:
    """The sum of ``value`` over the ``world`` ranks (float64 all-reduce; ``value`` itself on one rank)."""
    if world == 1:
        return value
    import paddle
    import paddle.distributed as dist

    t = paddle.to_tensor([value], dtype="float64")
    dist.all_reduce(t)
    return float(t.numpy()[0])


def mean_over_ranks(value: float, world: int) -> float:
    """The mean of ``value`` over the ``world`` ranks (``value`` itself on one rank)."""
    return value if world == 1 else sum_over_ranks(value, world) / world


def any_over_ranks(flag: bool, world: int) -> bool:
    """True when ``flag`` is true on any of the ``world`` ranks (``flag`` itself on one rank)."""
    if world == 1:
        return bool(flag)
    import paddle
    import paddle.distributed as dist

    t = paddle.to_tensor([1 if flag else 0], dtype="int32")
    dist.all_reduce(t)
    return int(t.numpy()[0]) > 0


def broadcast_buffers(model, world: int) -> None:
    """Give every rank rank 0's state that training does not keep equal: BatchNorm running statistics
    (per process under data parallelism; Paddle holds them as parameters that take no gradient, not
    as buffers) and any buffer. The trained parameters are equal on every rank already."""
    if world > 1:
        import paddle.distributed as dist

        for t in model.state_dict().values():
            if t.stop_gradient:
                dist.broadcast(t, src=0)


def barrier(world: int, tag: str) -> None:
    """Wait for every rank (nothing to wait for on one process). ``tag`` names this meeting point,
    unique within the job.

    Processes of ``--procs`` (``procs.spawn_local``) meet through marker files in their job's
    shared folder (``procs.SYNC_ENV``), polled, so a rank may wait as long as the others take:
    gloo's barrier gives up after about 30 s (a rank whose folds were done waited for one still
    training and the run failed). Under ``paddle.distributed.launch`` Paddle's barrier is used
    (NCCL on GPUs waits long; gloo on CPUs keeps its 30 s)."""
    if world == 1:
        return
    import os

    from gamma_kit.procs import SYNC_ENV

    folder = os.environ.get(SYNC_ENV)
    if not folder:
        import paddle.distributed as dist

        dist.barrier()
        return
    import time
    from pathlib import Path

    rank = rank_and_world()[0]
    marks = [Path(folder) / f"{tag}.{r}" for r in range(world)]
    marks[rank].touch()
    while not all(m.exists() for m in marks):
        time.sleep(POLL_S)


#: how often a rank waiting in ``barrier`` looks for the others' marker files
POLL_S = 0.2
