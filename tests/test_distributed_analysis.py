"""`zennit-drsa` under torchrun: local gloo processes share an analysis, rank 0 writes it.

Each command runs on every rank as torchrun starts it (its environment variables, one process
per rank, loopback only); the sharded steps must give what one process gives, in one folder
with one report.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from audio_cnn.ownership import lock_folder
from audio_concepts.cli import main
from audio_concepts.config import METHODS
from zennit_drsa import load

pytestmark = [
    pytest.mark.slow,
    # A few solver iterations keep the test fast; convergence is not what it checks.
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
    # The run's default layer has 32 channels: K = 2 of 16 leave no residual, as intended here.
    pytest.mark.filterwarnings("ignore:K = 2 subspaces of dimension 16 span:UserWarning"),
]

# One command on two processes (start, import torch, load the run, compute) takes seconds;
# the bound only turns a hung collective into a failure instead of a hung test run.
_TIMEOUT_S = 300
SEEDS = (0, 1)
FIT_FLAGS = [
    "--n-subspaces", "2",
    "--fit-clips-per-class", "14",
    "--eval-clips-per-class", "3",
    # All three test clips of each class (on the toy data two of them hold one object, which
    # min_objects = 2 would leave out): 6 inputs, 3 per rank, some with undefined recovery.
    "--min-objects", "1",
    "--n-locations", "4",
    "--max-iter", "15",
    "--n-restarts", "1",
    "--seeds", *map(str, SEEDS),
    "--sanity-inputs", "2",
    "--no-progress",
]  # fmt: skip
REPORT_FLAGS = ["--examples-per-class", "1", "--prototypes-per-concept", "2", "--no-progress"]

# Tolerances of the sharded results against one process's. The ranks explain and score
# their inputs in smaller batches, on one thread each: float32 convolutions then round
# differently (the logits differ by ~1e-8), while the concept maps came out bit-identical.
# Maps, relative to their largest value (heatmaps peak at ~3e-4 on the toy model):
MAPS_RTOL, MAPS_ATOL = 1e-5, 1e-6
# Measures of the maps (AUPC, recovery): observed within 2e-7.
MAP_MEASURES = (1e-5, 1e-6)
# Measures of layer relevance (selectivity, its matrix, interventional recovery) are ratios
# of differences of float32 LRP relevances, computed on each rank's batches of patched
# inputs: observed up to 2.3e-5 relative.
LAYER_MEASURES = (1e-4, 1e-6)
_LAYER_KEYS = ("selectivity", "interventional_recovery")
# The summary's statistics of them (differences of means, bootstrap intervals) add
# cancellation: observed up to 1.2e-4 relative where below 1e-5 in magnitude.
SUMMARY = (1e-4, 1e-5)
# The sharded fit against one process's: projector entries (absolute) and objective (relative).
CLOSED_FORM_ATOL = 2e-6
ITERATIVE_ATOL = 1e-3
FIT_OBJECTIVE_RTOL = 1e-5


# --------------------------------------------------------------------------- launching ranks


@dataclass(frozen=True)
class Rank:
    """How one rank ended: its exit status and what it wrote to stdout and stderr."""

    exitcode: int | None
    out: str
    err: str


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rank_process(rank: int, world_size: int, port: int, argv: list[str], logs: str) -> None:
    """One torchrun-style process: torchrun's variables, then ``zennit-drsa ARGV``."""
    # Both streams to files, at the descriptors: what the rank printed, and any traceback.
    for fd, suffix in ((1, "out"), (2, "err")):
        with open(Path(logs) / f"rank{rank}.{suffix}", "w") as file:
            os.dup2(file.fileno(), fd)
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
    )
    if sys.platform.startswith("linux"):
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # loopback only
    torch.set_num_threads(1)  # the ranks share the machine's few cores

    status = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(status)


def _torchrun(argv: list[str], logs: Path, world_size: int = 2) -> list[Rank]:
    """Run ``zennit-drsa ARGV`` on ``world_size`` processes; how each ended."""
    logs.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")
    port = _free_port()
    processes = [
        context.Process(target=_rank_process, args=(rank, world_size, port, argv, str(logs)))
        for rank in range(world_size)
    ]
    for process in processes:
        process.start()
    deadline = time.monotonic() + _TIMEOUT_S
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    hung = [process for process in processes if process.is_alive()]
    for process in hung:
        process.kill()
        process.join()
    ranks = [
        Rank(
            process.exitcode,
            (logs / f"rank{rank}.out").read_text(),
            (logs / f"rank{rank}.err").read_text(),
        )
        for rank, process in enumerate(processes)
    ]
    assert not hung, f"{len(hung)} rank(s) still running after {_TIMEOUT_S} s: {ranks}"
    return ranks


