"""Tests for the synthetic task with known sound objects (audio_cnn.synthetic)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from audio_cnn.frontend import LogMel
from audio_cnn.synthetic import (
    TOY_OBJECTS,
    SoundObject,
    SyntheticTask,
    clip_from_path,
    harmonic_tone,
    load_synthetic_task,
    modulated_tone,
    object_masks,
    pulsed_tone,
    sawtooth_tone,
    write_synthetic_dataset,
)

TOY = SyntheticTask.toy()


def _silence(rng: np.random.Generator, n_samples: int, sample_rate: int) -> np.ndarray:
    return np.zeros(n_samples)


@pytest.fixture(scope="module")
def logmel() -> LogMel:
    return LogMel.preset("toy")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(
        tmp_path_factory.mktemp("synthetic") / "toy", TOY, clips_per_class=10, progress=False
    )


# ----- generation ------------------------------------------------------------------------------


def test_same_seed_gives_identical_clips_and_other_seeds_differ() -> None:
    first, again = TOY.make_clip(1, 3), SyntheticTask.toy().make_clip(1, 3)
    for name in ("waveform", "sources", "background"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert first.object_names == again.object_names
    other = SyntheticTask.toy(seed=1).make_clip(1, 3)
    assert not np.allclose(first.waveform, other.waveform)
    assert not np.allclose(first.waveform, TOY.make_clip(1, 4).waveform)
    assert not np.allclose(first.waveform, TOY.make_clip(0, 3).waveform)


def test_clips_do_not_depend_on_generation_order() -> None:
    forward = [TOY.make_clip(c, i).waveform for c in (0, 1) for i in range(4)]
    backward = [TOY.make_clip(c, i).waveform for c in (1, 0) for i in reversed(range(4))]
    for a, b in zip(forward, reversed(backward), strict=True):
        np.testing.assert_array_equal(a, b)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    class_index=st.integers(0, 1),
    clip_index=st.integers(0, 10**6),
)
def test_clip_structure(seed: int, class_index: int, clip_index: int) -> None:
    task = SyntheticTask.toy(seed=seed)
    clip = task.make_clip(class_index, clip_index)
    n = len(clip.object_names)
    assert clip.label == class_index and clip.clip_index == clip_index
    assert clip.waveform.shape == clip.background.shape == (16000,)
    assert clip.sources.shape == (n, 16000)
    assert {clip.waveform.dtype, clip.sources.dtype, clip.background.dtype} == {
        np.dtype(np.float32)
    }
    assert 1 <= n <= 4 and len(set(clip.object_names)) == n
    class_names = [o.name for o in task.class_objects[class_index]]
    assert list(clip.object_names) == [name for name in class_names if name in clip.object_names]
    np.testing.assert_allclose(clip.sources.sum(0) + clip.background, clip.waveform, atol=2e-6)
    assert np.max(np.abs(clip.waveform)) == pytest.approx(1.0, abs=1e-6)
    assert task.clip_id(class_index, clip_index) == clip.clip_id
    # Which objects sound is known without synthesising the clip.
    assert task.present_objects(class_index, clip_index) == clip.object_names


def test_object_counts_follow_the_probabilities() -> None:
    n_clips = 300
    counts = np.zeros(4)
    seen = {0: set(), 1: set()}
    for i in range(n_clips):
        clip = TOY.make_clip(i % 2, i)
        counts[len(clip.object_names) - 1] += 1
        seen[i % 2].update(clip.object_names)
    expected = np.array(TOY.object_count_probs) * n_clips
    assert stats.chisquare(counts, expected).pvalue > 1e-3
    for class_index, names in seen.items():
        assert names == {o.name for o in TOY.class_objects[class_index]}


def test_each_source_peaks_in_its_band() -> None:
    for i in range(30):
        clip = TOY.make_clip(i % 2, i)
        spectra = np.abs(np.fft.rfft(clip.sources, axis=1))
        freqs = np.fft.rfftfreq(clip.waveform.size, 1 / clip.sample_rate)
        for name, spectrum in zip(clip.object_names, spectra, strict=True):
            low, high = TOY_OBJECTS[name].bands[0]
            assert low <= freqs[np.argmax(spectrum)] <= high, name


def test_distractors_stay_out_of_the_object_bands() -> None:
    task = SyntheticTask.toy(noise_level=0.0)
    bands = [b for objects in task.class_objects for o in objects for b in o.bands]
    for i in range(20):
        clip = task.make_clip(i % 2, i)
        power = np.abs(np.fft.rfft(clip.background)) ** 2
        freqs = np.fft.rfftfreq(clip.background.size, 1 / clip.sample_rate)
        in_bands = np.any([(freqs >= lo) & (freqs <= hi) for lo, hi in bands], axis=0)
        assert power[in_bands].sum() < 0.01 * power.sum()


def test_objects_stand_out_from_the_background(logmel: LogMel) -> None:
    for i in range(20):
        clip = TOY.make_clip(i % 2, i)
        signals = torch.from_numpy(np.concatenate([clip.sources, clip.background[None]]))
        mel = torch.matmul(logmel.mel_filterbank, logmel.stft(signals).abs()).numpy()
        peaks = mel.reshape(len(mel), -1).max(axis=1)
        assert np.all(peaks[:-1] > peaks[-1]), clip.clip_id


def test_silent_mix_is_not_normalised_into_nan() -> None:
    quiet = SoundObject("quiet", _silence, ((100.0, 200.0),))
    still = SoundObject("still", _silence, ((100.0, 200.0),))
    task = SyntheticTask(
        ("a", "b"),
        ((quiet,), (still,)),
        object_count_probs=(1.0,),
        distractor_count=(0, 0),
        noise_level=0.0,
    )
    clip = task.make_clip(0, 0)
    assert np.all(clip.waveform == 0) and np.all(clip.sources == 0)


def test_custom_objects_and_more_classes() -> None:
    objects = (
        (pulsed_tone("thump", (60.0, 80.0), (1.0, 2.0)), TOY_OBJECTS["harmonic_tone"]),
        (modulated_tone("whistle", (5000.0, 5600.0)), TOY_OBJECTS["harmonic_tone"]),
        (harmonic_tone("hum", (200.0, 240.0), n_harmonics=2), TOY_OBJECTS["melody"]),
    )
    task = SyntheticTask(("low", "high", "hum"), objects, object_count_probs=(0.5, 0.5), seed=3)
    clip = task.make_clip(2, 5)
    assert set(clip.object_names) <= {"hum", "melody"}
    rebuilt = SyntheticTask.from_dict(
        json.loads(json.dumps(task.to_dict())),
        objects={o.name: o for o in (objects[0][0], objects[1][0], objects[2][0])},
    )
    assert rebuilt == task
    np.testing.assert_array_equal(rebuilt.make_clip(2, 5).waveform, clip.waveform)


# ----- bad input -------------------------------------------------------------------------------


def _nan_object(rng: np.random.Generator, n_samples: int, sample_rate: int) -> np.ndarray:
    return np.full(n_samples, np.nan)


def _short_object(rng: np.random.Generator, n_samples: int, sample_rate: int) -> np.ndarray:
    return np.ones(n_samples - 1)


@pytest.mark.parametrize(
    ("synthesize", "message"), [(_nan_object, "NaN"), (_short_object, "shape \\(15999,\\)")]
)
def test_broken_sound_object_is_named(synthesize, message: str) -> None:
    broken = SoundObject("broken", synthesize, ((100.0, 200.0),))
    task = dataclasses.replace(
        TOY, class_objects=((broken,), TOY.class_objects[1]), object_count_probs=(1.0,)
    )
    with pytest.raises(ValueError, match=f"'broken'.*{message}"):
        task.make_clip(0, 0)


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"object_count_probs": (0.5, 0.4)}, "sum to 1"),
        ({"object_count_probs": (0.2,) * 5}, "at most 4"),
        ({"object_count_probs": (1.5, -0.5)}, "non-negative"),
        ({"class_names": ("a", "a")}, "distinct"),
        ({"class_names": ("a", "b/c")}, "folder"),
        ({"class_objects": (TOY.class_objects[0],)}, "1 entries for 2 classes"),
        ({"sample_rate": 8000}, "Nyquist"),
        ({"seed": -1}, "non-negative"),
        ({"duration": float("nan")}, "finite"),
        ({"peak": 1.5}, "peak"),
        ({"noise_level": float("inf")}, "noise_level"),
        ({"object_gain_db": (0.0, -6.0)}, "low <= high"),
        ({"distractor_count": (1, 2, 3)}, "pair"),
        ({"distractor_freq_hz": (520.0, 580.0)}, "no room for distractors"),
        ({"distractor_min_seconds": 2.0}, "distractor_min_seconds"),
    ],
)
def test_invalid_task_parameters(overrides: dict, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        dataclasses.replace(TOY, **overrides)


def test_invalid_types_and_duplicate_object_names() -> None:
    with pytest.raises(TypeError, match="seed"):
        SyntheticTask.toy(seed=1.5)
    with pytest.raises(TypeError, match="sequence of names"):
        dataclasses.replace(TOY, class_names="ab")
    twin = pulsed_tone("pulse_slow", (100.0, 150.0), (2.0, 3.0))
    with pytest.raises(ValueError, match="two different sound objects are named 'pulse_slow'"):
        dataclasses.replace(
            TOY, class_objects=(TOY.class_objects[0], (twin, *TOY.class_objects[1][1:]))
        )
    with pytest.raises(ValueError, match="bands"):
        SoundObject("x", _silence, ((200.0, 100.0),))
    with pytest.raises(ValueError, match="name"):
        SoundObject("bad name", _silence, ((100.0, 200.0),))


def test_invalid_object_factory_arguments() -> None:
    with pytest.raises(ValueError, match="jump_fraction"):
        sawtooth_tone("saw", (500.0, 600.0), (3.0, 5.0), rising=True, jump_fraction=1.0)
    with pytest.raises(ValueError, match="too narrow"):
        modulated_tone("wobble", (3500.0, 3600.0), vibrato_hz=100.0)
    with pytest.raises(ValueError, match="n_harmonics"):
        harmonic_tone("hum", (200.0, 240.0), n_harmonics=0)


@pytest.mark.parametrize(
    ("class_index", "clip_index", "error"),
    [(2, 0, ValueError), (-1, 0, ValueError), (0, -1, ValueError), (True, 0, TypeError)],
)
def test_invalid_clip_indices(class_index, clip_index, error) -> None:
    with pytest.raises(error):
        TOY.make_clip(class_index, clip_index)


# ----- paths and serialisation -----------------------------------------------------------------


def test_clip_paths_round_trip_and_bad_paths_are_rejected() -> None:
    assert TOY.clip_path(1, 42) == "class1/class1_00042.wav"
    assert TOY.parse_clip_path("class1/class1_00042.wav") == (1, 42)
    assert TOY.parse_clip_path(Path("class0") / "class0_123456.wav") == (0, 123456)
    for bad in (
        "class1/class0_00042.wav",
        "class1/class1_42.wav",
        "class1/class1_00042.flac",
        "other/other_00001.wav",
        "class1_00042.wav",
    ):
        with pytest.raises(ValueError, match="not a synthetic clip path"):
            TOY.parse_clip_path(bad)


def test_task_dict_round_trip_and_errors() -> None:
    data = json.loads(json.dumps(TOY.to_dict()))
    assert SyntheticTask.from_dict(data) == TOY
    with pytest.raises(ValueError, match="unknown synthetic task keys"):
        SyntheticTask.from_dict({**data, "colour": "blue"})
    data["class_objects"][0][0] = "kazoo"
    with pytest.raises(ValueError, match=r"\['kazoo'\].*objects="):
        SyntheticTask.from_dict(data)


# ----- masks -----------------------------------------------------------------------------------


def _expected_mel_bands(obj: SoundObject, logmel: LogMel, leak_bins: int = 2) -> np.ndarray:
    """Mel bands whose filters touch an STFT bin within ``leak_bins`` of the object's bands."""
    config = logmel.config
    bin_freqs = np.fft.rfftfreq(config.n_fft, 1 / config.sample_rate)
    spacing = bin_freqs[1]
    near = np.any(
        [
            (bin_freqs >= lo - leak_bins * spacing) & (bin_freqs <= hi + leak_bins * spacing)
            for lo, hi in obj.bands
        ],
        axis=0,
    )
    return (logmel.mel_filterbank.numpy()[:, near] > 0).any(axis=1)


