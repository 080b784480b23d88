"""Training, checkpoints, resume, evaluation and the audio-cnn command, end to end on tiny data."""

from __future__ import annotations

import json
import math
import os
import shutil
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
    open_dataset_dir,
    train,
    write_synthetic_dataset,
)
from audio_cnn.cli import main

pytestmark = pytest.mark.slow

TINY = {"epochs": 2, "batch_size": 8, "patience": 0, "max_minutes": None}


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


# --------------------------------------------------------------------------------------------
# When training stops


def test_own_data_trains_until_validation_stops_improving_within_an_hour():
    config = TrainConfig.preset("gtzan")
    assert (config.patience, config.max_minutes, config.scheduler) == (10, 60.0, "plateau")
    assert config.epochs >= 100, "the epoch cap is a guard, not the stopping rule"
    assert config == TrainConfig(), "the dataclass defaults are the recipe for your own data"
    assert "has not improved for 10 epochs" in config.stopping_rule()
    assert "60 min" in config.stopping_rule()


def test_one_second_clips_also_train_until_a_plateau_within_five_minutes():
    config = TrainConfig.preset("toy")
    assert (config.scheduler, config.patience, config.max_minutes) == ("plateau", 8, 5.0)
    assert config.epochs >= 100, "the epoch cap is a guard, not the stopping rule"
    assert (config.batch_size, config.spec_augment) == (64, False)


def test_the_demo_keeps_the_recipe_its_recorded_sweep_was_computed_with():
    from audio_concepts.demo import demo_training

    config = demo_training(seed=3)
    assert (config.epochs, config.batch_size, config.spec_augment) == (20, 64, False)
    assert (config.scheduler, config.patience, config.max_minutes) == ("cosine", 8, None)
    assert config.seed == 3


def test_training_stops_when_the_validation_score_stops_improving(toy_data, tmp_path):
    # A learning rate far below float32 resolution leaves the weights, and so the validation
    # score, exactly as they are: every epoch after the first is without improvement.
    config = TrainConfig(**{**TINY, "epochs": 5, "patience": 1, "lr": 1e-30})
    result = train(toy_data, tmp_path / "run", config=config, progress=False)
    assert (result.epochs_run, result.best_epoch, result.stopped_early) == (2, 1, True)
    assert result.stop_reason == "the validation score has not improved for 1 epoch"


def test_training_stops_after_the_epoch_that_uses_up_the_time_budget(toy_data, tmp_path):
    config = TrainConfig(**{**TINY, "epochs": 5, "max_minutes": 1e-9})
    result = train(toy_data, tmp_path / "run", config=config, progress=False)
    assert result.epochs_run == 1 and not result.stopped_early
    assert "time budget" in result.stop_reason


def test_training_says_which_preset_why_and_when_it_stops(toy_data, tmp_path, capsys):
    # The data layer's reason for its choice of preset (from the clips), where it gives one.
    dataset = open_dataset_dir(toy_data)
    reason = dataset.preset_reason
    train(toy_data, tmp_path / "run", config=TrainConfig.preset("toy", **TINY), progress=True)
    out = capsys.readouterr().out
    assert reason.startswith("preset 'toy' (1 s chunks): ")
    assert f"{reason}\ntraining runs all 2 epochs (no early stopping" in out
    config = TrainConfig(**{**TINY, "patience": 3, "max_minutes": 60.0})
    train(toy_data, tmp_path / "other", preset="toy", config=config, progress=True)
    assert (
        "preset toy: given explicitly\ntraining stops when the validation score has not "
        "improved for 3 epochs, after the epoch that passes 60 min, or after 2 epochs"
    ) in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# Evaluating a run on its own data and on other data


@pytest.fixture
def run_and_other_data(toy, tmp_path) -> tuple[Path, Path, Path]:
    """A writable copy of the toy run, its training data, and a copy of the data elsewhere."""
    run = Path(shutil.copytree(toy[1], tmp_path / "run"))
    other = Path(shutil.copytree(toy[0], tmp_path / "elsewhere" / "recordings"))
    return run, toy[0], other


