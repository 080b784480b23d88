"""Sharded collection: collect_shards over two gloo processes writes shards that together hold
the rows of one collect() over all inputs; reruns skip finished shards and refuse others."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from test_collect import make_model
from test_distributed_fit import WORLD_SIZE, run_ranks
from torch.utils.data import DataLoader, TensorDataset
from zennit.composites import EpsilonPlus

from zennit_drsa.collect import Collection, ShardedCollection, collect, collect_shards

N_INPUTS = 11
SHARD_SIZE = 3  # four shards of 3, 3, 3 and 2 inputs: two per rank
N_LOCATIONS = 5
TARGETS = np.array([0, 2, 1, 1, 0, 2, 2, 1, 0, 0, 2])
ARRAYS = ("activations", "context", "input_index", "location", "target")


def inputs() -> torch.Tensor:
    return torch.randn(N_INPUTS, 3, 8, 6, generator=torch.Generator().manual_seed(3))


def sharded(model, data, directory, **kwargs) -> ShardedCollection:
    options = {
        "shard_size": SHARD_SIZE,
        "n_locations": N_LOCATIONS,
        "batch_size": 2,
        "random_state": 7,
        "progress": False,
        **kwargs,
    }
    target = options.pop("target", TARGETS)
    return collect_shards(model, EpsilonPlus(), "4", data, target, directory, **options)


def _collect_on_ranks(rank: int, world_size: int, directory: Path) -> None:
    shards = sharded(make_model(), inputs(), directory, distributed=True)
    part = shards.read()  # this rank's part
    np.savez(directory.parent / f"part{rank}.npz", **{name: getattr(part, name) for name in ARRAYS})
    # A classic mistake: a model initialised on every rank without a shared seed.
    model = make_model()
    if rank == 1:
        torch.nn.init.zeros_(model[0].bias)
    try:
        sharded(model, inputs(), directory.parent / "unsynchronised", distributed=True)
    except ValueError as error:
        (directory.parent / f"error{rank}.txt").write_text(str(error))


@pytest.fixture(scope="module")
def collected(tmp_path_factory) -> Path:
    """A directory of shards written by two ranks (each collected its two shards)."""
    directory = tmp_path_factory.mktemp("sharded") / "shards"
    run_ranks(_collect_on_ranks, directory)
    return directory


@pytest.fixture
def shards(collected, tmp_path) -> Path:
    """A copy of the two ranks' shards that a test may change."""
    return Path(shutil.copytree(collected, tmp_path / "shards"))


def counting(model: torch.nn.Module) -> list[int]:
    """Record the batch size of every forward pass of ``model``."""
    sizes: list[int] = []
    model.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])))
    return sizes


def assert_same_rows(got: Collection, expected: Collection) -> None:
    for name in ("input_index", "location", "target"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), err_msg=name)
    # Batches differ between shards and one pass (conv rounding); misaligned rows would not pass.
    for name in ("activations", "context"):
        np.testing.assert_allclose(
            getattr(got, name), getattr(expected, name), rtol=1e-5, atol=1e-6, err_msg=name
        )


def test_two_ranks_shards_merge_into_the_collection_of_one_process(collected, tmp_path):
    single = collect(
        make_model(),
        EpsilonPlus(),
        "4",
        inputs(),
        TARGETS,
        n_locations=N_LOCATIONS,
        batch_size=2,
        random_state=7,
        progress=False,
    )
    shards = ShardedCollection.open(collected)
    assert (shards.n_shards, shards.n_inputs, shards.n_vectors) == (4, N_INPUTS, single.n_vectors)
    shards.merge(tmp_path / "merged.npz")
    merged = Collection.load(tmp_path / "merged.npz")
    assert_same_rows(merged, single)
    assert (merged.layer, merged.map_shape, merged.context_mode) == ("4", (4, 3), "exact")
    assert_same_rows(shards.read(0, 1), single)


def test_each_rank_read_its_own_shards_and_the_parts_follow_rank_order(collected):
    parts = []
    for rank in range(WORLD_SIZE):
        with np.load(collected.parent / f"part{rank}.npz") as file:
            parts.append({name: file[name] for name in ARRAYS})
    assert set(parts[0]["input_index"]) == set(range(6))
    assert set(parts[1]["input_index"]) == set(range(6, N_INPUTS))
    everything = ShardedCollection.open(collected).read(0, 1)
    for name in ARRAYS:
        joined = np.concatenate([part[name] for part in parts])
        np.testing.assert_array_equal(joined, getattr(everything, name), err_msg=name)


def test_ranks_with_different_models_are_stopped_before_collecting(collected):
    for rank in range(WORLD_SIZE):
        message = (collected.parent / f"error{rank}.txt").read_text()
        assert message.startswith("rank(s) [1] collect with other settings than rank 0")
    assert not list((collected.parent / "unsynchronised").glob("shard-*"))


def test_blocks_yield_one_shard_at_a_time(collected):
    blocks = list(ShardedCollection.open(collected).blocks())
    assert [block.n_vectors for block in blocks] == [15, 15, 15, 10]
    for index, block in enumerate(blocks):
        first = index * SHARD_SIZE
        assert set(block.input_index) == set(range(first, min(first + SHARD_SIZE, N_INPUTS)))


def test_a_rerun_skips_finished_shards_and_recollects_an_unfinished_one(shards):
    expected = ShardedCollection.open(shards).read(0, 1)
    model = make_model()
    passes = counting(model)
    sharded(model, inputs(), shards)
    assert passes == []  # every shard was finished: no pass at all
    # A process killed after writing shard 2's arrays but before its record.
    (shards / "shard-000002.json").unlink()
    with pytest.raises(ValueError, match=r"shards \[2\] of 4 are missing"):
        ShardedCollection.open(shards)
    again = sharded(model, inputs(), shards)
    assert sum(passes) == SHARD_SIZE  # shard 2's inputs only
    assert_same_rows(again.read(0, 1), expected)


def test_a_rerun_with_other_settings_or_inputs_is_refused(shards):
    with pytest.raises(ValueError, match=r"other settings \(n_locations differ\)"):
        sharded(make_model(), inputs(), shards, n_locations=4)
    retrained = torch.nn.Sequential(*list(make_model())[:-1], torch.nn.Linear(8, 3)).eval()
    with pytest.raises(ValueError, match="model_sha256"):
        sharded(retrained, inputs(), shards)
    changed = inputs()
    changed[4] += 1.0  # an input of shard 1
    with pytest.raises(ValueError, match=r"covers inputs 3\.\.5 but they differ"):
        sharded(make_model(), changed, shards)


def test_a_map_style_dataset_with_labels_gives_the_rows_of_a_tensor(collected, tmp_path):
    dataset = TensorDataset(inputs(), torch.as_tensor(TARGETS))
    from_dataset = sharded(make_model(), dataset, tmp_path / "dataset", target="label")
    assert_same_rows(from_dataset.read(0, 1), ShardedCollection.open(collected).read(0, 1))


def test_data_that_cannot_be_sharded_or_reproduced_is_refused(tmp_path):
    loader = DataLoader(TensorDataset(inputs()), batch_size=2)
    with pytest.raises(TypeError, match=r"its \.dataset"):
        sharded(make_model(), loader, tmp_path / "loader")
    with pytest.raises(ValueError, match="random_state must be an int"):
        sharded(make_model(), inputs(), tmp_path / "unseeded", random_state=None)
    with pytest.raises(RuntimeError, match="init_process_group"):
        sharded(make_model(), inputs(), tmp_path / "alone", distributed=True)
