"""The propagation strategies below the layer, chosen by ``propagation``.

The chain path is found only for plain chains (else the reason is named) and equals the
generic path; "auto" takes the chain path where it applies.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from zennit.composites import EpsilonGammaBox, EpsilonPlus, LayerMapComposite, layer_map_base
from zennit.rules import Epsilon, Gamma, ReLUGuidedBackprop
from zennit.torchvision import ResNetCanonizer, VGGCanonizer
from zennit.types import Convolution

import zennit_drsa._chain as chain_module
from audio_cnn.model import AudioCNN
from zennit_drsa.attribution import DRSAAttributor
from zennit_drsa.composites import audio_composite
from zennit_drsa.context import LayerContext


class Basis:
    """Random orthonormal subspaces with the estimator interface."""

    def __init__(self, dim: int, sizes: list[int], seed: int = 0) -> None:
        q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
        self.components_ = q[:, : sum(sizes)].T.copy()
        self.subspace_sizes_ = list(sizes)


def _init(model: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(module.weight)
            nn.init.normal_(module.bias, std=0.05)
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _vgg11() -> nn.Module:
    with torch.device("meta"):
        model = torchvision.models.vgg11(weights=None)
    model.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 16), nn.ReLU(), nn.Linear(16, 10))
    return _init(model.to_empty(device="cpu"))


def _negative_inputs() -> nn.Module:
    """γ rules on inputs with both signs (no ReLU before) and Norm on average pooling."""
    return _init(
        nn.Sequential(
            nn.Conv2d(2, 6, 3, padding=1),
            nn.AvgPool2d(2),
            nn.Conv2d(6, 8, 3, padding="same"),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(8 * 3 * 2, 3),
        )
    )


def _gamma_composite(model: nn.Module) -> LayerMapComposite:
    return LayerMapComposite(
        [*layer_map_base(), (Convolution, Gamma(gamma=0.25)), (nn.Linear, Epsilon())]
    )


CASES = {
    # name: (model, composite, layer, input shape (C, H, W), d, subspace sizes)
    "audio_cnn-reference": (
        lambda: _init(AudioCNN.preset("toy", input_shape=(64, 48))),
        lambda model: audio_composite("reference", model),
        "features.10",
        (1, 64, 48),
        32,
        [8, 8, 8],
    ),
    "audio_cnn-dense": (
        lambda: _init(AudioCNN.preset("toy", input_shape=(64, 48))),
        lambda model: EpsilonGammaBox(low=-4.0, high=4.0),
        "classifier.2",
        (1, 64, 48),
        64,
        [16, 16],
    ),
    "audio_cnn-batch-norm": (
        lambda: _init(AudioCNN.preset("toy", input_shape=(32, 32), batch_norm=True)),
        lambda model: audio_composite("reference", model),
        "features.15",
        (1, 32, 32),
        32,
        [8, 8],
    ),
    "vgg11": (
        _vgg11,
        lambda model: EpsilonPlus(canonizers=[VGGCanonizer()]),
        "features.7",
        (3, 48, 32),
        256,
        [16, 16],
    ),
    "negative-inputs": (_negative_inputs, _gamma_composite, "3", (2, 6, 4), 8, [2, 3]),
}


@pytest.mark.zennit
@pytest.mark.parametrize("blocks", ["whole", "nested"])
@pytest.mark.parametrize("case", list(CASES))
def test_chain_path_equals_the_generic_path(case, blocks, monkeypatch):
    make_model, make_composite, layer, shape, dim, sizes = CASES[case]
    model = make_model()
    basis = Basis(dim, sizes, seed=1)
    x = torch.randn(5, *shape, generator=torch.Generator().manual_seed(2))
    with LayerContext(model, make_composite(model), layer, record_chain=True) as context:
        context.forward(x)
        links = context.require_chain()
        # Blocks of two samples at the layer, split again further down where maps grow.
        budget = (len(sizes) + 1) * links[0].input[:1].nbytes * 2
        context.clear()
    if blocks == "nested":
        monkeypatch.setattr(chain_module, "BLOCK_BYTES", budget)
    for chunk_size in (None, 2):
        maps = {}
        for propagation in ("chain", "generic"):
            with DRSAAttributor(
                model,
                make_composite(model),
                layer,
                basis,
                chunk_size=chunk_size,
                propagation=propagation,
            ) as attributor:
                maps[propagation] = attributor.explain(x, target=1).heatmaps
        fast, slow = maps["chain"], maps["generic"]
        assert fast.shape == slow.shape == (5, len(sizes) + 1, *shape)
        for k in range(len(sizes) + 1):
            error = (fast[:, k] - slow[:, k]).norm()
            assert error <= 1e-5 * slow[:, k].norm()


def _chain(model: nn.Module, composite, layer: str, x, **kwargs):
    # The ratio context needs no consumer rule: chain detection does not depend on it.
    with LayerContext(model, composite, layer, context="ratio", **kwargs) as context:
        context.forward(x)
        links = context.chain()
        context.clear()
    return links


def _chain_break(model: nn.Module, composite, layer: str, *inputs) -> str:
    """The reason why the modules below the layer are not a chain."""
    with LayerContext(model, composite, layer, context="ratio", record_chain=True) as context:
        context.forward(inputs if len(inputs) > 1 else inputs[0])
        with pytest.raises(chain_module.NotAChainError) as error:
            context.require_chain()
        context.clear()
    return str(error.value)


class Doubling(nn.Module):
    """Two convolutions with a functional operation between them, then a dense head."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv2d(1, 4, 3, padding=1)
        self.second = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Linear(4 * 6 * 4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.relu(self.second(2 * self.first(x))).flatten(1))


