"""Fault cases of the audio data side: every one ends in a clear warning or error, never in a
silently wrong dataset (wrong preset, padded clips, damaged or degenerate audio, links that
relabel or repeat files, unreadable folders, stale or half-written cache entries)."""

from __future__ import annotations

import errno
import hashlib
import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audio_cnn.audio_io import DecodedAudioCache, load_audio, wav_truncation
from audio_cnn.chunks import EvenChunkDataset, RandomChunkDataset, fitting_preset
from audio_cnn.dataset_dirs import clip_durations, duration_report, open_dataset_dir
from audio_cnn.datasets import GTZAN, AudioFolder, ClipRecord

pytestmark = pytest.mark.fault

SR = 16_000


def _noise(seconds: float, seed: int = 0, peak: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-peak, peak, round(seconds * SR)).astype(np.float32)


def _write(path: Path, samples: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, SR, **kwargs)
    return path


def _folder(root: Path, seconds: float, classes=("cat", "dog"), per_class: int = 3) -> Path:
    for label in classes:
        for i in range(per_class):
            _write(root / label / f"{i}.wav", _noise(seconds, seed=i))
    return root


def _messages(caught) -> list[str]:
    return [str(warning.message) for warning in caught]


# --------------------------------------------------------------------------- preset from data


def test_a_folder_of_one_second_clips_gets_the_toy_preset_and_says_why(tmp_path):
    dataset = open_dataset_dir(_folder(tmp_path / "digits", 1.0))
    assert (dataset.kind, dataset.preset) == ("folder", "toy")
    assert dataset.preset_reason == (
        "preset 'toy' (1 s chunks): median clip 1.00 s (shortest 1.00 s, longest 1.00 s) "
        "over 6 clips"
    )
    clip_lengths = dataset.durations  # audio seconds of the clips, not a timing
    assert clip_lengths.seconds == (1.0,) * 6 and clip_lengths.n_clips == 6
    fit = duration_report(dataset, 1.0)
    assert (fit.padded, fit.warning) == (0, None)


def test_a_folder_of_five_second_clips_gets_the_gtzan_preset_and_says_why(tmp_path):
    dataset = open_dataset_dir(_folder(tmp_path / "scenes", 5.0))
    assert dataset.preset == "gtzan"
    assert dataset.preset_reason == (
        "preset 'gtzan' (3 s chunks): median clip 5.00 s (shortest 5.00 s, longest 5.00 s) "
        "over 6 clips"
    )
    report = duration_report(dataset, 3.0)
    assert report.warning is None


def test_duration_report_warns_when_most_clips_would_be_padded(tmp_path):
    dataset = open_dataset_dir(_folder(tmp_path / "digits", 1.0))
    fit = duration_report(dataset, 3.0)  # as with --preset gtzan
    assert fit.padded == 6
    assert fit.warning == (
        "6 of 6 clips (100%) are shorter than the chunks of 3.00 s and are zero-padded by a "
        "median 2.00 s (67% of each chunk is silence the model learns from); choose the "
        "preset whose chunks fit these clips: --preset toy (1.00 s chunks)"
    )
    assert str(fit).endswith("6 of 6 shorter than the 3 s chunks")


def test_duration_report_warns_when_most_clips_would_be_cropped_to_short_chunks(tmp_path):
    dataset = open_dataset_dir(_folder(tmp_path / "scenes", 5.0))
    fit = duration_report(dataset, 1.0)  # as with --preset toy
    assert fit.padded == 0
    assert fit.warning == (
        "6 of 6 clips (100%) are at least 3.00 s long (median 5.00 s) but are cut into chunks "
        "of 1.00 s: the model hears 20% of a typical clip at a time; choose the preset whose "
        "chunks fit these clips: --preset gtzan (3.00 s chunks)"
    )


@pytest.mark.parametrize(("median", "preset"), [(0.4, "toy"), (2.99, "toy"), (3.0, "gtzan")])
def test_the_fitting_preset_never_pads_the_median_clip_when_a_preset_allows(median, preset):
    assert fitting_preset(median) == preset


def test_known_layouts_keep_their_preset_with_a_reason(tmp_path):
    for genre in ("blues", "jazz"):
        for i in range(3):
            _write(tmp_path / "genres_original" / genre / f"{genre}.{i:05d}.wav", _noise(1.0))
    with pytest.warns(UserWarning, match="sorted order"):
        dataset = open_dataset_dir(tmp_path)
    assert dataset.preset == "gtzan"
    assert dataset.preset_reason.startswith("preset 'gtzan' (3 s chunks): a GTZAN layout; ")


