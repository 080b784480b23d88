"""Composite presets: the reference rule map, batch-norm merging, Zennit composites by name."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from zennit.attribution import Gradient
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import COMPOSITES, EpsilonPlus
from zennit.core import Hook
from zennit.rules import Epsilon, Gamma, Norm, Pass, WSquare

from audio_cnn.model import AudioCNN
from zennit_drsa.composites import (
    REFERENCE_GAMMAS,
    audio_composite,
    composite_names,
    reference_composite,
)

pytestmark = pytest.mark.zennit


def registered_rules(model: nn.Module) -> dict[str, Hook]:
    """The Zennit hook registered on each module (by name)."""
    rules = {}
    for name, module in model.named_modules():
        for function in module._forward_hooks.values():
            owner = getattr(function, "__self__", None)
            if isinstance(owner, Hook):
                rules[name] = owner
    return rules


def gamma_of(rule: Gamma) -> float:
    """γ of a Gamma rule, read off its first parameter modifier (w + γ·max(w, 0))."""
    modified = rule.param_modifiers[0].modifier(torch.tensor([1.0]), "weight")
    return float(modified[0]) - 1.0


def toy(**overrides) -> AudioCNN:
    torch.manual_seed(0)
    return AudioCNN.preset("toy", **overrides).eval()


def test_reference_rule_map_on_the_audio_cnn():
    model = toy()
    composite = audio_composite("reference", model)
    with composite.context(model):
        rules = registered_rules(model)
    convolutions = [f"features.{i}" for i in (0, 3, 6, 9, 12)]
    assert isinstance(rules[convolutions[0]], WSquare)
    gammas = [gamma_of(rules[name]) for name in convolutions[1:]]
    assert all(isinstance(rules[name], Gamma) for name in convolutions[1:])
    assert gammas == pytest.approx(list(REFERENCE_GAMMAS))
    for name in ("classifier.1", "classifier.4", "classifier.7"):
        assert isinstance(rules[name], Epsilon)
    assert all(isinstance(rules[f"features.{i}"], Pass) for i in (1, 4, 7, 10, 13))
    assert not composite.canonizers
    assert not registered_rules(model)


def test_convolutions_beyond_the_schedule_keep_the_last_gamma():
    model = toy(convs_per_block=2)
    with reference_composite(model, gammas=(0.5, 0.25)).context(model):
        rules = registered_rules(model)
    convolutions = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert len(convolutions) == 10
    assert isinstance(rules[convolutions[0]], WSquare)
    gammas = [gamma_of(rules[name]) for name in convolutions[1:]]
    assert gammas == pytest.approx([0.5] + [0.25] * 8)


def test_batch_norm_is_merged_into_the_convolution():
    model = toy(batch_norm=True)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    x = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    expected_output = model(x)
    composite = audio_composite("reference", model)
    assert [type(c) for c in composite.canonizers] == [SequentialMergeBatchNorm]
    with composite.context(model):
        torch.testing.assert_close(model(x), expected_output, rtol=1e-4, atol=1e-5)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                assert (module.running_mean == 0).all() and (module.weight == 1).all()

    # The same relevance as a model without batch norm whose convolutions hold the merge.
    plain = toy()
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    norms = [m for m in model.features if isinstance(m, nn.BatchNorm2d)]
    plain_convs = [m for m in plain.features if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        for conv, norm, target in zip(convs, norms, plain_convs, strict=True):
            scale = norm.weight / (norm.running_var + norm.eps).sqrt()
            target.weight.copy_(conv.weight * scale[:, None, None, None])
            target.bias.copy_((conv.bias - norm.running_mean) * scale + norm.bias)
        plain.classifier.load_state_dict(model.classifier.state_dict())
    attr_output = torch.eye(2)[[1, 1]]
    _, merged = Gradient(model, audio_composite("reference", model))(x, attr_output)
    _, expected = Gradient(plain, audio_composite("reference", plain))(x, attr_output)
    assert float((merged - expected).norm() / expected.norm()) <= 1e-4


@pytest.mark.parametrize("name", sorted(COMPOSITES))
def test_zennit_composites_by_name(name):
    model = toy(batch_norm=True)
    kwargs = {"low": -4.0, "high": 3.0} if name == "epsilon_gamma_box" else {}
    composite = audio_composite(name, model, **kwargs)
    assert isinstance(composite, COMPOSITES[name])
    assert [type(c) for c in composite.canonizers] == [SequentialMergeBatchNorm]
    x = torch.randn(1, 1, 64, 64)
    _, heatmap = Gradient(model, composite)(x, torch.eye(2)[[0]])
    assert heatmap.shape == x.shape and torch.isfinite(heatmap).all()
    # No batch norm, no canonizer; explicit canonizers replace the automatic one.
    assert audio_composite(name, toy(), **kwargs).canonizers == []
    assert audio_composite(name, model, canonizers=[], **kwargs).canonizers == []


def test_names_and_errors():
    assert composite_names()[0] == "reference"
    assert set(composite_names()[1:]) == set(COMPOSITES)
    model = toy()
    with pytest.raises(ValueError, match=r"did you mean 'epsilon_plus'"):
        audio_composite("epsilon_pluss", model)
    with pytest.raises(ValueError, match=r"needs \['low', 'high'\].*low=-4\.0"):
        audio_composite("epsilon_gamma_box", model)
    with pytest.raises(ValueError, match="has no convolution"):
        reference_composite(nn.Sequential(nn.Linear(3, 2)))
    with pytest.raises(ValueError, match="gammas must be"):
        reference_composite(model, gammas=())
    with pytest.raises(ValueError, match="gammas must be"):
        reference_composite(model, gammas=(0.1, -0.1))


def test_average_pooling_gets_the_norm_rule_and_relevance_is_conserved():
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2, bias=False),
    ).eval()
    for conv in (model[0], model[2]):
        nn.init.zeros_(conv.bias)
    composite = reference_composite(model)
    with composite.context(model):
        assert isinstance(registered_rules(model)["4"], Norm)
    x = torch.rand(1, 1, 6, 5)
    _, heatmap = Gradient(model, composite)(x, torch.eye(2)[[0]])
    # Without biases, WSquare, γ, Norm and ε conserve the relevance of the explained logit.
    total = float(heatmap.sum())
    assert total == pytest.approx(1.0, rel=1e-4)
    assert not torch.equal(heatmap, Gradient(model, EpsilonPlus())(x, torch.eye(2)[[0]])[1])
