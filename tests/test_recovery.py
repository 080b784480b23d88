"""Concept recovery on synthetic ground truth: scores, chance level and summaries."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from zennit_drsa.evaluation import concept_recovery, summarize_recovery


def stripes(n_objects: int, height: int = 6, width: int = 4) -> np.ndarray:
    """Disjoint horizontal bands, one per object: ``(J, height, width)`` bool."""
    rows = np.arange(height) * n_objects // height
    return np.stack([np.repeat((rows == j)[:, None], width, axis=1) for j in range(n_objects)])


def test_perfect_disentanglement_scores_one():
    masks = stripes(3)
    heatmaps = masks * np.array([1.0, 5.0, 0.2])[:, None, None]
    result = concept_recovery(heatmaps, masks)
    assert result.score == pytest.approx(1.0)
    assert result.chance == pytest.approx(1 / 3)
    assert result.pairs == ((0, 0), (1, 1), (2, 2))
    np.testing.assert_allclose(result.shares, np.eye(3))
    assert result.eligible and result.n_objects == 3 and result.skipped_objects == ()


def test_one_concept_holding_everything_scores_chance():
    masks = stripes(4, height=8)
    heatmaps = np.zeros((3, 8, 4))
    heatmaps[1] = np.arange(32).reshape(8, 4) + 1.0
    result = concept_recovery(heatmaps, masks)
    assert result.score == pytest.approx(1 / 4) == pytest.approx(result.chance)


def test_share_of_each_object_not_of_the_total_mass():
    # Object 1 holds a tiny fraction of the mass but is still fully its own concept's.
    masks = stripes(2)
    heatmaps = masks * np.array([1000.0, 0.001])[:, None, None]
    assert concept_recovery(heatmaps, masks).score == pytest.approx(1.0)


def test_permuting_concepts_keeps_the_score_and_permutes_pairs():
    rng = np.random.default_rng(0)
    masks = stripes(3)
    heatmaps = rng.random((4, 6, 4)) + 3 * masks.repeat([2, 1, 1], axis=0)
    permutation = np.array([2, 0, 3, 1])
    original = concept_recovery(heatmaps, masks)
    permuted = concept_recovery(heatmaps[permutation], masks)
    assert permuted.score == pytest.approx(original.score)
    position = np.argsort(permutation)
    assert sorted((int(position[k]), j) for k, j in original.pairs) == list(permuted.pairs)


def test_more_concepts_than_objects():
    masks = stripes(2)
    perfect = np.concatenate([masks * 1.0, np.zeros((2, 6, 4))])
    assert concept_recovery(perfect, masks).score == pytest.approx(1.0)
    # Each object split evenly over two concepts: half of it is matched.
    split = np.concatenate([masks * 1.0, masks * 1.0])
    result = concept_recovery(split, masks)
    assert result.score == pytest.approx(0.5) and result.chance == pytest.approx(0.5)
    assert len(result.pairs) == 2


def test_more_objects_than_concepts_leaves_objects_unmatched_at_zero():
    masks = stripes(4, height=8)
    # Concept 0 holds objects 0 and 1, concept 1 holds objects 2 and 3.
    heatmaps = np.stack([masks[0] | masks[1], masks[2] | masks[3]]).astype(float)
    result = concept_recovery(heatmaps, masks)
    assert len(result.pairs) == 2
    assert result.score == pytest.approx(2 / 4)
    assert result.chance == pytest.approx(1 / 4)


def test_merging_objects_pairwise_reaches_the_ceiling_k_over_j():
    # K = 2, J = 4: only two objects can be matched, so 2/4 is the best any decomposition
    # scores; this one (each concept holds two whole objects) reaches it.
    masks = stripes(4, height=8)
    heatmaps = np.stack([masks[0] | masks[1], masks[2] | masks[3]]).astype(float)
    result = concept_recovery(heatmaps, masks)
    assert result.ceiling == pytest.approx(0.5) and result.score == pytest.approx(0.5)
    assert result.normalized == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("n_concepts", "n_objects", "ceiling"),
    [(2, 4, 2 / 4), (3, 4, 3 / 4), (4, 4, 1.0), (6, 4, 1.0), (1, 3, 1 / 3)],
)
def test_ceiling_is_min_k_j_over_j_and_reached_by_objects_owning_their_concepts(
    n_concepts, n_objects, ceiling
):
    masks = stripes(n_objects, height=12)
    # Concept k holds object k entirely; objects beyond K go to the last concept.
    owner = np.minimum(np.arange(n_objects), n_concepts - 1)
    heatmaps = np.stack([masks[owner == k].any(axis=0) for k in range(n_concepts)]) * 1.0
    result = concept_recovery(heatmaps, masks)
    assert result.ceiling == pytest.approx(ceiling)
    assert result.score == pytest.approx(ceiling)


def test_normalised_score_puts_chance_at_zero_and_the_ceiling_at_one():
    masks = stripes(4, height=8)
    everything = np.zeros((3, 8, 4))
    everything[2] = 1.0
    chance = concept_recovery(everything, masks)
    assert chance.score == pytest.approx(0.25) and chance.normalized == pytest.approx(0.0)
    # K = 3 < J = 4: objects 0 and 1 own a concept, objects 2 and 3 are split 1:3 and 1:1.
    heatmaps = np.stack(
        [masks[0] + 0.25 * masks[2], masks[1] + 0.5 * masks[3], 0.75 * masks[2] + 0.5 * masks[3]]
    )
    result = concept_recovery(heatmaps, masks)
    assert result.score == pytest.approx((1 + 1 + 0.75) / 4)
    # (J · score − 1) / (min(K, J) − 1) = (2.75 − 1) / 2.
    assert result.normalized == pytest.approx(0.875)


def test_normalised_score_is_negative_below_chance_and_nan_without_span():
    masks = stripes(2)
    # K = 4 > J = 2, every object spread evenly: 1/4 < chance 1/2.
    spread = concept_recovery(np.stack([masks[0] | masks[1]] * 4) * 1.0, masks)
    assert spread.score == pytest.approx(0.25) and spread.ceiling == pytest.approx(1.0)
    assert spread.normalized == pytest.approx((2 * 0.25 - 1) / (2 - 1))
    one_concept = concept_recovery((masks[0] | masks[1])[None] * 1.0, masks)
    assert one_concept.ceiling == one_concept.chance == 0.5 and np.isnan(one_concept.normalized)
    nothing = concept_recovery(np.zeros((2, 6, 4)), masks)
    assert np.isnan(nothing.ceiling) and np.isnan(nothing.normalized)


def test_objects_without_positive_relevance_are_skipped_and_counted():
    masks = np.concatenate([stripes(3), np.zeros((1, 6, 4), dtype=bool)])
    heatmaps = np.stack([masks[0], masks[1], -5.0 * masks[2]]).astype(float)
    result = concept_recovery(heatmaps, masks)
    assert result.skipped_objects == (2, 3)  # only negative relevance, and an empty mask
    assert result.n_objects == 2 and result.eligible
    assert result.score == pytest.approx(1.0) and result.chance == pytest.approx(0.5)
    assert np.isnan(result.shares[:, 2:]).all()
    assert [j for _, j in result.pairs] == [0, 1]


def test_a_single_scored_object_does_not_count_and_none_gives_nan():
    masks = stripes(2)
    single = concept_recovery(np.stack([masks[0] * 1.0, masks[0] * 3.0]), masks)
    assert not single.eligible and single.score == pytest.approx(0.75)
    empty = concept_recovery(np.zeros((2, 6, 4)), masks)
    assert not empty.eligible and np.isnan(empty.score) and empty.pairs == ()
    no_objects = concept_recovery(np.ones((2, 6, 4)), np.zeros((0, 6, 4), dtype=bool))
    assert not no_objects.eligible and np.isnan(no_objects.score)


def test_negative_relevance_is_ignored_elementwise():
    masks = stripes(2)
    heatmaps = masks * 1.0
    disturbed = heatmaps - 10.0 * masks[::-1]  # negative relevance in the other object
    a, b = concept_recovery(heatmaps, masks), concept_recovery(disturbed, masks)
    assert b.score == a.score == pytest.approx(1.0)
    np.testing.assert_allclose(b.relevance, a.relevance)


def test_channels_and_torch_tensors():
    masks = stripes(2)
    heatmaps = torch.tensor(masks * 1.0, dtype=torch.float32)[:, None].repeat(1, 2, 1, 1)
    heatmaps[0, 1] = -heatmaps[0, 0]  # a negative channel must not cancel the positive one
    result = concept_recovery(heatmaps, torch.from_numpy(masks))
    assert result.score == pytest.approx(1.0)
    np.testing.assert_allclose(result.relevance, [[12.0, 0.0], [0.0, 24.0]])
    assert concept_recovery(heatmaps.to(torch.bfloat16), masks.astype(np.uint8)).score == 1.0


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    n_concepts=st.integers(1, 4),
    n_objects=st.integers(1, 4),
)
def test_score_bounds_and_permutation_invariance(data, n_concepts, n_objects):
    values = st.floats(-1.0, 4.0, allow_nan=False, width=32)
    heatmaps = data.draw(arrays(np.float64, (n_concepts, 3, 4), elements=values))
    masks = data.draw(arrays(np.bool_, (n_objects, 3, 4)))
    result = concept_recovery(heatmaps, masks)
    if result.n_objects == 0:
        assert np.isnan(result.score)
        return
    scored = result.n_objects
    assert result.ceiling == pytest.approx(min(1.0, n_concepts / scored))
    assert 0.0 <= result.score <= result.ceiling + 1e-12
    assert not result.normalized > 1 + 1e-9
    # The best matching is at least as good as the average matching.
    assert result.score >= 1.0 / max(n_concepts, scored) - 1e-12
    np.testing.assert_allclose(np.nansum(result.shares, axis=0)[list(_scored(result))], 1.0)
    concept_order = data.draw(st.permutations(range(n_concepts)))
    object_order = data.draw(st.permutations(range(n_objects)))
    permuted = concept_recovery(heatmaps[list(concept_order)], masks[list(object_order)])
    assert permuted.score == pytest.approx(result.score)
    assert concept_recovery(7.0 * heatmaps, masks).score == pytest.approx(result.score)


def _scored(result):
    return [j for j in range(result.shares.shape[1]) if j not in result.skipped_objects]


def test_summary_per_class_and_overall_with_chance():
    two, three = stripes(2), stripes(3)
    scores = [
        concept_recovery(two * 1.0, two),  # class a: 1.0, chance 1/2
        concept_recovery(np.stack([two[0] | two[1]] * 2) * 1.0, two),  # class a: 0.5
        concept_recovery(three * 1.0, three),  # class b: 1.0, chance 1/3
        concept_recovery(two[:1] * 1.0, two[:1]),  # class b: one object, excluded
        concept_recovery(np.zeros((2, 6, 4)), two),  # class b: nothing scored, excluded
    ]
    summary = summarize_recovery(scores, ["a", "a", "b", "b", "b"])
    assert list(summary.per_class) == ["a", "b"]
    a, b, overall = summary.per_class["a"], summary.per_class["b"], summary.overall
    assert (a.mean, a.sem, a.chance, a.n_clips) == pytest.approx((0.75, 0.25, 0.5, 2))
    assert (b.n_clips, b.n_excluded_clips, b.n_skipped_objects) == (1, 2, 2)
    assert b.mean == pytest.approx(1.0) and np.isnan(b.sem)
    assert overall.n_clips == 3 and overall.n_excluded_clips == 2
    assert overall.mean == pytest.approx(2.5 / 3)
    assert overall.chance == pytest.approx((0.5 + 0.5 + 1 / 3) / 3)
    only_overall = summarize_recovery(scores[:2])
    assert only_overall.per_class == {} and only_overall.overall.mean == pytest.approx(0.75)
    nothing = summarize_recovery(scores[3:], ["c", "c"]).per_class["c"]
    assert nothing.n_clips == 0 and np.isnan(nothing.mean) and nothing.n_excluded_clips == 2


@pytest.mark.parametrize(
    ("heatmaps", "masks", "message"),
    [
        (np.zeros((2, 6)), stripes(2), "heatmaps must be"),
        (np.zeros((2, 6, 4)), stripes(2)[0], "masks must be"),
        (np.zeros((2, 6, 5)), stripes(2), "different"),
        (np.zeros((0, 6, 4)), stripes(2), "K = 0"),
        (np.full((2, 6, 4), np.nan), stripes(2), "NaN/Inf"),
        (np.zeros((2, 6, 4), dtype=bool), stripes(2), "non-numeric"),
        (np.zeros((2, 6, 4)), stripes(2) * 0.5, "boolean or 0/1"),
    ],
)
def test_bad_recovery_input(heatmaps, masks, message):
    with pytest.raises(ValueError, match=message):
        concept_recovery(heatmaps, masks)


def test_summary_reports_mean_ceiling_and_normalised_score():
    four = stripes(4, height=8)
    two = stripes(2)
    scores = [
        # K = 2, J = 4, at the ceiling 0.5: normalised 1.
        concept_recovery(np.stack([four[0] | four[1], four[2] | four[3]]) * 1.0, four),
        # K = 2, J = 2, one concept holding everything: chance, normalised 0.
        concept_recovery(np.stack([two[0] | two[1], np.zeros_like(two[0])]) * 1.0, two),
    ]
    overall = summarize_recovery(scores).overall
    assert overall.ceiling == pytest.approx((0.5 + 1.0) / 2)
    assert overall.normalized_mean == pytest.approx(0.5)
    assert overall.normalized_sem == pytest.approx(0.5)
    single_concept = summarize_recovery([concept_recovery((two[0] | two[1])[None] * 1.0, two)])
    assert np.isnan(single_concept.overall.normalized_mean)
    assert single_concept.overall.ceiling == pytest.approx(0.5)


def test_bad_summary_input():
    score = concept_recovery(stripes(2) * 1.0, stripes(2))
    with pytest.raises(ValueError, match="at least one"):
        summarize_recovery([])
    with pytest.raises(ValueError, match="labels"):
        summarize_recovery([score], ["a", "b"])
    with pytest.raises(ValueError, match="RecoveryScore"):
        summarize_recovery([0.5])
