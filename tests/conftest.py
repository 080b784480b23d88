"""Shared test configuration: deterministic, bounded thread use on small shared machines."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

# torch's default thread count collapses under contention on 2-core CI machines; pin it.
torch.set_num_threads(int(os.environ.get("TEST_TORCH_THREADS", "2")))


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded numpy generator, fresh for every test."""
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def toy(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny toy dataset (20 clips per class) and a CNN trained on it for one epoch.

    Shared by the analysis and sweep tests; treat both as read-only.
    """
    from audio_cnn import SyntheticTask, TrainConfig, train, write_synthetic_dataset

    root = tmp_path_factory.mktemp("toy")
    data = write_synthetic_dataset(
        root / "data", SyntheticTask.toy(), clips_per_class=20, progress=False
    )
    config = TrainConfig.preset("toy", epochs=1, batch_size=8, patience=0)
    train(data, root / "run", config=config, progress=False)
    return data, root / "run"


@pytest.fixture(scope="session")
def small_analysis():
    """Analysis settings small enough for tests: last block, K = 2, a few clips and steps.

    For tests of the pipeline's plumbing, not of what the methods find.
    """
    from audio_concepts.analysis import AnalysisConfig

    return AnalysisConfig(
        layer="features.13",
        n_subspaces=2,
        fit_clips_per_class=4,
        eval_clips_per_class=3,
        n_locations=4,
        max_iter=10,
        n_restarts=1,
        # The tiny toy's test split has few clips with two or more objects; take all.
        min_objects=1,
    )
