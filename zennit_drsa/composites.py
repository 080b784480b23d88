"""LRP composites for audio CNNs: the reference rule map, and Zennit's own composites by name.

The reference rule map (the one chosen by patch flipping for the reference audio pipeline,
``docs/METHOD.md`` §6): WSquare on the first convolution, the γ rule with γ = 0.4, 0.4, 0.2,
0.1 on the next four (further convolutions keep the last γ), ε on dense layers, Pass on
activations and Norm on average pooling. Convolutions are counted in the order of
``model.named_modules()``, which for :class:`~audio_cnn.model.AudioCNN` is the order of the
forward pass. A model with batch norm gets a canonizer merging it into the preceding
convolution, since LRP rules are defined for the merged layer.

>>> composite = audio_composite("reference", model)  # doctest: +SKIP
>>> composite = audio_composite("epsilon_plus", model)  # doctest: +SKIP
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Sequence
from typing import Any

from torch import nn
from zennit.canonizers import Canonizer, SequentialMergeBatchNorm
from zennit.composites import COMPOSITES, NameLayerMapComposite, layer_map_base
from zennit.core import Composite
from zennit.rules import Epsilon, Gamma, WSquare
from zennit.types import BatchNorm, Convolution

__all__ = ["REFERENCE_GAMMAS", "audio_composite", "composite_names", "reference_composite"]

REFERENCE_GAMMAS: tuple[float, ...] = (0.4, 0.4, 0.2, 0.1)
"""γ of the second, third, ... convolution in the reference rule map (the last one repeats)."""


def composite_names() -> list[str]:
    """Names accepted by :func:`audio_composite`: ``"reference"``, then Zennit's, sorted."""
    return ["reference", *sorted(COMPOSITES)]


def reference_composite(
    model: nn.Module,
    *,
    gammas: Sequence[float] = REFERENCE_GAMMAS,
    epsilon: float = 1e-6,
    stabilizer: float = 1e-6,
    canonizers: list[Canonizer] | None = None,
) -> Composite:
    """The reference LRP rule map for ``model``.

    Parameters
    ----------
    model:
        The model the composite will be registered on; its convolutions are numbered in
        ``named_modules()`` order.
    gammas:
        γ of the 2nd, 3rd, ... convolution; convolutions beyond the list use its last value.
    epsilon:
        ε of the dense layers' rule.
    stabilizer:
        Denominator stabiliser of WSquare, γ and Norm.
    canonizers:
        Canonizers to apply; default: a batch-norm merger if the model has batch norm,
        else none.

    Returns
    -------
    zennit.core.Composite
        A fresh composite (register it on ``model`` only, one model at a time).

    Raises
    ------
    ValueError
        If the model has no convolution, or ``gammas`` is empty or holds a negative value.
    """
    gammas = tuple(float(gamma) for gamma in gammas)
    if not gammas or min(gammas) < 0:
        raise ValueError(f"gammas must be a non-empty sequence of values >= 0, got {gammas}")
    convolutions = [
        name for name, module in model.named_modules() if isinstance(module, Convolution)
    ]
    if not convolutions:
        raise ValueError(
            f"{type(model).__name__} has no convolution; the reference rule map starts with "
            "WSquare on the first convolution (use e.g. audio_composite('epsilon_plus', model))"
        )
    name_map = [((convolutions[0],), WSquare(stabilizer=stabilizer))]
    for index, name in enumerate(convolutions[1:]):
        gamma = gammas[min(index, len(gammas) - 1)]
        name_map.append(((name,), Gamma(gamma=gamma, stabilizer=stabilizer)))
    layer_map = [*layer_map_base(stabilizer), (nn.Linear, Epsilon(epsilon=epsilon))]
    return NameLayerMapComposite(
        name_map=name_map, layer_map=layer_map, canonizers=_canonizers(model, canonizers)
    )


def audio_composite(name: str, model: nn.Module, **kwargs: Any) -> Composite:
    """A composite by name, with a batch-norm canonizer when ``model`` needs one.

    Parameters
    ----------
    name:
        ``"reference"`` (see :func:`reference_composite`) or the name of one of Zennit's
        composites (``"epsilon_plus"``, ``"epsilon_gamma_box"``, ...; see
        :func:`composite_names`).
    model:
        The model the composite is for (to number its convolutions and find batch norm).
    **kwargs:
        Arguments of the composite, e.g. ``low`` and ``high`` (input bounds; for log-mel
        inputs ``low`` is the front-end's floor, e.g. ``audio_cnn.LogMel.floor``) for
        ``"epsilon_gamma_box"``, ``gammas`` for ``"reference"``. ``canonizers`` replaces the
        automatic batch-norm canonizer.

    Returns
    -------
    zennit.core.Composite
        A fresh composite.

    Raises
    ------
    ValueError
        For an unknown name (with suggestions) or missing required arguments.
    """
    if name == "reference":
        return reference_composite(model, **kwargs)
    if name not in COMPOSITES:
        close = difflib.get_close_matches(name, composite_names(), n=2)
        hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
        raise ValueError(f"unknown composite {name!r}; {hint}choose one of {composite_names()}")
    composite_class = COMPOSITES[name]
    required = [
        parameter.name
        for parameter in inspect.signature(composite_class).parameters.values()
        if parameter.default is inspect.Parameter.empty
        and parameter.kind is not parameter.VAR_KEYWORD
        and parameter.name not in kwargs
    ]
    if required:
        raise ValueError(
            f"composite {name!r} needs {required}; for box rules these are the lowest and "
            "highest input values (for log-mel inputs low is the front-end's floor, "
            "logmel.floor: low=-4.0 for audio_cnn.LogMel)"
        )
    kwargs["canonizers"] = _canonizers(model, kwargs.get("canonizers"))
    return composite_class(**kwargs)


def _canonizers(model: nn.Module, canonizers: list[Canonizer] | None) -> list[Canonizer]:
    if canonizers is not None:
        return list(canonizers)
    if any(isinstance(module, BatchNorm) for module in model.modules()):
        return [SequentialMergeBatchNorm()]
    return []
