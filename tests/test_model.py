"""AudioCNN: configuration, shapes, naming and LRP compatibility."""

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from audio_cnn.model import AudioCNN, AudioCNNConfig


@pytest.mark.parametrize(
    ("preset", "shape", "n_classes"), [("gtzan", (128, 128), 10), ("toy", (64, 64), 2)]
)
def test_presets_give_logits(preset, shape, n_classes):
    model = AudioCNN.preset(preset).eval()
    assert model.config.input_shape == shape
    assert model(torch.randn(3, 1, *shape)).shape == (3, n_classes)


def test_gtzan_preset_is_the_reference_architecture():
    model = AudioCNN.preset("gtzan")
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64, 128]
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.features) == 5
    dense = [m for m in model.classifier if isinstance(m, nn.Linear)]
    assert [(d.in_features, d.out_features) for d in dense] == [(2048, 128), (128, 128), (128, 10)]
    assert [m.p for m in model.classifier if isinstance(m, nn.Dropout)] == [0.4, 0.4]
    # The reference DRSA layer: ReLU output of the 4th block (64 channels, 16x16 map).
    layer = dict(model.named_modules())[model.block_output(4)]
    assert isinstance(layer, nn.ReLU)


def test_block_output_names_and_errors():
    model = AudioCNN.preset("toy")
    assert model.block_output(1) == "features.1"
    assert model.block_output(-1) == "features.13"
    with pytest.raises(ValueError, match="block must be"):
        model.block_output(6)
    with pytest.raises(ValueError, match="block must be"):
        model.block_output(0)


def test_no_inplace_relu_and_no_module_reuse():
    model = AudioCNN.preset("gtzan", batch_norm=True, convs_per_block=2).eval()
    assert not any(getattr(m, "inplace", False) for m in model.modules())
    calls: dict[str, int] = {}

    def count(name):
        return lambda module, inputs, output: calls.__setitem__(name, calls.get(name, 0) + 1)

    handles = [
        module.register_forward_hook(count(name))
        for name, module in model.named_modules()
        if not list(module.children())
    ]
    model(torch.randn(2, 1, 128, 128))
    for handle in handles:
        handle.remove()
    assert calls and set(calls.values()) == {1}


@settings(max_examples=15, deadline=None)
@given(
    height=st.integers(8, 40),
    width=st.integers(8, 40),
    n_blocks=st.integers(1, 3),
    convs=st.integers(1, 2),
    batch_norm=st.booleans(),
)
def test_flatten_size_is_inferred_for_non_square_inputs(height, width, n_blocks, convs, batch_norm):
    config = AudioCNNConfig(
        input_shape=(height, width),
        channels=(4,) * n_blocks,
        convs_per_block=convs,
        dense=(8,),
        n_classes=3,
        batch_norm=batch_norm,
    )
    model = AudioCNN(config).eval()
    assert model(torch.randn(2, 1, height, width)).shape == (2, 3)


def test_config_round_trips_through_json():
    config = AudioCNNConfig.preset("toy", pool_size=(2, 2, 2, 2, 1), batch_norm=True)
    restored = AudioCNNConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kernel_size": 4}, "odd"),
        ({"n_classes": 1}, "n_classes"),
        ({"dropout": 1.0}, "dropout"),
        ({"input_shape": (16, 16)}, "too small"),
        ({"channels": ()}, "channels"),
        ({"convs_per_block": (1, 2)}, "5 blocks"),
    ],
)
def test_invalid_configs_are_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        AudioCNNConfig.preset("gtzan", **overrides)


def test_unknown_preset_and_keys():
    with pytest.raises(ValueError, match="toy"):
        AudioCNNConfig.preset("resnet")
    with pytest.raises(ValueError, match="unknown AudioCNN config keys"):
        AudioCNNConfig.from_dict({"chanels": [1]})


def test_wrong_input_shape_names_the_expected_shape():
    model = AudioCNN.preset("toy").eval()
    with pytest.raises(ValueError, match=r"\(B, 1, 64, 64\)"):
        model(torch.randn(2, 1, 128, 128))


@pytest.mark.zennit
def test_lrp_through_the_model_conserves_relevance():
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonPlus

    torch.manual_seed(0)
    model = AudioCNN.preset("toy").eval()
    # Zero biases: with them relevance leaks into the bias terms and is not conserved.
    for module in model.modules():
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    x = torch.rand(2, 1, 64, 64)
    with Gradient(model, EpsilonPlus()) as attributor:
        # Zennit starts from attr_output; output * one-hot makes the total the target logit.
        output, relevance = attributor(x, lambda out: out * torch.eye(2))
    assert relevance.shape == x.shape
    assert torch.isfinite(relevance).all()
    target = output[[0, 1], [0, 1]]
    total = relevance.sum(dim=(1, 2, 3))
    positive = target > 0
    assert positive.any()
    torch.testing.assert_close(total[positive], target[positive], rtol=0.05, atol=1e-4)
