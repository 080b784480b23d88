"""Activation and exact LRP context at one layer of a model under a Zennit composite.

At a layer with output ``a`` (shape ``(B, d, *map)``), LRP assigns each unit the relevance
``R = a ⊙ c``. The *context* ``c`` is the message that the rule of the layer's consumer (the
next module with an LRP rule) computes before multiplying by its input: for LRP-0/ε/γ,
``c_j = Σ_k ρ(w_jk) R_k / z_k``. Zennit stores ``R`` as the gradient at the layer output, not
``c``; :class:`LayerContext` recovers ``c`` exactly, including at units with ``a_j = 0``.

How: every Zennit rule ends with ``relevance = reducer(inputs, gradients)`` where ``inputs``
are images ``m_i(x)`` of the consumer's input ``x`` under the rule's input modifiers and the
gradients hold the upper relevance divided by the stabilised outputs. For the LRP rules
(ε, γ, z⁺, αβ, Norm) each ``m_i`` is the identity or a clamp at zero, so the reducer is
``x ⊙ c`` with ``c`` constant on either side of zero. :class:`LayerContext` wraps the
consumer's reducer (it still returns the unchanged relevance) and evaluates it once more
with ``x`` replaced by ``+1`` (and by ``-1`` where ``x < 0``). At ``x = 0`` the context is the
one for positive inputs (the limit ``x → 0⁺``): the natural choice after a ReLU, whose
outputs are never negative. Modules between the layer and its consumers that only route
values (max-pooling, flatten, reshape, dropout in eval mode, ReLU under the ``Pass`` rule,
stacking) are crossed with their plain gradient, which maps ``c`` back to the layer exactly
as the relevance is mapped. Every batch is then checked: ``a ⊙ c`` must equal the relevance
Zennit propagates to the layer, else an error names the consumers.

Rules that are not of the ``x ⊙ c`` form (ZBox, WSquare, Flat: rules for the input layer)
cannot be consumers; neither can a module without a rule that is not a routing module
(e.g. batch norm without a merging canonizer). Both fail the check with an explanation.

A skip connection around the layer (inside a ResNet block, say) carries relevance that never
passes through the layer; ``R`` then holds only the part that does. :class:`LayerContext`
detects this from the autograd graph and reports it as ``bypass``; choose a block output
(``"layer1.0"``) to capture everything.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import numpy as np
import torch
from torch import nn
from zennit.core import BasicHook, Composite, Hook

from ._chain import ChainRecorder, Link, NotAChainError
from .layers import check_eval, check_single_call, resolve_layer

__all__ = [
    "CONTEXT_MODES",
    "RATIO_EPSILON",
    "LayerContext",
    "LayerContextResult",
    "Target",
    "target_gradient",
]

Target: TypeAlias = (
    int | Sequence[int] | np.ndarray | torch.Tensor | Callable[[torch.Tensor], torch.Tensor]
)
ContextMode: TypeAlias = Literal["exact", "ratio"]
CONTEXT_MODES: tuple[str, ...] = ("exact", "ratio")
RATIO_EPSILON = 1e-7
"""Shift of the denominator in the ``context="ratio"`` approximation ``c = R / (a + 1e-7)``."""


def target_gradient(target: Target, output: torch.Tensor) -> torch.Tensor:
    """Turn a target into the gradient that starts LRP at the model output.

    This follows Zennit's ``attr_output`` convention: the returned tensor is the relevance
    placed on the output, e.g. a one-hot vector for a class. (Multiply by the output in a
    callable, ``lambda out: out * one_hot``, to start from the logit value instead.)

    Parameters
    ----------
    target:
        A class index (int) for every sample; per-sample class indices (1-D int sequence,
        array or tensor of length ``B``); or a callable ``output -> attr_output`` returning a
        tensor of the output's shape.
    output:
        Model output, ``(B, n_classes)`` for class targets (any shape for a callable).

    Returns
    -------
    torch.Tensor
        Same shape, dtype and device as ``output``, detached from the graph.

    Raises
    ------
    ValueError
        Out-of-range classes, wrong label count or a callable returning the wrong shape or
        non-finite values.
    TypeError
        Non-integer labels or a target of an unsupported type.
    """
    if callable(target):
        grad = target(output)
        if not isinstance(grad, torch.Tensor) or grad.shape != output.shape:
            got = tuple(grad.shape) if isinstance(grad, torch.Tensor) else type(grad).__name__
            raise ValueError(
                f"the target callable must return a tensor of the output's shape "
                f"{tuple(output.shape)}, got {got}"
            )
        if not torch.isfinite(grad).all():
            raise ValueError("the target callable returned NaN or Inf values")
        # A graph-attached attr_output would make Zennit build a second-order graph.
        return grad.detach().to(output.dtype)
    if output.dim() != 2:
        raise ValueError(
            f"class targets need an output of shape (B, n_classes), got {tuple(output.shape)}; "
            "pass a callable output -> attr_output for other outputs"
        )
    n_samples, n_classes = output.shape
    labels = _as_labels(target, n_samples)
    if labels.numel() and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(
            f"target classes must lie in 0..{n_classes - 1} (the model has {n_classes} outputs), "
            f"got values from {int(labels.min())} to {int(labels.max())}"
        )
    return nn.functional.one_hot(labels.to(output.device), n_classes).to(output.dtype)


def _as_labels(target: Any, n_samples: int) -> torch.Tensor:
    """Per-sample int64 labels ``(n_samples,)`` from an int or a 1-D integer sequence."""
    if isinstance(target, bool | np.bool_):
        raise TypeError("target must be a class index, labels or a callable, not a bool")
    if isinstance(target, int | np.integer):
        return torch.full((n_samples,), int(target), dtype=torch.long)
    if isinstance(target, str):
        raise TypeError(f"unsupported target {target!r}: use an int, labels or a callable")
    labels = torch.as_tensor(target if isinstance(target, torch.Tensor) else np.asarray(target))
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"per-sample targets must be integer class indices, got {labels.dtype}")
    if labels.dim() != 1 or labels.shape[0] != n_samples:
        raise ValueError(
            f"per-sample targets must have shape ({n_samples},) to match the batch, "
            f"got {tuple(labels.shape)}"
        )
    return labels.long()


@dataclass(frozen=True)
class LayerContextResult:
    """Quantities at the layer for one batch (all detached).

    Attributes
    ----------
    output:
        Model output ``(B, n_classes)``.
    activation:
        Layer output ``a``, ``(B, d, *map)`` (``(B, d)`` for dense layers).
    context:
        Context ``c``, same shape: exact (``"exact"``) or ``R / (a + 1e-7)`` (``"ratio"``).
    relevance:
        LRP relevance ``R`` at the layer output, same shape; ``R = a ⊙ c`` up to rounding
        in exact mode.
    bypass:
        True if a skip connection carries relevance around the layer, so ``R`` is only the
        part of the explanation that passes through it.
    """

    output: torch.Tensor
    activation: torch.Tensor
    context: torch.Tensor
    relevance: torch.Tensor
    bypass: bool


class LayerContext:
    """Context manager computing activation, relevance and context at one layer.

    On entering, it registers ``composite`` on ``model`` (the model must carry no Zennit hooks
    yet), then its own observing hooks *after* the composite's; on exiting it removes both.
    The layer's rule is left untouched: the layer's output is replaced out of place by a copy
    (its own autograd node), and consumer rules only gain a side computation.

    Parameters
    ----------
    model:
        A model in eval mode. Every module with an LRP rule must run once per forward.
    composite:
        The Zennit composite (with its canonizers) defining the LRP rules.
    layer:
        Layer name (``"features.10"``, ``"layer1.0"``; names added by canonizers work too) or
        the module itself. Its output must be a tensor ``(B, d, *map)``.
    context:
        ``"exact"`` (default): the consumer rule's context, exact everywhere.
        ``"ratio"``: the approximation ``R / (a + 1e-7)`` of earlier code, which is zero where
        ``a = 0`` and unstable for negative ``a``; offered for comparison only.
    tol:
        Largest relative difference ``‖R − a ⊙ c‖ / ‖R‖`` tolerated per batch in exact mode
        before raising; ``None`` disables the check.
    record_chain:
        Also record the modules' calls up to the layer, so that :meth:`chain` and
        :meth:`require_chain` can tell whether they form a plain chain from the input (which
        the ``"chain"`` propagation of concept maps to the input needs; a
        :class:`~zennit_drsa.attribution.DRSAAttributor` asks for it unless its
        ``propagation`` is ``"generic"``); off by default, since it hooks every leaf module.

    Examples
    --------
    >>> with LayerContext(model, EpsilonPlus(), "features.10") as layer:  # doctest: +SKIP
    ...     result = layer(x, target=3)
    ...     a, c = result.activation, result.context

    For further backward passes from the layer (concept heatmaps), use the steps separately:
    ``output = layer.forward(x)``, ``relevance, context = layer.backward(output,
    attr_output, retain_graph=True)``, then differentiate ``layer.activation`` (still attached
    to the graph, rules active) with respect to ``layer.input``; finally ``layer.clear()``.

    Attributes
    ----------
    name:
        Resolved layer name (set on entering).
    input, activation:
        Model input (a tuple for several inputs) and layer output ``a`` of the last
        :meth:`forward`, attached to the graph.
    bypass:
        Whether relevance also flows around the layer in the last forward (see module docs).
    consumers:
        Names of the modules whose rules consume the layer output (exact mode).
    """

    def __init__(
        self,
        model: nn.Module,
        composite: Composite,
        layer: str | nn.Module,
        *,
        context: ContextMode = "exact",
        tol: float | None = 1e-4,
        record_chain: bool = False,
    ) -> None:
        if context not in CONTEXT_MODES:
            raise ValueError(f"context must be one of {CONTEXT_MODES}, got {context!r}")
        if tol is not None and not tol > 0:
            raise ValueError(f"tol must be positive or None, got {tol}")
        self.model = model
        self.composite = composite
        self.layer = layer
        self.mode = context
        self.tol = tol
        self.name: str | None = None
        self.input: torch.Tensor | None = None
        self.activation: torch.Tensor | None = None
        self.bypass: bool | None = None
        self.consumers: list[str] = []
        self._entered = False
        self._handles: list[Any] = []
        self._reducers: dict[BasicHook, Callable] = {}
        self._names: dict[nn.Module, str] = {}
        self._hooks: dict[nn.Module, Hook] = {}
        self._recorder = ChainRecorder() if record_chain else None
        self._reset_records()

    # -- registration ---------------------------------------------------------------------

    def __enter__(self) -> LayerContext:
        if self._entered:
            raise RuntimeError("this LayerContext is already active; nested use is not supported")
        check_eval(self.model)
        if _zennit_hooks(self.model):
            raise RuntimeError(
                "the model already carries Zennit hooks (is a composite registered?); pass the "
                "bare model, LayerContext registers the composite itself"
            )
        self.composite.register(self.model)
        self._entered = True
        try:
            # Resolve after registering: canonizers may add modules (e.g. ``canonizer_sum``).
            self.name, module = resolve_layer(self.model, self.layer)
            self._names = {m: n for n, m in self.model.named_modules()}
            self._hooks = _zennit_hooks(self.model)
            rules = {m: h for m, h in self._hooks.items() if isinstance(h, BasicHook)}
            for rule_module, hook in rules.items():
                self._handles.append(rule_module.register_forward_pre_hook(self._record_input))
                self._handles.append(rule_module.register_forward_hook(self._record_output))
                if self.mode == "exact":
                    self._wrap_reducer(rule_module, hook)
            if self._recorder is not None:
                # After the composite's hooks and before the layer's tap (see ChainRecorder).
                self._handles.extend(self._recorder.register(self.model))
            # Registered last, so that a layer that has a rule records its output unreplaced.
            self._handles.append(module.register_forward_hook(self._tap_layer))
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._release()

    def _release(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for hook, reducer in self._reducers.items():
            hook.reducer = reducer
        self._reducers.clear()
        self._reset_records()
        self._hooks = {}
        self.input = self.activation = None
        if self._entered:
            self.composite.remove()
            self._entered = False

    def _wrap_reducer(self, module: nn.Module, hook: BasicHook) -> None:
        """Make ``hook`` also store its context when ``module`` consumes the layer output."""
        original = hook.reducer

        def reducer(inputs: list[torch.Tensor], gradients: list[torch.Tensor]) -> torch.Tensor:
            if module in self._consumer_modules:
                x = self._inputs[module].detach()
                self._captured[module] = _probe_context(
                    original, hook.input_modifiers, x, gradients
                )
            return original(inputs, gradients)

        self._reducers[hook] = original
        hook.reducer = reducer

    # -- forward-time records -------------------------------------------------------------

    def _reset_records(self) -> None:
        self._layer_calls = 0
        self._layer_version = 0
        self._after_layer = False
        self._rule_calls: dict[nn.Module, int] = {}
        self._inputs: dict[nn.Module, torch.Tensor] = {}
        self._outputs: dict[nn.Module, torch.Tensor] = {}
        self._consumer_modules: list[nn.Module] = []
        self._captured: dict[nn.Module, torch.Tensor] = {}
        if self._recorder is not None:
            self._recorder.clear()

    def _record_input(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self._rule_calls[module] = self._rule_calls.get(module, 0) + 1
        if self._after_layer and args and isinstance(args[0], torch.Tensor):
            self._inputs[module] = args[0]

    def _record_output(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if self._after_layer and isinstance(output, torch.Tensor):
            self._outputs[module] = output

    def _tap_layer(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> torch.Tensor:
        self._layer_calls += 1
        if not isinstance(output, torch.Tensor) or output.dim() < 2:
            got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise TypeError(
                f"layer {self.name!r} must output one tensor of shape (B, d, ...), got {got}; "
                "pick a module with a single feature-map output"
            )
        # A copy gives the layer output its own autograd node, where backward passes can stop
        # or start; the layer's own rule is not affected.
        tapped = output.clone()
        self.activation = tapped
        self._layer_version = tapped._version
        self._after_layer = True
        if self._recorder is not None:
            self._recorder.stop(output)
        return tapped

    # -- computation ----------------------------------------------------------------------

    def forward(self, input: torch.Tensor | tuple[torch.Tensor, ...], *args: Any) -> torch.Tensor:
        """Run the model, recording the layer output as :attr:`activation`.

        Parameters
        ----------
        input:
            Model input ``(B, ...)``, or a tuple of such tensors for a model taking several
            (passed as separate positional arguments). An input that does not require gradients
            is replaced by a detached copy that does; :attr:`input` keeps what was used (a tuple
            if a tuple was given).
        *args:
            Further positional arguments of the model's ``forward``, passed after the inputs;
            they are not differentiated.

        Returns
        -------
        torch.Tensor
            Model output, attached to the graph.

        Raises
        ------
        RuntimeError
            If the layer did not run exactly once, a module with a rule ran twice, an in-place
            operation changed the layer output, or (exact mode) no rule consumes the layer output.
        """
        self._require_active()
        inputs = input if isinstance(input, tuple) else (input,)
        if not inputs:
            raise ValueError("the model input is an empty tuple; pass at least one tensor")
        for x in inputs:
            if not isinstance(x, torch.Tensor) or not x.is_floating_point():
                got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
                raise TypeError(f"the model input must be a floating point tensor, got {got}")
        if self.model.training:
            # Canonizers may add modules left in training mode; only a switch back counts.
            check_eval(self.model)
        self._reset_records()
        if self._recorder is not None:
            self._recorder.start()
        self.activation = None
        inputs = tuple(x if x.requires_grad else x.detach().requires_grad_() for x in inputs)
        self.input = inputs if isinstance(input, tuple) else inputs[0]
        with torch.enable_grad():
            output = self.model(*inputs, *args)
        check_single_call(self.name, self._layer_calls)
        reused = [self._names[m] for m, calls in self._rule_calls.items() if calls > 1]
        if reused:
            raise RuntimeError(
                f"modules with LRP rules ran more than once in one forward pass: {reused}; "
                "hook-based LRP keeps one input per module, so give each use its own module"
            )
        activation = self.activation
        if activation.grad_fn is None:
            raise RuntimeError(
                f"the output of layer {self.name!r} does not depend on the input or on trainable "
                "parameters, so no relevance reaches it"
            )
        if activation._version != self._layer_version:
            raise RuntimeError(
                f"an in-place operation modified the output of layer {self.name!r} after it was "
                "recorded; make the following module out of place (e.g. ReLU(inplace=False))"
            )
        if not isinstance(output, torch.Tensor) or output.grad_fn is None:
            raise RuntimeError(
                "the model output is not a tensor attached to the autograd graph; the layer "
                "context needs a differentiable model"
            )
        layer_node = activation.grad_fn
        self.bypass = _reaches(output.grad_fn, _input_matcher(inputs), stop={layer_node})
        if self.mode == "exact":
            stops = {out.grad_fn for out in self._outputs.values()} - {None}
            self._consumer_modules = [
                module
                for module, x in self._inputs.items()
                if x.grad_fn is not None
                and _reaches(x.grad_fn, lambda node: node is layer_node, stop=stops)
            ]
            self.consumers = [self._names[m] for m in self._consumer_modules]
            if not self._consumer_modules:
                raise RuntimeError(
                    f"no module with an LRP rule takes the output of layer {self.name!r}; it "
                    "is the model output or reaches it without a rule, so it has no context"
                )
        return output

    def backward(
        self, output: torch.Tensor, attr_output: torch.Tensor, *, retain_graph: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Relevance and context at the layer for the last :meth:`forward`.

        Parameters
        ----------
        output:
            The output returned by :meth:`forward`.
        attr_output:
            Initial relevance at the output, same shape (see :func:`target_gradient`).
        retain_graph:
            Keep the graph for further backward passes (e.g. from :attr:`activation` down to
            :attr:`input`).

        Returns
        -------
        (relevance, context)
            Tensors of the layer output's shape ``(B, d, *map)``, detached.

        Raises
        ------
        RuntimeError
            In exact mode, if ``a ⊙ c`` differs from the relevance by more than ``tol``.
        """
        self._require_active()
        activation = self.activation
        if activation is None:
            raise RuntimeError("call forward(input) before backward(output, attr_output)")
        exact = self.mode == "exact"
        self._captured = {}
        (relevance,) = torch.autograd.grad(
            output, activation, grad_outputs=attr_output, retain_graph=exact or retain_graph
        )
        if not exact:
            return relevance, relevance / (activation.detach() + RATIO_EPSILON)
        missing = [self._names[m] for m in self._consumer_modules if m not in self._captured]
        if missing:
            raise RuntimeError(
                f"the LRP rules of {missing} did not run in the backward pass, so their context "
                "is unknown; is another hook disabling them?"
            )
        inputs = [self._inputs[m] for m in self._consumer_modules]
        contexts = [self._captured[m] for m in self._consumer_modules]
        # Plain gradients route the consumers' context back to the layer; paths through other
        # rule modules are not routes (what flows there reaches the layer via a consumer).
        with self.composite.inactive(), _zero_gradients(list(self._outputs.values())):
            (context,) = torch.autograd.grad(
                inputs, activation, grad_outputs=contexts, retain_graph=retain_graph
            )
        self._captured = {}
        self._check(relevance, activation.detach(), context)
        return relevance, context

    def __call__(self, input: torch.Tensor, target: Target) -> LayerContextResult:
        """Forward and backward for one batch; see :func:`target_gradient` for ``target``.

        Returns
        -------
        LayerContextResult
            Detached output, activation, context and relevance; the graph is freed.
        """
        output = self.forward(input)
        relevance, context = self.backward(output, target_gradient(target, output.detach()))
        result = LayerContextResult(
            output=output.detach(),
            activation=self.activation.detach(),
            context=context,
            relevance=relevance,
            bypass=bool(self.bypass),
        )
        self.clear()
        return result

    def chain(self) -> tuple[Link, ...] | None:
        """The modules from the input to the layer in the last :meth:`forward`, if a plain chain.

        Returns
        -------
        tuple of Link or None
            What :meth:`require_chain` returns; ``None`` where it raises, or without
            ``record_chain`` or a forward pass.
        """
        self._require_active()
        if self._recorder is None or self.input is None:
            return None
        try:
            return self.require_chain()
        except NotAChainError:
            return None

    def require_chain(self) -> tuple[Link, ...]:
        """The modules from the input to the layer in the last :meth:`forward`, as a plain chain.

        Returns
        -------
        tuple of Link
            The modules from the layer down to the input, each with its Zennit hook and its
            input: each takes the previous one's output and nothing else, and all are
            supported by :func:`~zennit_drsa._chain.propagate_chain`.

        Raises
        ------
        NotAChainError
            A ``ValueError`` naming what breaks the chain: a model with several inputs, an
            unsupported module, an operation between modules, a foreign hook.
        RuntimeError
            Without ``record_chain``, or before :meth:`forward`.
        """
        self._require_active()
        if self._recorder is None:
            raise RuntimeError(
                "the modules' calls were not recorded; create the LayerContext with "
                "record_chain=True to find the chain"
            )
        if self.input is None:
            raise RuntimeError("call forward(input) before looking for the chain")
        inputs = self.input if isinstance(self.input, tuple) else (self.input,)
        if len(inputs) != 1:
            raise NotAChainError(f"the model takes {len(inputs)} inputs; a chain starts from one")
        return self._recorder.links(inputs[0], self._hooks, self, self._names)

    def clear(self) -> None:
        """Forget the last forward pass, so that its autograd graph can be freed.

        Call it after the last backward pass through a graph built by :meth:`forward` (the
        ``__call__`` shortcut does). Zennit keeps a handle per hooked module and forward until
        its hooks are removed; dropping them keeps memory flat over many batches.
        """
        self._reset_records()
        self.input = self.activation = None
        for hook in self._hooks.values():
            hook.tensor_handles.remove()

    def _check(
        self, relevance: torch.Tensor, activation: torch.Tensor, context: torch.Tensor
    ) -> None:
        if self.tol is None:
            return
        product = activation * context
        scale = max(float(relevance.norm()), float(product.norm()))
        error = float((relevance - product).norm()) / scale if scale > 0 else 0.0
        if not error <= self.tol:
            raise RuntimeError(
                f"at layer {self.name!r}, activation × context differs from the LRP relevance by "
                f"{error:.2e} (relative; tol {self.tol:g}); consumers {self.consumers}. The "
                "consumer rules must be of the form input × gradient (ε, γ, z⁺, αβ, Norm), and "
                "modules between the layer and its consumers must only route values (pooling, "
                "flatten, ReLU with Pass); merge batch norm with a canonizer"
            )

    def _require_active(self) -> None:
        if not self._entered:
            raise RuntimeError(
                "use LayerContext as a context manager: with LayerContext(...) as l:"
            )


