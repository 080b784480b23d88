"""Evaluation of (disentangled) explanations: patch flipping and concept recovery."""

from typing import Any

from zennit_drsa._moved import forwarder
from zennit_drsa.evaluation._stats import mean_sem
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
from zennit_drsa.evaluation.summary import (
    AUPCRow,
    aupc_table,
    format_aupc_table,
    pooled_curves,
)

__all__ = [
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
_moved_figure = forwarder(__name__, "audio_concepts.plots", names=("plot_flipping_curves",))


def __getattr__(name: str) -> Any:
    """Deprecated names (PEP 562): ``plot_flipping_curves`` and ``LOG_MEL_FLOOR``.

    ``LOG_MEL_FLOOR`` (-4.0) was the floor of one audio front-end, which the plugin core does
    not own; use the front-end's own, e.g. ``audio_cnn.LogMel.floor``.
    """
    if name == "LOG_MEL_FLOOR":
        return _deprecated_log_mel_floor(__name__)
    return _moved_figure(name)
