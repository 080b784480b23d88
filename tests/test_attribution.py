"""DRSAAttributor: parity with Zennit, per-concept passes, conservation, and refusals."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from zennit.attribution import Gradient
from zennit.composites import EpsilonGammaBox, EpsilonPlus
from zennit.torchvision import ResNetCanonizer, VGGCanonizer

from audio_cnn.model import AudioCNN
from zennit_drsa.attribution import ConceptExplanation, DRSAAttributor
from zennit_drsa.collect import collect
from zennit_drsa.composites import audio_composite
from zennit_drsa.context import LayerContext


@dataclass
class Basis:
    """The documented contract: anything with components_ and subspace_sizes_."""

    components_: np.ndarray
    subspace_sizes_: list[int]


def random_basis(dim: int, sizes: list[int], seed: int = 0) -> Basis:
    """Haar-random orthonormal rows ``(Σ sizes, dim)`` grouped into blocks of ``sizes``."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    return Basis(components_=q[:, : sum(sizes)].T.copy(), subspace_sizes_=list(sizes))


def one_hot(batch: int, n_classes: int, labels) -> torch.Tensor:
    labels = torch.as_tensor(labels).expand(batch)
    return nn.functional.one_hot(labels, n_classes).float()


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).norm() / expected.norm())


def separate_passes(model, composite, layer, x, attr_output, basis):
    """Each concept's heatmap from its own backward pass, with projectors built in numpy."""
    blocks = np.split(basis.components_, np.cumsum(basis.subspace_sizes_)[:-1])
    projectors = [block.T @ block for block in blocks]
    projectors.append(np.eye(basis.components_.shape[1]) - sum(projectors))
    with LayerContext(model, composite, layer) as context:
        output = context.forward(x)
        _, c = context.backward(output, attr_output, retain_graph=True)
        a = context.activation.detach()
        maps, layer_relevance = [], []
        for projector in projectors:
            projected = torch.einsum("ij,bj...->bi...", torch.as_tensor(projector).to(c), c)
            (heatmap,) = torch.autograd.grad(
                context.activation, context.input, a * projected, retain_graph=True
            )
            maps.append(heatmap)
            layer_relevance.append((a * projected).flatten(1).sum(1))
        context.clear()
    return torch.stack(maps, dim=1), torch.stack(layer_relevance, dim=1)


def zennit_reference(model, composite, layer, x, attr_output):
    """Zennit's ``Gradient`` heatmap and ``(B,)`` total relevance at the layer, from one forward."""
    store = {}
    module = dict(model.named_modules())[layer]
    handle = module.register_forward_hook(lambda m, i, o: store.setdefault("out", o))
    try:
        with Gradient(model, composite, retain_graph=True) as attributor:
            output, heatmap = attributor(x, attr_output)
            (relevance,) = torch.autograd.grad(output, store["out"], attr_output)
    finally:
        handle.remove()
    return heatmap, relevance.flatten(1).sum(1), relevance.abs().flatten(1).sum(1)


def _init(model: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(module.weight)
            nn.init.normal_(module.bias, std=0.05)
    return model.eval()


def audio_model(**overrides) -> nn.Module:
    """Toy AudioCNN with seeded weights."""
    # Non-square 64×48 log-mel input: maps are 8×6 at the 4th block.
    return _init(AudioCNN.preset("toy", input_shape=(64, 48), **overrides))


@pytest.fixture(scope="module")
def vgg11() -> nn.Module:
    # The meta device skips initialising the 100M-parameter head, which a small one replaces.
    with torch.device("meta"):
        model = torchvision.models.vgg11(weights=None)
    model.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 16), nn.ReLU(), nn.Linear(16, 10))
    return _init(model.to_empty(device="cpu"))


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


@pytest.fixture(scope="module")
def audio_cnn() -> nn.Module:
    return audio_model()


CASES = {
    # name: (model fixture, composite, layer, input shape, batch, d, subspace sizes)
    "audio_cnn-conv": (
        "audio_cnn",
        lambda model: audio_composite("reference", model),
        "features.10",
        (1, 64, 48),
        2,
        32,
        [8, 8, 8],
    ),
    "audio_cnn-dense": (
        "audio_cnn",
        lambda model: EpsilonGammaBox(low=-4.0, high=4.0),
        "classifier.2",
        (1, 64, 48),
        2,
        64,
        [16, 16],
    ),
    "vgg11": (
        "vgg11",
        lambda model: EpsilonPlus(canonizers=[VGGCanonizer()]),
        "features.7",
        (3, 48, 32),
        1,
        256,
        [16, 16],
    ),
    "resnet18": (
        "resnet18",
        lambda model: EpsilonPlus(canonizers=[ResNetCanonizer()]),
        "layer2.0",
        (3, 32, 24),
        1,
        128,
        [16, 16],
    ),
}


