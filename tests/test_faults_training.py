"""Fault cases of training and evaluation that users meet, through the audio-cnn command.

Bad settings, unavailable devices, damaged, foreign and hostile checkpoints, data of other
classes, a full disk and a second writer must each end in one line naming the culprit, exit
status 1 and no traceback, with nothing overwritten.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import importlib
import io
import json
import math
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import audio_cnn.checkpoint
import audio_cnn.dataset_dirs
from audio_cnn import AudioCNN, TrainConfig, load_checkpoint
from audio_cnn.cli import main

pytestmark = pytest.mark.fault

# The modules, not the functions the package exports under the same names.
train_module = importlib.import_module("audio_cnn.train")
evaluate_module = importlib.import_module("audio_cnn.evaluate")

# The toy fixture's run was trained with these settings; resuming it needs the same.
TOY_RUN_FLAGS = ["--preset", "toy", "--epochs", "1", "--batch-size", "8", "--patience", "0"]
TWO_EPOCHS = ["--preset", "toy", "--epochs", "2", "--batch-size", "8", "--patience", "0"]


class DataRead(Exception):
    """Raised by the spies on the data: the command went on to read it."""


def _spy(*args: object, **kwargs: object) -> None:
    raise DataRead(args)


def _watch_data(patch: pytest.MonkeyPatch) -> None:
    """Make any opening of a dataset directory raise :class:`DataRead`."""
    patch.setattr(audio_cnn.dataset_dirs, "open_dataset_dir", _spy)
    patch.setattr(train_module, "open_dataset_dir", _spy)


def _one_line(err: str, *names: str) -> None:
    """Check that ``err`` is one line naming each of ``names``, with no traceback."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for name in names:
        assert name in lines[0], f"{name!r} not in {lines[0]!r}"


@pytest.fixture
def run_copy(toy, tmp_path) -> Path:
    """A writable copy of the session's trained toy run."""
    return Path(shutil.copytree(toy[1], tmp_path / "run"))


@pytest.fixture
def clip(toy) -> Path:
    return next((toy[0] / "class0").glob("*.wav"))


# --------------------------------------------------------------------------------------------
# Training settings: typed and ranged before any data is read


@pytest.mark.parametrize(
    ("content", "setting"),
    [
        ('{"epochs": true}', "epochs"),
        ('{"epochs": 2.5}', "epochs"),
        ('{"max_minutes": "5"}', "max_minutes"),
        ('{"max_minutes": Infinity}', "max_minutes"),
        ('{"lr": NaN}', "lr"),
        ('{"lr": 0}', "lr"),
        ('{"batch_size": 0}', "batch_size"),
        ('{"seed": -1}', "seed"),
        ('{"momentum": 1}', "momentum"),
        ('{"scheduler": "step"}', "scheduler"),
        ('{"spec_augment": "yes"}', "spec_augment"),
        ('{"device": 7}', "device"),
        ('{"device": "bogus"}', "bogus"),
        ('{"augmentation": {"gain": {"p": 2}}}', "augmentation"),
        ('{"augmentation": {"reverb": {}}}', "reverb"),
        ('{"learning_rate": 0.1}', "learning_rate"),
    ],
)
def test_a_bad_setting_in_the_config_file_is_one_line_naming_file_and_setting(
    tmp_path, monkeypatch, capsys, content, setting
):
    _watch_data(monkeypatch)
    config = tmp_path / "settings.json"
    config.write_text(content)
    command = ["train", str(tmp_path / "data"), "--out", str(tmp_path / "run")]
    assert main([*command, "--config", str(config)]) == 1
    _one_line(capsys.readouterr().err, "audio-cnn train: error:", str(config), setting)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--max-minutes", "-1"], "--max-minutes"),
        (["--max-minutes", "nan"], "--max-minutes"),
        (["--epochs", "0"], "--epochs"),
        (["--lr", "inf"], "--lr"),
        (["--patience", "-2"], "--patience"),
        (["--optimizer", "adam"], "--optimizer"),
        (["--device", "bogus"], "--device"),
        (["--device", "cuda:x"], "--device"),
    ],
)
def test_a_bad_flag_is_one_line_naming_the_flag_before_the_data_is_read(
    tmp_path, monkeypatch, capsys, flags, named
):
    _watch_data(monkeypatch)
    assert main(["train", str(tmp_path), "--out", str(tmp_path / "run"), *flags]) == 1
    _one_line(capsys.readouterr().err, named)
    assert not (tmp_path / "run").exists()


