"""DRSA concept heatmaps as a Zennit :class:`~zennit.attribution.Attributor`.

:class:`DRSAAttributor` is used like Zennit's ``Gradient``::

    with DRSAAttributor(model, composite, layer="features.10", subspaces=drsa) as attributor:
        output, relevance = attributor(x, attr_output)

``relevance`` is ``(B, K + 1, *x.shape[1:])``: one LRP heatmap per subspace, in subspace
order, then the residual; ``relevance.sum(1)`` is the standard LRP heatmap (unless a skip
connection bypasses the layer). :meth:`DRSAAttributor.explain` returns the same maps with the
concept relevances at the layer in a :class:`ConceptExplanation`.

Cost: one forward pass, one backward pass from the output to the layer, and one batched
backward pass from the layer to the input for all ``K + 1`` maps (see
:mod:`zennit_drsa._propagation`). The composite's rules are left as they are; the projection
happens between the two backward passes. ``propagation`` chooses how the maps go below the
layer: ``"chain"`` folds them into the batch (plain chains of modules such as ``AudioCNN`` and
VGG), ``"generic"`` takes autograd's batched backward pass (any model), and ``"auto"`` (the
default) the first where it applies, else the second; both give the same maps up to rounding.
:meth:`DRSAAttributor.propagate` is the lower-level call behind ``explain`` for adapters
(several inputs, further forward arguments, mixtures of maps), e.g. the Captum adapter.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from zennit.attribution import Attributor, constant
from zennit.core import Composite
from zennit.types import BatchNorm

from ._propagation import (
    PROPAGATIONS,
    Propagation,
    PropagationMode,
    check_chunk_size,
    check_input,
    check_propagation,
)
from ._propagation import propagate as propagate_from_layer
from ._subspaces import ConceptSubspaces
from .context import ContextMode, LayerContext, Target, target_gradient
from .precision import Precision, check_precision, lrp_precision

__all__ = ["PROPAGATIONS", "ConceptExplanation", "DRSAAttributor", "Propagation"]

AttrOutput = torch.Tensor | Callable[[torch.Tensor], torch.Tensor]
Classes = torch.Tensor | Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ConceptExplanation:
    """Concept heatmaps and concept relevances for one batch (all tensors detached).

    Attributes
    ----------
    output:
        Model output, e.g. ``(B, n_classes)`` logits.
    heatmaps:
        ``(B, K + 1, *input_shape)``: the LRP heatmap of each subspace's relevance, in
        subspace order, then of the residual.
    layer_relevance:
        ``(B, K + 1)``: relevance of each subspace at the layer, ``Σ_locations aᵀ P_k c``
        (not clipped), then of the residual. Its row sums are the layer's LRP relevance.
    layer:
        Name of the layer.
    bypass:
        ``(B, *input_shape)``: relevance reaching the input through skip connections around
        the layer, or ``None`` when nothing bypasses it.
    classes:
        ``(B,)`` class whose subspaces explained each sample (per-class subspaces), else
        ``None``.
    """

    output: torch.Tensor
    heatmaps: torch.Tensor
    layer_relevance: torch.Tensor
    layer: str
    bypass: torch.Tensor | None = None
    classes: torch.Tensor | None = None

    @property
    def n_subspaces(self) -> int:
        """Number of subspaces ``K``."""
        return self.heatmaps.shape[1] - 1

    @property
    def concepts(self) -> torch.Tensor:
        """``(B, K, *input_shape)`` concept heatmaps."""
        return self.heatmaps[:, :-1]

    @property
    def residual(self) -> torch.Tensor:
        """``(B, *input_shape)`` heatmap of the residual (what no subspace holds)."""
        return self.heatmaps[:, -1]

    @property
    def standard(self) -> torch.Tensor:
        """``(B, *input_shape)`` standard LRP heatmap: all maps plus the bypassing relevance."""
        total = self.heatmaps.sum(dim=1)
        return total if self.bypass is None else total + self.bypass

    @property
    def layer_total(self) -> torch.Tensor:
        """``(B,)`` LRP relevance of the whole layer, ``Σ a ⊙ c``."""
        return self.layer_relevance.sum(dim=1)


class DRSAAttributor(Attributor):
    """Zennit attributor returning one LRP heatmap per concept subspace, plus the residual.

    Parameters
    ----------
    model:
        Model in eval mode; every module with an LRP rule must run once per forward pass.
    composite:
        Zennit composite (with its canonizers) defining the LRP rules; registered by the
        attributor (in ``with`` blocks or for each call), so do not register it yourself.
    layer:
        Name (``"features.10"``) or module of the layer whose output the subspaces decompose.
    subspaces:
        A fitted estimator (anything with ``components_`` ``(Σd_k, d)`` and
        ``subspace_sizes_``), or a mapping class index → estimator so that each sample uses
        the subspaces of the class it is explained for (all with the same ``K``).
    attr_output:
        Default relevance placed on the output (Zennit's convention): a tensor of the output's
        shape or a callable ``output -> tensor``; ``None`` takes the output itself.
    chunk_size:
        Most heatmaps propagated together in one batched backward pass, bounding memory to
        about ``chunk_size`` backward passes; ``None``: all ``K + 1`` at once.
    context:
        ``"exact"`` (default) or ``"ratio"`` context at the layer (see
        :class:`~zennit_drsa.context.LayerContext`); use the mode the subspaces were fit with.
    propagation:
        How the maps go from the layer to the input. ``"chain"``: folded into the batch, for
        a model whose modules below the layer form a plain chain (each takes the previous
        one's output: ``AudioCNN``, VGG, a ResNet's stem); a call on any other model raises a
        ``ValueError`` saying why. ``"generic"``: autograd's batched backward pass through
        Zennit's hooks, for any model (slower for convolutions). ``"auto"`` (default):
        ``"chain"`` where it applies, else ``"generic"``. The maps agree up to rounding.
    precision:
        ``"full"`` (default): the passes run in float32 without TF32 on CUDA, whatever the
        global settings (TF32 breaks LRP's divisions; see :mod:`zennit_drsa.precision`).
        ``"tf32"``: keep PyTorch's settings, for speed.

    Examples
    --------
    >>> with DRSAAttributor(model, composite, "features.10", drsa) as attributor:  # doctest: +SKIP
    ...     output, relevance = attributor(x, torch.eye(10)[[3] * len(x)])
    ...     explanation = attributor.explain(x, target=3)
    >>> explanation.layer_relevance  # (B, K + 1)  # doctest: +SKIP

    Warns
    -----
    UserWarning
        On entering, for batch-norm modules not merged by a canonizer; on each call, when a
        skip connection bypasses the layer.
    """

    def __init__(
        self,
        model: nn.Module,
        composite: Composite,
        layer: str | nn.Module,
        subspaces: Any,
        *,
        attr_output: AttrOutput | None = None,
        chunk_size: int | None = 8,
        context: ContextMode = "exact",
        propagation: PropagationMode = "auto",
        precision: Precision = "full",
    ) -> None:
        if not isinstance(composite, Composite):
            raise TypeError(
                f"composite must be a zennit Composite (e.g. EpsilonPlus() or "
                f"zennit_drsa.composites.audio_composite('reference', model)), got "
                f"{type(composite).__name__}"
            )
        super().__init__(model=model, composite=composite, attr_output=attr_output)
        self.layer = layer
        self.subspaces = ConceptSubspaces(subspaces)
        self.chunk_size = check_chunk_size(chunk_size)
        self.propagation = check_propagation(propagation)
        self.precision = check_precision(precision)
        # Only the chain path needs the modules' calls; recording them hooks every leaf module.
        self.layer_context = LayerContext(
            model, composite, layer, context=context, record_chain=self.propagation != "generic"
        )
        self._entered = False

    def __enter__(self) -> DRSAAttributor:
        """Register the composite and the layer's observers on the model."""
        self.layer_context.__enter__()
        self._entered = True
        try:
            _warn_unmerged_batch_norm(self.model)
        except BaseException:
            # Warnings may be errors (``-W error``); leave the model as it was.
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc_info: object) -> bool:
        """Remove everything registered on entering."""
        self._entered = False
        self.layer_context.__exit__(*exc_info)
        return False

    def forward(
        self, input: torch.Tensor, attr_output_fn: Callable[[torch.Tensor], torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Zennit's entry point (called by ``attributor(input, attr_output)``).

        Parameters
        ----------
        input:
            Model input ``(B, ...)``.
        attr_output_fn:
            Function of the model output returning the relevance placed on it.

        Returns
        -------
        (output, relevance)
            Model output (detached) and ``(B, K + 1, *input.shape[1:])`` heatmaps.
        """
        if not self._entered:
            # Zennit calls forward without entering when the composite is already registered.
            raise RuntimeError(
                "the composite is registered on the model but not by this attributor; "
                "DRSAAttributor registers it itself: remove it and use `with "
                "DRSAAttributor(...) as attributor:` or call the attributor directly"
            )
        explanation = self._explain(input, attr_output_fn)
        return explanation.output, explanation.heatmaps

    def explain(
        self,
        input: torch.Tensor,
        target: Target | None = None,
        *,
        attr_output: AttrOutput | None = None,
    ) -> ConceptExplanation:
        """Concept heatmaps and concept relevances at the layer, from the same passes.

        Parameters
        ----------
        input:
            Model input ``(B, ...)``, finite floating point.
        target:
            What to explain: a class index, per-sample classes ``(B,)``, or a callable
            ``output -> attr_output`` (see :func:`~zennit_drsa.context.target_gradient`).
        attr_output:
            Instead of ``target``, the relevance on the output in Zennit's convention (tensor
            or callable). Neither: the attributor's default.

        Returns
        -------
        ConceptExplanation
            Heatmaps ``(B, K + 1, *input.shape[1:])``, layer relevances ``(B, K + 1)``, and
            the bypassing relevance if a skip connection goes around the layer.

        Raises
        ------
        ValueError
            For bad inputs or targets, a model in training mode, an unknown layer,
            subspaces of the wrong dimension, or ``propagation="chain"`` on a model that is
            not a plain chain below the layer.
        RuntimeError
            If the layer is not reached or runs twice, or a module with a rule runs twice.
        """
        if target is not None and attr_output is not None:
            raise ValueError("pass either target or attr_output, not both")
        if target is not None:

            def attr_output_fn(output: torch.Tensor) -> torch.Tensor:
                return target_gradient(target, output)

            return self._explain(input, attr_output_fn)
        return self._explain(input, attr_output)

    def propagate(
        self,
        inputs: torch.Tensor | tuple[torch.Tensor, ...],
        attr_output: AttrOutput | None = None,
        *,
        forward_args: tuple[Any, ...] = (),
        mixing: torch.Tensor | None = None,
        classes: Classes | None = None,
    ) -> Propagation:
        """Propagate (mixtures of) the concept relevances to the inputs: ``explain``'s passes.

        The lower-level call for adapters (the Captum adapter uses it): models with several
        inputs or further forward arguments, and maps of weighted sums of concepts. It
        registers the composite for the call unless the attributor is entered already.

        Parameters
        ----------
        inputs:
            Model input ``(B, ...)``, or a tuple of them for a model taking several (passed as
            separate positional arguments); finite floating point, converted to the model's
            dtype (the maps come in that dtype).
        attr_output:
            Relevance placed on the output ``(B, ...)``: a tensor of the output's shape or a
            callable ``output -> tensor`` (Zennit's convention); ``None``: the attributor's
            default.
        forward_args:
            Further positional arguments of the model's ``forward``, after the inputs; not
            differentiated.
        mixing:
            ``(M, K + 1)`` weights: map ``m`` propagates ``Σ_k mixing[m, k] · a ⊙ (P_k c)``
            (the last column weighs the residual). ``None``: one map per subspace, then the
            residual (``M = K + 1``). ``M = 0`` computes the layer relevances only.
        classes:
            For per-class subspaces, the class explained for each sample: ``(B,)`` indices,
            or a callable of the (detached) model output returning them. ``None``: the one
            non-zero entry of each row of the output relevance. Ignored otherwise.

        Returns
        -------
        Propagation
            Detached output and output relevance, layer relevances ``(B, K + 1)``, one
            ``(B, M, *input.shape[1:])`` tensor of maps per input, and, for a layer bypassed
            by a skip connection, the bypassing relevance per input.

        Raises
        ------
        ValueError, RuntimeError
            As for :meth:`explain`; also for ``mixing`` of the wrong shape.
        """
        input_tuple = inputs if isinstance(inputs, tuple) else (inputs,)
        if not input_tuple:
            raise ValueError("inputs is an empty tuple; pass at least one input tensor")
        for x in input_tuple:
            check_input(x)
        # Inputs take the model's dtype (float64 arrays from NumPy are common), as collect's do.
        parameter = next(self.model.parameters(), None)
        if parameter is not None and parameter.is_floating_point():
            input_tuple = tuple(x.to(parameter.dtype) for x in input_tuple)
            inputs = input_tuple if isinstance(inputs, tuple) else input_tuple[0]
        n_columns = self.subspaces.n_subspaces + 1
        if mixing is not None and (mixing.dim() != 2 or mixing.shape[1] != n_columns):
            raise ValueError(
                f"mixing must have shape (M, {n_columns}) (one weight per subspace, then the "
                f"residual), got {tuple(mixing.shape)}"
            )
        attr_output_fn = _attr_output_fn(attr_output, self.attr_output_fn)
        if self._entered:
            return self._propagate(inputs, attr_output_fn, forward_args, mixing, classes)
        with self:
            return self._propagate(inputs, attr_output_fn, forward_args, mixing, classes)

    def _explain(self, input: torch.Tensor, attr_output: AttrOutput | None) -> ConceptExplanation:
        if isinstance(input, tuple):
            raise TypeError(
                "explain takes one input tensor (B, ...); for a model with several inputs, use "
                "DRSAAttributor.propagate"
            )
        result = self.propagate(input, attr_output)
        return ConceptExplanation(
            output=result.output,
            heatmaps=result.heatmaps[0],
            layer_relevance=result.layer_relevance,
            layer=self.layer_context.name,
            bypass=None if result.bypass is None else result.bypass[0],
            classes=result.classes,
        )

    def _propagate(
        self,
        inputs: torch.Tensor | tuple[torch.Tensor, ...],
        attr_output_fn: Callable[[torch.Tensor], torch.Tensor],
        forward_args: tuple[Any, ...],
        mixing: torch.Tensor | None,
        classes: Classes | None,
    ) -> Propagation:
        layer = self.layer_context
        try:
            # Captum's metrics and NoiseTunnel call their attributions under torch.no_grad().
            with torch.enable_grad(), lrp_precision(self.precision):
                output = layer.forward(inputs, *forward_args)
                attr_output = target_gradient(attr_output_fn, output.detach())
                if not self.subspaces.per_class:
                    classes = None
                elif callable(classes):
                    classes = classes(output.detach())
                return propagate_from_layer(
                    layer,
                    output,
                    attr_output,
                    self.subspaces,
                    mixing=mixing,
                    classes=classes,
                    chunk_size=self.chunk_size,
                    propagation=self.propagation,
                )
        finally:
            layer.clear()


def _attr_output_fn(
    attr_output: AttrOutput | None, default: Callable[[torch.Tensor], torch.Tensor]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``attr_output`` as a function of the output (Zennit's convention); ``None``: default."""
    if attr_output is None:
        return default
    if callable(attr_output):
        return attr_output
    return constant(attr_output)


def _warn_unmerged_batch_norm(model: nn.Module) -> None:
    """Warn about batch norms that no canonizer turned into the identity."""
    unmerged = [
        name
        for name, module in model.named_modules()
        if isinstance(module, BatchNorm) and not _is_identity_batch_norm(module)
    ]
    if unmerged:
        warnings.warn(
            f"batch-norm modules {unmerged} are not merged into the preceding layers, so LRP "
            "passes relevance through them unchanged and conservation breaks; add a canonizer "
            "to the composite (zennit.canonizers.SequentialMergeBatchNorm(), VGGCanonizer, "
            "ResNetCanonizer), or build it with zennit_drsa.composites.audio_composite",
            stacklevel=3,
        )


def _is_identity_batch_norm(module: nn.Module) -> bool:
    """Whether a batch norm computes (nearly) the identity, as a merging canonizer leaves it."""
    mean, var = module.running_mean, module.running_var
    if mean is None or var is None:
        return False
    weight, bias = module.weight, module.bias
    return bool(
        (mean == 0).all()
        and (var == 1).all()
        and (weight is None or (weight == 1).all())
        and (bias is None or (bias == 0).all())
    )
