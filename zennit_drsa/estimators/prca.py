"""PRCA: Principal Relevant Component Analysis, the closed-form relevance baseline."""

from __future__ import annotations

from typing import ClassVar

from zennit_drsa.estimators._base import FittedBasis, ShapeOnlyEstimator, TrainingData
from zennit_drsa.estimators._linalg import top_eigenvectors

__all__ = ["PRCA"]


class PRCA(ShapeOnlyEstimator):
    """Subspaces from the top eigenvectors of the symmetrised cross-covariance
    ``(AᵀC + CᵀA) / n``, grouped into consecutive blocks of ``d_k``.

    The mean relevance captured by a span is the sum of its eigenvalues, so the span of all
    blocks holds the most relevance any ``Σ d_k``-dimensional subspace can hold; how it is
    cut into blocks is arbitrary when eigenvalues are close (PRCA does not disentangle).
    With ``K = 1`` it is the classic one-subspace PRCA.

    Parameters
    ----------
    n_subspaces : int, default=4
        Number of subspaces ``K``.
    subspace_dim : int, sequence of int or None, default=None
        As for :class:`~zennit_drsa.estimators.DRSA`.
    distributed : bool, default=False
        As for :class:`~zennit_drsa.estimators.DRSA`: fit on the rows of all processes of
        ``torch.distributed``'s default group, each passing its own.

    Attributes
    ----------
    See :class:`~zennit_drsa.estimators.SubspaceEstimator`; ``objective_`` is the DRSA
    objective (``p = 2``, ``q = 1/2``) of the blocks on the normalised data.
    """

    _needs_context: ClassVar[bool] = True

    def _fit_basis(self, data: TrainingData) -> FittedBasis:
        activations = data.activations
        context = activations if data.context is None else data.context
        cross = data.partition.sum(activations.T @ context) / data.partition.n_total
        _, basis = top_eigenvectors(cross + cross.T, sum(data.sizes))
        return self._closed_form(basis, data)
