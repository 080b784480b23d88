"""An analysis on several processes (``torchrun``): each rank takes its share of the clips.

Under ``torchrun --nproc-per-node N zennit-drsa ...`` (the default process group joined by
the command line, see :func:`audio_cnn.distributed.process_group`) every step runs on every
rank and splits its work by input:

* **fit**: each rank collects the activation/context pairs of its share of each class's
  training clips; the estimators fit data-parallel (``distributed=True``: the sums over
  samples are all-reduced) and end identical on every rank;
* **explain**: each rank explains its share of the evaluation chunks; the maps are gathered
  in rank order, so they equal one process's;
* **evaluate**: the layer references fit like the estimators (collection shared, fits
  data-parallel); each rank scores its share of the inputs for every decomposition and
  predicts its share of the evaluation split's clips (accuracy); both are gathered in rank
  order;
* rank 0 alone holds the folder's lock and writes files (estimators, explanations,
  results, the one report); the others compute and wait.

Without a process group (one process) every function here is the identity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch.distributed as dist

from audio_cnn.distributed import on_rank0, world
from zennit_drsa.distributed import rank_slice

__all__ = [
    "computed_everywhere",
    "concatenate_lists",
    "gather_computed",
    "gather_parts",
    "is_writer",
    "on_rank0",
    "share",
    "world",
]

T = TypeVar("T")


def share(n_items: int, what: str = "explained inputs") -> slice:
    """This rank's contiguous share of ``n_items`` items (all of them on one process).

    Raises
    ------
    ValueError
        On every rank alike, if there are fewer items than processes (a rank would have
        nothing to compute).
    """
    rank, size = world()
    if n_items < size:
        raise ValueError(
            f"{n_items} {what} cannot be shared by {size} processes; start fewer processes "
            "(torchrun --nproc-per-node) or evaluate more clips (--eval-clips-per-class)"
        )
    return rank_slice(n_items, rank, size)


def is_writer() -> bool:
    """Whether this process writes the analysis folder (rank 0, or the only process)."""
    return world()[0] == 0


def gather_parts(part: T) -> list[T]:
    """Every rank's ``part``, in rank order (a collective call; ``[part]`` on one process).

    Parts are pickled by ``torch.distributed.all_gather_object``: they must be plain data
    (arrays, lists, dicts of them), never objects read from files.
    """
    size = world()[1]
    if size == 1:
        return [part]
    parts: list[Any] = [None] * size
    dist.all_gather_object(parts, part)
    return parts


def computed_everywhere(compute: Callable[[], T], what: str) -> T:
    """This rank's ``compute()``, after every rank has finished its own (a collective call).

    A rank whose work fails still reports to the others, so every rank stops with a message
    naming it instead of waiting for it until the process group's timeout; the failing rank
    raises its own error. Only whether each rank succeeded travels, not the results (e.g. a
    rank's share of collected vectors stays where it is). On one process: ``compute()``.
    """
    if world()[1] == 1:
        return compute()
    error: BaseException | None = None
    result: Any = None
    try:
        result = compute()
    except Exception as raised:  # reported to every rank below, then raised here
        error = raised
    messages = gather_parts(None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    failed = [(rank, message) for rank, message in enumerate(messages) if message]
    if failed:
        rank, message = failed[0]
        raise RuntimeError(f"{what} failed on rank {rank} ({message}); every rank stops")
    return result


def gather_computed(compute: Callable[[], T], what: str) -> list[T]:
    """Every rank's ``compute()``, in rank order; an error on any rank raises on all (see
    :func:`computed_everywhere`). On one process: ``[compute()]``."""
    return gather_parts(computed_everywhere(compute, what))


def concatenate_lists(parts: Sequence[Sequence[T]]) -> list[T]:
    """The ranks' per-input lists joined in rank order."""
    return [value for part in parts for value in part]
