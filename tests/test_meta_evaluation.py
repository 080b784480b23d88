"""Meta-evaluation, paired method comparisons, the summary and the evaluation report.

Pure tests on hand-built ``results`` dicts in the layout of ``evaluation/results.json`` (see
:mod:`audio_concepts.evaluate`) with planted values whose answers are known exactly: no
model, no audio. N = 40 inputs, seeds (0, 1, 2), methods drsa/prca/dsa/random; every fourth
input has a single sound object and is not ``eligible`` for the validation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from audio_concepts.config import AnalysisConfig
from audio_concepts.evaluation_report import add_evaluation_sections
from audio_concepts.meta_evaluation import (
    compare_methods,
    locate_separation,
    score_matrix,
    validate_measures,
)
from audio_concepts.report import Report
from audio_concepts.summary import format_summary, summarize
from audio_concepts.workspace import AnalysisState

N = 40
SEEDS = (0, 1, 2)
METHODS = ("drsa", "prca", "dsa", "random")
CLASSES = ("dog", "<b>&")
INELIGIBLE = np.arange(N) % 4 == 3
ELIGIBLE = ~INELIGIBLE
TINY = 1e-9

Planted = Mapping[str, Any]  # measure name → per-input values (scalar, array or list)


# ----- building results ------------------------------------------------------------------------


def _values(values: Any) -> list[float | None]:
    """Per-input values as results.json has them: floats, ``None`` where undefined."""
    array = np.broadcast_to(np.asarray(values, dtype=np.float64), (N,))
    return [float(v) if np.isfinite(v) else None for v in array]


def _record(seed: int | None, measures: Planted) -> dict[str, Any]:
    values = {name: _values(v) for name, v in measures.items()}
    record: dict[str, Any] = {
        "seed": seed,
        "measures": values,
        "aupc": values.get("deletion_round_robin", [None] * N),
    }
    if "recovery" in values:
        record["recovery"] = values["recovery"]
        record["chance"] = [0.5] * N
    return record


def _results(
    methods: Mapping[str, Sequence[Planted]],
    references: Mapping[str, Planted] | None = None,
    *,
    eligible: np.ndarray = ELIGIBLE,
    **extra: Any,
) -> dict[str, Any]:
    """A results dict: ``methods`` name → one planted dict per seed (seeds in order);
    ``references`` name → one planted dict. Round-tripped through JSON like results.json."""
    records = {
        name: [_record(SEEDS[i], planted) for i, planted in enumerate(per_seed)]
        for name, per_seed in methods.items()
    }
    planted = [p for per_seed in methods.values() for p in per_seed]
    planted += list((references or {}).values())
    results: dict[str, Any] = {
        "fit_id": "fit-1",
        "labels": [i % len(CLASSES) for i in range(N)],
        "methods": records,
        "measures": sorted({name for p in planted for name in p}),
        "accuracy": 0.875,
        "n_inputs": N,
        "overlap": {},
        **extra,
    }
    if references is not None:
        found: dict[str, Any] = {
            name: [_record(None if name in ("oracle", "entangled") else SEEDS[0], p)]
            for name, p in references.items()
        }
        found["eligible"] = [bool(e) for e in eligible]
        found["layer"] = {"oracle": "one subspace per sound object", "k": 2}
        results["references"] = found
    return json.loads(json.dumps(results, allow_nan=False))


def _noise(seed: int, shape: tuple[int, ...] = (len(SEEDS), N), scale: float = 0.1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-scale, scale, shape)


def _symmetric(scale: float = 0.01) -> np.ndarray:
    """Offsets that cancel exactly over the eligible inputs (±scale, ±2 scale, …); 0 elsewhere.

    Paired differences equal to these have a signed-rank sum of 0: no test can see them.
    """
    offsets = np.zeros(N)
    for j, i in enumerate(np.flatnonzero(ELIGIBLE)):
        offsets[i] = scale * (j // 2 + 1) * (-1) ** j
    return offsets


def _per_seed(measure: str, values: np.ndarray) -> list[dict[str, np.ndarray]]:
    return [{measure: row} for row in np.atleast_2d(values)]


def _ci_holds(figures: Mapping[str, Any], value: float) -> bool:
    low, high = figures["ci"]
    return low - TINY <= value <= high + TINY


# ----- 1. validate_measures ------------------------------------------------------------------


def _map_results(measure: str, oracle: Any, random: np.ndarray, entangled: Any, **kw: Any):
    return _results(
        {"random": _per_seed(measure, random)},
        {"oracle": {measure: oracle}, "entangled": {measure: entangled}},
        **kw,
    )


def test_a_measure_that_ranks_oracle_random_entangled_is_validated_at_the_map_level():
    random = 0.5 + _noise(1)
    verdicts = validate_measures(_map_results("recovery", 1.0, random, 0.3))
    assert set(verdicts) == {"recovery"}
    entry = verdicts["recovery"]
    assert entry["validated"] is True
    assert (entry["level"], entry["better"]) == ("map", "higher")
    assert entry["reason"].startswith("oracle ahead of random (p = ")
    assert "random ahead of entangled" in entry["reason"]
    assert entry["reason"] == entry["map"]["reason"]
    first, second = entry["map"]["oracle_vs_random"], entry["map"]["random_vs_entangled"]
    assert first["verdict"] == second["verdict"] == "a_ahead"
    assert first["n"] == second["n"] == int(ELIGIBLE.sum()) == 30
    assert first["mean_a"] == pytest.approx(1.0)
    assert first["mean_b"] == pytest.approx(random[:, ELIGIBLE].mean())
    assert first["p_value"] < 0.01 and second["p_value"] < 0.01
    assert second["mean_b"] == pytest.approx(0.3)
    assert entry["layer"] is None  # no layer references were scored


def test_a_measure_that_cannot_tell_oracle_from_random_is_not_validated():
    random = 0.5 + _noise(2)
    oracle = random.mean(axis=0) + _symmetric()
    entry = validate_measures(_map_results("recovery", oracle, random, 0.3))["recovery"]
    assert entry["validated"] is False
    assert entry["reason"].startswith("oracle is not ahead of random: level")
    figures = entry["map"]["oracle_vs_random"]
    assert figures["verdict"] == "level"
    assert figures["mean_difference"] == pytest.approx(0.0, abs=TINY)
    assert figures["p_value"] > 0.5


@pytest.mark.parametrize(
    ("oracle", "entangled", "validated", "first_verdict"),
    [(0.1, 0.8, True, "a_ahead"), (0.9, 0.2, False, "b_ahead")],
    ids=["planted-lower-is-better", "planted-the-wrong-way-round"],
)
def test_a_lower_is_better_measure_is_read_the_right_way_round(
    oracle, entangled, validated, first_verdict
):
    random = 0.5 + _noise(3)
    results = _map_results("deletion_round_robin", oracle, random, entangled)
    entry = validate_measures(results)["deletion_round_robin"]
    assert entry["better"] == "lower"
    assert entry["validated"] is validated
    assert entry["map"]["oracle_vs_random"]["verdict"] == first_verdict
    if validated:
        assert entry["map"]["random_vs_entangled"]["verdict"] == "a_ahead"
        assert entry["map"]["oracle_vs_random"]["mean_difference"] < 0


def test_a_layer_measure_without_an_entangled_value_is_judged_on_oracle_vs_random_alone():
    random = 0.1 + _noise(4, (N,), 0.05)
    results = _results(
        {"random": _per_seed("selectivity", 0.1 + _noise(5, scale=0.05))},
        {
            "oracle": {"recovery": 1.0},  # a map reference without layer measures
            "oracle_subspaces": {"selectivity": 0.6},
            "random_subspaces": {"selectivity": random},
            "entangled_subspace": {"selectivity": None},  # one concept: undefined
        },
    )
    entry = validate_measures(results)["selectivity"]
    assert entry["level"] == "layer"
    assert entry["map"] is None  # the map-level oracle has no selectivity
    assert entry["validated"] is True
    assert entry["layer"]["random_vs_entangled"] is None
    assert entry["layer"]["oracle_vs_random"]["verdict"] == "a_ahead"
    assert entry["layer"]["oracle_vs_random"]["mean_b"] == pytest.approx(random[ELIGIBLE].mean())
    assert "no entangled reference" in entry["reason"]


def test_an_entangled_value_only_on_ineligible_inputs_counts_as_undefined():
    results = _results(
        {},
        {
            "oracle_subspaces": {"selectivity": 0.6},
            "random_subspaces": {"selectivity": 0.1 + _noise(26, (N,), 0.05)},
            "entangled_subspace": {"selectivity": np.where(INELIGIBLE, 0.0, np.nan)},
        },
    )
    entry = validate_measures(results)["selectivity"]
    assert entry["layer"]["random_vs_entangled"] is None
    assert entry["validated"] is True


def test_the_decisive_level_is_the_measures_own():
    # Recovery passes at the map level and fails at the layer level: the map level decides.
    random = 0.5 + _noise(6)
    layer_random = 0.5 + _noise(7, (N,))
    results = _results(
        {"random": _per_seed("recovery", random)},
        {
            "oracle": {"recovery": 1.0},
            "entangled": {"recovery": 0.3},
            "oracle_subspaces": {"recovery": layer_random + _symmetric()},
            "random_subspaces": {"recovery": layer_random},
            "entangled_subspace": {"recovery": 0.3},
        },
    )
    entry = validate_measures(results)["recovery"]
    assert entry["validated"] is True
    assert entry["map"]["validated"] is True
    assert entry["layer"]["validated"] is False


def test_a_layer_measure_without_layer_references_is_not_validated():
    results = _map_results("selectivity", 0.9, 0.1 + _noise(8), 0.0)
    entry = validate_measures(results)["selectivity"]
    assert entry["validated"] is False
    assert entry["layer"] is None
    assert entry["reason"] == "the layer-level references were not computed"


def test_only_eligible_inputs_enter_the_validation():
    random = 0.5 + _noise(9)
    # Garbage on the inputs with one sound object: would flip the verdict if they entered.
    oracle = np.where(ELIGIBLE, 1.0, -10.0)
    entangled = np.where(ELIGIBLE, 0.3, 5.0)
    entry = validate_measures(_map_results("recovery", oracle, random, entangled))["recovery"]
    assert entry["validated"] is True
    assert entry["map"]["oracle_vs_random"]["n"] == 30
    assert entry["map"]["oracle_vs_random"]["mean_a"] == pytest.approx(1.0)
    assert entry["map"]["random_vs_entangled"]["mean_b"] == pytest.approx(0.3)
    # The counterfactual: with every input eligible the same scores fail.
    everyone = np.ones(N, dtype=bool)
    results = _map_results("recovery", oracle, random, entangled, eligible=everyone)
    entry = validate_measures(results)["recovery"]
    assert entry["validated"] is False
    assert entry["reason"].startswith("oracle is not ahead of random")
    assert entry["map"]["oracle_vs_random"]["n"] == N


def test_without_references_nothing_is_validated():
    methods = {"random": _per_seed("recovery", 0.5 + _noise(10))}
    assert validate_measures(_results(methods)) == {}
    results = _results(methods)
    results["references"] = None
    assert validate_measures(results) == {}


# ----- 2. compare_methods --------------------------------------------------------------------


@pytest.fixture(scope="module")
def shifted() -> dict[str, Any]:
    """drsa = random + 0.1, dsa = random + 0.03 (per seed, per input); prca (one record) =
    the seed mean of random + 0.05; standard (one record) = 0.9; two measures, both ways."""
    random = 0.5 + _noise(11, scale=0.2)
    prca = random.mean(axis=0) + 0.05

    def both(values: np.ndarray) -> list[dict[str, np.ndarray]]:
        return [{"recovery": v, "deletion_round_robin": v} for v in np.atleast_2d(values)]

    return _results(
        {
            "drsa": both(random + 0.1),
            "prca": both(prca),
            "dsa": both(random + 0.03),
            "random": both(random),
            "standard": [{"deletion_round_robin": np.full(N, 0.9)}],
        }
    )


def test_a_planted_shift_is_found_with_its_interval_and_verdict(shifted):
    table = compare_methods(shifted, METHODS)
    assert set(table) == {"recovery", "deletion_round_robin"}
    higher = table["recovery"]["drsa"]["random"]
    lower = table["deletion_round_robin"]["drsa"]["random"]
    for figures in (higher, lower):
        assert figures["mean_difference"] == pytest.approx(0.1, abs=TINY)
        assert _ci_holds(figures, 0.1)
        assert figures["ci"][0] > 0  # excludes 0
        assert figures["n"] == N and figures["n_dropped"] == 0
        assert figures["p_value"] < 1e-6
        assert len(figures["per_seed"]) == len(SEEDS)
        for seed in figures["per_seed"]:
            assert seed["mean_difference"] == pytest.approx(0.1, abs=TINY)
            assert _ci_holds(seed, 0.1)
    assert higher["verdict"] == "a_ahead"  # higher recovery is better: drsa ahead
    assert lower["verdict"] == "b_ahead"  # higher deletion AUPC is worse: random ahead


def test_a_single_record_method_pairs_with_every_seed(shifted):
    assert score_matrix(shifted["methods"]["prca"], "recovery").shape == (N,)
    assert score_matrix(shifted["methods"]["drsa"], "recovery").shape == (len(SEEDS), N)
    rows = compare_methods(shifted, METHODS)["recovery"]
    prca_vs_random = rows["prca"]["random"]
    assert prca_vs_random["mean_difference"] == pytest.approx(0.05, abs=TINY)
    assert len(prca_vs_random["per_seed"]) == len(SEEDS)
    per_seed = [s["mean_difference"] for s in prca_vs_random["per_seed"]]
    assert np.mean(per_seed) == pytest.approx(0.05, abs=TINY)
    assert prca_vs_random["verdict"] == "a_ahead"
    drsa_vs_prca = rows["drsa"]["prca"]
    assert drsa_vs_prca["mean_difference"] == pytest.approx(0.05, abs=TINY)
    assert drsa_vs_prca["n"] == N and len(drsa_vs_prca["per_seed"]) == len(SEEDS)
    dsa_vs_prca = rows["dsa"]["prca"]
    assert dsa_vs_prca["mean_difference"] == pytest.approx(-0.02, abs=TINY)
    assert dsa_vs_prca["verdict"] == "b_ahead"


def test_each_method_meets_each_other_baseline_and_never_itself(shifted):
    table = compare_methods(shifted, METHODS)
    expected = {
        "drsa": {"random", "prca", "dsa"},
        "prca": {"random", "dsa"},
        "dsa": {"random", "prca"},
        "random": {"prca", "dsa"},
    }
    for rows in table.values():
        assert {method: set(baselines) for method, baselines in rows.items()} == expected
        for method, baselines in rows.items():
            assert method not in baselines
    assert all("standard" not in rows for rows in table.values())  # not among the methods


def test_baselines_not_fitted_or_not_chosen_are_skipped(shifted):
    without_dsa = {**shifted, "methods": dict(shifted["methods"])}
    del without_dsa["methods"]["dsa"]
    rows = compare_methods(without_dsa, METHODS)["recovery"]
    assert set(rows) == {"drsa", "prca", "random"}
    assert set(rows["drsa"]) == {"random", "prca"}
    assert set(rows["random"]) == {"prca"}
    rows = compare_methods(shifted, ("drsa", "random"))["recovery"]
    assert set(rows) == {"drsa"}  # random's baselines (prca, dsa) were not chosen
    assert set(rows["drsa"]) == {"random"}


def test_methods_with_different_seed_counts_compare_their_seed_means():
    random = 0.5 + _noise(12)
    two_seeds = random[:2] + 0.2
    results = _results(
        {"dsa": _per_seed("recovery", two_seeds), "random": _per_seed("recovery", random)}
    )
    figures = compare_methods(results, ("dsa", "random"))["recovery"]["dsa"]["random"]
    expected = (two_seeds.mean(axis=0) - random.mean(axis=0)).mean()
    assert figures["mean_difference"] == pytest.approx(expected, abs=TINY)
    assert figures["per_seed"] == []  # seeds of different fits do not pair


def test_an_input_undefined_under_one_seed_leaves_the_pooled_comparison():
    random = 0.5 + _noise(13)
    drsa = random + 0.1
    drsa[1, 7] = np.nan
    results = _results(
        {"drsa": _per_seed("recovery", drsa), "random": _per_seed("recovery", random)}
    )
    figures = compare_methods(results, METHODS)["recovery"]["drsa"]["random"]
    assert (figures["n"], figures["n_dropped"]) == (N - 1, 1)
    assert figures["mean_difference"] == pytest.approx(0.1, abs=TINY)
    assert [s["n"] for s in figures["per_seed"]] == [N, N - 1, N]


# ----- 3. locate_separation ------------------------------------------------------------------


def _separation_results() -> dict[str, Any]:
    noise = _noise(14)
    equal = 0.6 + noise
    return _results(
        {
            "drsa": [
                {"interventional_recovery": 0.8 + n, "recovery": 0.4 + n[::-1]} for n in noise
            ],
            "prca": [{"interventional_recovery": 0.3 + noise[0], "recovery": 0.7 + noise[1]}],
            "dsa": [{"interventional_recovery": e, "recovery": e} for e in equal],
            "random": _per_seed("recovery", 0.5 + noise),  # no layer measure
        },
        {
            "oracle": {"recovery": 1.0},  # a map reference: no interventional recovery
            "oracle_subspaces": {"interventional_recovery": 0.9, "recovery": 0.9 + noise[2]},
            "entangled_subspace": {"interventional_recovery": None, "recovery": 0.3},
        },
    )


def test_separation_is_located_where_the_planted_gap_is():
    results = _separation_results()
    found = locate_separation(results)
    assert set(found) == {"drsa", "prca", "dsa", "oracle_subspaces"}
    assert found["drsa"]["finding"] == "backward pass"
    assert found["drsa"]["verdict"] == "a_ahead"
    assert found["drsa"]["mean_a"] > found["drsa"]["mean_b"]
    assert found["prca"]["finding"] == "heatmaps"
    assert found["prca"]["mean_difference"] < 0
    assert found["dsa"]["finding"] == "neither"
    assert found["dsa"]["mean_difference"] == 0.0 and found["dsa"]["p_value"] == 1.0
    assert found["oracle_subspaces"]["n"] == N
    # The eligible list and the layer description are not decompositions.
    assert "eligible" not in found and "layer" not in found
    assert "entangled_subspace" not in found  # interventional recovery undefined everywhere


def test_no_interventional_recovery_no_separation():
    results = _results({"random": _per_seed("recovery", 0.5 + _noise(15))})
    assert locate_separation(results) == {}


# ----- 4. summarize and format_summary -------------------------------------------------------


def _state() -> AnalysisState:
    config = AnalysisConfig(methods=METHODS, seeds=SEEDS, n_subspaces=2)
    return AnalysisState(
        model_name="toy-cnn",
        run=None,
        data_dir="/data/toy",
        data_kind="synthetic",
        class_names=CLASSES,
        layer="features.13",
        channels=64,
        subspace_dim=16,
        n_locations=20,
        config=config,
        fit_id="fit-1",
        timings_s={"fit": 1.5, "evaluate": 2.0},
    )


FITNESS = {
    "fit": True,
    "threshold": 0.9,
    "classes": {"dog": {"share_passing": 0.95, "n": 20}, "<b>&": {"share_passing": 0.9, "n": 20}},
}
SANITY = {
    "settings": {"n_inputs": 16},
    "method": "drsa",
    "seed": 0,
    "cascading": {
        "verdict": {
            "passes": True,
            "rule": "maps must change when the layers are randomised",
            "top": {"mean": 0.2},
            "final": {"mean": 0.05},
        }
    },
    "random_class": {
        "passes": False,
        "rule": "maps must differ between classes",
        "concepts": {"spearman": {"mean": 0.7}},
    },
}
MEASURE_NAMES = ("recovery", "interventional_recovery", "selectivity", "deletion_round_robin")


def _planted_methods() -> dict[str, np.ndarray]:
    """Per measure the random method's ``(3, N)`` values."""
    return {
        "recovery": 0.5 + _noise(20),
        "interventional_recovery": 0.5 + _noise(21),
        "selectivity": 0.1 + _noise(22, scale=0.05),
        "deletion_round_robin": 0.5 + _noise(23),
    }