def test_durations_of_a_large_dataset_come_from_a_seeded_sample(tmp_path):
    paths = [_write(tmp_path / f"{i}.wav", _noise(0.1 * (i + 1))) for i in range(10)]
    first = clip_durations(paths, max_clips=4)
    assert len(first.seconds) == 4 and first.n_clips == 10
    again = clip_durations(paths, max_clips=4)
    assert again == first
    assert "over a sample of 4 of 10 clips" in str(first)


def test_unreadable_headers_give_the_default_preset_and_say_so(tmp_path):
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        (tmp_path / label / "x.wav").write_bytes(b"not audio" * 10)
    dataset = open_dataset_dir(tmp_path)
    assert dataset.preset == "gtzan"
    assert dataset.preset_reason == (
        "preset 'gtzan' (3 s chunks): the default, since no clip duration readable "
        "(2 headers unreadable)"
    )


# --------------------------------------------------------------------------- padding warning


def test_chunking_one_second_clips_into_three_second_chunks_warns_loudly(tmp_path):
    root = _folder(tmp_path / "digits", 1.0)
    clips = [ClipRecord(path, 0, path.stem) for path in sorted(root.rglob("*.wav"))]
    cache = DecodedAudioCache(tmp_path / "cache", SR)
    expected = (
        "6 of 6 clips (100%) are shorter than the chunks of 3.00 s and are zero-padded by a "
        "median 2.00 s (67% of each chunk is silence the model learns from); choose the "
        "preset whose chunks fit these clips: --preset toy (1.00 s chunks)"
    )
    with pytest.warns(UserWarning) as caught:
        train = RandomChunkDataset(clips, cache, 3 * SR)
    assert _messages(caught) == [expected]
    assert train.summary.padded == 6
    with pytest.warns(UserWarning) as caught:
        EvenChunkDataset(clips, cache, 3 * SR, sample_rate=SR)
    assert _messages(caught) == [expected]


def test_clips_shorter_than_the_shortest_preset_chunk_warn_with_what_to_do(tmp_path):
    clips = [
        ClipRecord(_write(tmp_path / f"{i}.wav", _noise(0.5, seed=i)), 0, str(i)) for i in range(3)
    ]
    with pytest.warns(UserWarning) as caught:
        RandomChunkDataset(clips, DecodedAudioCache(None, SR), SR)
    assert _messages(caught) == [
        "3 of 3 clips (100%) are shorter than the chunks of 1.00 s and are zero-padded by a "
        "median 0.50 s (50% of each chunk is silence the model learns from); no preset has "
        "shorter chunks; set short_clips to 'skip' to leave the short clips out, or use "
        "longer recordings"
    ]


def test_skipping_most_clips_as_too_short_is_told_too(tmp_path):
    lengths = [0.5, 0.5, 0.5, 2.0]
    clips = [
        ClipRecord(_write(tmp_path / f"{i}.wav", _noise(s, seed=i)), 0, str(i))
        for i, s in enumerate(lengths)
    ]
    with pytest.warns(UserWarning, match=r"^3 of 4 clips \(75%\) .* are left out \(short clips"):
        dataset = RandomChunkDataset(clips, DecodedAudioCache(None, SR), SR, short="skip")
    assert len(dataset) == 1 and dataset.summary.skipped == 3


# --------------------------------------------------------------------------- truncated WAV


@pytest.fixture
def truncated(tmp_path) -> Path:
    """A 1 s PCM-16 WAV whose last 0.5 s (16000 bytes) were lost, header untouched."""
    path = _write(tmp_path / "cut.wav", _noise(1.0), subtype="PCM_16")
    path.write_bytes(path.read_bytes()[:-16_000])
    return path


def test_a_truncated_wav_is_detected_from_its_header(truncated, tmp_path):
    assert wav_truncation(truncated) == (
        "truncated: the header declares 16000 frames (1.00 s) but the file holds 8000 (0.50 s)"
    )
    assert load_audio(truncated, SR).shape == (8000,)  # what libsndfile silently returns
    assert wav_truncation(_write(tmp_path / "whole.wav", _noise(1.0))) is None
    assert wav_truncation(_write(tmp_path / "whole.flac", _noise(1.0))) is None


def test_a_wav_streamed_with_an_unknown_data_size_is_not_called_truncated(tmp_path):
    path = _write(tmp_path / "piped.wav", _noise(0.5), subtype="PCM_16")
    data = bytearray(path.read_bytes())
    offset = data.index(b"data") + 4
    data[offset : offset + 4] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(data))
    assert wav_truncation(path) is None