@pytest.mark.zennit
@pytest.mark.parametrize("case", list(CASES))
def test_standard_heatmap_and_layer_relevance_match_zennit(case, request):
    fixture, make_composite, layer, shape, batch, dim, sizes = CASES[case]
    model = request.getfixturevalue(fixture)
    basis = random_basis(dim, sizes, seed=1)
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(2))
    n_classes = model(x).shape[1]
    attr_output = one_hot(batch, n_classes, [1, 0][:batch])

    with DRSAAttributor(model, make_composite(model), layer, basis) as attributor:
        explanation = attributor.explain(x, attr_output=attr_output)
    standard, layer_total, layer_mass = zennit_reference(
        model, make_composite(model), layer, x, attr_output
    )

    relevance = explanation.heatmaps
    assert relevance.shape == (batch, len(sizes) + 1, *shape)
    assert explanation.output.shape == (batch, n_classes)
    assert relative_error(relevance.sum(1), standard) <= 1e-5
    # Σ_k R_k + R_res is the layer's relevance, as Zennit propagates it.
    assert explanation.layer_relevance.shape == (batch, len(sizes) + 1)
    assert ((explanation.layer_total - layer_total).abs() <= 1e-5 * layer_mass).all()
    assert explanation.bypass is None and explanation.layer == layer


@pytest.mark.zennit
@pytest.mark.parametrize("case", ["audio_cnn-conv", "audio_cnn-dense"])
def test_concept_maps_equal_separate_backward_passes(case, audio_cnn):
    _, make_composite, layer, shape, batch, dim, sizes = CASES[case]
    basis = random_basis(dim, sizes, seed=1)
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(2))
    attr_output = one_hot(batch, 2, [1, 0])
    with DRSAAttributor(audio_cnn, make_composite(audio_cnn), layer, basis) as attributor:
        explanation = attributor.explain(x, attr_output=attr_output)
    separate, separate_layer = separate_passes(
        audio_cnn, make_composite(audio_cnn), layer, x, attr_output, basis
    )
    for k in range(len(sizes) + 1):
        assert relative_error(explanation.heatmaps[:, k], separate[:, k]) <= 1e-5
    scale = separate_layer.abs().max()
    torch.testing.assert_close(
        explanation.layer_relevance, separate_layer, rtol=1e-5, atol=1e-6 * float(scale)
    )


@pytest.mark.zennit
def test_skip_connection_around_the_layer_is_reported_as_bypass(resnet18):
    model = resnet18
    basis = random_basis(64, [8, 8])
    x = torch.randn(1, 3, 32, 24, generator=torch.Generator().manual_seed(3))
    attr_output = one_hot(1, 10, 4)

    def composite():
        return EpsilonPlus(canonizers=[ResNetCanonizer()])

    with pytest.warns(
        UserWarning,
        match=r"skip connection .*'layer1\.0\.conv2' \(\d+% of the absolute relevance\)",
    ):
        with DRSAAttributor(model, composite(), "layer1.0.conv2", basis) as attributor:
            explanation = attributor.explain(x, attr_output=attr_output)
    _, standard = Gradient(model, composite())(x, attr_output)
    assert explanation.bypass is not None and explanation.bypass.shape == x.shape
    assert relative_error(explanation.heatmaps.sum(1), standard) > 0.05
    assert relative_error(explanation.standard, standard) <= 1e-5


@pytest.mark.zennit
def test_per_class_subspaces_explain_each_sample_with_its_target_class():
    model = audio_model()
    bases = {0: random_basis(32, [4, 4], seed=3), 1: random_basis(32, [6, 2], seed=4)}
    x = torch.randn(3, 1, 64, 48, generator=torch.Generator().manual_seed(5))
    labels = [1, 0, 1]
    composite = EpsilonGammaBox(low=-4.0, high=4.0)
    with DRSAAttributor(model, composite, "features.10", bases) as attributor:
        mixed = attributor.explain(x, target=labels)
    assert mixed.classes.tolist() == labels
    for label, basis in bases.items():
        rows = torch.tensor(labels) == label
        with DRSAAttributor(model, composite, "features.10", basis) as attributor:
            alone = attributor.explain(x[rows], target=label)
        torch.testing.assert_close(mixed.heatmaps[rows], alone.heatmaps)
        torch.testing.assert_close(mixed.layer_relevance[rows], alone.layer_relevance)


