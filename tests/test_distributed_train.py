"""`audio-cnn train` under torchrun: two local gloo processes, launched as torchrun does."""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import socket
import sys
from pathlib import Path

import torch

from audio_cnn import load_checkpoint
from audio_cnn.distributed import process_group, torchrun_env, world
from audio_cnn.ownership import lock_folder

# Training the toy dataset twice over two processes takes well under a minute; the bound only
# turns a hung collective into a failure instead of a hung test run.
_TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rank_main(rank: int, world_size: int, port: int, argv: list[str], weights: str) -> None:
    """One torchrun-style process: torchrun's variables, then the CLI; saves its final weights."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    if sys.platform.startswith("linux"):
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # loopback only
    torch.set_num_threads(1)  # two processes on two cores

    from audio_cnn.cli import main

    # The package exports the function train under the module's name.
    training = importlib.import_module("audio_cnn.train")
    models = []
    build = training.AudioCNN

    def recorded(*args, **kwargs):
        models.append(build(*args, **kwargs))
        return models[-1]

    # The model this rank trained, to compare the ranks' final weights.
    training.AudioCNN = recorded
    status = main(argv)
    if status == 0:
        torch.save(models[0].state_dict(), weights)
    sys.exit(status)


def _torchrun(argv: list[str], weights_dir: Path, world_size: int = 2) -> list[int]:
    """Run ``audio-cnn ARGV`` on ``world_size`` processes; their exit statuses.

    Each rank that succeeds saves its final weights to ``weights_dir/rank<RANK>.pt``.
    """
    context = multiprocessing.get_context("spawn")
    port = _free_port()
    paths = [weights_dir / f"rank{rank}.pt" for rank in range(world_size)]
    processes = [
        context.Process(target=_rank_main, args=(rank, world_size, port, argv, str(path)))
        for rank, path in enumerate(paths)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(_TIMEOUT_S)
    hung = [process for process in processes if process.is_alive()]
    for process in hung:
        process.kill()
        process.join()
    assert not hung, f"{len(hung)} rank(s) still running after {_TIMEOUT_S} s"
    return [process.exitcode for process in processes]


def _trained(argv: list[str], weights_dir: Path) -> list[dict]:
    """Train with ``audio-cnn ARGV`` on two processes; each rank's final state dict."""
    assert _torchrun(argv, weights_dir) == [0, 0]
    return [torch.load(weights_dir / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]


def _assert_same_weights(states: list[dict]) -> None:
    first, *others = states
    for other in others:
        assert other.keys() == first.keys()
        for name, value in first.items():
            assert torch.equal(other[name], value), name


def test_two_ranks_train_to_identical_weights_and_rank_0_writes_the_run(toy, tmp_path):
    data, _ = toy
    run = tmp_path / "run"
    argv = ["train", str(data), "--out", str(run), "--preset", "toy", "--epochs", "2"]
    argv += ["--batch-size", "8", "--patience", "0", "--no-progress"]
    states = _trained(argv, tmp_path)

    _assert_same_weights(states)
    last = load_checkpoint(run / "last.pt")
    assert last["epoch"] == 1
    # Rank 0 saved the weights every rank ended with.
    for name, value in last["model_state"].items():
        assert torch.equal(value, states[0][name]), name
    assert load_checkpoint(run / "best.pt")["epoch"] in (0, 1)
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in history] == [1, 2]
    assert (run / "curves.png").is_file()
    assert (run / "data_report.json").is_file()
    assert json.loads((run / "config.json").read_text())["preset"] == "toy"


def test_a_run_stopped_under_two_ranks_resumes_under_two_ranks(toy, tmp_path):
    data, _ = toy
    run = tmp_path / "run"
    # A time budget that every epoch passes: the first run stops after its first epoch.
    argv = ["train", str(data), "--out", str(run), "--preset", "toy", "--epochs", "2"]
    argv += ["--batch-size", "8", "--patience", "0", "--max-minutes", "1e-9", "--no-progress"]
    _trained(argv, tmp_path)
    assert load_checkpoint(run / "last.pt")["epoch"] == 0
    first = (run / "metrics.jsonl").read_text().splitlines()

    states = _trained([*argv, "--resume"], tmp_path)

    _assert_same_weights(states)
    assert load_checkpoint(run / "last.pt")["epoch"] == 1
    history = (run / "metrics.jsonl").read_text().splitlines()
    assert len(history) == 2
    assert history[:1] == first


def test_a_run_in_use_stops_every_rank_instead_of_leaving_them_waiting(toy, tmp_path):
    data, _ = toy
    run = tmp_path / "run"
    argv = ["train", str(data), "--out", str(run), "--preset", "toy", "--no-progress"]
    with lock_folder(run, what="run", hint="test"):
        # Rank 0 is refused the lock; rank 1 learns it from rank 0. Both exit with status 1.
        assert _torchrun(argv, tmp_path) == [1, 1]
    assert not (run / "last.pt").exists()


def test_without_torchrun_or_on_one_process_no_process_group_is_started(monkeypatch):
    torchrun = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1"}
    monkeypatch.setenv("MASTER_PORT", "29500")
    for name, value in torchrun.items():
        monkeypatch.setenv(name, value)
    assert torchrun_env() == (1, 2, 1)

    monkeypatch.setenv("WORLD_SIZE", "1")
    assert torchrun_env() is None
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setenv("RANK", "0")
    assert torchrun_env() is None
    with process_group(torch.device("cpu")) as device:
        assert device == torch.device("cpu")
        assert world() == (0, 1)
