"""torch.distributed plumbing shared by data-parallel fitting and sharded collection.

Nothing here starts processes or initialises a process group: the user launches the
processes (``torchrun``) and calls ``torch.distributed.init_process_group``; estimators and
:func:`~zennit_drsa.collect.collect_shards` given ``distributed=True`` then use the default
group. Without it every helper here works on one process and communicates nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "Partition",
    "agreement",
    "all_reduce_sum",
    "check_distributed",
    "ranks_differing",
    "world",
]

Values = TypeVar("Values", torch.Tensor, np.ndarray)


def check_distributed(distributed: Any, owner: str) -> bool:
    """Validate a ``distributed`` parameter; ``True`` needs an initialised default group."""
    if not isinstance(distributed, bool | np.bool_):
        raise TypeError(f"{owner}: distributed must be True or False, got {distributed!r}")
    if distributed and not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            f"{owner}: distributed=True needs torch.distributed's default process group; launch "
            "the processes with torchrun and call torch.distributed.init_process_group('gloo') "
            "(CPU) or ('nccl') (GPU) before, or pass distributed=False"
        )
    return bool(distributed)


def world() -> tuple[int, int]:
    """``(rank, world_size)`` in the default process group; ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` over all processes of the default group: a new tensor, same device.

    NCCL reduces CUDA tensors only and gloo is safest with host tensors, so the values travel
    on the device the backend needs and come back to theirs.
    """
    backend = str(dist.get_backend())
    if values.is_cuda and "nccl" in backend:
        device = values.device
    elif "nccl" in backend and "gloo" not in backend:
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = torch.device("cpu")
    buffer = values.detach().to(device, copy=True).contiguous()
    dist.all_reduce(buffer)
    return buffer.to(values.device)


@contextmanager
def agreement(what: str, enabled: bool = True) -> Iterator[None]:
    """Run a block that may fail on some processes only, and make it fail on all of them.

    A process that went on to the next collective after another one failed would wait for
    it forever. At the end of the block every process says (one all-reduce) whether it
    raised: those that did re-raise their error, the others raise a ``RuntimeError`` naming
    the failed ranks. ``enabled=False`` just runs the block.
    """
    if not enabled:
        yield
        return
    try:
        yield
    except Exception:
        _failed_ranks(failed=True)
        raise
    failed = _failed_ranks(failed=False)
    if failed:
        raise RuntimeError(
            f"{what} failed on rank(s) {failed}; the error raised there says why (every rank "
            "stops, so that none waits forever for the others)"
        )


def ranks_differing(value: int) -> list[int]:
    """The ranks whose ``value`` differs from rank 0's (a collective call)."""
    rank, size = world()
    table = torch.zeros(size, dtype=torch.int64)
    table[rank] = value
    table = all_reduce_sum(table)
    return torch.nonzero(table != table[0]).flatten().tolist()


def _failed_ranks(*, failed: bool) -> list[int]:
    rank, size = world()
    flags = torch.zeros(size, dtype=torch.int64)
    flags[rank] = int(failed)
    return torch.nonzero(all_reduce_sum(flags)).flatten().tolist()


class Partition:
    """Which of all samples this process holds, and sums over the samples of all processes.

    Samples are numbered in rank order: rank 0's rows first, then rank 1's, and so on. Every
    mean over samples computed with :meth:`sum` or :meth:`mean` is the mean over all of them,
    so a computation on several processes equals that of one process holding all rows in
    this order (up to the order of floating-point additions).

    Parameters
    ----------
    n_total : int
        Samples of all processes.
    n_local : int
        Samples held here.
    offset : int
        Global index of the first sample held here.
    distributed : bool
        Whether other processes hold the other samples (else ``n_local == n_total``).
    """

    def __init__(self, n_total: int, n_local: int, offset: int, distributed: bool) -> None:
        self.n_total = int(n_total)
        self.n_local = int(n_local)
        self.offset = int(offset)
        self.distributed = bool(distributed)

    @classmethod
    def whole(cls, n_samples: int) -> Partition:
        """All ``n_samples`` samples held by this one process."""
        return cls(n_samples, n_samples, 0, False)

    @classmethod
    def gather(cls, n_local: int, **same: int) -> Partition:
        """The partition of the default group's samples, this process holding ``n_local``.

        A collective call. ``same`` names integers that must agree on every process (such as
        the number of features); a disagreement raises the same ``ValueError`` everywhere.
        """
        rank, size = world()
        table = torch.zeros((size, 1 + len(same)), dtype=torch.int64)
        table[rank] = torch.tensor([n_local, *same.values()], dtype=torch.int64)
        table = all_reduce_sum(table)
        for column, name in enumerate(same, start=1):
            values = table[:, column]
            if bool((values != values[0]).any()):
                raise ValueError(
                    f"the processes disagree on {name}: {values.tolist()} by rank; every "
                    "process must pass data of the same kind"
                )
        counts = table[:, 0]
        return cls(int(counts.sum()), n_local, int(counts[:rank].sum()), True)

    def sum(self, values: Values) -> Values:
        """Sum over all processes of per-process ``values`` (tensor or array, same type back)."""
        if not self.distributed:
            return values
        if isinstance(values, np.ndarray):
            return all_reduce_sum(torch.from_numpy(np.ascontiguousarray(values))).numpy()
        return all_reduce_sum(values)

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Mean over the samples (dim 0) of all processes of ``values`` ``(n_local, ...)``."""
        return self.sum(values.sum(dim=0)) / self.n_total

    def first(self, values: np.ndarray) -> np.ndarray:
        """Rank 0's ``values`` on every process (they must have one shape everywhere).

        Adding exact zeros from the other ranks copies rank 0's values bit for bit.
        """
        if not self.distributed:
            return values
        values = np.asarray(values)
        own = values if world()[0] == 0 else np.zeros_like(values)
        return self.sum(own)

    def select(self, rows: np.ndarray) -> tuple[np.ndarray, Partition]:
        """The samples ``rows`` (sorted global indices) held here, as local row indices, and
        the partition of those samples among the processes (no communication)."""
        rows = np.asarray(rows)
        start, stop = np.searchsorted(rows, [self.offset, self.offset + self.n_local])
        local = rows[start:stop] - self.offset
        return local, Partition(len(rows), stop - start, start, self.distributed)