def test_masks_are_disjoint_nonempty_and_in_the_object_bands(logmel: LogMel) -> None:
    inside, total = 0, 0
    for i in range(16):
        clip = TOY.make_clip(i % 2, i)
        masks = object_masks(clip, logmel)
        assert masks.dtype == bool
        assert masks.shape == (len(clip.object_names), 64, 64)
        assert masks.sum(axis=0).max() <= 1
        for name, mask in zip(clip.object_names, masks, strict=True):
            assert mask.any(), f"{clip.clip_id}: empty mask for {name}"
            # Only the sawtooth's quick jumps splatter a little beyond the band.
            in_band = mask[_expected_mel_bands(TOY_OBJECTS[name], logmel)].sum()
            assert in_band >= 0.9 * mask.sum(), f"{clip.clip_id}: {name} mask outside its bands"
            inside, total = inside + in_band, total + mask.sum()
    assert inside >= 0.98 * total


def test_mask_thresholds(logmel: LogMel) -> None:
    clip = TOY.make_clip(1, 8)
    default = object_masks(clip, logmel)
    strict = object_masks(clip, logmel, dynamic_range_db=10.0)
    assert np.all(default | ~strict) and strict.sum() < default.sum()
    assert not object_masks(clip, logmel, floor=1e6).any()
    with pytest.raises(ValueError, match="positive"):
        object_masks(clip, logmel, dynamic_range_db=0.0)
    with pytest.raises(ValueError, match="22050 Hz"):
        object_masks(clip, LogMel.preset("toy", sample_rate=22050))