_FIELDS = [field.name for field in dataclasses.fields(TrainConfig)]
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 300),
    st.integers(),
    st.sampled_from([2**63, 10**400, -(10**400)]),  # beyond torch's seeds and a float's range
    st.floats(),
    st.sampled_from(["adamw", "sgd", "cosine", "plateau", "none", "pad", "skip", "cpu", "cuda"]),
    st.text(max_size=6),
    st.lists(st.integers(0, 3), max_size=3),
    st.dictionaries(
        st.sampled_from(["gain", "noise", "p"]),
        st.none() | st.floats(-1, 2) | st.dictionaries(st.just("p"), st.floats(-1, 2)),
        max_size=2,
    ),
)
_SETTINGS = st.dictionaries(st.sampled_from([*_FIELDS, "learning_rate"]), _VALUES, max_size=5)


@settings(max_examples=300, deadline=None)
@given(data=_SETTINGS)
def test_any_settings_build_a_storable_config_or_raise_a_one_line_value_error(data):
    try:
        config = TrainConfig.from_dict(data)
    except ValueError as error:
        message = str(error)
        assert "\n" not in message
        assert any(name in message for name in data), message
        return
    stored = json.loads(json.dumps(config.to_dict(), allow_nan=False))
    assert TrainConfig.from_dict(stored) == config


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=_SETTINGS)
def test_any_config_file_fails_in_one_line_before_the_data_or_is_accepted(tmp_path, data):
    config = tmp_path / "settings.json"
    config.write_text(json.dumps(data))  # NaN and Infinity as Python's json writes them
    command = ["train", str(tmp_path / "data"), "--out", str(tmp_path / "run")]
    stderr = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(stderr):
        _watch_data(patch)
        patch.setattr(torch.cuda, "is_available", lambda: False)
        try:
            status = main([*command, "--config", str(config)])
        except DataRead:
            TrainConfig.from_dict(data)  # only valid settings get as far as the data
            return
    assert status == 1
    _one_line(stderr.getvalue(), str(config))


# --------------------------------------------------------------------------------------------
# Devices


