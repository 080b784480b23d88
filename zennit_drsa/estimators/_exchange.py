"""Exchanges of directions between subspaces, to leave assignment-type local maxima.

Gradient ascent cannot move a direction from one subspace to another without passing
through worse mixtures, so subspaces that each hold parts of several concepts are local
maxima of the DRSA objective. Here each subspace is split into pure directions ("atoms"),
and atoms are regrouped (single exchanges, and size-constrained clustering by
co-activation) whenever that raises the objective.

Every quantity summed over samples (pooled relevances, the atoms' co-activation Gram matrix)
goes through the problem's :class:`~zennit_drsa._distributed.Partition`, so the exchanges are
the same when the samples are spread over processes.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from zennit_drsa._distributed import Partition
from zennit_drsa.estimators._ascent import ascend
from zennit_drsa.estimators.objective import RelevanceProblem, pool_relevance

__all__ = ["exchange_directions"]

# Budget of the inner optimisation that splits a subspace into pure directions; atoms need
# not be exact, so it runs on a random subset of the samples.
_ATOM_ITERATIONS = 50
_ATOM_TOLERANCE = 1e-3
_ATOM_SAMPLES = 4096
# Single exchanges tried per grouping at most.
_MAX_SWAPS = 32
# Size-constrained k-means of atoms: seedings tried and iterations per seeding.
_CLUSTER_SEEDS = 4
_CLUSTER_ITERATIONS = 20


def exchange_directions(
    problem: RelevanceProblem, basis: torch.Tensor, rng: np.random.Generator
) -> torch.Tensor | None:
    """Exchange directions between subspaces of ``basis`` ``(1, d, m)`` while ``J`` improves.

    Returns the new ``(1, d, m)`` basis, or ``None`` if no exchange improves ``J``.
    """
    basis = basis[0].to(problem.device)
    sample = problem
    if problem.n_samples > _ATOM_SAMPLES:
        rows = rng.choice(problem.n_samples, _ATOM_SAMPLES, replace=False)
        sample = problem.subset(np.sort(rows))
    activations, context = sample.project(basis)
    offsets = np.cumsum((0, *problem.sizes))
    columns = []
    for k, size in enumerate(problem.sizes):
        block = slice(offsets[k], offsets[k + 1])
        if size > 1:
            local_context = None if context is None else context[:, block]
            rotation = _atoms(sample, activations[:, block], local_context, rng)
            columns.append(basis[:, block] @ rotation)
        else:
            columns.append(basis[:, block])
    rotated = torch.cat(columns, dim=1)
    atoms = problem.column_relevance(rotated)
    p, q, partition = problem.p, problem.q, problem.partition
    current = [list(range(offsets[k], offsets[k + 1])) for k in range(len(problem.sizes))]
    threshold = _grouped_objective(atoms, current, p, q, partition) * (1 + 1e-9)
    clusterings = _cluster_atoms(atoms, problem.sizes, rng, partition)
    # Polishing is the costly part: do it for the current grouping and the best clustering.
    clustered = max(clusterings, key=lambda g: _grouped_objective(atoms, g, p, q, partition))
    best, chosen = threshold, None
    for groups in (current, clustered):
        groups = _polish(atoms, groups, p, q, partition)
        objective = _grouped_objective(atoms, groups, p, q, partition)
        if objective > best:
            best, chosen = objective, groups
    if chosen is None:
        return None
    return rotated[:, [column for group in chosen for column in group]][None]


def _grouped_objective(
    atoms: torch.Tensor, groups: list[list[int]], p: float, q: float, partition: Partition
) -> float:
    """``J`` when subspace ``k`` is spanned by the atoms ``groups[k]`` (columns of ``atoms``)."""
    relevance = torch.stack([atoms[:, group].sum(dim=1) for group in groups], dim=1)
    return float(pool_relevance(relevance[:, None, :], p, q, all_reduce=partition.sum)[0][0])


def _polish(
    atoms: torch.Tensor, groups: list[list[int]], p: float, q: float, partition: Partition
) -> list[list[int]]:
    """Greedy single exchanges of atoms between groups while ``J`` improves."""
    groups = [list(group) for group in groups]
    for _ in range(_MAX_SWAPS):
        swap = _best_exchange(atoms, groups, p, q, partition)
        if swap is None:
            break
        (one, i), (other, j) = swap
        groups[one][i], groups[other][j] = groups[other][j], groups[one][i]
    return groups


def _cluster_atoms(
    atoms: torch.Tensor, sizes: tuple[int, ...], rng: np.random.Generator, partition: Partition
) -> list[list[list[int]]]:
    """Groupings of atoms by co-activation: size-constrained k-means on the atoms'
    relevance profiles over samples, from a few k-means++ seedings.

    Local exchanges cannot undo a cyclic mixture (subspace 1 holding halves of concepts A
    and B, subspace 2 of B and C, subspace 3 of C and A); regrouping from scratch can.

    The profiles (unit vectors over samples) enter only through their inner products, and
    centroids are means of profiles, so k-means runs on the ``(m, m)`` Gram matrix: one sum
    over samples, all-reduced when they are spread over processes.
    """
    positive = atoms.clamp_min(0)
    gram = partition.sum(positive.mT @ positive).cpu().numpy()
    norms = np.sqrt(np.diagonal(gram))
    norms = np.where(norms > 0, norms, 1.0)
    similarity = gram / norms[:, None] / norms[None, :]
    n_atoms = len(similarity)
    slots = np.repeat(np.arange(len(sizes)), sizes)
    groupings = []
    for _ in range(_CLUSTER_SEEDS):
        centres = [int(rng.integers(n_atoms))]
        for _ in range(1, len(sizes)):
            distance = np.clip(1 - similarity[:, centres].max(axis=1), 0, None)
            total = distance.sum()
            weights = distance / total if total > 0 else None
            centres.append(int(rng.choice(n_atoms, p=weights)))
        # (m, K) inner products of the profiles with the centroids: the seeds' columns first.
        affinity = similarity[:, centres]
        labels = None
        for _ in range(_CLUSTER_ITERATIONS):
            rows, columns = linear_sum_assignment(-affinity[:, slots])
            new_labels = slots[columns[np.argsort(rows)]]
            if labels is not None and np.array_equal(labels, new_labels):
                break
            labels = new_labels
            affinity = np.stack(
                [similarity[:, labels == k].mean(axis=1) for k in range(len(sizes))], axis=1
            )
        groupings.append([np.flatnonzero(labels == k).tolist() for k in range(len(sizes))])
    return groupings


def _atoms(
    problem: RelevanceProblem,
    activations: torch.Tensor,
    context: torch.Tensor | None,
    rng: np.random.Generator,
) -> torch.Tensor:
    """Rotation ``(d_k, d_k)`` of one subspace into directions ("atoms") whose relevance is
    as concentrated on few samples as possible: DRSA with one-dimensional subspaces on the
    subspace's coordinates ``activations`` and ``context`` ``(n, d_k)``. A subspace that
    mixes directions of different concepts is split into pure directions this way."""
    size = activations.shape[1]
    local = problem.like(activations, context, (1,) * size)
    start = torch.eye(size, dtype=torch.float64, device=problem.device)[None]
    result = ascend(local, start, rng, _ATOM_ITERATIONS, _ATOM_TOLERANCE, None, 0)
    return torch.as_tensor(result.basis, device=problem.device)


def _best_exchange(
    atoms: torch.Tensor, groups: list[list[int]], p: float, q: float, partition: Partition
) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The exchange of one atom between two groups that raises ``J`` most, or ``None``.

    ``atoms`` ``(n, m)`` holds the relevance of every sample along every direction; a
    group's relevance is the sum over its directions. Returns ``((k, i), (k2, j))``: swap
    entry ``i`` of group ``k`` with entry ``j`` of group ``k2``.
    """
    relevance = torch.stack([atoms[:, group].sum(dim=1) for group in groups], dim=1)

    def pooled(values: torch.Tensor) -> torch.Tensor:
        return partition.mean(values.clamp_min(0).pow(p)).pow(1 / p)

    scores = pooled(relevance)
    powered = scores.pow(q)
    current = powered.mean().pow(1 / q)
    best, choice = current * (1 + 1e-9), None
    for one, other in itertools.combinations(range(len(groups)), 2):
        leave = atoms[:, groups[one]][:, :, None]
        enter = atoms[:, groups[other]][:, None, :]
        new_one = pooled(relevance[:, one, None, None] - leave + enter)
        new_other = pooled(relevance[:, other, None, None] + leave - enter)
        rest = powered.sum() - powered[one] - powered[other]
        objective = ((rest + new_one.pow(q) + new_other.pow(q)) / len(groups)).pow(1 / q)
        index = int(torch.argmax(objective))
        if objective.flatten()[index] > best:
            best = objective.flatten()[index]
            width = len(groups[other])
            choice = ((one, index // width), (other, index % width))
    return choice
