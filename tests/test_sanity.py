"""Sanity-check numerics: heatmap similarities and cascading model randomisation."""

import numpy as np
import pytest
import torch
from torch import nn

from zennit_drsa.evaluation import cascading_randomization, spearman_similarity, ssim


def smooth_map(seed: int = 0, shape=(16, 20)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    return np.sin(rows / 3.0) * np.cos(cols / 4.0) + 0.3 * rng.normal(size=shape)


def reference_ssim(x, y, data_range, sigma=1.5, radius=5, k1=0.01, k2=0.03):
    """SSIM written out pixel by pixel: explicit Gaussian windows on a mirrored border."""
    offsets = np.arange(-radius, radius + 1)
    weights_1d = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights = np.outer(weights_1d, weights_1d)
    weights /= weights.sum()
    # scipy's "reflect" mirrors including the edge value: numpy's "symmetric".
    px, py = np.pad(x, radius, mode="symmetric"), np.pad(y, radius, mode="symmetric")
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    values = []
    for i in range(radius, x.shape[0] - radius):
        for j in range(radius, x.shape[1] - radius):
            wx = px[i : i + 2 * radius + 1, j : j + 2 * radius + 1]
            wy = py[i : i + 2 * radius + 1, j : j + 2 * radius + 1]
            mx, my = (weights * wx).sum(), (weights * wy).sum()
            vx = (weights * (wx - mx) ** 2).sum()
            vy = (weights * (wy - my) ** 2).sum()
            cov = (weights * (wx - mx) * (wy - my)).sum()
            values.append(
                ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
            )
    return float(np.mean(values))


def test_spearman_of_identical_monotone_and_negated_maps():
    heatmap = smooth_map()
    assert spearman_similarity(heatmap, heatmap) == pytest.approx(1.0)
    assert spearman_similarity(heatmap, np.exp(3 * heatmap)) == pytest.approx(1.0)
    assert spearman_similarity(heatmap, -heatmap) == pytest.approx(-1.0)
    assert spearman_similarity(heatmap, -heatmap, absolute=True) == pytest.approx(1.0)


def test_spearman_by_hand_and_undefined_for_constant_maps():
    # Ranks (1, 2, 3, 4) against (1, 3, 2, 4): 1 - 6 Σd² / (n(n² - 1)) = 1 - 12/60 = 0.8.
    first = torch.tensor([[0.1, 0.2], [0.3, 0.4]])
    second = torch.tensor([[1.0, 5.0], [2.0, 9.0]])
    assert spearman_similarity(first, second) == pytest.approx(0.8)
    assert np.isnan(spearman_similarity(np.ones((3, 3)), smooth_map(shape=(3, 3))))
    assert np.isnan(spearman_similarity(np.ones((3, 3)), np.ones((3, 3))))


def test_ssim_of_identical_maps_is_exactly_one():
    heatmap = smooth_map()
    assert ssim(heatmap, heatmap) == 1.0
    assert ssim(heatmap, heatmap, data_range=10.0) == 1.0


def test_ssim_of_constant_maps_by_hand():
    # Constant maps: no variance, so the structure term is C2 / C2 = 1 and only the means
    # count: (2 c d + C1) / (c² + d² + C1) with C1 = (0.01 L)².
    ones = np.ones((12, 12))
    assert ssim(ones, ones) == 1.0  # range 0: equal constants
    c1 = (0.01 * 2.0) ** 2  # L = 3 - 1
    assert ssim(ones, 3 * ones) == pytest.approx((6 + c1) / (10 + c1), abs=1e-12)
    # A constant map c = 1 and its negation, L = 2: (C1 - 2) / (C1 + 2).
    assert ssim(ones, -ones) == pytest.approx((c1 - 2) / (c1 + 2), abs=1e-12)


def test_ssim_of_a_locally_zero_mean_map_and_its_negation_by_hand():
    # A ±1 checkerboard has local means of ~1e-5 (the alternating Gaussian weights cancel),
    # variance 1 and covariance -1 with its negation: SSIM = (C2 - 2) / (C2 + 2), L = 2.
    board = np.where(np.add.outer(np.arange(16), np.arange(16)) % 2 == 0, 1.0, -1.0)
    c2 = (0.03 * 2.0) ** 2
    assert ssim(board, -board) == pytest.approx((c2 - 2) / (c2 + 2), abs=1e-5)


def test_ssim_of_a_signed_map_and_its_negation_flips_two_terms():
    # Where local means and local structure both flip sign their product is positive: the
    # documented reason to compare magnitudes or use the rank correlation for signs.
    heatmap = smooth_map()
    data_range = 2 * np.abs(heatmap).max()
    value = ssim(heatmap, -heatmap)
    assert value == pytest.approx(reference_ssim(heatmap, -heatmap, data_range), abs=1e-12)
    assert value > 0


def test_ssim_matches_the_windowed_formula_and_is_symmetric():
    first, second = smooth_map(0), smooth_map(1) + 0.5
    data_range = max(first.max(), second.max()) - min(first.min(), second.min())
    expected = reference_ssim(first, second, data_range)
    assert ssim(first, second) == pytest.approx(expected, abs=1e-12)
    assert ssim(second, first) == pytest.approx(expected, abs=1e-12)
    assert ssim(first, second, data_range=4.0) == pytest.approx(
        reference_ssim(first, second, 4.0), abs=1e-12
    )
    assert ssim(first, second, sigma=1.0) == pytest.approx(
        reference_ssim(first, second, data_range, sigma=1.0, radius=4), abs=1e-12
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ssim(np.ones((12, 12)), np.ones((12, 13))), "same shape"),
        (lambda: ssim(np.ones((2, 12, 12)), np.ones((2, 12, 12))), "2-D"),
        (lambda: ssim(np.ones((8, 12)), np.ones((8, 12))), "smaller sigma"),
        (lambda: ssim(np.ones((12, 12)), np.ones((12, 12)), data_range=0.0), "data_range"),
        (lambda: ssim(np.full((12, 12), np.nan), np.ones((12, 12))), "NaN/Inf"),
        (lambda: spearman_similarity(np.ones(0), np.ones(0)), "empty"),
    ],
)
def test_bad_maps_are_rejected(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def small_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Linear(5, 2)
    ).eval()


