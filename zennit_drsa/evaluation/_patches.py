"""Patch grids and removal schedules for patch flipping: which patches go, and when.

Everything here works on one input at a time and is pure bookkeeping (numpy, no model):
the grid maps pixels to patches and knows each patch's true area; an ordering turns K
patch rankings into one removal sequence; a step schedule cuts that sequence into the
points at which the model is evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

Ordering = Literal["union", "round_robin"]
ORDERINGS: tuple[str, ...] = ("union", "round_robin")


@dataclass(frozen=True)
class PatchGrid:
    """Non-overlapping ``patch_height × patch_width`` patches tiling an ``height × width`` grid.

    Patches are numbered in raster order (row-major). When a side is not divisible by the
    patch size, the last row/column of patches is smaller; :meth:`areas` gives true sizes.
    """

    height: int
    width: int
    patch_height: int
    patch_width: int

    @property
    def n_rows(self) -> int:
        return -(-self.height // self.patch_height)

    @property
    def n_cols(self) -> int:
        return -(-self.width // self.patch_width)

    @property
    def n_patches(self) -> int:
        return self.n_rows * self.n_cols

    def patch_index(self) -> np.ndarray:
        """Patch number of every pixel, ``(height, width)`` int64."""
        rows = np.arange(self.height) // self.patch_height
        cols = np.arange(self.width) // self.patch_width
        return rows[:, None] * self.n_cols + cols[None, :]

    def areas(self) -> np.ndarray:
        """True area of every patch in pixels, ``(n_patches,)`` int64 (edge patches smaller)."""
        return np.bincount(self.patch_index().reshape(-1), minlength=self.n_patches)

    def relevance(self, heatmaps: torch.Tensor) -> np.ndarray:
        """Sum of each heatmap over each patch (and over channels).

        Parameters
        ----------
        heatmaps:
            ``(..., C, height, width)``.

        Returns
        -------
        ``(..., n_patches)`` float64 array.
        """
        summed = heatmaps.detach().to(dtype=torch.float64).sum(dim=-3)
        pad_h = self.n_rows * self.patch_height - self.height
        pad_w = self.n_cols * self.patch_width - self.width
        # Zero padding adds nothing to the sums, so edge patches keep their true relevance.
        padded = torch.nn.functional.pad(summed, (0, pad_w, 0, pad_h))
        blocks = padded.reshape(
            *summed.shape[:-2], self.n_rows, self.patch_height, self.n_cols, self.patch_width
        )
        return blocks.sum(dim=(-3, -1)).reshape(*summed.shape[:-2], -1).cpu().numpy()


def removal_order(relevance: np.ndarray, ordering: Ordering) -> tuple[np.ndarray, np.ndarray]:
    """Turn K patch rankings into one removal sequence.

    Each concept ranks the patches by decreasing relevance (ties keep raster order).

    * ``"union"``: in round ``m`` every concept, in index order, removes the ``m``-th patch
      of its own ranking unless it is already gone (the turn is then lost).
    * ``"round_robin"``: concepts take turns (round ``m`` = one turn each); a turn removes
      the concept's best-ranked patch that is still present.

    With K = 1 both are the single ranking, one patch per round.

    Parameters
    ----------
    relevance:
        ``(K, n_patches)`` patch relevances of the K heatmaps.
    ordering:
        ``"union"`` or ``"round_robin"``.

    Returns
    -------
    order, rounds:
        ``(n_patches,)`` int64 each: the patch removed at every position of the sequence
        (a permutation), and the round in which it was removed (non-decreasing).
    """
    n_concepts, n_patches = relevance.shape
    rankings = np.argsort(-relevance, axis=1, kind="stable")
    if ordering == "union":
        positions = np.empty_like(rankings)
        np.put_along_axis(positions, rankings, np.arange(n_patches)[None, :], axis=1)
        # A patch goes in the first round any concept reaches it, by the first such concept.
        depth = positions.min(axis=0)
        first = positions.argmin(axis=0)
        order = np.argsort(depth * n_concepts + first, kind="stable")
        return order, depth[order]
    if ordering == "round_robin":
        removed = [False] * n_patches
        pointers = [0] * n_concepts
        ranks = rankings.tolist()
        sequence = []
        for turn in range(n_patches):
            concept = turn % n_concepts
            position = pointers[concept]
            while removed[ranks[concept][position]]:
                position += 1
            patch = ranks[concept][position]
            pointers[concept] = position + 1
            removed[patch] = True
            sequence.append(patch)
        return np.asarray(sequence, dtype=np.int64), np.arange(n_patches) // n_concepts
    raise ValueError(f"ordering must be one of {ORDERINGS}, got {ordering!r}")


def step_counts(
    rounds: np.ndarray, *, patches_per_step: int | None, n_steps: int | None
) -> np.ndarray:
    """Number of patches removed after each step, strictly increasing and ending at all.

    Parameters
    ----------
    rounds:
        ``(n_patches,)`` round of every removal (from :func:`removal_order`).
    patches_per_step:
        A step is this many rounds: each concept's ranking advances this many patches.
    n_steps:
        Instead, this many steps evenly spaced in the number of removed patches.

    Returns
    -------
    ``(n_evaluated_steps,)`` int64; steps that would remove nothing are dropped.
    """
    n_patches = rounds.shape[0]
    if n_steps is not None:
        counts = np.arange(1, n_steps + 1) * n_patches // n_steps
    else:
        assert patches_per_step is not None
        n_rounds = int(rounds[-1]) + 1
        boundaries = np.arange(patches_per_step, n_rounds + patches_per_step, patches_per_step)
        counts = np.searchsorted(rounds, boundaries, side="left")
    return np.unique(counts[counts > 0])
