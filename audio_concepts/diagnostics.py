"""Signs that the settings do not suit the model: concepts that fill the layer or overlap.

Two mistakes are easy to make on a model of one's own and silent otherwise:

* ``K · d_k = d``: the subspaces span the whole layer, so the residual is always zero and
  every bit of relevance is forced into some concept (with ``subspace_dim=None`` this is the
  default, ``d_k = d // K``).
* Redundant concepts: two concept heatmaps that point at the same time–frequency regions on
  most chunks (mean cosine similarity of their positive parts above a threshold) are one
  concept split in two; fewer concepts usually separate better (METHOD.md §5: surplus
  subspaces split one object).

The analysis records both in the summary and shows them in the report and on the command line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "OVERLAP_THRESHOLD",
    "as_json",
    "concept_overlap",
    "coverage_warning",
    "overlap_warnings",
]

OVERLAP_THRESHOLD = 0.5
"""Mean heatmap cosine above which two concepts are reported as redundant."""


def concept_overlap(heatmaps: np.ndarray) -> np.ndarray:
    """Mean cosine similarity between the positive parts of every pair of concept heatmaps.

    Parameters
    ----------
    heatmaps:
        ``(N, K, ...)`` concept heatmaps of ``N`` inputs (no residual).

    Returns
    -------
    numpy.ndarray
        ``(K, K)`` mean over the inputs of ``cos(max(H_k, 0), max(H_j, 0))``; inputs where
        either map has no positive relevance are left out of that pair's mean (NaN if none
        has it). The diagonal is 1 where defined.
    """
    maps = np.maximum(np.asarray(heatmaps, dtype=np.float64), 0.0)
    maps = maps.reshape(maps.shape[0], maps.shape[1], -1)
    norms = np.linalg.norm(maps, axis=2)  # (N, K)
    gram = np.einsum("nkp,njp->nkj", maps, maps)
    defined = (norms[:, :, None] > 0) & (norms[:, None, :] > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.where(defined, gram / (norms[:, :, None] * norms[:, None, :]), np.nan)
        counts = defined.sum(axis=0)
        return np.where(counts > 0, np.nansum(cosine, axis=0) / np.maximum(counts, 1), np.nan)


def coverage_warning(layer: str, channels: int, n_subspaces: int, subspace_dim: int) -> str | None:
    """A warning when the subspaces span the whole layer (no residual), else ``None``."""
    if n_subspaces * subspace_dim < channels:
        return None
    return (
        f"K = {n_subspaces} subspaces of dimension {subspace_dim} span all {channels} channels "
        f"of layer {layer}: the residual is always 0 and all relevance is forced into some "
        "concept; a smaller K or subspace_dim leaves room for what no concept explains"
    )


def overlap_warnings(
    overlap: Mapping[str, Sequence[Sequence[float | None]]],
    threshold: float = OVERLAP_THRESHOLD,
) -> list[str]:
    """One warning per method whose concepts overlap, naming the most similar pair.

    Parameters
    ----------
    overlap:
        Method → its ``(K, K)`` :func:`concept_overlap` (``None`` for undefined entries).
    threshold:
        Mean cosine above which a pair counts as redundant.
    """
    warnings = []
    for method, matrix in overlap.items():
        values = np.array(
            [[np.nan if v is None else v for v in row] for row in matrix], dtype=np.float64
        )
        k = values.shape[0]
        pairs = [(values[i, j], i, j) for i in range(k) for j in range(i + 1, k)]
        redundant = [(v, i, j) for v, i, j in pairs if np.isfinite(v) and v > threshold]
        if redundant:
            value, i, j = max(redundant)
            warnings.append(
                f"{method}: {len(redundant)} of {len(pairs)} concept pairs overlap (mean heatmap "
                f"cosine above {threshold}; concepts {i + 1} and {j + 1}: {value:.2f}); a "
                "smaller K may separate better"
            )
    return warnings


def as_json(matrix: np.ndarray) -> list[list[Any]]:
    """A ``(K, K)`` matrix as nested lists with ``None`` for NaN (JSON has no NaN)."""
    return [[float(v) if np.isfinite(v) else None for v in row] for row in matrix]