def _probe_context(
    reducer: Callable[[list[torch.Tensor], list[torch.Tensor]], torch.Tensor],
    input_modifiers: Sequence[Callable[[torch.Tensor], torch.Tensor]],
    x: torch.Tensor,
    gradients: Sequence[torch.Tensor],
) -> torch.Tensor:
    """Context ``c`` of a rule whose relevance is ``reducer([m(x) for m], gradients) = x ⊙ c``.

    ``c`` is the reducer evaluated at ``x = +1`` where ``x >= 0`` and minus its value at
    ``x = -1`` where ``x < 0``; exact for input modifiers that are positively homogeneous
    (identity, clamps at zero).
    """
    ones = torch.ones_like(x)
    positive = reducer([modifier(ones) for modifier in input_modifiers], list(gradients))
    if not (x < 0).any():
        return positive
    negative = -reducer([modifier(-ones) for modifier in input_modifiers], list(gradients))
    return torch.where(x < 0, negative, positive)


def _zennit_hooks(model: nn.Module) -> dict[nn.Module, Hook]:
    """The Zennit hook registered on each module of ``model`` (a composite gives one each)."""
    found = {}
    for module in model.modules():
        # Zennit registers bound methods of its Hook objects; torch keeps them in _forward_hooks.
        for function in module._forward_hooks.values():
            owner = getattr(function, "__self__", None)
            if isinstance(owner, Hook):
                found[module] = owner
    return found


def _input_matcher(inputs: Sequence[torch.Tensor]) -> Callable[[Any], bool]:
    """Predicate recognising the autograd nodes through which gradients reach ``inputs``."""
    nodes = {x.grad_fn for x in inputs if x.grad_fn is not None}
    leaves = [x for x in inputs if x.grad_fn is None]
    return lambda candidate: (
        candidate in nodes or any(getattr(candidate, "variable", None) is x for x in leaves)
    )


def _reaches(start: Any, is_target: Callable[[Any], bool], stop: set[Any]) -> bool:
    """Whether the autograd graph leads from ``start`` to a target node, not crossing ``stop``."""
    pending, seen = [start], set()
    while pending:
        node = pending.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if is_target(node):
            return True
        if node not in stop:
            pending.extend(next_node for next_node, _ in node.next_functions)
    return False


@contextlib.contextmanager
def _zero_gradients(tensors: Sequence[torch.Tensor]) -> Iterator[None]:
    """Temporarily replace the gradients flowing into ``tensors`` by zeros."""
    handles = [t.register_hook(torch.zeros_like) for t in tensors if t.requires_grad]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
