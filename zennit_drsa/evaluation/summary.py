"""Compare explanation methods by patch flipping: an AUPC table and pooled curves.

Both take one entry per method (e.g. ``"DRSA"``, ``"PRCA"``, ``"random"``, ``"standard"``),
each a :class:`~zennit_drsa.evaluation.PatchFlippingResult` or a list of them (one per
seed); values are pooled over inputs and seeds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from zennit_drsa.evaluation._stats import mean_sem
from zennit_drsa.evaluation.patch_flipping import PatchFlippingResult

__all__ = ["AUPCRow", "aupc_table", "format_aupc_table", "pooled_curves"]

Results = PatchFlippingResult | Sequence[PatchFlippingResult]


@dataclass(frozen=True)
class AUPCRow:
    """One method's AUPC over all its inputs and seeds (lower is better).

    Attributes
    ----------
    method:
        Name of the method.
    mean, sem:
        Mean and standard error of the mean of the normalised AUPC (NaN when ``n`` is 0;
        ``sem`` is NaN when ``n`` is 1).
    n:
        Number of AUPC values summarised (inputs × seeds).
    n_excluded:
        Values left out because they are NaN, i.e. inputs with ``f(x_0) <= 0``.
    """

    method: str
    mean: float
    sem: float
    n: int
    n_excluded: int


def aupc_table(aupcs: Mapping[str, Results | ArrayLike]) -> list[AUPCRow]:
    """Mean ± s.e.m. of the AUPC per method, in the mapping's order.

    Parameters
    ----------
    aupcs:
        Method name → a :class:`PatchFlippingResult`, a sequence of them (seeds), or an
        array of AUPC values of any shape (e.g. ``(n_seeds, n_inputs)``), NaN marking
        excluded inputs.

    Returns
    -------
    One :class:`AUPCRow` per method; all values of a method are pooled.
    """
    if not aupcs:
        raise ValueError("aupc_table needs at least one method")
    rows = []
    for method, entry in aupcs.items():
        values = _aupc_values(method, entry)
        if np.isinf(values).any():
            raise ValueError(f"AUPC values of {method!r} contain Inf")
        finite = values[~np.isnan(values)]
        if finite.size:
            mean, sem = (float(v) for v in mean_sem(finite))
        else:
            mean = sem = float("nan")
        rows.append(AUPCRow(method, mean, sem, int(finite.size), int(values.size - finite.size)))
    return rows


def format_aupc_table(rows: Sequence[AUPCRow], digits: int = 3) -> str:
    """The rows as a Markdown table: method, AUPC mean ± s.e.m., n, excluded."""
    lines = ["| method | AUPC (mean ± s.e.m.) | n | excluded |", "|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row.method} | {row.mean:.{digits}f} ± {row.sem:.{digits}f} | {row.n} | "
            f"{row.n_excluded} |"
        )
    return "\n".join(lines)


def _as_results(method: str, entry: object) -> list[PatchFlippingResult] | None:
    """The entry as a list of results, or None if it is not made of results."""
    if isinstance(entry, PatchFlippingResult):
        return [entry]
    if (
        isinstance(entry, Sequence)
        and entry
        and all(isinstance(e, PatchFlippingResult) for e in entry)
    ):
        return list(entry)
    if isinstance(entry, Sequence) and any(isinstance(e, PatchFlippingResult) for e in entry):
        raise ValueError(f"{method!r} mixes PatchFlippingResults with other values")
    return None


def _aupc_values(method: str, entry: Results | ArrayLike) -> np.ndarray:
    results = _as_results(method, entry)
    if results is not None:
        return np.concatenate([r.aupc for r in results])
    values = np.asarray(entry, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError(f"no AUPC values for {method!r}")
    return values


def pooled_curves(method: str, entry: Results) -> tuple[np.ndarray, np.ndarray]:
    """One method's flipping curves pooled over inputs and seeds.

    Parameters
    ----------
    method:
        The method's name (for messages).
    entry:
        A :class:`PatchFlippingResult` or a sequence of them (seeds) on one fraction grid.

    Returns
    -------
    tuple of numpy.ndarray
        The shared fraction grid ``(n_points,)`` and the normalised curves of all valid
        inputs ``(n, n_points)``.
    """
    results = _as_results(method, entry)
    if results is None:
        raise ValueError(
            f"{method!r}: pooled curves need PatchFlippingResults (curves), "
            f"got {type(entry).__name__}"
        )
    grid = results[0].fractions
    if any(not np.array_equal(r.fractions, grid) for r in results):
        raise ValueError(f"{method!r}: results use different fraction grids (n_points)")
    return grid, np.concatenate([r.normalized[r.valid] for r in results])
