"""Interventional concept recovery: do the subspaces separate objects, judged without heatmaps?

On synthetic clips every object j can be removed from the waveform exactly (mix − source
j). The caller measures, per clip, the drop of every concept's layer relevance ``R_k``
(METHOD §4) under each removal::

    drops[k, j] = R_k(clip) − R_k(clip without object j),

positive when removing the object lowers the concept's relevance. Each object's column is
normalised by its **absolute** sum over the concepts, ``Σ_k |drops[k, j]|``, so the shares
lie in [−1, 1] and a concept whose relevance rises when the object goes gets a negative
share instead of inflating the others beyond 1 (normalising by the signed sum would). The
objects are then matched to concepts exactly as in heatmap recovery
(:func:`~zennit_drsa.evaluation.concept_recovery`: Hungarian, maximising the matched
shares, score = mean matched share over the objects), with the same chance level (1/J: one
concept taking everything), ceiling, normalised score and eligibility (at least two scored
objects). :func:`~zennit_drsa.evaluation.summarize_recovery` summarises either kind.

Comparing the two tells where separation is lost: objects separated here but not in the
heatmaps are lost in the backward pass, not in the subspaces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike

from zennit_drsa.evaluation.recovery import RecoveryScore, match_objects, to_numpy

__all__ = ["InterventionalRecoveryScore", "interventional_recovery"]


@dataclass(frozen=True)
class InterventionalRecoveryScore(RecoveryScore):
    """Interventional concept recovery of one clip.

    The fields of :class:`~zennit_drsa.evaluation.RecoveryScore` (with its ``ceiling`` and
    ``normalized``), read for drops: ``relevance`` holds the ``(K, J)`` drops,
    ``shares`` the drops over each column's absolute sum (in [−1, 1], absolute values
    summing to 1 per scored column), ``score`` lies in [−1, 1] (negative only when the
    matched concepts' relevances mostly rise), and ``skipped_objects`` are objects whose
    removal changed no concept's relevance.

    Attributes
    ----------
    logit_drops:
        ``(J,)`` drop of the target logit when each object is removed, in logit units, as
        given by the caller (``None`` if not given); reported, not used in the score.
    """

    logit_drops: np.ndarray | None = None


def interventional_recovery(
    drops: ArrayLike | torch.Tensor, logit_drops: ArrayLike | torch.Tensor | None = None
) -> InterventionalRecoveryScore:
    """Score how well the K concepts' layer relevances separate the J objects of one clip.

    Parameters
    ----------
    drops:
        ``(K, J)`` ``R_k(clip) − R_k(clip without object j)``: the drop of concept k's layer
        relevance when object j is removed from the waveform, in relevance units. ``J = 0``
        is allowed (the clip then does not count).
    logit_drops:
        Optional ``(J,)`` drop of the target logit under the same removals, kept in the
        result for reporting.

    Returns
    -------
    :class:`InterventionalRecoveryScore`; it counts in summaries only with at least two
    scored objects (``score.eligible``).

    Raises
    ------
    ValueError
        If ``drops`` is not a finite 2-D numeric array with K ≥ 1, or ``logit_drops`` is not
        finite with one value per object.
    """
    values = to_numpy(drops, "drops")
    if values.ndim != 2:
        raise ValueError(f"drops must be (K, J), concepts × objects; got shape {values.shape}")
    if values.shape[0] == 0:
        raise ValueError("drops hold no concepts (K = 0)")
    if not np.issubdtype(values.dtype, np.number):
        raise ValueError(f"drops must be numbers, got dtype {values.dtype}")
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError("drops contain NaN/Inf; check the relevance computation")
    logits = None
    if logit_drops is not None:
        logits = to_numpy(logit_drops, "logit_drops").astype(np.float64)
        if logits.shape != (values.shape[1],):
            raise ValueError(
                f"logit_drops must be (J,) = ({values.shape[1]},), one per object; "
                f"got shape {logits.shape}"
            )
        if not np.isfinite(logits).all():
            raise ValueError("logit_drops contain NaN/Inf")
    fields = match_objects(values, np.abs(values).sum(axis=0))
    return InterventionalRecoveryScore(**fields, logit_drops=logits)