def _summary_results(*, references: bool = True, **extra: Any) -> dict[str, Any]:
    """Validated: interventional recovery (layer), deletion round robin (map); not validated:
    recovery (oracle ≈ random), selectivity (oracle subspaces ≈ random subspaces)."""
    random = _planted_methods()
    drsa = {name: values + 0.1 for name, values in random.items()}
    drsa["recovery"][2, 5] = np.nan  # input 5 undefined under seed 2
    methods = {
        "drsa": [{name: drsa[name][s] for name in MEASURE_NAMES} for s in range(len(SEEDS))],
        "prca": [{name: random[name].mean(axis=0) + 0.02 for name in MEASURE_NAMES}],
        "dsa": [{name: random[name][s] + 0.05 for name in MEASURE_NAMES} for s in range(3)],
        "random": [{name: random[name][s] for name in MEASURE_NAMES} for s in range(3)],
        "standard": [{"deletion_round_robin": np.full(N, 0.7)}],
    }
    layer_random = {
        "interventional_recovery": 0.5 + _noise(24, (N,)),
        "selectivity": 0.1 + _noise(25, (N,), 0.05),
    }
    planted = None
    if references:
        planted = {
            "oracle": {
                "recovery": random["recovery"].mean(axis=0) + _symmetric(),
                "deletion_round_robin": 0.1,
            },
            "entangled": {"recovery": 0.3, "deletion_round_robin": 0.8},
            "oracle_subspaces": {
                "interventional_recovery": 0.95,
                "selectivity": layer_random["selectivity"] + _symmetric(0.005),
            },
            "random_subspaces": layer_random,
            "entangled_subspace": {"interventional_recovery": 0.2, "selectivity": None},
        }
    return _results(methods, planted, **extra)


