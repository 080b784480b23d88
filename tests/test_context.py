"""Exact LRP context at a layer: checked against Zennit's relevance and brute-force formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from zennit.attribution import Gradient
from zennit.composites import (
    EpsilonAlpha2Beta1,
    EpsilonGammaBox,
    EpsilonPlus,
    LayerMapComposite,
)
from zennit.core import stabilize
from zennit.rules import Epsilon, Pass, WSquare, ZPlus
from zennit.torchvision import ResNetCanonizer, VGGCanonizer
from zennit.types import Activation, Convolution

from audio_cnn.model import AudioCNN
from zennit_drsa.context import RATIO_EPSILON, LayerContext, target_gradient
from zennit_drsa.layers import check_eval, layer_names, resolve_layer

pytestmark = pytest.mark.zennit

EPSILON = 1e-3


def _init(model: nn.Module, seed: int = 0) -> nn.Module:
    """Seeded weights with non-zero biases, in eval mode."""
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.normal_(module.weight, std=0.5)
            nn.init.normal_(module.bias, std=0.1)
    return model.eval()


def tiny_cnn() -> nn.Sequential:
    """Conv→ReLU→MaxPool→Conv→ReLU→AdaptiveAvgPool→Flatten→Linear."""
    return _init(
        nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 6, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(6, 3),
        )
    )


def dense_head_cnn() -> nn.Sequential:
    """Conv→ReLU→MaxPool→Conv→ReLU→Flatten→Linear→ReLU→Dropout→Linear on 8×6 inputs."""
    return _init(
        nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 5, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(5 * 4 * 3, 8),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(8, 3),
        )
    )


def reference_relevance(
    model: nn.Module, composite, layer: str, x: torch.Tensor, attr_output: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer output and Zennit's relevance there, computed without LayerContext."""
    with composite.context(model) as modified:
        store = {}
        module = dict(modified.named_modules())[layer]
        handle = module.register_forward_hook(lambda m, i, o: store.setdefault("out", o))
        try:
            output = modified(x.clone().requires_grad_())
            (relevance,) = torch.autograd.grad(output, store["out"], attr_output)
        finally:
            handle.remove()
    return store["out"].detach(), relevance


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).norm() / expected.norm())


def one_hot(batch: int, n_classes: int, index: int) -> torch.Tensor:
    grad = torch.zeros(batch, n_classes)
    grad[:, index] = 1.0
    return grad


COMPOSITES = {
    "EpsilonPlus": lambda: EpsilonPlus(),
    "EpsilonGammaBox": lambda: EpsilonGammaBox(low=-3.0, high=3.0),
    "EpsilonAlpha2Beta1": lambda: EpsilonAlpha2Beta1(),
}


@pytest.mark.parametrize("composite_name", sorted(COMPOSITES))
@pytest.mark.parametrize(
    ("make_model", "layer"),
    [
        (tiny_cnn, "1"),  # ReLU → MaxPool → Conv consumer
        (tiny_cnn, "0"),  # conv output → ReLU (Pass) → MaxPool → Conv
        (tiny_cnn, "4"),  # ReLU → AdaptiveAvgPool (Norm rule) consumer
        (tiny_cnn, "3"),  # a layer that has a rule itself
        (dense_head_cnn, "4"),  # ReLU → Flatten → Linear consumer
        (dense_head_cnn, "7"),  # dense ReLU → Dropout → Linear consumer
    ],
)
def test_activation_times_context_is_zennit_relevance(composite_name, make_model, layer):
    model = make_model()
    x = torch.randn(2, 3, 8, 6, generator=torch.Generator().manual_seed(1))
    attr_output = one_hot(2, 3, 1)
    expected_a, expected_r = reference_relevance(
        model, COMPOSITES[composite_name](), layer, x, attr_output
    )
    with LayerContext(model, COMPOSITES[composite_name](), layer) as context:
        result = context(x, 1)
    assert torch.equal(result.activation, expected_a)
    assert relative_error(result.relevance, expected_r) <= 1e-5
    assert relative_error(result.activation * result.context, expected_r) <= 1e-5
    assert not result.bypass
    assert result.output.shape == (2, 3)