def _sequential(inplace: bool) -> nn.Sequential:
    return _init(
        nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.ReLU(inplace=inplace),
            nn.Conv2d(4, 4, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(4 * 6 * 4, 2),
        )
    )


class TwoInputs(nn.Module):
    """A chain whose input is the sum of two model inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.body = _sequential(False)

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        return self.body(first + second)


def _convolutions() -> LayerMapComposite:
    """ε on convolutions and dense layers, no rule on activations."""
    return LayerMapComposite([(Convolution, Epsilon()), (nn.Linear, Epsilon())])


def _maps(model, composite, layer, basis, x, propagation) -> torch.Tensor:
    with DRSAAttributor(model, composite, layer, basis, propagation=propagation) as attributor:
        return attributor.explain(x, target=0).heatmaps


def _autograd_reaches_input(model, composite, layer, basis, x, propagation) -> bool:
    """Whether autograd carried the maps to the input: the generic path does, the chain not."""
    x = x.clone().requires_grad_()
    reached = []
    x.register_hook(lambda grad: reached.append(True))
    _maps(model, composite, layer, basis, x, propagation)
    return bool(reached)


def test_chain_is_found_only_for_plain_chains_and_otherwise_named_what_breaks_it():
    x = torch.randn(2, 1, 6, 4)
    convolutions = _convolutions()

    links = _chain(_sequential(False), EpsilonPlus(), "3", x, record_chain=True)
    assert [type(link.module) for link in links] == [nn.ReLU, nn.Conv2d, nn.ReLU, nn.Conv2d]
    assert links[-1].input.shape == x.shape
    # Not recorded unless asked for.
    assert _chain(_sequential(False), EpsilonPlus(), "3", x) is None
    with LayerContext(_sequential(False), EpsilonPlus(), "3") as context:
        context.forward(x)
        with pytest.raises(RuntimeError, match="record_chain=True"):
            context.require_chain()
        context.clear()
    # An in-place module without a rule overwrote its input.
    assert _chain(_sequential(True), convolutions, "3", x, record_chain=True) is None
    assert "in-place operation changed the input or output of module '1'" in _chain_break(
        _sequential(True), convolutions, "3", x
    )
    # A hook other than a BasicHook rule or Pass.
    guided = LayerMapComposite([(nn.ReLU, ReLUGuidedBackprop()), (Convolution, Epsilon())])
    assert _chain(_sequential(False), guided, "3", x, record_chain=True) is None
    assert "module '3' has a Zennit hook of type ReLUGuidedBackprop" in _chain_break(
        _sequential(False), guided, "3", x
    )
    # A functional operation between two modules.
    assert _chain(_init(Doubling()), convolutions, "relu", x, record_chain=True) is None
    assert "the input of module 'second' is not the output of a module" in _chain_break(
        _init(Doubling()), convolutions, "relu", x
    )
    # A hook of someone else's, which may change what flows through the module.
    model = _sequential(False)
    handle = model[0].register_forward_hook(lambda module, args, output: 2 * output)
    assert _chain(model, EpsilonPlus(), "3", x, record_chain=True) is None
    assert "module '0' carries a hook that is not Zennit's" in _chain_break(
        model, EpsilonPlus(), "3", x
    )
    handle.remove()
    assert _chain(model, EpsilonPlus(), "3", x, record_chain=True) is not None
    # A module the chain path does not support, and a model with two inputs.
    unsupported = _sequential(False)
    unsupported[1] = nn.Tanh().eval()
    assert "module '1' is a Tanh; the chain path takes convolution, linear" in _chain_break(
        unsupported, EpsilonPlus(), "3", x
    )
    assert "the model takes 2 inputs" in _chain_break(
        TwoInputs().eval(), EpsilonPlus(), "body.3", x, x
    )


@pytest.mark.zennit
def test_resnet_blocks_below_the_layer_take_the_generic_path():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    x = torch.randn(1, 3, 32, 24, generator=torch.Generator().manual_seed(3))

    def composite():
        return EpsilonPlus(canonizers=[ResNetCanonizer()])

    # Skip connections in layer1 lie below layer2.0; none lie below the stem.
    assert _chain(model, composite(), "layer2.0", x, record_chain=True) is None
    # The canonizer sums the skip connection in a module of its own.
    assert "module 'layer2.0.canonizer_sum' is a Sum" in _chain_break(
        model, composite(), "layer2.0", x
    )
    stem = _chain(model, composite(), "maxpool", x, record_chain=True)
    assert stem is not None and len(stem) == 4
    block = (model, composite(), "layer2.0", Basis(128, [16, 16]), x)
    assert _autograd_reaches_input(*block, "auto")
    with pytest.raises(ValueError, match="propagation='chain' needs"):
        _maps(*block, "chain")


def test_auto_propagation_takes_the_chain_path_where_it_applies_and_generic_elsewhere():
    x = torch.randn(2, 1, 6, 4, generator=torch.Generator().manual_seed(4))
    basis = Basis(4, [2, 1])
    chain = (_sequential(False), EpsilonPlus(), "3", basis, x)
    assert not _autograd_reaches_input(*chain, "chain")
    assert _autograd_reaches_input(*chain, "generic")
    assert not _autograd_reaches_input(*chain, "auto")
    torch.testing.assert_close(_maps(*chain, "auto"), _maps(*chain, "chain"), rtol=0, atol=0)
    not_chain = (_init(Doubling()), _convolutions(), "relu", basis, x)
    assert _autograd_reaches_input(*not_chain, "auto")
    torch.testing.assert_close(
        _maps(*not_chain, "auto"), _maps(*not_chain, "generic"), rtol=0, atol=0
    )


def test_chain_propagation_refuses_a_model_that_is_not_a_chain_and_says_why():
    x = torch.randn(2, 1, 6, 4)
    model = _init(Doubling())
    with DRSAAttributor(model, _convolutions(), "relu", Basis(4, [2]), propagation="chain") as a:
        with pytest.raises(
            ValueError,
            match=r"propagation='chain' needs the modules from the model input to layer 'relu' "
            r"to form a plain chain, but the input of module 'second' is not the output of a "
            r"module.*pass propagation='auto' .* or 'generic'",
        ):
            a.explain(x, target=0)
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


@pytest.mark.parametrize("propagation", ["fast", "Chain", None, 1])
def test_unknown_propagation_is_refused_with_the_allowed_values(propagation):
    with pytest.raises(
        ValueError, match=r"propagation must be one of \('auto', 'chain', 'generic'\)"
    ):
        DRSAAttributor(
            _sequential(False), EpsilonPlus(), "3", Basis(4, [2]), propagation=propagation
        )
