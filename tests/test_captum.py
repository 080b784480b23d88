"""The Captum adapter: attributions, target forms, deltas, and use inside Captum's tools."""

from __future__ import annotations

import ast
import importlib
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from captum.attr import NoiseTunnel
from captum.attr import visualization as viz
from captum.metrics import infidelity, sensitivity_max
from torch import nn
from zennit.attribution import Gradient
from zennit.composites import EpsilonPlus
from zennit.layer import Sum

import zennit_drsa._captum
from zennit_drsa.attribution import DRSAAttributor
from zennit_drsa.captum import DRSAAttribution, LayerDRSAAttribution
from zennit_drsa.composites import reference_composite

matplotlib.use("Agg")

LAYER = "4"
N_CLASSES = 3


@dataclass
class Basis:
    components_: np.ndarray
    subspace_sizes_: list[int]


def random_basis(dim: int, sizes: list[int], seed: int = 0) -> Basis:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    return Basis(q[:, : sum(sizes)].T.copy(), list(sizes))


def make_model(in_channels: int = 2) -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(in_channels, 6, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 4 * 3, N_CLASSES),
    )
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.normal_(module.weight, std=0.5)
            nn.init.normal_(module.bias, std=0.05)
    return model.eval()


@pytest.fixture
def model() -> nn.Sequential:
    return make_model()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(3, 2, 8, 6, generator=torch.Generator().manual_seed(1))


BASIS = random_basis(8, [3, 3])


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).norm() / expected.norm())


def picked(output: torch.Tensor, labels: list[int]) -> torch.Tensor:
    """Captum's initial relevance: the selected output values."""
    return output * nn.functional.one_hot(torch.tensor(labels), output.shape[1])


@pytest.mark.zennit
def test_standard_and_concept_maps_match_zennit(model, x):
    labels = [2, 0, 2]
    attribution = DRSAAttribution(model, LAYER, BASIS, composite=EpsilonPlus())
    standard, delta = attribution.attribute(x, target=labels, return_convergence_delta=True)
    output = model(x).detach()
    _, expected = Gradient(model, EpsilonPlus())(x, picked(output, labels))
    assert standard.shape == x.shape
    assert relative_error(standard, expected) <= 1e-5
    start = picked(output, labels).sum(1)
    torch.testing.assert_close(delta, start - standard.flatten(1).sum(1))

    with DRSAAttributor(model, EpsilonPlus(), LAYER, BASIS) as attributor:
        explanation = attributor.explain(x, attr_output=lambda out: picked(out, labels))
    for concept in (0, 1, "residual"):
        index = 2 if concept == "residual" else concept
        concept_map, concept_delta = attribution.attribute(
            x, target=labels, concept=concept, return_convergence_delta=True
        )
        assert relative_error(concept_map, explanation.heatmaps[:, index]) <= 1e-5
        expected_delta = explanation.layer_relevance[:, index] - concept_map.flatten(1).sum(1)
        torch.testing.assert_close(concept_delta, expected_delta, rtol=1e-4, atol=1e-6)
    combined = attribution.attribute(x, target=labels, concept=[0, "residual"])
    expected_combined = explanation.heatmaps[:, 0] + explanation.heatmaps[:, 2]
    assert relative_error(combined, expected_combined) <= 1e-5
    everything = attribution.attribute(x, target=labels, concept=[0, 1, "residual"])
    assert relative_error(everything, standard) <= 1e-5
    assert attribution.has_convergence_delta() and attribution.multiplies_by_inputs


