"""Baselines with the DRSA interface: DSA, uncentred PCA blocks and random subspaces."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from zennit_drsa.estimators._base import (
    FittedBasis,
    ShapeOnlyEstimator,
    SubspaceEstimator,
    TrainingData,
    generator,
)
from zennit_drsa.estimators._linalg import haar_orthonormal, top_eigenvectors
from zennit_drsa.estimators.drsa import PooledSubspaceEstimator

__all__ = ["DSA", "PCASubspaces", "RandomSubspaces"]


class DSA(PooledSubspaceEstimator):
    """Disentangled Subspace Analysis: DRSA's pooling on activation energy ``‖U_kᵀa_i‖²``.

    It maximises ``M_q over k of M_p over i of ‖U_kᵀa_i‖²``, ignoring the context (no
    context, no ReLU). A context passed to :meth:`fit` only orders the subspaces (by mean
    relevance) and sets ``subspace_relevance_``; :meth:`score` is DRSA's objective, which
    without context is DSA's own.

    Parameters
    ----------
    Same as :class:`~zennit_drsa.estimators.DRSA`.

    Attributes
    ----------
    See :class:`~zennit_drsa.estimators.SubspaceEstimator`; ``objective_`` is DSA's own
    objective on the normalised activations (``scale_activations_²`` converts it to input
    units).
    """

    _context_in_objective: ClassVar[bool] = False

    def __init__(
        self,
        n_subspaces: int = 4,
        subspace_dim: int | Sequence[int] | None = None,
        *,
        p: float = 2.0,
        q: float = 0.5,
        solver: str = "riemannian",
        max_iter: int = 1000,
        tol: float = 1e-6,
        n_restarts: int = 8,
        random_state: Any = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype = "float32",
        distributed: bool = False,
    ) -> None:
        self.n_subspaces = n_subspaces
        self.subspace_dim = subspace_dim
        self.p = p
        self.q = q
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.n_restarts = n_restarts
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
        self.distributed = distributed


class PCASubspaces(ShapeOnlyEstimator):
    """Top eigenvectors of the uncentred second moment ``AᵀA / n``, grouped into blocks.

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
    objective (``p = 2``, ``q = 1/2``) on the normalised data, with context if given.
    """

    def _fit_basis(self, data: TrainingData) -> FittedBasis:
        activations = data.activations
        second_moment = data.partition.sum(activations.T @ activations)
        _, basis = top_eigenvectors(second_moment, sum(data.sizes))
        return self._closed_form(basis, data)


class RandomSubspaces(SubspaceEstimator):
    """Haar-random orthonormal subspaces: the chance level of every subspace measure.

    Parameters
    ----------
    n_subspaces : int, default=4
        Number of subspaces ``K``.
    subspace_dim : int, sequence of int or None, default=None
        As for :class:`~zennit_drsa.estimators.DRSA`.
    random_state : int, RandomState instance or None, default=None
        Seed of the draw.
    distributed : bool, default=False
        As for :class:`~zennit_drsa.estimators.DRSA`: fit on the rows of all processes of
        ``torch.distributed``'s default group, each passing its own.

    Attributes
    ----------
    See :class:`~zennit_drsa.estimators.SubspaceEstimator`; ``objective_`` is the DRSA
    objective (``p = 2``, ``q = 1/2``) on the normalised data, with context if given.
    """

    def __init__(
        self,
        n_subspaces: int = 4,
        subspace_dim: int | Sequence[int] | None = None,
        *,
        random_state: Any = None,
        distributed: bool = False,
    ) -> None:
        self.n_subspaces = n_subspaces
        self.subspace_dim = subspace_dim
        self.random_state = random_state
        self.distributed = distributed

    def _fit_basis(self, data: TrainingData) -> FittedBasis:
        d, m = data.activations.shape[1], sum(data.sizes)
        basis = haar_orthonormal(generator(self.random_state, data.partition), d, m)[0]
        return self._closed_form(basis, data)
