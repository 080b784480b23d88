"""Evaluation of (disentangled) explanations and of the measures themselves.

Patch flipping (deletion and insertion), concept recovery from heatmaps and from
interventions, concept selectivity, paired statistics with the validation of a measure,
and the similarity numerics of model-randomisation sanity checks.
"""

from typing import Any

from zennit_drsa._moved import forwarder
from zennit_drsa.evaluation._stats import mean_sem
from zennit_drsa.evaluation.interventional import (
    InterventionalRecoveryScore,
    interventional_recovery,
)
from zennit_drsa.evaluation.patch_flipping import (
    FlippingCurve,
    PatchFlippingResult,
    _deprecated_log_mel_floor,
    patch_flipping,
)
from zennit_drsa.evaluation.recovery import (
    RecoveryGroup,
    RecoveryScore,
    RecoverySummary,
    concept_recovery,
    summarize_recovery,
)
from zennit_drsa.evaluation.sanity import cascading_randomization, spearman_similarity, ssim
from zennit_drsa.evaluation.selectivity import SelectivityResult, concept_selectivity
from zennit_drsa.evaluation.statistics import (
    MeasureValidation,
    PairedComparison,
    min_pairs,
    paired_comparison,
    validate_measure,
)
from zennit_drsa.evaluation.summary import (
    AUPCRow,
    aupc_table,
    format_aupc_table,
    pooled_curves,
)

__all__ = [
    "AUPCRow",
    "FlippingCurve",
    "InterventionalRecoveryScore",
    "MeasureValidation",
    "PairedComparison",
    "PatchFlippingResult",
    "RecoveryGroup",
    "RecoveryScore",
    "RecoverySummary",
    "SelectivityResult",
    "aupc_table",
    "cascading_randomization",
    "concept_recovery",
    "concept_selectivity",
    "format_aupc_table",
    "interventional_recovery",
    "mean_sem",
    "min_pairs",
    "paired_comparison",
    "patch_flipping",
    "pooled_curves",
    "spearman_similarity",
    "ssim",
    "summarize_recovery",
    "validate_measure",
]

# Deprecated: the figure moved to the audio application.
_moved_figure = forwarder(__name__, "audio_concepts.plots", names=("plot_flipping_curves",))


def __getattr__(name: str) -> Any:
    """Deprecated names (PEP 562): ``plot_flipping_curves`` and ``LOG_MEL_FLOOR``.

    ``LOG_MEL_FLOOR`` (-4.0) was the floor of one audio front-end, which the plugin core does
    not own; use the front-end's own, e.g. ``audio_cnn.LogMel.floor``.
    """
    if name == "LOG_MEL_FLOOR":
        return _deprecated_log_mel_floor(__name__)
    return _moved_figure(name)
