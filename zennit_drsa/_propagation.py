"""Concept heatmaps: projected layer relevances propagated to the input in one batched pass.

After :meth:`LayerContext.forward <zennit_drsa.context.LayerContext.forward>` and one backward
pass from the output to the layer (activation ``a``, context ``c``), the relevance of every
subspace and of the residual, ``a ⊙ (P_k c)``, is placed at the layer and propagated to the
input for all maps together. LRP below the layer is linear in the relevance placed there (the
stabilisers are fixed by the forward pass), so the maps sum to the LRP heatmap of ``a ⊙ c``.
Chunks of ``chunk_size`` maps bound the memory.

Two strategies propagate the maps below the layer, chosen by one argument, ``propagation``:

``"chain"``
    :func:`~zennit_drsa._chain.propagate_chain`, with the maps folded into the batch. Only
    for modules below the layer that form a plain chain (CNNs such as ``AudioCNN`` and VGG);
    any other model is refused with the reason.
``"generic"``
    One call of ``torch.autograd.grad(..., is_grads_batched=True)``, which vectorises the
    backward pass over the maps through Zennit's rule hooks: any model, but slower (it loops
    over the maps for convolutions and pooling).
``"auto"`` (the default)
    ``"chain"`` where the modules below the layer form a plain chain, else ``"generic"``.

Both give the same maps up to rounding. When a skip connection bypasses the layer, the
relevance that never passes through it is propagated too (one more backward pass from the
output, with the layer's gradient zeroed) and returned separately.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import torch

from ._chain import Link, NotAChainError, propagate_chain
from ._subspaces import ConceptSubspaces, classes_from_attr_output
from .context import LayerContext

__all__ = [
    "PROPAGATIONS",
    "Propagation",
    "PropagationMode",
    "Strategy",
    "check_chunk_size",
    "check_input",
    "check_propagation",
    "propagate",
    "select_strategy",
]

PropagationMode: TypeAlias = Literal["auto", "chain", "generic"]
PROPAGATIONS: tuple[str, ...] = ("auto", "chain", "generic")

Strategy: TypeAlias = Callable[[torch.Tensor, int | None], tuple[torch.Tensor, ...]]
"""A propagation below the layer: ``(M, *activation.shape)`` relevances placed at the layer
and a chunk size (most maps propagated together, ``None``: all) to one
``(B, M, *input.shape[1:])`` tensor of maps per model input."""


@dataclass(frozen=True)
class Propagation:
    """Result of :func:`propagate` for one batch (all tensors detached).

    Attributes
    ----------
    output:
        Model output, e.g. ``(B, n_classes)``.
    attr_output:
        Relevance placed on the output, same shape.
    heatmaps:
        One tensor per model input, ``(B, M, *input.shape[1:])``: the ``M`` propagated maps.
    layer_relevance:
        ``(B, K + 1)`` relevance of each subspace at the layer, then of the residual; sums
        to the layer's LRP relevance ``Σ a ⊙ c``.
    bypass:
        One tensor per input, ``(B, *input.shape[1:])``: the relevance that bypasses the layer
        through a skip connection; ``None`` if nothing bypasses it or no maps were requested.
    classes:
        ``(B,)`` class whose subspaces explained each sample (per-class subspaces), else
        ``None``.
    """

    output: torch.Tensor
    attr_output: torch.Tensor
    heatmaps: tuple[torch.Tensor, ...]
    layer_relevance: torch.Tensor
    bypass: tuple[torch.Tensor, ...] | None
    classes: torch.Tensor | None


def check_chunk_size(chunk_size: int | None) -> int | None:
    """Return ``chunk_size`` if it is a positive int or ``None``; raise ``ValueError`` else."""
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    return chunk_size


def check_propagation(propagation: Any) -> PropagationMode:
    """Return ``propagation`` if it is one of :data:`PROPAGATIONS`; raise ``ValueError`` else."""
    if not isinstance(propagation, str) or propagation not in PROPAGATIONS:
        raise ValueError(
            f"propagation must be one of {PROPAGATIONS} (auto: the fast chain path where the "
            f"modules below the layer form a plain chain, else generic), got {propagation!r}"
        )
    return propagation


def check_input(input: Any) -> None:
    """Raise unless ``input`` is a finite floating-point tensor ``(B, ...)`` with ``B ≥ 1``."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"the input must be a tensor (B, ...), got {type(input).__name__}")
    if input.dim() == 0 or input.shape[0] == 0:
        raise ValueError(
            f"the input must have shape (B, ...) with B >= 1, got {tuple(input.shape)}"
        )
    if not input.is_floating_point():
        raise TypeError(f"the input must be floating point, got {input.dtype}")
    finite = torch.isfinite(input.reshape(input.shape[0], -1)).all(dim=1)
    if not finite.all():
        raise ValueError(
            f"the input contains NaN or Inf (first in sample {int(torch.nonzero(~finite)[0, 0])})"
            "; clean or drop those samples"
        )