@pytest.fixture(scope="module")
def summary() -> dict[str, Any]:
    return summarize(_state(), _summary_results(fitness=FITNESS, sanity=SANITY))


def test_the_summary_lists_validated_measures_first(summary):
    measures = summary["measures"]
    assert list(measures) == [
        "interventional_recovery",
        "deletion_round_robin",
        "recovery",
        "selectivity",
    ]
    assert [row["validated"] for row in measures.values()] == [True, True, False, False]
    assert measures["recovery"]["reason"].startswith("oracle is not ahead of random")
    assert measures["selectivity"]["reason"].startswith("oracle is not ahead of random")
    assert "no entangled reference" in measures["selectivity"]["reason"]
    assert measures["deletion_round_robin"]["better"] == "lower"
    assert measures["interventional_recovery"]["level"] == "layer"
    assert set(summary["validation"]) == set(MEASURE_NAMES)


def test_the_summary_means_average_each_input_over_the_seeds_first(summary):
    random = _planted_methods()
    drsa = random["recovery"] + 0.1
    drsa[2, 5] = np.nan
    keep = np.isfinite(drsa).all(axis=0)  # input 5 leaves under every seed
    per_input = drsa[:, keep].mean(axis=0)
    means = summary["methods"]["drsa"]["means"]["recovery"]
    assert means["n"] == N - 1
    assert means["mean"] == pytest.approx(per_input.mean())
    assert means["sem"] == pytest.approx(per_input.std(ddof=1) / np.sqrt(N - 1))
    # One record: the mean over the inputs.
    prca = summary["methods"]["prca"]["means"]["deletion_round_robin"]
    expected = random["deletion_round_robin"].mean(axis=0) + 0.02
    assert (prca["mean"], prca["n"]) == (pytest.approx(expected.mean()), N)
    assert summary["methods"]["standard"]["means"] == {
        "deletion_round_robin": {"mean": pytest.approx(0.7), "sem": pytest.approx(0.0), "n": N}
    }
    # The references' means are over every input, eligible or not.
    references = summary["references"]
    assert set(references) == {
        "oracle",
        "entangled",
        "oracle_subspaces",
        "random_subspaces",
        "entangled_subspace",
    }
    assert references["oracle"]["means"]["deletion_round_robin"]["mean"] == pytest.approx(0.1)
    assert references["entangled_subspace"]["means"]["selectivity"] == {
        "mean": None,
        "sem": None,
        "n": 0,
    }
    assert summary["layer_references"] == {"oracle": "one subspace per sound object", "k": 2}