def _sharded(argv: list[str], logs: Path, world_size: int = 2) -> list[Rank]:
    """``zennit-drsa ARGV`` on ``world_size`` processes, which must all succeed."""
    ranks = _torchrun(argv, logs, world_size)
    for rank, ended in enumerate(ranks):
        assert ended.exitcode == 0, f"rank {rank} of {argv[0]} failed:\n{ended.err}"
    # Rank 0 speaks for all; the others stay silent on stdout.
    assert ranks[0].out.strip()
    assert all(not ended.out for ended in ranks[1:]), [ended.out for ended in ranks[1:]]
    return ranks


# --------------------------------------------------------------------------- comparing


def _assert_same(
    expected: Any, actual: Any, tolerance: Callable[[str], tuple[float, float]], where: str = ""
) -> None:
    """JSON values equal: ``None`` in the same places, numbers close, the rest equal.

    ``tolerance(where)``: ``(rtol, atol)`` of the number at ``where`` (its path of keys).
    """
    if isinstance(expected, dict):
        assert isinstance(actual, dict), where
        assert actual.keys() == expected.keys(), where
        for key, value in expected.items():
            _assert_same(value, actual[key], tolerance, f"{where}/{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), where
        for index, (a, b) in enumerate(zip(expected, actual, strict=True)):
            _assert_same(a, b, tolerance, f"{where}[{index}]")
    elif isinstance(expected, float) or (
        isinstance(expected, int) and not isinstance(expected, bool) and isinstance(actual, float)
    ):
        assert isinstance(actual, (int, float)) and not isinstance(actual, bool), where
        rtol, atol = tolerance(where)
        assert math.isclose(actual, expected, rel_tol=rtol, abs_tol=atol), (
            f"{where}: {actual} != {expected}"
        )
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def _results_tolerance(where: str) -> tuple[float, float]:
    return LAYER_MEASURES if any(key in where for key in _LAYER_KEYS) else MAP_MEASURES


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as file:
        return {name: file[name] for name in file.files}


def _estimators(folder: Path) -> dict[tuple[str, str, int], Any]:
    """Every saved estimator of an analysis folder: (method, class, seed) → estimator."""
    state = json.loads((folder / "analysis.json").read_text())
    found = {}
    for method in state["config"]["methods"]:
        seeds = SEEDS if method != "prca" else SEEDS[:1]
        for name in state["class_names"]:
            for seed in seeds:
                stem = folder / "subspaces" / method / name / f"seed{seed}"
                found[(method, name, seed)] = load(stem)
    return found


def _assert_unlocked(folder: Path) -> None:
    """No writer left behind: no owner record, and the folder's lock can be taken again.

    (The lock file ``.lock`` itself stays on POSIX: filelock releases the OS lock, not the
    file; an unheld lock file is what one process leaves too.)
    """
    assert not (folder / ".lock-owner.json").exists()
    with lock_folder(folder, what="analysis folder", hint="test"):
        pass


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def single(toy, tmp_path_factory) -> Path:
    """The whole analysis on one process (this one): fit, explain, evaluate, report."""
    data, run = toy
    out = tmp_path_factory.mktemp("single") / "A"
    assert main(["fit", str(run), str(data), "--out", str(out), *FIT_FLAGS]) == 0
    assert main(["explain", str(out), "--no-progress"]) == 0
    assert main(["evaluate", str(out), "--no-progress"]) == 0
    assert main(["report", str(out), *REPORT_FLAGS]) == 0
    return out


@pytest.fixture(scope="module")
def sharded(single, tmp_path_factory) -> Path:
    """``single``'s fit, then explain, evaluate and report each on two processes."""
    root = tmp_path_factory.mktemp("sharded")
    out = root / "B"
    _copy_fit(single, out)
    for command, flags in (
        ("explain", ["--no-progress"]),
        ("evaluate", ["--no-progress"]),
        ("report", REPORT_FLAGS),
    ):
        _sharded([command, str(out), *flags], root / command)
    return out


def _copy_fit(source: Path, target: Path) -> None:
    """The fit of ``source`` (its record and subspaces) alone, in a new folder ``target``."""
    target.mkdir(parents=True)
    shutil.copy2(source / "analysis.json", target / "analysis.json")
    shutil.copytree(source / "subspaces", target / "subspaces")


def _results(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "evaluation" / "results.json").read_text())


