"""What an analysis found, in brief: class-averaged figures per method, as data and as text."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from audio_concepts.diagnostics import coverage_warning, overlap_warnings
from audio_concepts.measures import MEASURES
from audio_concepts.meta_evaluation import (
    compare_methods,
    locate_separation,
    score_matrix,
    validate_measures,
)
from audio_concepts.workspace import AnalysisState
from zennit_drsa.evaluation import aupc_table, mean_sem

__all__ = ["format_summary", "summarize"]


def summarize(state: AnalysisState, results: dict[str, Any]) -> dict[str, Any]:
    """What the evaluation found: which measures can be believed, and the methods on them.

    Parameters
    ----------
    state:
        The record of the fit.
    results:
        The evaluation results (``evaluation/results.json``).

    Returns
    -------
    dict
        ``measures``: every measure computed, validated ones first, with its ``label``,
        ``better``, ``level``, ``validated`` and the ``reason``; ``validation``: per measure
        the meta-evaluation against the references (oracle, random, entangled: paired
        figures and Wilcoxon p-values; :func:`~audio_concepts.meta_evaluation.validate_measures`);
        ``comparisons``: per measure each method against random, PRCA and DSA (mean
        difference, 95 % bootstrap CI, p, per seed and pooled;
        :func:`~audio_concepts.meta_evaluation.compare_methods`); ``separation``: per
        decomposition interventional against heatmap recovery
        (:func:`~audio_concepts.meta_evaluation.locate_separation`); ``references``: per
        reference decomposition its ``means``; ``fitness`` (synthetic data: does removing a
        clip's objects halve its logit); ``sanity`` (model-randomisation checks);
        ``accuracy`` (clip level, on ``settings["eval_split"]``); under ``methods`` for each
        method and ``"standard"`` the class-averaged mean ``aupc`` (lower is better), the
        pooled ``aupc_pooled`` ± ``aupc_sem`` over ``n`` inputs × seeds (``n_excluded``
        left out), per-class values, and ``recovery`` / ``chance`` (class-averaged; ``None``
        where undefined), ``recovery_normalized`` and ``ceiling`` (class-averaged), and
        ``means``: per measure the pooled mean, s.e.m. and number of inputs (each input's
        value averaged over the seeds first); ``seeds``; ``settings``; ``timings_s``;
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
        n = len(labels)
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
            "recovery_normalized": None,
            "ceiling": None,
            "means": _means(records),
        }
        if "recovery" in records[0]:
            recovery = _class_mean([v for r in records for v in r["recovery"]], tiled, len(names))
            chance = _class_mean([v for r in records for v in r["chance"]], tiled, len(names))
            normalized, ceiling = (
                _class_mean(
                    [v for r in records for v in r.get("measures", {}).get(key, [None] * n)],
                    tiled,
                    len(names),
                )
                for key in ("recovery_normalized", "ceiling")
            )
            entry.update(
                recovery_normalized=_nan_mean(normalized),
                ceiling=_nan_mean(ceiling),
                recovery=_nan_mean(recovery),
                chance=_nan_mean(chance),
                recovery_per_class=dict(zip(names, map(_finite, recovery), strict=True)),
                chance_per_class=dict(zip(names, map(_finite, chance), strict=True)),
            )
        methods[method] = entry
    validation = validate_measures(results)
    references = {
        name: {"means": _means(records)}
        for name, records in (results.get("references") or {}).items()
        if isinstance(records, list) and records and isinstance(records[0], dict)
    }
    return {
        "measures": _measure_table(results, validation),
        "validation": validation,
        "comparisons": compare_methods(results, config.methods, seed=config.seeds[0]),
        "separation": locate_separation(results, seed=config.seeds[0]),
        "references": references,
        "layer_references": (results.get("references") or {}).get("layer"),
        "fitness": results.get("fitness"),
        "sanity": results.get("sanity"),
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


def _measure_table(
    results: dict[str, Any], validation: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The measures computed, validated ones first (stable within each group)."""
    computed = [m for m in MEASURES if m.name in set(results.get("measures", ()))]
    rows = {}
    for measure in sorted(computed, key=lambda m: not validation.get(m.name, {}).get("validated")):
        verdict = validation.get(measure.name)
        rows[measure.name] = {
            "label": measure.label,
            "better": measure.better,
            "level": measure.level,
            "description": measure.description,
            "validated": bool(verdict and verdict["validated"]),
            "reason": verdict["reason"] if verdict else _unvalidated_reason(results),
        }
    return rows


def _unvalidated_reason(results: dict[str, Any]) -> str:
    if results.get("references"):
        return "no reference scores for this measure"
    return (
        "no ground truth: the references that validate measures need synthetic data with known "
        "sound objects (and AnalysisConfig.references)"
    )


def _means(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per measure the pooled mean ± s.e.m. over inputs (each averaged over seeds first)."""
    means = {}
    for measure in MEASURES:
        values = score_matrix(records, measure.name)
        if values is None:
            continue
        per_input = np.atleast_2d(values)
        complete = np.isfinite(per_input).all(axis=0)
        pooled = per_input[:, complete].mean(axis=0)
        mean, sem = mean_sem(pooled) if pooled.size else (np.nan, np.nan)
        means[measure.name] = {"mean": _finite(mean), "sem": _finite(sem), "n": int(pooled.size)}
    return means


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _nan_mean(values: list[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as plain text, validated measures first.

    First the accuracy and the task check; then, for each validated measure, each method's
    pooled mean ± s.e.m. and its paired difference against random, PRCA and DSA (mean, 95 %
    bootstrap CI of the mean, median — the Wilcoxon test follows the median's side where a
    few large differences pull the mean away — and the Wilcoxon p); then every measure that
    is not validated, marked, with the reason; last the classic AUPC/recovery table and the
    warnings.
    """
    lines = [
        f"{summary['settings']['eval_split']} accuracy {summary['accuracy']:.4f}; "
        f"seeds {summary['seeds']}"
    ]
    fitness = summary.get("fitness")
    if fitness:
        shares = ", ".join(
            f"{name} {_text(entry.get('share_passing'))}"
            for name, entry in fitness["classes"].items()
        )
        verdict = "yes" if fitness["fit"] else "NO"
        lines.append(
            f"task fit for logit-based measures: {verdict} (share of clips whose logit at least "
            f"halves when their objects are removed: {shares})"
        )
    measures = summary.get("measures", {})
    validated = [name for name, row in measures.items() if row["validated"]]
    if validated:
        lines.append("validated measures (oracle > random >= entangled, Wilcoxon p < 0.01):")
        for name in validated:
            lines += _measure_lines(summary, name)
    elif measures:
        lines.append("no measure is validated on this task: read every figure below as unchecked")
    for name, row in measures.items():
        if not row["validated"]:
            lines.append(f"NOT validated: {row['label']}: {row['reason']}")
            lines += _measure_lines(summary, name)
    lines.append(
        f"{'method':<10} {'AUPC (class mean)':>18} {'AUPC pooled ± s.e.m.':>22} "
        f"{'recovery':>9} {'chance':>7}"
    )
    for method, entry in summary["methods"].items():
        pooled = f"{_text(entry['aupc_pooled'])} ± {_text(entry['aupc_sem'])}"
        lines.append(
            f"{method:<10} {_text(entry['aupc']):>18} {pooled:>22} "
            f"{_text(entry['recovery']):>9} {_text(entry['chance']):>7}"
        )
    lines += [f"warning: {text}" for text in summary.get("warnings", [])]
    return "\n".join(lines)


def _measure_lines(summary: dict[str, Any], name: str) -> list[str]:
    """One measure: per method its mean and the paired differences against the baselines."""
    row = summary["measures"][name]
    lines = [f"  {row['label']} ({row['better']} is better)"]
    comparisons = summary.get("comparisons", {}).get(name, {})
    for method, entry in summary["methods"].items():
        means = entry.get("means", {}).get(name)
        if not means:
            continue
        text = f"    {method:<10} {_text(means['mean'])} ± {_text(means['sem'])}"
        for baseline, figures in comparisons.get(method, {}).items():
            low, high = figures["ci"]
            text += (
                f"  vs {baseline} {_signed(figures['mean_difference'])} "
                f"[{_signed(low)}, {_signed(high)}] median {_signed(figures['median_difference'])} "
                f"p={_p(figures['p_value'])}"
            )
        lines.append(text)
    return lines


def _signed(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:+.3f}"


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2g}"


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
