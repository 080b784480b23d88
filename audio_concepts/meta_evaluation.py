"""Which measures can be believed on this task, and where the methods stand on them.

Three questions, answered from the evaluation results (``evaluation/results.json``) alone:

1. **Validation** (METHOD.md §5): a measure is *validated on a task* when, paired over the
   same inputs, it ranks the oracle decomposition ahead of random subspaces and random ahead
   of (or level with) the entangled one, each by a two-sided Wilcoxon test at p < 0.01.
   Map measures are judged by the map-level references (the standard heatmap split by the
   object masks; the standard heatmap as one concept; the ``random`` method), layer measures
   by the layer-level references (oracle, random and entangled subspaces); each measure's
   verdict under the other level is reported beside it. Only clips with two or more scored
   sound objects enter, since with one object the oracle and entangled splits coincide.
   Without ground truth (real audio) nothing can be validated.
2. **Paired comparisons**: each method against each baseline (random, PRCA, DSA) on the same
   inputs, seeds paired, with a 95 % bootstrap CI of the mean difference and the Wilcoxon
   p-value, per seed and pooled.
3. **Where separation is lost**: per decomposition, interventional recovery (subspaces alone)
   against heatmap recovery (after the backward pass), paired.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from audio_concepts.measures import MEASURES, Measure
from zennit_drsa.evaluation import paired_comparison, validate_measure

__all__ = [
    "BASELINES",
    "VALIDATION_ALPHA",
    "compare_methods",
    "locate_separation",
    "score_matrix",
    "validate_measures",
]

VALIDATION_ALPHA = 0.01
"""Significance level of the validation tests (METHOD.md §5)."""

COMPARISON_ALPHA = 0.05
"""Significance level of the verdicts of paired method comparisons."""

BASELINES: tuple[str, ...] = ("random", "prca", "dsa")
"""The methods every other method is compared with, where they were fitted."""

_REFERENCES = {
    "map": ("oracle", "random", "entangled"),
    "layer": ("oracle_subspaces", "random_subspaces", "entangled_subspace"),
}


def score_matrix(records: Sequence[dict[str, Any]], measure: str) -> np.ndarray | None:
    """A decomposition's per-input values of ``measure``: ``(n_seeds, N)``, or ``(N,)`` for a
    single record; NaN where undefined; ``None`` if the measure was not computed."""
    rows = []
    for record in records:
        values = record.get("measures", {}).get(measure)
        if values is None:
            return None
        rows.append([np.nan if v is None else float(v) for v in values])
    if not rows:
        return None
    array = np.asarray(rows, dtype=np.float64)
    return array[0] if len(rows) == 1 else array


def validate_measures(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The meta-evaluation of every measure computed (see the module).

    Returns
    -------
    dict
        Measure name → ``validated`` (bool), ``level`` (the references that decide),
        ``reason`` (one sentence), ``better``, and under ``"map"`` / ``"layer"`` the
        :meth:`~zennit_drsa.evaluation.MeasureValidation.to_dict` figures of each reference
        set that could judge it (``None`` where the references are missing). Empty without
        references (data without known sound objects).
    """
    references = results.get("references") or {}
    eligible = references.get("eligible")
    if not eligible:
        return {}
    chosen = np.asarray(eligible, dtype=bool)
    verdicts: dict[str, dict[str, Any]] = {}
    for measure in _computed(results):
        entry: dict[str, Any] = {"better": measure.better, "level": measure.level}
        for level in ("map", "layer"):
            triple = _reference_scores(results, level, measure.name)
            entry[level] = None if triple is None else _validate(triple, chosen, measure)
        decisive = entry[measure.level]
        if decisive is None:
            entry["validated"] = False
            entry["reason"] = f"the {measure.level}-level references were not computed"
        else:
            entry["validated"] = bool(decisive["validated"])
            entry["reason"] = decisive["reason"]
        verdicts[measure.name] = entry
    return verdicts