def test_every_captum_target_form(model, x):
    attribution = DRSAAttribution(model, LAYER, BASIS, composite=EpsilonPlus())
    by_list = attribution.attribute(x, target=[1, 1, 1], concept=0)
    for target in (
        1,
        np.int64(1),
        -2,  # counted from the end, as Python (and Captum) index
        torch.tensor(1),
        torch.tensor([1]),
        torch.tensor([1, 1, 1]),
        (1,),
        [(1,)] * 3,
    ):
        torch.testing.assert_close(attribution.attribute(x, target=target, concept=0), by_list)
    mixed = attribution.attribute(x, target=torch.tensor([2, 0, 1]), concept=0)
    for row, label in enumerate([2, 0, 1]):
        alone = attribution.attribute(x, target=label, concept=0)
        torch.testing.assert_close(mixed[row], alone[row])

    # Outputs with more than one axis per sample: tuple targets, lists of tuples, None.
    grid = nn.Sequential(make_model(), nn.Unflatten(1, (1, N_CLASSES))).eval()
    grid_attribution = DRSAAttribution(grid, "0.4", BASIS, composite=EpsilonPlus())
    torch.testing.assert_close(grid_attribution.attribute(x, target=(0, 1), concept=0), by_list)
    torch.testing.assert_close(
        grid_attribution.attribute(x, target=[(0, 1)] * 3, concept=0), by_list
    )
    scalar = nn.Sequential(make_model(), nn.Linear(N_CLASSES, 1), nn.Flatten(0)).eval()
    scalar_attribution = DRSAAttribution(scalar, "0.4", BASIS, composite=EpsilonPlus())
    per_sample, delta = scalar_attribution.attribute(
        x, target=None, concept=[0, 1, "residual"], return_convergence_delta=True
    )
    assert per_sample.shape == x.shape and per_sample.abs().sum() > 0
    assert delta.shape == (len(x),)