def test_prepare_warns_counts_and_keeps_a_truncated_wav(truncated, tmp_path):
    whole = _write(tmp_path / "whole.wav", _noise(1.0))
    with pytest.warns(UserWarning) as caught:
        report = DecodedAudioCache(tmp_path / "cache", SR).prepare([whole, truncated], False)
    assert report.ok == [whole, truncated]
    assert report.lengths[truncated] == 8000
    assert list(report.truncated) == [truncated] and not report.failed
    assert _messages(caught) == [
        "1 of 2 audio files are truncated WAV files (the header declares more frames than "
        "the file holds); the frames present are kept: "
        f"{truncated}: truncated: the header declares 16000 frames (1.00 s) but the file "
        "holds 8000 (0.50 s); re-download or re-export them"
    ]
    assert str(report).startswith(
        "kept 2 of 2 audio files; left out 0: 0 undecodable, 0 too short, 0 silent; "
        "1 truncated (kept)"
    )
    # A later run reads the cache entry instead of decoding, and still reports it.
    later = DecodedAudioCache(tmp_path / "cache", SR)
    with pytest.warns(UserWarning, match="truncated"):
        again = later.prepare([whole, truncated], False)
    assert list(again.truncated) == [truncated] and later.stats.decoded == 0


# --------------------------------------------------------------------------- degenerate clips


def test_too_short_and_silent_clips_are_warned_counted_and_left_out(tmp_path):
    good = _write(tmp_path / "good.wav", _noise(1.0))
    one_sample = _write(tmp_path / "one_sample.wav", _noise(1 / SR), subtype="FLOAT")
    zeros = _write(tmp_path / "zeros.wav", np.zeros(SR, np.float32))
    whisper = _write(tmp_path / "whisper.wav", _noise(1.0, peak=5e-5), subtype="FLOAT")
    silent_and_short = _write(tmp_path / "blip.wav", np.zeros(10, np.float32))
    paths = [good, one_sample, zeros, whisper, silent_and_short]
    with pytest.warns(UserWarning) as caught:
        report = DecodedAudioCache(tmp_path / "cache", SR).prepare(paths, progress=False)
    assert report.ok == [good]
    assert list(report.too_short) == [one_sample, silent_and_short]
    assert list(report.silent) == [zeros, whisper]
    # Each file is left out once, under its first reason; all of them decoded.
    assert list(report.failed) == [one_sample, zeros, whisper, silent_and_short]
    assert not report.undecodable and len(report.lengths) == 5
    assert report.failed[one_sample] == "too short: 0.000 s (1 samples), under 0.1 s"
    assert report.failed[zeros] == "silent: peak 0 (at most 0.0001)"
    short_warning, silent_warning = _messages(caught)
    assert short_warning.startswith(
        f"2 of 5 audio files are shorter than 0.1 s and are left out: {one_sample}: too short"
    )
    assert short_warning.endswith("; remove them, or pass a lower min_seconds to keep them")
    assert silent_warning.startswith(
        f"2 of 5 audio files are silent (peak at most 0.0001) and are left out: {zeros}: "
        "silent: peak 0 (at most 0.0001); "
    )
    assert silent_warning.endswith(
        "; check the recordings (a muted input, a wrong channel) or remove them"
    )


def test_degenerate_clip_limits_can_be_lowered(tmp_path):
    quiet = _write(tmp_path / "quiet.wav", _noise(0.05, peak=5e-5), subtype="FLOAT")
    report = DecodedAudioCache(None, SR).prepare(
        [quiet], progress=False, min_seconds=0.0, silence_peak=0.0
    )
    assert report.ok == [quiet] and not report.failed


# --------------------------------------------------------------------------- links


def _layout(root: Path, kind: str) -> tuple[Path, type]:
    """Class folders of the layout ``kind`` below ``root``, and the dataset class to open."""
    if kind == "folder":
        return root, AudioFolder
    return root / "genres_original", GTZAN


@pytest.mark.parametrize("kind", ["folder", "gtzan"])
def test_a_link_to_a_parent_folder_is_not_followed(tmp_path, kind):
    classes, dataset_type = _layout(tmp_path / "data", kind)
    for genre in ("blues", "jazz"):
        for i in range(6):
            _write(classes / genre / f"{genre}.{i:05d}.wav", _noise(0.2, seed=i))
    os.symlink("..", classes / "blues" / "everything")
    os.symlink(classes, classes / "jazz" / "again")
    with pytest.warns(UserWarning) as caught:
        data = dataset_type(classes.parent if kind == "gtzan" else classes)
    assert len(data.clips) == 12
    assert sorted(data.skipped) == [classes / "blues" / "everything", classes / "jazz" / "again"]
    links = [message for message in _messages(caught) if "linked" in message]
    assert links == [
        f"left out 2 linked or duplicate entries under {classes}: blues/everything: a link to "
        f"the folder {classes}; linked folders are not followed; jazz/again: a link to the "
        f"folder {classes}; linked folders are not followed; links are followed only to files "
        "inside the same class folder and every file counts once; copy the files into their "
        "class folder (or link a whole class folder) to include them"
    ]


