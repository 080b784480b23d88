"""Training, checkpoints, resume, evaluation and the audio-cnn command, end to end on tiny data."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audio_cnn import (
    GTZAN_GENRES,
    SyntheticTask,
    TrainConfig,
    TrainingDivergedError,
    evaluate,
    load_checkpoint,
    load_run,
    train,
    write_synthetic_dataset,
)
from audio_cnn.cli import main

pytestmark = pytest.mark.slow

TINY = {"epochs": 2, "batch_size": 8, "patience": 0}


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy")
    return write_synthetic_dataset(root, SyntheticTask.toy(), clips_per_class=12, progress=False)


def _weights(run: Path, which: str = "last") -> dict[str, torch.Tensor]:
    return load_checkpoint(run / f"{which}.pt")["model_state"]


def test_train_writes_a_complete_run(toy_data, tmp_path):
    result = train(toy_data, tmp_path / "run", config=TrainConfig(**TINY), progress=False)
    run = tmp_path / "run"
    assert result.epochs_run == 2 and len(result.history) == 2
    for name in ("best.pt", "last.pt", "config.json", "metrics.jsonl", "curves.png"):
        assert (run / name).is_file(), name
    assert not list(run.glob("*.tmp")), "temporary files must not be left behind"
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    settings = json.loads((run / "config.json").read_text())
    assert settings["preset"] == "toy" and settings["class_names"] == ["class0", "class1"]

    trained = load_run(run)
    assert trained.class_names == ["class0", "class1"]
    assert not trained.model.training
    assert trained.logits(torch.zeros(3, trained.logmel.config.chunk_samples)).shape == (3, 2)


def test_same_seed_same_weights_and_resume_after_kill_reproduces_them(toy_data, tmp_path):
    augmentation = {"gain": {"p": 0.5}, "noise": {"p": 0.5}}
    settings = {**TINY, "epochs": 4, "augmentation": augmentation, "spec_augment": True}
    reference = tmp_path / "reference"
    # The command line applies the data's preset (toy) under the settings file, as here.
    train(toy_data, reference, config=TrainConfig.preset("toy", **settings), progress=False)

    # Kill a real training process (SIGKILL: no clean-up) after its first checkpoint.
    killed = tmp_path / "killed"
    config_file = tmp_path / "settings.json"
    config_file.write_text(json.dumps(settings))
    command = [sys.executable, "-m", "audio_cnn.cli", "train", str(toy_data), "--out", str(killed)]
    command += ["--config", str(config_file), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (killed / "last.pt").exists() and process.poll() is None:
        assert time.monotonic() < deadline, "training produced no checkpoint"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    interrupted_at = load_checkpoint(killed / "last.pt")["epoch"]
    assert interrupted_at < 3, "the process finished before it could be killed"

    assert main(["train", str(toy_data), "--out", str(killed), "--config", str(config_file),
                 "--resume", "--no-progress"]) == 0  # fmt: skip
    resumed, expected = _weights(killed), _weights(reference)
    assert resumed.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(resumed[name], expected[name], rtol=0, atol=0, msg=name)
    history = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]


def test_existing_run_is_not_overwritten_and_resume_checks_settings(toy_data, tmp_path):
    run = tmp_path / "run"
    train(toy_data, run, config=TrainConfig(**{**TINY, "epochs": 1}), progress=False)
    before = (run / "last.pt").read_bytes()
    with pytest.raises(FileExistsError, match="--resume"):
        train(toy_data, run, config=TrainConfig(**TINY), progress=False)
    with pytest.raises(ValueError, match="settings differ"):
        train(toy_data, run, config=TrainConfig(**{**TINY, "lr": 0.5}), resume=True)
    assert (run / "last.pt").read_bytes() == before
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        train(toy_data, tmp_path / "fresh", config=TrainConfig(**TINY), resume=True)


def test_non_finite_loss_stops_with_a_clear_message(toy_data, tmp_path):
    config = TrainConfig(**{**TINY, "optimizer": "sgd", "lr": 1e30, "momentum": 0.0})
    with pytest.raises(TrainingDivergedError, match="learning rate"):
        train(toy_data, tmp_path / "run", config=config, progress=False)
    assert not (tmp_path / "run" / "best.pt").exists()


@pytest.mark.parametrize(
    "setting", ["lr", "weight_decay", "momentum", "eval_span_seconds", "max_minutes"]
)
def test_non_finite_settings_are_refused_up_front_as_the_run_stores_them_as_json(setting):
    with pytest.raises(ValueError, match="must be finite"):
        TrainConfig(**{setting: math.inf})


def test_evaluate_reports_chunk_and_clip_metrics_and_figures(toy_data, tmp_path):
    run = tmp_path / "run"
    train(toy_data, run, config=TrainConfig(**TINY), progress=False)
    metrics = evaluate(run, toy_data, progress=False)
    assert metrics["split"] == "test"
    assert 0.0 <= metrics["accuracy"] <= 1.0
    n_test = len((toy_data / "splits" / "test.txt").read_text().split())
    assert metrics["clip"]["n"] == n_test
    assert np.sum(metrics["clip"]["confusion_matrix"]) == n_test
    assert set(metrics["per_class_accuracy"]) == {"class0", "class1"}
    out = run / "evaluation" / "test"
    assert json.loads((out / "metrics.json").read_text())["accuracy"] == metrics["accuracy"]
    assert (out / "confusion_clip.png").stat().st_size > 0


def test_cli_evaluate_json_and_predict(toy_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(toy_data), "--out", str(run), "--epochs", "1", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), str(toy_data), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {"accuracy", "per_class_accuracy", "balanced_accuracy", "clip", "chunk"} <= set(printed)

    clip = next((toy_data / "class1").glob("*.wav"))
    assert main(["predict", str(run), str(clip), "--json"]) == 0
    (prediction,) = json.loads(capsys.readouterr().out)
    assert prediction["class"] in ("class0", "class1")
    assert sum(prediction["probabilities"].values()) == pytest.approx(1.0)


def test_cli_errors_name_the_problem(tmp_path, capsys):
    assert main(["train", str(tmp_path / "missing"), "--out", str(tmp_path / "run")]) == 1
    assert "audio-cnn synth" in capsys.readouterr().err
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    assert main(["predict", str(tmp_path / "norun"), str(bad)]) == 1
    assert "norun" in capsys.readouterr().err
    config = tmp_path / "settings.json"
    config.write_text(json.dumps({"learning_rate": 1}))
    assert (
        main(["train", str(tmp_path), "--out", str(tmp_path / "r"), "--config", str(config)]) == 1
    )
    assert "learning_rate" in capsys.readouterr().err


def _write_gtzan(root: Path, tracks_per_genre: int = 5, seconds: float = 3.5) -> Path:
    rng = np.random.default_rng(0)
    for label, genre in enumerate(GTZAN_GENRES):
        folder = root / "genres_original" / genre
        folder.mkdir(parents=True)
        for track in range(tracks_per_genre):
            t = np.arange(int(seconds * 22050)) / 22050
            tone = 0.3 * np.sin(2 * np.pi * (200 + 150 * label) * t)
            noise = 0.05 * rng.standard_normal(t.size)
            sf.write(folder / f"{genre}.{track:05d}.wav", (tone + noise).astype(np.float32), 22050)
    # GTZAN ships one unreadable file; it must be skipped, not abort the run.
    (root / "genres_original" / "jazz" / "jazz.00054.wav").write_bytes(b"RIFF garbage")
    return root


def test_gtzan_preset_runs_end_to_end_on_a_gtzan_layout(tmp_path):
    data = _write_gtzan(tmp_path / "gtzan")
    result = train(
        data, tmp_path / "run", config=TrainConfig(**{**TINY, "epochs": 1}), progress=False
    )
    settings = json.loads((tmp_path / "run" / "config.json").read_text())
    assert settings["preset"] == "gtzan"
    assert settings["model_config"]["input_shape"] == [128, 128]
    assert settings["class_names"] == list(GTZAN_GENRES)
    assert result.epochs_run == 1
    metrics = evaluate(tmp_path / "run", data, progress=False)
    assert metrics["clip"]["n"] in (10, 11)  # fold 2 of 5: about one track per genre
    assert metrics["chunk"]["n"] >= metrics["clip"]["n"]
