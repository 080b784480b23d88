"""Find a layer of a model by name (or module) and check the model is fit for hook-based LRP.

Layers are named as in :meth:`torch.nn.Module.named_modules` (``"features.10"``,
``"layer1.0"``). A layer's *output* is what DRSA decomposes, so the checks here are the ones
hook-based LRP needs: the model is in eval mode, and the layer runs exactly once per forward
pass (a module used twice has two outputs and no single activation map).
"""

from __future__ import annotations

import difflib

from torch import nn

__all__ = ["check_eval", "check_single_call", "layer_names", "resolve_layer"]

# How many names an "unknown layer" error lists when nothing is close.
_N_LISTED = 8


def layer_names(model: nn.Module) -> list[str]:
    """Names of all submodules of ``model`` (the model itself, named ``""``, excluded).

    Parameters
    ----------
    model:
        Any module.

    Returns
    -------
    list of str
        Dotted names in registration order, e.g. ``["features", "features.0", ...]``.
    """
    return [name for name, _ in model.named_modules() if name]


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module]:
    """Look up a layer of ``model`` by dotted name or by module object.

    Parameters
    ----------
    model:
        The model holding the layer.
    layer:
        A name from :func:`layer_names` (e.g. ``"features.10"``) or a submodule of ``model``.

    Returns
    -------
    (name, module)
        The layer's dotted name and the module itself.

    Raises
    ------
    ValueError
        If no submodule has that name (the message suggests close names and lists valid
        ones), or ``layer`` is the model itself or a module that is not part of ``model``.
    TypeError
        If ``layer`` is neither a string nor a module.
    """
    if isinstance(layer, nn.Module):
        if layer is model:
            raise ValueError(
                "the layer is the whole model; name a submodule whose output DRSA should decompose"
            )
        for name, module in model.named_modules():
            if module is layer:
                return name, module
        raise ValueError(
            f"the module {type(layer).__name__} passed as layer is not part of the model; "
            "pass one of the model's own submodules or its name"
        )
    if not isinstance(layer, str):
        raise TypeError(
            f"layer must be a module name (str) or a module, got {type(layer).__name__}"
        )
    modules = dict(model.named_modules())
    if layer and layer in modules:
        return layer, modules[layer]
    names = layer_names(model)
    close = difflib.get_close_matches(layer, names, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
    listed = ", ".join(map(repr, names[:_N_LISTED]))
    more = f", … ({len(names)} in all)" if len(names) > _N_LISTED else ""
    raise ValueError(
        f"the model has no layer named {layer!r}; {hint}valid names include {listed}{more} "
        "(see zennit_drsa.layers.layer_names(model))"
    )


def check_eval(model: nn.Module) -> None:
    """Raise if any module of ``model`` is in training mode.

    LRP explains the deterministic eval-mode function: dropout must be off and batch
    normalisation must use its running statistics (which a canonizer then merges).

    Raises
    ------
    ValueError
        Naming the first module found in training mode.
    """
    for name, module in model.named_modules():
        if module.training:
            where = f"module {name!r}" if name else "the model"
            raise ValueError(
                f"{where} is in training mode; call model.eval() before computing relevances "
                "(dropout and batch-norm statistics would otherwise change the explanation)"
            )


def check_single_call(name: str, calls: int) -> None:
    """Raise unless the layer ``name`` ran exactly once in the last forward pass.

    Parameters
    ----------
    name:
        Dotted layer name, for the message.
    calls:
        How many times its forward ran.

    Raises
    ------
    RuntimeError
        If it never ran (the layer is not on the path from input to output) or ran more than
        once (a module reused in ``forward``, e.g. torchvision ResNet blocks' shared ``relu``).
    """
    if calls == 0:
        raise RuntimeError(
            f"layer {name!r} was not reached in the forward pass; pick a layer that the model's "
            "forward actually calls (modules defined but unused have no output)"
        )
    if calls > 1:
        raise RuntimeError(
            f"layer {name!r} ran {calls} times in one forward pass, so it has no single output "
            "map; pick a module used once (e.g. the enclosing block) or give each use its own "
            "module"
        )
