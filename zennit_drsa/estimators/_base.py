"""The shared base of all subspace estimators: fitting protocol, sorting, projections.

A subclass only says how to find a basis (:meth:`SubspaceEstimator._fit_basis`); the base
validates inputs, normalises them, orders the subspaces by decreasing mean relevance,
checks that the result is finite and orthonormal, and provides ``transform``,
``relevance``, ``projectors`` and ``score``.

With ``distributed=True`` each process of ``torch.distributed``'s default group passes its
own rows: every sum over samples (normalisation, mean relevances, the estimator's own
statistics) goes through a :class:`~zennit_drsa._distributed.Partition`, and all processes
end with the estimator one process would fit on all rows concatenated in rank order.
"""

from __future__ import annotations

import hashlib
import warnings
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_array, check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from zennit_drsa._distributed import (
    Partition,
    agreement,
    all_reduce_sum,
    check_distributed,
    ranks_differing,
)
from zennit_drsa.estimators._linalg import orthonormality_error
from zennit_drsa.estimators._validation import (
    check_context,
    check_sample_weight,
    subspace_sizes,
    to_host,
)
from zennit_drsa.estimators.objective import pool_relevance

__all__ = ["MissingContextWarning", "SubspaceEstimator"]

# Pooling orders of the DRSA objective used to score estimators that have none of their own.
_DEFAULT_P = 2.0
_DEFAULT_Q = 0.5
# Largest tolerated |W Wᵀ − I| entry of fitted components.
_ORTHONORMALITY_TOLERANCE = 1e-6


class MissingContextWarning(UserWarning):
    """An estimator whose objective needs context was fitted without it.

    The activations then stand in for the context, so ``R_k(a) = ‖U_kᵀa‖² >= 0`` and the
    analysis describes activation energy, not relevance.
    """


@dataclass(frozen=True)
class TrainingData:
    """Validated, normalised training data handed to :meth:`SubspaceEstimator._fit_basis`.

    Attributes
    ----------
    activations : numpy.ndarray
        ``(n, d)`` float64 activations divided by ``rms(A) · d^¼`` (this process's rows).
    context : numpy.ndarray or None
        ``(n, d)`` float64 context divided by ``rms(C) · d^¼``; ``None`` if none was given.
    sizes : tuple of int
        Subspace dimensions ``d_k`` in the requested order.
    input_device : torch.device or None
        Device of the first torch tensor among the inputs, if any.
    partition : Partition
        Which of all samples the rows are; sums over samples go through it.
    """

    activations: np.ndarray
    context: np.ndarray | None
    sizes: tuple[int, ...]
    input_device: torch.device | None
    partition: Partition


@dataclass(frozen=True)
class FittedBasis:
    """What :meth:`SubspaceEstimator._fit_basis` returns.

    Attributes
    ----------
    basis : numpy.ndarray
        ``(d, m)`` orthonormal columns, subspaces in the order of ``TrainingData.sizes``.
    objective : float
        The estimator's own objective on the normalised data.
    trace : numpy.ndarray
        ``(n_iter + 1,)`` objective at the start and after every iteration.
    n_iter : int
        Iterations run (0 for closed-form estimators).
    """

    basis: np.ndarray
    objective: float
    trace: np.ndarray
    n_iter: int


