"""Patch flipping (standard and disentangled), its summaries and the mean ± s.e.m. helper."""

import importlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from zennit_drsa.evaluation import (
    aupc_table,
    format_aupc_table,
    mean_sem,
    patch_flipping,
)

# The value written into removed patches: a log-mel floor (the log-mel of silence).
FLOOR = -4.0


def flip(*args, **kwargs):
    """:func:`patch_flipping` removing with ``FLOOR`` unless the test gives a removal."""
    return patch_flipping(*args, **{"removal": FLOOR, **kwargs})


class LinearScore(nn.Module):
    """logit_c = Σ w_c ⊙ x + b_c: removing a patch changes a logit by its exact relevance."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nchw,kchw->nk", x, self.weight) + self.bias


def mean_logit(x: torch.Tensor) -> torch.Tensor:
    """A one-class model whose logit is the input mean: shows what was written in."""
    return x.mean(dim=(1, 2, 3))[:, None]


def linear_problem(n_inputs=4, size=12, n_classes=3, bias=30.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(n_classes, 1, size, size, generator=generator, dtype=torch.float64)
    inputs = torch.randn(n_inputs, 1, size, size, generator=generator, dtype=torch.float64)
    model = LinearScore(weight, torch.full((n_classes,), bias, dtype=torch.float64)).eval()
    targets = torch.arange(n_inputs) % n_classes
    exact = weight[targets] * (inputs - FLOOR)
    return model, inputs, targets, exact


def test_exact_heatmap_beats_random_and_reversed():
    model, inputs, targets, exact = linear_problem()
    random = torch.randn(exact.shape, generator=torch.Generator().manual_seed(1), dtype=exact.dtype)
    results = {
        name: flip(model, inputs, heatmap, targets, patch_size=3)
        for name, heatmap in (("exact", exact), ("random", random), ("reversed", -exact))
    }
    assert results["exact"].valid.all()
    assert (results["exact"].aupc < results["random"].aupc).all()
    assert (results["exact"].aupc < results["reversed"].aupc).all()
    # Greedy removal of the exact contributions is the lowest curve at every step.
    for best, other in zip(results["exact"].curves, results["random"].curves, strict=True):
        np.testing.assert_array_equal(best.fractions, other.fractions)
        assert (best.scores <= other.scores + 1e-9).all()


def patch_model_4x4():
    """4×4 input of ones, 2×2 patches weighted 2^p: the score identifies the removed set."""
    patch = torch.arange(16).reshape(4, 4)
    patch = (patch // 4 // 2) * 2 + (patch % 4) // 2
    weight = (2.0**patch).to(torch.float64).reshape(1, 1, 4, 4)
    model = LinearScore(weight, torch.zeros(1, dtype=torch.float64)).eval()

    def score(removed: set[int]) -> float:
        # 4 pixels per patch; kept pixels are 1, removed ones FLOOR.
        return sum(4 * 2.0**p * (FLOOR if p in removed else 1.0) for p in range(4))

    def concept(patch_relevance: list[float]) -> torch.Tensor:
        values = torch.tensor(patch_relevance, dtype=torch.float64)[patch]
        return values.reshape(1, 4, 4)

    # Concept A ranks patches 0 > 1 > 2 > 3, concept B ranks 0 > 2 > 1 > 3.
    heatmaps = torch.stack([concept([4, 3, 2, 1]), concept([4, 2, 3, 1])])[None]
    return model, torch.ones(1, 1, 4, 4, dtype=torch.float64), heatmaps, score


@pytest.mark.parametrize(
    ("ordering", "patches_per_step", "removed_sets"),
    [
        # Union, round 1: A takes 0, B's 0 is gone. Round 2: A takes 1, B takes 2.
        # Round 3: both rankings hit removed patches (no evaluation). Round 4: 3.
        ("union", 1, [set(), {0}, {0, 1, 2}, {0, 1, 2, 3}]),
        ("union", 2, [set(), {0, 1, 2}, {0, 1, 2, 3}]),
        # Round robin: A takes 0, B takes its best remaining, 2; then A 1, B 3.
        ("round_robin", 1, [set(), {0, 2}, {0, 1, 2, 3}]),
        ("round_robin", 2, [set(), {0, 1, 2, 3}]),
    ],
)
def test_disentangled_orderings_by_hand(ordering, patches_per_step, removed_sets):
    model, inputs, heatmaps, score = patch_model_4x4()
    result = flip(
        model,
        inputs,
        heatmaps,
        [0],
        patch_size=2,
        ordering=ordering,
        patches_per_step=patches_per_step,
        n_points=5,
    )
    (curve,) = result.curves
    np.testing.assert_array_equal(curve.n_removed, [len(s) for s in removed_sets])
    np.testing.assert_allclose(curve.fractions, [len(s) / 4 for s in removed_sets])
    np.testing.assert_allclose(curve.scores, [score(s) for s in removed_sets])


def test_positive_sum_ranks_by_clipped_relevance_summed_over_concepts():
    model, inputs, _, score = patch_model_4x4()
    patch = torch.arange(16).reshape(4, 4)
    patch = (patch // 4 // 2) * 2 + (patch % 4) // 2

    def concept(patch_relevance):
        return torch.tensor(patch_relevance, dtype=torch.float64)[patch].reshape(1, 4, 4)

    # Σ_k max(0, R_kp) = [5, 4, 5.5, 1]: order 2, 0, 1, 3. The plain sum [-1, -6, 5.5, 1]
    # would remove 3 second: a concept's negative relevance must not hide a patch.
    heatmaps = torch.stack([concept([5, -10, 2, 0]), concept([-6, 4, 3.5, 1])])[None]
    removed_sets = [set(), {2}, {0, 2}, {0, 1, 2}, {0, 1, 2, 3}]
    result = flip(model, inputs, heatmaps, [0], patch_size=2, ordering="positive_sum")
    (curve,) = result.curves
    np.testing.assert_array_equal(curve.n_removed, [0, 1, 2, 3, 4])
    np.testing.assert_allclose(curve.scores, [score(s) for s in removed_sets])
    # A step is patches_per_step patches of the one ranking.
    two = flip(
        model, inputs, heatmaps, [0], patch_size=2, ordering="positive_sum", patches_per_step=2
    )
    np.testing.assert_allclose(two.curves[0].scores, [score(s) for s in removed_sets[::2]])


def test_positive_sum_of_one_non_negative_map_is_standard_patch_flipping():
    model, inputs, targets, exact = linear_problem(n_inputs=3, size=10)
    standard = flip(model, inputs, exact.abs(), targets, patch_size=(3, 4))
    single = flip(
        model, inputs, exact.abs()[:, None], targets, patch_size=(3, 4), ordering="positive_sum"
    )
    np.testing.assert_array_equal(single.aupc, standard.aupc)


@pytest.mark.parametrize(
    ("heatmap_index", "ordering", "inserted_sets"),
    [
        # One concept ranking 0 > 1 > 2 > 3: inserted most relevant first.
        (slice(0, 1), "union", [set(), {0}, {0, 1}, {0, 1, 2}, {0, 1, 2, 3}]),
        # The union sequence of both concepts (0; 1, 2; -; 3), inserted in the same steps.
        (slice(0, 2), "union", [set(), {0}, {0, 1, 2}, {0, 1, 2, 3}]),
        (slice(0, 2), "round_robin", [set(), {0, 2}, {0, 1, 2, 3}]),
    ],
)
def test_insertion_puts_the_removal_sequence_back_into_a_removed_input(
    heatmap_index, ordering, inserted_sets
):
    model, inputs, heatmaps, score = patch_model_4x4()
    result = flip(
        model,
        inputs,
        heatmaps[:, heatmap_index],
        [0],
        patch_size=2,
        ordering=ordering,
        direction="insertion",
    )
    (curve,) = result.curves
    everything = {0, 1, 2, 3}
    np.testing.assert_array_equal(curve.n_removed, [len(s) for s in inserted_sets])
    np.testing.assert_allclose(curve.fractions, [len(s) / 4 for s in inserted_sets])
    np.testing.assert_allclose(curve.scores, [score(everything - s) for s in inserted_sets])
    assert result.direction == "insertion" and result.higher_is_better
    # f(x_0) is the unperturbed input, the curve's end: 60 as for deletion.
    np.testing.assert_allclose(result.initial_scores, [60.0])


def test_insertion_aupc_by_hand():
    model, inputs, heatmaps, score = patch_model_4x4()
    result = flip(model, inputs, heatmaps[:, :1], [0], patch_size=2, direction="insertion")
    # Scores with 0..4 patches inserted (the rest at the floor): -240, -220, -180, -100, 60.
    assert [score(s) for s in ({0, 1, 2, 3}, {1, 2, 3}, {2, 3}, {3}, set())] == [
        -240,
        -220,
        -180,
        -100,
        60,
    ]
    area = 0.25 * ((-240 - 220) + (-220 - 180) + (-180 - 100) + (-100 + 60)) / 2
    np.testing.assert_allclose(result.aupc_unnormalized, [area])
    np.testing.assert_allclose(result.aupc, [area / 60])


def test_insertion_is_the_least_relevant_first_deletion_curve_mirrored():
    model, inputs, targets, _ = linear_problem(n_inputs=3, size=9)
    heatmaps = torch.randn(3, 1, 9, 9, generator=torch.Generator().manual_seed(5))
    insertion = flip(model, inputs, heatmaps, targets, patch_size=2, direction="insertion")
    # Deleting by the negated map removes the least relevant patches first.
    lerf = flip(model, inputs, -heatmaps, targets, patch_size=2)
    for inserted, deleted in zip(insertion.curves, lerf.curves, strict=True):
        np.testing.assert_allclose(inserted.scores, deleted.scores[::-1], rtol=1e-12)
        np.testing.assert_allclose(inserted.fractions, 1 - deleted.fractions[::-1], atol=1e-15)
    np.testing.assert_allclose(insertion.aupc, lerf.aupc, rtol=1e-12)


def test_insertion_of_exact_contributions_is_the_highest_curve():
    model, inputs, targets, exact = linear_problem()
    random = torch.randn(exact.shape, generator=torch.Generator().manual_seed(1), dtype=exact.dtype)
    best, other = (
        flip(model, inputs, heatmap, targets, patch_size=3, direction="insertion")
        for heatmap in (exact, random)
    )
    assert best.higher_is_better and (best.aupc > other.aupc).all()
    for a, b in zip(best.curves, other.curves, strict=True):
        assert (a.scores >= b.scores - 1e-9).all()
    deletion = flip(model, inputs, exact, targets, patch_size=3)
    assert deletion.direction == "deletion" and not deletion.higher_is_better
    np.testing.assert_array_equal(best.initial_scores, deletion.initial_scores)


def test_aupc_trapezoid_normalisation_and_grid_by_hand():
    model, inputs, heatmaps, score = patch_model_4x4()
    result = flip(model, inputs, heatmaps, [0], patch_size=2, n_points=5)
    # Union curve: fractions 0, .25, .75, 1 with scores 60, 40, -80, -240.
    assert [score(s) for s in (set(), {0}, {0, 1, 2}, {0, 1, 2, 3})] == [60, 40, -80, -240]
    area = 0.25 * (60 + 40) / 2 + 0.5 * (40 - 80) / 2 + 0.25 * (-80 - 240) / 2
    np.testing.assert_allclose(result.aupc_unnormalized, [area])
    np.testing.assert_allclose(result.aupc, [area / 60])
    np.testing.assert_allclose(result.initial_scores, [60])
    np.testing.assert_allclose(result.fractions, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(result.scores, [[60, 40, -20, -80, -240]])
    np.testing.assert_allclose(result.normalized, result.scores / 60)


@pytest.mark.parametrize("direction", ["deletion", "insertion"])
@pytest.mark.parametrize("ordering", ["union", "round_robin"])
@pytest.mark.parametrize("steps", [{}, {"patches_per_step": 3}, {"n_steps": 5}])
def test_single_concept_stack_is_standard_patch_flipping(ordering, steps, direction):
    model, inputs, targets, exact = linear_problem(n_inputs=3, size=10)
    standard = flip(model, inputs, exact, targets, patch_size=(3, 4), direction=direction, **steps)
    stacked = flip(
        model,
        inputs,
        exact[:, None],
        targets,
        patch_size=(3, 4),
        ordering=ordering,
        direction=direction,
        **steps,
    )
    for name in ("fractions", "scores", "normalized", "aupc", "initial_scores", "valid"):
        np.testing.assert_array_equal(getattr(stacked, name), getattr(standard, name))
    for a, b in zip(stacked.curves, standard.curves, strict=True):
        np.testing.assert_array_equal(a.n_removed, b.n_removed)
        np.testing.assert_array_equal(a.scores, b.scores)


def test_non_divisible_shapes_use_true_patch_areas():
    # 5×7 with 2×3 patches: patch heights 2, 2, 1 and widths 3, 3, 1 (9 patches, area 35).
    heatmap = torch.zeros(1, 1, 5, 7)
    heatmap[0, 0, 0:2, 3:6] = 1.0  # a full 2×3 patch, relevance 6
    heatmap[0, 0, 4, 6] = 5.0  # the 1×1 corner patch, relevance 5
    heatmap[0, 0, 4, 0:3] = 0.5  # a 1×3 bottom patch, relevance 1.5
    result = flip(mean_logit, torch.zeros(1, 1, 5, 7), heatmap, [0], patch_size=(2, 3))
    (curve,) = result.curves
    assert curve.n_removed.tolist() == list(range(10))
    np.testing.assert_allclose(curve.fractions[:4], np.array([0, 6, 7, 10]) / 35)
    assert curve.fractions[-1] == 1.0
    assert (np.diff(curve.fractions) > 0).all()
    # Removed pixels are exactly the cumulated areas: the mean logit counts them.
    np.testing.assert_allclose(curve.scores, FLOOR * curve.fractions, atol=1e-6)


def test_patch_larger_than_input_is_one_patch():
    result = flip(mean_logit, torch.zeros(2, 1, 5, 7), torch.ones(2, 1, 5, 7), [0, 0])
    for curve in result.curves:
        np.testing.assert_array_equal(curve.fractions, [0.0, 1.0])


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"removal": 0.0}, 0.0),
        ({"removal": -2}, -2.0),
        ({"removal": "mean", "mean_image": torch.full((1, 4, 4), 3.0)}, 3.0),
        ({"removal": torch.full((4,), -1.5)}, -1.5),
    ],
)
def test_removal_value_is_written_into_removed_patches(kwargs, expected):
    inputs = torch.full((2, 1, 4, 4), 7.0)
    result = flip(mean_logit, inputs, torch.rand(2, 1, 4, 4), [0, 0], patch_size=2, **kwargs)
    for curve in result.curves:
        assert curve.scores[0] == pytest.approx(7.0)
        assert curve.scores[-1] == pytest.approx(expected)
        # In between, the mean mixes kept 7s and written values by removed area.
        np.testing.assert_allclose(
            curve.scores, 7.0 + (expected - 7.0) * curve.fractions, rtol=1e-6
        )


def test_omitted_removal_is_deprecated_and_still_writes_the_old_floor_not_zero():
    with pytest.warns(DeprecationWarning, match=r"without removal=.*LogMel\.floor"):
        result = patch_flipping(mean_logit, torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2), [0])
    assert result.curves[0].scores[-1] == pytest.approx(-4.0)


@pytest.mark.parametrize(
    "module", ["zennit_drsa.evaluation", "zennit_drsa.evaluation.patch_flipping"]
)
def test_log_mel_floor_is_a_deprecated_alias_of_the_reference_front_ends_floor(module):
    from audio_cnn import LogMel

    with pytest.warns(DeprecationWarning, match=r"LOG_MEL_FLOOR is deprecated.*LogMel\.floor"):
        value = importlib.import_module(module).LOG_MEL_FLOOR
    assert value == LogMel().floor == -4.0


def test_per_input_removal_images():
    inputs = torch.ones(2, 1, 4, 4)
    fill = torch.stack([torch.full((1, 4, 4), -1.0), torch.full((1, 4, 4), -3.0)])
    result = flip(mean_logit, inputs, torch.rand(2, 1, 4, 4), [0, 0], removal=fill)
    assert [c.scores[-1] for c in result.curves] == pytest.approx([-1.0, -3.0])


def test_inputs_with_non_positive_initial_score_are_excluded_and_counted():
    model, inputs, targets, exact = linear_problem(n_inputs=3, bias=0.0)
    with torch.no_grad():
        model.bias.copy_(torch.tensor([50.0, -500.0, 50.0], dtype=torch.float64))
    result = flip(model, inputs, exact, targets, patch_size=4)
    np.testing.assert_array_equal(result.valid, [True, False, True])
    assert result.n_excluded == 1
    assert np.isnan(result.aupc[1]) and np.isnan(result.normalized[1]).all()
    assert np.isfinite(result.aupc_unnormalized).all()
    # f(x_0) is the logit itself, Σ w ⊙ x + b, and divides the whole curve.
    initial = model(inputs)[[0, 1, 2], targets].detach().numpy()
    np.testing.assert_allclose(result.initial_scores, initial)
    np.testing.assert_allclose(
        result.aupc[[0, 2]], result.aupc_unnormalized[[0, 2]] / initial[[0, 2]]
    )
    np.testing.assert_allclose(
        result.normalized[[0, 2]], result.scores[[0, 2]] / initial[[0, 2], None]
    )
    mean, sem = result.mean_aupc()
    assert mean == pytest.approx(result.aupc[[0, 2]].mean())
    assert sem == pytest.approx(result.aupc[[0, 2]].std(ddof=1) / np.sqrt(2))
    curve_mean, _ = result.mean_curve()
    np.testing.assert_allclose(curve_mean, result.normalized[[0, 2]].mean(axis=0))


def test_relu_logit_clips_the_curve_at_zero():
    model, inputs, targets, exact = linear_problem(n_inputs=3, bias=2.0)
    logit = flip(model, inputs, exact, targets, patch_size=4)
    relu = flip(model, inputs, exact, targets, patch_size=4, score="relu_logit")
    assert any((c.scores < 0).any() for c in logit.curves)
    for a, b in zip(logit.curves, relu.curves, strict=True):
        np.testing.assert_array_equal(b.scores, np.maximum(a.scores, 0.0))
    assert (relu.aupc[relu.valid] >= 0).all()


@pytest.mark.parametrize(
    ("ordering", "direction"),
    [("union", "deletion"), ("round_robin", "deletion"), ("positive_sum", "insertion")],
)
def test_batching_does_not_change_results(ordering, direction):
    model, inputs, targets, exact = linear_problem(n_inputs=3, size=8)
    heatmaps = torch.stack([exact, -exact, exact.flip(-1)], dim=1)
    runs = [
        flip(
            model,
            inputs,
            heatmaps,
            targets,
            patch_size=2,
            ordering=ordering,
            direction=direction,
            batch_size=size,
        )
        for size in (1, 7, 10_000)
    ]
    # Same jobs in any batching; only the model's own float rounding may vary with N.
    for other in runs[1:]:
        for a, b in zip(other.curves, runs[0].curves, strict=True):
            np.testing.assert_array_equal(a.n_removed, b.n_removed)
            np.testing.assert_allclose(a.scores, b.scores, rtol=1e-12)
        np.testing.assert_allclose(other.aupc, runs[0].aupc, rtol=1e-12)


def test_model_runs_without_gradients_on_its_device():
    model, inputs, targets, exact = linear_problem(n_inputs=2)
    seen = []
    model.register_forward_hook(lambda m, i, o: seen.append((torch.is_grad_enabled(), i[0].device)))
    flip(model, inputs, exact, targets, patch_size=6)
    assert seen and all(not grad and device == model.weight.device for grad, device in seen)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    model, inputs, targets, exact = linear_problem(n_inputs=3)
    cpu = flip(model, inputs, exact, targets, patch_size=3, ordering="round_robin")
    gpu = flip(model.cuda(), inputs, exact, targets, patch_size=3, ordering="round_robin")
    np.testing.assert_allclose(gpu.aupc, cpu.aupc, rtol=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    patch=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    n_concepts=st.integers(1, 4),
    ordering=st.sampled_from(["union", "round_robin", "positive_sum"]),
    direction=st.sampled_from(["deletion", "insertion"]),
    per_step=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_schedule_properties(height, width, patch, n_concepts, ordering, direction, per_step, seed):
    generator = torch.Generator().manual_seed(seed)
    heatmaps = torch.randn(1, n_concepts, 1, height, width, generator=generator)
    result = flip(
        mean_logit,
        torch.zeros(1, 1, height, width),
        heatmaps,
        [0],
        patch_size=patch,
        ordering=ordering,
        direction=direction,
        patches_per_step=per_step,
    )
    (curve,) = result.curves
    n_patches = -(-height // patch[0]) * -(-width // patch[1])
    steps = np.diff(curve.n_removed)
    assert curve.n_removed[0] == 0 and curve.n_removed[-1] == n_patches
    assert (steps >= 1).all() and (steps <= n_concepts * per_step).all()
    if ordering == "round_robin":
        assert (steps[:-1] == n_concepts * per_step).all()
    if ordering == "positive_sum":
        assert (steps[:-1] == per_step).all()
    assert curve.fractions[0] == 0 and curve.fractions[-1] == pytest.approx(1.0)
    assert (np.diff(curve.fractions) > 0).all()
    # Every removed pixel is accounted for: the mean logit is the floor times the removed
    # fraction (for insertion, the fraction not yet inserted).
    removed = curve.fractions if direction == "deletion" else 1 - curve.fractions
    np.testing.assert_allclose(curve.scores, FLOOR * removed, atol=1e-6)


BAD_CALLS = [
    ({"inputs": torch.zeros(1, 4, 4)}, "inputs must be"),
    ({"inputs": torch.zeros(0, 1, 4, 4), "heatmaps": torch.zeros(0, 1, 4, 4)}, "empty"),
    ({"inputs": torch.zeros(1, 1, 4, 4, dtype=torch.int64)}, "floating point"),
    ({"inputs": torch.full((1, 1, 4, 4), float("nan"))}, "NaN/Inf"),
    ({"heatmaps": torch.zeros(1, 1, 4, 5)}, "do not match"),
    ({"heatmaps": torch.zeros(2, 1, 4, 4)}, "heatmaps must be"),
    ({"heatmaps": torch.zeros(1, 0, 1, 4, 4)}, "K = 0"),
    ({"heatmaps": torch.full((1, 1, 4, 4), float("inf"))}, "heatmaps contain NaN/Inf"),
    ({"heatmaps": torch.zeros(1, 1, 4, 4, dtype=torch.int32)}, "floating point"),
    ({"targets": [0, 1]}, r"targets must be \(B,\)"),
    ({"targets": [-1]}, ">= 0"),
    ({"targets": [0.5]}, "integer"),
    ({"targets": [3]}, "out of range"),
    ({"patch_size": 0}, "patch_size"),
    ({"patch_size": (2, 2, 2)}, "patch_size"),
    ({"ordering": "zigzag"}, "ordering"),
    ({"direction": "backwards"}, "direction"),
    ({"score": "softmax"}, "score"),
    ({"patches_per_step": 2, "n_steps": 3}, "not both"),
    ({"n_steps": 0}, "n_steps"),
    ({"n_points": 1}, "n_points"),
    ({"batch_size": 0}, "batch_size"),
    ({"removal": "floor"}, "removal must be"),
    ({"removal": "mean"}, "mean_image"),
    ({"mean_image": torch.zeros(1, 4, 4)}, "only used"),
    ({"removal": float("nan")}, "NaN/Inf"),
    ({"removal": True}, "removal must be"),
    ({"removal": torch.zeros(3, 4, 4)}, "does not broadcast"),
]


@pytest.mark.parametrize(("override", "message"), BAD_CALLS)
def test_bad_input_is_rejected_with_a_clear_error(override, message):
    call = {
        "model": LinearScore(torch.ones(1, 1, 4, 4), torch.zeros(1)).eval(),
        "inputs": torch.zeros(1, 1, 4, 4),
        "heatmaps": torch.zeros(1, 1, 4, 4),
        "targets": [0],
        **override,
    }
    with pytest.raises(ValueError, match=message):
        flip(
            call.pop("model"), call.pop("inputs"), call.pop("heatmaps"), call.pop("targets"), **call
        )


def test_model_problems_are_reported():
    inputs, heatmaps = torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match=r"\.eval\(\)"):
        flip(nn.Dropout().train(), inputs, heatmaps, [0])
    with pytest.raises(ValueError, match="2-D logits"):
        flip(lambda x: x, inputs, heatmaps, [0])
    with pytest.raises(ValueError, match="must return logits"):
        flip(lambda x: x[:1].flatten(1), torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4), [0, 0])
    with pytest.raises(ValueError, match="NaN/Inf logits"):
        flip(lambda x: mean_logit(x).log(), inputs + 1, heatmaps, [0])


def test_mean_sem():
    mean, sem = mean_sem([1.0, 2.0, 3.0, 6.0])
    assert mean == pytest.approx(3.0)
    assert sem == pytest.approx(np.std([1, 2, 3, 6], ddof=1) / 2)
    means, sems = mean_sem(np.array([[0.0, 1.0], [2.0, 1.0]]), axis=0)
    np.testing.assert_allclose(means, [1.0, 1.0])
    np.testing.assert_allclose(sems, [1.0, 0.0])
    assert np.isnan(mean_sem([5.0])[1])
    assert mean_sem([[1.0, 3.0]], axis=None)[0] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="NaN/Inf"):
        mean_sem([1.0, np.nan])
    with pytest.raises(ValueError, match="no values"):
        mean_sem([])


def test_aupc_table_pools_inputs_and_seeds_and_counts_exclusions():
    model, inputs, targets, exact = linear_problem(n_inputs=4)
    seeds = [flip(model, inputs, exact, targets, patch_size=4) for _ in range(2)]
    rows = aupc_table(
        {"exact": seeds, "one": seeds[0], "array": np.array([[0.1, np.nan], [0.3, 0.5]])}
    )
    assert [r.method for r in rows] == ["exact", "one", "array"]
    assert (rows[0].n, rows[0].n_excluded, rows[1].n) == (8, 0, 4)
    assert rows[0].mean == pytest.approx(seeds[0].aupc.mean())
    assert (rows[2].n, rows[2].n_excluded) == (3, 1)
    assert rows[2].mean == pytest.approx(0.3) and rows[2].sem == pytest.approx(0.2 / np.sqrt(3))
    table = format_aupc_table(rows)
    assert table.count("\n") == 4 and "| array | 0.300 ± 0.115 | 3 | 1 |" in table
    assert np.isnan(aupc_table({"none": [np.nan]})[0].mean)
    with pytest.raises(ValueError, match="Inf"):
        aupc_table({"bad": [np.inf]})
    with pytest.raises(ValueError, match="at least one"):
        aupc_table({})