class CountingForward(nn.Module):
    """A model wrapper counting its forward calls."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.body(x)


def test_malformed_targets_are_refused_before_the_forward_pass(model, x):
    counting = CountingForward(model).eval()
    attribution = DRSAAttribution(counting, "body.4", BASIS, composite=EpsilonPlus())
    for target, error, message in (
        (True, TypeError, "unsupported target True"),
        (1.0, TypeError, "unsupported target 1.0; pass an int, a tuple of ints"),
        ("1", TypeError, "unsupported target"),
        ((0, 1.5), TypeError, "a tuple target must hold ints"),
        ([1, (1,), 1], TypeError, "unsupported target"),
        ([1.0, 1.0, 1.0], TypeError, "unsupported target"),
        (torch.tensor([1.0, 1.0, 1.0]), TypeError, "integer indices, got torch.float32"),
        (torch.ones(3, 1, dtype=torch.long), ValueError, r"one per sample \(shape \(B,\)\)"),
        ([], ValueError, "target is an empty list"),
        ([(0, 1), (0,), (0, 1)], ValueError, r"same length, got \[1, 2\]"),
    ):
        with pytest.raises(error, match=message):
            attribution.attribute(x, target=target)
    assert counting.calls == 0


def test_targets_out_of_range_are_refused_naming_the_valid_range(model, x):
    attribution = DRSAAttribution(model, LAYER, BASIS, composite=EpsilonPlus())
    valid = r"output axis 1 of size 3: valid indices are 0\.\.2 \(or -3\.\.-1 counting"
    for target, index in (
        (3, 3),
        (-4, -4),
        ((3,), 3),
        (torch.tensor(5), 5),
        (torch.tensor([0, 3, 1]), 3),
        ([0, 1, 7], 7),
        ([(0,), (9,), (1,)], 9),
    ):
        with pytest.raises(ValueError, match=rf"target index {index} is out of range for {valid}"):
            attribution.attribute(x, target=target, concept=0)
    with pytest.raises(ValueError, match=r"one entry per sample \(3\), got 2"):
        attribution.attribute(x, target=[1, 1])
    with pytest.raises(ValueError, match=r"indexes 2 output axes .* \(3, 3\) has 1"):
        attribution.attribute(x, target=(0, 1))
    layer_attribution = LayerDRSAAttribution(model, LAYER, BASIS, composite=EpsilonPlus())
    with pytest.raises(ValueError, match=rf"target index 3 is out of range for {valid}"):
        layer_attribution.attribute(x, target=3)
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


def test_propagation_is_chosen_by_argument_and_both_strategies_agree(model, x):
    maps = {
        propagation: DRSAAttribution(
            model, LAYER, BASIS, composite=EpsilonPlus(), propagation=propagation
        ).attribute(x, target=[2, 0, 1], concept=[0, "residual"])
        for propagation in ("auto", "chain", "generic")
    }
    torch.testing.assert_close(maps["auto"], maps["chain"], rtol=0, atol=0)
    assert relative_error(maps["chain"], maps["generic"]) <= 1e-5
    with pytest.raises(ValueError, match=r"propagation must be one of \('auto', 'chain'"):
        DRSAAttribution(model, LAYER, BASIS, composite=EpsilonPlus(), propagation="fast")


def test_the_adapter_imports_only_public_captum_modules():
    source = Path(zennit_drsa._captum.__file__).read_text(encoding="utf-8")
    modules = [
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    ]
    captum = {module for module in modules if module and module.split(".")[0] == "captum"}
    assert captum and not [m for m in captum if any(p.startswith("_") for p in m.split("."))]


def test_tuple_inputs_and_additional_forward_args():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = make_model(in_channels=2)

        def forward(self, first, second, gain=1.0):
            return self.body(torch.cat([first, second], dim=1) * gain)

    model = TwoInputs().eval()
    first = torch.randn(2, 1, 8, 6, generator=torch.Generator().manual_seed(2))
    second = torch.randn(2, 1, 8, 6, generator=torch.Generator().manual_seed(3))
    attribution = DRSAAttribution(model, "body.4", BASIS, composite=EpsilonPlus())
    maps, delta = attribution.attribute(
        (first, second), target=1, additional_forward_args=2.0, return_convergence_delta=True
    )
    assert isinstance(maps, tuple) and [m.shape for m in maps] == [first.shape, second.shape]
    # The bare body on the stacked, scaled input gives the relevance at the first rule's input;
    # the gain has no rule, so it passes that relevance on as a plain gradient (×2).
    body = DRSAAttribution(model.body, "4", BASIS, composite=EpsilonPlus())
    stacked = body.attribute(torch.cat([first, second], dim=1) * 2.0, target=1)
    torch.testing.assert_close(torch.cat(maps, dim=1), 2.0 * stacked, rtol=1e-5, atol=1e-7)
    total = sum(m.flatten(1).sum(1) for m in maps)
    output = model(first, second, 2.0).detach()
    torch.testing.assert_close(delta, output[:, 1] - total)
    # A chain starts from one input: "auto" takes the generic path, "chain" says why not.
    chain = DRSAAttribution(model, "body.4", BASIS, composite=EpsilonPlus(), propagation="chain")
    with pytest.raises(ValueError, match="the model takes 2 inputs; a chain starts from one"):
        chain.attribute((first, second), target=1, additional_forward_args=2.0)


def test_runs_under_no_grad_and_inside_captum_tools(model, x):
    attribution = DRSAAttribution(model, LAYER, BASIS, composite=EpsilonPlus())
    expected = attribution.attribute(x, target=1, concept=1)
    with torch.no_grad():
        torch.testing.assert_close(attribution.attribute(x, target=1, concept=1), expected)

    smooth, delta = NoiseTunnel(attribution).attribute(
        x,
        nt_type="smoothgrad",
        nt_samples=3,
        stdevs=0.05,
        target=1,
        concept=1,
        return_convergence_delta=True,
    )
    assert smooth.shape == x.shape and delta.shape == (3 * len(x),)
    assert torch.isfinite(smooth).all() and not torch.equal(smooth, expected)

    def perturb(inputs):
        noise = torch.randn_like(inputs) * 0.1
        return noise, inputs - noise

    scores = infidelity(model, perturb, x, expected, target=1, n_perturb_samples=3)
    assert scores.shape == (len(x),) and torch.isfinite(scores).all()
    sensitivity = sensitivity_max(
        attribution.attribute, x, target=1, concept=1, n_perturb_samples=2
    )
    assert sensitivity.shape == (len(x),) and torch.isfinite(sensitivity).all()
    assert (sensitivity > 0).all()

    image = expected[0].permute(1, 2, 0).numpy()
    figure, _ = viz.visualize_image_attr(image, method="heat_map", sign="all", use_pyplot=False)
    assert figure is not None


class Residual(nn.Module):
    """A skip connection around ``branch``, summed by Zennit's ``Sum`` (Norm rule)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.stem = nn.Conv2d(2, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.branch = nn.Conv2d(8, 8, 3, padding=1)
        self.sum = Sum()
        self.head = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 6, N_CLASSES))

    def forward(self, x):
        h = self.relu(self.stem(x))
        return self.head(self.sum(torch.stack([self.branch(h), h], dim=-1)))


def test_standard_map_includes_relevance_bypassing_the_layer(x):
    model = Residual().eval()
    attribution = DRSAAttribution(model, "branch", BASIS, composite=EpsilonPlus())
    with pytest.warns(UserWarning, match=r"around layer 'branch' \(\d+% of the absolute"):
        standard = attribution.attribute(x, target=[0, 1, 2])
    output = model(x).detach()
    _, expected = Gradient(model, EpsilonPlus())(x, picked(output, [0, 1, 2]))
    assert relative_error(standard, expected) <= 1e-5
    with pytest.warns(UserWarning, match=r"around layer 'branch' \(\d+% of the absolute"):
        through = attribution.attribute(x, target=[0, 1, 2], concept=[0, 1, "residual"])
    assert relative_error(through, expected) > 0.05
    with pytest.warns(UserWarning, match=r"around layer 'branch', so"):
        attribution.attribute(x, target=[0, 1, 2], concept=0)


