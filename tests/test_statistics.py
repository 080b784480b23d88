"""Paired statistics: differences, bootstrap intervals, Wilcoxon, verdicts, validation."""

import json

import numpy as np
import pytest

from zennit_drsa.evaluation import min_pairs, paired_comparison, validate_measure


def base(n: int = 12) -> np.ndarray:
    """Per-input scores with distinct values."""
    return np.linspace(0.2, 0.8, n)


def test_a_constant_shift_is_found_with_the_exact_signed_rank_p_value():
    b = base(10)
    result = paired_comparison(b + 1.0, b)
    assert (result.n, result.n_dropped) == (10, 0)
    assert result.mean_difference == pytest.approx(1.0)
    assert result.median_difference == pytest.approx(1.0)
    assert result.mean_a == pytest.approx(b.mean() + 1) and result.mean_b == pytest.approx(b.mean())
    # Every difference of one sign: the exact two-sided p is 2 / 2**n.
    assert result.p_value == pytest.approx(2 / 2**10)
    assert (result.ci_low, result.ci_high) == pytest.approx((1.0, 1.0))
    assert result.signed_rank_sum == pytest.approx(10 * 11 / 2)
    assert result.verdict(better="higher") == "a_ahead"
    assert result.verdict(better="lower") == "b_ahead"
    assert paired_comparison(b, b + 1.0).verdict(better="higher") == "b_ahead"


def test_percentile_bootstrap_interval_of_two_values_spans_them():
    # Resampled means of (0, 1) are 0, 1/2 or 1 with chances 1/4, 1/2, 1/4: the 2.5 % and
    # 97.5 % quantiles are exactly 0 and 1.
    result = paired_comparison([0.0, 1.0], [0.0, 0.0], n_bootstrap=4000)
    assert (result.ci_low, result.ci_high) == (0.0, 1.0)
    assert result.confidence == 0.95


def test_the_bootstrap_is_seeded():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=30), rng.normal(size=30)
    first, again = paired_comparison(a, b, seed=3), paired_comparison(a, b, seed=3)
    other = paired_comparison(a, b, seed=4)
    assert (first.ci_low, first.ci_high) == (again.ci_low, again.ci_high)
    assert (first.ci_low, first.ci_high) != (other.ci_low, other.ci_high)
    assert first.p_value == other.p_value


def test_all_zero_differences_are_level_with_p_one():
    b = base()
    result = paired_comparison(b, b.copy())
    assert result.p_value == 1.0 and result.mean_difference == 0.0
    assert (result.ci_low, result.ci_high) == (0.0, 0.0) and result.signed_rank_sum == 0.0
    assert result.verdict(better="lower", alpha=0.01) == "level"


def test_min_pairs_is_where_the_exact_test_can_first_reach_alpha():
    assert min_pairs(0.01) == 8  # 2 / 2**8 < 0.01 <= 2 / 2**7
    assert min_pairs(0.05) == 6
    assert min_pairs(0.5) == 3


@pytest.mark.parametrize(
    ("n", "alpha", "verdict"),
    [
        (5, 0.05, "undecided"),  # p = 1/16: no outcome of 5 pairs reaches 0.05
        (6, 0.05, "a_ahead"),  # p = 1/32
        (7, 0.01, "undecided"),  # p = 1/64 >= 0.01, and 7 < 8 pairs
        (8, 0.01, "a_ahead"),  # p = 1/128
    ],
)
def test_too_few_pairs_are_undecided_rather_than_level(n, alpha, verdict):
    b = base(n)
    assert paired_comparison(b + 0.1, b).verdict(better="higher", alpha=alpha) == verdict


def test_no_evidence_with_enough_pairs_is_level():
    # Differences +1, -1 alternating over 8 pairs: balanced ranks, p = 1 > 0.01 with n >= 8.
    b = base(8)
    result = paired_comparison(b + np.tile([1.0, -1.0], 4), b)
    assert result.p_value == pytest.approx(1.0)
    assert result.verdict(better="higher", alpha=0.01) == "level"