def test_no_clip_is_counted_twice_or_relabelled_by_links(tmp_path):
    root = _folder(tmp_path / "data", 0.2, per_class=4)
    cat, dog = root / "cat", root / "dog"
    os.symlink(dog, cat / "dogs")  # a sibling class folder: would relabel dogs as cats
    os.symlink("../dog/0.wav", cat / "fake.wav")  # a sibling class's file
    os.symlink("0.wav", cat / "alias.wav")  # the same file twice
    os.symlink("missing.wav", cat / "broken.wav")
    (cat / ".stash").mkdir()
    _write(cat / ".stash" / "kept.wav", _noise(0.2, seed=9))
    os.symlink(".stash/kept.wav", cat / "kept.wav")  # inside its own class folder: followed
    with pytest.warns(UserWarning) as caught:
        data = AudioFolder(root)
    assert [clip.path.name for clip in data.clips if clip.label == 0] == [
        "0.wav",
        "1.wav",
        "2.wav",
        "3.wav",
        "kept.wav",
    ]
    assert sum(clip.label == 1 for clip in data.clips) == 4
    assert data.skipped == {
        cat / "alias.wav": f"the same file as {cat / '0.wav'}, counted once",
        cat / "broken.wav": f"a broken link (to {cat / 'missing.wav'})",
        cat / "dogs": f"a link to the folder {dog}; linked folders are not followed",
        cat / "fake.wav": f"a link to {dog / '0.wav'}, outside its class folder",
    }
    (message,) = _messages(caught)
    assert message.startswith(f"left out 4 linked or duplicate entries under {root}: cat/alias")
    resolved = [clip.path.resolve() for clip in data.clips]
    assert len(resolved) == len(set(resolved))
    splits = data.splits(seed=0)
    in_splits = [clip.path for clips in splits.values() for clip in clips]
    assert sorted(in_splits) == sorted(clip.path for clip in data.clips)


def test_a_class_folder_linked_to_another_class_is_an_error(tmp_path):
    root = _folder(tmp_path / "data", 0.2)
    os.symlink(root / "cat", root / "kitty")
    with pytest.raises(ValueError, match=r"class folders .*cat and .*kitty overlap"):
        AudioFolder(root)


def test_a_class_folder_linked_from_elsewhere_is_followed(tmp_path):
    store = _folder(tmp_path / "store", 0.2, classes=("bird",))
    root = _folder(tmp_path / "data", 0.2)
    os.symlink(store / "bird", root / "bird")
    data = AudioFolder(root)
    assert data.classes == ["bird", "cat", "dog"]
    assert [clip.track_id for clip in data.clips[:3]] == ["bird/0", "bird/1", "bird/2"]


def test_a_class_of_links_to_elsewhere_says_why_it_is_empty(tmp_path):
    store = _folder(tmp_path / "store", 0.2, classes=("bird",))
    root = _folder(tmp_path / "data", 0.2)
    (root / "bird").mkdir()
    os.symlink(store / "bird" / "0.wav", root / "bird" / "0.wav")
    with pytest.raises(FileNotFoundError, match=r"bird contains no audio files .*\(left out: "):
        AudioFolder(root)


# --------------------------------------------------------------------------- unreadable folders


@pytest.fixture
def unreadable(monkeypatch):
    """Make ``os.scandir`` refuse the folders put in the returned set, as chmod 000 would for
    a user other than root (CI runs as root, where chmod does not stop reads)."""
    refused: set[Path] = set()
    scandir = os.scandir

    def guarded(path):
        if Path(path) in refused:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", guarded)
    return refused


def test_an_unreadable_subfolder_is_named_in_a_warning(tmp_path, unreadable):
    root = _folder(tmp_path / "data", 0.2)
    _write(root / "cat" / "private" / "secret.wav", _noise(0.2))
    unreadable.add(root / "cat" / "private")
    with pytest.warns(UserWarning) as caught:
        data = AudioFolder(root)
    assert len(data.clips) == 6
    assert data.unreadable_folders == {root / "cat" / "private": "Permission denied"}
    assert _messages(caught) == [
        f"1 folder under {root} cannot be read, so the audio files in them are left out: "
        "cat/private: Permission denied; fix the permissions (e.g. chmod -R u+rX) or move the "
        "files"
    ]


