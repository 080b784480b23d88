"""Concept analysis of audio classifiers: the application on top of the plugin core.

:mod:`zennit_drsa` (subspaces, concept heatmaps, evaluation numerics) knows nothing of audio;
:mod:`audio_cnn` is the model under study. This package joins them: configuration, the
fit / explain / evaluate / report steps over an audio folder, figures, sonification, the
self-contained HTML report, sweeps over layers and ``K``, the one-command demo and the
``zennit-drsa`` command.

The model under study reaches the analysis through a small interface,
:class:`AudioModel` (network, :class:`LogMelFrontend`, class names), so a user's own log-mel
classifier — e.g. a CNN behind a torchaudio ``MelSpectrogram`` (:class:`TorchaudioLogMel`) —
goes through the same steps as an ``audio_cnn`` run. Data flow one way: audio →
:class:`AudioData` → :class:`Analysis` (fit → explain → evaluate → report) → the
:class:`Workspace` folder.

Importing the package is light: its modules (and torch, librosa, matplotlib behind them) load
on first use of a name (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Analysis": "audio_concepts.analysis",
    "evaluate_concepts": "audio_concepts.analysis",
    "explain_and_evaluate": "audio_concepts.analysis",
    "explain_concepts": "audio_concepts.analysis",
    "fit_concepts": "audio_concepts.analysis",
    "summarize_concepts": "audio_concepts.analysis",
    "write_report": "audio_concepts.analysis",
    "METHODS": "audio_concepts.config",
    "AnalysisConfig": "audio_concepts.config",
    "AudioData": "audio_concepts.data",
    "run_demo": "audio_concepts.demo",
    "LogMelFrontend": "audio_concepts.frontend",
    "TorchaudioLogMel": "audio_concepts.frontend",
    "AudioModel": "audio_concepts.model",
    "LayerPlan": "audio_concepts.planning",
    "plan_layer": "audio_concepts.planning",
    "Report": "audio_concepts.report",
    "sonify": "audio_concepts.sonification",
    "write_wav": "audio_concepts.sonification",
    "format_summary": "audio_concepts.summary",
    "summarize": "audio_concepts.summary",
    "SweepResult": "audio_concepts.sweep",
    "sweep_concepts": "audio_concepts.sweep",
    "AnalysisState": "audio_concepts.workspace",
    "Workspace": "audio_concepts.workspace",
}

__all__ = [
    "METHODS",
    "Analysis",
    "AnalysisConfig",
    "AnalysisState",
    "AudioData",
    "AudioModel",
    "LayerPlan",
    "LogMelFrontend",
    "Report",
    "SweepResult",
    "TorchaudioLogMel",
    "Workspace",
    "evaluate_concepts",
    "explain_and_evaluate",
    "explain_concepts",
    "fit_concepts",
    "format_summary",
    "plan_layer",
    "run_demo",
    "sonify",
    "summarize",
    "summarize_concepts",
    "sweep_concepts",
    "write_report",
    "write_wav",
]

if TYPE_CHECKING:
    from audio_concepts.analysis import (
        Analysis,
        evaluate_concepts,
        explain_and_evaluate,
        explain_concepts,
        fit_concepts,
        summarize_concepts,
        write_report,
    )
    from audio_concepts.config import METHODS, AnalysisConfig
    from audio_concepts.data import AudioData
    from audio_concepts.demo import run_demo
    from audio_concepts.frontend import LogMelFrontend, TorchaudioLogMel
    from audio_concepts.model import AudioModel
    from audio_concepts.planning import LayerPlan, plan_layer
    from audio_concepts.report import Report
    from audio_concepts.sonification import sonify, write_wav
    from audio_concepts.summary import format_summary, summarize
    from audio_concepts.sweep import SweepResult, sweep_concepts
    from audio_concepts.workspace import AnalysisState, Workspace


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'audio_concepts' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