def same(first: nn.Module, second: nn.Module) -> bool:
    one, two = first.state_dict(), second.state_dict()
    return all(torch.equal(one[key], two[key]) for key in one)


def test_cascade_randomises_from_the_top_one_more_layer_each_step():
    model = small_model()
    with torch.no_grad():
        model[3].running_mean.fill_(2.0)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    steps = list(cascading_randomization(model, seed=0))
    assert [name for name, _ in steps] == ["4", "3", "2", "0"]
    for step, (_, randomised) in enumerate(steps):
        for index, name in enumerate(["4", "3", "2", "0"]):
            layer, trained = randomised[int(name)], model[int(name)]
            # Layers up to this step are re-initialised, the ones below untouched.
            assert same(layer, trained) == (index > step), (step, name)
        assert not randomised.training
    # Once randomised, a layer keeps its values further down the cascade.
    assert same(steps[0][1][4], steps[3][1][4])
    # The original is untouched.
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())


def test_layers_get_their_default_initialisation():
    model = small_model()
    _, randomised = next(iter(cascading_randomization(model, layers=["2", "3"])))
    bound = 1 / np.sqrt(4)  # nn.Linear(4, 5): uniform in ±1/sqrt(in_features)
    assert randomised[2].weight.abs().max() <= bound
    steps = dict(cascading_randomization(model, layers=["2", "3"]))
    norm = steps["3"][3]  # BatchNorm resets weights, biases and running statistics
    assert torch.equal(norm.weight, torch.ones(5)) and torch.equal(
        norm.running_mean, torch.zeros(5)
    )


def test_cascade_is_seeded_by_name_and_leaves_the_global_random_state_alone():
    model = small_model()
    state = torch.get_rng_state()
    first = dict(cascading_randomization(model, seed=1))
    assert torch.equal(torch.get_rng_state(), state)
    again = dict(cascading_randomization(model, seed=1))
    other = dict(cascading_randomization(model, seed=2))
    assert same(first["0"], again["0"]) and not same(first["0"], other["0"])
    # A layer's new values depend on the seed and its name, not on its step.
    alone = dict(cascading_randomization(model, layers=["2"], seed=1))
    assert torch.equal(alone["2"][2].weight, first["0"][2].weight)


def test_yielded_copies_are_independent():
    model = small_model()
    cascade = cascading_randomization(model)
    _, first = next(cascade)
    with torch.no_grad():
        first[0].weight.fill_(7.0)
    _, second = next(cascade)
    assert torch.equal(second[0].weight, model[0].weight)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_model_gets_the_same_values_as_on_cpu():
    model = small_model()
    cpu = dict(cascading_randomization(model, seed=3))
    gpu = dict(cascading_randomization(model.cuda(), seed=3))
    assert gpu["0"][0].weight.is_cuda
    assert torch.equal(gpu["0"][4].weight.cpu(), cpu["0"][4].weight)


class Scale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.factor = nn.Parameter(torch.ones(1))


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        (["9"], "not a module"),
        (["1"], "owns no parameters"),
        (["0", "0"], "repeat"),
    ],
)
def test_bad_layers_are_rejected_at_the_call(layers, message):
    with pytest.raises(ValueError, match=message):
        cascading_randomization(small_model(), layers=layers)


def test_a_parameter_owner_without_reset_parameters_is_named():
    model = nn.Sequential(nn.Linear(2, 2), Scale())
    with pytest.raises(ValueError, match=r"'1' \(Scale\) has no reset_parameters"):
        cascading_randomization(model)
