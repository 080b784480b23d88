"""Every measure of one decomposition, per input, through one code path.

The methods under study and the reference decompositions of known quality (METHOD.md §5)
go through the same functions here, so that a measure's verdict on the references carries
over to the methods. A decomposition is given by its K concept heatmaps per input (the
residual is not a concept); K may differ between inputs (the oracle split has one concept
per sound object of the clip).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from audio_concepts.measures import deletion_name
from zennit_drsa.evaluation import concept_recovery, concept_selectivity, patch_flipping

__all__ = ["FlippingSettings", "score_layer", "score_maps"]

# Orderings that coincide for a single concept map (the standard procedure).
_SINGLE = {"union": "standard", "round_robin": "standard"}

RelevanceFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(inputs (N, C, H, W), targets (N,)) → (N, K)`` concept layer relevances."""


@dataclass(frozen=True)
class FlippingSettings:
    """How patches are ranked, removed and scored (see
    :func:`zennit_drsa.evaluation.patch_flipping`).

    Attributes
    ----------
    patch_size:
        ``(h, w)`` in log-mel bins × frames.
    orderings:
        The disentangled orderings to score deletion under (one measure each).
    insertion_ordering:
        The ordering of the insertion curve.
    removal:
        Value of removed patches, in log10 mel units (the front-end's floor).
    score:
        ``"logit"`` or ``"relu_logit"``.
    selectivity_fraction:
        Area removed per concept for concept selectivity, in (0, 1].
    batch_size:
        Perturbed inputs per forward pass.
    device:
        Where the model runs.
    """

    patch_size: tuple[int, int]
    orderings: tuple[str, ...]
    insertion_ordering: str
    removal: float
    score: str
    selectivity_fraction: float
    batch_size: int
    device: torch.device

    def flipping(self, ordering: str, direction: str) -> dict[str, Any]:
        """Keyword arguments of ``patch_flipping`` for one ordering and direction."""
        return {
            "patch_size": self.patch_size,
            "ordering": ordering,
            "direction": direction,
            "removal": self.removal,
            "score": self.score,
            "batch_size": self.batch_size,
            "device": self.device,
        }


def score_maps(
    network: torch.nn.Module,
    logmel: torch.Tensor,
    concepts: Sequence[np.ndarray],
    labels: np.ndarray,
    settings: FlippingSettings,
    masks: Sequence[np.ndarray] | None = None,
    *,
    curves: dict[str, Any] | None = None,
) -> dict[str, list[float | None]]:
    """The map-level measures of one decomposition, per input.

    Parameters
    ----------
    network:
        The classifier, in eval mode.
    logmel:
        ``(N, 1, M, F)`` the explained inputs.
    concepts:
        Per input its ``(K_i, 1, M, F)`` concept heatmaps (an ``(N, K, 1, M, F)`` array is
        such a sequence).
    labels:
        ``(N,)`` the class each input is explained and scored for.
    settings:
        Patch flipping and selectivity settings.
    masks:
        On synthetic data, per input the ``(J_i, M, F)`` masks of its sound objects.
    curves:
        If given, filled with ``ordering → PatchFlippingResult`` of the deletion curves (for
        figures), for decompositions with one K.

    Returns
    -------
    dict
        Measure name (:data:`~audio_concepts.measures.MEASURES`) → ``N`` values (``None``
        where undefined: a non-positive initial score, too few objects): deletion AUPC per
        ordering, ``insertion``, and with masks ``recovery``, ``recovery_normalized``,
        ``chance`` and ``ceiling``.
    """
    n_inputs = len(concepts)
    groups: dict[int, list[int]] = {}
    for index, maps in enumerate(concepts):
        groups.setdefault(int(maps.shape[0]), []).append(index)
    jobs = [(deletion_name(o), o, "deletion") for o in settings.orderings]
    jobs.append(("insertion", settings.insertion_ordering, "insertion"))
    measures: dict[str, list[float | None]] = {}
    done: dict[tuple[int, str, str], Any] = {}
    for name, ordering, direction in jobs:
        values = np.full(n_inputs, np.nan)
        for n_concepts, indices in groups.items():
            # With one concept, union and round robin are both the standard procedure.
            key = (n_concepts, _SINGLE.get(ordering, ordering) if n_concepts == 1 else ordering,
                   direction)  # fmt: skip
            if key not in done:
                maps = torch.from_numpy(np.stack([concepts[i] for i in indices]))
                done[key] = patch_flipping(
                    network,
                    logmel[indices],
                    maps,
                    labels[indices],
                    **settings.flipping(ordering, direction),
                )
            result = done[key]
            values[indices] = result.aupc
            if curves is not None and direction == "deletion" and len(groups) == 1:
                curves[ordering] = result
        measures[name] = floats(values)
    if masks is not None:
        scores = [concept_recovery(h, m) for h, m in zip(concepts, masks, strict=True)]
        measures["recovery"] = [s.score if s.eligible else None for s in scores]
        measures["recovery_normalized"] = [
            _finite(s.normalized) if s.eligible else None for s in scores
        ]
        measures["chance"] = [s.chance if s.eligible else None for s in scores]
        measures["ceiling"] = [s.ceiling if s.eligible else None for s in scores]
    return measures


def score_layer(
    relevance_fn: RelevanceFn,
    logmel: torch.Tensor,
    concepts: np.ndarray,
    labels: np.ndarray,
    settings: FlippingSettings,
) -> tuple[list[float | None], list[list[float | None]] | None]:
    """Concept selectivity of one decomposition given by subspaces.

    Parameters
    ----------
    relevance_fn:
        The decomposition's concept layer relevances (its subspaces at the layer).
    logmel:
        ``(N, 1, M, F)`` the explained inputs.
    concepts:
        ``(N, K, 1, M, F)`` the decomposition's concept heatmaps.
    labels:
        ``(N,)`` the explained classes.
    settings:
        Patch size, removal value and the area removed per concept.

    Returns
    -------
    tuple
        The ``N`` selectivities (``None`` where undefined; all ``None`` for K < 2) and the
        mean ``(K, K)`` relative drops over the valid inputs (rows: the concept whose patches
        were removed; ``None`` for K < 2).
    """
    if concepts.shape[1] < 2:
        return [None] * len(concepts), None
    result = concept_selectivity(
        relevance_fn,
        logmel,
        concepts,
        removal=settings.removal,
        fraction=settings.selectivity_fraction,
        patch_size=settings.patch_size,
        targets=labels,
        batch_size=settings.batch_size,
        device=settings.device,
    )
    values = np.where(result.valid, result.selectivity, np.nan)
    matrix = (
        result.mean_drops()[0] if result.valid.any() else np.full(result.drops.shape[1:], np.nan)
    )
    return floats(values), [floats(row) for row in matrix]


def floats(values: Sequence[float] | np.ndarray) -> list[float | None]:
    """JSON-safe floats, ``None`` for NaN/Inf."""
    return [_finite(v) for v in np.asarray(values, dtype=np.float64)]


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
