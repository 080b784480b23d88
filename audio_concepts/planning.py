"""What the settings mean for one model: the decomposed layer and the subspaces' shape."""

from __future__ import annotations

from typing import NamedTuple

from audio_concepts.config import AnalysisConfig
from audio_concepts.model import AudioModel

__all__ = ["LayerPlan", "plan_layer"]


class LayerPlan(NamedTuple):
    """What an :class:`AnalysisConfig` means for one model (see :func:`plan_layer`).

    Attributes
    ----------
    layer:
        Module name of the decomposed layer.
    channels:
        Channels ``d`` of the layer's output (the dimension of its activation vectors).
    positions:
        Map positions of the layer's output per input (``H · W``; 1 for a dense layer).
    subspace_dim:
        Dimension ``d_k`` of every subspace.
    n_locations:
        Map positions sampled per chunk (``config.n_locations`` capped at ``positions``).
    """

    layer: str
    channels: int
    positions: int
    subspace_dim: int
    n_locations: int


def plan_layer(model: AudioModel, config: AnalysisConfig) -> LayerPlan:
    """Resolve the layer and subspace shape of ``config`` for a model, or fail early.

    Runs one silent chunk through the model (on its device) to measure the layer.

    Parameters
    ----------
    model:
        The model under study.
    config:
        Analysis settings.

    Returns
    -------
    LayerPlan

    Raises
    ------
    ValueError
        If neither the settings nor the model name a layer, the model has no such layer (the
        message suggests names), or ``K`` subspaces of dimension ``d_k`` do not fit in the
        layer's channels.
    """
    layer = config.layer or model.default_layer
    if layer is None:
        raise ValueError(
            f"{model.name} has no default layer: name the layer to decompose "
            "(AnalysisConfig(layer=...), or --layer)"
        )
    channels, positions = model.layer_shape(layer)
    dims = config.subspace_dim or channels // config.n_subspaces
    if dims < 1 or dims * config.n_subspaces > channels:
        raise ValueError(
            f"K={config.n_subspaces} subspaces of dimension {dims} do not fit in the "
            f"{channels} channels of layer {layer!r}; lower n_subspaces or subspace_dim"
        )
    return LayerPlan(layer, channels, positions, dims, min(config.n_locations, positions))
