"""Patch machinery shared by patch flipping and concept selectivity.

The bookkeeping works on one input at a time (numpy, no model): the grid maps pixels to
patches and knows each patch's true area; an ordering turns K patch rankings into one
removal sequence; a step schedule cuts that sequence into the points at which the model is
evaluated. :func:`perturbed_batches` then builds the perturbed inputs, and the ``check_*``
helpers validate what both measures take from the caller.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

Ordering = Literal["union", "round_robin", "positive_sum"]
ORDERINGS: tuple[str, ...] = ("union", "round_robin", "positive_sum")


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
    * ``"positive_sum"``: one ranking by ``Σ_k max(0, R_kp)``, the positive part of each
      concept's patch relevance summed over the concepts; one patch per round.

    With K = 1, ``"union"`` and ``"round_robin"`` are the single ranking, one patch per
    round; ``"positive_sum"`` is too, except that patches of negative relevance all rank
    0 and go in raster order.

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
    if ordering == "positive_sum":
        # Clipping per concept first: a concept's negative evidence must not hide a patch
        # that another concept finds relevant.
        total = np.maximum(relevance, 0.0).sum(axis=0)
        return np.argsort(-total, kind="stable"), np.arange(n_patches)
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


def perturbed_batches(
    inputs: torch.Tensor,
    rank_maps: torch.Tensor,
    fill: torch.Tensor,
    job_input: np.ndarray,
    job_map: np.ndarray,
    job_count: np.ndarray,
    *,
    batch_size: int,
    device: torch.device,
) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
    """Perturbed inputs, in batches of jobs.

    Job ``j`` is input ``job_input[j]`` with every pixel whose rank in
    ``rank_maps[job_map[j]]`` is below ``job_count[j]`` replaced by the fill: a rank map
    holds, per pixel, the position of its patch in a removal sequence, so a count removes
    that many patches. No gradient mode is set: callers decide.

    Parameters
    ----------
    inputs:
        ``(B, C, H, W)``.
    rank_maps:
        ``(n_maps, H, W)`` int64.
    fill:
        ``(1, C, H, W)`` or ``(B, C, H, W)`` removal images (from :func:`removal_images`).
    job_input, job_map, job_count:
        ``(n_jobs,)`` int arrays.
    batch_size:
        Jobs per batch.
    device:
        Where the batches are built.

    Yields
    ------
    jobs, rows, batch:
        The slice of jobs, their input indices ``(n,)`` on ``device`` and the perturbed
        batch ``(n, C, H, W)``.
    """
    inputs = inputs.to(device)
    rank_maps = rank_maps.to(device).unsqueeze(1)
    fill = fill.to(device=device, dtype=inputs.dtype)
    job_input_t = torch.from_numpy(np.asarray(job_input, dtype=np.int64)).to(device)
    job_map_t = torch.from_numpy(np.asarray(job_map, dtype=np.int64)).to(device)
    job_count_t = torch.from_numpy(np.asarray(job_count, dtype=np.int64)).to(device)
    for start in range(0, job_input_t.shape[0], batch_size):
        jobs = slice(start, start + batch_size)
        rows = job_input_t[jobs]
        removed = rank_maps[job_map_t[jobs]] < job_count_t[jobs, None, None, None]
        yield (
            jobs,
            rows,
            torch.where(removed, fill[rows] if fill.shape[0] > 1 else fill, inputs[rows]),
        )


def model_device(
    model: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor
) -> torch.device:
    """The device of the model's first parameter (or buffer), else that of ``inputs``."""
    if isinstance(model, nn.Module):
        for tensor in (*model.parameters(), *model.buffers()):
            return tensor.device
    return inputs.device


def check_inputs(inputs: torch.Tensor) -> torch.Tensor:
    """``inputs`` as a detached ``(B, C, H, W)`` finite floating tensor, or a ValueError."""
    if not isinstance(inputs, torch.Tensor):
        raise ValueError(f"inputs must be a torch.Tensor (B, C, H, W), got {type(inputs).__name__}")
    if inputs.ndim != 4:
        raise ValueError(f"inputs must be (B, C, H, W), got shape {tuple(inputs.shape)}")
    if inputs.shape[0] == 0 or inputs.numel() == 0:
        raise ValueError(f"inputs are empty: shape {tuple(inputs.shape)}")
    if not inputs.is_floating_point():
        raise ValueError(f"inputs must be floating point, got {inputs.dtype}")
    if not torch.isfinite(inputs).all():
        raise ValueError("inputs contain NaN/Inf")
    return inputs.detach()