def test_per_class_subspaces_follow_the_target(model, x):
    bases = {0: random_basis(8, [2, 2], seed=4), 1: random_basis(8, [4, 1], seed=5)}
    attribution = DRSAAttribution(model, LAYER, bases, composite=EpsilonPlus())
    mixed = attribution.attribute(x, target=[1, 0, 1], concept=0)
    for label, rows in ((0, [1]), (1, [0, 2])):
        alone = DRSAAttribution(model, LAYER, bases[label], composite=EpsilonPlus())
        torch.testing.assert_close(mixed[rows], alone.attribute(x[rows], target=label, concept=0))


def test_layer_attribution_gives_subspace_relevances(model, x):
    layer_attribution = LayerDRSAAttribution(model, LAYER, BASIS, composite=EpsilonPlus())
    relevance, delta = layer_attribution.attribute(x, target=2, return_convergence_delta=True)
    with DRSAAttributor(model, EpsilonPlus(), LAYER, BASIS) as attributor:
        explanation = attributor.explain(x, attr_output=lambda out: picked(out, [2, 2, 2]))
    torch.testing.assert_close(relevance, explanation.layer_relevance)
    output = model(x).detach()
    torch.testing.assert_close(delta, output[:, 2] - relevance.sum(1))
    assert layer_attribution.has_convergence_delta()
    # The default composite is the reference rule map (WSquare on the first convolution).
    default = DRSAAttribution(model, LAYER, BASIS).attribute(x, target=2)
    explicit = DRSAAttribution(model, LAYER, BASIS, reference_composite(model))
    torch.testing.assert_close(default, explicit.attribute(x, target=2))
    epsilon_plus = DRSAAttribution(model, LAYER, BASIS, EpsilonPlus()).attribute(x, target=2)
    assert relative_error(default, epsilon_plus) > 0.1


def test_bad_arguments_are_refused(model, x):
    attribution = DRSAAttribution(model, LAYER, BASIS, composite=EpsilonPlus())
    for concept, message in (
        (2, r"concept 2 is not one of the 2 subspaces \(0\.\.1\) or 'residual'"),
        (-1, "is not one of"),
        (True, "is not one of"),
        ("rest", "is not one of"),
        ([], "empty sequence"),
        ([0, 0], "selected twice"),
    ):
        with pytest.raises(ValueError, match=message):
            attribution.attribute(x, target=0, concept=concept)
    with pytest.raises(ValueError, match="empty tuple"):
        attribution.attribute((), target=0)
    bad = x.clone()
    bad[2, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"NaN or Inf \(first in sample 2\)"):
        attribution.attribute(bad, target=0)
    per_class = DRSAAttribution(model, LAYER, {0: BASIS}, composite=EpsilonPlus())
    with pytest.raises(ValueError, match="class 1, which has no subspaces"):
        per_class.attribute(x, target=1)
    for module in model.modules():
        assert not module._forward_hooks


def test_captum_is_imported_on_first_use_only(monkeypatch):
    import zennit_drsa.captum as lazy

    with monkeypatch.context() as patch:
        # Without captum (and without the cached implementation) the module still imports...
        for name in [name for name in sys.modules if name.split(".")[0] == "captum"]:
            patch.setitem(sys.modules, name, None)
        patch.delitem(sys.modules, "zennit_drsa._captum")
        for name in lazy.__all__:
            patch.delitem(vars(lazy), name, raising=False)
        importlib.reload(lazy)
        assert "DRSAAttribution" in dir(lazy)
        # ...and only a use of the adapter needs it.
        with pytest.raises(ImportError, match="needs captum; install it"):
            lazy.DRSAAttribution  # noqa: B018
    assert lazy.DRSAAttribution is DRSAAttribution
    assert pickle.loads(pickle.dumps(DRSAAttribution)) is DRSAAttribution
    with pytest.raises(AttributeError, match="no attribute 'Missing'"):
        lazy.Missing  # noqa: B018