@pytest.mark.parametrize("command", ["train", "evaluate", "predict"])
def test_cuda_without_a_gpu_is_one_line_before_any_work(
    toy, run_copy, clip, monkeypatch, capsys, command
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _watch_data(monkeypatch)
    arguments = {
        "train": [str(toy[0]), "--out", str(run_copy.parent / "new")],
        "evaluate": [str(run_copy), str(toy[0])],
        "predict": [str(run_copy), str(clip)],
    }[command]
    assert main([command, *arguments, "--device", "cuda"]) == 1
    _one_line(capsys.readouterr().err, f"audio-cnn {command}: error:", "cuda", "not available")
    assert not (run_copy / "evaluation").exists()
    assert not (run_copy.parent / "new").exists()


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_an_unknown_device_is_one_line_naming_it(toy, run_copy, clip, capsys, command):
    target = str(toy[0]) if command == "evaluate" else str(clip)
    assert main([command, str(run_copy), target, "--device", "bogus"]) == 1
    _one_line(capsys.readouterr().err, "'bogus'")


# --------------------------------------------------------------------------------------------
# Damaged, foreign and hostile checkpoints


class _Payload:
    """Unpickling this would create a file: a stand-in for code in a hostile checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _damage(case: str, path: Path, tmp_path: Path) -> str:
    """Replace the checkpoint at ``path`` by a broken one; returns a word the error must hold."""
    checkpoint = load_checkpoint(path)
    state = checkpoint["model_state"]
    # Files of another kind in place of the checkpoint.
    if case == "not a torch file":
        path.write_bytes(b"these are not the weights you are looking for")
        return "torch"
    if case == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
        return "damaged"
    if case == "bare state dict":
        torch.save(state, path)
        return "not an audio_cnn checkpoint"
    if case == "a tensor":
        torch.save(torch.randn(3), path)
        return "not an audio_cnn checkpoint"
    if case == "pickled code":
        torch.save({**checkpoint, "extra": _Payload(tmp_path / "pwned")}, path)
        return "pickled"
    # The other cases edit one entry of a real checkpoint.
    if case == "other architecture":
        checkpoint["model_state"] = AudioCNN.preset("gtzan").state_dict()
        expected = "do not fit"
    elif case == "other channel layout":
        checkpoint["model_config"] = {**checkpoint["model_config"], "in_channels": 2}
        expected = "do not fit"
    elif case == "more class names than outputs":
        checkpoint["class_names"] = ["class0", "class1", "class2"]
        expected = "3 classes"
    elif case == "NaN weights":
        state["features.0.weight"][0, 0, 0, 0] = math.nan
        expected = "NaN"
    elif case == "infinite weights":
        state["classifier.1.bias"][0] = math.inf
        expected = "infinite"
    elif case == "newer format":
        checkpoint["format"] = 99
        expected = "upgrade"
    elif case == "format not a number":
        checkpoint["format"] = "1"
        expected = "format"
    elif case == "invalid model settings":
        checkpoint["model_config"] = {**checkpoint["model_config"], "channels": "wide"}
        expected = "model settings"
    else:
        raise AssertionError(case)
    torch.save(checkpoint, path)
    return expected


_CASES = [
    "not a torch file",
    "truncated",
    "bare state dict",
    "a tensor",
    "pickled code",
    "other architecture",
    "other channel layout",
    "more class names than outputs",
    "NaN weights",
    "infinite weights",
    "newer format",
    "format not a number",
    "invalid model settings",
]


@pytest.mark.parametrize("command", ["predict", "evaluate"])
@pytest.mark.parametrize("case", _CASES)
def test_a_bad_checkpoint_is_refused_in_one_line_naming_the_file(
    toy, run_copy, clip, tmp_path, capsys, command, case
):
    best = run_copy / "best.pt"
    expected = _damage(case, best, tmp_path)
    target = str(toy[0]) if command == "evaluate" else str(clip)
    assert main([command, str(run_copy), target]) == 1
    _one_line(capsys.readouterr().err, str(best), expected)
    assert not (tmp_path / "pwned").exists(), "the pickled payload was run"
    assert not (run_copy / "evaluation").exists()


# --------------------------------------------------------------------------------------------
# Data of other classes


@pytest.mark.parametrize("classes", [("cat", "dog"), ("class0", "class1", "class2")])
def test_evaluating_data_of_other_classes_is_one_line_naming_them(
    toy, run_copy, tmp_path, capsys, classes
):
    other = tmp_path / "other"
    clips = sorted((toy[0] / "class0").glob("*.wav"))
    for name in classes:
        (other / name).mkdir(parents=True)
        for clip in clips[:5]:
            shutil.copy(clip, other / name / clip.name)
    assert main(["evaluate", str(run_copy), str(other)]) == 1
    _one_line(capsys.readouterr().err, str(other), "classes", classes[-1])
    assert not (run_copy / "evaluation").exists()


# --------------------------------------------------------------------------------------------
# A full disk and a diverging run keep the last complete checkpoint


def _no_space(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def _torch_no_space(*args: object, **kwargs: object) -> None:
    # What torch.save itself raises when the disk fills during the write.
    raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")


@pytest.mark.parametrize("failure", [_no_space, _torch_no_space])
def test_a_full_disk_while_saving_keeps_the_last_checkpoint_and_the_run_resumes(
    toy, tmp_path, monkeypatch, capsys, failure
):
    run = tmp_path / "run"
    saves = []
    real_save = torch.save

    def save_then_fill_the_disk(obj, path, *args, **kwargs):
        saves.append(path)
        if len(saves) > 2:  # epoch 1 wrote best.pt and last.pt; the disk is now full
            failure()
        real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(audio_cnn.checkpoint.torch, "save", save_then_fill_the_disk)
    command = ["train", str(toy[0]), "--out", str(run), *TWO_EPOCHS, "--no-progress"]
    assert main(command) == 1
    _one_line(capsys.readouterr().err, "audio-cnn train: error:", "epoch 2", str(run), "--resume")
    assert load_checkpoint(run / "last.pt")["epoch"] == 0, "the epoch-1 checkpoint must survive"
    assert load_checkpoint(run / "best.pt")["epoch"] == 0
    assert not list(run.glob(".*.tmp")), "no half-written files may be left behind"

    monkeypatch.undo()  # disk space freed
    assert main([*command, "--resume"]) == 0
    assert load_checkpoint(run / "last.pt")["epoch"] == 1


def test_a_full_disk_while_writing_metrics_leaves_the_earlier_evaluation(
    toy, run_copy, monkeypatch, capsys
):
    assert main(["evaluate", str(run_copy), str(toy[0]), "--no-progress"]) == 0
    metrics = run_copy / "evaluation" / "test" / "metrics.json"
    before = metrics.read_bytes()
    capsys.readouterr()
    monkeypatch.setattr(evaluate_module, "write_json_atomic", _no_space)
    assert main(["evaluate", str(run_copy), str(toy[0]), "--no-progress"]) == 1
    _one_line(capsys.readouterr().err, "audio-cnn evaluate: error:", "No space left", "test")
    assert metrics.read_bytes() == before


def test_a_validation_loss_of_nan_stops_training_before_the_good_checkpoint_is_replaced(
    toy, tmp_path, monkeypatch, capsys
):
    real_validate = train_module._validate
    calls = []

    def validate_then_diverge(*args, **kwargs):
        calls.append(1)
        metrics = real_validate(*args, **kwargs)
        return {**metrics, "loss": math.nan} if len(calls) > 1 else metrics

    monkeypatch.setattr(train_module, "_validate", validate_then_diverge)
    run = tmp_path / "run"
    assert main(["train", str(toy[0]), "--out", str(run), *TWO_EPOCHS, "--no-progress"]) == 1
    _one_line(capsys.readouterr().err, "non-finite validation loss", "epoch 2", "learning rate")
    assert load_checkpoint(run / "last.pt")["epoch"] == 0


# --------------------------------------------------------------------------------------------
# One writer per run directory

_HOLD_LOCK = """
import sys
from audio_cnn.ownership import lock_folder

with lock_folder(sys.argv[1], what="run", hint="or write to another --out"):
    print("locked", flush=True)
    sys.stdin.read()
"""


@contextlib.contextmanager
def _lock_held_by_another_process(run: Path) -> Iterator[subprocess.Popen]:
    """A real second process holding ``run``'s lock until the block ends (or it is killed)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(run)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
        holder.stdout.close()


@pytest.mark.parametrize("resume", [False, True])
def test_a_second_writer_is_refused_at_once_naming_the_first(
    toy, run_copy, monkeypatch, capsys, resume
):
    monkeypatch.setattr(train_module, "DecodedAudioCache", _spy)  # no audio may be read
    before = {name: (run_copy / name).read_bytes() for name in ("best.pt", "last.pt")}
    command = ["train", str(toy[0]), "--out", str(run_copy), *TOY_RUN_FLAGS, "--no-progress"]
    with _lock_held_by_another_process(run_copy) as holder:
        assert main([*command, *(["--resume"] if resume else [])]) == 1
        _one_line(capsys.readouterr().err, str(run_copy), "in use", f"pid {holder.pid}")
    for name, content in before.items():
        assert (run_copy / name).read_bytes() == content, f"{name} was overwritten"


def test_a_run_killed_with_sigkill_leaves_a_lock_file_but_no_lock(toy, run_copy, capsys):
    with _lock_held_by_another_process(run_copy) as holder:
        holder.kill()  # SIGKILL: no clean-up
        holder.wait(timeout=60)
    assert (run_copy / ".lock").exists()
    command = ["train", str(toy[0]), "--out", str(run_copy), *TOY_RUN_FLAGS, "--no-progress"]
    assert main([*command, "--resume"]) == 0
    assert "trained 1 epochs" in capsys.readouterr().out
    assert not (run_copy / ".lock-owner.json").exists(), "a finished run releases its lock"


def test_silent_and_near_empty_clips_are_not_classified_with_confidence(
    toy, clip, tmp_path, capsys
):
    import numpy as np
    import soundfile as sf

    _, run = toy
    silent, tiny = tmp_path / "silent.wav", tmp_path / "one_sample.wav"
    sf.write(silent, np.zeros(16000, dtype=np.float32), 16000)
    sf.write(tiny, np.array([0.5], dtype=np.float32), 16000)
    with pytest.warns(UserWarning):
        status = main(["predict", str(run), str(clip), str(silent), str(tiny)])
    assert status == 1
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0].startswith(f"{clip}: class") and "(p = " in lines[0]
    assert lines[1].startswith(f"{silent}: not classified (") and "silent" in lines[1]
    assert lines[2].startswith(f"{tiny}: not classified (")
    _one_line(captured.err, "2 of 3 files not classified")