@pytest.mark.parametrize("rule", ["epsilon", "zplus"])
def test_context_equals_brute_force_formula_where_activation_is_zero(rule):
    # Conv → ReLU → Conv: the second conv consumes the ReLU output directly.
    model = _init(
        nn.Sequential(
            nn.Conv2d(2, 5, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(5, 4, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(4 * 7 * 5, 3),
        ),
        seed=2,
    )
    conv_rule = Epsilon(epsilon=EPSILON) if rule == "epsilon" else ZPlus(stabilizer=EPSILON)

    def composite():
        return LayerMapComposite(
            [(Activation, Pass()), (Convolution, conv_rule), (nn.Linear, Epsilon(EPSILON))]
        )

    x = torch.randn(3, 2, 7, 5, generator=torch.Generator().manual_seed(3))
    attr_output = one_hot(3, 3, 2)
    with LayerContext(model, composite(), "1") as context:
        result = context(x, 2)
    a = result.activation
    _, upper = reference_relevance(model, composite(), "2", x, attr_output)

    # c_j = Σ_k ρ(w_jk) R_k / (z_k + ε sign z_k): the transposed conv of R / z.
    consumer = model[2]
    weight = consumer.weight if rule == "epsilon" else consumer.weight.clamp(min=0)
    bias = consumer.bias if rule == "epsilon" else consumer.bias.clamp(min=0)
    probe = a.clone().requires_grad_()
    z = nn.functional.conv2d(probe, weight, bias, padding=1)
    (brute,) = torch.autograd.grad(z, probe, upper / stabilize(z.detach(), EPSILON))

    zero = a == 0
    assert zero.float().mean() > 0.2
    assert relative_error(result.context, brute) <= 1e-5
    assert (result.context[zero] != 0).float().mean() > 0.9


def test_ratio_context_is_relevance_over_activation_and_misses_zero_units():
    model, x = tiny_cnn(), torch.randn(2, 3, 8, 6)
    with LayerContext(model, EpsilonPlus(), "4", context="ratio") as context:
        ratio = context(x, 0)
    with LayerContext(model, EpsilonPlus(), "4") as context:
        exact = context(x, 0)
    expected = ratio.relevance / (ratio.activation + RATIO_EPSILON)
    torch.testing.assert_close(ratio.context, expected, rtol=0, atol=0)
    torch.testing.assert_close(ratio.relevance, exact.relevance)
    zero = exact.activation == 0
    assert zero.any()
    assert (ratio.context[zero] == 0).all()
    assert (exact.context[zero] != 0).any()
    # Where a > 0 both agree (up to the 1e-7 shift).
    positive = exact.activation > 1e-2
    torch.testing.assert_close(ratio.context[positive], exact.context[positive], rtol=1e-4, atol=0)


@pytest.fixture(scope="module")
def vgg():
    # Built on the meta device to skip initialising the 100M-parameter head, which a small head
    # replaces; the convolutional part is torchvision's unchanged.
    with torch.device("meta"):
        model = torchvision.models.vgg11(weights=None)
    model.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 16), nn.ReLU(), nn.Linear(16, 10))
    model = model.to_empty(device="cpu")
    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(module.weight)
            nn.init.normal_(module.bias, std=0.01)
    return model.eval()


@pytest.mark.parametrize(
    ("layer", "composite"),
    [
        ("features.4", lambda: EpsilonGammaBox(low=-3.0, high=3.0, canonizers=[VGGCanonizer()])),
        ("features.7", lambda: EpsilonPlus(canonizers=[VGGCanonizer()])),
    ],
)
def test_vgg11_layers(vgg, layer, composite):
    x = torch.randn(1, 3, 48, 32, generator=torch.Generator().manual_seed(4))
    _, expected = reference_relevance(vgg, composite(), layer, x, one_hot(1, 10, 7))
    with LayerContext(vgg, composite(), layer) as context:
        result = context(x, 7)
    assert relative_error(result.activation * result.context, expected) <= 1e-5
    assert result.activation.shape[2] != result.activation.shape[3]  # non-square map


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


def _resnet_composite():
    return EpsilonPlus(canonizers=[ResNetCanonizer()])


def test_resnet_block_output_is_exact_and_not_bypassed(resnet):
    x = torch.randn(1, 3, 32, 24, generator=torch.Generator().manual_seed(5))
    _, expected = reference_relevance(resnet, _resnet_composite(), "layer1.0", x, one_hot(1, 10, 3))
    with LayerContext(resnet, _resnet_composite(), "layer1.0") as context:
        result = context(x, 3)
        # The next block reads the output twice: its first conv and its skip connection.
        assert set(context.consumers) == {"layer1.1.conv1", "layer1.1.canonizer_sum"}
    assert relative_error(result.activation * result.context, expected) <= 1e-5
    assert not result.bypass


@pytest.mark.parametrize(("layer", "bypass"), [("layer1.0", False), ("layer1.0.conv2", True)])
def test_bypass_flags_relevance_that_skips_the_layer(resnet, layer, bypass):
    """With a bypass, LRP from the layer down covers only part of the full explanation."""
    x = torch.randn(1, 3, 32, 24, generator=torch.Generator().manual_seed(6))
    attr_output = one_hot(1, 10, 3)
    with LayerContext(resnet, _resnet_composite(), layer) as context:
        output = context.forward(x)
        relevance, c = context.backward(output, attr_output, retain_graph=True)
        (through_layer,) = torch.autograd.grad(
            context.activation, context.input, relevance, retain_graph=True
        )
        (full,) = torch.autograd.grad(output, context.input, attr_output)
        activation = context.activation.detach()
        assert context.bypass is bypass
    # The decomposition at the layer is exact either way; only its coverage differs.
    assert relative_error(activation * c, relevance) <= 1e-5
    if bypass:
        assert relative_error(through_layer, full) > 0.05
    else:
        assert relative_error(through_layer, full) <= 1e-4


