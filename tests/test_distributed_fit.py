"""Data-parallel fitting: estimators with ``distributed=True`` on two gloo processes (loopback
only, bounded in time) give, on every rank, the fit of one process on all rows."""

from __future__ import annotations

import datetime
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

# one_torch_thread: an autouse fixture, for the small single-process fits on shared cores.
from test_drsa_solvers import one_torch_thread, planted_concepts  # noqa: F401

from zennit_drsa._distributed import Partition
from zennit_drsa.distributed import rank_slice
from zennit_drsa.estimators import (
    DRSA,
    DSA,
    PRCA,
    OracleSubspaces,
    PCASubspaces,
    RandomSubspaces,
    solvers,
)

WORLD_SIZE = 2
# Wall-clock bound of one multi-process run (start, fits, exit); a hang fails, never blocks.
TIMEOUT_S = 180
N_SAMPLES = 4400  # above the solver's subsampling thresholds (2 · 2048 and 4096 samples)
N_FEATURES = 8
SPLIT = 1900  # rank 0 holds rows [0, SPLIT), rank 1 the rest: unequal shares
SEED = 1
ESTIMATORS: dict[str, Callable[..., Any]] = {
    "drsa": lambda **kw: DRSA(
        3, 2, max_iter=150, n_restarts=3, random_state=SEED, dtype="float64", **kw
    ),
    "drsa_reference": lambda **kw: DRSA(
        3,
        2,
        solver="reference",
        max_iter=20,
        n_restarts=2,
        random_state=SEED,
        dtype="float64",
        **kw,
    ),
    "dsa": lambda **kw: DSA(
        2, 3, max_iter=100, n_restarts=2, random_state=SEED, dtype="float64", **kw
    ),
    "prca": lambda **kw: PRCA(3, 2, **kw),
    "pca": lambda **kw: PCASubspaces(3, 2, **kw),
    "random": lambda **kw: RandomSubspaces(3, 2, random_state=SEED, **kw),
}
FITTED = ("components_", "subspace_sizes_", "subspace_relevance_", "objective_trace_")
SCALARS = ("objective_", "n_iter_", "scale_activations_", "scale_context_")


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _loopback_interface() -> str:
    names = [name for _, name in socket.if_nameindex() if name.startswith("lo")]
    return names[0] if names else "lo"


def _rank_main(rank: int, world_size: int, port: int, function: Callable, args: tuple) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        GLOO_SOCKET_IFNAME=_loopback_interface(),
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=TIMEOUT_S),
    )
    try:
        function(rank, world_size, *args)
    finally:
        dist.destroy_process_group()


