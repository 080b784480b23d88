"""Evaluation of (disentangled) explanations: patch flipping and concept recovery."""

from zennit_drsa._moved import forwarder
from zennit_drsa.evaluation._stats import mean_sem
from zennit_drsa.evaluation.patch_flipping import (
    LOG_MEL_FLOOR,
    FlippingCurve,
    PatchFlippingResult,
    patch_flipping,
)
from zennit_drsa.evaluation.recovery import (
    RecoveryGroup,
    RecoveryScore,
    RecoverySummary,
    concept_recovery,
    summarize_recovery,
)
from zennit_drsa.evaluation.summary import (
    AUPCRow,
    aupc_table,
    format_aupc_table,
    pooled_curves,
)

__all__ = [
    "LOG_MEL_FLOOR",
    "AUPCRow",
    "FlippingCurve",
    "PatchFlippingResult",
    "RecoveryGroup",
    "RecoveryScore",
    "RecoverySummary",
    "aupc_table",
    "concept_recovery",
    "format_aupc_table",
    "mean_sem",
    "patch_flipping",
    "pooled_curves",
    "summarize_recovery",
]

# Deprecated: the figure moved to the audio application.
__getattr__ = forwarder(__name__, "audio_concepts.plots", names=("plot_flipping_curves",))
