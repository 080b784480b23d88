"""Tests for the 3 s scenes task (SyntheticTask.scenes) and its `audio-cnn synth --task`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audio_cnn.cli import main
from audio_cnn.frontend import LogMel, LogMelConfig
from audio_cnn.synthetic import (
    SCENE_OBJECTS,
    TOY_OBJECTS,
    SyntheticTask,
    clip_from_path,
    load_synthetic_task,
    object_masks,
    pulsed_tone,
    sound_event,
    write_synthetic_dataset,
)

SCENES = SyntheticTask.scenes()


def _overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_the_task_is_four_classes_of_three_objects_in_one_gtzan_chunk() -> None:
    assert SCENES.class_names == ("scene0", "scene1", "scene2", "scene3")
    assert [len(objects) for objects in SCENES.class_objects] == [3, 3, 3, 3]
    clip_length_s = SCENES.duration  # seconds of audio in a clip, not a timing
    assert clip_length_s == 3.0 and SCENES.sample_rate == 16000
    # One clip is exactly one chunk of the reference front-end.
    assert SCENES.n_samples == LogMelConfig.preset("gtzan").chunk_samples == 48000
    assert SyntheticTask.scenes(seed=3, noise_level=0.0).seed == 3
    assert SyntheticTask.scenes(noise_level=0.0).noise_level == 0.0


def test_each_class_owns_its_objects_and_their_bands() -> None:
    names = [{obj.name for obj in objects} for objects in SCENES.class_objects]
    assert sum(map(len, names)) == len(set().union(*names)) == len(SCENE_OBJECTS) == 12
    assert not set(SCENE_OBJECTS) & set(TOY_OBJECTS)
    for i, objects in enumerate(SCENES.class_objects):
        assert all(obj.name.startswith(f"scene{i}_") for obj in objects)
        for j, others in enumerate(SCENES.class_objects):
            if i == j:
                continue
            for obj in objects:
                for other in others:
                    assert not any(_overlaps(a, b) for a in obj.bands for b in other.bands), (
                        f"{obj.name} and {other.name} share a band"
                    )
    # Room is left for the shared distractors between all the object bands.
    free = SCENES._distractor_intervals()
    assert len(free) >= 8
    assert sum(np.log(high / low) for low, high in free) > 0.3 * np.log(7000 / 60)


def test_clips_hold_their_class_objects_and_sum_to_the_mix() -> None:
    counts = []
    for index in range(24):
        label = index % 4
        clip = SCENES.make_clip(label, index)
        assert clip.label == label and clip.waveform.shape == (48000,)
        own = {obj.name for obj in SCENES.class_objects[label]}
        assert set(clip.object_names) <= own
        assert clip.sources.shape == (len(clip.object_names), 48000)
        np.testing.assert_allclose(
            clip.sources.sum(axis=0) + clip.background, clip.waveform, atol=1e-5
        )
        assert np.abs(clip.waveform).max() == pytest.approx(1.0, abs=1e-6)
        counts.append(len(clip.object_names))
    assert set(counts) <= {1, 2, 3}
    assert np.mean(np.array(counts) >= 2) >= 0.6  # 80 % expected


def test_objects_sound_in_one_window_of_the_clip() -> None:
    rate = SCENES.sample_rate
    spans = []
    for index in range(8):
        clip = SCENES.make_clip(index % 4, index)
        for source in clip.sources:
            active = np.flatnonzero(np.abs(source) > 1e-6)
            spans.append((active[-1] - active[0] + 1) / rate)
    assert min(spans) >= 0.55 and max(spans) <= 3.0
    assert min(spans) < 2.5  # some objects leave part of the clip silent


def test_sound_event_is_deterministic_and_checked() -> None:
    event = sound_event(pulsed_tone("blip", (500.0, 600.0), (2.0, 3.0)), (0.5, 1.0))
    assert event.name == "blip" and event.bands == ((500.0, 600.0),)
    first = event.synthesize(np.random.default_rng(1), 16000, 16000)
    again = event.synthesize(np.random.default_rng(1), 16000, 16000)
    np.testing.assert_array_equal(first, again)
    active = np.flatnonzero(first)
    assert 0.45 * 16000 <= active[-1] - active[0] + 1 <= 16000
    with pytest.raises(ValueError, match="seconds"):
        sound_event(event, (0.0, 1.0))
    with pytest.raises(ValueError, match="seconds"):
        sound_event(event, (2.0, 1.0))


def test_a_saved_dataset_reloads_by_name(tmp_path: Path) -> None:
    root = write_synthetic_dataset(tmp_path / "scenes", SCENES, clips_per_class=2, progress=False)
    task = load_synthetic_task(root)  # no objects passed: the scene objects are built in
    assert task.to_dict() == SCENES.to_dict()
    meta = json.loads((root / "synthetic.json").read_text())
    assert meta["task"]["class_objects"][2] == [o.name for o in SCENES.class_objects[2]]
    path = root / "scene2" / "scene2_00001.wav"
    clip = clip_from_path(root, "scene2/scene2_00001.wav", task=task)
    np.testing.assert_allclose(sf.read(path, dtype="float32")[0], clip.waveform, atol=1.5 / 32768)


def test_object_masks_on_the_gtzan_front_end() -> None:
    logmel = LogMel.preset("gtzan")
    clip = SCENES.make_clip(1, 1)
    masks = object_masks(clip, logmel)
    assert masks.shape == (len(clip.object_names), 128, 128)
    assert masks.sum(axis=0).max() <= 1
    assert all(mask.any() for mask in masks)
    assert logmel(torch.from_numpy(clip.waveform[None])).shape[-2:] == (128, 128)


def test_synth_command_writes_the_chosen_task(tmp_path: Path, capsys) -> None:
    assert main(["synth", str(tmp_path / "s"), "--task", "scenes", "--clips-per-class", "1",
                 "--no-progress"]) == 0  # fmt: skip
    output = capsys.readouterr().out
    assert "scenes task" in output and "--preset gtzan" in output
    assert load_synthetic_task(tmp_path / "s").class_names == SCENES.class_names
    wav = sf.info(str(tmp_path / "s" / "scene0" / "scene0_00000.wav"))
    assert wav.frames == 3 * wav.samplerate  # 3 s of audio at the file's rate
    # The toy task stays the default.
    assert main(["synth", str(tmp_path / "t"), "--clips-per-class", "1", "--no-progress"]) == 0
    assert load_synthetic_task(tmp_path / "t").class_names == ("class0", "class1")
    assert "--preset" not in capsys.readouterr().out