def propagate(
    layer: LayerContext,
    output: torch.Tensor,
    attr_output: torch.Tensor,
    subspaces: ConceptSubspaces,
    *,
    mixing: torch.Tensor | None = None,
    classes: torch.Tensor | None = None,
    chunk_size: int | None = None,
    propagation: PropagationMode = "auto",
) -> Propagation:
    """Concept relevances at the layer and their heatmaps, after ``layer.forward``.

    Parameters
    ----------
    layer:
        An active :class:`LayerContext` whose :meth:`~LayerContext.forward` returned
        ``output``. The caller calls ``layer.clear()`` afterwards.
    output:
        Model output, attached to the graph.
    attr_output:
        Relevance placed on the output, same shape, detached.
    subspaces:
        The concept subspaces.
    mixing:
        ``(M, K + 1)`` weights: map ``m`` propagates ``Σ_k mixing[m, k] · a ⊙ (P_k c)`` (the
        last column weighs the residual). Default: the identity, one map per subspace and
        one for the residual. ``M = 0`` computes the layer relevances only.
    classes:
        ``(B,)`` class explained for each sample, for per-class subspaces; default: the one
        non-zero entry of each row of ``attr_output``.
    chunk_size:
        Most maps propagated together in one batched backward pass; ``None``: all at once.
    propagation:
        ``"auto"``, ``"chain"`` or ``"generic"``: the strategy below the layer (see the module
        docs and :func:`select_strategy`).

    Returns
    -------
    Propagation
        Output, layer relevances ``(B, K + 1)``, the ``M`` heatmaps per input and, for a
        layer bypassed by a skip connection, the bypassing relevance per input.

    Raises
    ------
    ValueError
        For ``propagation="chain"`` when the modules below the layer are not a plain chain,
        before any backward pass.
    """
    # Chosen first, so that a refused "chain" costs no backward pass.
    strategy = select_strategy(layer, propagation)
    if subspaces.per_class and classes is None:
        classes = classes_from_attr_output(attr_output)
    activation = layer.activation
    subspaces.check_layer(activation, layer.name)
    _, context = layer.backward(output, attr_output, retain_graph=True)
    parts = subspaces.project(activation.detach(), context, classes)
    layer_relevance = parts.flatten(start_dim=2).sum(dim=2).T
    if mixing is None:
        relevances = parts
    else:
        relevances = torch.einsum("mk,k...->m...", mixing.to(parts), parts)
    heatmaps = strategy(relevances, chunk_size)
    inputs = layer.input if isinstance(layer.input, tuple) else (layer.input,)
    bypassed = bool(layer.bypass) and len(relevances) > 0
    bypass = _bypass(output, attr_output, activation, inputs) if bypassed else None
    if layer.bypass:
        share = ""
        through = _through_layer(heatmaps, mixing)
        if bypass is not None and through is not None:
            around = sum(float(b.abs().sum()) for b in bypass)
            inside = sum(float(t.abs().sum()) for t in through)
            share = f" ({around / max(around + inside, 1e-30):.0%} of the absolute relevance)"
        warnings.warn(
            f"a skip connection carries relevance around layer {layer.name!r}{share}, so the "
            "concept maps and the residual cover only the relevance passing through it (the "
            "rest is returned as the bypass map); pick a block output (e.g. 'layer1.0' instead "
            "of 'layer1.0.conv2') to decompose all of it",
            stacklevel=3,
        )
    return Propagation(
        output=output.detach(),
        attr_output=attr_output,
        heatmaps=heatmaps,
        layer_relevance=layer_relevance,
        bypass=bypass,
        classes=classes,
    )