def tiny_model() -> nn.Sequential:
    return _init(
        nn.Sequential(
            nn.Conv2d(2, 6, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(8 * 3 * 2, 3),
        ),
        seed=6,
    )


@settings(max_examples=15, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 3), min_size=1, max_size=4).filter(lambda s: sum(s) <= 8),
    chunk_size=st.one_of(st.none(), st.integers(1, 6)),
    seed=st.integers(0, 2**16),
)
def test_maps_and_layer_relevances_are_conservative_for_any_partition(sizes, chunk_size, seed):
    model = tiny_model()
    x = torch.randn(2, 2, 6, 4, generator=torch.Generator().manual_seed(seed))
    basis = random_basis(8, sizes, seed=seed)
    with DRSAAttributor(model, EpsilonPlus(), "4", basis, chunk_size=chunk_size) as attributor:
        explanation = attributor.explain(x, target=2)
    standard, layer_total, layer_mass = zennit_reference(
        model, EpsilonPlus(), "4", x, one_hot(2, 3, 2)
    )
    assert explanation.heatmaps.shape == (2, len(sizes) + 1, 2, 6, 4)
    assert relative_error(explanation.standard, standard) <= 1e-5
    assert ((explanation.layer_total - layer_total).abs() <= 1e-5 * layer_mass).all()
    # With the whole space covered, the residual holds nothing.
    if sum(sizes) == 8:
        assert (explanation.layer_relevance[:, -1].abs() <= 1e-5 * layer_mass).all()


class CountingConv(nn.Conv2d):
    """A convolution counting its forward calls, including those of LRP rules."""

    calls = 0

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        CountingConv.calls += 1
        return super().forward(input)


@pytest.mark.parametrize("propagation", ["chain", "generic"])
def test_all_maps_take_one_backward_pass_below_the_layer(propagation):
    model = tiny_model()
    counting = CountingConv(2, 6, 3, padding=1)
    counting.load_state_dict(model[0].state_dict())
    model[0] = counting.eval()
    basis = random_basis(8, [2, 2, 2])
    x = torch.randn(2, 2, 6, 4)
    calls = {}
    for chunk_size in (None, 2, 1):
        with DRSAAttributor(
            model, EpsilonPlus(), "4", basis, chunk_size=chunk_size, propagation=propagation
        ) as attributor:
            CountingConv.calls = 0
            attributor.explain(x, target=0)
            calls[chunk_size] = CountingConv.calls
    # One forward pass, then the rule's modified forwards once per backward pass below the layer.
    per_pass = calls[None] - 1
    assert per_pass >= 1
    assert calls[2] == 1 + 2 * per_pass  # 4 maps in chunks of 2
    assert calls[1] == 1 + 4 * per_pass


def test_propagate_gives_weighted_sums_of_the_concept_maps_for_adapters():
    model = tiny_model()
    x = torch.randn(2, 2, 6, 4, generator=torch.Generator().manual_seed(7))
    attributor = DRSAAttributor(model, EpsilonPlus(), "4", random_basis(8, [2, 3]))
    explanation = attributor.explain(x, target=[2, 0])
    mixing = torch.tensor([[1.0, 0.0, 1.0], [0.5, -2.0, 0.0]])
    result = attributor.propagate(x, one_hot(2, 3, [2, 0]), mixing=mixing)
    (maps,) = result.heatmaps
    assert maps.shape == (2, 2, 2, 6, 4)
    expected = torch.einsum("mk,bk...->bm...", mixing, explanation.heatmaps)
    torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(result.layer_relevance, explanation.layer_relevance)
    torch.testing.assert_close(result.attr_output, one_hot(2, 3, [2, 0]))
    # Without mixing, one map per subspace and the residual, as explain returns them.
    plain = attributor.propagate(x, lambda output: one_hot(2, 3, [2, 0]))
    torch.testing.assert_close(plain.heatmaps[0], explanation.heatmaps)
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
    with pytest.raises(ValueError, match=r"mixing must have shape \(M, 3\).*got \(2, 2\)"):
        attributor.propagate(x, one_hot(2, 3, 0), mixing=torch.ones(2, 2))
    with pytest.raises(TypeError, match="for a model with several inputs, use"):
        attributor.explain((x, x), target=0)