def test_an_unreadable_class_folder_is_an_error_naming_it(tmp_path, unreadable):
    root = _folder(tmp_path / "data", 0.2)
    unreadable.add(root / "dog")
    with pytest.raises(PermissionError) as info:
        AudioFolder(root)
    assert str(info.value) == (
        f"[Errno 13] class folder {root / 'dog'} cannot be read (Permission denied); fix its "
        f"permissions (e.g. chmod -R u+rX '{root / 'dog'}') or remove the folder"
    )


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="root reads folders whatever their mode; the scandir fixture covers this case",
)
def test_a_subfolder_without_read_permission_is_named_in_a_warning(tmp_path):
    root = _folder(tmp_path / "data", 0.2)
    private = root / "cat" / "private"
    _write(private / "secret.wav", _noise(0.2))
    private.chmod(0)
    try:
        with pytest.warns(UserWarning, match=r"1 folder under .* cannot be read.*cat/private"):
            data = AudioFolder(root)
    finally:
        private.chmod(0o755)
    assert len(data.clips) == 6


# --------------------------------------------------------------------------- decoded-audio cache


def test_the_cache_decodes_again_after_an_edit_that_keeps_size_and_mtime(tmp_path):
    clip = _write(tmp_path / "clip.wav", _noise(0.3, seed=1), subtype="FLOAT")
    cache = DecodedAudioCache(tmp_path / "cache", SR)
    cache.get(clip)
    status = clip.stat()
    _write(clip, _noise(0.3, seed=2), subtype="FLOAT")  # same size, other content
    os.utime(clip, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert (clip.stat().st_size, clip.stat().st_mtime_ns) == (status.st_size, status.st_mtime_ns)
    np.testing.assert_array_equal(cache.get(clip), load_audio(clip, SR))
    assert cache.stats.decoded == 2
    np.testing.assert_array_equal(
        DecodedAudioCache(tmp_path / "cache", SR).get(clip), _noise(0.3, seed=2)
    )


def test_entries_of_the_old_size_and_mtime_keyed_cache_are_never_read(tmp_path):
    clip = _write(tmp_path / "clip.wav", _noise(0.3), subtype="FLOAT")
    status = clip.stat()
    # The key of cache format 1, exactly as it was computed, holding a wrong waveform.
    identity = (str(clip.absolute()), status.st_size, status.st_mtime_ns, SR, "soxr_hq", 1)
    old_key = hashlib.sha256(repr(identity).encode()).hexdigest()[:32]
    (tmp_path / "cache").mkdir()
    np.save(tmp_path / "cache" / f"clip-{old_key}.npy", np.zeros(10, np.float32))
    cache = DecodedAudioCache(tmp_path / "cache", SR)
    np.testing.assert_array_equal(cache.get(clip), _noise(0.3))
    assert (cache.stats.decoded, cache.stats.disk_hits) == (1, 0)


@pytest.fixture
def full_disk(monkeypatch):
    """``numpy.save`` writes part of the entry, then the disk is full."""

    def save(file, array, allow_pickle=True):
        file.write(b"\x93NUMPY partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", save)


def test_a_full_disk_while_caching_is_one_line_naming_the_cache_folder(tmp_path, full_disk):
    clip = _write(tmp_path / "clip.wav", _noise(0.3))
    cache_dir = tmp_path / "cache"
    with pytest.raises(OSError) as info:
        DecodedAudioCache(cache_dir, SR).prepare([clip], progress=False)
    assert info.value.errno == errno.ENOSPC
    assert str(info.value) == (
        f"[Errno 28] cannot write the decoded-audio cache in {cache_dir} (No space left on "
        "device); free space there or choose another cache folder"
    )
    assert list(cache_dir.iterdir()) == []  # no entry, no temporary file


def test_a_full_disk_during_training_ends_the_command_in_one_line(tmp_path, full_disk, capsys):
    from audio_cnn.cli import main

    data = _folder(tmp_path / "digits", 1.0, per_class=4)
    cache_dir = tmp_path / "cache"
    argv = ["train", str(data), "--out", str(tmp_path / "run"), "--cache-dir", str(cache_dir)]
    assert main([*argv, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert re.fullmatch(
        r"audio-cnn train: error: \[Errno 28\] cannot write the decoded-audio cache in "
        rf"{re.escape(str(cache_dir))} \(No space left on device\); free space there or "
        r"choose another cache folder\n",
        err,
    )
    assert [path for path in cache_dir.iterdir()] == []