def run_ranks(function: Callable, *args: Any, world_size: int = WORLD_SIZE) -> None:
    """Run ``function(rank, world_size, *args)`` in ``world_size`` fresh processes joined in a
    gloo group on 127.0.0.1, as torchrun would; re-raise a process's error; kill them all
    and fail after ``TIMEOUT_S`` seconds."""
    context = mp.start_processes(
        _rank_main,
        args=(world_size, free_port(), function, args),
        nprocs=world_size,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not context.join(timeout=1.0):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {world_size} processes did not end in {TIMEOUT_S} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
                process.join()


def problem() -> tuple[np.ndarray, np.ndarray]:
    """Activations and context ``(N_SAMPLES, N_FEATURES)`` with three planted concepts, on
    which the DRSA solver races restarts on a subsample, exchanges directions between
    subspaces (atoms fitted on a subsample) and resumes its ascent."""
    activations, context, _ = planted_concepts(
        np.random.default_rng(0), n=N_SAMPLES, d=N_FEATURES, n_concepts=3, size=2
    )
    return activations, context


def grouped_problem() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The problem's rows labelled by their strongest planted concept, reordered so that
    every row of group 2 lies in rank 0's share: rank 1 holds none of that group."""
    activations, context, blocks = planted_concepts(
        np.random.default_rng(0), n=N_SAMPLES, d=N_FEATURES, n_concepts=3, size=2
    )
    energy = np.stack([np.sum((activations @ block) ** 2, axis=1) for block in blocks], axis=1)
    labels = energy.argmax(axis=1)
    order = np.argsort(labels != 2, kind="stable")
    assert np.sum(labels == 2) <= SPLIT
    return activations[order], context[order], labels[order]


def _state(estimator: Any) -> dict[str, np.ndarray]:
    state = {name: np.asarray(getattr(estimator, name)) for name in FITTED}
    state.update({name: np.array(getattr(estimator, name)) for name in SCALARS})
    return state


def _fit_on_ranks(rank: int, world_size: int, out: Path) -> None:
    activations, context = problem()
    rows = slice(0, SPLIT) if rank == 0 else slice(SPLIT, N_SAMPLES)
    arrays = {}
    for name, make in ESTIMATORS.items():
        estimator = make(distributed=True).fit(activations[rows], context=context[rows])
        for key, value in _state(estimator).items():
            arrays[f"{name}/{key}"] = value
        arrays[f"{name}/score"] = np.array(
            estimator.score(activations[rows], context=context[rows])
        )
    # A rank holding no rows takes part all the same.
    mine = slice(0, N_SAMPLES) if rank == 0 else slice(0, 0)
    prca = PRCA(3, 2, distributed=True).fit(activations[mine], context=context[mine])
    arrays["prca_one_rank/components_"] = prca.components_
    grouped, grouped_context, labels = grouped_problem()
    oracle = OracleSubspaces(3, 2, distributed=True).fit(
        grouped[rows], labels[rows], context=grouped_context[rows]
    )
    for key, value in _state(oracle).items():
        arrays[f"oracle/{key}"] = value
    arrays["oracle/group_order_"] = oracle.group_order_
    # Without a seed, rank 0's draw is used everywhere.
    unseeded = RandomSubspaces(3, 2, distributed=True).fit(activations[rows])
    arrays["unseeded/components_"] = unseeded.components_
    np.savez(out / f"rank{rank}.npz", **arrays)

    errors = {}
    bad = activations[rows].copy()
    if rank == 1:
        bad[3, 2] = np.nan
    try:
        DRSA(3, 2, max_iter=5, distributed=True).fit(bad, context=context[rows])
    except Exception as error:
        errors["nan_on_rank_1"] = f"{type(error).__name__}: {error}"
    narrow = activations[rows] if rank == 0 else activations[rows][:, :6]
    try:
        PCASubspaces(2, 2, distributed=True).fit(narrow)
    except Exception as error:
        errors["features_differ"] = f"{type(error).__name__}: {error}"
    try:
        PRCA(3 if rank == 0 else 2, 2, distributed=True).fit(activations[rows])
    except Exception as error:
        errors["parameters_differ"] = f"{type(error).__name__}: {error}"
    short = labels[rows] if rank == 0 else labels[rows][:-1]
    try:
        OracleSubspaces(3, 2, distributed=True).fit(grouped[rows], short)
    except Exception as error:
        errors["labels_short"] = f"{type(error).__name__}: {error}"
    (out / f"errors{rank}.json").write_text(json.dumps(errors))


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> tuple[list[dict[str, np.ndarray]], list[dict[str, str]]]:
    """What each of two ranks fitted, and the errors each raised."""
    out = tmp_path_factory.mktemp("distributed_fit")
    run_ranks(_fit_on_ranks, out)
    fitted = []
    for rank in range(WORLD_SIZE):
        with np.load(out / f"rank{rank}.npz") as file:
            fitted.append({key: file[key] for key in file.files})
    errors = [json.loads((out / f"errors{rank}.json").read_text()) for rank in range(WORLD_SIZE)]
    return fitted, errors


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_two_ranks_fit_what_one_process_fits_on_all_rows(ranks, name):
    fitted, _ = ranks
    activations, context = problem()
    single = ESTIMATORS[name]().fit(activations, context=context)
    expected = _state(single)
    for rank in range(WORLD_SIZE):
        got = {
            key.split("/")[1]: value
            for key, value in fitted[rank].items()
            if key.startswith(f"{name}/")
        }
        np.testing.assert_allclose(got["components_"], expected["components_"], atol=1e-5)
        np.testing.assert_array_equal(got["subspace_sizes_"], expected["subspace_sizes_"])
        np.testing.assert_allclose(
            got["subspace_relevance_"], expected["subspace_relevance_"], rtol=1e-6
        )
        assert got["n_iter_"] == expected["n_iter_"]
        np.testing.assert_allclose(got["objective_trace_"], expected["objective_trace_"], rtol=1e-6)
        for key in ("objective_", "scale_activations_", "scale_context_"):
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-9)
        assert float(got["score"]) == pytest.approx(
            single.score(activations, context=context), rel=1e-7
        )