def test_propagate_takes_the_explained_classes_from_a_callable():
    model = tiny_model()
    x = torch.randn(2, 2, 6, 4, generator=torch.Generator().manual_seed(8))
    bases = {0: random_basis(8, [2]), 2: random_basis(8, [2], seed=1)}
    attributor = DRSAAttributor(model, EpsilonPlus(), "4", bases)
    expected = attributor.explain(x, target=[2, 0])
    # The second sample's selected output weighted by zero: its class is not in the relevance.
    attr_output = one_hot(2, 3, [2, 0]) * torch.tensor([[1.0], [0.0]])
    result = attributor.propagate(x, attr_output, classes=lambda output: torch.tensor([2, 0]))
    assert result.classes.tolist() == [2, 0]
    torch.testing.assert_close(result.heatmaps[0][0], expected.heatmaps[0])
    assert not result.heatmaps[0][1].any()
    with pytest.raises(ValueError, match="one explained class per sample"):
        attributor.propagate(x, attr_output)


@pytest.mark.zennit
def test_batch_norm_warns_without_canonizer_and_merges_with_the_preset():
    model = audio_model(batch_norm=True)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    basis = random_basis(32, [8, 8])
    x = torch.randn(2, 1, 64, 48)
    with pytest.warns(UserWarning, match=r"batch-norm modules \['features\.1'"):
        with DRSAAttributor(model, EpsilonGammaBox(low=-4.0, high=4.0), "features.15", basis):
            pass
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        composite = audio_composite("reference", model)
        with DRSAAttributor(model, composite, "features.15", basis) as attributor:
            explanation = attributor.explain(x, target=1)
    _, standard = Gradient(model, audio_composite("reference", model))(x, one_hot(2, 2, 1))
    assert relative_error(explanation.standard, standard) <= 1e-5


def test_float64_model_and_ratio_context():
    model = tiny_model().double()
    basis = random_basis(8, [3, 3])
    x = torch.randn(2, 2, 6, 4, dtype=torch.float64)
    for context in ("exact", "ratio"):
        with DRSAAttributor(model, EpsilonPlus(), "4", basis, context=context) as attributor:
            explanation = attributor.explain(x, target=1)
        assert explanation.heatmaps.dtype == torch.float64
        _, standard = Gradient(model, EpsilonPlus())(x, one_hot(2, 3, 1).double())
        assert relative_error(explanation.standard, standard) <= 1e-6


def test_call_without_with_block_registers_and_removes_the_composite():
    model = tiny_model()
    x = torch.randn(2, 2, 6, 4)
    before = model(x)
    attributor = DRSAAttributor(model, EpsilonPlus(), "4", random_basis(8, [4]))
    output, relevance = attributor(x, one_hot(2, 3, 0))
    explanation = attributor.explain(x, target=0)
    assert isinstance(explanation, ConceptExplanation)
    torch.testing.assert_close(explanation.heatmaps, relevance)
    torch.testing.assert_close(output, before)
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)
    # Zennit's default attr_output is the output itself; a callable works too.
    default = attributor.explain(x)
    by_callable = attributor.explain(x, attr_output=lambda out: out)
    torch.testing.assert_close(default.heatmaps, by_callable.heatmaps)
    assert explanation.concepts.shape == (2, 1, 2, 6, 4)
    assert explanation.residual.shape == (2, 2, 6, 4) and explanation.n_subspaces == 1


# -- refusals ----------------------------------------------------------------------------


def test_model_problems_are_refused():
    basis = random_basis(8, [4])
    x = torch.randn(1, 2, 6, 4)
    model = tiny_model().train()
    with pytest.raises(ValueError, match=r"training mode.*eval\(\)"):
        DRSAAttributor(model, EpsilonPlus(), "4", basis)(x, one_hot(1, 3, 0))
    model.eval()
    with pytest.raises(ValueError, match=r"did you mean '4'"):
        DRSAAttributor(model, EpsilonPlus(), "44", basis)(x, one_hot(1, 3, 0))

    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = tiny_model()
            self.spare = nn.ReLU()

        def forward(self, x):
            return self.body(x)

    with pytest.raises(RuntimeError, match="not reached"):
        DRSAAttributor(Unused().eval(), EpsilonPlus(), "spare", basis).explain(x, target=0)
    for module in model.modules():
        assert not module._forward_hooks


@pytest.mark.zennit
def test_module_used_twice_is_refused(resnet18):
    model = resnet18
    composite = EpsilonPlus(canonizers=[ResNetCanonizer()])
    with pytest.raises(RuntimeError, match="ran 2 times"):
        with DRSAAttributor(model, composite, "layer1.0.relu", random_basis(64, [4])) as attributor:
            attributor.explain(torch.randn(1, 3, 32, 24), target=0)