def select_strategy(layer: LayerContext, propagation: PropagationMode) -> Strategy:
    """The strategy below the layer that ``propagation`` selects for the last forward pass.

    Parameters
    ----------
    layer:
        An active :class:`LayerContext` after :meth:`~LayerContext.forward`; ``"auto"`` and
        ``"chain"`` need it created with ``record_chain=True`` (``"auto"`` takes the generic
        path without).
    propagation:
        ``"auto"``: the chain path where the modules from the input to the layer form a plain
        chain, else the generic one. ``"chain"``: the chain path, or an error. ``"generic"``:
        autograd's batched backward pass through Zennit's hooks.

    Returns
    -------
    Strategy
        Maps ``(M, *activation.shape)`` relevances (and a chunk size) to the heatmaps.

    Raises
    ------
    ValueError
        For an unknown ``propagation``, or for ``"chain"`` when the modules are not a plain
        chain (the message says why).
    """
    check_propagation(propagation)
    if propagation == "generic":
        return _generic_strategy(layer)
    if propagation == "auto":
        links = layer.chain()
        return _generic_strategy(layer) if links is None else _chain_strategy(links)
    try:
        return _chain_strategy(layer.require_chain())
    except NotAChainError as error:
        raise ValueError(
            f"propagation='chain' needs the modules from the model input to layer "
            f"{layer.name!r} to form a plain chain, but {error}; pass propagation='auto' (the "
            "chain path where it applies) or 'generic' (any model)"
        ) from error


def _chain_strategy(links: tuple[Link, ...]) -> Strategy:
    """The chain path: the maps folded into the batch down ``links`` to the one input."""
    return lambda relevances, chunk_size: (propagate_chain(links, relevances, chunk_size),)


def _generic_strategy(layer: LayerContext) -> Strategy:
    """The generic path: autograd's batched backward pass from the layer to every input."""
    inputs = layer.input if isinstance(layer.input, tuple) else (layer.input,)
    activation = layer.activation
    # The bypass is propagated after the maps, through the same graph.
    keep = bool(layer.bypass)
    return lambda relevances, chunk_size: _batched_backward(
        activation, inputs, relevances, chunk_size, keep=keep
    )


def _through_layer(
    heatmaps: tuple[torch.Tensor, ...], mixing: torch.Tensor | None
) -> tuple[torch.Tensor, ...] | None:
    """The map of all relevance passing through the layer, if the computed maps hold it."""
    if mixing is None:
        return tuple(h.sum(dim=1) for h in heatmaps)
    everything = torch.nonzero((mixing == 1).all(dim=1))
    if not len(everything):
        return None
    return tuple(h[:, int(everything[0, 0])] for h in heatmaps)


def _batched_backward(
    activation: torch.Tensor,
    inputs: tuple[torch.Tensor, ...],
    relevances: torch.Tensor,
    chunk_size: int | None,
    *,
    keep: bool,
) -> tuple[torch.Tensor, ...]:
    """Propagate ``(M, *activation.shape)`` layer relevances to each input: ``(B, M, ...)``."""
    n_maps = len(relevances)
    step = n_maps if chunk_size is None else chunk_size
    chunks: list[tuple[torch.Tensor, ...]] = []
    for start in range(0, n_maps, step):
        chunk = relevances[start : start + step]
        last = start + step >= n_maps
        # A single map needs no vectorisation, whose per-operator fallbacks cost time.
        single = len(chunk) == 1
        gradients = torch.autograd.grad(
            activation,
            inputs,
            grad_outputs=chunk[0] if single else chunk,
            retain_graph=keep or not last,
            allow_unused=True,
            is_grads_batched=not single,
        )
        chunks.append(
            tuple(
                x.new_zeros((len(chunk), *x.shape))
                if g is None
                else (g.unsqueeze(0) if single else g)
                for g, x in zip(gradients, inputs, strict=True)
            )
        )
    maps = []
    for index, x in enumerate(inputs):
        per_input = [chunk[index] for chunk in chunks] or [x.new_zeros((0, *x.shape))]
        maps.append(torch.cat(per_input).transpose(0, 1).detach())
    return tuple(maps)


def _bypass(
    output: torch.Tensor,
    attr_output: torch.Tensor,
    activation: torch.Tensor,
    inputs: tuple[torch.Tensor, ...],
) -> tuple[torch.Tensor, ...]:
    """LRP from the output with the path through the layer cut: what flows around it."""
    # LRP is linear in the relevance flowing down, so zeroing the layer's share leaves exactly
    # the share that reaches the input through skip connections.
    handle = activation.register_hook(torch.zeros_like)
    try:
        gradients = torch.autograd.grad(output, inputs, attr_output, allow_unused=True)
    finally:
        handle.remove()
    return tuple(
        torch.zeros_like(x) if g is None else g.detach()
        for g, x in zip(gradients, inputs, strict=True)
    )