def test_evaluating_the_training_data_scores_its_test_split(run_and_other_data, capsys):
    run, own, _ = run_and_other_data
    assert main(["evaluate", str(run), str(own), "--no-progress"]) == 0
    assert (
        f"metrics and confusion matrices in {run / 'evaluation' / 'test'}"
        in capsys.readouterr().out
    )
    metrics = json.loads((run / "evaluation" / "test" / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["training_data"] is True
    assert metrics["data_dir"] == str(own.resolve())


def test_other_data_is_scored_whole_without_touching_the_runs_own_results(run_and_other_data):
    run, own, other = run_and_other_data
    evaluate(run, own, progress=False)
    own_result = (run / "evaluation" / "test" / "metrics.json").read_bytes()

    metrics = evaluate(run, other, progress=False)
    n_clips = sum(len(list((other / name).glob("*.wav"))) for name in ("class0", "class1"))
    assert metrics["split"] == "all" and metrics["clip"]["n"] == n_clips
    written = run / "evaluation" / "recordings-all" / "metrics.json"
    recorded = json.loads(written.read_text())
    assert recorded["data_dir"] == str(other.resolve()) and recorded["training_data"] is False
    assert (run / "evaluation" / "test" / "metrics.json").read_bytes() == own_result


def test_split_all_of_the_training_data_goes_beside_its_test_split(run_and_other_data):
    run, own, _ = run_and_other_data
    metrics = evaluate(run, own, split="all", progress=False)
    assert metrics["output_dir"] == str(run / "evaluation" / "all")
    assert metrics["clip"]["n"] == 40  # the toy fixture's 20 clips per class


def test_two_data_folders_of_the_same_name_get_their_own_evaluations(run_and_other_data, tmp_path):
    run, own, other = run_and_other_data
    namesake = Path(shutil.copytree(own, tmp_path / "second" / "recordings"))
    first = evaluate(run, other, split="test", progress=False)
    second = evaluate(run, namesake, split="test", progress=False)
    assert first["output_dir"] == str(run / "evaluation" / "recordings-test")
    assert second["output_dir"] not in (first["output_dir"], str(run / "evaluation" / "test"))
    assert Path(second["output_dir"]).name.startswith("recordings-")
    first_file = json.loads((Path(first["output_dir"]) / "metrics.json").read_text())
    assert first_file["data_dir"] == str(other.resolve())
    again = evaluate(run, other, split="test", progress=False)
    assert again["output_dir"] == first["output_dir"], "the same data goes to the same place"


def test_a_plain_folder_of_one_second_clips_gets_the_one_second_preset_and_is_told(
    tmp_path, capsys
):
    import soundfile as sf

    from audio_cnn.cli import main

    rng = np.random.default_rng(0)
    for label, name in enumerate(["one", "two", "three"]):
        (tmp_path / "words" / name).mkdir(parents=True)
        for i in range(8):  # spoken-word-like: a tone per class in noise, 1 s at 16 kHz
            t = np.arange(16000) / 16000
            clip = 0.3 * np.sin(2 * np.pi * 300 * (label + 1) * t) + 0.05 * rng.normal(size=t.size)
            sf.write(tmp_path / "words" / name / f"speaker{i}.wav", clip.astype(np.float32), 16000)
    flags = ["--epochs", "1", "--batch-size", "8", "--no-progress"]
    assert main(["train", str(tmp_path / "words"), "--out", str(tmp_path / "run"), *flags]) == 0
    out = capsys.readouterr().out
    assert "preset 'toy' (1 s chunks): median clip 1.00 s" in out
    settings = json.loads((tmp_path / "run" / "config.json").read_text())
    assert settings["preset"] == "toy" and settings["logmel_config"]["chunk_seconds"] == 1.0