def test_bad_subspaces_are_refused():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"d=6 dimensions but layer '4' has 8 channels"):
        DRSAAttributor(model, EpsilonPlus(), "4", random_basis(6, [2])).explain(
            torch.randn(1, 2, 6, 4), target=0
        )
    skewed = random_basis(8, [2, 2])
    skewed.components_[0] *= 1.1
    with pytest.raises(ValueError, match="not orthonormal"):
        DRSAAttributor(model, EpsilonPlus(), "4", skewed)
    with pytest.raises(ValueError, match="sums to 4 but components_ has 5 rows"):
        DRSAAttributor(model, EpsilonPlus(), "4", Basis(random_basis(8, [5]).components_, [2, 2]))
    nan = random_basis(8, [2])
    nan.components_[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        DRSAAttributor(model, EpsilonPlus(), "4", nan)
    with pytest.raises(ValueError, match="positive ints"):
        DRSAAttributor(model, EpsilonPlus(), "4", Basis(random_basis(8, [2]).components_, [2.0]))

    class Unfitted:
        def fit(self, X, context=None):
            return self

    with pytest.raises(ValueError, match=r"not fitted: call fit"):
        DRSAAttributor(model, EpsilonPlus(), "4", Unfitted())
    with pytest.raises(TypeError, match="components_ and subspace_sizes_"):
        DRSAAttributor(model, EpsilonPlus(), "4", np.eye(8))
    with pytest.raises(ValueError, match="same number of subspaces"):
        DRSAAttributor(
            model, EpsilonPlus(), "4", {0: random_basis(8, [2]), 1: random_basis(8, [1, 1])}
        )
    with pytest.raises(TypeError, match="class indices"):
        DRSAAttributor(model, EpsilonPlus(), "4", {"dog": random_basis(8, [2])})
    with pytest.raises(ValueError, match="empty"):
        DRSAAttributor(model, EpsilonPlus(), "4", {})


def test_bad_inputs_and_targets_are_refused():
    model = tiny_model()
    per_class = {0: random_basis(8, [2]), 2: random_basis(8, [2], seed=1)}
    x = torch.randn(2, 2, 6, 4)
    with DRSAAttributor(model, EpsilonPlus(), "4", per_class) as attributor:
        with pytest.raises(ValueError, match=r"class 1, which has no subspaces.*\[0, 2\]"):
            attributor.explain(x, target=[0, 1])
        with pytest.raises(ValueError, match="one explained class per sample"):
            attributor.explain(x)  # the default attr_output is the whole output
        bad = x.clone()
        bad[1, 0, 0, 0] = float("nan")
        with pytest.raises(ValueError, match=r"NaN or Inf \(first in sample 1\)"):
            attributor.explain(bad, target=0)
        with pytest.raises(ValueError, match="B >= 1"):
            attributor.explain(x[:0], target=0)
        with pytest.raises(TypeError, match="floating point"):
            attributor.explain(x.long(), target=0)
        with pytest.raises(ValueError, match="either target or attr_output"):
            attributor.explain(x, target=0, attr_output=one_hot(2, 3, 0))
        with pytest.raises(ValueError, match="output's shape"):
            attributor(x, one_hot(1, 3, 0))
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        DRSAAttributor(model, EpsilonPlus(), "4", per_class, chunk_size=0)
    with pytest.raises(TypeError, match="zennit Composite"):
        DRSAAttributor(model, None, "4", per_class)
    composite = EpsilonPlus()
    with composite.context(model):
        with pytest.raises(RuntimeError, match="registered on the model but not by this"):
            DRSAAttributor(model, composite, "4", per_class)(x, one_hot(2, 3, 0))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_fitted_drsa_relevances_agree_with_the_estimator():
    drsa_module = pytest.importorskip("zennit_drsa.estimators")
    model = tiny_model()
    x = torch.randn(12, 2, 6, 4, generator=torch.Generator().manual_seed(9))
    vectors = collect(model, EpsilonPlus(), "4", x, 1, n_locations="all", progress=False)
    drsa = drsa_module.DRSA(n_subspaces=2, subspace_dim=3, max_iter=50, random_state=0)
    drsa.fit(vectors.activations, context=vectors.context)
    with DRSAAttributor(model, EpsilonPlus(), "4", drsa) as attributor:
        explanation = attributor.explain(x, target=1)
    # The estimator's per-location relevances, summed over each input's locations.
    per_location = drsa.relevance(vectors.activations, vectors.context, residual=True)
    per_input = np.zeros((len(x), 3))
    np.add.at(per_input, vectors.input_index, per_location)
    torch.testing.assert_close(
        explanation.layer_relevance.double(), torch.from_numpy(per_input), rtol=1e-4, atol=1e-6
    )
    _, standard = Gradient(model, EpsilonPlus())(x, one_hot(12, 3, 1))
    assert relative_error(explanation.standard, standard) <= 1e-5
