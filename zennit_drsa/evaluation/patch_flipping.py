"""Patch flipping: how fast removing the most relevant patches destroys the target score.

Standard patch flipping removes the patches of one heatmap in order of decreasing relevance.
The disentangled variant takes K concept heatmaps of the same input and removes patches
following every concept's own ranking (``ordering="union"`` or ``"round_robin"``) or one
ranking by the concepts' summed positive relevance (``"positive_sum"``), see
:func:`patch_flipping`. The x-axis is always the true fraction of the input area removed,
so curves of a standard map and of K concept maps are comparable; the area under the
normalised curve (AUPC) summarises a curve, and lower is better.

Insertion curves (``direction="insertion"``) run the same sequence the other way: from the
input with every patch removed, patches are put back most relevant first. The state after
inserting a fraction ``φ`` is the input with the least relevant ``1 − φ`` of the area
removed, so this is the least-relevant-first (LeRF) curve of the literature read from the
other end; higher is better.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from zennit_drsa._moved import REMOVED_IN
from zennit_drsa.evaluation._patches import (
    ORDERINGS,
    Ordering,
    PatchGrid,
    check_batch_size,
    check_heatmaps,
    check_inputs,
    check_patch_size,
    check_targets,
    model_device,
    perturbed_batches,
    removal_images,
    removal_order,
    step_counts,
)
from zennit_drsa.evaluation._stats import mean_sem
from zennit_drsa.precision import Precision, check_precision, lrp_precision

__all__ = ["FlippingCurve", "PatchFlippingResult", "patch_flipping"]

# Deprecated: the removal value patch_flipping used when none was given, and the value of the
# deprecated LOG_MEL_FLOOR. It is the floor of one audio front-end (audio_cnn.LogMel), which
# the plugin core does not own; the front-end in use knows its own floor.
_OLD_LOG_MEL_FLOOR = -4.0
_USE_THE_FRONT_END = "use your front-end's floor, e.g. audio_cnn.LogMel.floor"

Score = Literal["logit", "relu_logit"]
SCORES: tuple[str, ...] = ("logit", "relu_logit")
Direction = Literal["deletion", "insertion"]
DIRECTIONS: tuple[str, ...] = ("deletion", "insertion")


@dataclass(frozen=True)
class FlippingCurve:
    """The raw perturbation curve of one input, one point per evaluated step.

    For insertion curves, "removed" reads "inserted": the curve starts at the input with
    every patch removed and ends at the unperturbed input.

    Attributes
    ----------
    n_removed:
        ``(n_steps + 1,)`` patches removed (inserted) so far, starting at 0 (deletion: the
        unperturbed input; insertion: every patch removed).
    fractions:
        ``(n_steps + 1,)`` true fraction of the input area removed (inserted), 0 to 1.
    scores:
        ``(n_steps + 1,)`` target score ``f`` of the perturbed input (not normalised).
    """

    n_removed: np.ndarray
    fractions: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True)
class PatchFlippingResult:
    """Patch-flipping curves and AUPCs of a batch of inputs.

    Inputs with ``f(x_0) <= 0`` cannot be normalised (the ratio flips sign or is undefined):
    they are marked invalid, their ``normalized`` row and ``aupc`` are NaN, and they are
    counted in :attr:`n_excluded`; their unnormalised AUPC is still reported.

    Attributes
    ----------
    fractions:
        ``(n_points,)`` common grid of removed-area (insertion: inserted-area) fractions,
        0 … 1.
    scores:
        ``(B, n_points)`` scores interpolated (linearly) onto ``fractions``.
    normalized:
        ``(B, n_points)`` ``scores / f(x_0)``; NaN rows for invalid inputs.
    aupc:
        ``(B,)`` area under the normalised curve, trapezoid rule on each input's exact
        fractions (not the grid); NaN for invalid inputs. Deletion: lower is better;
        insertion: higher is better (see :attr:`higher_is_better`).
    aupc_unnormalized:
        ``(B,)`` area under the raw score curve, in score units.
    initial_scores:
        ``(B,)`` ``f(x_0)``, the score of the unperturbed input (for insertion the curve's
        last point, not its first).
    valid:
        ``(B,)`` bool, ``f(x_0) > 0``.
    curves:
        The raw per-input curves the above are computed from.
    direction:
        ``"deletion"`` or ``"insertion"``.
    """

    fractions: np.ndarray
    scores: np.ndarray
    normalized: np.ndarray
    aupc: np.ndarray
    aupc_unnormalized: np.ndarray
    initial_scores: np.ndarray
    valid: np.ndarray
    curves: tuple[FlippingCurve, ...]
    direction: Direction = "deletion"

    @property
    def higher_is_better(self) -> bool:
        """Whether a higher AUPC means a better explanation: True for insertion curves."""
        return self.direction == "insertion"

    @property
    def n_excluded(self) -> int:
        """Number of inputs left out of normalised summaries because ``f(x_0) <= 0``."""
        return int((~self.valid).sum())

    def mean_aupc(self) -> tuple[float, float]:
        """Mean and s.e.m. of the normalised AUPC over the valid inputs."""
        mean, sem = mean_sem(self.aupc[self.valid])
        return float(mean), float(sem)

    def mean_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and s.e.m. ``(n_points,)`` of the normalised curve over the valid inputs."""
        return mean_sem(self.normalized[self.valid], axis=0)


