"""Oracle subspaces: a reference of known quality, built from labelled isolated concepts.

Meta-evaluating a measure (METHOD §5) needs decompositions whose quality is known. When the
concepts can be shown to the model one at a time (e.g. each synthetic sound object played
alone), their activations, labelled by concept, give each concept its own subspace: the
oracle a measure should rank ahead of random subspaces.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from zennit_drsa._distributed import agreement, check_distributed, world
from zennit_drsa.estimators._base import (
    FittedBasis,
    ShapeOnlyEstimator,
    TrainingData,
)
from zennit_drsa.estimators._linalg import top_eigenvectors
from zennit_drsa.estimators._validation import to_host

__all__ = ["OracleSubspaces"]

# A group's direction whose singular value is below this fraction of the group's largest
# is taken as absent (float32 rounding of exactly rank-deficient data gives about 1e-7).
_RANK_TOLERANCE = 1e-6
# Smallest singular value of the concatenated group bases below which groups share a
# direction (the blocks are orthonormal, so the singular values lie in [0, √K]).
_DEPENDENCE_TOLERANCE = 1e-6


@dataclass
class _Labels:
    """The labels of one call of :meth:`OracleSubspaces.fit`, and what its basis step found.

    Attributes
    ----------
    given:
        ``y`` as passed to ``fit``, checked: ``(n,)`` integers.
    groups:
        ``(K,)`` the distinct labels (of all processes), sorted.
    blocks:
        ``K`` orthonormal ``(d, d_k)`` blocks of the basis, in the order of ``groups``.
    """

    given: np.ndarray
    groups: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    blocks: list[np.ndarray] = field(default_factory=list)


class OracleSubspaces(ShapeOnlyEstimator):
    """One subspace per labelled concept: a reference of known quality.

    For each group ``k`` of rows (one concept, e.g. the activations of one sound object
    played alone), the top ``d_k`` eigenvectors of the group's uncentred second moment
    ``A_kᵀA_k / n_k`` span its subspace. The ``K`` bases, concatenated into ``B`` ``(d, Σ d_k)``,
    are orthonormalised symmetrically (Löwdin): ``B = U S Vᵀ`` gives ``U Vᵀ``, the
    orthonormal matrix closest to ``B``, which treats every group alike (the result does not
    depend on the order of the groups) and keeps orthogonal groups exactly as they were.

    Parameters
    ----------
    n_subspaces : int, default=4
        Number of subspaces ``K``: the number of distinct labels ``fit`` must be given.
    subspace_dim : int, sequence of int or None, default=None
        As for :class:`~zennit_drsa.estimators.DRSA`; a sequence gives ``d_k`` per group in
        the sorted order of the labels.
    distributed : bool, default=False
        Fit on the rows of all processes of ``torch.distributed``'s default group, each
        passing its own rows and labels (a process may hold no row of some group): the
        groups' row counts and second moments are all-reduced, so every process gets the
        subspaces one process holding all rows would.

    Attributes
    ----------
    group_order_ : numpy.ndarray
        ``(K,)`` the label of each fitted subspace, in the fitted order: subspace ``k`` (rows
        of block ``k`` of ``components_``) belongs to the group labelled ``group_order_[k]``.
        Like every estimator's, the subspaces are ordered by decreasing mean relevance, so
        subspace ``k`` is in general not the ``k``-th label.

    Notes
    -----
    The other fitted attributes are those of
    :class:`~zennit_drsa.estimators.SubspaceEstimator`; ``objective_`` is the DRSA objective
    (``p = 2``, ``q = 1/2``) on the normalised data, with context if given. The context only
    orders the subspaces; the basis comes from the activations alone.

    A group needs at least ``d_k`` rows (:meth:`fit` refuses fewer); a group whose activations
    span fewer than ``d_k`` dimensions gets arbitrary further directions, with a warning.
    Groups that share a direction (e.g. identical activations under two labels) cannot be
    given separate subspaces and are refused.
    """

    def fit(self, X: Any, y: Any = None, *, context: Any = None) -> OracleSubspaces:
        """Find one subspace per group of rows.

        Parameters
        ----------
        X : array-like or torch.Tensor
            ``(n, d)`` activation vectors, ``n >= 2``.
        y : array-like or torch.Tensor
            ``(n,)`` integer group labels, ``y[i]`` the concept of row ``i``, with exactly
            ``n_subspaces`` distinct values (any integers, or floats holding whole numbers;
            taken in sorted order).
        context : array-like or torch.Tensor, optional
            ``(n, d)`` context vectors aligned with ``X``; they order the subspaces by mean
            relevance and set ``subspace_relevance_``, but do not change the basis.

        Returns
        -------
        self

        Notes
        -----
        A failed fit leaves a previously fitted estimator as it was. With
        ``distributed=True`` this is a collective call (see
        :meth:`SubspaceEstimator.fit <zennit_drsa.estimators.SubspaceEstimator.fit>`).
        """
        distributed = check_distributed(self.distributed, type(self).__name__)
        # A label error may be one process's only: all must stop then.
        with agreement("OracleSubspaces.fit", enabled=distributed):
            labels = _check_labels(y, _n_rows(X))
        self._labels = _Labels(labels)
        try:
            return super().fit(X, context=context)
        finally:
            del self._labels

    def _fit(self, X: Any, context: Any) -> OracleSubspaces:
        super()._fit(X, context)
        offsets = np.cumsum((0, *self.subspace_sizes_))
        fitted = [self.components_[offsets[k] : offsets[k + 1]] for k in range(self.n_subspaces)]
        # Each fitted block spans one group's block of the basis exactly: their overlap
        # ‖W_k B_j‖² is d_k for that group and 0 for the others.
        overlap = np.array(
            [[np.sum((rows @ block) ** 2) for block in self._labels.blocks] for rows in fitted]
        )
        self.group_order_ = self._labels.groups[overlap.argmax(axis=1)]
        return self

    def _fit_basis(self, data: TrainingData) -> FittedBasis:
        activations, labels, partition = data.activations, self._labels.given, data.partition
        groups = _all_groups(labels, partition.distributed, self.n_subspaces)
        blocks = []
        for group, size in zip(groups, data.sizes, strict=True):
            rows = activations[labels == group]
            # Sums over the rows of all processes; the same everywhere.
            n_rows = int(partition.sum(np.array([len(rows)]))[0])
            if n_rows < size:
                raise ValueError(
                    f"group {group} has {n_rows} row(s) but its subspace needs d_k = {size} "
                    "dimensions, which so few rows cannot span; give more rows of that group "
                    "or lower subspace_dim"
                )
            moment = partition.sum(rows.T @ rows) / n_rows
            eigenvalues, vectors = top_eigenvectors(moment, size)
            rank = int(np.sum(eigenvalues > _RANK_TOLERANCE**2 * eigenvalues[0]))
            if rank < size:
                warnings.warn(
                    f"the activations of group {group} span {rank} dimension(s), fewer than "
                    f"its d_k = {size}; the other {size - rank} direction(s) of its subspace "
                    "are arbitrary. Lower subspace_dim for it or give more varied rows.",
                    UserWarning,
                    stacklevel=6,
                )
            blocks.append(vectors)
        left, singular_values, right = np.linalg.svd(np.hstack(blocks), full_matrices=False)
        if singular_values[-1] < _DEPENDENCE_TOLERANCE:
            raise ValueError(
                "the groups' subspaces share a direction (the concatenated group bases are "
                f"rank-deficient, smallest singular value {singular_values[-1]:.1e}), so they "
                "cannot be given separate subspaces; check that no two labels mark the same "
                "activations, or lower subspace_dim"
            )
        basis = left @ right
        offsets = np.cumsum((0, *data.sizes))
        self._labels.groups = groups
        self._labels.blocks = [basis[:, offsets[k] : offsets[k + 1]] for k in range(len(groups))]
        return self._closed_form(basis, data)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags


def _n_rows(X: Any) -> int | None:
    """Rows of ``X``, or ``None`` where it has none (fit's validation of ``X`` says why)."""
    try:
        return len(to_host(X))
    except TypeError:
        return None


def _check_labels(y: Any, n_rows: int | None) -> np.ndarray:
    """Validate group labels: ``(n_rows,)`` integers (whole floats are converted to int64);
    ``n_rows=None`` checks only that they are one-dimensional."""
    if y is None:
        # The phrase sklearn's checks look for in an estimator that needs y.
        raise ValueError(
            "OracleSubspaces requires y to be passed, but the target y is None: call "
            "fit(X, y) with y[i] the integer label of the concept that row i of X shows (e.g. "
            "which sound object played alone)"
        )
    labels = np.asarray(to_host(y))
    if labels.ndim != 1 or (n_rows is not None and len(labels) != n_rows):
        rows = "n" if n_rows is None else n_rows
        raise ValueError(
            f"y has shape {labels.shape} but X has {rows} rows; give one label per row, "
            f"as a 1-D array of shape ({rows},)"
        )
    # Whole numbers stored as floats (e.g. read from a table) are integer labels too.
    if labels.dtype.kind == "f" and np.all(np.isfinite(labels) & (labels == np.round(labels))):
        labels = labels.astype(np.int64)
    if labels.dtype.kind not in "iu":
        raise ValueError(
            f"y must hold integer group labels, got dtype {labels.dtype}; map the concepts to "
            "integers first (e.g. np.unique(y, return_inverse=True)[1])"
        )
    return labels


def _all_groups(labels: np.ndarray, distributed: bool, n_subspaces: int) -> np.ndarray:
    """The sorted distinct labels of all processes; exactly ``n_subspaces`` of them."""
    groups = np.unique(labels)
    if distributed:
        parts: list[Any] = [None] * world()[1]
        torch.distributed.all_gather_object(parts, groups.tolist())
        groups = np.unique(np.concatenate([np.asarray(part, dtype=np.int64) for part in parts]))
    if len(groups) != n_subspaces:
        shown = ", ".join(map(str, groups[:10])) + (", ..." if len(groups) > 10 else "")
        raise ValueError(
            f"y has {len(groups)} distinct label(s) ({shown}) but n_subspaces={n_subspaces}; "
            "the oracle has one subspace per group, so set n_subspaces to the number of groups"
        )
    return groups