class SubspaceEstimator(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Base class: ``K`` orthogonal subspaces of the activation space.

    Subclasses define ``__init__`` (storing ``n_subspaces``, ``subspace_dim`` and their own
    parameters) and :meth:`_fit_basis`.

    Attributes
    ----------
    components_ : numpy.ndarray
        ``(Σ d_k, n_features)`` float64 orthonormal rows, grouped by subspace: rows
        ``offsets[k]:offsets[k+1]`` span subspace ``k``. Subspaces are ordered by decreasing
        ``subspace_relevance_``.
    subspace_sizes_ : numpy.ndarray
        ``(K,)`` int dimensions ``d_k`` in the fitted order.
    subspace_relevance_ : numpy.ndarray
        ``(K,)`` mean relevance ``aᵀ P_k c`` per subspace on the training data, in the units
        of the inputs (``‖U_kᵀa‖²`` when fitted without context).
    objective_ : float
        Final objective on the normalised data; multiply by ``scale_activations_ ·
        scale_context_`` for input units (the DRSA objective is bilinear in ``A`` and ``C``).
    objective_trace_ : numpy.ndarray
        ``(n_iter_ + 1,)`` objective at the start and after every iteration.
    n_iter_ : int
        Optimiser iterations (0 for closed-form estimators).
    scale_activations_, scale_context_ : float
        Normalisation divisors ``rms(A) · d^¼`` and ``rms(C) · d^¼``; without context both are
        the activations' divisor.
    n_features_in_ : int
        Dimension ``d`` of the activation vectors.
    """

    #: Whether the objective uses the context (a missing context then gives a warning).
    _needs_context: ClassVar[bool] = False

    n_subspaces: int
    subspace_dim: Any
    distributed: bool

    def fit(self, X: Any, y: None = None, *, context: Any = None) -> SubspaceEstimator:
        """Find the subspaces.

        Parameters
        ----------
        X : array-like or torch.Tensor
            ``(n, d)`` activation vectors, ``n >= 2``. Torch tensors may live on any device;
            float16 is upcast to float32.
        y : None
            Ignored.
        context : array-like or torch.Tensor, optional
            ``(n, d)`` context vectors aligned with ``X`` (relevance ``R = aᵀc``). Route it
            through meta-estimators with ``set_fit_request(context=True)``. Without it the
            activations stand in for the context (an activation-only analysis); estimators
            whose objective needs context warn with :class:`MissingContextWarning`.

        Returns
        -------
        self

        Notes
        -----
        A failed fit leaves a previously fitted estimator as it was. With
        ``distributed=True`` this is a collective call: every process of the default group
        calls it with its own rows (any number, ``n >= 2`` in all, the same ``d`` and
        context given on all or none), and an error on one process raises on all.
        """
        fitted_state = {key: value for key, value in vars(self).items() if key.endswith("_")}
        try:
            return self._fit(X, context)
        except BaseException:
            # validate_data sets n_features_in_ early; undo it so the old fit stays coherent.
            for key in [key for key in vars(self) if key.endswith("_")]:
                delattr(self, key)
            vars(self).update(fitted_state)
            raise

    def _fit(self, X: Any, context: Any) -> SubspaceEstimator:
        name = type(self).__name__
        distributed = check_distributed(self.distributed, name)
        input_device = _tensor_device(X, context)
        # Checks of one process's rows may fail on that process only; all must stop then.
        with agreement(f"{name}.fit", enabled=distributed):
            activations = validate_data(
                self,
                to_host(X),
                dtype=[np.float64, np.float32],
                # A process may hold few rows or none; the total is checked below.
                ensure_min_samples=0 if distributed else 2,
            )
            sizes = subspace_sizes(self.n_subspaces, self.subspace_dim, activations.shape[1])
            vectors = None if context is None else check_context(context, activations)
        partition = Partition.whole(len(activations))
        if distributed:
            partition = Partition.gather(
                len(activations),
                n_features=activations.shape[1],
                context_given=int(vectors is not None),
            )
            if partition.n_total < 2:
                raise ValueError(
                    f"{name} needs at least 2 samples; the processes hold {partition.n_total}"
                )
            # Different iteration counts or tolerances would make the processes' collectives
            # stop matching; the seed (rank 0's is used) and the device may differ.
            differing = ranks_differing(_parameter_fingerprint(self))
            if differing:
                raise ValueError(
                    f"{name}: rank(s) {differing} were given other parameters than rank 0; "
                    "construct the estimator alike on every process (random_state and device "
                    "may differ)"
                )
        if context is None and self._needs_context:
            warnings.warn(
                f"{name} was fitted without context; the activations stand in for it, so "
                "subspaces capture activation energy, not relevance. Pass context=... (the LRP "
                "context of the layer) for a relevance analysis.",
                MissingContextWarning,
                stacklevel=3,
            )
        scale_activations = _normalisation_scale(activations, "activations (X)", partition)
        scale_context = scale_activations
        if vectors is not None:
            scale_context = _normalisation_scale(vectors, "context vectors", partition)
        # In float64 whatever the input dtype: float32 quotients would round differently as
        # soon as the scale differs in its last bit (it is a sum over rows in any order).
        data = TrainingData(
            np.divide(activations, scale_activations, dtype=np.float64),
            None if vectors is None else np.divide(vectors, scale_context, dtype=np.float64),
            sizes,
            input_device,
            partition,
        )
        fitted = self._fit_basis(data)

        # Every process computed the same result; copying rank 0's makes them bit-identical
        # even where a library's rounding differs between processes.
        rows = partition.first(fitted.basis).T
        objective = float(partition.first(np.array([fitted.objective]))[0])
        trace = partition.first(np.asarray(fitted.trace, dtype=np.float64))
        relevance = _block_relevance(activations, vectors, rows, sizes)
        mean_relevance = partition.sum(relevance.sum(axis=0)) / partition.n_total
        order = np.argsort(-mean_relevance, kind="stable")
        offsets = np.cumsum((0, *sizes))
        rows = np.concatenate([rows[offsets[k] : offsets[k + 1]] for k in order])
        # Subspaces are sign-invariant; fixing each row's sign makes transform() reproducible.
        signs = np.sign(rows[np.arange(len(rows)), np.abs(rows).argmax(axis=1)])
        rows = rows * np.where(signs == 0, 1.0, signs)[:, None]
        _check_components(rows, objective, name)

        self.components_ = rows
        self.subspace_sizes_ = np.asarray(sizes, dtype=np.int64)[order]
        self.subspace_relevance_ = mean_relevance[order]
        self.objective_ = objective
        self.objective_trace_ = trace
        self.n_iter_ = int(fitted.n_iter)
        self.scale_activations_ = float(scale_activations)
        self.scale_context_ = float(scale_context)
        return self

    @abstractmethod
    def _fit_basis(self, data: TrainingData) -> FittedBasis:
        """Find ``Σ d_k`` orthonormal columns for the normalised ``data``."""

    def transform(self, X: Any) -> np.ndarray:
        """Coordinates of ``X`` in the subspaces.

        Parameters
        ----------
        X : array-like or torch.Tensor
            ``(n, d)`` activation vectors.

        Returns
        -------
        numpy.ndarray
            ``(n, Σ d_k)`` ``X @ components_.T``, columns grouped by subspace, in the dtype of
            ``X`` (float32 or float64).
        """
        check_is_fitted(self)
        activations = validate_data(self, to_host(X), dtype=[np.float64, np.float32], reset=False)
        return activations @ self.components_.T.astype(activations.dtype, copy=False)

    def inverse_transform(self, X: Any) -> np.ndarray:
        """Map subspace coordinates ``(n, Σ d_k)`` back to activation space ``(n, d)``.

        The result is the projection of the original vectors on the span of all subspaces;
        the residual part is lost.
        """
        check_is_fitted(self)
        coordinates = check_array(to_host(X), dtype=[np.float64, np.float32])
        if coordinates.shape[1] != len(self.components_):
            raise ValueError(
                f"X has {coordinates.shape[1]} columns but {type(self).__name__} produces "
                f"{len(self.components_)} subspace coordinates; pass the output of transform()"
            )
        return coordinates @ self.components_.astype(coordinates.dtype, copy=False)

    def relevance(self, X: Any, context: Any, *, residual: bool = False) -> np.ndarray:
        """Relevance of every sample in every subspace, ``R_k = aᵀ P_k c`` (not clipped).

        Parameters
        ----------
        X : array-like or torch.Tensor
            ``(n, d)`` activation vectors.
        context : array-like or torch.Tensor
            ``(n, d)`` context vectors aligned with ``X``.
        residual : bool
            Append the relevance in the orthogonal complement of all subspaces,
            ``aᵀc − Σ_k R_k`` (about 0 when ``Σ d_k = d``).

        Returns
        -------
        numpy.ndarray
            ``(n, K)``, or ``(n, K + 1)`` with ``residual``; float64, in the units of the
            inputs. With the residual column, each row sums to ``aᵀc``.
        """
        check_is_fitted(self)
        activations = validate_data(self, to_host(X), dtype=np.float64, reset=False)
        vectors = check_context(context, activations)
        relevance = _block_relevance(activations, vectors, self.components_, self.subspace_sizes_)
        if not residual:
            return relevance
        total = np.einsum("ij,ij->i", activations, vectors)
        return np.column_stack([relevance, total - relevance.sum(axis=1)])

    def projectors(self, *, residual: bool = False) -> np.ndarray:
        """Orthogonal projectors ``P_k = U_k U_kᵀ`` on the subspaces.

        Parameters
        ----------
        residual : bool
            Append ``P_res = I − Σ_k P_k``.

        Returns
        -------
        numpy.ndarray
            ``(K, d, d)`` float64, or ``(K + 1, d, d)`` with ``residual``.
        """
        check_is_fitted(self)
        offsets = np.cumsum((0, *self.subspace_sizes_))
        blocks = [self.components_[offsets[k] : offsets[k + 1]] for k in range(len(offsets) - 1)]
        projectors = [block.T @ block for block in blocks]
        if residual:
            projectors.append(np.eye(self.n_features_in_) - sum(projectors))
        return np.stack(projectors)

    def score(
        self, X: Any, y: None = None, sample_weight: Any = None, *, context: Any = None
    ) -> float:
        """The DRSA objective ``J`` of the fitted subspaces on new data (higher is better).

        ``J = M_q over k of M_p over i of max(0, R_k(a_i, c_i))`` in the units of the inputs
        (no normalisation), with the estimator's ``p`` and ``q`` if it has them, else
        ``p = 2`` and ``q = 1/2``. Without context the activations stand in for it, which for
        :class:`DSA` is its own objective. Route ``context`` through meta-estimators with
        ``set_score_request(context=True)``. With ``distributed=True`` this is a collective
        call, each process passing its own rows, and the score pools over all of them.

        Parameters
        ----------
        X : array-like or torch.Tensor
            ``(n, d)`` activation vectors.
        y : None
            Ignored.
        sample_weight : array-like, optional
            ``(n,)`` non-negative weights of the samples in the power mean over samples.
        context : array-like or torch.Tensor, optional
            ``(n, d)`` context vectors aligned with ``X``.

        Returns
        -------
        float
        """
        check_is_fitted(self)
        distributed = check_distributed(self.distributed, type(self).__name__)
        with agreement(f"{type(self).__name__}.score", enabled=distributed):
            activations = validate_data(
                self,
                to_host(X),
                dtype=np.float64,
                reset=False,
                ensure_min_samples=0 if distributed else 1,
            )
            vectors = activations if context is None else check_context(context, activations)
            weights = None
            if sample_weight is not None:
                weights = check_sample_weight(sample_weight, len(activations), local=distributed)
        if distributed and weights is not None:
            if float(all_reduce_sum(torch.tensor([weights.sum()]))[0]) == 0:
                raise ValueError("sample_weight is zero on every process; give some weight")
        relevance = _block_relevance(activations, vectors, self.components_, self.subspace_sizes_)
        p, q = self._pooling_orders()
        objective, _, _ = pool_relevance(
            torch.from_numpy(relevance)[:, None, :],
            p,
            q,
            None if weights is None else torch.from_numpy(weights),
            all_reduce=all_reduce_sum if distributed else None,
        )
        return float(objective[0])

    def _pooling_orders(self) -> tuple[float, float]:
        """``(p, q)`` of the objective this estimator reports and is scored by."""
        return _DEFAULT_P, _DEFAULT_Q

    def _closed_form(self, basis: np.ndarray, data: TrainingData) -> FittedBasis:
        """A basis ``(d, m)`` found without iterations, scored by the DRSA objective on the
        normalised training data (its one-entry trace)."""
        context = data.activations if data.context is None else data.context
        relevance = _block_relevance(data.activations, context, basis.T, data.sizes)
        pooled, _, _ = pool_relevance(
            torch.from_numpy(relevance)[:, None, :],
            *self._pooling_orders(),
            all_reduce=data.partition.sum,
        )
        objective = float(pooled[0])
        return FittedBasis(basis, objective, np.array([objective]), 0)

    @property
    def _n_features_out(self) -> int:
        return len(self.components_)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


class ShapeOnlyEstimator(SubspaceEstimator):
    """A subspace estimator whose only parameters are its shape and ``distributed``: the
    closed-form ones (PRCA, PCA blocks, the oracle), which need no seed or solver settings."""

    def __init__(
        self,
        n_subspaces: int = 4,
        subspace_dim: int | Sequence[int] | None = None,
        *,
        distributed: bool = False,
    ) -> None:
        self.n_subspaces = n_subspaces
        self.subspace_dim = subspace_dim
        self.distributed = distributed


def generator(random_state: Any, partition: Partition | None = None) -> np.random.Generator:
    """A numpy Generator from anything sklearn accepts as ``random_state``.

    With a ``partition`` spread over processes, every process gets rank 0's seed, so that all
    draw the same numbers (``None`` or a ``RandomState`` would differ between processes).
    """
    seed = check_random_state(random_state).randint(np.iinfo(np.int32).max)
    if partition is not None:
        seed = int(partition.first(np.array([seed], dtype=np.int64))[0])
    return np.random.default_rng(seed)


def _parameter_fingerprint(estimator: SubspaceEstimator) -> int:
    """A 60-bit digest of the parameters that every process must share."""
    shared = sorted(
        (key, repr(value))
        for key, value in estimator.get_params(deep=False).items()
        if key not in ("random_state", "device")
    )
    return int(hashlib.sha256(repr(shared).encode()).hexdigest()[:15], 16)


def _tensor_device(*inputs: Any) -> torch.device | None:
    for data in inputs:
        if isinstance(data, torch.Tensor):
            return data.device
    return None


def _normalisation_scale(vectors: np.ndarray, name: str, partition: Partition) -> float:
    """``rms(vectors) · d^¼`` over the rows of all processes, the reference code's global
    normalisation divisor."""
    squares = partition.sum(np.square(vectors, dtype=np.float64).sum(keepdims=True))
    rms = float(np.sqrt(squares[0, 0] / (partition.n_total * vectors.shape[1])))
    if rms == 0:
        raise ValueError(
            f"the {name} are all zero, so every subspace would be dead (zero relevance); "
            "check that the vectors were collected at the right layer"
        )
    return rms * vectors.shape[1] ** 0.25


def _block_relevance(
    activations: np.ndarray, context: np.ndarray | None, rows: np.ndarray, sizes: Any
) -> np.ndarray:
    """Per-sample relevance ``(n, K)`` float64 in the subspaces spanned by blocks of ``rows``."""
    activations = np.asarray(activations, dtype=np.float64)
    projected = activations @ rows.T
    if context is None:
        products = projected * projected
    else:
        products = projected * (np.asarray(context, dtype=np.float64) @ rows.T)
    offsets = np.cumsum((0, *sizes))[:-1]
    return np.add.reduceat(products, offsets, axis=1)


def _check_components(rows: np.ndarray, objective: float, estimator: str) -> None:
    """Refuse to store a non-finite or non-orthonormal result."""
    if not (np.isfinite(rows).all() and np.isfinite(objective)):
        raise FloatingPointError(
            f"{estimator} produced non-finite subspaces; the data may be badly scaled or "
            "degenerate (try dtype='float64')"
        )
    error = orthonormality_error(rows)
    if error > _ORTHONORMALITY_TOLERANCE:
        raise FloatingPointError(
            f"{estimator} produced subspaces that are not orthonormal (|WWᵀ − I| = {error:.2e}); "
            "try dtype='float64'"
        )
