"""Interventional concept recovery: drops of layer relevance when objects are removed."""

import numpy as np
import pytest
import torch

from zennit_drsa.evaluation import (
    InterventionalRecoveryScore,
    concept_recovery,
    interventional_recovery,
    summarize_recovery,
)


def test_each_object_moving_only_its_own_concept_scores_one():
    drops = np.diag([0.2, 5.0, 1.0])
    result = interventional_recovery(drops)
    assert isinstance(result, InterventionalRecoveryScore)
    assert result.score == pytest.approx(1.0) and result.normalized == pytest.approx(1.0)
    assert result.chance == pytest.approx(1 / 3) and result.ceiling == pytest.approx(1.0)
    assert result.pairs == ((0, 0), (1, 1), (2, 2))
    np.testing.assert_allclose(result.shares, np.eye(3))
    assert result.eligible and result.skipped_objects == ()


def test_surplus_concepts_that_nothing_moves_keep_the_score_at_one():
    drops = np.zeros((4, 2))
    drops[3, 0], drops[1, 1] = 2.0, 0.5
    result = interventional_recovery(drops)
    assert result.score == pytest.approx(1.0) and result.pairs == ((1, 1), (3, 0))


def test_one_concept_taking_everything_scores_one_over_j():
    drops = np.zeros((3, 4))
    drops[1] = [1.0, 2.0, 0.5, 7.0]
    result = interventional_recovery(drops)
    assert result.score == pytest.approx(1 / 4) == pytest.approx(result.chance)
    assert result.normalized == pytest.approx(0.0)


def test_sign_noise_is_held_by_the_absolute_normalisation():
    # Removing object 0 drops concept 0 by 1 and raises concept 1 by 0.5. Normalised by the
    # signed sum (0.5) the share would be 2; by the absolute sum (1.5) it is 2/3.
    drops = np.array([[1.0, 0.0], [-0.5, 2.0]])
    result = interventional_recovery(drops)
    np.testing.assert_allclose(result.shares, [[2 / 3, 0.0], [-1 / 3, 1.0]])
    np.testing.assert_allclose(np.abs(result.shares).sum(axis=0), 1.0)
    assert result.score == pytest.approx((2 / 3 + 1.0) / 2)


def test_concepts_whose_relevance_rises_get_negative_shares_and_are_avoided():
    drops = np.array([[-1.0, 3.0], [1.0, -1.0]])
    result = interventional_recovery(drops)
    assert result.pairs == ((0, 1), (1, 0))
    assert result.score == pytest.approx((0.75 + 0.5) / 2)


def test_more_objects_than_concepts_is_capped_by_the_ceiling():
    # K = 2, J = 4: concept 0 carries objects 0 and 1, concept 1 objects 2 and 3.
    drops = np.array([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    result = interventional_recovery(drops)
    assert result.score == pytest.approx(0.5) == pytest.approx(result.ceiling)
    assert result.normalized == pytest.approx(1.0) and result.chance == pytest.approx(0.25)


def test_objects_that_move_nothing_are_skipped_and_one_object_is_not_eligible():
    drops = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    result = interventional_recovery(drops)
    assert result.skipped_objects == (1,) and result.n_objects == 2 and result.eligible
    assert np.isnan(result.shares[:, 1]).all() and result.score == pytest.approx(1.0)
    single = interventional_recovery(np.array([[1.0, 0.0], [3.0, 0.0]]))
    assert not single.eligible and single.score == pytest.approx(0.75)
    nothing = interventional_recovery(np.zeros((2, 0)))
    assert not nothing.eligible and np.isnan(nothing.score)


def test_non_negative_drops_match_exactly_as_heatmap_recovery_does():
    rng = np.random.default_rng(3)
    values = rng.random((3, 4))
    # Heatmaps that put values[k, j] spread uniformly over object j's band of 2 rows.
    masks = np.stack([np.repeat((np.arange(8) // 2 == j)[:, None], 3, axis=1) for j in range(4)])
    heatmaps = np.einsum("kj,jhw->khw", values / masks.sum(axis=(1, 2)), masks.astype(float))
    heatmap = concept_recovery(heatmaps, masks)
    intervention = interventional_recovery(values)
    assert intervention.score == pytest.approx(heatmap.score)
    assert intervention.pairs == heatmap.pairs
    np.testing.assert_allclose(intervention.shares, heatmap.shares)


def test_logit_drops_are_kept_and_summaries_take_interventional_scores():
    result = interventional_recovery(torch.eye(2), logit_drops=torch.tensor([3.0, -1.0]))
    np.testing.assert_allclose(result.logit_drops, [3.0, -1.0])
    assert interventional_recovery(np.eye(2)).logit_drops is None
    everything = interventional_recovery(np.array([[1.0, 1.0], [0.0, 0.0]]))
    summary = summarize_recovery([result, everything], labels=["a", "a"])
    group = summary.per_class["a"]
    assert group.mean == pytest.approx(0.75) and group.chance == pytest.approx(0.5)
    assert group.normalized_mean == pytest.approx(0.5) and group.n_clips == 2


@pytest.mark.parametrize(
    ("drops", "logit_drops", "message"),
    [
        (np.zeros(3), None, r"\(K, J\)"),
        (np.zeros((0, 2)), None, "K = 0"),
        (np.array([["a", "b"]]), None, "numbers"),
        (np.array([[np.nan, 1.0]]), None, "NaN/Inf"),
        (np.eye(2), np.zeros(3), "one per object"),
        (np.eye(2), np.array([np.inf, 0.0]), "NaN/Inf"),
    ],
)
def test_bad_input_is_rejected(drops, logit_drops, message):
    with pytest.raises(ValueError, match=message):
        interventional_recovery(drops, logit_drops)