def test_the_summary_carries_the_classic_table_and_settings(summary):
    random = _planted_methods()["deletion_round_robin"]
    drsa = summary["methods"]["drsa"]
    assert drsa["aupc_pooled"] == pytest.approx((random + 0.1).mean())
    assert (drsa["n"], drsa["n_excluded"]) == (3 * N, 0)
    labels = np.arange(N) % 2
    per_class = [(random + 0.1)[:, labels == c].mean() for c in range(2)]
    assert drsa["aupc"] == pytest.approx(np.mean(per_class))
    assert drsa["aupc_per_class"] == {
        name: pytest.approx(v) for name, v in zip(CLASSES, per_class, strict=True)
    }
    assert drsa["chance"] == pytest.approx(0.5)
    assert summary["methods"]["standard"]["recovery"] is None
    assert summary["accuracy"] == 0.875 and summary["seeds"] == list(SEEDS)
    assert summary["settings"]["n_inputs"] == N
    assert summary["settings"]["run"] == "toy-cnn"
    assert summary["fitness"] == FITNESS and summary["sanity"] == SANITY
    assert summary["warnings"] == []
    comparison = summary["comparisons"]["deletion_round_robin"]["drsa"]["random"]
    assert comparison["mean_difference"] == pytest.approx(0.1, abs=TINY)
    assert comparison["verdict"] == "b_ahead"
    assert summary["separation"]["drsa"]["finding"] in ("backward pass", "heatmaps", "neither")


