"""DRSA concept explanations for Zennit, Captum and scikit-learn.

Data flows one way: a model and a Zennit composite → :func:`collect` (activation and exact
LRP context vectors at a layer) → subspace estimators (DRSA and baselines) → concept
heatmaps → :mod:`zennit_drsa.evaluation` (patch flipping, concept recovery).
"""

from zennit_drsa.collect import Collection, collect
from zennit_drsa.context import LayerContext, LayerContextResult, target_gradient
from zennit_drsa.evaluation import (
    aupc_table,
    concept_recovery,
    patch_flipping,
    summarize_recovery,
)
from zennit_drsa.layers import layer_names, resolve_layer

__all__ = [
    "Collection",
    "LayerContext",
    "LayerContextResult",
    "aupc_table",
    "collect",
    "concept_recovery",
    "layer_names",
    "patch_flipping",
    "resolve_layer",
    "summarize_recovery",
    "target_gradient",
]