def test_every_rank_ends_with_the_same_estimator_bit_for_bit(ranks):
    fitted, _ = ranks
    assert fitted[0].keys() == fitted[1].keys()
    for key in fitted[0]:
        if not key.endswith("/score"):
            np.testing.assert_array_equal(fitted[0][key], fitted[1][key], err_msg=key)


def test_the_oracle_on_two_ranks_is_the_oracle_of_all_rows(ranks):
    """Rank 1 holds no row of group 2; the group's moment comes from rank 0 alone."""
    fitted, _ = ranks
    activations, context, labels = grouped_problem()
    single = OracleSubspaces(3, 2).fit(activations, labels, context=context)
    for rank in range(WORLD_SIZE):
        np.testing.assert_allclose(
            fitted[rank]["oracle/components_"], single.components_, atol=1e-8
        )
        np.testing.assert_array_equal(fitted[rank]["oracle/group_order_"], single.group_order_)
        np.testing.assert_allclose(fitted[rank]["oracle/objective_"], single.objective_, rtol=1e-9)


def test_a_rank_without_rows_takes_part(ranks):
    fitted, _ = ranks
    activations, context = problem()
    single = PRCA(3, 2).fit(activations, context=context)
    for rank in range(WORLD_SIZE):
        np.testing.assert_allclose(
            fitted[rank]["prca_one_rank/components_"], single.components_, atol=1e-8
        )


def test_a_bad_input_on_one_rank_stops_every_rank_with_a_message(ranks):
    _, errors = ranks
    assert (
        errors[1]["nan_on_rank_1"].startswith("ValueError") and "NaN" in errors[1]["nan_on_rank_1"]
    )
    assert errors[0]["nan_on_rank_1"].startswith("RuntimeError")
    assert "rank(s) [1]" in errors[0]["nan_on_rank_1"]
    for rank in range(WORLD_SIZE):
        assert "disagree on n_features: [8, 6]" in errors[rank]["features_differ"]
        assert "rank(s) [1] were given other parameters" in errors[rank]["parameters_differ"]
    assert "y has shape" in errors[1]["labels_short"]
    assert "OracleSubspaces.fit failed on rank(s) [1]" in errors[0]["labels_short"]


def test_distributed_fit_needs_an_initialised_process_group():
    activations, context = problem()
    with pytest.raises(RuntimeError, match="init_process_group"):
        DRSA(distributed=True).fit(activations[:50], context=context[:50])
    with pytest.raises(TypeError, match="distributed must be True or False"):
        PRCA(distributed="yes").fit(activations[:50], context=context[:50])


def test_rank_slices_split_items_in_rank_order():
    for n_items in (0, 1, 7, 10):
        for world_size in (1, 2, 3, 4):
            parts = [rank_slice(n_items, rank, world_size) for rank in range(world_size)]
            covered = [i for part in parts for i in range(n_items)[part]]
            assert covered == list(range(n_items))
            sizes = [part.stop - part.start for part in parts]
            assert max(sizes) - min(sizes) <= 1
    assert rank_slice(5) == slice(0, 5)  # no process group: one part
    with pytest.raises(ValueError, match="rank must be in"):
        rank_slice(5, 2, 2)


def test_partition_selects_the_global_rows_held_here():
    rows = np.array([1, 4, 5, 9, 12])
    first = Partition(13, 6, 0, True)
    second = Partition(13, 7, 6, True)
    local, part = first.select(rows)
    np.testing.assert_array_equal(local, [1, 4, 5])
    assert (part.n_total, part.n_local, part.offset) == (5, 3, 0)
    local, part = second.select(rows)
    np.testing.assert_array_equal(local, [3, 6])
    assert (part.n_total, part.n_local, part.offset) == (5, 2, 3)


def test_the_problem_takes_every_data_dependent_step_of_the_solver(monkeypatch):
    """The parity test above covers the restart race on a subsample and an exchange that
    raised the objective (atoms fitted on a subsample), not only plain ascent."""
    steps = []
    race, exchange = solvers._warm_up, solvers.exchange_directions

    def watched_race(problem, *args):
        steps.append(("race", problem.n_samples))
        return race(problem, *args)

    def watched_exchange(problem, *args):
        exchanged = exchange(problem, *args)
        steps.append(("exchange", exchanged is not None))
        return exchanged

    monkeypatch.setattr(solvers, "_warm_up", watched_race)
    monkeypatch.setattr(solvers, "exchange_directions", watched_exchange)
    activations, context = problem()
    ESTIMATORS["drsa"]().fit(activations, context=context)
    assert ("race", N_SAMPLES) in steps and ("exchange", True) in steps
