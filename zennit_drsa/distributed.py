"""Beyond one machine: data-parallel fitting and sharded collection with ``torch.distributed``.

Launch one process per core group or GPU with ``torchrun`` and initialise the default process
group (gloo on CPU, NCCL on GPU, each rank on its own GPU)::

    # torchrun --nproc-per-node 4 fit.py
    torch.distributed.init_process_group("nccl")  # or "gloo" on CPU
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    shards = collect_shards(model, composite, layer, dataset, target, "vectors/",
                            random_state=0, distributed=True)
    part = shards.read()                                  # this rank's rows only
    drsa = DRSA(random_state=0, dtype="float64", distributed=True)
    drsa.fit(part.activations, context=part.context)     # identical on every rank

* :func:`~zennit_drsa.collect.collect_shards` gives each rank its share of the inputs and
  writes one file per shard; a rerun skips the shards already written.
  :class:`~zennit_drsa.collect.ShardedCollection` reads them block by block, reads one
  rank's part, or merges them into one :class:`~zennit_drsa.collect.Collection` file.
* Every estimator takes ``distributed=True`` (an explicit opt-in): each rank passes only its
  rows to ``fit``, the sums over samples (normalisation, power means, gradient, covariances)
  are all-reduced every iteration, and every rank ends with the estimator that one process
  would fit on all rows concatenated in rank order, on the same seed. Opting in per estimator
  (rather than whenever ``torch.distributed`` is initialised) keeps estimators fitted on
  per-rank data, e.g. one per class in a data-parallel training script, local; a boolean
  (not a process group object) keeps estimators clonable and savable.
* LRP runs in full float32 on CUDA whatever the global TF32 settings
  (:mod:`zennit_drsa.precision`).

:func:`rank_slice` is the split into contiguous parts that both use: rows of rank ``r``
precede those of rank ``r + 1``.
"""

from __future__ import annotations

import numbers

from zennit_drsa._distributed import world

__all__ = ["rank_slice"]


def rank_slice(n_items: int, rank: int | None = None, world_size: int | None = None) -> slice:
    """This rank's contiguous part of ``n_items`` items split over ``world_size`` ranks.

    Parts follow rank order and differ in size by at most one (the first
    ``n_items % world_size`` ranks get one more), so concatenating them in rank order gives
    back ``range(n_items)``.

    Parameters
    ----------
    n_items : int
        Items to split (rows, inputs or shards), ``>= 0``.
    rank, world_size : int, optional
        The part to return and the number of parts; default: this process's rank and the
        size of ``torch.distributed``'s default group (``0`` and ``1`` without one).

    Returns
    -------
    slice
        ``slice(start, stop)`` of this rank's items (empty when there are fewer items than
        ranks).

    Examples
    --------
    >>> rank_slice(10, rank=1, world_size=3)
    slice(4, 7, None)
    """
    if (rank is None) != (world_size is None):
        raise ValueError("give both rank and world_size, or neither (to use torch.distributed's)")
    if rank is None:
        rank, world_size = world()
    for name, value in (("n_items", n_items), ("rank", rank), ("world_size", world_size)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size) = [0, {world_size}), got {rank}")
    base, extra = divmod(int(n_items), int(world_size))
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))