def check_heatmaps(heatmaps: torch.Tensor | np.ndarray, input_shape: torch.Size) -> torch.Tensor:
    """Heatmaps as ``(B, K, C, H, W)`` (a ``(B, C, H, W)`` map is K = 1), or a ValueError."""
    heatmaps = torch.as_tensor(heatmaps)
    if heatmaps.ndim == 4:
        heatmaps = heatmaps.unsqueeze(1)
    if heatmaps.ndim != 5 or heatmaps.shape[0] != input_shape[0]:
        raise ValueError(
            f"heatmaps must be (B, C, H, W) or (B, K, C, H, W) with B = {input_shape[0]}, "
            f"got shape {tuple(heatmaps.shape)}"
        )
    if heatmaps.shape[2:] != input_shape[1:]:
        raise ValueError(
            f"heatmaps {tuple(heatmaps.shape)} do not match inputs {tuple(input_shape)}: "
            "the trailing (C, H, W) must be equal"
        )
    if heatmaps.shape[1] == 0:
        raise ValueError("heatmaps hold no concepts (K = 0)")
    if not heatmaps.is_floating_point():
        raise ValueError(f"heatmaps must be floating point, got {heatmaps.dtype}")
    if not torch.isfinite(heatmaps).all():
        raise ValueError("heatmaps contain NaN/Inf")
    return heatmaps


def check_targets(
    targets: torch.Tensor | np.ndarray | Sequence[int], n_inputs: int
) -> torch.Tensor:
    """Targets as ``(B,)`` int64 class indices (one int: the same for all), or a ValueError."""
    index = torch.as_tensor(targets)
    if index.ndim == 0:
        index = index.expand(n_inputs)
    if index.shape != (n_inputs,):
        raise ValueError(f"targets must be (B,) = ({n_inputs},), got shape {tuple(index.shape)}")
    if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:
        raise ValueError(f"targets must be integer class indices, got {index.dtype}")
    if (index < 0).any():
        raise ValueError(f"targets must be >= 0, got {index.tolist()}")
    return index.to(torch.int64)


def check_patch_size(patch_size: int | tuple[int, int]) -> tuple[int, int]:
    """``(h, w)`` of positive ints from an int or a pair, or a ValueError."""
    size = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
    if len(size) != 2 or not all(isinstance(s, int) and s >= 1 for s in size):
        raise ValueError(f"patch_size must be a positive int or (h, w) of them, got {patch_size!r}")
    return size[0], size[1]


def check_batch_size(batch_size: int) -> int:
    """A positive int, or a ValueError."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return batch_size


def removal_images(
    removal: float | str | torch.Tensor, mean_image: torch.Tensor | None, inputs: torch.Tensor
) -> torch.Tensor:
    """The removal value as ``(1, C, H, W)`` or, per input, ``(B, C, H, W)``."""
    if isinstance(removal, str):
        if removal != "mean":
            raise ValueError(f"removal must be a float, 'mean' or a tensor, got {removal!r}")
        if mean_image is None:
            raise ValueError("removal='mean' needs mean_image= (e.g. the dataset-mean input)")
        fill = torch.as_tensor(mean_image)
    elif mean_image is not None:
        raise ValueError("mean_image is only used with removal='mean'")
    elif isinstance(removal, bool) or not isinstance(removal, numbers.Real | torch.Tensor):
        raise ValueError(f"removal must be a float, 'mean' or a tensor, got {removal!r}")
    else:
        fill = torch.as_tensor(removal, dtype=inputs.dtype)
    fill = fill.detach().to(dtype=inputs.dtype, device=inputs.device)
    if not torch.isfinite(fill).all():
        raise ValueError("the removal value contains NaN/Inf")
    if fill.ndim == 4 and fill.shape == inputs.shape:
        return fill
    try:
        return fill.expand(inputs.shape[1:]).unsqueeze(0)
    except RuntimeError:
        raise ValueError(
            f"removal image of shape {tuple(fill.shape)} does not broadcast to the input "
            f"(C, H, W) = {tuple(inputs.shape[1:])}; give (C, H, W) or (B, C, H, W)"
        ) from None