def test_mask_floor_defaults_to_the_front_ends_own_floor(logmel: LogMel) -> None:
    clip = TOY.make_clip(1, 8)
    assert logmel.floor == -4.0
    np.testing.assert_array_equal(
        object_masks(clip, logmel), object_masks(clip, logmel, floor=1e-4)
    )
    # A front-end that clamps at log10 = 0 treats every mel value below 1 as silence.
    loud_floor = LogMel.preset("toy", clamp_min=0.0)
    raised = object_masks(clip, loud_floor)
    np.testing.assert_array_equal(raised, object_masks(clip, logmel, floor=1.0))
    assert raised.sum() < object_masks(clip, logmel).sum()


class _FlatFrontEnd:
    """Only what object_masks documents it reads from a front-end."""

    def __init__(self, logmel: LogMel, floor: float | None) -> None:
        self.sample_rate = logmel.sample_rate
        self.power = logmel.power
        self.floor = floor
        self.mel_filterbank = logmel.mel_filterbank
        self.stft = logmel.stft


def test_masks_need_only_the_flat_front_end_attributes_and_an_unclamped_one_keeps_silence_out(
    logmel: LogMel,
) -> None:
    clip = TOY.make_clip(0, 3)
    clamped = object_masks(clip, _FlatFrontEnd(logmel, logmel.floor))
    np.testing.assert_array_equal(clamped, object_masks(clip, logmel))
    unclamped = object_masks(clip, _FlatFrontEnd(logmel, None))
    assert np.all(unclamped | ~clamped)  # no floor: only the dynamic range limits the masks
    silent = dataclasses.replace(
        clip,
        waveform=np.zeros_like(clip.waveform),
        sources=np.zeros_like(clip.sources),
        background=np.zeros_like(clip.background),
    )
    assert not object_masks(silent, _FlatFrontEnd(logmel, None)).any()


