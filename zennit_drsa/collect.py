"""Collect activation and context vectors at a layer: the training data of DRSA.

For every input, :func:`collect` runs one forward and backward pass under the LRP composite
(see :class:`~zennit_drsa.context.LayerContext`), picks ``n_locations`` random positions of
the layer's output map and stores the activation vector ``a`` and context vector ``c`` (both
``d``-dimensional, ``d`` = channels) found there, so that ``a · c`` is the LRP relevance of
that position. Batches stream into preallocated arrays; memory does not grow with the number
of inputs beyond those arrays.

For corpora too large for one process or one array, :func:`collect_shards` splits the inputs
into shards of a fixed number of inputs, shares them out over the processes of
``torch.distributed`` and writes one file per shard; a rerun skips the shards already
written. :class:`ShardedCollection` reads them back block by block, one rank's part at a
time, or merged into one :class:`Collection` file. The locations drawn for an input depend
only on the seed and the input's index, so the shards hold exactly the rows of one
:func:`collect` over all inputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from zennit.core import Composite

from atomic_io import atomic_path, read_json, write_json_atomic

from ._distributed import agreement, check_distributed, ranks_differing, world
from ._progress import progress_bar
from .context import ContextMode, LayerContext, Target
from .distributed import rank_slice
from .layers import resolve_layer
from .precision import Precision, check_precision, lrp_precision

__all__ = ["Collection", "ShardedCollection", "collect", "collect_shards"]

_FORMAT = "zennit_drsa.Collection"
_FORMAT_VERSION = 1
_SHARD_FORMAT = "zennit_drsa.CollectionShard"
_SHARD_FORMAT_VERSION = 1
_ARRAYS = ("activations", "context", "input_index", "location", "target")
_DEFAULT_BATCH_SIZE = 32
_DEFAULT_SHARD_SIZE = 1024
# Rows reserved per location for an iterable of unknown length, before geometric growth.
_INITIAL_INPUTS = 256


@dataclass(frozen=True, eq=False)
class Collection:
    """Activation and context vectors sampled from one layer.

    Row ``r`` describes location ``location[r]`` of the layer's output map for input
    ``input_index[r]`` (its position in the data order); its LRP relevance is
    ``activations[r] @ context[r]``.

    Attributes
    ----------
    activations:
        ``(n, d)`` float32 activation vectors ``a``.
    context:
        ``(n, d)`` float32 context vectors ``c``.
    input_index:
        ``(n,)`` int64 index of the input in the data order.
    location:
        ``(n, k)`` int64 map coordinates, ``k = len(map_shape)`` (``(h, w)`` for conv maps,
        none for dense layers).
    target:
        ``(n,)`` int64 class whose output was explained; ``-1`` when a callable target was used.
    layer:
        Name of the layer.
    map_shape:
        Spatial shape of the layer's output map, e.g. ``(H, W)``; ``()`` for dense layers.
    context_mode:
        ``"exact"`` or ``"ratio"`` (see :class:`~zennit_drsa.context.LayerContext`).
    bypass:
        True if a skip connection carries relevance around the layer (then ``a · c`` covers
        only the part of the explanation that passes through it).
    """

    activations: np.ndarray
    context: np.ndarray
    input_index: np.ndarray
    location: np.ndarray
    target: np.ndarray
    layer: str
    map_shape: tuple[int, ...]
    context_mode: str = "exact"
    bypass: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "map_shape", tuple(int(s) for s in self.map_shape))
        n = len(self.input_index)
        if self.activations.ndim != 2 or self.activations.shape != self.context.shape:
            raise ValueError(
                f"activations and context must both be (n, d), got {self.activations.shape} "
                f"and {self.context.shape}"
            )
        expected = {
            "activations": (n, self.activations.shape[1]),
            "input_index": (n,),
            "location": (n, len(self.map_shape)),
            "target": (n,),
        }
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise ValueError(
                    f"Collection.{name} has shape {getattr(self, name).shape}, expected {shape} "
                    f"({n} rows, map shape {self.map_shape})"
                )

    @property
    def n_vectors(self) -> int:
        """Number of rows ``n``."""
        return len(self.input_index)

    @property
    def dim(self) -> int:
        """Vector dimension ``d`` (channels of the layer)."""
        return self.activations.shape[1]

    @property
    def relevance(self) -> np.ndarray:
        """LRP relevance of each row, ``a · c``: ``(n,)`` float64."""
        return np.einsum(
            "nd,nd->n", self.activations, self.context, dtype=np.float64, optimize=False
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write to one ``.npz`` file (arrays plus a JSON header), atomically; no pickle."""
        _write_collection_file(
            path,
            _file_metadata(self.layer, self.map_shape, self.context_mode, self.bypass),
            self.n_vectors,
            {name: (getattr(self, name).dtype, getattr(self, name).shape[1:]) for name in _ARRAYS},
            lambda name: [getattr(self, name)],
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Collection:
        """Read a file written by :meth:`save`.

        Raises
        ------
        ValueError
            If the file is not a saved :class:`Collection` or is incomplete.
        """
        with np.load(path, allow_pickle=False) as file:
            missing = {"metadata", *_ARRAYS} - set(file.files)
            if missing:
                raise ValueError(f"{path} is not a saved Collection: missing {sorted(missing)}")
            metadata = json.loads(file["metadata"].tobytes().decode("utf-8"))
            if metadata.get("format") != _FORMAT or metadata.get("version") != _FORMAT_VERSION:
                raise ValueError(
                    f"{path} has format {metadata.get('format')!r} version "
                    f"{metadata.get('version')!r}; expected {_FORMAT!r} version {_FORMAT_VERSION}"
                )
            arrays = {name: file[name] for name in _ARRAYS}
        return cls(
            **arrays,
            layer=metadata["layer"],
            map_shape=tuple(metadata["map_shape"]),
            context_mode=metadata["context_mode"],
            bypass=bool(metadata["bypass"]),
        )


@dataclass(frozen=True, eq=False)
class ShardedCollection:
    """Activation and context vectors written in shards by :func:`collect_shards`.

    Shard ``j`` holds the rows of inputs ``j·shard_size`` up to ``(j+1)·shard_size - 1``, so
    the shards in order hold the rows of one :func:`collect` over all inputs in input order.
    Nothing is read at opening: :meth:`blocks` yields one shard at a time, :meth:`read`
    loads one rank's part, :meth:`merge` writes one :class:`Collection` file shard by shard.

    Attributes
    ----------
    directory:
        Where the shards are.
    records:
        The shards' records (JSON sidecars), in shard order: the inputs each covers, its
        number of rows, and the collection settings shared by all.
    """

    directory: Path
    records: tuple[dict[str, Any], ...]

    @classmethod
    def open(cls, directory: str | os.PathLike[str]) -> ShardedCollection:
        """The complete sharded collection in ``directory``.

        Raises
        ------
        ValueError
            If shards are missing (the collection is unfinished: run :func:`collect_shards`
            again with the same arguments to finish it), or if they were collected with
            different settings.
        """
        directory = Path(directory)
        records = _shard_records(directory)
        if not records:
            raise ValueError(
                f"{directory} holds no finished shards; collect them with collect_shards()"
            )
        _check_same_settings(records, records[0]["settings"], directory)
        n_shards = records[0]["n_shards"]
        missing = sorted(set(range(n_shards)) - {record["shard"] for record in records})
        if missing:
            raise ValueError(
                f"{directory}: shards {missing} of {n_shards} are missing, so the collection is "
                "unfinished; run collect_shards() again with the same arguments to finish it"
            )
        return cls(directory, tuple(sorted(records, key=lambda record: record["shard"])))

    @property
    def settings(self) -> dict[str, Any]:
        """What the shards were collected with (layer, model fingerprint, seed, ...)."""
        return self.records[0]["settings"]

    @property
    def n_shards(self) -> int:
        """Number of shards."""
        return len(self.records)

    @property
    def n_inputs(self) -> int:
        """Number of inputs covered."""
        return self.settings["n_inputs"]

    @property
    def n_vectors(self) -> int:
        """Number of rows in all shards."""
        return sum(record["n_rows"] for record in self.records)

    def blocks(self, shards: Iterable[int] | None = None) -> Iterator[Collection]:
        """The shards one at a time, in shard order (memory: one shard).

        Parameters
        ----------
        shards:
            Indices of the shards to read; default all.

        Yields
        ------
        Collection
            The rows of one shard; ``input_index`` holds indices among all inputs.
        """
        record = self.records[0]
        for index in range(self.n_shards) if shards is None else shards:
            yield Collection(
                **self._load(index, _ARRAYS),
                layer=record["layer"],
                map_shape=tuple(record["map_shape"]),
                context_mode=record["context_mode"],
                bypass=record["bypass"],
            )

    def read(self, rank: int | None = None, world_size: int | None = None) -> Collection:
        """The rows of one rank's part of the shards, in one :class:`Collection` in memory.

        The shards are split into contiguous parts in rank order
        (:func:`~zennit_drsa.distributed.rank_slice`), so fitting an estimator with
        ``distributed=True`` on each rank's part equals fitting it on all rows in one
        process.

        Parameters
        ----------
        rank, world_size:
            Which part; default: this process's in ``torch.distributed``'s default group,
            or all rows without one. ``read(0, 1)`` reads all rows.

        Returns
        -------
        Collection
            The part's rows in input order (none for a rank without shards).
        """
        part = range(self.n_shards)[rank_slice(self.n_shards, rank, world_size)]
        record = self.records[0]
        rows = _Rows(
            sum(self.records[index]["n_rows"] for index in part),
            record["dim"],
            len(record["map_shape"]),
        )
        for block in self.blocks(part):
            rows.append(**{name: getattr(block, name) for name in _ARRAYS})
        return Collection(
            **rows.finish(),
            layer=record["layer"],
            map_shape=tuple(record["map_shape"]),
            context_mode=record["context_mode"],
            bypass=record["bypass"],
        )

    def merge(self, path: str | os.PathLike[str]) -> None:
        """Write all rows to one :class:`Collection` file (read by :meth:`Collection.load`),
        atomically. Each array is copied shard by shard, so memory holds one shard's array
        at a time, never all rows, and every shard file is read once."""
        record = self.records[0]
        templates = _Rows(0, record["dim"], len(record["map_shape"])).arrays
        _write_collection_file(
            path,
            _file_metadata(
                record["layer"], record["map_shape"], record["context_mode"], record["bypass"]
            ),
            self.n_vectors,
            {name: (array.dtype, array.shape[1:]) for name, array in templates.items()},
            lambda name: (self._load(index, (name,))[name] for index in range(self.n_shards)),
        )

    def _load(self, index: int, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """The arrays ``names`` of shard ``index``, checked against its record."""
        record = self.records[index]
        path = self.directory / _shard_name(index, ".npz")
        with np.load(path, allow_pickle=False) as file:
            present = set(file.files)
            arrays = {name: file[name] for name in names if name in present}
        first, stop = record["inputs"]
        damaged = len(arrays) < len(names) or any(
            len(values) != record["n_rows"] for values in arrays.values()
        )
        covered = arrays.get("input_index")
        if not damaged and covered is not None and len(covered):
            damaged = bool(covered.min() < first or covered.max() >= stop)
        if damaged:
            raise ValueError(
                f"{path} does not hold the rows its record describes (inputs {first}.."
                f"{stop - 1}, {record['n_rows']} rows); it was replaced or damaged: delete it "
                "and its .json, and run collect_shards() again to recollect it"
            )
        return arrays


def collect(
    model: nn.Module,
    composite: Composite,
    layer: str | nn.Module,
    data: torch.Tensor | np.ndarray | Iterable[Any],
    target: Target | Literal["label"],
    *,
    n_locations: int | Literal["all"] | None = 20,
    context: ContextMode = "exact",
    batch_size: int | None = None,
    random_state: int | None = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    precision: Precision = "full",
    first_index: int = 0,
) -> Collection:
    """Sample activation and context vectors of ``layer`` over a data set.

    Parameters
    ----------
    model:
        Model in eval mode, on ``device``; LRP rules come from ``composite`` (registered for
        the duration of the call, so the model must not carry a registered composite).
    composite:
        Zennit composite with its canonizers.
    layer:
        Layer name (e.g. ``"features.10"``) or module; its output ``(B, d, *map)`` or
        ``(B, d)`` provides the vectors.
    data:
        Inputs ``(N, ...)`` as a tensor or array, or an iterable of batches (a
        ``DataLoader``) yielding tensors or ``(x, y, ...)`` tuples.
    target:
        Output to explain: a class index; per-sample classes ``(N,)`` in data order; a
        callable ``output -> attr_output`` (see :func:`~zennit_drsa.context.target_gradient`);
        or ``"label"`` to explain each input's own label ``y`` from the data batches.
    n_locations:
        Random map positions per input, drawn without replacement; ``None`` or ``"all"``
        takes every position. Dense layers have one position.
    context:
        ``"exact"`` (default) or ``"ratio"`` (the ``R / (a + 1e-7)`` approximation).
    batch_size:
        Inputs per pass for tensor data (default 32); set it on the DataLoader otherwise.
    random_state:
        Seed of the location draw. Input ``i`` draws its locations from child ``i`` of
        ``numpy.random.SeedSequence(random_state)``: the draw depends only on the seed and
        the input's position, not on batching or on which process collects it.
    device:
        Device for the passes; default: the device of the model's parameters.
    progress:
        Show a progress bar.
    precision:
        ``"full"`` (default): LRP in float32 without TF32 on CUDA, whatever the global
        settings (see :mod:`zennit_drsa.precision`); ``"tf32"``: keep PyTorch's settings.
    first_index:
        Position of the first input in a larger data set that several calls (e.g. the ranks
        of a ``torch.distributed`` job, each with its contiguous share) collect in parts:
        rows then carry global input indices and draw the locations of those positions, so
        the parts concatenated equal one call on the whole data set.

    Returns
    -------
    Collection
        ``N × n_locations`` rows (``N × H·W`` for all locations, ``N`` for dense layers).

    Raises
    ------
    ValueError
        Bad arguments, wrong data shape or dtype, empty data, NaN/Inf inputs (naming the
        batch), a model in training mode, or an unknown layer (with suggestions).
    """
    _check_n_locations(n_locations)
    check_precision(precision)
    return _collect(
        model,
        composite,
        layer,
        data,
        target,
        n_locations=n_locations,
        context=context,
        batch_size=batch_size,
        random_state=random_state,
        device=device,
        progress=progress,
        precision=precision,
        first_index=_check_first_index(first_index),
    )


def _check_first_index(first_index: Any) -> int:
    if isinstance(first_index, bool) or not isinstance(first_index, int | np.integer):
        raise TypeError(f"first_index must be an int, got {type(first_index).__name__}")
    if first_index < 0:
        raise ValueError(f"first_index must be >= 0, got {first_index}")
    return int(first_index)


def _collect(
    model: nn.Module,
    composite: Composite,
    layer: str | nn.Module,
    data: torch.Tensor | np.ndarray | Iterable[Any],
    target: Target | Literal["label"],
    *,
    n_locations: int | Literal["all"] | None,
    context: ContextMode,
    batch_size: int | None,
    random_state: int | None,
    device: str | torch.device | None,
    progress: bool,
    precision: Precision,
    first_index: int,
) -> Collection:
    """:func:`collect` for inputs whose first one is input ``first_index`` of a larger data
    set: rows carry those global indices, and the locations drawn are theirs."""
    device = _resolve_device(model, device)
    parameter = next(model.parameters(), None)
    # Batches take the model's dtype (float64 arrays are common); the data is not copied whole.
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else None
    batches, n_inputs, n_batches = _batches(data, batch_size)
    labels = _labels_for(target, data)
    seeds = np.random.SeedSequence(random_state)
    rows: _Rows | None = None
    map_shape: tuple[int, ...] = ()
    seen = 0
    input_shape: tuple[int, ...] | None = None
    with (
        lrp_precision(precision),
        LayerContext(model, composite, layer, context=context) as layer_context,
        progress_bar(
            total=n_batches, desc=f"collect {layer_context.name}", unit="batch", enabled=progress
        ) as bar,
    ):
        for number, (x, y) in enumerate(batches):
            x = _check_batch(x, number, first_index + seen).to(device=device, dtype=dtype)
            size = x.shape[0]
            if input_shape is None:
                input_shape = tuple(x.shape[1:])
            elif tuple(x.shape[1:]) != input_shape:
                raise ValueError(
                    f"batch {number}: inputs of shape {tuple(x.shape[1:])} differ from the first "
                    f"batch's {input_shape}; all inputs must have one shape"
                )
            classes = _batch_classes(target, labels, y, number, seen, size)
            result = layer_context(x, target if callable(target) else classes)
            activation, context_map = result.activation, result.context
            if rows is None:
                map_shape = tuple(activation.shape[2:])
                n_rows = _rows_per_input(n_locations, map_shape)
                capacity = (n_inputs if n_inputs is not None else _INITIAL_INPUTS) * n_rows
                rows = _Rows(capacity, activation.shape[1], len(map_shape))
                if result.bypass:
                    warnings.warn(
                        f"a skip connection carries relevance around layer {layer_context.name!r}; "
                        "the collected a·c covers only the relevance passing through the layer. "
                        "Choose a block output (e.g. 'layer1.0') to capture all of it",
                        stacklevel=2,
                    )
            if not (torch.isfinite(activation).all() and torch.isfinite(context_map).all()):
                hint = " (the ratio context divides by a + 1e-7; use context='exact')"
                first = first_index + seen
                raise ValueError(
                    f"batch {number} (inputs {first}..{first + size - 1}): the activation or "
                    f"context at layer {layer_context.name!r} is not finite"
                    + (hint if context == "ratio" else "")
                )
            flat = _draw_locations(seeds, first_index + seen, size, map_shape, n_locations)
            rows.append(
                activations=_gather(activation, flat),
                context=_gather(context_map, flat),
                input_index=np.repeat(
                    np.arange(first_index + seen, first_index + seen + size), flat.shape[1]
                ),
                location=_coordinates(flat, map_shape),
                target=np.repeat(classes, flat.shape[1]),
            )
            seen += size
            bar.update()
        name, bypass = layer_context.name, bool(layer_context.bypass)
    if rows is None:
        raise ValueError("data yielded no batches; pass at least one input")
    if labels is not None and len(labels) != seen:
        raise ValueError(f"got {len(labels)} per-sample targets but the data held {seen} inputs")
    return Collection(
        **rows.finish(), layer=name, map_shape=map_shape, context_mode=context, bypass=bypass
    )


def collect_shards(
    model: nn.Module,
    composite: Composite,
    layer: str | nn.Module,
    data: torch.Tensor | np.ndarray | Any,
    target: Target | Literal["label"],
    directory: str | os.PathLike[str],
    *,
    shard_size: int = _DEFAULT_SHARD_SIZE,
    n_locations: int | Literal["all"] | None = 20,
    context: ContextMode = "exact",
    batch_size: int | None = None,
    random_state: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    precision: Precision = "full",
    distributed: bool = False,
) -> ShardedCollection:
    """:func:`collect` over a corpus in shards on disk, shared out over processes, resumable.

    The inputs are cut into shards of ``shard_size`` consecutive inputs; with
    ``distributed=True`` each process of ``torch.distributed``'s default group takes a
    contiguous part of the shards (:func:`~zennit_drsa.distributed.rank_slice`). Each shard is
    collected and written on its own (``shard-000012.npz``, the format of
    :meth:`Collection.save`, then its record ``shard-000012.json``), so memory holds one
    shard, never the corpus. A shard whose record exists is finished and is not collected
    again: rerun the same call after a crash and only unfinished shards are computed. The
    records hold the settings (layer, locations, seed, target, a fingerprint of the model's
    weights, ...) and a fingerprint of each shard's inputs; a rerun with other settings, or
    over other inputs, is refused instead of mixing two collections.

    The rows equal those of one :func:`collect` over all inputs with the same seed, whatever
    the number of processes or ``shard_size`` (up to the batch-dependent rounding of
    convolutions).

    Parameters
    ----------
    model, composite, layer, target, n_locations, context, device, precision:
        As for :func:`collect`. Per-sample ``target`` classes are given for all inputs.
        A callable ``target`` is recorded by its name only.
    data:
        ``(N, ...)`` inputs as a tensor or array, or a map-style dataset (``len`` and
        indexing, e.g. a ``torch.utils.data.Dataset``) yielding inputs or ``(x, y, ...)``
        tuples. Each process reads only its shards' inputs (a ``DataLoader`` cannot be
        sharded: pass its ``dataset``).
    directory:
        Where the shards go (created if needed); one directory per collection.
    shard_size:
        Inputs per shard: the unit of memory, of resumption and of work sharing.
    batch_size:
        Inputs per pass (default 32).
    random_state:
        Seed of the location draw, an int: processes and reruns must draw alike.
    progress:
        Show a progress bar over the shards (on rank 0 only).
    distributed:
        Share the shards out over the processes of the default process group (a collective
        call: every process calls it alike and all return when all shards are written);
        ``False``: this process collects every shard.

    Returns
    -------
    ShardedCollection
        All shards, on every process.

    Raises
    ------
    ValueError
        As :func:`collect`; also for shards in ``directory`` collected with other settings
        or over other inputs (use another directory, or delete them), and for data that
        cannot be indexed. With ``distributed=True`` an error on one process raises on all.
    """
    distributed = check_distributed(distributed, "collect_shards")
    # Arguments (data, model) may be wrong on one process only; all must stop then.
    with agreement("collect_shards", enabled=distributed):
        _check_n_locations(n_locations)
        check_precision(precision)
        if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
            raise ValueError(f"shard_size must be a positive int, got {shard_size!r}")
        if isinstance(random_state, bool) or not isinstance(random_state, int) or random_state < 0:
            raise ValueError(
                f"random_state must be an int >= 0 for sharded collection (every process and "
                f"every rerun must draw the same locations), got {random_state!r}"
            )
        size = _DEFAULT_BATCH_SIZE if batch_size is None else batch_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        n_inputs = _indexable_length(data)
        labels = _labels_for(target, data)
        if labels is not None and len(labels) != n_inputs:
            raise ValueError(f"got {len(labels)} per-sample targets for {n_inputs} inputs")
        settings = {
            "layer": resolve_layer(model, layer)[0],
            "n_inputs": n_inputs,
            "shard_size": shard_size,
            "n_locations": "all" if n_locations is None else n_locations,
            "context": context,
            "random_state": random_state,
            "target": _describe_target(target, labels),
            "precision": precision,
            "composite": f"{type(composite).__module__}.{type(composite).__qualname__}",
            "model_sha256": _model_sha256(model),
        }
    if distributed:
        fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
        differing = ranks_differing(int(fingerprint[:15], 16))
        if differing:
            raise ValueError(
                f"rank(s) {differing} collect with other settings than rank 0 (model weights, "
                "number of inputs, target, ...); every process must pass the same model, data "
                "and arguments"
            )
    directory = Path(directory)
    n_shards = -(-n_inputs // shard_size)
    rank, world_size = world() if distributed else (0, 1)
    mine = range(n_shards)[rank_slice(n_shards, rank, world_size)]
    todo = []
    # Refuse a directory of other shards before anyone spends time collecting.
    with agreement("collect_shards", enabled=distributed):
        directory.mkdir(parents=True, exist_ok=True)
        records = {record["shard"]: record for record in _shard_records(directory)}
        _check_same_settings(list(records.values()), settings, directory)
        for index in mine:
            start, stop = index * shard_size, min((index + 1) * shard_size, n_inputs)
            if index not in records:
                todo.append(index)
            elif records[index]["inputs_sha256"] != _inputs_sha256(data, start, stop, size):
                raise ValueError(
                    f"{directory / _shard_name(index, '.json')} covers inputs {start}..{stop - 1} "
                    "but they differ from the inputs given now; pass the same data in the same "
                    "order, or collect into another directory"
                )
    with (
        agreement("collect_shards", enabled=distributed),
        progress_bar(
            total=len(todo),
            desc=f"collect {settings['layer']} in shards",
            unit="shard",
            enabled=progress and rank == 0,
        ) as bar,
    ):
        for index in todo:
            start, stop = index * shard_size, min((index + 1) * shard_size, n_inputs)
            digest = hashlib.sha256()
            shard = _collect(
                model,
                composite,
                layer,
                _shard_batches(data, start, stop, size, digest),
                target if labels is None else labels[start:stop],
                n_locations=n_locations,
                context=context,
                batch_size=None,
                random_state=random_state,
                device=device,
                progress=False,
                precision=precision,
                first_index=start,
            )
            shard.save(directory / _shard_name(index, ".npz"))
            # The record comes last: it marks the shard finished.
            write_json_atomic(
                directory / _shard_name(index, ".json"),
                {
                    "format": _SHARD_FORMAT,
                    "version": _SHARD_FORMAT_VERSION,
                    "shard": index,
                    "n_shards": n_shards,
                    "inputs": [start, stop],
                    "inputs_sha256": digest.hexdigest(),
                    "n_rows": shard.n_vectors,
                    "dim": shard.dim,
                    "layer": shard.layer,
                    "map_shape": list(shard.map_shape),
                    "context_mode": shard.context_mode,
                    "bypass": shard.bypass,
                    "settings": settings,
                },
            )
            bar.update()
    return ShardedCollection.open(directory)


def _resolve_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    """The requested device, which must hold the model; default: the model's device."""
    parameter = next(model.parameters(), None)
    model_device = parameter.device if parameter is not None else None
    if device is None:
        return model_device or torch.device("cpu")
    device = torch.device(device)
    if model_device is not None and model_device.type != device.type:
        raise ValueError(
            f"the model is on {model_device} but device={device}; move it with model.to(device)"
        )
    return device


def _batches(
    data: Any, batch_size: int | None
) -> tuple[Iterator[tuple[Any, Any]], int | None, int | None]:
    """Batches ``(x, y or None)``, the number of inputs and of batches (None if unknown)."""
    if isinstance(data, torch.Tensor | np.ndarray):
        tensor = torch.as_tensor(data)
        if tensor.dim() < 2 or tensor.shape[0] == 0:
            raise ValueError(
                f"data must have shape (N, ...) with N >= 1 and at least one feature axis, "
                f"got {tuple(tensor.shape)}"
            )
        if not tensor.is_floating_point():
            raise ValueError(f"data must be floating point, got {tensor.dtype}; convert it first")
        size = _DEFAULT_BATCH_SIZE if batch_size is None else batch_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        n = tensor.shape[0]
        chunks = ((tensor[start : start + size], None) for start in range(0, n, size))
        return chunks, n, -(-n // size)
    if batch_size is not None:
        raise ValueError("batch_size applies to tensor data only; set it on the DataLoader")
    if not isinstance(data, Iterable) or isinstance(data, str | bytes):
        raise TypeError(
            f"data must be a tensor, an array or an iterable of batches, got {type(data).__name__}"
        )
    dataset = getattr(data, "dataset", None)
    n_inputs = len(dataset) if hasattr(dataset, "__len__") else None
    n_batches = len(data) if hasattr(data, "__len__") else None
    return (_split_batch(batch) for batch in data), n_inputs, n_batches


def _split_batch(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, tuple | list):
        if not batch:
            raise ValueError("the data yielded an empty batch tuple")
        return batch[0], (batch[1] if len(batch) > 1 else None)
    return batch, None


def _check_batch(x: Any, number: int, seen: int) -> torch.Tensor:
    """Validate one input batch (a floating tensor ``(B, ...)``, finite)."""
    if isinstance(x, np.ndarray):
        x = torch.as_tensor(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"batch {number}: inputs must be tensors, got {type(x).__name__}")
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"batch {number}: inputs must have shape (B, ...), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"batch {number}: inputs must be floating point, got {x.dtype}")
    finite = torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)
    if not finite.all():
        bad = seen + int(torch.nonzero(~finite)[0, 0])
        raise ValueError(
            f"batch {number} (inputs {seen}..{seen + x.shape[0] - 1}) contains NaN or Inf, "
            f"first at input {bad}; clean or drop those inputs"
        )
    return x


def _labels_for(target: Any, data: Any) -> np.ndarray | None:
    """Per-sample classes for the whole data set, if ``target`` is such a sequence."""
    if isinstance(target, str):
        if target != "label":
            raise ValueError(f"the only string target is 'label', got {target!r}")
        if isinstance(data, torch.Tensor | np.ndarray):
            raise ValueError(
                "target='label' needs data yielding (x, y) batches (a DataLoader); for a tensor "
                "pass the labels themselves as target"
            )
        return None
    if callable(target) or isinstance(target, int | np.integer):
        return None
    labels = np.asarray(target.cpu() if isinstance(target, torch.Tensor) else target)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"per-sample targets must be a 1-D integer sequence, got shape {labels.shape} and "
            f"dtype {labels.dtype}"
        )
    if isinstance(data, torch.Tensor | np.ndarray) and len(labels) != len(data):
        raise ValueError(f"got {len(labels)} per-sample targets for {len(data)} inputs")
    return labels.astype(np.int64)


def _batch_classes(
    target: Any, labels: np.ndarray | None, y: Any, number: int, seen: int, size: int
) -> np.ndarray:
    """Class explained for each input of one batch: ``(size,)`` int64; -1 for callables."""
    if callable(target):
        return np.full(size, -1, dtype=np.int64)
    if isinstance(target, str):
        if y is None:
            raise ValueError(f"batch {number} has no labels; target='label' needs (x, y) batches")
        classes = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
        if classes.shape != (size,) or not np.issubdtype(classes.dtype, np.integer):
            raise ValueError(
                f"batch {number}: labels must be {size} integers, got shape {classes.shape} "
                f"and dtype {classes.dtype}"
            )
        return classes.astype(np.int64)
    if labels is not None:
        if seen + size > len(labels):
            raise ValueError(f"got {len(labels)} per-sample targets but the data holds more inputs")
        return labels[seen : seen + size]
    return np.full(size, int(target), dtype=np.int64)


def _rows_per_input(n_locations: int | str | None, map_shape: tuple[int, ...]) -> int:
    n_positions = int(np.prod(map_shape, dtype=np.int64))
    if not map_shape or n_locations in (None, "all"):
        return n_positions
    if n_locations > n_positions:
        raise ValueError(
            f"n_locations={n_locations} exceeds the {n_positions} positions of the layer's "
            f"{'×'.join(map(str, map_shape))} map; lower it or use n_locations='all'"
        )
    return int(n_locations)


def _check_n_locations(n_locations: Any) -> None:
    if isinstance(n_locations, bool) or not (
        n_locations is None
        or n_locations == "all"
        or (isinstance(n_locations, int) and n_locations > 0)
    ):
        raise ValueError(f"n_locations must be a positive int, 'all' or None, got {n_locations!r}")


def _draw_locations(
    seeds: np.random.SeedSequence,
    first: int,
    size: int,
    map_shape: tuple[int, ...],
    n_locations: Any,
) -> np.ndarray:
    """Flat map positions ``(size, k)`` for inputs ``first .. first + size - 1``, without
    replacement within an input."""
    n_positions = int(np.prod(map_shape, dtype=np.int64))
    if not map_shape or n_locations in (None, "all"):
        return np.tile(np.arange(n_positions), (size, 1))
    # One uniform key per position from the input's own child seed: the draw ignores
    # batching and which process collects the input.
    keys = np.stack(
        [
            np.random.default_rng(
                np.random.SeedSequence(seeds.entropy, spawn_key=(first + i,))
            ).random(n_positions)
            for i in range(size)
        ]
    )
    return np.argsort(keys, axis=1)[:, :n_locations]


def _gather(maps: torch.Tensor, flat: np.ndarray) -> np.ndarray:
    """Vectors at the given positions: ``(B, d, *map)`` and ``(B, k)`` → ``(B·k, d)`` float32."""
    batch, dim = maps.shape[:2]
    index = torch.as_tensor(flat, device=maps.device).unsqueeze(1).expand(-1, dim, -1)
    picked = maps.reshape(batch, dim, -1).gather(2, index)
    return picked.transpose(1, 2).reshape(-1, dim).to("cpu", torch.float32).numpy()


def _coordinates(flat: np.ndarray, map_shape: tuple[int, ...]) -> np.ndarray:
    """Map coordinates ``(B·k, len(map_shape))`` of flat positions ``(B, k)``."""
    if not map_shape:
        return np.empty((flat.size, 0), dtype=np.int64)
    return np.stack(np.unravel_index(flat.reshape(-1), map_shape), axis=1).astype(np.int64)


class _Rows:
    """Output arrays, allocated once for a known input count and grown ×2 otherwise."""

    def __init__(self, capacity: int, dim: int, map_rank: int) -> None:
        self.dim = dim
        self.size = 0
        self.arrays = {
            "activations": np.empty((capacity, dim), dtype=np.float32),
            "context": np.empty((capacity, dim), dtype=np.float32),
            "input_index": np.empty(capacity, dtype=np.int64),
            "location": np.empty((capacity, map_rank), dtype=np.int64),
            "target": np.empty(capacity, dtype=np.int64),
        }

    def append(self, **rows: np.ndarray) -> None:
        n = len(rows["input_index"])
        capacity = len(self.arrays["input_index"])
        if self.size + n > capacity:
            self._resize(max(2 * capacity, self.size + n))
        for name, values in rows.items():
            self.arrays[name][self.size : self.size + n] = values
        self.size += n

    def finish(self) -> dict[str, np.ndarray]:
        if self.size < len(self.arrays["input_index"]):
            self._resize(self.size)
        return self.arrays

    def _resize(self, capacity: int) -> None:
        for name, array in self.arrays.items():
            resized = np.empty((capacity, *array.shape[1:]), dtype=array.dtype)
            kept = min(self.size, capacity)
            resized[:kept] = array[:kept]
            self.arrays[name] = resized


def _file_metadata(
    layer: str, map_shape: Iterable[int], context_mode: str, bypass: bool
) -> dict[str, Any]:
    """The JSON header of a :class:`Collection` file."""
    return {
        "format": _FORMAT,
        "version": _FORMAT_VERSION,
        "layer": layer,
        "map_shape": [int(size) for size in map_shape],
        "context_mode": context_mode,
        "bypass": bool(bypass),
    }


def _write_collection_file(
    path: str | os.PathLike[str],
    metadata: dict[str, Any],
    n_rows: int,
    columns: dict[str, tuple[np.dtype, tuple[int, ...]]],
    blocks: Callable[[str], Iterable[np.ndarray]],
) -> None:
    """Write a :class:`Collection` file (``np.savez``'s layout, atomically), streaming each
    array ``name`` of ``columns`` (dtype, shape of a row) from ``blocks(name)``, row blocks
    that add up to ``n_rows`` rows."""
    header = np.frombuffer(json.dumps(metadata).encode("utf-8"), dtype=np.uint8)
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        with archive.open("metadata.npy", "w") as member:
            np.lib.format.write_array(member, header, allow_pickle=False)
        for name, (dtype, row_shape) in columns.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array_header_1_0(
                    member,
                    {
                        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                        "fortran_order": False,
                        "shape": (n_rows, *row_shape),
                    },
                )
                written = 0
                for block in blocks(name):
                    member.write(np.ascontiguousarray(block, dtype=dtype).tobytes())
                    written += len(block)
                if written != n_rows:
                    raise ValueError(
                        f"{path}: {name} got {written} rows instead of {n_rows}; the shards "
                        "changed while they were merged"
                    )


def _shard_name(index: int, suffix: str) -> str:
    return f"shard-{index:06d}{suffix}"


def _shard_records(directory: Path) -> list[dict[str, Any]]:
    """The records of the finished shards in ``directory`` (in no particular order)."""
    records = []
    for path in sorted(directory.glob("shard-" + "[0-9]" * 6 + ".json")):
        record = read_json(path, what="the record of a shard written by collect_shards()")
        if (
            not isinstance(record, dict)
            or record.get("format") != _SHARD_FORMAT
            or record.get("version") != _SHARD_FORMAT_VERSION
        ):
            raise ValueError(
                f"{path} is not a shard record of version {_SHARD_FORMAT_VERSION}; collect into "
                "a directory of its own"
            )
        records.append(record)
    return records


def _check_same_settings(
    records: list[dict[str, Any]], settings: dict[str, Any], directory: Path
) -> None:
    for record in records:
        if record["settings"] != settings:
            differing = sorted(
                key
                for key in settings.keys() | record["settings"].keys()
                if settings.get(key) != record["settings"].get(key)
            )
            raise ValueError(
                f"{directory / _shard_name(record['shard'], '.json')} was collected with other "
                f"settings ({', '.join(differing)} differ); collect into another directory, or "
                "delete its shards to recollect them"
            )


def _indexable_length(data: Any) -> int:
    """Number of inputs of data that can be read by index (a tensor, array or dataset)."""
    if isinstance(data, torch.Tensor | np.ndarray):
        if data.ndim < 2 or data.shape[0] == 0:
            raise ValueError(
                f"data must have shape (N, ...) with N >= 1 and at least one feature axis, "
                f"got {tuple(data.shape)}"
            )
        return int(data.shape[0])
    if isinstance(data, DataLoader) or not (
        hasattr(data, "__getitem__") and hasattr(data, "__len__")
    ):
        raise TypeError(
            "sharded collection reads each shard's inputs by index: pass a tensor, an array or "
            f"a map-style dataset (for a DataLoader, its .dataset), got {type(data).__name__}"
        )
    if len(data) == 0:
        raise ValueError("data holds no inputs; pass at least one")
    return len(data)


def _shard_batches(data: Any, start: int, stop: int, batch_size: int, digest: Any) -> Iterator[Any]:
    """Batches of inputs ``start .. stop - 1``, fed to ``digest`` as they pass."""
    if isinstance(data, torch.Tensor | np.ndarray):
        for first in range(start, stop, batch_size):
            batch = torch.as_tensor(data[first : min(first + batch_size, stop)])
            _digest_inputs(digest, batch)
            yield batch
        return
    loader = DataLoader(Subset(data, range(start, stop)), batch_size=batch_size, shuffle=False)
    for batch in loader:
        _digest_inputs(digest, batch[0] if isinstance(batch, tuple | list) else batch)
        yield batch


def _inputs_sha256(data: Any, start: int, stop: int, batch_size: int) -> str:
    """Fingerprint of inputs ``start .. stop - 1`` (reads them; runs no model)."""
    digest = hashlib.sha256()
    for _ in _shard_batches(data, start, stop, batch_size, digest):
        pass
    return digest.hexdigest()


def _digest_inputs(digest: Any, batch: Any) -> None:
    """Feed a batch's values, dtype and per-input shape to ``digest`` (not its batching)."""
    values = torch.as_tensor(batch).detach().cpu().contiguous()
    digest.update(f"{values.dtype}{tuple(values.shape[1:])}".encode())
    digest.update(values.reshape(-1).view(torch.uint8).numpy().tobytes())


def _model_sha256(model: nn.Module) -> str:
    """Fingerprint of a model's parameters and buffers (names, dtypes, shapes, values)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        values = tensor.detach().cpu().contiguous()
        digest.update(f"{name}{values.dtype}{tuple(values.shape)}".encode())
        digest.update(values.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _describe_target(target: Any, labels: np.ndarray | None) -> Any:
    """A JSON value identifying what is explained, for shard records."""
    if labels is not None:
        return {"labels_sha256": hashlib.sha256(labels.astype(np.int64).tobytes()).hexdigest()}
    if callable(target):
        module = getattr(target, "__module__", "?")
        return f"callable {module}.{getattr(target, '__qualname__', type(target).__qualname__)}"
    return target if isinstance(target, str) else int(target)
