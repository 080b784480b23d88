"""Shared test configuration: deterministic, bounded thread use on small shared machines."""

import os

import numpy as np
import pytest
import torch

# torch's default thread count collapses under contention on 2-core CI machines; pin it.
torch.set_num_threads(int(os.environ.get("TEST_TORCH_THREADS", "2")))


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded numpy generator, fresh for every test."""
    return np.random.default_rng(0)
