"""Collect activation and context vectors at a layer: the training data of DRSA.

For every input, :func:`collect` runs one forward and backward pass under the LRP composite
(see :class:`~zennit_drsa.context.LayerContext`), picks ``n_locations`` random positions of
the layer's output map and stores the activation vector ``a`` and context vector ``c`` (both
``d``-dimensional, ``d`` = channels) found there, so that ``a · c`` is the LRP relevance of
that position. Batches stream into preallocated arrays; memory does not grow with the number
of inputs beyond those arrays.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from zennit.core import Composite

from atomic_io import atomic_path

from ._progress import progress_bar
from .context import ContextMode, LayerContext, Target

__all__ = ["Collection", "collect"]

_FORMAT = "zennit_drsa.Collection"
_FORMAT_VERSION = 1
_ARRAYS = ("activations", "context", "input_index", "location", "target")
_DEFAULT_BATCH_SIZE = 32
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
        metadata = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "layer": self.layer,
            "map_shape": list(self.map_shape),
            "context_mode": self.context_mode,
            "bypass": self.bypass,
        }
        header = np.frombuffer(json.dumps(metadata).encode("utf-8"), dtype=np.uint8)
        arrays = {name: getattr(self, name) for name in _ARRAYS}
        with atomic_path(path) as tmp, open(tmp, "wb") as file:
            np.savez(file, metadata=header, **arrays)

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
        Seed of the location draw. The draw depends only on the input order, not on batching.
    device:
        Device for the passes; default: the device of the model's parameters.
    progress:
        Show a progress bar.

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
    if isinstance(n_locations, bool) or not (
        n_locations is None
        or n_locations == "all"
        or (isinstance(n_locations, int) and n_locations > 0)
    ):
        raise ValueError(f"n_locations must be a positive int, 'all' or None, got {n_locations!r}")
    device = _resolve_device(model, device)
    parameter = next(model.parameters(), None)
    # Batches take the model's dtype (float64 arrays are common); the data is not copied whole.
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else None
    batches, n_inputs, n_batches = _batches(data, batch_size)
    labels = _labels_for(target, data)
    rng = np.random.default_rng(random_state)
    rows: _Rows | None = None
    map_shape: tuple[int, ...] = ()
    seen = 0
    input_shape: tuple[int, ...] | None = None
    with (
        LayerContext(model, composite, layer, context=context) as layer_context,
        progress_bar(
            total=n_batches, desc=f"collect {layer_context.name}", unit="batch", enabled=progress
        ) as bar,
    ):
        for number, (x, y) in enumerate(batches):
            x = _check_batch(x, number, seen).to(device=device, dtype=dtype)
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
                raise ValueError(
                    f"batch {number} (inputs {seen}..{seen + size - 1}): the activation or context "
                    f"at layer {layer_context.name!r} is not finite"
                    + (hint if context == "ratio" else "")
                )
            flat = _draw_locations(rng, size, map_shape, n_locations)
            rows.append(
                activations=_gather(activation, flat),
                context=_gather(context_map, flat),
                input_index=np.repeat(np.arange(seen, seen + size), flat.shape[1]),
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


def _draw_locations(
    rng: np.random.Generator, size: int, map_shape: tuple[int, ...], n_locations: Any
) -> np.ndarray:
    """Flat map positions ``(size, k)`` per input, without replacement within an input."""
    n_positions = int(np.prod(map_shape, dtype=np.int64))
    if not map_shape or n_locations in (None, "all"):
        return np.tile(np.arange(n_positions), (size, 1))
    # One uniform key per position, consumed in input order: the draw ignores batching.
    keys = rng.random((size, n_positions))
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
