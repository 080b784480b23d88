"""Concept recovery: do K concept heatmaps separate sound objects known by construction?

On synthetic clips every object j has a mask (the time–frequency bins where it dominates
the mix). ``P[k, j]`` is the positive relevance of concept heatmap k inside mask j; each
column is normalised over k, giving the share of object j's relevance held by each
concept. Objects are matched one-to-one to concepts (Hungarian, maximising the shares),
and a clip scores the mean matched share over its objects:

* 1: each object is explained by its own concept;
* 1/J (J objects): one concept holds all relevance; this is the reported *chance* level;
* 1/K: every object's relevance is spread evenly over the K concepts.

Columns are deliberately not normalised by the total mass over all objects: that would
reward one concept taking everything.

With more objects than concepts (J > K) only K objects can be matched, so even a perfect
decomposition cannot reach 1. Every clip therefore also reports its *ceiling*, the best
score any decomposition could reach, and a *normalised* score on which chance is 0 and the
ceiling 1. The score averages over all J scored objects, an unmatched object adding 0, and
a matched share is at most 1, so::

    ceiling = min(K, J) / J,        normalised = (score − 1/J) / (ceiling − 1/J)
                                               = (J · score − 1) / (min(K, J) − 1),

and the ceiling is reached exactly when each of ``min(K, J)`` objects is held entirely by a
concept of its own. The normalised score is undefined (NaN) when ceiling and chance
coincide (K = 1 or J = 1) and negative below chance (possible when K > J: spreading every
object evenly over K concepts scores 1/K).

:mod:`zennit_drsa.evaluation.interventional` scores the same matching on the drops of the
concepts' layer relevances when objects are removed from the waveform.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy.optimize import linear_sum_assignment

from zennit_drsa.evaluation._stats import mean_sem

__all__ = [
    "RecoveryGroup",
    "RecoveryScore",
    "RecoverySummary",
    "concept_recovery",
    "summarize_recovery",
]


@dataclass(frozen=True)
class RecoveryScore:
    """Concept recovery of one clip.

    Attributes
    ----------
    score:
        Mean matched share over the scored objects, in [0, 1]; NaN if no object has
        positive relevance. Objects left without a concept (more objects than concepts)
        contribute 0.
    chance:
        ``1 / n_objects``, the score of one concept holding all relevance (NaN if none).
    pairs:
        Matched ``(concept, object)`` index pairs (object indices as in ``masks``).
    shares:
        ``(K, J)`` share of each object's positive relevance held by each concept; columns
        sum to 1, NaN columns for skipped objects.
    relevance:
        ``(K, J)`` positive relevance ``P[k, j]`` of heatmap k inside mask j (for
        :func:`~zennit_drsa.evaluation.interventional_recovery`: the drops it matched).
    skipped_objects:
        Objects with no positive relevance (or an empty mask): not scored.
    """

    score: float
    chance: float
    pairs: tuple[tuple[int, int], ...]
    shares: np.ndarray
    relevance: np.ndarray
    skipped_objects: tuple[int, ...]

    @property
    def n_objects(self) -> int:
        """Number of scored objects (those with positive relevance)."""
        return self.shares.shape[1] - len(self.skipped_objects)

    @property
    def eligible(self) -> bool:
        """Whether the clip enters summaries: at least two scored objects."""
        return self.n_objects >= 2

    @property
    def ceiling(self) -> float:
        """``min(K, J) / J`` for J scored objects: the best score any decomposition can reach.

        1 unless there are more objects than concepts; NaN without scored objects.
        """
        n_objects = self.n_objects
        if n_objects == 0:
            return float("nan")
        return min(self.shares.shape[0], n_objects) / n_objects

    @property
    def normalized(self) -> float:
        """``(score − chance) / (ceiling − chance)``: chance → 0, ceiling → 1.

        Equal to ``(J · score − 1) / (min(K, J) − 1)``; NaN when the two levels coincide
        (K = 1 or J = 1) or nothing is scored; negative below chance.
        """
        span = self.ceiling - self.chance
        if not span > 0:
            return float("nan")
        return (self.score - self.chance) / span


def concept_recovery(
    heatmaps: ArrayLike | torch.Tensor, masks: ArrayLike | torch.Tensor
) -> RecoveryScore:
    """Score how well K concept heatmaps separate the J known objects of one clip.

    Parameters
    ----------
    heatmaps:
        ``(K, H, W)`` concept heatmaps, or ``(K, C, H, W)`` (relevance is clipped at 0 per
        element, then summed over channels).
    masks:
        ``(J, H, W)`` boolean (or 0/1) object masks on the same grid; ``J = 0`` is allowed
        (the clip then does not count).

    Returns
    -------
    :class:`RecoveryScore`. A clip counts in summaries only with at least two scored
    objects (``score.eligible``); with one object the best concept trivially scores its
    share.

    Raises
    ------
    ValueError
        On wrong ranks or mismatched grids, NaN/Inf heatmaps, non-binary masks or K = 0.
    """
    relevance_maps = to_numpy(heatmaps, "heatmaps")
    object_masks = to_numpy(masks, "masks")
    if relevance_maps.ndim not in (3, 4):
        raise ValueError(
            f"heatmaps must be (K, H, W) or (K, C, H, W), got shape {relevance_maps.shape}"
        )
    if object_masks.ndim != 3:
        raise ValueError(f"masks must be (J, H, W), got shape {object_masks.shape}")
    if relevance_maps.shape[-2:] != object_masks.shape[-2:]:
        raise ValueError(
            f"heatmaps {relevance_maps.shape} and masks {object_masks.shape} are on different "
            "(H, W) grids"
        )
    if relevance_maps.shape[0] == 0:
        raise ValueError("heatmaps hold no concepts (K = 0)")
    if not np.issubdtype(relevance_maps.dtype, np.number) or not np.isfinite(relevance_maps).all():
        raise ValueError("heatmaps must be finite numbers (found NaN/Inf or a non-numeric dtype)")
    if object_masks.dtype != np.bool_:
        if not np.isin(object_masks, (0, 1)).all():
            raise ValueError("masks must be boolean or 0/1; threshold them first")
        object_masks = object_masks.astype(bool)

    positive = np.maximum(relevance_maps.astype(np.float64), 0.0)
    if positive.ndim == 4:
        positive = positive.sum(axis=1)
    n_concepts, n_objects = positive.shape[0], object_masks.shape[0]
    pixels = positive.shape[1] * positive.shape[2]
    relevance = positive.reshape(n_concepts, pixels) @ object_masks.reshape(n_objects, pixels).T
    return RecoveryScore(**match_objects(relevance, relevance.sum(axis=0)))


def match_objects(values: np.ndarray, totals: np.ndarray) -> dict[str, Any]:
    """Shares, one-to-one matching and score of one clip: what every recovery measure shares.

    Parameters
    ----------
    values:
        ``(K, J)`` float64, what concept k holds of object j.
    totals:
        ``(J,)`` each object's normaliser; objects with ``totals <= 0`` are skipped.

    Returns
    -------
    The fields of a :class:`RecoveryScore`: ``shares = values / totals`` per scored column,
    the Hungarian matching maximising the matched shares, and the score (their sum over
    the number of scored objects, so unmatched objects add 0).
    """
    scored = np.flatnonzero(totals > 0)
    shares = np.full_like(values, np.nan)
    shares[:, scored] = values[:, scored] / totals[scored]
    fields: dict[str, Any] = {
        "score": float("nan"),
        "chance": float("nan"),
        "pairs": (),
        "shares": shares,
        "relevance": values,
        "skipped_objects": tuple(int(j) for j in np.flatnonzero(~(totals > 0))),
    }
    if scored.size == 0:
        return fields
    concepts, columns = linear_sum_assignment(shares[:, scored], maximize=True)
    # Unmatched objects (more objects than concepts) add 0 to the sum but count in the mean.
    fields["score"] = float(shares[concepts, scored[columns]].sum() / scored.size)
    fields["chance"] = 1.0 / scored.size
    fields["pairs"] = tuple(
        sorted((int(k), int(scored[c])) for k, c in zip(concepts, columns, strict=True))
    )
    return fields


@dataclass(frozen=True)
class RecoveryGroup:
    """Concept recovery summarised over the counting clips of a group (a class, or all).

    Attributes
    ----------
    mean, sem:
        Mean and s.e.m. of the clip scores (NaN when no clip counts; ``sem`` NaN for one).
    chance:
        Mean chance level ``1 / n_objects`` over the same clips.
    n_clips:
        Clips that count (at least two scored objects).
    n_excluded_clips:
        Clips left out for having fewer than two scored objects.
    n_skipped_objects:
        Objects without positive relevance, over all clips of the group.
    ceiling:
        Mean ceiling ``min(K, J) / J`` over the counting clips (see
        :attr:`RecoveryScore.ceiling`).
    normalized_mean, normalized_sem:
        Mean and s.e.m. of the clips' normalised scores (chance 0, ceiling 1); NaN when no
        counting clip has one (K = 1).
    """

    mean: float
    sem: float
    chance: float
    n_clips: int
    n_excluded_clips: int
    n_skipped_objects: int
    ceiling: float = float("nan")
    normalized_mean: float = float("nan")
    normalized_sem: float = float("nan")


@dataclass(frozen=True)
class RecoverySummary:
    """Concept recovery over a set of clips: all of them and per class."""

    overall: RecoveryGroup
    per_class: dict[Hashable, RecoveryGroup] = field(default_factory=dict)


def summarize_recovery(
    scores: Sequence[RecoveryScore], labels: Sequence[Hashable] | None = None
) -> RecoverySummary:
    """Mean ± s.e.m. of concept recovery with its chance level, overall and per class.

    Parameters
    ----------
    scores:
        One :class:`RecoveryScore` per clip.
    labels:
        Class of each clip (same length as ``scores``); ``per_class`` follows the order in
        which classes first appear. Omit for an overall summary only.

    Returns
    -------
    :class:`RecoverySummary`.
    """
    scores = list(scores)
    if not scores:
        raise ValueError("summarize_recovery needs at least one clip score")
    if not all(isinstance(s, RecoveryScore) for s in scores):
        raise ValueError(
            "scores must be RecoveryScore objects (from concept_recovery or "
            "interventional_recovery)"
        )
    per_class: dict[Hashable, RecoveryGroup] = {}
    if labels is not None:
        labels = list(labels)
        if len(labels) != len(scores):
            raise ValueError(f"got {len(labels)} labels for {len(scores)} clip scores")
        for label in dict.fromkeys(labels):
            per_class[label] = _group(
                [s for s, c in zip(scores, labels, strict=True) if c == label]
            )
    return RecoverySummary(_group(scores), per_class)


def _group(scores: list[RecoveryScore]) -> RecoveryGroup:
    counting = [s for s in scores if s.eligible]
    skipped = sum(len(s.skipped_objects) for s in scores)
    if not counting:
        nan = float("nan")
        return RecoveryGroup(nan, nan, nan, 0, len(scores), skipped)
    mean, sem = mean_sem([s.score for s in counting])
    chance = float(np.mean([s.chance for s in counting]))
    normalized = [s.normalized for s in counting if np.isfinite(s.normalized)]
    normalized_mean, normalized_sem = mean_sem(normalized) if normalized else (np.nan, np.nan)
    return RecoveryGroup(
        float(mean),
        float(sem),
        chance,
        len(counting),
        len(scores) - len(counting),
        skipped,
        ceiling=float(np.mean([s.ceiling for s in counting])),
        normalized_mean=float(normalized_mean),
        normalized_sem=float(normalized_sem),
    )


def to_numpy(values: ArrayLike | torch.Tensor, name: str) -> np.ndarray:
    """``values`` as a numpy array (floating tensors as float64); ``name`` is for the error."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        # numpy has no bfloat16/half matmul worth trusting; score in float64.
        return (values.double() if values.is_floating_point() else values).numpy()
    try:
        return np.asarray(values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be an array or tensor: {error}") from None
