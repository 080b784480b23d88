"""LRP from a layer down to the input for all maps at once, through a plain chain of modules.

Between the model input and the layer, most CNNs are a *chain*: each module takes the previous
module's output and nothing else (``AudioCNN``, VGG, the stem of a ResNet). For a chain, the
``M`` maps are propagated module by module with the maps folded into the batch: each rule's
modified forward passes run once on the ``B`` samples and their backward passes take the
``M·B`` gradients together (one transposed convolution, one scatter for max-pooling).

Why not ``torch.autograd.grad(..., is_grads_batched=True)``, the generic path kept for every
other model: autograd vectorises with legacy ``vmap``, which has no batching rule for the
convolution and pooling backward passes, so it loops over the maps and stacks the results; it
also runs each hooked module's unmodified backward pass, whose result the rule discards. On
the reference architecture (K = 4, batch 16) that is 30 convolution backward passes per γ
layer (5 maps × the unmodified one and the rule's 5) where this module needs one for all maps.

Exactness: a step computes what Zennit's ``BasicHook.backward`` computes, with the rule's own
input, parameter and output modifiers, gradient mapper and reducer (the last two evaluated per
map with :func:`torch.func.vmap`), and the gradient of each modified forward pass
(:func:`torch.func.vjp`, or the transposed convolution or weight product itself for a plain
convolution or linear layer). Backward passes that can only yield zeros are skipped: that of a
modified output whose mapped gradient is zero for all maps (the γ rule's sign-only output, or
its negative branch where no relevance arrives after a ReLU), and that of a gradient the
reducer ignores (the γ rule's terms for the negative part of an input that has none).
``Pass`` rules hand the relevance on unchanged; modules without a rule take their plain
gradient (max-pooling as one scatter along the forward pass's indices).

The chain is found from a record of the forward pass (:class:`ChainRecorder`): walking back
from the layer's output, each tensor must be the output of a recorded call of a supported
module (convolution, linear, pooling, ReLU, flatten, dropout, identity, batch norm) with a
supported Zennit hook (any ``BasicHook``, ``Pass``, or none) and no hook of anyone else,
taking one tensor, unchanged since, until the model input is reached. Anything else (a skip
connection below the layer, a functional operation between modules, several model inputs,
other hooks) is not a chain: :meth:`ChainRecorder.links` raises :class:`NotAChainError`
naming what breaks it, and ``propagation="auto"`` (see :mod:`zennit_drsa._propagation`) takes
the generic path instead.

On the CPU, large folded batches are split into blocks of samples that are carried through
the rest of the chain one after the other (:data:`BLOCK_BYTES`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from zennit.core import BasicHook, Hook, ParamMod
from zennit.rules import Pass

__all__ = ["BLOCK_BYTES", "ChainRecorder", "Link", "NotAChainError", "propagate_chain"]

BLOCK_BYTES = 32 * 2**20
"""On the CPU, a step whose folded gradients ``(M, b, ...)`` would exceed this many bytes runs
on blocks of fewer samples, each carried on to the input before the next starts. Tensors of
hundreds of megabytes cost more in fresh-page faults and cache misses than in arithmetic
(zero-filling 168 MB measured 100 ms in fresh memory and 13 ms in reused memory; glibc's
allocator reuses blocks up to 32 MiB), while every block repeats each step's operations, whose
fixed cost dominates on a machine whose cores are busy. On the reference architecture (K = 4,
batch 16, one thread) a ``DRSAAttributor`` call took 1.1 s with 16 MiB blocks, 1.2 s with
32 MiB, 1.6 s with 64 MiB and 1.9 s unblocked; 32 MiB needs 35 % fewer operations than
16 MiB."""

_FOLDABLE: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.Linear,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.ReLU,
    nn.LeakyReLU,
    nn.Flatten,
    nn.Dropout,
    nn.Identity,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
)
"""Module types a chain may hold: functions of their one input and their own parameters, which
treat samples independently in eval mode, and which :func:`torch.func.vjp` handles."""
# The kinds of _FOLDABLE in words, for the message that refuses another module.
_FOLDABLE_KINDS = (
    "convolution, linear, pooling, ReLU, LeakyReLU, flatten, dropout, identity and batch norm"
)

_CONVOLUTIONS: dict[type[nn.Module], Callable[..., torch.Tensor]] = {
    nn.Conv1d: torch.nn.grad.conv1d_input,
    nn.Conv2d: torch.nn.grad.conv2d_input,
    nn.Conv3d: torch.nn.grad.conv3d_input,
}
_MAX_POOLS: dict[type[nn.Module], Callable[..., Any]] = {
    nn.MaxPool1d: F.max_pool1d,
    nn.MaxPool2d: F.max_pool2d,
    nn.MaxPool3d: F.max_pool3d,
}

# A step maps the gradients at a module's output, (M, b, *output.shape[1:]), for the b samples
# selected by the slice, to the relevance at its input, (M, b, *input.shape[1:]).
Step = Callable[[torch.Tensor, slice], torch.Tensor]
# A backward pass of one modified forward: (M, b, *output.shape[1:]) -> (M, b, *input.shape[1:]).
Backward = Callable[[torch.Tensor], torch.Tensor]


class NotAChainError(ValueError):
    """The modules from the model input to the layer are not a chain :func:`propagate_chain` takes.

    The message says what breaks the chain (a module, an operation between modules, a hook).
    """


@dataclass(frozen=True)
class Link:
    """One module of a chain, with its Zennit hook and the input it got in the forward pass.

    Attributes
    ----------
    module:
        The module.
    hook:
        Its active Zennit hook (a ``BasicHook`` rule or ``Pass``), or ``None``: plain gradient.
    input:
        ``(B, ...)`` input of the module in the recorded forward pass.
    """

    module: nn.Module
    hook: Hook | None
    input: torch.Tensor


@dataclass
class _Call:
    """One recorded call of a leaf module; ``input`` is ``None`` unless it took one tensor."""

    module: nn.Module
    input: torch.Tensor | None
    input_version: int
    output: Any = None
    output_version: int = -1


class ChainRecorder:
    """Record the leaf modules' calls up to the layer, to find the chain from input to layer.

    Register it on a model after the composite (its pre-hooks go first, so they see each
    module's input before Zennit wraps it; its forward hooks go after Zennit's, so they see the
    output the next module receives) and before anything replacing the layer's output.
    """

    def __init__(self) -> None:
        self._calls: list[_Call] = []
        self._open: dict[nn.Module, _Call] = {}
        self._recording = False
        self._layer_output: torch.Tensor | None = None

    def register(self, model: nn.Module) -> list[Any]:
        """Hook every leaf module of ``model``; returns the handles to remove."""
        handles = []
        for module in model.modules():
            if next(module.children(), None) is None:
                handles.append(
                    module.register_forward_pre_hook(self._pre, prepend=True, with_kwargs=True)
                )
                handles.append(module.register_forward_hook(self._post))
        return handles

    def start(self) -> None:
        """Forget the last record and record the calls of the next forward pass."""
        self.clear()
        self._recording = True

    def stop(self, layer_output: torch.Tensor) -> None:
        """End the record at the layer, whose (unreplaced) output is ``layer_output``."""
        self._recording = False
        self._layer_output = layer_output

    def clear(self) -> None:
        """Drop the record (and its references to the forward pass's tensors)."""
        self._calls = []
        self._open = {}
        self._recording = False
        self._layer_output = None

    def _pre(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not self._recording:
            return
        single = len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor)
        tensor = args[0] if single else None
        call = _Call(module, tensor, tensor._version if tensor is not None else -1)
        self._calls.append(call)
        self._open[module] = call

    def _post(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        call = self._open.pop(module, None)
        if call is not None:
            call.output = output
            if isinstance(output, torch.Tensor):
                call.output_version = output._version

    def links(
        self,
        model_input: torch.Tensor,
        hooks: dict[nn.Module, Hook],
        observer: object,
        names: dict[nn.Module, str],
    ) -> tuple[Link, ...]:
        """The chain from ``model_input`` to the layer, layer end first.

        Parameters
        ----------
        model_input:
            The tensor the model was called with (its only input).
        hooks:
            The Zennit hook of each module that has one.
        observer:
            The owner of the other module hooks that may be present (they must not change
            inputs or outputs). Any other module hook might, so it breaks the chain.
        names:
            The name of each module in the model, for the error message.

        Raises
        ------
        NotAChainError
            Naming the module or the operation that breaks the chain.
        """
        target = self._layer_output
        index = len(self._calls)
        chain = []
        consumer = "the layer"
        while target is not model_input:
            index = next(
                (i for i in range(index - 1, -1, -1) if self._calls[i].output is target), -1
            )
            if index < 0:
                raise NotAChainError(
                    f"the input of {consumer} is not the output of a module: a functional "
                    "operation (such as `2 * x`, `x + y` or `torch.cat` in a forward method) or a "
                    "skip connection lies between the model input and the layer"
                )
            call = self._calls[index]
            name = repr(names.get(call.module, type(call.module).__name__))
            chain.append(_link(call, hooks.get(call.module), name))
            if not _known_hooks(call.module, (self, observer)):
                raise NotAChainError(
                    f"module {name} carries a hook that is not Zennit's, which may change what "
                    "flows through it"
                )
            target = call.input
            consumer = f"module {name}"
        if not chain:
            raise NotAChainError("the layer's output is the model input itself")
        return tuple(chain)


def _known_hooks(module: nn.Module, owners: tuple[object, ...]) -> bool:
    """Whether every hook on ``module`` is Zennit's or belongs to ``owners``.

    The chain path computes a module's step from its ``forward`` alone; another forward hook
    could change what the next module receives, and a backward hook what autograd passes on.
    """
    if module._backward_hooks or module._backward_pre_hooks:
        return False
    for function in (*module._forward_pre_hooks.values(), *module._forward_hooks.values()):
        owner = getattr(function, "__self__", None)
        if not (isinstance(owner, Hook) or any(owner is known for known in owners)):
            return False
    return True


def _link(call: _Call, hook: Hook | None, name: str) -> Link:
    """The call of the module called ``name`` as a chain link.

    Raises
    ------
    NotAChainError
        If the chain path cannot take the call, saying why.
    """
    x, output = call.input, call.output
    if x is None:
        raise NotAChainError(
            f"module {name} was not called with exactly one tensor (and no keyword arguments)"
        )
    if not isinstance(output, torch.Tensor):
        raise NotAChainError(f"module {name} does not return one tensor")
    if not isinstance(call.module, _FOLDABLE):
        raise NotAChainError(
            f"module {name} is a {type(call.module).__name__}; the chain path takes "
            f"{_FOLDABLE_KINDS} modules only"
        )
    if x._version != call.input_version or output._version != call.output_version:
        raise NotAChainError(
            f"an in-place operation changed the input or output of module {name} after its call "
            "(e.g. ReLU(inplace=True))"
        )
    if hook is not None and not hook.active:
        hook = None
    if hook is None or isinstance(hook, BasicHook):
        return Link(call.module, hook, x)
    if not isinstance(hook, Pass):
        raise NotAChainError(
            f"module {name} has a Zennit hook of type {type(hook).__name__}, which is neither an "
            "LRP rule (BasicHook) nor Pass"
        )
    if output.shape != x.shape:
        raise NotAChainError(f"module {name} has the Pass rule but changes the shape of its input")
    return Link(call.module, hook, x)


def propagate_chain(
    links: Sequence[Link], relevances: torch.Tensor, chunk_size: int | None
) -> torch.Tensor:
    """Propagate ``(M, *layer_output.shape)`` relevances down the chain: ``(B, M, ...)``.

    Parameters
    ----------
    links:
        The chain, layer end first (:meth:`ChainRecorder.links`).
    relevances:
        The ``M`` relevances placed on the layer output.
    chunk_size:
        Most maps propagated together; ``None``: all. Each chunk computes the rules' modified
        forward passes again (once for all its blocks of samples where their backward passes
        take any batch: convolution, linear), so that memory stays bounded.
    """
    n_maps = len(relevances)
    step = max(n_maps, 1) if chunk_size is None else chunk_size
    chunks = []
    with torch.no_grad():
        for start in range(0, n_maps, step):
            chunk = relevances[start : start + step]
            chunks.append(_propagate(links, chunk, 0, slice(0, chunk.shape[1]), None))
    x = links[-1].input
    maps = torch.cat(chunks) if chunks else x.new_zeros((0, *x.shape))
    return maps.transpose(0, 1)


def _propagate(
    links: Sequence[Link],
    gradient: torch.Tensor,
    first: int,
    samples: slice,
    steps: dict[int, Step] | None,
) -> torch.Tensor:
    """Carry ``(M, b, ...)`` gradients of ``samples`` from link ``first`` down to the input.

    ``steps`` keeps the steps that blocks of samples share (``None`` above the first split:
    each step is used once and freed with its modified forward passes).
    """
    for index in range(first, len(links)):
        link = links[index]
        n_samples = samples.stop - samples.start
        largest = max(gradient.nbytes, len(gradient) * link.input[samples].nbytes)
        if largest > BLOCK_BYTES and n_samples > 1 and link.input.device.type == "cpu":
            size = math.ceil(n_samples / min(n_samples, math.ceil(largest / BLOCK_BYTES)))
            shared = {} if steps is None else steps
            return torch.cat(
                [
                    _propagate(
                        links,
                        gradient[:, begin : begin + size],
                        index,
                        slice(
                            samples.start + begin, min(samples.start + begin + size, samples.stop)
                        ),
                        shared,
                    )
                    for begin in range(0, n_samples, size)
                ],
                dim=1,
            )
        step = None if steps is None else steps.get(index)
        if step is None:
            step = _step(link.module, link.hook, link.input)
            if steps is not None:
                steps[index] = step
        gradient = step(gradient, samples)
    return gradient


def _step(module: nn.Module, hook: Hook | None, x: torch.Tensor) -> Step:
    """The step of ``module`` (with ``hook``) at input ``x`` ``(B, ...)``."""
    if hook is None:
        return _gradient_step(module, x)
    if isinstance(hook, BasicHook):
        return _rule_step(module, hook, x)
    return _pass


def _pass(gradient: torch.Tensor, samples: slice) -> torch.Tensor:
    return gradient


def _gradient_step(module: nn.Module, x: torch.Tensor) -> Step:
    """Plain gradient of ``module`` at ``x`` (max-pooling scatters along its indices)."""
    pool = _MAX_POOLS.get(type(module))
    if pool is None or type(module).forward is not _FORWARDS[type(module)]:
        return lambda gradient, samples: _vjp(module.forward, x[samples])(gradient)
    _, indices = pool(
        x,
        module.kernel_size,
        module.stride,
        module.padding,
        module.dilation,
        module.ceil_mode,
        return_indices=True,
    )
    return lambda gradient, samples: _unpool(gradient, indices[samples], x[samples].shape)


def _unpool(gradient: torch.Tensor, indices: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Max-pooling's gradient for ``(M, b, ...)`` gradients: each goes to its window's maximum."""
    n_maps, n_samples, n_channels = gradient.shape[:3]
    rows = n_samples * n_channels
    result = gradient.new_zeros((n_maps, rows, math.prod(shape[2:])))
    # One scatter for all maps: the indices (per sample and channel) broadcast over the maps.
    result.scatter_add_(
        2,
        indices.reshape(1, rows, -1).expand(n_maps, -1, -1),
        gradient.reshape(n_maps, rows, -1),
    )
    return result.reshape(n_maps, *shape)


def _vjp(function: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Backward:
    """Gradient of ``function`` at ``x``, applied to each map by :func:`torch.func.vmap`."""
    _, vjp = torch.func.vjp(function, x)
    return lambda gradient: torch.func.vmap(vjp)(gradient)[0]


def _rule_step(module: nn.Module, hook: BasicHook, x: torch.Tensor) -> Step:
    """Zennit's ``BasicHook.backward`` for ``(M, b, ...)`` gradients at once."""
    # Convolutions and linear layers need their modified forward passes once for all samples,
    # since their backward passes take any batch; other modules recompute them per block.
    whole = _Modified(module, hook, x) if _batch_free(module) else None

    def step(gradient: torch.Tensor, samples: slice) -> torch.Tensor:
        if whole is not None and whole.batch_free:
            return whole.propagate(gradient, samples)
        return _Modified(module, hook, x[samples]).propagate(gradient, slice(None))

    return step


class _Modified:
    """A rule's modified forward passes at an input, ready to take gradients back.

    The reducer is linear in the gradients (as every LRP rule's is, LRP being linear in the
    upper relevance), so a gradient it ignores, as the γ rule's gradients for the negative part
    of an input that has none, is found once with a random probe and never computed.
    """

    def __init__(self, module: nn.Module, hook: BasicHook, x: torch.Tensor) -> None:
        self.hook = hook
        # Zennit's rules see a copy of the input, so no modifier can change the recorded one.
        x = x.clone()
        self.inputs: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []
        self.backwards: list[Backward] = []
        self.batch_free = True
        for in_mod, param_mod, out_mod in zip(
            hook.input_modifiers, hook.param_modifiers, hook.output_modifiers, strict=True
        ):
            input = in_mod(x)
            with ParamMod.ensure(param_mod)(module) as modified:
                output, backward, batch_free = _modified_forward(modified, out_mod, input)
            self.inputs.append(input)
            self.outputs.append(output)
            self.backwards.append(backward)
            self.batch_free = self.batch_free and batch_free
        self.ignored = self._ignored()

    def _ignored(self) -> set[int]:
        """Indices of the gradients that the reducer ignores here."""
        zero = [i for i, input in enumerate(self.inputs) if not input.any()]
        if not zero:
            return set()
        generator = torch.Generator(self.inputs[0].device).manual_seed(0)
        probe = [
            torch.randn(input.shape, generator=generator, device=input.device, dtype=input.dtype)
            if i in zero
            else torch.zeros_like(input)
            for i, input in enumerate(self.inputs)
        ]
        return set(zero) if not self.hook.reducer(self.inputs, probe).any() else set()

    def propagate(self, gradient: torch.Tensor, samples: slice) -> torch.Tensor:
        """Relevance at the input for ``(M, b, ...)`` gradients of ``samples`` at the output."""
        inputs = [input[samples] for input in self.inputs]
        outputs = [output[samples] for output in self.outputs]

        def mapper(gradient: torch.Tensor) -> tuple[torch.Tensor, ...]:
            mapped = self.hook.gradient_mapper(gradient, outputs)
            return (mapped,) if isinstance(mapped, torch.Tensor) else tuple(mapped)

        def reducer(*gradients: torch.Tensor) -> torch.Tensor:
            return self.hook.reducer(inputs, list(gradients))

        mapped = torch.func.vmap(mapper)(gradient)
        gradients: list[torch.Tensor] = []
        batched: list[int | None] = []
        for index, (part, backward, input) in enumerate(
            zip(mapped, self.backwards, inputs, strict=True)
        ):
            if index in self.ignored or not part.any():
                # A zero gradient, shared by all maps: the reducer's work on it is done once.
                gradients.append(input.new_zeros(()).expand(input.shape))
                batched.append(None)
            else:
                gradients.append(backward(part))
                batched.append(0)
        if not any(dim == 0 for dim in batched):
            relevance = reducer(*gradients)
            return relevance.expand(len(gradient), *relevance.shape).clone()
        return torch.func.vmap(reducer, in_dims=tuple(batched))(*gradients)


def _batch_free(module: nn.Module) -> bool:
    """Whether a module's modified backward passes can take any batch (see _modified_forward)."""
    if isinstance(module, nn.Linear):
        return type(module).forward is nn.Linear.forward
    return type(module) in _CONVOLUTIONS and _symmetric_padding(module) is not None


def _modified_forward(
    module: nn.Module, out_mod: Callable[[torch.Tensor], torch.Tensor], input: torch.Tensor
) -> tuple[torch.Tensor, Backward, bool]:
    """Output of a modified forward pass, its backward pass, and whether that takes any batch.

    The backward pass of a plain convolution or linear layer (with an output modifier that
    returns its input) does not depend on the input: it is the transposed convolution, or the
    product with the weight, which takes the maps folded into the batch and any block of
    samples. Anything else gets :func:`torch.func.vjp` at this input.
    """
    if _batch_free(module):
        output = module.forward(input)
        if out_mod(output) is output:
            return output, _weight_backward(module, input.shape), True
    output, vjp = torch.func.vjp(lambda t: out_mod(module.forward(t)), input)
    return output, lambda gradient: torch.func.vmap(vjp)(gradient)[0], False


def _weight_backward(module: nn.Module, shape: torch.Size) -> Backward:
    """Gradient of a convolution or linear layer with respect to its input."""
    weight = module.weight.detach()
    if isinstance(module, nn.Linear):
        return lambda gradient: gradient @ weight
    grad_input = _CONVOLUTIONS[type(module)]
    padding = _symmetric_padding(module)
    stride, dilation, groups = module.stride, module.dilation, module.groups

    def backward(gradient: torch.Tensor) -> torch.Tensor:
        folded = gradient.flatten(0, 1)
        result = grad_input(
            (len(folded), *shape[1:]), weight, folded, stride, padding, dilation, groups
        )
        return result.unflatten(0, gradient.shape[:2])

    return backward


def _symmetric_padding(module: nn.Module) -> tuple[int, ...] | None:
    """Per-side padding of a plain zero-padded convolution; ``None`` if it is not one."""
    if type(module).forward is not _FORWARDS[type(module)] or module.padding_mode != "zeros":
        return None
    if module.padding == "valid":
        return (0,) * len(module.kernel_size)
    if module.padding == "same":
        totals = [d * (k - 1) for d, k in zip(module.dilation, module.kernel_size, strict=True)]
        if any(total % 2 for total in totals):
            return None
        return tuple(total // 2 for total in totals)
    return tuple(module.padding)


_FORWARDS = {kind: kind.forward for kind in (*_CONVOLUTIONS, *_MAX_POOLS)}
"""The built-in ``forward`` of each type with a dedicated step; subclasses that override it
take the generic :func:`torch.func.vjp` path."""