def test_audio_cnn_fourth_block_output():
    torch.manual_seed(7)
    model = AudioCNN.preset("toy").eval()
    layer = "features.10"  # conv, relu, pool per block: the 4th block's ReLU is index 10
    assert isinstance(model.features[10], nn.ReLU) and model.block_output(4) == layer
    x = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(8))

    def composite():
        return EpsilonGammaBox(low=-4.0, high=4.0)

    _, expected = reference_relevance(model, composite(), layer, x, one_hot(2, 2, 1))
    with LayerContext(model, composite(), layer) as context:
        result = context(x, 1)
    assert result.activation.shape == (2, 32, 8, 8)
    assert relative_error(result.activation * result.context, expected) <= 1e-5


def test_layer_rules_are_untouched():
    """LRP to the input is the same with and without LayerContext's hooks (layer has a rule)."""
    model, x = tiny_cnn(), torch.randn(2, 3, 8, 6)
    attr_output = one_hot(2, 3, 2)
    _, expected = Gradient(model, EpsilonGammaBox(low=-3.0, high=3.0))(x, attr_output)
    with LayerContext(model, EpsilonGammaBox(low=-3.0, high=3.0), "3") as context:
        output = context.forward(x)
        context.backward(output, attr_output, retain_graph=True)
        (heatmap,) = torch.autograd.grad(output, context.input, attr_output)
    assert relative_error(heatmap, expected) <= 1e-5


def test_hooks_are_removed_and_the_model_is_unchanged():
    model, x = tiny_cnn(), torch.randn(2, 3, 8, 6)
    before = model(x)
    with LayerContext(model, EpsilonPlus(), "1") as context:
        context(x, 0)
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
    torch.testing.assert_close(model(x), before, rtol=0, atol=0)
    # The same context object and composite can be entered again.
    with context:
        context(x, 0)


def test_low_level_steps_keep_the_graph_for_a_further_pass():
    model, x = tiny_cnn(), torch.randn(2, 3, 8, 6)
    with LayerContext(model, EpsilonPlus(), "1") as context:
        output = context.forward(x)
        relevance, _ = context.backward(output, one_hot(2, 3, 0), retain_graph=True)
        (heatmap,) = torch.autograd.grad(context.activation, context.input, relevance)
    assert heatmap.shape == x.shape and heatmap.abs().sum() > 0


# -- errors ------------------------------------------------------------------------------


def test_unknown_layer_suggests_close_names():
    with pytest.raises(ValueError, match=r"did you mean '1'.*valid names include"):
        with LayerContext(tiny_cnn(), EpsilonPlus(), "11"):
            pass
    torch.manual_seed(0)
    audio = AudioCNN.preset("toy").eval()
    with pytest.raises(ValueError, match=r"did you mean 'features\.10'"):
        resolve_layer(audio, "featurs.10")


def test_training_mode_is_rejected():
    model = tiny_cnn().train()
    with pytest.raises(ValueError, match=r"training mode.*model\.eval\(\)"):
        LayerContext(model, EpsilonPlus(), "1").__enter__()
    model.eval()
    with LayerContext(model, EpsilonPlus(), "1") as context:
        model.train()
        with pytest.raises(ValueError, match="training mode"):
            context(torch.randn(1, 3, 8, 6), 0)
        model.eval()
    for module in model.modules():
        assert not module._forward_hooks


def test_layer_reached_twice_is_rejected(resnet):
    # torchvision's BasicBlock applies its one ReLU module twice.
    with LayerContext(resnet, _resnet_composite(), "layer1.0.relu") as context:
        with pytest.raises(RuntimeError, match="ran 2 times"):
            context(torch.randn(1, 3, 32, 32), 0)


def test_rule_module_reused_is_rejected():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 3, padding=1)
            self.relu = nn.ReLU()
            self.head = nn.Linear(2, 2)

        def forward(self, x):
            x = self.relu(self.conv(x))
            x = self.conv(x)
            return self.head(x.mean(dim=(2, 3)))

    with LayerContext(Twice().eval(), EpsilonPlus(), "relu") as context:
        with pytest.raises(RuntimeError, match=r"more than once.*'conv'"):
            context(torch.randn(1, 2, 4, 4), 0)