def test_masks_scale_the_dynamic_range_by_the_front_ends_power() -> None:
    clip = TOY.make_clip(1, 8)
    magnitude, power = LogMel.preset("toy"), LogMel.preset("toy", power=2.0)
    for front_end in (magnitude, power):
        masks = object_masks(clip, front_end, floor=1e-30)
        assert masks.any() and masks.sum(axis=0).max() <= 1
    # 40 dB of amplitude is 10**-2 in magnitude and 10**-4 in power: about the same bins.
    counts = [object_masks(clip, f, floor=1e-30).sum() for f in (magnitude, power)]
    assert abs(counts[0] - counts[1]) <= 0.1 * counts[0]


# ----- datasets on disk ------------------------------------------------------------------------


def test_written_clips_regenerate_from_their_file_names(dataset: Path) -> None:
    task = load_synthetic_task(dataset)
    assert task == TOY
    for line in (dataset / "splits" / "test.txt").read_text().splitlines():
        stored, sample_rate = sf.read(dataset / line, dtype="float32")
        assert sample_rate == 16000
        clip = clip_from_path(dataset, line)
        np.testing.assert_allclose(stored, clip.waveform, atol=1.5 / 32768)
        same = clip_from_path(dataset, dataset / line, task=task)
        np.testing.assert_array_equal(same.sources, clip.sources)