def compare_methods(
    results: dict[str, Any], methods: Sequence[str], *, seed: int = 0
) -> dict[str, dict[str, dict[str, Any]]]:
    """Every method against every baseline, per measure, paired on the same inputs.

    Returns
    -------
    dict
        Measure → method → baseline → the
        :meth:`~zennit_drsa.evaluation.PairedComparison.to_dict` figures of ``method −
        baseline`` (95 % bootstrap CI, Wilcoxon p, per seed and pooled) with ``verdict``
        (``"a_ahead"``: the method is better at p < 0.05, ``"b_ahead"``, ``"level"`` or
        ``"undecided"``).
    """
    table: dict[str, dict[str, dict[str, Any]]] = {}
    records = results["methods"]
    for measure in _computed(results):
        rows: dict[str, dict[str, Any]] = {}
        for method in methods:
            for baseline in BASELINES:
                if baseline == method or baseline not in methods:
                    continue
                a = score_matrix(records.get(method, []), measure.name)
                b = score_matrix(records.get(baseline, []), measure.name)
                if a is None or b is None or not _any_pair(a, b):
                    continue
                a, b = _pairable(a, b)
                comparison = paired_comparison(a, b, seed=seed)
                rows.setdefault(method, {})[baseline] = {
                    "verdict": comparison.verdict(better=measure.better, alpha=COMPARISON_ALPHA),
                    **comparison.to_dict(),
                }
        if rows:
            table[measure.name] = rows
    return table


def locate_separation(results: dict[str, Any], *, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per decomposition, interventional recovery minus heatmap recovery, paired.

    Returns
    -------
    dict
        Decomposition → the paired figures of ``interventional − heatmap`` recovery and a
        ``finding``: ``"backward pass"`` when the subspaces separate the objects clearly
        better than the heatmaps do (p < 0.05, interventional ahead), ``"heatmaps"`` when
        the heatmaps separate them better, ``"neither"`` otherwise. Empty without ground
        truth.
    """
    pools = {**results["methods"], **(results.get("references") or {})}
    found: dict[str, dict[str, Any]] = {}
    for name, records in pools.items():
        if not _is_records(records):
            continue
        layer = score_matrix(records, "interventional_recovery")
        maps = score_matrix(records, "recovery")
        if layer is None or maps is None or not _any_pair(layer, maps):
            continue
        comparison = paired_comparison(layer, maps, seed=seed)
        verdict = comparison.verdict(better="higher", alpha=COMPARISON_ALPHA)
        finding = {"a_ahead": "backward pass", "b_ahead": "heatmaps"}.get(verdict, "neither")
        found[name] = {"finding": finding, "verdict": verdict, **comparison.to_dict()}
    return found


def _is_records(value: Any) -> bool:
    """Whether ``value`` is a decomposition's records (not e.g. the ``eligible`` list)."""
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict)


def _computed(results: dict[str, Any]) -> list[Measure]:
    names = set(results.get("measures", ()))
    return [m for m in MEASURES if m.name in names]


def _reference_scores(
    results: dict[str, Any], level: str, measure: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    """Oracle, random and entangled scores of one reference level (``None`` if missing)."""
    references = results.get("references") or {}
    oracle_name, random_name, entangled_name = _REFERENCES[level]
    oracle = score_matrix(references.get(oracle_name, []), measure)
    if level == "map":
        # The random *method* at the analysis' K; random subspaces at the oracle's K else.
        random = score_matrix(results["methods"].get("random", []), measure)
        if random is None:
            random = score_matrix(references.get("random_subspaces", []), measure)
    else:
        random = score_matrix(references.get(random_name, []), measure)
    entangled = score_matrix(references.get(entangled_name, []), measure)
    if oracle is None or random is None:
        return None
    return oracle, random, entangled


def _validate(
    triple: tuple[np.ndarray, np.ndarray, np.ndarray | None], chosen: np.ndarray, measure: Measure
) -> dict[str, Any]:
    oracle, random, entangled = (None if t is None else t[..., chosen] for t in triple)
    if entangled is not None and not np.isfinite(entangled).any():
        entangled = None  # undefined on these inputs (e.g. selectivity of one concept)
    validation = validate_measure(
        oracle, random, entangled, better=measure.better, alpha=VALIDATION_ALPHA
    )
    return validation.to_dict()


def _pairable(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Seeds pair by position when both have the same number; otherwise each input's mean."""
    if a.ndim == b.ndim == 2 and a.shape[0] != b.shape[0]:
        return _seed_mean(a), _seed_mean(b)
    return a, b


def _seed_mean(values: np.ndarray) -> np.ndarray:
    complete = np.isfinite(values).all(axis=0)
    return np.where(complete, np.nan_to_num(values).mean(axis=0), np.nan)


def _any_pair(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether some input has both values finite (under every seed)."""
    finite_a = np.isfinite(np.atleast_2d(a)).all(axis=0)
    return bool((finite_a & np.isfinite(np.atleast_2d(b)).all(axis=0)).any())