def patch_flipping(
    model: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    heatmaps: torch.Tensor | np.ndarray,
    targets: torch.Tensor | np.ndarray | Sequence[int],
    *,
    patch_size: int | tuple[int, int] = (8, 8),
    ordering: Ordering = "union",
    direction: Direction = "deletion",
    removal: float | Literal["mean"] | torch.Tensor | None = None,
    mean_image: torch.Tensor | None = None,
    score: Score = "logit",
    patches_per_step: int | None = None,
    n_steps: int | None = None,
    n_points: int = 101,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    precision: Precision = "full",
) -> PatchFlippingResult:
    """Remove (or insert) patches in order of relevance and record the target score.

    Parameters
    ----------
    model:
        Maps a batch ``(N, C, H, W)`` to logits ``(N, n_classes)``; an ``nn.Module`` must be
        in eval mode. Called under ``torch.no_grad()``.
    inputs:
        ``(B, C, H, W)`` floating inputs, e.g. log-mel images ``(B, 1, n_mels, frames)``.
    heatmaps:
        ``(B, C, H, W)`` one heatmap per input (standard patch flipping), or
        ``(B, K, C, H, W)`` K concept heatmaps per input (disentangled). K = 1 is exactly
        the standard procedure.
    targets:
        ``(B,)`` class index whose logit is tracked per input (one int: the same for all).
    patch_size:
        ``(h, w)`` of the patches (an int for square ones). Patches span all channels;
        where H or W is not divisible, edge patches are smaller and count with their true
        area. A patch's relevance is the heatmap summed over it.
    ordering:
        How K rankings become one removal sequence. ``"union"``: each step removes the next
        ``patches_per_step`` patches of every concept's own ranking, skipping patches
        already removed, so a step removes between 1 and ``K * patches_per_step`` patches.
        ``"round_robin"``: concepts take turns, each removing its best-ranked patch still
        present; a step is ``patches_per_step`` turns per concept. ``"positive_sum"``:
        one ranking by ``Σ_k max(0, R_kp)``, where ``R_kp`` is concept k's relevance summed
        over patch p (clipped per concept, then summed); a step is ``patches_per_step``
        patches. Ties between patches keep raster order. With K = 1, ``"positive_sum"``
        differs from the standard procedure only in that patches of negative relevance all
        rank 0 (raster order among them).
    direction:
        ``"deletion"``: start from the input and remove patches in the sequence the
        ordering gives (most relevant first); lower AUPC is better. ``"insertion"``:
        start from the input with every patch removed and put patches back in that same
        sequence, same steps; the curve ends at ``f(x_0)`` and higher AUPC is better. The
        state after inserting the first ``n`` patches is the input with the other
        ``n_patches - n`` removed, i.e. the least relevant removed first: the insertion
        curve at inserted fraction ``φ`` is the least-relevant-first deletion curve at
        removed fraction ``1 − φ``. (Inserting least relevant first would only mirror the
        deletion curve, with the same AUPC, so it is not offered.)
    removal:
        Value written into removed patches: a float; ``"mean"`` to use ``mean_image`` (e.g.
        the dataset-mean input); or a tensor broadcastable to ``(C, H, W)``, or
        ``(B, C, H, W)`` with one removal image per input. For log-mel inputs use the
        front-end's floor, the log-mel of silence (e.g. ``logmel.floor`` of an
        ``audio_cnn.LogMel``, in log10 units), never 0: 0 is a mel energy of 1, which is
        loud, so "removed" patches would inject evidence instead of deleting it.
        ``None`` (deprecated, a :class:`DeprecationWarning`; give the value): -4.0, the
        floor of the reference log-mel front-end.
    mean_image:
        ``(C, H, W)`` (or broadcastable) image used when ``removal="mean"``.
    score:
        ``"logit"`` (the target logit) or ``"relu_logit"`` (``max(0, logit)``).
    patches_per_step:
        Patches removed per concept per step (default 1, every step evaluated).
    n_steps:
        Instead of ``patches_per_step``: this many steps, evenly spaced in the number of
        patches removed.
    n_points:
        Size of the common fraction grid the curves are interpolated onto for averaging.
    batch_size:
        Perturbed inputs per model call. All steps of all inputs are queued and run in
        batches; the result does not depend on ``batch_size`` (beyond the model's own
        floating-point rounding, which some kernels vary with the batch size).
    device:
        Where perturbed inputs are built and the model runs; default: the device of the
        model's first parameter (or buffer), else that of ``inputs``.
    precision:
        ``"full"`` (default): the model runs in float32 without TF32 on CUDA, whatever the
        global settings, like the LRP that made the heatmaps (see
        :mod:`zennit_drsa.precision`); ``"tf32"``: keep PyTorch's settings, for speed.

    Returns
    -------
    :class:`PatchFlippingResult`. The AUPC is normalised by ``f(x_0)``, the score of the
    unperturbed input, in both directions; inputs with ``f(x_0) <= 0`` are excluded from
    normalised values (NaN) and counted, see the class.

    Raises
    ------
    ValueError
        On malformed inputs (shapes, dtypes, NaN/Inf, empty batch, bad targets), unknown
        options, a model in training mode or a model output that is not ``(N, n_classes)``
        finite logits.
    """
    if removal is None:
        warnings.warn(
            f"patch_flipping without removal= is deprecated and falls back to "
            f"{_OLD_LOG_MEL_FLOOR}, the floor of one log-mel front-end; pass the removal "
            f"value ({_USE_THE_FRONT_END}); the fallback is removed in zennit-drsa {REMOVED_IN}",
            DeprecationWarning,
            stacklevel=2,
        )
        removal = _OLD_LOG_MEL_FLOOR
    inputs = check_inputs(inputs)
    heatmaps = check_heatmaps(heatmaps, inputs.shape)
    n_inputs, _, height, width = inputs.shape
    target_index = check_targets(targets, n_inputs)
    patch_h, patch_w = check_patch_size(patch_size)
    if ordering not in ORDERINGS:
        raise ValueError(f"ordering must be one of {ORDERINGS}, got {ordering!r}")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    if patches_per_step is not None and n_steps is not None:
        raise ValueError("give either patches_per_step or n_steps, not both")
    for name, value in (("patches_per_step", patches_per_step), ("n_steps", n_steps)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not isinstance(n_points, int) or n_points < 2:
        raise ValueError(f"n_points must be an int >= 2, got {n_points!r}")
    check_batch_size(batch_size)
    check_precision(precision)
    if isinstance(model, nn.Module) and model.training:
        raise ValueError("the model is in training mode (dropout, batch statistics); call .eval()")
    device = torch.device(device) if device is not None else model_device(model, inputs)

    grid = PatchGrid(height, width, patch_h, patch_w)
    relevance = grid.relevance(heatmaps)
    areas = grid.areas()
    pixel_patch = grid.patch_index()
    rank_maps = np.empty((n_inputs, height, width), dtype=np.int64)
    counts_per_input = []
    fractions_per_input = []
    for i in range(n_inputs):
        order, rounds = removal_order(relevance[i], ordering)
        counts = np.concatenate(
            ([0], step_counts(rounds, patches_per_step=patches_per_step or 1, n_steps=n_steps))
        )
        removed_area = np.concatenate(([0], np.cumsum(areas[order])))
        position = np.empty_like(order)
        position[order] = np.arange(order.shape[0])
        if direction == "insertion":
            # The first n patches of the sequence are present iff the last n_patches - n are
            # removed: the same removal machinery on the reversed sequence.
            position = order.shape[0] - 1 - position
        # A pixel is removed once the number of removed patches exceeds its patch's position.
        rank_maps[i] = position[pixel_patch]
        counts_per_input.append(counts)
        fractions_per_input.append(removed_area[counts] / (height * width))

    job_input = np.concatenate([np.full(c.shape, i) for i, c in enumerate(counts_per_input)])
    job_count = np.concatenate(counts_per_input)
    if direction == "insertion":
        job_count = grid.n_patches - job_count
    fill = removal_images(removal, mean_image, inputs)
    raw = _run_jobs(
        model,
        inputs,
        torch.from_numpy(rank_maps),
        fill,
        target_index,
        job_input,
        job_count,
        batch_size=batch_size,
        device=device,
        precision=precision,
    )
    if score == "relu_logit":
        raw = np.maximum(raw, 0.0)

    splits = np.cumsum([c.shape[0] for c in counts_per_input])[:-1]
    curves = tuple(
        FlippingCurve(n_removed=c, fractions=f, scores=s)
        for c, f, s in zip(
            counts_per_input, fractions_per_input, np.split(raw, splits), strict=True
        )
    )
    return _summarise(curves, n_points, direction)


def _summarise(
    curves: tuple[FlippingCurve, ...], n_points: int, direction: Direction
) -> PatchFlippingResult:
    """Normalise, integrate and grid the raw curves."""
    grid = np.linspace(0.0, 1.0, n_points)
    # f(x_0) is where a deletion curve starts and where an insertion curve ends.
    initial = np.array([c.scores[0 if direction == "deletion" else -1] for c in curves])
    valid = initial > 0
    aupc_raw = np.array([_trapezoid(c.scores, c.fractions) for c in curves])
    scores = np.stack([np.interp(grid, c.fractions, c.scores) for c in curves])
    # Only positive f(x_0) give a meaningful ratio; the rest stay NaN instead of flipping sign.
    safe = np.where(valid, initial, np.nan)
    return PatchFlippingResult(
        fractions=grid,
        scores=scores,
        normalized=scores / safe[:, None],
        aupc=aupc_raw / safe,
        aupc_unnormalized=aupc_raw,
        initial_scores=initial,
        valid=valid,
        curves=curves,
        direction=direction,
    )


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    """Trapezoid-rule integral of ``y`` over ``x`` (``np.trapezoid`` needs numpy >= 2)."""
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def _run_jobs(
    model: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    rank_maps: torch.Tensor,
    fill: torch.Tensor,
    targets: torch.Tensor,
    job_input: np.ndarray,
    job_count: np.ndarray,
    *,
    batch_size: int,
    device: torch.device,
    precision: Precision,
) -> np.ndarray:
    """Target logits of every (input, removed count) job, ``(n_jobs,)`` float64."""
    targets = targets.to(device)
    out = np.empty(job_input.shape[0], dtype=np.float64)
    batches = perturbed_batches(
        inputs,
        rank_maps,
        fill,
        job_input,
        job_input,
        job_count,
        batch_size=batch_size,
        device=device,
    )
    with torch.no_grad(), lrp_precision(precision):
        for jobs, rows, perturbed in batches:
            logits = model(perturbed)
            if not isinstance(logits, torch.Tensor) or logits.shape[:1] != rows.shape:
                raise ValueError(
                    "the model must return logits (N, n_classes) for a batch (N, C, H, W); got "
                    f"{getattr(logits, 'shape', type(logits).__name__)} for N = {rows.shape[0]}"
                )
            if logits.ndim != 2:
                raise ValueError(f"the model must return 2-D logits, got {tuple(logits.shape)}")
            if jobs.start == 0 and int(targets.max()) >= logits.shape[1]:
                raise ValueError(
                    f"target {int(targets.max())} is out of range for {logits.shape[1]} classes"
                )
            picked = logits.gather(1, targets[rows, None]).squeeze(1)
            if not torch.isfinite(picked).all():
                raise ValueError(
                    "the model returned NaN/Inf logits on perturbed inputs; check the removal "
                    "value and the model"
                )
            out[jobs] = picked.double().cpu().numpy()
    return out


def _deprecated_log_mel_floor(module: str) -> float:
    """The value of the deprecated ``LOG_MEL_FLOOR`` of ``module``, with its warning.

    Called by the PEP 562 ``__getattr__`` of the modules that exported the name.
    """
    warnings.warn(
        f"{module}.LOG_MEL_FLOOR is deprecated: the plugin core owns no audio constant; "
        f"{_USE_THE_FRONT_END}. The name is removed in zennit-drsa {REMOVED_IN}",
        DeprecationWarning,
        stacklevel=3,  # the user's code, past the module's __getattr__
    )
    return _OLD_LOG_MEL_FLOOR


def __getattr__(name: str) -> Any:
    if name == "LOG_MEL_FLOOR":
        return _deprecated_log_mel_floor(__name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