def test_the_summary_text_puts_accuracy_fitness_and_validated_measures_first(summary):
    text = format_summary(summary)
    lines = text.splitlines()
    assert lines[0] == "test accuracy 0.8750; seeds [0, 1, 2]"
    assert lines[1].startswith("task fit for logit-based measures: yes (")
    assert "dog 0.950, <b>& 0.900" in lines[1]
    header = "validated measures (oracle > random >= entangled, Wilcoxon p < 0.01):"
    assert lines[2] == header
    not_validated = [i for i, line in enumerate(lines) if line.startswith("NOT validated:")]
    assert [lines[i].split(":")[1].strip() for i in not_validated] == [
        "heatmap recovery",
        "concept selectivity",
    ]
    assert lines[not_validated[0]].startswith(
        "NOT validated: heatmap recovery: oracle is not ahead of random"
    )
    assert lines.index("  interventional recovery (higher is better)") < not_validated[0]
    assert lines.index("  deletion AUPC (round robin) (lower is better)") < not_validated[0]
    drsa_line = next(
        line
        for line in lines[: not_validated[0]]
        if line.strip().startswith("drsa") and "vs random +0.100 [+0.100, +0.100]" in line
    )
    assert "vs prca" in drsa_line and "vs dsa" in drsa_line
    assert "no measure is validated" not in text