def test_nan_pairs_are_dropped_and_counted_and_no_pairs_are_undecided():
    b = base(10)
    a = b + 1.0
    a[2], b[7] = np.nan, np.nan
    result = paired_comparison(a, b)
    assert (result.n, result.n_dropped) == (8, 2)
    assert result.p_value == pytest.approx(2 / 2**8)
    empty = paired_comparison([np.nan], [1.0])
    assert empty.n == 0 and np.isnan(empty.p_value) and np.isnan(empty.ci_low)
    assert empty.verdict(better="lower") == "undecided"


def test_seeds_pair_per_seed_and_pool_per_input_means():
    b = base(10)
    # Seed s shifts a by s + 1: per-seed mean differences 1, 2, 3; b has no seed.
    a = b[None, :] + np.array([1.0, 2.0, 3.0])[:, None]
    result = paired_comparison(a, b)
    assert [s.mean_difference for s in result.per_seed] == pytest.approx([1.0, 2.0, 3.0])
    assert all(s.n == 10 for s in result.per_seed)
    # Inputs are the units: 10 pairs of seed-averaged differences, not 30.
    assert result.n == 10 and result.mean_difference == pytest.approx(2.0)
    assert result.p_value == pytest.approx(2 / 2**10)
    assert (result.ci_low, result.ci_high) == pytest.approx((2.0, 2.0))
    assert paired_comparison(b, b + 1).per_seed == ()


def test_an_input_missing_under_one_seed_leaves_the_pooled_figures_only():
    b = base(10)
    a = np.stack([b + 1.0, b + 1.0])
    a[1, 4] = np.nan
    result = paired_comparison(a, np.stack([b, b]))
    assert [s.n for s in result.per_seed] == [10, 9]
    assert (result.n, result.n_dropped) == (9, 1)


def test_comparison_dict_is_json_safe():
    record = paired_comparison([np.nan, 1.0], [0.0, 0.0]).to_dict()
    text = json.dumps(record, allow_nan=False)
    assert json.loads(text)["ci_method"] == "percentile bootstrap"
    assert record["p_value"] == 1.0 and record["n"] == 1
    assert paired_comparison([np.nan], [0.0]).to_dict()["mean_difference"] is None


def three_decompositions(n: int = 20):
    """Deletion-AUPC-like scores (lower is better): oracle < random < entangled."""
    rng = np.random.default_rng(1)
    random = 0.5 + 0.1 * rng.random(n)
    return random - 0.1 - 0.01 * rng.random(n), random, random + 0.1 + 0.01 * rng.random(n)


def test_a_measure_ranking_oracle_random_entangled_is_validated():
    oracle, random, entangled = three_decompositions()
    result = validate_measure(oracle, random, entangled, better="lower")
    assert result.validated
    assert result.oracle_vs_random_verdict == "a_ahead"
    assert result.random_vs_entangled_verdict == "a_ahead"
    assert result.oracle_vs_random.p_value == pytest.approx(2 / 2**20)
    record = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert record["validated"] is True and record["better"] == "lower"
    assert record["alpha"] == 0.01
    assert record["oracle_vs_random"]["verdict"] == "a_ahead"
    assert record["random_vs_entangled"]["n"] == 20


def test_random_level_with_entangled_still_validates():
    oracle, random, _ = three_decompositions()
    assert validate_measure(oracle, random, random.copy(), better="lower").validated


def test_the_direction_decides():
    oracle, random, entangled = three_decompositions()
    # Read as higher-is-better the same numbers rank entangled first: not validated.
    result = validate_measure(oracle, random, entangled, better="higher")
    assert not result.validated and result.oracle_vs_random_verdict == "b_ahead"
    assert "oracle is not ahead of random" in result.reason
    flipped = validate_measure(-oracle, -random, -entangled, better="higher")
    assert flipped.validated


