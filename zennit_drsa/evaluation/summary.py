"""Compare explanation methods by patch flipping: an AUPC table and a curve figure.

Both take one entry per method (e.g. ``"DRSA"``, ``"PRCA"``, ``"random"``, ``"standard"``),
each a :class:`~zennit_drsa.evaluation.PatchFlippingResult` or a list of them (one per
seed); values are pooled over inputs and seeds.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from audio_cnn._atomic import atomic_path
from zennit_drsa.evaluation._stats import mean_sem
from zennit_drsa.evaluation.patch_flipping import PatchFlippingResult

if TYPE_CHECKING:
    pass

__all__ = ["AUPCRow", "aupc_table", "format_aupc_table", "plot_flipping_curves"]

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


def plot_flipping_curves(
    results: Mapping[str, Results],
    path: str | os.PathLike[str],
    *,
    title: str = "Patch flipping",
    dpi: int = 120,
) -> None:
    """Mean normalised perturbation curve per method with an s.e.m. band, as a PNG.

    Parameters
    ----------
    results:
        Method name → a :class:`PatchFlippingResult` or a sequence of them (seeds); the
        valid inputs of all of a method's results are pooled. All results must share the
        same fraction grid (same ``n_points``).
    path:
        Output PNG; written atomically (temporary file in the same directory, then
        ``os.replace``), parent directories created.
    title:
        Figure title.
    dpi:
        Resolution of the PNG.
    """
    # Import here: matplotlib is only needed by this function, not by the evaluation.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not results:
        raise ValueError("plot_flipping_curves needs at least one method")
    curves = {method: _pooled_curves(method, entry) for method, entry in results.items()}
    grid = next(iter(curves.values()))[0]
    if any(not np.array_equal(g, grid) for g, _ in curves.values()):
        raise ValueError("results use different fraction grids; run them with the same n_points")
    rows = {row.method: row for row in aupc_table(results)}

    # A bare Figure on an Agg canvas: no pyplot state, so nothing stays open after saving.
    figure = Figure(figsize=(5.5, 4.0))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    for method, (fractions, normalized) in curves.items():
        if normalized.shape[0] == 0:
            ax.plot([], [], label=f"{method} (no valid inputs)")
            continue
        row = rows[method]
        label = f"{method} (AUPC {row.mean:.3f} ± {row.sem:.3f}, n={row.n})"
        mean = normalized.mean(axis=0)
        (line,) = ax.plot(fractions, mean, label=label)
        if normalized.shape[0] > 1:
            _, sem = mean_sem(normalized, axis=0)
            ax.fill_between(fractions, mean - sem, mean + sem, color=line.get_color(), alpha=0.25)
    ax.set(xlabel="fraction of area removed", ylabel="f(x) / f(x₀)", title=title, xlim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")


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


def _pooled_curves(method: str, entry: Results) -> tuple[np.ndarray, np.ndarray]:
    """The shared grid and the normalised curves of all valid inputs, ``(n, n_points)``."""
    results = _as_results(method, entry)
    if results is None:
        raise ValueError(
            f"{method!r}: plot_flipping_curves needs PatchFlippingResults (curves), "
            f"got {type(entry).__name__}"
        )
    grid = results[0].fractions
    if any(not np.array_equal(r.fractions, grid) for r in results):
        raise ValueError(f"{method!r}: results use different fraction grids (n_points)")
    return grid, np.concatenate([r.normalized[r.valid] for r in results])
