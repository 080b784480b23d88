"""What an analysis found, in brief: class-averaged figures per method, as data and as text."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from audio_concepts.diagnostics import coverage_warning, overlap_warnings
from audio_concepts.workspace import AnalysisState
from zennit_drsa.evaluation import aupc_table

__all__ = ["format_summary", "summarize"]


def summarize(state: AnalysisState, results: dict[str, Any]) -> dict[str, Any]:
    """Class-averaged AUPC and recovery per method, pooled over seeds.

    Parameters
    ----------
    state:
        The record of the fit.
    results:
        The evaluation results (``evaluation/results.json``).

    Returns
    -------
    dict
        ``accuracy`` (clip level, on ``settings["eval_split"]``); under ``methods`` for each
        method and ``"standard"`` the class-averaged mean ``aupc`` (lower is better), the
        pooled ``aupc_pooled`` ± ``aupc_sem`` over ``n`` inputs × seeds (``n_excluded``
        left out), per-class values, and ``recovery`` / ``chance`` (class-averaged; ``None``
        where undefined); ``seeds``; ``settings``; ``timings_s`` (the steps' seconds);
        ``concept_overlap`` (per method, mean heatmap cosine of every pair of concepts) and
        ``warnings`` (settings that do not suit the model, see
        :mod:`~audio_concepts.diagnostics`).
    """
    config = state.config
    names = list(state.class_names)
    labels = np.asarray(results["labels"])
    methods: dict[str, Any] = {}
    for method, records in results["methods"].items():
        tiled = np.concatenate([labels] * len(records))
        aupc = [v for r in records for v in r["aupc"]]
        row = aupc_table({method: np.array([np.nan if v is None else v for v in aupc])})[0]
        per_class = _class_mean(aupc, tiled, len(names))
        entry: dict[str, Any] = {
            "aupc": _nan_mean(per_class),
            "aupc_pooled": _finite(row.mean),
            "aupc_sem": _finite(row.sem),
            "n": row.n,
            "n_excluded": row.n_excluded,
            "aupc_per_class": dict(zip(names, map(_finite, per_class), strict=True)),
            "recovery": None,
            "chance": None,
            "recovery_per_class": None,
            "chance_per_class": None,
        }
        if "recovery" in records[0]:
            recovery = _class_mean([v for r in records for v in r["recovery"]], tiled, len(names))
            chance = _class_mean([v for r in records for v in r["chance"]], tiled, len(names))
            entry.update(
                recovery=_nan_mean(recovery),
                chance=_nan_mean(chance),
                recovery_per_class=dict(zip(names, map(_finite, recovery), strict=True)),
                chance_per_class=dict(zip(names, map(_finite, chance), strict=True)),
            )
        methods[method] = entry
    return {
        "accuracy": results["accuracy"],
        "methods": methods,
        "seeds": list(config.seeds),
        "settings": {
            **config.to_dict(),
            "layer": state.layer,
            "subspace_dim": state.subspace_dim,
            "n_locations": state.n_locations,
            "run": state.run if state.run is not None else state.model_name,
            "data_dir": state.data_dir,
            "n_inputs": results["n_inputs"],
        },
        "timings_s": dict(state.timings_s),
        "concept_overlap": results.get("overlap", {}),
        "warnings": [
            *filter(None, [coverage_warning(state.layer, state.channels,
                                            config.n_subspaces, state.subspace_dim)]),
            *overlap_warnings(results.get("overlap", {})),
        ],
    }  # fmt: skip


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _nan_mean(values: list[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a plain-text table: method, AUPC mean ± s.e.m., recovery, chance."""
    lines = [
        f"{summary['settings']['eval_split']} accuracy {summary['accuracy']:.4f}; "
        f"seeds {summary['seeds']}",
        f"{'method':<10} {'AUPC (class mean)':>18} {'AUPC pooled ± s.e.m.':>22} "
        f"{'recovery':>9} {'chance':>7}",
    ]
    for method, entry in summary["methods"].items():
        pooled = f"{_text(entry['aupc_pooled'])} ± {_text(entry['aupc_sem'])}"
        lines.append(
            f"{method:<10} {_text(entry['aupc']):>18} {pooled:>22} "
            f"{_text(entry['recovery']):>9} {_text(entry['chance']):>7}"
        )
    lines += [f"warning: {text}" for text in summary.get("warnings", [])]
    return "\n".join(lines)


def _class_mean(values: list[float | None], labels: np.ndarray, n_classes: int) -> list[float]:
    """Mean per class over the defined values (NaN for a class without any)."""
    array = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    means = []
    for label in range(n_classes):
        chosen = array[labels == label]
        chosen = chosen[np.isfinite(chosen)]
        means.append(float(chosen.mean()) if chosen.size else float("nan"))
    return means


def _text(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"
