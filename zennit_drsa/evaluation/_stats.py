"""Mean and standard error of the mean: the one summary every evaluation table reports."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["mean_sem"]


def mean_sem(values: ArrayLike, axis: int | None = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error of the mean along one axis.

    Parameters
    ----------
    values:
        Any array-like of finite numbers, e.g. AUPCs ``(n_inputs,)`` or curves
        ``(n_inputs, n_points)``.
    axis:
        Axis that holds the repetitions (inputs, seeds); ``None`` pools every value.

    Returns
    -------
    mean, sem:
        Arrays (0-d for a pooled or 1-d input) of the mean and of
        ``std(ddof=1) / sqrt(n)``. The s.e.m. of a single value is undefined and returned
        as NaN rather than a misleading 0.

    Raises
    ------
    ValueError
        If there are no values along ``axis`` or any value is NaN/Inf (filter invalid
        inputs first, e.g. ``result.aupc[result.valid]``).
    """
    array = np.asarray(values, dtype=np.float64)
    if axis is None:
        array = array.reshape(-1)
        axis = 0
    if array.ndim == 0:
        raise ValueError("mean_sem needs an array of values, got a scalar")
    n = array.shape[axis]
    if n == 0:
        raise ValueError("mean_sem got no values to summarise (the axis has length 0)")
    if not np.isfinite(array).all():
        raise ValueError(
            "mean_sem got NaN/Inf values; drop invalid entries first "
            "(for patch flipping: result.aupc[result.valid])"
        )
    mean = array.mean(axis=axis)
    if n == 1:
        return mean, np.full_like(mean, np.nan)
    return mean, array.std(axis=axis, ddof=1) / np.sqrt(n)
