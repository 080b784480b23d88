"""DRSA concept explanations for Zennit, Captum and scikit-learn.

Data flows one way: a model and a Zennit composite → :func:`collect` (activation and exact
LRP context vectors at a layer) → subspace estimators (:class:`DRSA` and its baselines,
scikit-learn style) → :class:`DRSAAttributor` (concept heatmaps; the Captum adapter is
``zennit_drsa.captum.DRSAAttribution``) → :mod:`zennit_drsa.evaluation` (patch flipping,
concept recovery) → figures, sonification and the HTML report (:mod:`zennit_drsa.analysis`,
the ``zennit-drsa`` command; :func:`sweep_concepts` over layers and ``K``).
"""

from zennit_drsa.analysis import (
    AnalysisConfig,
    evaluate_concepts,
    explain_and_evaluate,
    explain_concepts,
    fit_concepts,
    write_report,
)
from zennit_drsa.attribution import ConceptExplanation, DRSAAttributor
from zennit_drsa.collect import Collection, collect
from zennit_drsa.composites import audio_composite, reference_composite
from zennit_drsa.context import LayerContext, LayerContextResult, target_gradient
from zennit_drsa.demo import run_demo
from zennit_drsa.estimators import (
    DRSA,
    DSA,
    PRCA,
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
from zennit_drsa.report import Report
from zennit_drsa.sonify import sonify, write_wav
from zennit_drsa.sweep import SweepResult, sweep_concepts

__all__ = [
    "DRSA",
    "DSA",
    "PRCA",
    "AnalysisConfig",
    "Collection",
    "ConceptExplanation",
    "DRSAAttributor",
    "LayerContext",
    "LayerContextResult",
    "PCASubspaces",
    "RandomSubspaces",
    "Report",
    "SubspaceEstimator",
    "SweepResult",
    "audio_composite",
    "aupc_table",
    "collect",
    "concept_recovery",
    "evaluate_concepts",
    "explain_and_evaluate",
    "explain_concepts",
    "fit_concepts",
    "layer_names",
    "load",
    "patch_flipping",
    "reference_composite",
    "resolve_layer",
    "run_demo",
    "save",
    "sonify",
    "summarize_recovery",
    "sweep_concepts",
    "target_gradient",
    "write_report",
    "write_wav",
]
