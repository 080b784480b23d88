"""DRSA: subspaces that maximise a soft-min over subspaces of a soft-max over samples of
their relevance (Chormai et al., TPAMI 2024), and the optimiser-driven estimator base it
shares with DSA."""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from sklearn.exceptions import ConvergenceWarning

from zennit_drsa.estimators._base import FittedBasis, SubspaceEstimator, TrainingData, generator
from zennit_drsa.estimators._validation import check_pooling_orders, resolve_device, resolve_dtype
from zennit_drsa.estimators.objective import RelevanceProblem
from zennit_drsa.estimators.solvers import SOLVERS

__all__ = ["DRSA", "PooledSubspaceEstimator"]


class PooledSubspaceEstimator(SubspaceEstimator):
    """Base of estimators that maximise a power-mean pooled subspace score (DRSA, DSA).

    Subclasses set ``_context_in_objective``: ``False`` optimises ``‖U_kᵀa‖²`` whatever
    context is given (the context then only orders the subspaces and scores them).
    """

    _context_in_objective: ClassVar[bool] = True

    p: float
    q: float
    solver: str
    max_iter: int
    tol: float
    n_restarts: int
    random_state: Any
    device: Any
    dtype: Any

    def _pooling_orders(self) -> tuple[float, float]:
        return float(self.p), float(self.q)

    def _fit_basis(self, data: TrainingData) -> FittedBasis:
        check_pooling_orders(self.p, self.q)
        self._check_solver_params()
        device = resolve_device(self.device, data.input_device)
        dtype = resolve_dtype(self.dtype)
        activations = torch.as_tensor(data.activations, dtype=dtype, device=device)
        context = None
        if self._context_in_objective and data.context is not None:
            context = torch.as_tensor(data.context, dtype=dtype, device=device)
        problem = RelevanceProblem(
            activations, context, data.sizes, self.p, self.q, partition=data.partition
        )
        options: dict[str, Any] = {"max_iter": self.max_iter, "n_restarts": self.n_restarts}
        if self.solver != "reference":
            options["tol"] = self.tol
        rng = generator(self.random_state, data.partition)
        result = SOLVERS[self.solver](problem, rng, **options)
        if result.converged is False:
            warnings.warn(
                f"{type(self).__name__} did not converge in max_iter={self.max_iter} "
                f"iterations (tol={self.tol}); raise max_iter or tol",
                ConvergenceWarning,
                stacklevel=4,
            )
        self._check_alive(problem, result.basis)
        return FittedBasis(result.basis, result.objective, result.trace, result.n_iter)

    def _check_alive(self, problem: RelevanceProblem, basis: Any) -> None:
        """Fail if every subspace is dead: nothing had positive relevance to optimise."""
        scores = problem.evaluate(torch.as_tensor(basis[None], device=problem.device)).scores
        if bool((scores <= 0).all()):
            raise ValueError(
                f"{type(self).__name__}: every subspace is dead (relevance <= 0 for every "
                "sample), so there is nothing to optimise; check that the context is the LRP "
                "context of the layer and that the samples explain a positive logit"
            )

    def _check_solver_params(self) -> None:
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {sorted(SOLVERS)}, got {self.solver!r}")
        for name in ("max_iter", "n_restarts"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not isinstance(self.tol, numbers.Real) or not self.tol >= 0:
            raise ValueError(f"tol must be a number >= 0, got {self.tol!r}")


class DRSA(PooledSubspaceEstimator):
    """Disentangled Relevant Subspace Analysis.

    Finds ``K`` orthogonal subspaces ``U_k`` of the activation space that maximise::

        J(U) = M_q over k of M_p over i of max(0, (U_kᵀa_i)ᵀ(U_kᵀc_i))

    with power means ``M_p(x) = (mean x^p)^(1/p)``: ``p = 2`` rewards subspaces that carry a
    lot of relevance on some samples, ``q = 1/2`` makes every subspace carry relevance.
    The reference code's ``softmin_ord = 2`` is ``q = 1/2`` here. Data are normalised by
    ``rms · d^¼`` per matrix before fitting, as in the reference code.

    Parameters
    ----------
    n_subspaces : int, default=4
        Number of subspaces ``K``.
    subspace_dim : int, sequence of int or None, default=None
        Dimension ``d_k`` of every subspace, or one per subspace; ``None`` means
        ``n_features // n_subspaces``. If ``Σ d_k < d`` the rest is a residual subspace.
    p : float, default=2.0
        Power-mean order over samples (``>= 1``).
    q : float, default=0.5
        Power-mean order over subspaces (``> 0``; below 1 is a soft minimum).
    solver : {"riemannian", "reference"}, default="riemannian"
        ``"riemannian"``: gradient ascent on the Stiefel manifold with Barzilai–Borwein
        steps, batched restarts and early stopping (see
        :func:`~zennit_drsa.estimators.solvers.solve_riemannian`). ``"reference"``: the
        published fixed-step algorithm, for parity; it ignores ``tol`` and always runs
        ``max_iter`` iterations per restart (the reference runs used 2000–5000 and 3
        restarts).
    max_iter : int, default=1000
        Maximum iterations (exact count for ``"reference"``).
    tol : float, default=1e-6
        Stop when the best objective improved by less than this, relatively, over 10
        iterations.
    n_restarts : int, default=8
        Random starts. The Riemannian solver races them batched (on a subsample of at
        least 2048 vectors when there are twice as many) and keeps only the leader after
        60 iterations; the reference solver runs all to the end.
    random_state : int, RandomState instance or None, default=None
        Seed of the random starts; results are deterministic on CPU for a fixed seed.
    device : str, torch.device or None, default=None
        Where to optimise; ``None`` is the device of a tensor ``X`` or torch's default.
    dtype : {"float32", "float64"}, default="float32"
        Precision of the data matmuls; bases and decompositions are always float64.
    distributed : bool, default=False
        Fit data-parallel over the processes of ``torch.distributed``'s default group
        (launched with ``torchrun``; gloo on CPU, NCCL on GPU): each process passes only
        its own rows to :meth:`fit` and :meth:`score`, which become collective calls, and
        every process ends with the fit of one process on all rows concatenated in rank
        order, on the same seed (rank 0's seed when ``random_state`` is not an int). See
        :mod:`zennit_drsa.distributed`.

    Attributes
    ----------
    See :class:`~zennit_drsa.estimators.SubspaceEstimator`.

    Examples
    --------
    >>> drsa = DRSA(n_subspaces=4, random_state=0).fit(activations, context=context)
    >>> concept_relevance = drsa.relevance(activations, context, residual=True)
    """

    _needs_context: ClassVar[bool] = True

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
