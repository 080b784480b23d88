"""collect(): sampled activation/context rows, their bookkeeping, storage and input checks."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from zennit.composites import EpsilonGammaBox, EpsilonPlus
from zennit.torchvision import ResNetCanonizer

from audio_cnn.model import AudioCNN
from zennit_drsa.collect import Collection, collect
from zennit_drsa.context import RATIO_EPSILON, LayerContext

# The package re-exports the function `collect`, which shadows the submodule attribute.
collect_module = importlib.import_module("zennit_drsa.collect")

N_INPUTS = 7
MAP = (4, 3)  # output map of layer "4" for 8×6 inputs: non-square


def make_model() -> nn.Sequential:
    """Conv→ReLU→MaxPool→Conv→ReLU→Flatten→Linear→ReLU→Linear, seeded, eval mode."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 5, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(5 * 4 * 3, 8),
        nn.ReLU(),
        nn.Linear(8, 3),
    )
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.normal_(module.weight, std=0.5)
            nn.init.normal_(module.bias, std=0.1)
    return model.eval()


@pytest.fixture
def model() -> nn.Sequential:
    return make_model()


@pytest.fixture
def data() -> torch.Tensor:
    return torch.randn(N_INPUTS, 3, 8, 6, generator=torch.Generator().manual_seed(1))


def run(model, data, target=1, **kwargs) -> Collection:
    kwargs = {"n_locations": 5, "batch_size": 3, "progress": False, **kwargs}
    layer = kwargs.pop("layer", "4")
    return collect(model, EpsilonPlus(), layer, data, target, **kwargs)


def at_rows(maps: torch.Tensor, collection: Collection) -> np.ndarray:
    """Vectors of ``maps`` (N, d, H, W) at the collection's rows: (n, d)."""
    index = torch.as_tensor(collection.input_index)
    h, w = torch.as_tensor(collection.location).T
    return maps[index, :, h, w].numpy()


@pytest.mark.zennit
def test_rows_align_with_layer_output_and_exact_context(model, data):
    collection = run(model, data)
    assert collection.activations.shape == (N_INPUTS * 5, 5)
    assert collection.activations.dtype == collection.context.dtype == np.float32
    assert collection.map_shape == MAP and collection.layer == "4"

    outputs = {}
    handle = model[4].register_forward_hook(lambda m, i, o: outputs.setdefault("a", o))
    with torch.no_grad():
        model(data)
    handle.remove()
    # Batch composition changes conv rounding, hence the tolerance; misalignment would not pass.
    np.testing.assert_allclose(
        collection.activations, at_rows(outputs["a"], collection), rtol=1e-5, atol=1e-5
    )

    with LayerContext(model, EpsilonPlus(), "4") as context:
        full = context(data, 1)
    np.testing.assert_allclose(
        collection.context, at_rows(full.context, collection), rtol=1e-5, atol=1e-7
    )
    # a ⊙ c is the LRP relevance of every unit at the sampled positions.
    product = collection.activations * collection.context
    expected = at_rows(full.relevance, collection)
    assert np.linalg.norm(product - expected) <= 1e-5 * np.linalg.norm(expected)
    np.testing.assert_allclose(collection.relevance, product.sum(axis=1), rtol=1e-5, atol=1e-7)


@pytest.mark.zennit
def test_ratio_rows_divide_relevance_and_differ_at_zero_activations(model, data):
    ratio = run(model, data, context="ratio")
    exact = run(model, data)
    assert ratio.context_mode == "ratio" and exact.context_mode == "exact"
    np.testing.assert_array_equal(ratio.location, exact.location)
    relevance = exact.activations * exact.context
    np.testing.assert_allclose(
        ratio.context, relevance / (ratio.activations + RATIO_EPSILON), rtol=1e-4, atol=1e-6
    )
    zero = exact.activations == 0
    assert zero.any()
    assert (ratio.context[zero] == 0).all()
    assert (exact.context[zero] != 0).any()


def test_seeded_draw_is_reproducible_and_ignores_batching(model, data):
    first = run(model, data, random_state=3)
    again = run(model, data, random_state=3, batch_size=N_INPUTS)
    other = run(model, data, random_state=4)
    np.testing.assert_array_equal(first.location, again.location)
    np.testing.assert_array_equal(first.input_index, again.input_index)
    np.testing.assert_allclose(first.activations, again.activations, rtol=1e-5, atol=1e-6)
    assert not np.array_equal(first.location, other.location)


@pytest.mark.parametrize("n_locations", ["all", None])
def test_all_locations(model, data, n_locations):
    collection = run(model, data, n_locations=n_locations)
    n_positions = MAP[0] * MAP[1]
    assert collection.n_vectors == N_INPUTS * n_positions
    for i in range(N_INPUTS):
        rows = collection.location[collection.input_index == i]
        assert sorted(map(tuple, rows)) == [(h, w) for h in range(MAP[0]) for w in range(MAP[1])]


