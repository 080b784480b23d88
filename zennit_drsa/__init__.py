"""DRSA concept explanations for Zennit, Captum and scikit-learn: the plugin core.

Data flows one way: a model and a Zennit composite → :func:`collect` (activation and exact
LRP context vectors at a layer) → subspace estimators (:class:`DRSA` and its baselines,
scikit-learn style) → :class:`DRSAAttributor` (concept heatmaps; the Captum adapter is
``zennit_drsa.captum.DRSAAttribution``) → :mod:`zennit_drsa.evaluation` (patch flipping,
concept recovery).

The core depends on torch, Zennit, NumPy, SciPy and scikit-learn only; importing it loads no
audio, plotting or Captum code and changes no global setting. The audio analysis built on it
(configuration, steps, figures, sonification, HTML report, sweep, demo, the ``zennit-drsa``
command) is the separate package :mod:`audio_concepts`; its names that used to live here
still resolve, with a :class:`DeprecationWarning`, until 0.3.
"""

from zennit_drsa._moved import forwarder
from zennit_drsa.attribution import ConceptExplanation, DRSAAttributor
from zennit_drsa.collect import Collection, ShardedCollection, collect, collect_shards
from zennit_drsa.composites import audio_composite, reference_composite
from zennit_drsa.context import LayerContext, LayerContextResult, target_gradient
from zennit_drsa.estimators import (
    DRSA,
    DSA,
    PRCA,
    OracleSubspaces,
    PCASubspaces,
    RandomSubspaces,
    SubspaceEstimator,
    load,
    save,
)
from zennit_drsa.evaluation import (
    aupc_table,
    concept_recovery,
    patch_flipping,
    summarize_recovery,
)
from zennit_drsa.layers import layer_names, resolve_layer
from zennit_drsa.precision import lrp_precision

__all__ = [
    "DRSA",
    "DSA",
    "PRCA",
    "Collection",
    "ConceptExplanation",
    "DRSAAttributor",
    "LayerContext",
    "LayerContextResult",
    "OracleSubspaces",
    "PCASubspaces",
    "RandomSubspaces",
    "ShardedCollection",
    "SubspaceEstimator",
    "audio_composite",
    "aupc_table",
    "collect",
    "collect_shards",
    "concept_recovery",
    "layer_names",
    "load",
    "lrp_precision",
    "patch_flipping",
    "reference_composite",
    "resolve_layer",
    "save",
    "summarize_recovery",
    "target_gradient",
]

# Deprecated: the audio application's names, forwarded to ``audio_concepts`` on first use.
__getattr__ = forwarder(
    __name__,
    "audio_concepts",
    names=(
        "AnalysisConfig",
        "evaluate_concepts",
        "explain_and_evaluate",
        "explain_concepts",
        "fit_concepts",
        "write_report",
        "run_demo",
        "Report",
        "sonify",
        "write_wav",
        "SweepResult",
        "sweep_concepts",
    ),
)
