"""Captum attribution classes for DRSA (imported on first use by :mod:`zennit_drsa.captum`).

Both classes register the Zennit composite for each ``attribute`` call and remove it after,
so the model is left bare between calls (as Captum's own ``LRP`` does with its rules). The
relevance placed on the output is the selected output value, as in ``captum.attr.LRP``, so
a standard map sums to the target score up to what the rules absorb. The propagation is
:meth:`DRSAAttributor.propagate <zennit_drsa.attribution.DRSAAttributor.propagate>`; only
Captum's public modules are used.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, TypeAlias

import torch
from captum.attr import GradientAttribution, LayerAttribution
from captum.log import log_usage
from torch import nn
from zennit.core import Composite

from ._propagation import Propagation, PropagationMode
from ._subspaces import classes_from_attr_output
from .attribution import DRSAAttributor
from .composites import reference_composite
from .context import ContextMode

__all__ = ["DRSAAttribution", "LayerDRSAAttribution"]

Concept = int | str | Sequence[int | str] | None
"""A subspace index, ``"residual"``, a sequence of these, or ``None`` (everything)."""
RESIDUAL = "residual"

CaptumTarget: TypeAlias = (
    int | tuple[int, ...] | torch.Tensor | list[int] | list[tuple[int, ...]] | None
)
"""Captum's target forms: the output index (after the batch axis) explained for every sample
(an int, a tuple of ints, a one-element tensor), one per sample (a ``(B,)`` tensor, a list of
ints or of tuples), or ``None`` for the whole output (one value per sample)."""


class DRSAAttribution(GradientAttribution):
    """Captum attribution: the LRP heatmap of one DRSA concept, several, the residual, or all.

    Parameters
    ----------
    model:
        Model in eval mode (Captum's ``forward_func``); every module with an LRP rule must
        run once per forward pass.
    layer:
        Name (``"features.10"``) or module of the layer the subspaces decompose.
    subspaces:
        A fitted estimator (anything with ``components_`` and ``subspace_sizes_``), or a
        mapping class index → estimator (each sample uses its target's subspaces).
    composite:
        Zennit composite with the LRP rules; ``None`` builds
        :func:`~zennit_drsa.composites.reference_composite` for ``model``.
    chunk_size, context, propagation:
        As for :class:`~zennit_drsa.attribution.DRSAAttributor`: ``propagation`` is
        ``"auto"`` (default), ``"chain"`` or ``"generic"``.

    Examples
    --------
    >>> drsa_attr = DRSAAttribution(model, "features.10", drsa)  # doctest: +SKIP
    >>> first = drsa_attr.attribute(x, target=3, concept=0)  # doctest: +SKIP
    >>> standard, delta = drsa_attr.attribute(x, target=3, return_convergence_delta=True)
    ... # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str | nn.Module,
        subspaces: Any,
        composite: Composite | None = None,
        *,
        chunk_size: int | None = 8,
        context: ContextMode = "exact",
        propagation: PropagationMode = "auto",
    ) -> None:
        GradientAttribution.__init__(self, model)
        self.attributor = DRSAAttributor(
            model,
            reference_composite(model) if composite is None else composite,
            layer,
            subspaces,
            chunk_size=chunk_size,
            context=context,
            propagation=propagation,
        )

    @property
    def multiplies_by_inputs(self) -> bool:
        """LRP heatmaps already include the input (as Captum's ``LRP``)."""
        return True

    def has_convergence_delta(self) -> bool:
        """The delta is the relevance lost between the top of the propagation and the input."""
        return True

    @log_usage()
    def attribute(
        self,
        inputs: torch.Tensor | tuple[torch.Tensor, ...],
        target: CaptumTarget = None,
        additional_forward_args: Any = None,
        concept: Concept = None,
        return_convergence_delta: bool = False,
    ) -> Any:
        """Input-shaped attributions of the selected concept(s) for the target output.

        Parameters
        ----------
        inputs:
            Model input ``(B, ...)``, or a tuple of tensors for a model taking several.
        target:
            Any Captum target form (int, tuple, tensor, list of ints or tuples, ``None`` for
            one output per sample); the selected output values are explained. Negative
            indices count from the end, as in Python.
        additional_forward_args:
            Further arguments of the model's forward (a tuple, or one non-tuple value).
        concept:
            ``None``: the standard LRP heatmap (all subspaces, the residual, and relevance
            bypassing the layer). An int ``k`` (``0 <= k < K``): subspace ``k``.
            ``"residual"``: the residual. A sequence of these: their combined map (the sum
            of their maps, computed in one pass).
        return_convergence_delta:
            Also return ``(B,)`` conservation deltas: the relevance at the top of the
            propagation (the target output value for the standard map, the selected concept
            relevances at the layer otherwise) minus the sum of the attributions.

        Returns
        -------
        attributions, or (attributions, delta)
            A tensor shaped like ``inputs`` (a tuple of them for tuple inputs).

        Raises
        ------
        TypeError, ValueError
            For a target of an unsupported form (before the forward pass) or out of range
            (naming the valid range; before any backward pass), and as for
            :meth:`DRSAAttributor.propagate <zennit_drsa.attribution.DRSAAttributor.propagate>`.
        """
        weights = _concept_weights(concept, self.attributor.subspaces.n_subspaces)
        result = _run(self.attributor, inputs, additional_forward_args, target, weights[None])
        maps = tuple(heatmap[:, 0] for heatmap in result.heatmaps)
        if concept is None and result.bypass is not None:
            maps = tuple(m + bypass for m, bypass in zip(maps, result.bypass, strict=True))
        attributions = maps if isinstance(inputs, tuple) else maps[0]
        if not return_convergence_delta:
            return attributions
        if concept is None:
            start = result.attr_output.flatten(start_dim=1).sum(dim=1)
        else:
            start = result.layer_relevance @ weights.to(result.layer_relevance)
        return attributions, start - sum(m.flatten(start_dim=1).sum(dim=1) for m in maps)


class LayerDRSAAttribution(LayerAttribution, GradientAttribution):
    """Captum layer attribution: the relevance of each DRSA subspace at the layer.

    Parameters are those of :class:`DRSAAttribution`. ``attribute`` returns ``(B, K + 1)``:
    ``Σ_locations aᵀ P_k c`` for each subspace, then the residual, summing to the layer's LRP
    relevance. It needs no backward pass below the layer.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str | nn.Module,
        subspaces: Any,
        composite: Composite | None = None,
        *,
        context: ContextMode = "exact",
    ) -> None:
        LayerAttribution.__init__(self, model, layer)
        GradientAttribution.__init__(self, model)
        self.attributor = DRSAAttributor(
            model,
            reference_composite(model) if composite is None else composite,
            layer,
            subspaces,
            context=context,
            # No map goes below the layer, so no strategy needs the modules' calls recorded.
            propagation="generic",
        )

    def has_convergence_delta(self) -> bool:
        """The delta is the relevance lost between the output and the layer."""
        return True

    @log_usage()
    def attribute(
        self,
        inputs: torch.Tensor | tuple[torch.Tensor, ...],
        target: CaptumTarget = None,
        additional_forward_args: Any = None,
        return_convergence_delta: bool = False,
    ) -> Any:
        """Subspace relevances at the layer for the target output.

        Parameters
        ----------
        inputs, target, additional_forward_args:
            As for :meth:`DRSAAttribution.attribute`.
        return_convergence_delta:
            Also return ``(B,)`` deltas: the target output value minus the layer's total
            relevance.

        Returns
        -------
        relevance, or (relevance, delta)
            ``(B, K + 1)`` subspace relevances, then the residual.

        Raises
        ------
        TypeError, ValueError
            As for :meth:`DRSAAttribution.attribute`.
        """
        n_columns = self.attributor.subspaces.n_subspaces + 1
        no_maps = torch.zeros(0, n_columns)
        result = _run(self.attributor, inputs, additional_forward_args, target, no_maps)
        relevance = result.layer_relevance
        if not return_convergence_delta:
            return relevance
        start = result.attr_output.flatten(start_dim=1).sum(dim=1)
        return relevance, start - relevance.sum(dim=1)


def _run(
    attributor: DRSAAttributor,
    inputs: torch.Tensor | tuple[torch.Tensor, ...],
    additional_forward_args: Any,
    target: CaptumTarget,
    mixing: torch.Tensor,
) -> Propagation:
    """The attributor's propagation of ``(M, K + 1)`` mixtures of the concept relevances.

    LRP starts from the output values that Captum's ``target`` selects; the target's form is
    checked before the model runs.
    """
    indices = _target_indices(target)
    if additional_forward_args is None:
        forward_args = ()
    elif isinstance(additional_forward_args, tuple):
        forward_args = additional_forward_args
    else:
        forward_args = (additional_forward_args,)
    return attributor.propagate(
        inputs,
        lambda output: output * _target_mask(output, indices),
        forward_args=forward_args,
        mixing=mixing,
        # From the mask, not the relevance: a selected output may be exactly zero.
        classes=lambda output: classes_from_attr_output(_target_mask(output, indices)),
    )


def _target_indices(target: CaptumTarget) -> torch.Tensor | None:
    """Captum's ``target`` as int64 indices into the output's axes after the batch axis.

    Returns
    -------
    torch.Tensor or None
        ``(k,)``: the same ``k`` indices for every sample; ``(n, k)``: indices per sample;
        ``None``: the whole output.

    Raises
    ------
    TypeError
        For a target of no Captum form (bools, floats, strings, mixed lists).
    ValueError
        For a tensor of another shape than one index or ``(n,)``, an empty list, or a list
        of tuples of different lengths.
    """
    if target is None:
        return None
    forms = (
        "pass an int, a tuple of ints, a tensor (one index, or one per sample), a list of ints "
        "or of tuples of ints (one per sample), or None"
    )
    if _is_index(target):
        return torch.tensor([int(target)])
    if isinstance(target, tuple):
        if not all(_is_index(index) for index in target):
            raise TypeError(f"a tuple target must hold ints, got {target!r}; {forms}")
        return torch.tensor([int(index) for index in target], dtype=torch.long)
    if isinstance(target, torch.Tensor):
        if target.dtype == torch.bool or target.is_floating_point() or target.is_complex():
            raise TypeError(f"a tensor target must hold integer indices, got {target.dtype}")
        if target.numel() == 1:
            return target.detach().reshape(1).long().cpu()
        if target.dim() != 1:
            raise ValueError(
                "a tensor target holds one index, or one per sample (shape (B,)), got shape "
                f"{tuple(target.shape)}"
            )
        return target.detach().long().cpu().reshape(-1, 1)
    if isinstance(target, list):
        if not target:
            raise ValueError(f"target is an empty list; {forms}")
        if all(_is_index(index) for index in target):
            return torch.tensor([int(index) for index in target]).reshape(-1, 1)
        if all(isinstance(item, tuple) and all(map(_is_index, item)) for item in target):
            lengths = sorted({len(item) for item in target})
            if len(lengths) > 1:
                raise ValueError(
                    f"the tuples of a target list must all have the same length, got {lengths}"
                )
            rows = [[int(index) for index in item] for item in target]
            return torch.tensor(rows, dtype=torch.long).reshape(len(target), lengths[0])
    raise TypeError(f"unsupported target {target!r}; {forms}")


def _is_index(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _target_mask(output: torch.Tensor, indices: torch.Tensor | None) -> torch.Tensor:
    """0/1 tensor of the output's shape marking the outputs that ``indices`` select.

    Parameters
    ----------
    output:
        Model output ``(B, ...)``.
    indices:
        From :func:`_target_indices`: ``(k,)``, ``(B, k)`` or ``None``.

    Raises
    ------
    ValueError
        For per-sample indices not matching the batch, more indices than output axes, or an
        index out of range (the message names the valid range).
    """
    if indices is None:
        return torch.ones_like(output)
    n_samples = output.shape[0]
    if indices.dim() == 2 and len(indices) != n_samples:
        raise ValueError(
            f"a per-sample target needs one entry per sample ({n_samples}), got {len(indices)}"
        )
    n_axes = indices.shape[-1]
    if n_axes > output.dim() - 1:
        raise ValueError(
            f"the target indexes {n_axes} output axes after the batch axis, but the output "
            f"{tuple(output.shape)} has {output.dim() - 1}"
        )
    columns = []
    for axis in range(n_axes):
        size = output.shape[1 + axis]
        column = indices[..., axis]
        outside = (column < -size) | (column >= size)
        if outside.any():
            raise ValueError(
                f"target index {int(column[outside][0])} is out of range for output axis "
                f"{1 + axis} of size {size}: valid indices are 0..{size - 1} (or -{size}..-1 "
                "counting from the end)"
            )
        columns.append((column % size).to(output.device).expand(n_samples))
    mask = torch.zeros_like(output)
    mask[(torch.arange(n_samples, device=output.device), *columns)] = 1
    return mask


def _concept_weights(concept: Concept, n_subspaces: int) -> torch.Tensor:
    """``(K + 1,)`` 0/1 weights of the subspaces (and residual, last) that ``concept`` selects."""
    weights = torch.zeros(n_subspaces + 1)
    if concept is None:
        return weights + 1
    items = [concept] if isinstance(concept, numbers.Integral | str) else list(concept)
    if not items:
        raise ValueError("concept is an empty sequence; pass None, an index, or 'residual'")
    for item in items:
        if isinstance(item, str) and item == RESIDUAL:
            index = n_subspaces
        elif (
            isinstance(item, numbers.Integral)
            and not isinstance(item, bool)
            and 0 <= item < n_subspaces
        ):
            index = int(item)
        else:
            raise ValueError(
                f"concept {item!r} is not one of the {n_subspaces} subspaces (0..{n_subspaces - 1})"
                f" or {RESIDUAL!r}"
            )
        if weights[index]:
            raise ValueError(f"concept {item!r} is selected twice")
        weights[index] = 1.0
    return weights
