"""Training on several processes with ``torch.distributed``, as launched by ``torchrun``.

``audio-cnn train`` (and :func:`audio_cnn.train.train`) run unchanged under
``torchrun --nproc-per-node N``: :func:`process_group` initialises the default process group
from torchrun's environment (gloo on the CPU, NCCL on CUDA with each rank on
``cuda:LOCAL_RANK``) and destroys it at the end. Without torchrun (or with one process) every
helper here works on one process and communicates nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

__all__ = ["all_sum", "on_rank0", "process_group", "torchrun_env", "world"]

T = TypeVar("T")

_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def torchrun_env() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` when launched by torchrun on several processes.

    ``None`` when one of torchrun's variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``, ``MASTER_PORT``) is missing or ``WORLD_SIZE`` is 1.
    """
    if any(name not in os.environ for name in _TORCHRUN_VARIABLES):
        return None
    try:
        rank, size, local = (int(os.environ[n]) for n in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    except ValueError as error:
        raise ValueError(
            f"torchrun's RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers ({error}); launch "
            "with torchrun, or unset them to train on one process"
        ) from None
    return (rank, size, local) if size > 1 else None


def world() -> tuple[int, int]:
    """``(rank, world_size)`` in the default process group; ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@contextmanager
def process_group(device: torch.device) -> Iterator[torch.device]:
    """Join torchrun's process group for the duration of the block.

    Under torchrun (see :func:`torchrun_env`) the default group is initialised unless the
    caller already did (then it is also left to the caller to destroy): gloo on the CPU,
    NCCL when ``device`` is CUDA. Otherwise nothing happens.

    Parameters
    ----------
    device:
        The device asked for (already checked, see :func:`audio_cnn.checkpoint.resolve_device`).

    Yields
    ------
    torch.device
        The device this rank computes on: ``cuda:LOCAL_RANK`` on CUDA under torchrun,
        ``device`` otherwise.

    Raises
    ------
    ValueError
        Fewer GPUs than ranks on this machine.
    """
    launch = torchrun_env()
    if launch is None:
        yield device
        return
    local_rank = launch[2]
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"local rank {local_rank} has no GPU (this machine has "
                f"{torch.cuda.device_count()}); start at most that many processes per node "
                "(torchrun --nproc-per-node)"
            )
        device = torch.device("cuda", local_rank)
        # NCCL's collectives (and broadcast_object_list) run on the current device.
        torch.cuda.set_device(device)
    if dist.is_initialized():
        yield device
        return
    # An hour: rank 0 may decode a large dataset into the cache while the others wait.
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(hours=1))
    try:
        yield device
    finally:
        dist.destroy_process_group()


def on_rank0(function: Callable[[], T], what: str) -> T:
    """``function()`` run on rank 0 only, its result given to every rank (a collective call).

    For work that only one process may do (writing the run directory, filling the cache). A
    failure on rank 0 is raised there and, as a ``RuntimeError`` naming it, on every other
    rank, so that none waits forever for the others. Without a process group it just calls
    ``function``.
    """
    rank, size = world()
    if size == 1:
        return function()
    error: BaseException | None = None
    message: list[object] = [None, None]
    if rank == 0:
        try:
            message[0] = function()
        except BaseException as raised:
            error = raised
            message[1] = f"{type(raised).__name__}: {raised}"
    dist.broadcast_object_list(message, src=0)
    if error is not None:
        raise error
    if message[1] is not None:
        raise RuntimeError(
            f"{what} failed on rank 0 ({message[1]}); every rank stops, see rank 0's error"
        )
    return message[0]  # type: ignore[return-value]


def all_sum(values: Sequence[float], device: torch.device) -> list[float]:
    """Sums over all ranks of ``values`` (float64, sent from ``device``); unchanged on one."""
    if world()[1] == 1:
        return list(values)
    buffer = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(buffer)
    return buffer.tolist()
