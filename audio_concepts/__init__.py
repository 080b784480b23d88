"""Concept analysis of audio classifiers: the application on top of the plugin core.

:mod:`zennit_drsa` (subspaces, concept heatmaps, evaluation numerics) knows nothing of audio;
:mod:`audio_cnn` is the model under study. This package joins them: configuration, the
fit / explain / evaluate / report steps over an audio folder, figures, sonification, the
self-contained HTML report, sweeps over layers and ``K``, the one-command demo and the
``zennit-drsa`` command.

Importing the package is light: its modules (and torch, librosa, matplotlib behind them) load
on first use of a name (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "METHODS": "audio_concepts.analysis",
    "AnalysisConfig": "audio_concepts.analysis",
    "evaluate_concepts": "audio_concepts.analysis",
    "explain_and_evaluate": "audio_concepts.analysis",
    "explain_concepts": "audio_concepts.analysis",
    "fit_concepts": "audio_concepts.analysis",
    "format_summary": "audio_concepts.analysis",
    "summarize_concepts": "audio_concepts.analysis",
    "write_report": "audio_concepts.analysis",
    "run_demo": "audio_concepts.demo",
    "Report": "audio_concepts.report",
    "sonify": "audio_concepts.sonification",
    "write_wav": "audio_concepts.sonification",
    "SweepResult": "audio_concepts.sweep",
    "sweep_concepts": "audio_concepts.sweep",
}

__all__ = [
    "METHODS",
    "AnalysisConfig",
    "Report",
    "SweepResult",
    "evaluate_concepts",
    "explain_and_evaluate",
    "explain_concepts",
    "fit_concepts",
    "format_summary",
    "run_demo",
    "sonify",
    "summarize_concepts",
    "sweep_concepts",
    "write_report",
    "write_wav",
]

if TYPE_CHECKING:
    from audio_concepts.analysis import (
        METHODS,
        AnalysisConfig,
        evaluate_concepts,
        explain_and_evaluate,
        explain_concepts,
        fit_concepts,
        format_summary,
        summarize_concepts,
        write_report,
    )
    from audio_concepts.demo import run_demo
    from audio_concepts.report import Report
    from audio_concepts.sonification import sonify, write_wav
    from audio_concepts.sweep import SweepResult, sweep_concepts


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'audio_concepts' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