def test_layer_not_reached_is_rejected():
    class Skips(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = tiny_cnn()
            self.unused = nn.ReLU()

        def forward(self, x):
            return self.body(x)

    with LayerContext(Skips().eval(), EpsilonPlus(), "unused") as context:
        with pytest.raises(RuntimeError, match="not reached"):
            context(torch.randn(1, 3, 8, 6), 0)


def test_output_layer_has_no_consumer():
    with LayerContext(tiny_cnn(), EpsilonPlus(), "7") as context:
        with pytest.raises(RuntimeError, match="no module with an LRP rule"):
            context(torch.randn(1, 3, 8, 6), 0)


def test_consumer_rule_without_context_fails_the_check():
    # WSquare ignores its input, so its relevance is not activation × context.
    composite = LayerMapComposite(
        [(Activation, Pass()), (Convolution, WSquare()), (nn.Linear, Epsilon())]
    )
    with LayerContext(tiny_cnn(), composite, "1") as context:
        with pytest.raises(RuntimeError, match=r"differs from the LRP relevance.*\['3'\]"):
            context(torch.randn(2, 3, 8, 6), 0)
    with LayerContext(tiny_cnn(), composite, "1", tol=None) as context:
        result = context(torch.randn(2, 3, 8, 6), 0)
    assert relative_error(result.activation * result.context, result.relevance) > 1e-2
    with pytest.raises(ValueError, match="tol must be positive"):
        LayerContext(tiny_cnn(), composite, "1", tol=0.0)


def test_registered_composite_is_rejected():
    model, composite = tiny_cnn(), EpsilonPlus()
    with composite.context(model):
        with pytest.raises(RuntimeError, match="already carries Zennit hooks"):
            LayerContext(model, EpsilonPlus(), "1").__enter__()


def test_use_outside_the_with_block_is_rejected():
    with pytest.raises(RuntimeError, match="context manager"):
        LayerContext(tiny_cnn(), EpsilonPlus(), "1")(torch.randn(1, 3, 8, 6), 0)
    with pytest.raises(ValueError, match="context must be one of"):
        LayerContext(tiny_cnn(), EpsilonPlus(), "1", context="gradient")
    with LayerContext(tiny_cnn(), EpsilonPlus(), "1") as context:
        with pytest.raises(TypeError, match="floating point"):
            context(torch.ones(1, 3, 8, 6, dtype=torch.int64), 0)
        with pytest.raises(RuntimeError, match=r"call forward\(input\) before"):
            context.backward(torch.zeros(1, 3), torch.zeros(1, 3))


def test_resolve_layer_by_module_and_bad_layers():
    model = tiny_cnn()
    assert resolve_layer(model, model[4]) == ("4", model[4])
    assert layer_names(model) == [str(i) for i in range(8)]
    with pytest.raises(ValueError, match="not part of the model"):
        resolve_layer(model, nn.ReLU())
    with pytest.raises(ValueError, match="whole model"):
        resolve_layer(model, model)
    with pytest.raises(TypeError, match="module name"):
        resolve_layer(model, 4)
    check_eval(model)


# -- targets -----------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(2, 7), st.data())
def test_target_gradient_is_one_hot_for_labels(batch, n_classes, data):
    labels = data.draw(st.lists(st.integers(0, n_classes - 1), min_size=batch, max_size=batch))
    output = torch.randn(batch, n_classes, dtype=torch.float64)
    for form in (labels, np.array(labels), torch.tensor(labels)):
        grad = target_gradient(form, output)
        assert grad.dtype == output.dtype and grad.shape == output.shape
        assert torch.equal(grad.argmax(dim=1), torch.tensor(labels))
        assert torch.equal(grad.sum(dim=1), torch.ones(batch, dtype=torch.float64))
    single = target_gradient(labels[0], output)
    assert (single[:, labels[0]] == 1).all() and single.sum() == batch


def test_target_gradient_callable_and_errors():
    output = torch.randn(3, 4, requires_grad=True)
    grad = target_gradient(lambda out: out * (out > 0), output)
    assert not grad.requires_grad
    torch.testing.assert_close(grad, (output * (output > 0)).detach())
    with pytest.raises(ValueError, match=r"lie in 0\.\.3"):
        target_gradient(4, output)
    with pytest.raises(ValueError, match=r"lie in 0\.\.3"):
        target_gradient([0, -1, 2], output)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        target_gradient([0, 1], output)
    with pytest.raises(TypeError, match="integer class indices"):
        target_gradient([0.0, 1.0, 2.0], output)
    with pytest.raises(TypeError, match="bool"):
        target_gradient(True, output)
    with pytest.raises(ValueError, match="output's shape"):
        target_gradient(lambda out: out[:, 0], output)
    with pytest.raises(ValueError, match="NaN or Inf"):
        target_gradient(lambda out: out * float("nan"), output)
    with pytest.raises(ValueError, match=r"\(B, n_classes\)"):
        target_gradient(0, torch.randn(2, 3, 4))