def test_oracle_level_with_random_fails():
    # The METHOD.md finding for deletion patch flipping: oracle not ahead of random.
    _, random, entangled = three_decompositions()
    result = validate_measure(random.copy(), random, entangled, better="lower")
    assert not result.validated and result.oracle_vs_random_verdict == "level"


def test_random_behind_entangled_fails():
    oracle, random, entangled = three_decompositions()
    result = validate_measure(oracle - 1, entangled, random, better="lower")
    assert not result.validated and result.random_vs_entangled_verdict == "b_ahead"
    assert "random is not ahead of or level with entangled" in result.reason


def test_seeded_random_subspaces_pair_with_deterministic_methods():
    oracle, random, entangled = three_decompositions()
    seeds = np.stack([random, random + 0.001, random - 0.001])
    result = validate_measure(oracle, seeds, entangled, better="lower")
    assert result.validated and len(result.oracle_vs_random.per_seed) == 3
    assert len(result.to_dict()["random_vs_entangled"]["per_seed"]) == 3


def test_too_few_inputs_cannot_validate():
    oracle, random, entangled = three_decompositions(n=7)
    result = validate_measure(oracle, random, entangled, better="lower")
    assert not result.validated and result.oracle_vs_random_verdict == "undecided"


def test_without_an_entangled_reference_oracle_ahead_of_random_validates():
    # E.g. concept selectivity: "one concept holding everything" has no second concept.
    oracle, random, _ = three_decompositions()
    result = validate_measure(oracle, random, None, better="lower")
    assert result.validated and result.oracle_vs_random_verdict == "a_ahead"
    assert result.random_vs_entangled is None and result.random_vs_entangled_verdict is None
    assert "oracle ahead of random" in result.reason
    assert "no entangled reference was given" in result.reason
    assert "rests on oracle vs random alone" in result.reason
    record = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert record["validated"] is True and record["random_vs_entangled"] is None
    assert record["oracle_vs_random"]["verdict"] == "a_ahead"


def test_without_an_entangled_reference_the_verdict_rests_on_oracle_vs_random_alone():
    oracle, random, entangled = three_decompositions()
    # Random behind entangled would fail the full check; without entangled it cannot.
    assert not validate_measure(oracle - 1, entangled, random, better="lower").validated
    assert validate_measure(oracle - 1, entangled, None, better="lower").validated
    # The same oracle-vs-random figures either way.
    full = validate_measure(oracle, random, entangled, better="lower")
    alone = validate_measure(oracle, random, entangled=None, better="lower")
    assert alone.oracle_vs_random == full.oracle_vs_random
    level = validate_measure(random.copy(), random, None, better="lower")
    assert not level.validated and level.oracle_vs_random_verdict == "level"
    assert "oracle is not ahead of random: level" in level.reason
    assert "no entangled reference was given" in level.reason
    assert level.to_dict()["random_vs_entangled"] is None


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: paired_comparison([1.0, 2.0], [1.0]), "not paired"),
        (lambda: paired_comparison(np.zeros((2, 3)), np.zeros((3, 3))), "seeds"),
        (lambda: paired_comparison(np.zeros((1, 2, 3)), np.zeros(3)), "n_inputs"),
        (lambda: paired_comparison([np.inf], [1.0]), "Inf"),
        (lambda: paired_comparison([1.0], [1.0], confidence=1.0), "confidence"),
        (lambda: paired_comparison([1.0], [1.0], n_bootstrap=0), "n_bootstrap"),
        (lambda: paired_comparison([1.0], [1.0]).verdict(better="up"), "better"),
        (lambda: paired_comparison([1.0], [1.0]).verdict(better="lower", alpha=0), "alpha"),
        (lambda: validate_measure([1.0], [1.0], [1.0], better="down"), "better"),
    ],
)
def test_bad_input_is_rejected(call, message):
    with pytest.raises(ValueError, match=message):
        call()