def test_the_fitness_line_says_no_when_the_task_fails():
    failing = {**FITNESS, "fit": False}
    text = format_summary(summarize(_state(), _summary_results(fitness=failing)))
    assert "task fit for logit-based measures: NO (" in text
    text = format_summary(summarize(_state(), _summary_results()))
    assert "task fit" not in text


def test_without_references_the_summary_validates_nothing():
    summary = summarize(_state(), _summary_results(references=False))
    assert summary["validation"] == {} and summary["references"] == {}
    assert not any(row["validated"] for row in summary["measures"].values())
    assert all(row["reason"].startswith("no ground truth") for row in summary["measures"].values())
    text = format_summary(summary)
    assert "no measure is validated on this task" in text
    assert "validated measures (" not in text
    assert text.count("NOT validated:") == len(MEASURE_NAMES)


# ----- 5. the report sections ----------------------------------------------------------------

TITLES = (
    "Headline: validated measures",
    "Which measures can be believed (meta-evaluation)",
    "Where separation is lost",
    "Sanity checks",
)


def test_the_report_shows_every_section_escaped(summary, tmp_path):
    report = Report("Evaluation")
    add_evaluation_sections(report, summary, tmp_path / "evaluation")
    html = report.to_html()
    for title in TITLES:
        assert f">{title}</h2>" in html
    assert "&lt;b&gt;&amp;" in html and "<b>&" not in html
    assert "drsa is behind random" in html  # deletion: drsa's AUPC is higher, so worse
    assert "drsa is ahead of random" in html  # interventional recovery
    assert "heatmap recovery: Not validated. Oracle is not ahead of random" in html
    assert "Cascading randomisation passes" in html
    assert "Random-class check FAILS" in html
    assert "Model-randomisation checks on 16 inputs (drsa, seed 0)" in html
    assert "the task passes." in html
    path = report.write(tmp_path / "report.html")
    assert path.is_file()
    assert path.read_text(encoding="utf-8") == html


def test_the_report_without_references_says_no_measure_is_validated(tmp_path):
    summary = summarize(_state(), _summary_results(references=False))
    report = Report("Evaluation")
    add_evaluation_sections(report, summary, tmp_path)
    html = report.to_html()
    assert "No measure is validated on this task" in html
    assert "Without them no measure is validated." in html
    assert "Sanity checks" not in html  # neither fitness nor sanity given
    assert report.write(tmp_path / "report.html").is_file()


def test_the_report_survives_references_without_scores(tmp_path):
    results = _results({"random": _per_seed("recovery", 0.5 + _noise(27))}, {})
    summary = summarize(_state(), results)
    assert summary["validation"]["recovery"]["map"] is None  # nothing to tabulate
    report = Report("Evaluation")
    add_evaluation_sections(report, summary, tmp_path)
    html = report.to_html()
    assert "The map-level references were not computed." in html
    assert "No reference decomposition was scored, so no measure is validated." in html


def test_the_report_adds_nothing_without_measures(tmp_path):
    report = Report("Evaluation")
    add_evaluation_sections(report, {"measures": {}}, tmp_path)
    assert "Headline" not in report.to_html()
