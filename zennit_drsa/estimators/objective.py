"""The DRSA objective: power-mean pooling of subspace relevances, and its closed-form gradient.

For bases ``U = [U_1 … U_K]`` (``d × m``, ``m = Σ d_k``) and data pairs ``(a_i, c_i)``::

    R_ik = (U_kᵀ a_i)ᵀ (U_kᵀ c_i)                   subspace relevance
    s_k  = M_p over i of max(0, R_ik)               M_p(x) = (mean x^p)^(1/p)
    J    = M_q over k of s_k

With ``X_a = A U`` and ``X_c = C U`` (``n × m``) and ``G_ik = ∂J/∂R_ik`` broadcast to the
columns of subspace ``k``, the Euclidean gradient is ``Aᵀ(G ⊙ X_c) + Cᵀ(G ⊙ X_a)``: two
``n × d × m`` matmuls per evaluation, one for the projections and one for the gradient.

Both are sums over samples, so the samples may be spread over processes (data-parallel
fitting with ``torch.distributed``): each process holds its rows, and the per-subspace sums
of ``max(0, R_ik)^p`` and the gradient are all-reduced (see
:class:`~zennit_drsa._distributed.Partition`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from zennit_drsa._distributed import Partition

__all__ = ["Evaluation", "RelevanceProblem", "pool_relevance"]

# Rows of data per projection matmul.
_ROW_BLOCK = 4096


def pool_relevance(
    relevance: torch.Tensor,
    p: float,
    q: float,
    sample_weight: torch.Tensor | None = None,
    *,
    all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pool subspace relevances into the DRSA objective and differentiate it.

    Parameters
    ----------
    relevance : torch.Tensor
        ``(n, B, K)`` relevance ``R_ik`` of ``n`` samples in ``K`` subspaces for ``B`` bases.
    p : float
        Order of the power mean over samples (``p >= 1``; 2 is a soft maximum).
    q : float
        Order of the power mean over subspaces (``q > 0``; 0.5 is a soft minimum).
    sample_weight : torch.Tensor, optional
        ``(n,)`` non-negative weights of the samples in the mean over samples (same dtype
        as ``relevance``); uniform if omitted.
    all_reduce : callable, optional
        Adds up a tensor over all processes when other processes hold further samples (the
        sums over samples are all-reduced, one call); ``None``: these are all the samples.

    Returns
    -------
    objective : torch.Tensor
        ``(B,)`` the objective ``J`` of every basis.
    scores : torch.Tensor
        ``(B, K)`` the per-subspace pooled relevance ``s_k``; 0 marks a dead subspace.
    weights : torch.Tensor
        ``(n, B, K)`` the derivative ``∂J/∂R_ik``. It is exactly 0 for clipped samples and
        for dead subspaces (where the chain rule would otherwise give ``0 · ∞``).
    """
    n, batch, k = relevance.shape
    if sample_weight is None:
        weight = torch.ones((n, 1, 1), dtype=relevance.dtype, device=relevance.device)
    else:
        weight = sample_weight[:, None, None].to(relevance.dtype)
    clipped = relevance.clamp_min(0.0)
    # The weighted power sums and the total weight travel in one all-reduce.
    sums = torch.cat([(weight * clipped.pow(p)).sum(dim=0).flatten(), weight.sum().reshape(1)])
    if all_reduce is not None:
        sums = all_reduce(sums)
    total = sums[-1]
    share = weight / total
    scores = (sums[:-1].view(batch, k) / total).pow(1.0 / p)
    objective = scores.pow(q).mean(dim=1).pow(1.0 / q)
    alive = scores > 0
    # ∂J/∂R_ik = J^(1-q) s_k^(q-p) r_ik^(p-1) share_i / K for r_ik > 0; avoids 0^negative.
    safe_scores = torch.where(alive, scores, torch.ones_like(scores))
    coefficient = torch.where(
        alive, objective[:, None].pow(1.0 - q) * safe_scores.pow(q - p) / k, 0.0
    )
    positive = relevance > 0
    slope = torch.where(positive, clipped, torch.ones_like(clipped)).pow(p - 1.0)
    weights = torch.where(positive, share * coefficient * slope, 0.0)
    return objective, scores, weights