def test_dense_layer_has_one_location(model, data):
    collection = run(model, data, layer="7")
    assert collection.map_shape == ()
    assert collection.location.shape == (N_INPUTS, 0)
    np.testing.assert_array_equal(collection.input_index, np.arange(N_INPUTS))
    assert collection.dim == 8


def test_dataloader_with_labels_matches_tensor_data(model, data):
    labels = torch.tensor([0, 2, 1, 1, 0, 2, 2])
    loader = DataLoader(TensorDataset(data, labels), batch_size=2, shuffle=False)
    from_loader = run(model, loader, target="label", batch_size=None)
    from_tensor = run(model, data, target=labels)
    np.testing.assert_array_equal(from_loader.target, labels.numpy()[from_loader.input_index])
    np.testing.assert_array_equal(from_loader.location, from_tensor.location)
    np.testing.assert_allclose(from_loader.context, from_tensor.context, rtol=1e-5, atol=1e-7)


def test_float64_arrays_are_accepted(model, data):
    from_array = run(model, data.double().numpy())
    np.testing.assert_allclose(from_array.context, run(model, data).context, rtol=1e-6, atol=0)


def test_iterable_of_unknown_length_grows_its_buffers(model, data, monkeypatch):
    monkeypatch.setattr(collect_module, "_INITIAL_INPUTS", 1)
    batches = (data[start : start + 2] for start in range(0, N_INPUTS, 2))
    grown = run(model, batches, batch_size=None)
    reference = run(model, data)
    assert grown.n_vectors == reference.n_vectors
    np.testing.assert_array_equal(grown.input_index, reference.input_index)
    np.testing.assert_allclose(grown.activations, reference.activations, rtol=1e-5, atol=1e-7)


def test_target_forms(model, data):
    as_int = run(model, data, target=2)
    as_labels = run(model, data, target=np.full(N_INPUTS, 2))
    as_callable = run(
        model,
        data,
        target=lambda out: nn.functional.one_hot(torch.full((out.shape[0],), 2), 3).to(out),
    )
    assert (as_int.target == 2).all() and (as_labels.target == 2).all()
    assert (as_callable.target == -1).all()
    for other in (as_labels, as_callable):
        np.testing.assert_allclose(other.context, as_int.context, rtol=1e-6, atol=0)
    mixed = run(model, data, target=[0, 1, 2, 0, 1, 2, 0])
    np.testing.assert_array_equal(mixed.target, np.array([0, 1, 2, 0, 1, 2, 0])[mixed.input_index])


def test_save_and_load_round_trip(model, data, tmp_path):
    collection = run(model, data)
    path = tmp_path / "vectors.npz"
    collection.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["vectors.npz"]
    loaded = Collection.load(path)
    for name in ("activations", "context", "input_index", "location", "target"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(collection, name))
        assert getattr(loaded, name).dtype == getattr(collection, name).dtype
    assert (loaded.layer, loaded.map_shape, loaded.context_mode, loaded.bypass) == (
        "4",
        MAP,
        "exact",
        False,
    )
    np.savez(tmp_path / "other.npz", activations=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="not a saved Collection"):
        Collection.load(tmp_path / "other.npz")


def test_collection_checks_its_shapes():
    with pytest.raises(ValueError, match=r"location has shape"):
        Collection(
            activations=np.zeros((2, 3), np.float32),
            context=np.zeros((2, 3), np.float32),
            input_index=np.arange(2),
            location=np.zeros((2, 1), np.int64),
            target=np.zeros(2, np.int64),
            layer="x",
            map_shape=(4, 4),
        )


@settings(max_examples=12, deadline=None)
@given(
    n_inputs=st.integers(1, 6),
    batch_size=st.integers(1, 4),
    n_locations=st.integers(1, MAP[0] * MAP[1]),
    seed=st.integers(0, 2**16),
)
def test_rows_are_distinct_positions_in_input_order(n_inputs, batch_size, n_locations, seed):
    model = make_model()
    data = torch.randn(n_inputs, 3, 8, 6, generator=torch.Generator().manual_seed(seed))
    collection = run(model, data, batch_size=batch_size, n_locations=n_locations, random_state=seed)
    assert collection.n_vectors == n_inputs * n_locations
    np.testing.assert_array_equal(
        collection.input_index, np.repeat(np.arange(n_inputs), n_locations)
    )
    assert (collection.location >= 0).all() and (collection.location < MAP).all()
    for i in range(n_inputs):
        rows = collection.location[collection.input_index == i]
        assert len(set(map(tuple, rows))) == n_locations
    whole = run(model, data, batch_size=n_inputs, n_locations=n_locations, random_state=seed)
    np.testing.assert_array_equal(whole.location, collection.location)


