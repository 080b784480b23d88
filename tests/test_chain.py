"""The chain path of concept maps: found only for plain chains, and equal to the generic path."""

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
        links = context.chain()
        assert links is not None
        # Blocks of two samples at the layer, split again further down where maps grow.
        budget = (len(sizes) + 1) * links[0].input[:1].nbytes * 2
        context.clear()
    if blocks == "nested":
        monkeypatch.setattr(chain_module, "BLOCK_BYTES", budget)
    for chunk_size in (None, 2):
        with DRSAAttributor(model, make_composite(model), layer, basis, chunk_size=chunk_size) as a:
            fast = a.explain(x, target=1)
        with monkeypatch.context() as generic:
            generic.setattr(LayerContext, "chain", lambda self: None)
            with DRSAAttributor(model, make_composite(model), layer, basis) as attributor:
                slow = attributor.explain(x, target=1)
        assert fast.heatmaps.shape == slow.heatmaps.shape == (5, len(sizes) + 1, *shape)
        for k in range(len(sizes) + 1):
            error = (fast.heatmaps[:, k] - slow.heatmaps[:, k]).norm()
            assert error <= 1e-5 * slow.heatmaps[:, k].norm()


def _chain(model: nn.Module, composite, layer: str, x, **kwargs):
    # The ratio context needs no consumer rule: chain detection does not depend on it.
    with LayerContext(model, composite, layer, context="ratio", **kwargs) as context:
        context.forward(x)
        links = context.chain()
        context.clear()
    return links


class Doubling(nn.Module):
    """Two convolutions with a functional operation between them."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv2d(1, 4, 3, padding=1)
        self.second = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.second(2 * self.first(x))).flatten(1).sum(1, keepdim=True)


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


def test_chain_is_found_only_for_plain_chains():
    x = torch.randn(2, 1, 6, 4)
    convolutions = LayerMapComposite([(Convolution, Epsilon()), (nn.Linear, Epsilon())])

    links = _chain(_sequential(False), EpsilonPlus(), "3", x, record_chain=True)
    assert [type(link.module) for link in links] == [nn.ReLU, nn.Conv2d, nn.ReLU, nn.Conv2d]
    assert links[-1].input.shape == x.shape
    # Not recorded unless asked for.
    assert _chain(_sequential(False), EpsilonPlus(), "3", x) is None
    # An in-place module without a rule overwrote its input.
    assert _chain(_sequential(True), convolutions, "3", x, record_chain=True) is None
    # A hook other than a BasicHook rule or Pass.
    guided = LayerMapComposite([(nn.ReLU, ReLUGuidedBackprop()), (Convolution, Epsilon())])
    assert _chain(_sequential(False), guided, "3", x, record_chain=True) is None
    # A functional operation between two modules.
    assert _chain(_init(Doubling()), convolutions, "relu", x, record_chain=True) is None
    # A hook of someone else's, which may change what flows through the module.
    model = _sequential(False)
    handle = model[0].register_forward_hook(lambda module, args, output: 2 * output)
    assert _chain(model, EpsilonPlus(), "3", x, record_chain=True) is None
    handle.remove()
    assert _chain(model, EpsilonPlus(), "3", x, record_chain=True) is not None


@pytest.mark.zennit
def test_resnet_blocks_below_the_layer_take_the_generic_path():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    x = torch.randn(1, 3, 32, 24, generator=torch.Generator().manual_seed(3))

    def composite():
        return EpsilonPlus(canonizers=[ResNetCanonizer()])

    # Skip connections in layer1 lie below layer2.0; none lie below the stem.
    assert _chain(model, composite(), "layer2.0", x, record_chain=True) is None
    stem = _chain(model, composite(), "maxpool", x, record_chain=True)
    assert stem is not None and len(stem) == 4
