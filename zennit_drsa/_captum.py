"""Captum attribution classes for DRSA (imported on first use by :mod:`zennit_drsa.captum`).

Both classes register the Zennit composite for each ``attribute`` call and remove it after,
so the model is left bare between calls (as Captum's own ``LRP`` does with its rules). The
relevance placed on the output is the selected output value, as in ``captum.attr.LRP``, so
a standard map sums to the target score up to what the rules absorb.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import torch
from captum._utils.common import _select_targets
from captum._utils.typing import TargetType
from captum.attr import GradientAttribution, LayerAttribution
from captum.log import log_usage
from torch import nn
from zennit.core import Composite

from ._propagation import Propagation, check_input, propagate
from ._subspaces import classes_from_attr_output
from .attribution import DRSAAttributor
from .composites import reference_composite
from .context import ContextMode

__all__ = ["DRSAAttribution", "LayerDRSAAttribution"]

Concept = int | str | Sequence[int | str] | None
"""A subspace index, ``"residual"``, a sequence of these, or ``None`` (everything)."""
RESIDUAL = "residual"


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
    chunk_size, context:
        As for :class:`~zennit_drsa.attribution.DRSAAttributor`.

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
    ) -> None:
        GradientAttribution.__init__(self, model)
        self.attributor = DRSAAttributor(
            model,
            reference_composite(model) if composite is None else composite,
            layer,
            subspaces,
            chunk_size=chunk_size,
            context=context,
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
        target: TargetType = None,
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
            one output per sample); the selected output values are explained.
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
        """
        is_tuple = isinstance(inputs, tuple)
        input_tuple = inputs if is_tuple else (inputs,)
        if not input_tuple:
            raise ValueError("inputs is an empty tuple; pass at least one input tensor")
        for x in input_tuple:
            check_input(x)
        weights = _concept_weights(concept, self.attributor.subspaces.n_subspaces)
        result = _run(self.attributor, input_tuple, additional_forward_args, target, weights)
        maps = tuple(heatmap[:, 0] for heatmap in result.heatmaps)
        if concept is None and result.bypass is not None:
            maps = tuple(m + bypass for m, bypass in zip(maps, result.bypass, strict=True))
        attributions = maps if is_tuple else maps[0]
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
        )

    def has_convergence_delta(self) -> bool:
        """The delta is the relevance lost between the output and the layer."""
        return True

    @log_usage()
    def attribute(
        self,
        inputs: torch.Tensor | tuple[torch.Tensor, ...],
        target: TargetType = None,
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
        """
        input_tuple = inputs if isinstance(inputs, tuple) else (inputs,)
        if not input_tuple:
            raise ValueError("inputs is an empty tuple; pass at least one input tensor")
        for x in input_tuple:
            check_input(x)
        n_columns = self.attributor.subspaces.n_subspaces + 1
        no_maps = torch.zeros(0, n_columns)
        result = _run(self.attributor, input_tuple, additional_forward_args, target, no_maps)
        relevance = result.layer_relevance
        if not return_convergence_delta:
            return relevance
        start = result.attr_output.flatten(start_dim=1).sum(dim=1)
        return relevance, start - relevance.sum(dim=1)


def _run(
    attributor: DRSAAttributor,
    inputs: tuple[torch.Tensor, ...],
    additional_forward_args: Any,
    target: TargetType,
    weights: torch.Tensor,
) -> Propagation:
    """One forward pass and the propagation of the weighted concept relevances."""
    if additional_forward_args is None:
        forward_args = ()
    elif isinstance(additional_forward_args, tuple):
        forward_args = additional_forward_args
    else:
        forward_args = (additional_forward_args,)
    with attributor:
        layer = attributor.layer_context
        try:
            # Captum metrics and NoiseTunnel call attribute under torch.no_grad().
            with torch.enable_grad():
                output = layer.forward(inputs, *forward_args)
                mask = _target_mask(output.detach(), target)
                classes = classes_from_attr_output(mask) if attributor.subspaces.per_class else None
                return propagate(
                    layer,
                    output,
                    output.detach() * mask,
                    attributor.subspaces,
                    mixing=weights.reshape(-1, weights.shape[-1]),
                    classes=classes,
                    chunk_size=attributor.chunk_size,
                )
        finally:
            layer.clear()


def _target_mask(output: torch.Tensor, target: TargetType) -> torch.Tensor:
    """0/1 tensor of the output's shape marking the outputs Captum's ``target`` selects."""
    probe = output.detach().requires_grad_()
    with torch.enable_grad():
        # Captum's own selection, so that every target form means what it means in Captum.
        selected = _select_targets(probe, target)
        (mask,) = torch.autograd.grad(selected.sum(), probe)
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