@pytest.mark.zennit
def test_skip_connection_around_the_layer_warns():
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None, num_classes=4).eval()
    data = torch.randn(2, 3, 32, 24)
    composite = EpsilonPlus(canonizers=[ResNetCanonizer()])
    with pytest.warns(UserWarning, match="skip connection"):
        inside = collect(
            resnet, composite, "layer1.0.conv2", data, 0, n_locations=3, progress=False
        )
    assert inside.bypass
    block = collect(resnet, composite, "layer1.0", data, 0, n_locations=3, progress=False)
    assert not block.bypass and block.map_shape == (8, 6)


@pytest.mark.zennit
def test_audio_cnn_fourth_block():
    torch.manual_seed(0)
    model = AudioCNN.preset("toy").eval()
    data = torch.randn(3, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    collection = collect(
        model, EpsilonGammaBox(low=-4.0, high=4.0), "features.10", data, 1, progress=False
    )
    assert collection.activations.shape == (3 * 20, 32)
    assert collection.map_shape == (8, 8)
    assert np.isfinite(collection.context).all()


# -- errors ------------------------------------------------------------------------------


def test_unknown_layer_is_reported_with_a_suggestion(model, data):
    with pytest.raises(ValueError, match=r"no layer named 'features\.4'.*valid names"):
        run(model, data, layer="features.4")
    with pytest.raises(ValueError, match=r"did you mean '4'"):
        run(model, data, layer="44")


def test_training_mode_is_rejected(model, data):
    with pytest.raises(ValueError, match=r"training mode.*model\.eval\(\)"):
        run(model.train(), data)


def test_non_finite_input_names_the_batch(model, data):
    data[5, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match=r"batch 1 \(inputs 3\.\.5\).*first at input 5"):
        run(model, data)
    data[5] = 0.0
    data[0, 1, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"batch 0 \(inputs 0\.\.2\)"):
        run(model, data)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"n_locations": 13}, ValueError, r"exceeds the 12 positions of the layer's 4×3 map"),
        ({"n_locations": 0}, ValueError, "positive int"),
        ({"n_locations": True}, ValueError, "positive int"),
        ({"context": "gradient"}, ValueError, "context must be one of"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"target": "label"}, ValueError, r"needs data yielding \(x, y\)"),
        ({"target": "class"}, ValueError, "only string target"),
        ({"target": [0, 1]}, ValueError, "2 per-sample targets for 7 inputs"),
        ({"target": [0.5] * 7}, ValueError, "integer sequence"),
        ({"target": 3}, ValueError, r"lie in 0\.\.2"),
        ({"device": "meta"}, ValueError, "move it with model.to"),
    ],
)
def test_bad_arguments(model, data, kwargs, error, message):
    with pytest.raises(error, match=message):
        run(model, data, **kwargs)


@pytest.mark.parametrize(
    ("bad_data", "error", "message"),
    [
        (torch.randn(5), ValueError, r"shape \(N, \.\.\.\)"),
        (torch.randn(0, 3, 8, 6), ValueError, "N >= 1"),
        (torch.ones(2, 3, 8, 6, dtype=torch.int64), ValueError, "floating point"),
        ("inputs.npy", TypeError, "iterable of batches"),
        ([], ValueError, "no batches"),
        ([torch.randn(3)], ValueError, r"batch 0: inputs must have shape \(B, \.\.\.\)"),
        (
            [torch.randn(2, 3, 8, 6), torch.randn(2, 3, 8, 5)],
            ValueError,
            r"batch 1: inputs of shape \(3, 8, 5\) differ from the first batch's \(3, 8, 6\)",
        ),
        ([(["not", "a", "tensor"],)], TypeError, "batch 0: inputs must be tensors"),
    ],
)
def test_bad_data(model, bad_data, error, message):
    with pytest.raises(error, match=message):
        run(model, bad_data, batch_size=None if not isinstance(bad_data, torch.Tensor) else 3)


def test_dataloader_errors(model, data):
    loader = DataLoader(TensorDataset(data), batch_size=2)
    with pytest.raises(ValueError, match="set it on the DataLoader"):
        run(model, loader, batch_size=4)
    with pytest.raises(ValueError, match="has no labels"):
        run(model, loader, target="label", batch_size=None)
    with pytest.raises(ValueError, match="2 per-sample targets but the data holds more"):
        run(model, loader, target=[0, 1], batch_size=None)


def test_an_inputs_locations_depend_on_its_index_only():
    """Shards and processes draw alike: input i's locations come from child i of the seed."""
    seeds = np.random.SeedSequence(11)
    draw = collect_module._draw_locations
    everything = draw(seeds, 0, 7, MAP, 5)
    np.testing.assert_array_equal(draw(seeds, 4, 3, MAP, 5), everything[4:])
    assert not np.array_equal(draw(np.random.SeedSequence(12), 0, 7, MAP, 5), everything)
