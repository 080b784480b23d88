"""Input and parameter checks shared by the subspace estimators.

Inputs may be numpy arrays, anything array-like, or torch tensors on any device; tensors are
copied to host memory here, so every estimator sees numpy from then on.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.utils import check_array

__all__ = [
    "check_context",
    "check_pooling_orders",
    "check_sample_weight",
    "resolve_device",
    "resolve_dtype",
    "subspace_sizes",
    "to_host",
]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def to_host(data: Any) -> Any:
    """Return ``data`` as numpy if it is a torch tensor, else unchanged.

    Half-precision inputs (numpy or torch float16, torch bfloat16) are upcast to float32:
    their 3-digit precision cannot represent the projections the estimators compute.
    """
    if isinstance(data, torch.Tensor):
        data = data.detach()
        if data.dtype in (torch.float16, torch.bfloat16):
            data = data.float()
        return data.cpu().numpy()
    if isinstance(data, np.ndarray) and data.dtype == np.float16:
        return data.astype(np.float32)
    return data


def resolve_device(
    device: str | torch.device | None, input_device: torch.device | None
) -> torch.device:
    """The device to compute on: ``device`` if given, else that of the input tensors, else
    torch's default device."""
    if device is not None:
        return torch.device(device)
    if input_device is not None:
        return input_device
    return torch.empty(0).device


def resolve_dtype(dtype: str | torch.dtype | np.dtype | type) -> torch.dtype:
    """Map ``dtype`` (``"float32"``, ``"float64"``, a torch or numpy float dtype) to torch."""
    if isinstance(dtype, torch.dtype):
        name = str(dtype).removeprefix("torch.")
    else:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = str(dtype)
    if name not in _DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return _DTYPES[name]


def subspace_sizes(
    n_subspaces: int, subspace_dim: int | Sequence[int] | None, n_features: int
) -> tuple[int, ...]:
    """Resolve the subspace dimensions ``d_k``.

    Parameters
    ----------
    n_subspaces : int
        Number of subspaces ``K >= 1``.
    subspace_dim : int, sequence of int or None
        One dimension for all subspaces, one per subspace, or ``None`` for
        ``n_features // n_subspaces``.
    n_features : int
        Ambient dimension ``d``.

    Returns
    -------
    tuple of int
        ``K`` positive dimensions with ``Σ d_k <= d``.
    """
    if not isinstance(n_subspaces, numbers.Integral) or isinstance(n_subspaces, bool):
        raise TypeError(f"n_subspaces must be an int, got {n_subspaces!r}")
    if n_subspaces < 1:
        raise ValueError(f"n_subspaces must be at least 1, got {n_subspaces}")
    if subspace_dim is None:
        if n_subspaces > n_features:
            raise ValueError(
                f"n_subspaces={n_subspaces} exceeds n_features={n_features}: every subspace "
                "needs at least one dimension; lower n_subspaces"
            )
        sizes: tuple[int, ...] = (n_features // n_subspaces,) * n_subspaces
    elif isinstance(subspace_dim, numbers.Integral) and not isinstance(subspace_dim, bool):
        sizes = (int(subspace_dim),) * n_subspaces
    elif isinstance(subspace_dim, (Sequence, np.ndarray)) and all(
        isinstance(size, numbers.Integral) and not isinstance(size, bool) for size in subspace_dim
    ):
        sizes = tuple(int(size) for size in subspace_dim)
        if len(sizes) != n_subspaces:
            raise ValueError(
                f"subspace_dim lists {len(sizes)} sizes but n_subspaces={n_subspaces}; "
                "give one size per subspace"
            )
    else:
        raise TypeError(
            f"subspace_dim must be None, an int or a sequence of ints, got {subspace_dim!r}"
        )
    if min(sizes) < 1:
        raise ValueError(f"subspace dimensions must be at least 1, got {sizes}")
    if sum(sizes) > n_features:
        raise ValueError(
            f"the subspaces need {sum(sizes)} dimensions ({' + '.join(map(str, sizes))}) but "
            f"the data have n_features={n_features}; lower subspace_dim or n_subspaces"
        )
    return sizes


def check_pooling_orders(p: float, q: float) -> None:
    """Check the power-mean orders: ``p >= 1`` (over samples) and ``q > 0`` (over subspaces)."""
    if not isinstance(p, numbers.Real) or not np.isfinite(p) or p < 1:
        raise ValueError(f"p must be a finite number >= 1, got {p!r}")
    if not isinstance(q, numbers.Real) or not np.isfinite(q) or q <= 0:
        raise ValueError(f"q must be a finite number > 0, got {q!r} (q = 1/2 is a soft minimum)")


def check_context(context: Any, activations: np.ndarray) -> np.ndarray:
    """Validate context vectors against already validated activations.

    Parameters
    ----------
    context : array-like or torch.Tensor
        ``(n, d)`` context vectors, one per activation vector.
    activations : numpy.ndarray
        ``(n, d)`` validated activations; the context gets their dtype.

    Returns
    -------
    numpy.ndarray
        ``(n, d)`` finite context in the dtype of ``activations``.
    """
    context = check_array(
        to_host(context), dtype=activations.dtype, input_name="context", ensure_min_samples=0
    )
    if context.shape != activations.shape:
        raise ValueError(
            f"context has shape {context.shape} but the activations have shape "
            f"{activations.shape}; pass one context vector per activation vector"
        )
    return context


def check_sample_weight(sample_weight: Any, n_samples: int, *, local: bool = False) -> np.ndarray:
    """Validate per-sample weights: ``(n_samples,)`` float64, finite, >= 0, not all zero.

    ``local``: the weights of one process's samples among those of several, which may be
    none or all zero (the caller checks the total).
    """
    weights = check_array(
        to_host(sample_weight),
        dtype=np.float64,
        ensure_2d=False,
        ensure_min_samples=0 if local else 1,
        input_name="sample_weight",
    )
    if weights.shape != (n_samples,):
        raise ValueError(
            f"sample_weight has shape {weights.shape}; expected ({n_samples},), one weight "
            "per sample"
        )
    if (weights < 0).any() or (weights.sum() == 0 and not local):
        raise ValueError("sample_weight must be non-negative and not all zero")
    return weights