def test_split_lists_are_disjoint_complete_and_stratified(dataset: Path) -> None:
    splits = {
        name: (dataset / "splits" / f"{name}.txt").read_text().splitlines()
        for name in ("train", "val", "test")
    }
    listed = [line for lines in splits.values() for line in lines]
    on_disk = sorted(p.relative_to(dataset).as_posix() for p in dataset.glob("*/*.wav"))
    assert len(listed) == len(set(listed)) == 20
    assert sorted(listed) == on_disk
    for name, expected in (("train", 7), ("val", 1), ("test", 2)):
        per_class = [
            sum(line.startswith(f"{c}/") for line in splits[name]) for c in TOY.class_names
        ]
        assert per_class == [expected, expected], name


def test_metadata_records_the_parameters(dataset: Path) -> None:
    meta = json.loads((dataset / "synthetic.json").read_text())
    assert meta["clips_per_class"] == 10
    assert meta["task"]["seed"] == 0
    assert meta["splits"] == {"train": 0.7, "val": 0.15, "test": 0.15}
    assert "library_version" in meta and meta["format_version"] == 1


def test_rewriting_is_idempotent_and_repairs_damage(tmp_path: Path) -> None:
    root = write_synthetic_dataset(tmp_path / "d", TOY, clips_per_class=3, progress=False)
    kept, damaged, lost = (root / TOY.clip_path(0, i) for i in range(3))
    before = kept.stat().st_mtime_ns
    damaged.write_bytes(damaged.read_bytes()[:1000])
    lost.unlink()
    write_synthetic_dataset(root, TOY, clips_per_class=3, progress=False)
    assert kept.stat().st_mtime_ns == before
    for path in (damaged, lost):
        np.testing.assert_allclose(
            sf.read(path, dtype="float32")[0], clip_from_path(root, path).waveform, atol=1.5 / 32768
        )
    assert not list(root.rglob("*.tmp"))


def test_refuses_foreign_or_different_folders(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"no synthetic\.json"):
        write_synthetic_dataset(foreign, TOY, clips_per_class=2, progress=False)
    assert sorted(os.listdir(foreign)) == ["notes.txt"]

    root = write_synthetic_dataset(tmp_path / "d", TOY, clips_per_class=2, progress=False)
    with pytest.raises(FileExistsError, match="different task, fingerprint"):
        write_synthetic_dataset(root, SyntheticTask.toy(seed=5), clips_per_class=2, progress=False)
    with pytest.raises(FileExistsError, match="different clips_per_class"):
        write_synthetic_dataset(root, TOY, clips_per_class=3, progress=False)
    with pytest.raises(FileExistsError, match="not a folder"):
        write_synthetic_dataset(root / "synthetic.json", TOY, clips_per_class=2, progress=False)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"clips_per_class": 0}, ValueError),
        ({"clips_per_class": 2.5}, TypeError),
        ({"splits": (0.5, 0.5)}, ValueError),
        ({"splits": (0.8, 0.3, -0.1)}, ValueError),
        ({"subtype": "MP3"}, ValueError),
    ],
)
def test_invalid_write_arguments(tmp_path: Path, kwargs: dict, error: type) -> None:
    with pytest.raises(error):
        write_synthetic_dataset(tmp_path / "d", TOY, **{"progress": False, **kwargs})
    assert not (tmp_path / "d").exists()


def test_loading_detects_a_changed_generator_and_bad_metadata(tmp_path: Path) -> None:
    root = write_synthetic_dataset(tmp_path / "d", TOY, clips_per_class=1, progress=False)
    meta_path = root / "synthetic.json"
    meta = json.loads(meta_path.read_text())
    meta["fingerprint"][0][0] *= 1.01
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not reproduce the stored clips"):
        load_synthetic_task(root)
    meta["format_version"] = 99
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format version 99"):
        load_synthetic_task(root)
    meta_path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_synthetic_task(root)
    with pytest.raises(FileNotFoundError, match="not a synthetic dataset"):
        load_synthetic_task(tmp_path)


def test_clip_from_path_rejects_paths_outside_the_dataset(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not inside the dataset folder"):
        clip_from_path(dataset, tmp_path / "class0" / "class0_00000.wav", task=TOY)
