"""Concept selectivity: relative drops of every concept when one concept's patches go."""

import numpy as np
import pytest
import torch

from zennit_drsa.evaluation import concept_selectivity

# 4×4 inputs in 2×2 patches, numbered in raster order:  0 1
#                                                         2 3
PATCH = (torch.arange(16).reshape(4, 4) // 8) * 2 + (torch.arange(16).reshape(4, 4) % 4) // 2


def patch_map(values) -> torch.Tensor:
    """A ``(1, 4, 4)`` map holding ``values[p]`` on every pixel of patch p."""
    return torch.as_tensor(values, dtype=torch.float64)[PATCH].reshape(1, 4, 4)


class LinearRelevance:
    """R_k(x) = Σ weight_k ⊙ x: linear "layer relevances", one row per concept."""

    def __init__(self, weights: torch.Tensor) -> None:
        self.weights = weights  # (K, 1, 4, 4)
        self.calls: list[tuple[int, torch.Tensor | None]] = []

    def __call__(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        self.calls.append((x.shape[0], targets))
        return torch.einsum("nchw,kchw->nk", x, self.weights)


def disjoint_problem():
    """Concept 0 reads patches 0 and 1 (weights 3, 1), concept 1 patches 2 and 3 (2, 2)."""
    weights = torch.stack([patch_map([3, 1, 0, 0]), patch_map([0, 0, 2, 2])])
    inputs = torch.ones(1, 1, 4, 4, dtype=torch.float64)
    # The exact heatmaps: each concept's contributions w ⊙ x.
    heatmaps = (weights * inputs)[None]
    return LinearRelevance(weights), inputs, heatmaps


def test_disjoint_concepts_give_an_exactly_diagonal_matrix():
    relevance, inputs, heatmaps = disjoint_problem()
    result = concept_selectivity(
        relevance, inputs, heatmaps, removal=0.0, fraction=0.25, patch_size=2
    )
    # R_0 = 4·(3 + 1) = 16, its top patch 0 holds 12; R_1 = 16, its top patch 2 (tied
    # with 3, raster order) holds 8. Removing them touches no other concept.
    np.testing.assert_allclose(result.baseline, [[16.0, 16.0]])
    np.testing.assert_allclose(result.perturbed, [[[4.0, 16.0], [16.0, 8.0]]])
    np.testing.assert_allclose(result.drops, [[[0.75, 0.0], [0.0, 0.5]]])
    np.testing.assert_allclose(result.selectivity, [(0.75 + 0.5) / 2])
    np.testing.assert_array_equal(result.n_removed, [[1, 1]])
    np.testing.assert_allclose(result.fractions, [[0.25, 0.25]])
    assert result.valid.all() and result.n_excluded == 0


def test_a_concept_pointing_at_another_concepts_evidence_is_not_selective():
    relevance, inputs, heatmaps = disjoint_problem()
    heatmaps[:, 1] = heatmaps[:, 0]  # concept 1's map points at concept 0's patches
    result = concept_selectivity(
        relevance, inputs, heatmaps, removal=0.0, fraction=0.25, patch_size=2
    )
    np.testing.assert_allclose(result.drops, [[[0.75, 0.0], [0.75, 0.0]]])
    # Own minus other: concept 0 gives 0.75 − 0, concept 1 gives 0 − 0.75.
    np.testing.assert_allclose(result.selectivity, [0.0])


def test_removal_value_and_area_fraction():
    relevance, inputs, heatmaps = disjoint_problem()
    # Half the area removes both patches of each concept; written value 0.5 keeps half of
    # each removed contribution.
    result = concept_selectivity(
        relevance, inputs, heatmaps, removal=0.5, fraction=0.5, patch_size=2
    )
    np.testing.assert_array_equal(result.n_removed, [[2, 2]])
    np.testing.assert_allclose(result.drops, [[[0.5, 0.0], [0.0, 0.5]]])
    # 0.3 of 16 pixels needs two 4-pixel patches; the whole area removes all four.
    more = concept_selectivity(relevance, inputs, heatmaps, removal=0.0, fraction=0.3, patch_size=2)
    np.testing.assert_array_equal(more.n_removed, [[2, 2]])
    everything = concept_selectivity(
        relevance, inputs, heatmaps, removal=0.0, fraction=1.0, patch_size=2
    )
    np.testing.assert_allclose(everything.drops, np.ones((1, 2, 2)))
    np.testing.assert_allclose(everything.selectivity, [0.0])


def test_area_fraction_counts_true_edge_patch_areas():
    # 5×7 in 2×3 patches: the 1×1 corner patch is most relevant, then a full 2×3 patch.
    weights = torch.ones(2, 1, 5, 7, dtype=torch.float64)
    heatmaps = torch.zeros(1, 2, 1, 5, 7, dtype=torch.float64)
    heatmaps[0, :, 0, 4, 6] = 9.0
    heatmaps[0, :, 0, 0:2, 0:3] = 1.0
    inputs = torch.ones(1, 1, 5, 7, dtype=torch.float64)
    result = concept_selectivity(
        LinearRelevance(weights), inputs, heatmaps, removal=0.0, fraction=7 / 35, patch_size=(2, 3)
    )
    np.testing.assert_array_equal(result.n_removed, [[2, 2]])
    np.testing.assert_allclose(result.fractions, [[7 / 35, 7 / 35]])
    np.testing.assert_allclose(result.drops, np.full((1, 2, 2), 7 / 35))


def test_negative_relevance_drops_are_signed_by_the_magnitude():
    # Concept 1 reads patches 2, 3 with negative weights: R_1 = -16. Removing patch 2
    # (contribution -8) leaves -8: the relevance rose, a drop of -0.5.
    weights = torch.stack([patch_map([3, 1, 0, 0]), patch_map([0, 0, -2, -2])])
    inputs = torch.ones(1, 1, 4, 4, dtype=torch.float64)
    heatmaps = torch.stack([patch_map([3, 1, 0, 0]), patch_map([0, 0, 2, 2])])[None]
    result = concept_selectivity(
        LinearRelevance(weights), inputs, heatmaps, removal=0.0, fraction=0.25, patch_size=2
    )
    np.testing.assert_allclose(result.baseline, [[16.0, -16.0]])
    np.testing.assert_allclose(result.drops, [[[0.75, 0.0], [0.0, -0.5]]])


def test_zero_relevance_makes_an_input_invalid_and_summaries_skip_it():
    relevance, inputs, heatmaps = disjoint_problem()
    inputs = torch.cat([inputs, inputs.clone()])
    inputs[1, 0, 2:, :] = 0.0  # concept 1 reads nothing in the second input: R_1 = 0
    heatmaps = heatmaps.repeat(2, 1, 1, 1, 1)
    result = concept_selectivity(
        relevance, inputs, heatmaps, removal=0.0, fraction=0.25, patch_size=2
    )
    np.testing.assert_array_equal(result.valid, [True, False])
    assert np.isnan(result.selectivity[1]) and result.n_excluded == 1
    mean, sem = result.mean_selectivity()
    assert mean == pytest.approx(0.625) and np.isnan(sem)
    matrix, _ = result.mean_drops()
    np.testing.assert_allclose(matrix, [[0.75, 0.0], [0.0, 0.5]])


def test_batches_and_targets_reach_the_relevance_function():
    relevance, inputs, heatmaps = disjoint_problem()
    inputs, heatmaps = inputs.repeat(3, 1, 1, 1), heatmaps.repeat(3, 1, 1, 1, 1)
    result = concept_selectivity(
        relevance,
        inputs,
        heatmaps,
        removal=0.0,
        fraction=0.25,
        patch_size=2,
        targets=[4, 5, 6],
        batch_size=4,
    )
    # 3 inputs × (1 unperturbed + 2 concepts) = 9 rows in batches of 4, 4, 1.
    assert [n for n, _ in relevance.calls] == [4, 4, 1]
    seen = torch.cat([t for _, t in relevance.calls]).tolist()
    assert seen == [4, 4, 4, 5, 5, 5, 6, 6, 6]
    np.testing.assert_allclose(result.selectivity, [0.625] * 3)
    untargeted = LinearRelevance(relevance.weights)
    concept_selectivity(untargeted, inputs, heatmaps, removal=0.0, fraction=0.25, patch_size=2)
    assert all(t is None for _, t in untargeted.calls)


def test_gradients_stay_enabled_for_the_relevance_function():
    relevance, inputs, heatmaps = disjoint_problem()
    modes = []

    def record(x):
        modes.append(torch.is_grad_enabled())
        return relevance(x)

    concept_selectivity(record, inputs, heatmaps, removal=0.0, patch_size=2)
    assert modes and all(modes)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"heatmaps": torch.zeros(1, 1, 4, 4)}, "K >= 2"),
        ({"fraction": 0.0}, r"\(0, 1\]"),
        ({"fraction": 1.5}, r"\(0, 1\]"),
        ({"fraction": True}, "fraction must be a number"),
        ({"patch_size": 0}, "patch_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"removal": "floor"}, "removal must be"),
        ({"targets": [0, 1]}, r"targets must be \(B,\)"),
        ({"relevance_fn": lambda x: torch.zeros(x.shape[0], 3)}, r"\(3, 2\) for this batch"),
        ({"relevance_fn": lambda x: torch.full((x.shape[0], 2), float("nan"))}, "NaN/Inf"),
        ({"inputs": torch.zeros(1, 4, 4)}, "inputs must be"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_error(override, message):
    relevance, inputs, heatmaps = disjoint_problem()
    call = {"relevance_fn": relevance, "inputs": inputs, "heatmaps": heatmaps, **override}
    with pytest.raises(ValueError, match=message):
        concept_selectivity(
            call.pop("relevance_fn"),
            call.pop("inputs"),
            call.pop("heatmaps"),
            **{"removal": 0.0, "patch_size": 2, **call},
        )
