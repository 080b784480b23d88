"""Model-randomisation sanity checks of concept heatmaps on the tiny toy run, and their figure."""

from __future__ import annotations

import json

import matplotlib.image
import numpy as np
import pytest
import torch

from audio_concepts.data import AudioData
from audio_concepts.model import AudioModel
from audio_concepts.plots import plot_sanity_checks
from audio_concepts.sanity_checks import METRICS, sanity_checks
from zennit_drsa.estimators import RandomSubspaces

pytestmark = pytest.mark.slow

K = 2
CLIPS_PER_CLASS = 3


@pytest.fixture(scope="module")
def setup(toy, tmp_path_factory):
    """The toy model, a few test chunks of each class, and random per-class subspaces."""
    data_dir, run = toy
    model = AudioModel.from_run(run, device="cpu")
    data = AudioData.open(data_dir, model, tmp_path_factory.mktemp("cache"))
    clips = data.split_clips("test")
    chosen = [
        clip
        for label in range(len(model.class_names))
        for clip in [c for c in clips if c.label == label][:CLIPS_PER_CLASS]
    ]
    chunks = data.chunks(chosen, 1)
    items = [chunks[i] for i in range(len(chunks))]
    logmel = model.input_of(torch.stack([waveform for waveform, _, _ in items]))
    labels = torch.tensor([label for _, label, _ in items])
    layer = model.default_layer
    width, _ = model.layer_shape(layer)
    rng = np.random.default_rng(0)
    estimators = {
        label: RandomSubspaces(n_subspaces=K, subspace_dim=4, random_state=label).fit(
            rng.standard_normal((50, width))
        )
        for label in range(len(model.class_names))
    }
    return model, layer, estimators, logmel, labels


@pytest.fixture(scope="module")
def result(setup):
    model, layer, estimators, logmel, labels = setup
    return sanity_checks(
        model.network, "reference", layer, estimators, logmel, labels, 2, seed=0, batch_size=4
    )


def _parameter_layers(network: torch.nn.Module) -> list[str]:
    return [n for n, m in network.named_modules() if any(True for _ in m.parameters(False))]


def test_result_structure_is_complete_and_json_safe(setup, result):
    model, layer, _, logmel, _ = setup
    json.dumps(result, allow_nan=False)  # JSON-safe: no NaN, no arrays
    settings = result["settings"]
    assert settings["layer"] == layer
    assert settings["n_inputs"] == logmel.shape[0]
    assert settings["n_concepts"] == K
    cascade = result["cascading"]
    steps = cascade["steps"]
    layers = _parameter_layers(model.network)
    # Step 0 (unrandomised), then every parameter layer once, top down (AudioCNN registers
    # its layers in forward order).
    assert [step["randomized"] for step in steps] == [None, *layers[::-1]]
    assert [step["step"] for step in steps] == list(range(len(steps)))
    assert cascade["not_randomized"] == []
    # Above the analysed layer: the dense head and the convolutions after it.
    index = [name for name, _ in model.network.named_modules()].index
    expected_above = [index(name) > index(layer) for name in layers[::-1]]
    assert [step["above_layer"] for step in steps[1:]] == expected_above
    assert cascade["n_above"] == sum(expected_above)
    assert 0 < cascade["n_above"] < len(layers)
    for step in steps:
        for group, pairs in (("concepts", logmel.shape[0] * K), ("standard", logmel.shape[0])):
            summary = step[group]
            for metric in METRICS:
                entry = summary[metric]
                assert entry["n"] + summary["n_undefined"] == pairs, (step, group, metric)
                if entry["n"] >= 2:
                    assert -1.0 <= entry["mean"] <= 1.0 and entry["sem"] >= 0.0
    verdict = cascade["verdict"]
    assert verdict["top"]["randomized"] == layers[-1]
    assert verdict["final"]["randomized"] == layers[0]
    assert verdict["passes"] == all(verdict[k]["passes"] for k in ("reproducible", "top", "final"))


def test_unrandomised_copy_reproduces_and_randomising_everything_does_not(result):
    steps = result["cascading"]["steps"]
    original = steps[0]
    for metric in METRICS:
        assert original["concepts"][metric]["n"] > 0
        assert original["concepts"][metric]["mean"] == pytest.approx(1.0, abs=1e-6), metric
        assert original["standard"][metric]["mean"] == pytest.approx(1.0, abs=1e-6), metric
    assert result["cascading"]["verdict"]["reproducible"]["passes"]
    final = steps[-1]
    assert final["concepts"]["spearman"]["n"] > 0
    assert final["concepts"]["spearman"]["mean"] < 0.99
    assert final["concepts"]["ssim"]["mean"] < 0.99
    assert final["standard"]["spearman"]["mean"] < 0.99


def test_random_class_is_another_class_and_compared(setup, result):
    _, _, _, logmel, labels = setup
    check = result["random_class"]
    assert check["skipped"] is False
    classes = np.array(check["classes"])
    assert classes.shape == (logmel.shape[0],)
    assert np.all(classes != labels.numpy()) and np.all((classes >= 0) & (classes < 2))
    assert check["concepts"]["spearman"]["n"] + check["concepts"]["n_undefined"] == len(classes) * K
    low, high = check["ci95"]
    assert low <= check["concepts"]["spearman"]["mean"] <= high
    assert check["passes"] == (high < check["bound"])


def test_network_is_left_untouched_and_no_layers_means_step_zero_only(setup):
    model, layer, estimators, logmel, labels = setup
    before = {k: v.clone() for k, v in model.network.state_dict().items()}
    result = sanity_checks(
        model.network, "reference", layer, {0: estimators[0]}, logmel[:2], labels[:2] * 0, 1,
        randomize=[],
    )  # fmt: skip
    after = model.network.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.network.modules())
    steps = result["cascading"]["steps"]
    assert [step["randomized"] for step in steps] == [None]
    assert steps[0]["concepts"]["spearman"]["mean"] == pytest.approx(1.0, abs=1e-6)
    assert result["cascading"]["verdict"]["passes"] is False  # nothing was randomised
    assert result["random_class"]["skipped"] is True and result["random_class"]["note"]


def test_bad_inputs_are_refused(setup):
    model, layer, estimators, logmel, labels = setup
    with pytest.raises(ValueError, match=r"\(N, 1, M, F\)"):
        sanity_checks(model.network, "reference", layer, estimators, logmel[:, 0], labels, 2)
    with pytest.raises(ValueError, match="labels"):
        sanity_checks(model.network, "reference", layer, estimators, logmel, labels + 5, 2)
    with pytest.raises(ValueError, match="not a module"):
        sanity_checks(
            model.network, "reference", layer, estimators, logmel, labels, 2, randomize=["nope"]
        )


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_figure_is_written(result, tmp_path, suffix):
    path = plot_sanity_checks(result, tmp_path / "sub" / f"sanity{suffix}", dpi=40)
    assert path == tmp_path / "sub" / f"sanity{suffix}"
    assert not [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    if suffix == ".png":
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and min(image.shape[:2]) > 20
        assert image[..., :3].std() > 0
    else:
        text = path.read_text(encoding="utf-8")
        assert text.lstrip().startswith("<?xml") and "<svg" in text and "</svg>" in text
