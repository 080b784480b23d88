"""Concept selectivity: does removing what concept k points at lower concept k, and only k?

Needs no ground truth. For every input and concept k, the top patches of concept heatmap
k (a fraction of the input area) are removed, and the layer relevance of every concept k'
is measured again. The relative drop::

    D[k, k'] = (R_k'(x) − R_k'(x without k's top patches)) / |R_k'(x)|

is positive when concept k' loses relevance (for a negative ``R_k'(x)``: when it falls
further below zero), in units of the unperturbed relevance's magnitude. Rows are the
removed concept, columns the measured one. A faithful, disentangled decomposition gives a
diagonal-dominant K×K matrix; one number per input summarises it::

    selectivity = mean over k of ( D[k, k] − mean over k' ≠ k of D[k, k'] ),

own drop minus mean other drop: 0 when removing a concept's patches hits every concept
alike, positive when it hits its own concept more (higher is better).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from zennit_drsa.evaluation._patches import (
    PatchGrid,
    check_batch_size,
    check_heatmaps,
    check_inputs,
    check_patch_size,
    check_targets,
    perturbed_batches,
    removal_images,
)
from zennit_drsa.evaluation._stats import mean_sem

__all__ = ["SelectivityResult", "concept_selectivity"]

RelevanceFn = Callable[..., torch.Tensor | np.ndarray]


@dataclass(frozen=True)
class SelectivityResult:
    """Concept selectivity of a batch of inputs (B inputs, K concepts).

    Inputs where some ``R_k'(x)`` is exactly 0 have undefined relative drops (NaN); they
    are marked invalid, their ``selectivity`` is NaN, and summaries leave them out.

    Attributes
    ----------
    baseline:
        ``(B, K)`` layer relevance ``R_k'(x)`` of every concept on the unperturbed input.
    perturbed:
        ``(B, K, K)``; ``[i, k, k']`` is ``R_k'`` after removing concept k's top patches.
    drops:
        ``(B, K, K)`` relative drops ``D[k, k']`` (see the module), dimensionless.
    selectivity:
        ``(B,)`` own drop minus mean other drop, averaged over the concepts.
    valid:
        ``(B,)`` bool, every drop of the input finite.
    n_removed:
        ``(B, K)`` patches removed for each concept.
    fractions:
        ``(B, K)`` true fraction of the input area those patches cover.
    """

    baseline: np.ndarray
    perturbed: np.ndarray
    drops: np.ndarray
    selectivity: np.ndarray
    valid: np.ndarray
    n_removed: np.ndarray
    fractions: np.ndarray

    @property
    def n_excluded(self) -> int:
        """Number of inputs left out of summaries (some ``R_k'(x) = 0``)."""
        return int((~self.valid).sum())

    def mean_selectivity(self) -> tuple[float, float]:
        """Mean and s.e.m. of the selectivity over the valid inputs (higher is better)."""
        mean, sem = mean_sem(self.selectivity[self.valid])
        return float(mean), float(sem)

    def mean_drops(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and s.e.m. ``(K, K)`` of the drop matrix over the valid inputs."""
        return mean_sem(self.drops[self.valid], axis=0)


def concept_selectivity(
    relevance_fn: RelevanceFn,
    inputs: torch.Tensor,
    heatmaps: torch.Tensor | np.ndarray,
    *,
    removal: float | Literal["mean"] | torch.Tensor,
    fraction: float = 0.1,
    patch_size: int | tuple[int, int] = (8, 8),
    mean_image: torch.Tensor | None = None,
    targets: torch.Tensor | np.ndarray | Sequence[int] | None = None,
    batch_size: int = 64,
    device: torch.device | str | None = None,
) -> SelectivityResult:
    """Remove each concept's top patches and measure the relative drop of every concept.

    Parameters
    ----------
    relevance_fn:
        Computes the K concepts' layer relevances of a batch, ``(N, C, H, W) → (N, K)``
        (tensor or array; e.g. the per-concept sums of a DRSA attribution at the layer).
        Called as ``relevance_fn(batch)``, or ``relevance_fn(batch, batch_targets)`` with
        ``(N,)`` int64 class indices when ``targets`` is given. It owns the model: it is
        called with gradients enabled (LRP needs them) and must put the model in eval mode.
    inputs:
        ``(B, C, H, W)`` floating inputs.
    heatmaps:
        ``(B, K, C, H, W)`` concept heatmaps, K ≥ 2; a patch's relevance for concept k is
        heatmap k summed over the patch.
    removal:
        Value written into removed patches, as in
        :func:`~zennit_drsa.evaluation.patch_flipping`: a float (for log-mel inputs the
        front-end's floor, never 0), ``"mean"`` with ``mean_image``, or a tensor
        broadcastable to ``(C, H, W)`` or ``(B, C, H, W)``.
    fraction:
        Area to remove per concept, in (0, 1]: the patches ranked by decreasing relevance
        for concept k (ties in raster order, whatever their sign), as few as cover at least
        ``fraction`` of the input area (true patch areas; edge patches may be smaller).
    patch_size:
        ``(h, w)`` of the patches (an int for square ones); they span all channels.
    mean_image:
        ``(C, H, W)`` image used when ``removal="mean"``.
    targets:
        ``(B,)`` class indices (one int: the same for all) passed on to ``relevance_fn``.
    batch_size:
        Perturbed inputs per ``relevance_fn`` call; ``B · (K + 1)`` inputs are evaluated.
    device:
        Where the perturbed inputs are built; default: that of ``inputs``.

    Returns
    -------
    :class:`SelectivityResult`.

    Raises
    ------
    ValueError
        On malformed inputs or heatmaps, K < 2, a bad ``fraction``, ``patch_size``,
        ``batch_size`` or removal value, or a ``relevance_fn`` output that is not ``(N, K)``
        finite numbers.
    """
    inputs = check_inputs(inputs)
    heatmaps = check_heatmaps(heatmaps, inputs.shape)
    n_inputs, n_concepts = heatmaps.shape[:2]
    if n_concepts < 2:
        raise ValueError(
            f"selectivity compares concepts with each other and needs K >= 2 heatmaps per "
            f"input, (B, K, C, H, W); got K = {n_concepts}"
        )
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise ValueError(f"fraction must be a number in (0, 1], got {fraction!r}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1] (area removed per concept), got {fraction}")
    patch_h, patch_w = check_patch_size(patch_size)
    check_batch_size(batch_size)
    target_index = None if targets is None else check_targets(targets, n_inputs)
    fill = removal_images(removal, mean_image, inputs)
    device = torch.device(device) if device is not None else inputs.device

    height, width = inputs.shape[-2:]
    grid = PatchGrid(height, width, patch_h, patch_w)
    rankings = np.argsort(-grid.relevance(heatmaps), axis=-1, kind="stable")
    covered = np.cumsum(grid.areas()[rankings], axis=-1)
    # Fewest top patches covering the area; the slack keeps e.g. 0.3 · 10 from needing 4.
    needed = fraction * height * width * (1 - 1e-12)
    n_removed = (covered < needed).sum(axis=-1) + 1
    fractions = np.take_along_axis(covered, n_removed[..., None] - 1, axis=-1)[..., 0]
    positions = np.empty_like(rankings)
    np.put_along_axis(positions, rankings, np.arange(grid.n_patches), axis=-1)
    rank_maps = positions[..., grid.patch_index()].reshape(n_inputs * n_concepts, height, width)

    # Per input: the unperturbed input (count 0), then one removal per concept.
    job_input = np.repeat(np.arange(n_inputs), n_concepts + 1)
    job_map = job_input * n_concepts + np.tile(np.r_[0, np.arange(n_concepts)], n_inputs)
    job_count = np.concatenate([np.zeros((n_inputs, 1), np.int64), n_removed], axis=1).ravel()
    out = np.empty((job_input.shape[0], n_concepts), dtype=np.float64)
    for jobs, rows, batch in perturbed_batches(
        inputs,
        torch.from_numpy(rank_maps),
        fill,
        job_input,
        job_map,
        job_count,
        batch_size=batch_size,
        device=device,
    ):
        args = (batch,) if target_index is None else (batch, target_index.to(device)[rows])
        out[jobs] = _relevances(relevance_fn(*args), batch.shape[0], n_concepts)

    out = out.reshape(n_inputs, n_concepts + 1, n_concepts)
    baseline, perturbed = out[:, 0], out[:, 1:]
    magnitude = np.abs(baseline)[:, None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        drops = np.where(magnitude > 0, (baseline[:, None, :] - perturbed) / magnitude, np.nan)
    own = np.diagonal(drops, axis1=1, axis2=2)
    others = (drops.sum(axis=2) - own) / (n_concepts - 1)
    return SelectivityResult(
        baseline=baseline,
        perturbed=perturbed,
        drops=drops,
        selectivity=(own - others).mean(axis=1),
        valid=np.isfinite(drops).all(axis=(1, 2)),
        n_removed=n_removed,
        fractions=fractions / (height * width),
    )


def _relevances(values: torch.Tensor | np.ndarray, n_rows: int, n_concepts: int) -> np.ndarray:
    """The output of ``relevance_fn`` as ``(n_rows, n_concepts)`` float64, or a ValueError."""
    if isinstance(values, torch.Tensor):
        values = values.detach().to(device="cpu", dtype=torch.float64).numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (n_rows, n_concepts):
        raise ValueError(
            f"relevance_fn must return the K = {n_concepts} concept relevances of each input, "
            f"({n_rows}, {n_concepts}) for this batch; got shape {array.shape}"
        )
    if not np.isfinite(array).all():
        raise ValueError("relevance_fn returned NaN/Inf relevances on perturbed inputs")
    return array