def _records(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every scored record: the methods' (per seed) and the references'."""
    found = []
    for group in ("methods", "references"):
        for name, records in results.get(group, {}).items():
            if isinstance(records, list) and records and isinstance(records[0], dict):
                found += [(f"{group}/{name}/seed{r['seed']}", r) for r in records]
    return found


# --------------------------------------------------------------------------- tests


def test_a_sharded_analysis_writes_one_report(single, sharded):
    out = sharded
    # One report, one summary, written by rank 0; nobody holds the folder.
    assert sorted(p.relative_to(out) for p in out.rglob("report*.html")) == [Path("report.html")]
    assert sorted(p.relative_to(out) for p in out.rglob("summary.json")) == [Path("summary.json")]
    assert (out / "evaluation" / "flipping.png").is_file()
    assert (out / "evaluation" / "metrics.json").is_file()
    _assert_unlocked(out)
    state = json.loads((out / "analysis.json").read_text())
    assert state["fit_id"] == json.loads((single / "analysis.json").read_text())["fit_id"]
    assert {"explain", "evaluate", "report"} <= state["timings_s"].keys()

    # The summary the report shows is one process's, all but the seconds each step took.
    summaries = [json.loads((f / "summary.json").read_text()) for f in (single, out)]
    for summary in summaries:
        summary.pop("timings_s")
    _assert_same(*summaries, lambda _: SUMMARY)


def test_the_inputs_explained_in_two_shares_have_one_process_maps(single, sharded):
    expected = sorted(p.name for p in (single / "explanations").glob("*.npz"))
    assert sorted(p.name for p in (sharded / "explanations").glob("*.npz")) == expected
    assert len(expected) == 1 + len(METHODS) * len(SEEDS) - 1  # inputs; prca has one seed
    n_inputs = len(_arrays(single / "explanations" / "inputs.npz")["labels"])
    assert n_inputs >= 4, "each rank should explain several inputs"
    for name in expected:
        ours = _arrays(sharded / "explanations" / name)
        theirs = _arrays(single / "explanations" / name)
        assert ours.keys() == theirs.keys(), name
        for key, value in theirs.items():
            if value.dtype.kind in "fc":
                scale = float(np.abs(value).max())
                np.testing.assert_allclose(
                    ours[key],
                    value,
                    rtol=MAPS_RTOL,
                    atol=MAPS_ATOL * scale,
                    err_msg=f"{name}:{key}",
                )
            else:
                np.testing.assert_array_equal(ours[key], value, err_msg=f"{name}:{key}")
        if name != "inputs.npz":
            assert len(ours["heatmaps"]) == n_inputs


def test_the_inputs_scored_in_two_shares_have_one_process_results(single, sharded):
    ours, theirs = _results(sharded), _results(single)
    assert ours["accuracy"] == theirs["accuracy"]
    # The split's clips were predicted in two shares too: the same confusion, chunk by chunk.
    metrics = [
        json.loads((f / "evaluation" / "metrics.json").read_text()) for f in (sharded, single)
    ]
    for level in ("clip", "chunk"):
        assert metrics[0][level]["confusion_matrix"] == metrics[1][level]["confusion_matrix"]
        assert metrics[0][level]["n"] == metrics[1][level]["n"] > 0
    assert ours["n_inputs"] == theirs["n_inputs"] == len(theirs["labels"])
    assert set(ours["methods"]) == {*METHODS, "standard"}
    assert "references" in theirs  # the toy data are synthetic: the references are scored
    records = _records(theirs)
    assert len(records) > len(METHODS)
    undefined = 0
    for _, record in records:
        for values in record["measures"].values():
            assert len(values) == theirs["n_inputs"]
            undefined += sum(value is None for value in values)
    assert undefined > 0  # some None to find in the same places

    # Every per-input measure of every method, seed and reference, the selectivity matrices,
    # the checks, the overlap: as one process scored them.
    _assert_same(theirs, ours, _results_tolerance)


def test_the_sharded_results_have_the_keys_of_one_process(single, sharded):
    ours, theirs = _records(_results(sharded)), _records(_results(single))
    assert [where for where, _ in ours] == [where for where, _ in theirs]
    for (where, actual), (_, expected) in zip(ours, theirs, strict=True):
        assert actual.keys() == expected.keys(), where


def test_a_sharded_fit_saves_the_estimators_of_one_process(single, toy, tmp_path):
    data, run = toy
    out = tmp_path / "C"
    _sharded(["fit", str(run), str(data), "--out", str(out), *FIT_FLAGS], tmp_path / "fit")
    _assert_unlocked(out)
    state = json.loads((out / "analysis.json").read_text())
    reference = json.loads((single / "analysis.json").read_text())
    # The two shares of each class's chunks are one process's pairs.
    assert state["fit_clips"] == reference["fit_clips"]
    assert state["fit_id"] and state["fit_id"] != reference["fit_id"]

    ours, theirs = _estimators(out), _estimators(single)
    assert ours.keys() == theirs.keys()
    for key, estimator in ours.items():
        # Rank 0's fit id on every estimator; saved to be used alone.
        assert estimator.metadata_["fit_id"] == state["fit_id"], key
        assert estimator.get_params()["distributed"] is False, key
        expected = theirs[key]
        p, q = estimator.projectors(), expected.projectors()
        assert p.shape == q.shape, key
        # The objective reached, relative: observed up to 2e-6 (DRSA, DSA), 1e-7 (others).
        change = abs(estimator.objective_ - expected.objective_) / abs(expected.objective_)
        assert change <= FIT_OBJECTIVE_RTOL, (key, estimator.objective_, expected.objective_)
        if key[0] in ("prca", "random"):
            # Closed form (PRCA: eigenvectors of the all-reduced cross-covariance) or seeded
            # (random): the projectors up to float rounding (observed: 3e-7 and 0).
            np.testing.assert_allclose(p, q, rtol=0, atol=CLOSED_FORM_ATOL, err_msg=str(key))
        else:
            # DRSA and DSA iterate (here 15 steps, float32) on all-reduced sums, summed in
            # another order than one process's: they drift apart slightly (observed up to
            # 8e-6 for DRSA, 4e-5 for DSA) and reach the same objective.
            np.testing.assert_allclose(p, q, rtol=0, atol=ITERATIVE_ATOL, err_msg=str(key))


def test_more_processes_than_inputs_are_refused_on_every_rank(single, tmp_path):
    out = tmp_path / "D"
    _copy_fit(single, out)
    # One clip per class: fewer inputs to explain than the three processes.
    state = json.loads((out / "analysis.json").read_text())
    state["config"]["eval_clips_per_class"] = 1
    (out / "analysis.json").write_text(json.dumps(state))
    n_inputs = len(state["class_names"])
    assert n_inputs < 3

    ranks = _torchrun(["explain", str(out), "--no-progress"], tmp_path / "logs", world_size=3)

    for rank, ended in enumerate(ranks):
        assert ended.exitcode == 1, (rank, ended)
        assert "Traceback" not in ended.err, ended.err
        assert "zennit-drsa explain: error:" in ended.err, ended.err
        assert f"{n_inputs} explained inputs cannot be shared by 3 processes" in ended.err
    assert not (out / "explanations" / "inputs.npz").exists()
    _assert_unlocked(out)


def _failing_share(rank: int, world_size: int, port: int, out: str) -> None:
    """Join a gloo group; rank 1's share fails; write what each rank's calls raised."""
    import torch.distributed as dist

    from audio_concepts.sharding import computed_everywhere, gather_computed

    if sys.platform.startswith("linux"):
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )

    def share() -> int:
        if rank == 1:
            raise ValueError("clip 7 cannot be read")
        return rank

    raised = {}
    for name, call in (("gather", gather_computed), ("everywhere", computed_everywhere)):
        try:
            call(share, "explain")
            raised[name] = None
        except Exception as error:  # recorded for the test to check
            raised[name] = f"{type(error).__name__}: {error}"
    # Both ranks still agree afterwards: the group is usable, nobody hangs.
    raised["after"] = gather_computed(lambda: rank, "after")
    dist.destroy_process_group()
    Path(out, f"rank{rank}.json").write_text(json.dumps(raised))


def test_an_error_on_one_rank_stops_every_rank_with_its_message(tmp_path):
    context = multiprocessing.get_context("spawn")
    port = _free_port()
    processes = [
        context.Process(target=_failing_share, args=(rank, 2, port, str(tmp_path)))
        for rank in range(2)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(_TIMEOUT_S)
    assert not any(process.is_alive() for process in processes)
    first, second = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    for name in ("gather", "everywhere"):
        # The failing rank raises its own error; the other names the rank and the error.
        assert second[name] == "ValueError: clip 7 cannot be read"
        assert first[name] == (
            "RuntimeError: explain failed on rank 1 (ValueError: clip 7 cannot be read); "
            "every rank stops"
        )
    assert first["after"] == second["after"] == [0, 1]