@dataclass(frozen=True)
class Evaluation:
    """The objective at a batch of bases, with what its gradient needs.

    Attributes
    ----------
    bases : torch.Tensor
        ``(B, d, m)`` float64 bases that were evaluated.
    objective : torch.Tensor
        ``(B,)`` float64 objective ``J``.
    scores : torch.Tensor
        ``(B, K)`` float64 pooled relevance per subspace (0 = dead).
    projections : torch.Tensor
        ``(rows, B·m)`` data projected on the bases, in the compute dtype (``rows = 2n`` with
        context, ``n`` without).
    weights : torch.Tensor
        ``(n, B, K)`` float64 ``∂J/∂R``.
    """

    bases: torch.Tensor
    objective: torch.Tensor
    scores: torch.Tensor
    projections: torch.Tensor
    weights: torch.Tensor


class RelevanceProblem:
    """One DRSA objective on fixed data, evaluated for batches of bases.

    Parameters
    ----------
    activations : torch.Tensor
        ``(n, d)`` activation vectors; their dtype and device are the compute dtype and device.
    context : torch.Tensor or None
        ``(n, d)`` context vectors aligned with ``activations``. ``None`` means the context is
        the activations themselves (``R_k = ‖U_kᵀa‖² ≥ 0``, the DSA objective), which halves
        the cost.
    sizes : sequence of int
        Subspace dimensions ``d_k``; their sum ``m`` is at most ``d``.
    p, q : float
        Pooling orders, see :func:`pool_relevance`.
    partition : Partition, optional
        Which of all samples the rows are, when other processes hold the others
        (data-parallel fitting): means over samples and the gradient then cover all of them.
        ``None``: the rows are all the samples.

    Attributes
    ----------
    n_samples : int
        Samples of the problem, over all processes.
    n_features : int
        Dimension ``d``.
    partition : Partition
        The samples held here among all.
    """

    def __init__(
        self,
        activations: torch.Tensor,
        context: torch.Tensor | None,
        sizes: Sequence[int],
        p: float,
        q: float,
        *,
        partition: Partition | None = None,
    ) -> None:
        self._n_local, self.n_features = activations.shape
        self.partition = Partition.whole(self._n_local) if partition is None else partition
        if self.partition.n_local != self._n_local:
            raise ValueError(
                f"the partition says {self.partition.n_local} samples are held here but the "
                f"data have {self._n_local} rows"
            )
        self.n_samples = self.partition.n_total
        self.symmetric = context is None
        # One stacked matrix turns the A- and C-products into a single matmul each way.
        self._data = activations if context is None else torch.cat([activations, context])
        self.sizes = tuple(int(size) for size in sizes)
        self.width = sum(self.sizes)
        self.p = float(p)
        self.q = float(q)
        device = activations.device
        column_subspace = torch.repeat_interleave(
            torch.arange(len(self.sizes), device=device), torch.tensor(self.sizes, device=device)
        )
        self._equal = len(set(self.sizes)) == 1
        # (m, K) indicator: column j belongs to subspace k.
        self._membership = torch.nn.functional.one_hot(column_subspace, len(self.sizes)).to(
            activations.dtype
        )

    @property
    def device(self) -> torch.device:
        """Device of the data."""
        return self._data.device

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the data matmuls."""
        return self._data.dtype

    def evaluate(self, bases: torch.Tensor) -> Evaluation:
        """Objective and subspace scores of every basis in ``bases`` ``(B, d, m)``."""
        batch = bases.shape[0]
        flat = bases.permute(1, 0, 2).reshape(self.n_features, batch * self.width)
        flat = flat.to(self.dtype)
        if self.device.type == "cpu":
            projections = self._data.new_empty(len(self._data), batch * self.width)
            # Row blocks keep each matmul's output cache-sized; measured 1.5× faster on CPU.
            # Accelerators get one matmul: each block would be a kernel launch of its own.
            for start in range(0, len(self._data), _ROW_BLOCK):
                rows = slice(start, start + _ROW_BLOCK)
                torch.matmul(self._data[rows], flat, out=projections[rows])
        else:
            projections = self._data @ flat
        products = self._pair_products(projections, batch)
        if self._equal:
            relevance = products.view(-1, batch, len(self.sizes), self.sizes[0]).sum(dim=-1)
        else:
            relevance = products @ self._membership
        relevance = relevance.to(torch.float64)
        objective, scores, weights = pool_relevance(
            relevance, self.p, self.q, all_reduce=self.partition.sum
        )
        return Evaluation(bases, objective, scores, projections, weights)

    def gradient(self, evaluation: Evaluation) -> torch.Tensor:
        """Euclidean gradient ``∂J/∂U`` ``(B, d, m)`` float64 at an evaluated batch."""
        n, batch = self._n_local, evaluation.bases.shape[0]
        weights = evaluation.weights.to(self.dtype)
        projections = evaluation.projections.view(-1, batch, self.width)
        cotangent = torch.empty_like(projections)
        if self.symmetric:
            self._scale_columns(weights, projections, cotangent).mul_(2.0)
        else:
            self._scale_columns(weights, projections[n:], cotangent[:n])
            self._scale_columns(weights, projections[:n], cotangent[n:])
        gradient = self._data.mT @ cotangent.view(-1, batch * self.width)
        gradient = gradient.view(self.n_features, batch, self.width).permute(1, 0, 2).double()
        return self.partition.sum(gradient)

    def _scale_columns(
        self, weights: torch.Tensor, columns: torch.Tensor, out: torch.Tensor
    ) -> torch.Tensor:
        """``out = columns ⊙ weights`` with the ``(n, B, K)`` weights broadcast to the
        ``(n, B, m)`` columns of each subspace. These passes over ``n × B·m`` memory cost
        about as much as the matmuls, so no broadcast copy of the weights is made."""
        if self._equal:
            shape = (*columns.shape[:2], len(self.sizes), self.sizes[0])
            torch.mul(columns.view(shape), weights.unsqueeze(-1), out=out.view(shape))
        else:
            torch.mul(columns, weights @ self._membership.T, out=out)
        return out

    def subset(self, rows: np.ndarray) -> RelevanceProblem:
        """The same objective on the samples ``rows``: sorted indices among all samples
        (of all processes; each process keeps those it holds)."""
        local, partition = self.partition.select(rows)
        local = torch.as_tensor(local, device=self.device)
        activations = self._data[: self._n_local][local]
        context = None if self.symmetric else self._data[self._n_local :][local]
        return RelevanceProblem(
            activations, context, self.sizes, self.p, self.q, partition=partition
        )

    def like(
        self, activations: torch.Tensor, context: torch.Tensor | None, sizes: Sequence[int]
    ) -> RelevanceProblem:
        """A problem with this one's pooling orders and samples (spread over the processes
        the same way), on other features ``(n, d')`` of them and other subspaces."""
        return RelevanceProblem(
            activations, context, sizes, self.p, self.q, partition=self.partition
        )

    def project(self, basis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Coordinates ``(n, m)`` of the activations and of the context (``None`` when the
        problem has no separate context) on the columns of ``basis`` ``(d, m)``."""
        projections = self._data @ basis.to(device=self.device, dtype=self.dtype)
        if self.symmetric:
            return projections, None
        return projections[: self._n_local], projections[self._n_local :]

    def column_relevance(self, basis: torch.Tensor) -> torch.Tensor:
        """Relevance ``(n, m)`` float64 of every sample held here along every column of
        ``basis``."""
        activations, context = self.project(basis)
        activations = activations.double()
        return activations * (activations if context is None else context.double())

    def _pair_products(self, projections: torch.Tensor, batch: int) -> torch.Tensor:
        """Elementwise ``(U_kᵀa)(U_kᵀc)`` per column, ``(n, B, m)``."""
        projections = projections.view(-1, batch, self.width)
        if self.symmetric:
            return projections.square()
        return projections[: self._n_local] * projections[self._n_local :]
