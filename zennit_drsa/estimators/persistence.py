"""Saving and loading fitted subspace estimators without pickle.

A fitted estimator becomes two files beside each other: ``<path>.npz`` (the arrays, read
back with ``allow_pickle=False``) and ``<path>.json`` (class, parameters, sizes, pooling
orders, normalisation scales, versions, user metadata and the SHA-256 of the ``.npz``).
Both are written to temporary files and renamed into place (:mod:`atomic_io`, so they get
the umask's permissions like every other output), the JSON last, so a reader never sees a
half-written pair; :func:`load` checks that the two belong together.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import numbers
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from atomic_io import atomic_path, read_json, write_text_atomic
from zennit_drsa.estimators._base import SubspaceEstimator
from zennit_drsa.estimators._linalg import orthonormality_error
from zennit_drsa.estimators.baselines import DSA, PCASubspaces, RandomSubspaces
from zennit_drsa.estimators.drsa import DRSA
from zennit_drsa.estimators.oracle import OracleSubspaces
from zennit_drsa.estimators.prca import PRCA

__all__ = ["FORMAT_VERSION", "load", "save"]

#: Version of the file layout; :func:`load` refuses files from a newer layout.
FORMAT_VERSION = 1
_FORMAT = "zennit-drsa-subspaces"
_CLASSES: dict[str, type[SubspaceEstimator]] = {
    cls.__name__: cls for cls in (DRSA, DSA, PRCA, OracleSubspaces, PCASubspaces, RandomSubspaces)
}
_ARRAYS = ("components", "subspace_sizes", "subspace_relevance", "objective_trace")
# Per-subspace integer labels some classes have: array "<name>" holds attribute "<name>_".
_LABEL_ARRAYS: dict[str, tuple[str, ...]] = {"OracleSubspaces": ("group_order",)}
# Saved components must be orthonormal to this tolerance (they were checked when fitted).
_ORTHONORMALITY_TOLERANCE = 1e-6


def save(
    estimator: SubspaceEstimator,
    path: str | os.PathLike[str],
    *,
    metadata: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write a fitted estimator to ``<path>.npz`` and ``<path>.json``.

    Parameters
    ----------
    estimator : SubspaceEstimator
        A fitted :class:`DRSA`, :class:`DSA`, :class:`PRCA`, :class:`OracleSubspaces`,
        :class:`PCASubspaces` or :class:`RandomSubspaces`.
    path : str or path-like
        Target without suffix (a ``.npz`` or ``.json`` suffix is dropped). Parent
        directories are created.
    metadata : mapping, optional
        JSON-serialisable information to keep with the subspaces, e.g. the layer name.

    Returns
    -------
    tuple of Path
        The ``.npz`` and ``.json`` paths written.
    """
    name = type(estimator).__name__
    if _CLASSES.get(name) is not type(estimator):
        raise TypeError(f"cannot save a {name}; supported: {', '.join(sorted(_CLASSES))}")
    check_is_fitted(estimator)
    arrays_path, header_path = _paths(path)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        components=estimator.components_,
        subspace_sizes=np.asarray(estimator.subspace_sizes_, dtype=np.int64),
        subspace_relevance=estimator.subspace_relevance_,
        objective_trace=estimator.objective_trace_,
        **{key: getattr(estimator, f"{key}_") for key in _LABEL_ARRAYS.get(name, ())},
    )
    payload = buffer.getvalue()
    params, not_saved = _json_params(estimator.get_params(deep=False))
    p, q = estimator._pooling_orders()
    header = {
        "format": _FORMAT,
        "format_version": FORMAT_VERSION,
        "class": name,
        "params": params,
        "params_not_saved": not_saved,
        "n_features_in": int(estimator.n_features_in_),
        "n_subspaces": len(estimator.subspace_sizes_),
        "subspace_sizes": [int(size) for size in estimator.subspace_sizes_],
        "pooling_orders": {"p": p, "q": q},
        "scale_activations": estimator.scale_activations_,
        "scale_context": estimator.scale_context_,
        "objective": estimator.objective_,
        "n_iter": estimator.n_iter_,
        "objective_trace_length": len(estimator.objective_trace_),
        "feature_names_in": _feature_names(estimator),
        "library_version": _library_version(),
        "arrays_sha256": hashlib.sha256(payload).hexdigest(),
        "metadata": dict(metadata or {}),
    }
    # Serialise before writing anything, so bad metadata leaves no half of a pair behind.
    try:
        text = json.dumps(header, indent=2, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(f"metadata must be JSON-serialisable (finite numbers): {error}") from error
    with atomic_path(arrays_path) as temporary:
        temporary.write_bytes(payload)
    write_text_atomic(header_path, text + "\n")
    return arrays_path, header_path


def load(path: str | os.PathLike[str]) -> SubspaceEstimator:
    """Read an estimator written by :func:`save`, checking it before returning it.

    Parameters
    ----------
    path : str or path-like
        The path given to :func:`save` (with or without ``.npz`` / ``.json``).

    Returns
    -------
    SubspaceEstimator
        A fitted estimator of the saved class, with the saved parameters (sequences as
        tuples; those listed in ``params_not_saved``, such as a ``RandomState`` seed, keep
        their defaults) and the user metadata in the attribute ``metadata_``.
    """
    arrays_path, header_path = _paths(path)
    for required in (header_path, arrays_path):
        if not required.is_file():
            raise FileNotFoundError(f"{required} does not exist; was the estimator saved there?")
    header = read_json(header_path, what="the JSON half of a saved subspace estimator")
    _check_header(header, header_path)
    payload = arrays_path.read_bytes()
    if hashlib.sha256(payload).hexdigest() != header["arrays_sha256"]:
        raise ValueError(
            f"{arrays_path} does not match {header_path} (checksum differs); the two files "
            "come from different saves"
        )
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
            names = (*_ARRAYS, *_LABEL_ARRAYS.get(header["class"], ()))
            missing = sorted(set(names) - set(archive.files))
            if missing:
                raise ValueError(f"lacks the arrays {missing}")
            arrays = {name: archive[name] for name in names}
    except (ValueError, OSError) as error:
        # Object arrays (which would need pickle) end up here too.
        raise ValueError(f"{arrays_path}: {error}") from error
    _check_arrays(arrays, header, arrays_path)

    estimator = _CLASSES[header["class"]]()
    # JSON has no tuples: sequences such as subspace_dim come back as tuples.
    params = {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in header["params"].items()
    }
    try:
        estimator.set_params(**params)
    except ValueError as error:
        message = f"{header_path}: parameters do not fit {header['class']}: {error}"
        raise ValueError(message) from error
    estimator.components_ = arrays["components"].astype(np.float64)
    estimator.subspace_sizes_ = arrays["subspace_sizes"].astype(np.int64)
    estimator.subspace_relevance_ = arrays["subspace_relevance"].astype(np.float64)
    estimator.objective_trace_ = arrays["objective_trace"].astype(np.float64)
    for key in _LABEL_ARRAYS.get(header["class"], ()):
        setattr(estimator, f"{key}_", arrays[key])
    estimator.objective_ = float(header["objective"])
    estimator.n_iter_ = int(header["n_iter"])
    estimator.scale_activations_ = float(header["scale_activations"])
    estimator.scale_context_ = float(header["scale_context"])
    estimator.n_features_in_ = int(header["n_features_in"])
    if header.get("feature_names_in") is not None:
        estimator.feature_names_in_ = np.asarray(header["feature_names_in"], dtype=object)
    estimator.metadata_ = header.get("metadata", {})
    return estimator


def _paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    base = Path(path)
    if base.suffix in (".npz", ".json"):
        base = base.with_suffix("")
    return base.with_name(base.name + ".npz"), base.with_name(base.name + ".json")


def _json_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Parameters as JSON values; those with no JSON form are listed and left out."""
    converted: dict[str, Any] = {}
    not_saved = []
    for key, value in params.items():
        if value is None or isinstance(value, (bool, str)):
            converted[key] = value
        elif isinstance(value, numbers.Integral):
            converted[key] = int(value)
        elif isinstance(value, numbers.Real):
            converted[key] = float(value)
        elif isinstance(value, (torch.device, torch.dtype)):
            converted[key] = str(value).removeprefix("torch.")
        elif isinstance(value, (list, tuple, np.ndarray)) and all(
            isinstance(item, numbers.Integral) for item in value
        ):
            converted[key] = [int(item) for item in value]
        else:
            not_saved.append(key)
    return converted, not_saved


def _feature_names(estimator: SubspaceEstimator) -> list[str] | None:
    names = getattr(estimator, "feature_names_in_", None)
    return None if names is None else [str(name) for name in names]


def _library_version() -> str | None:
    try:
        return importlib.metadata.version("zennit-drsa")
    except importlib.metadata.PackageNotFoundError:
        return None


def _check_header(header: Any, path: Path) -> None:
    if not isinstance(header, dict) or header.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a zennit-drsa subspace file")
    version = header.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(
            f"{path} has format version {version!r}, which no zennit-drsa writes: the file is "
            "damaged or was not written by zennit_drsa.save"
        )
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} has format version {version!r}; this library reads up to "
            f"{FORMAT_VERSION}, upgrade zennit-drsa"
        )
    if header.get("class") not in _CLASSES:
        raise ValueError(
            f"{path} holds a {header.get('class')!r}; known: {', '.join(sorted(_CLASSES))}"
        )
    required = (
        "params",
        "n_features_in",
        "subspace_sizes",
        "scale_activations",
        "scale_context",
        "objective",
        "n_iter",
        "objective_trace_length",
        "arrays_sha256",
    )
    missing = [key for key in required if key not in header]
    if missing:
        raise ValueError(f"{path} lacks the entries {missing}")


def _check_arrays(arrays: dict[str, np.ndarray], header: dict[str, Any], path: Path) -> None:
    sizes = [int(size) for size in header["subspace_sizes"]]
    d = int(header["n_features_in"])
    expected = {
        "components": (sum(sizes), d),
        "subspace_sizes": (len(sizes),),
        "subspace_relevance": (len(sizes),),
        "objective_trace": (int(header["objective_trace_length"]),),
    }
    for name, shape in expected.items():
        if arrays[name].shape != shape:
            raise ValueError(f"{path}: {name} has shape {arrays[name].shape}, expected {shape}")
        if not np.isfinite(arrays[name]).all():
            raise ValueError(f"{path}: {name} contains NaN or Inf")
    if arrays["subspace_sizes"].tolist() != sizes:
        raise ValueError(f"{path}: subspace sizes differ from those in the JSON file")
    for name in _LABEL_ARRAYS.get(header["class"], ()):
        labels = arrays[name]
        if labels.shape != (len(sizes),) or labels.dtype.kind not in "iu":
            raise ValueError(
                f"{path}: {name} must hold one integer per subspace ({len(sizes)}), got "
                f"shape {labels.shape} and dtype {labels.dtype}"
            )
        if len(np.unique(labels)) != len(labels):
            raise ValueError(f"{path}: {name} repeats a label; each subspace has its own")
    scales = (header["scale_activations"], header["scale_context"], header["objective"])
    if not all(isinstance(x, numbers.Real) and np.isfinite(x) for x in scales):
        raise ValueError(f"{path}: the scales and objective must be finite numbers")
    error = orthonormality_error(arrays["components"])
    if error > _ORTHONORMALITY_TOLERANCE:
        raise ValueError(f"{path}: components are not orthonormal (|WWᵀ − I| = {error:.2e})")
