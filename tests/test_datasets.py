"""Clip lists, splits, GTZAN folds and the chunking datasets."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from audio_cnn.audio_io import AudioDecodeError, DecodedAudioCache, peak_normalize
from audio_cnn.chunks import EvenChunkDataset, RandomChunkDataset, even_chunk_starts
from audio_cnn.datasets import (
    GTZAN,
    GTZAN_GENRES,
    AudioFolder,
    ClipRecord,
    load_split_lists,
    make_splits,
)

SR = 16_000


def _write_clip(path: Path, seconds: float = 0.25, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sf.write(path, rng.uniform(-0.5, 0.5, round(seconds * SR)).astype(np.float32), SR)
    return path


def _ramp_loader(lengths: dict[str, int]):
    """An in-memory loader: clip ``name`` is the ramp 1, 2, ..., length (so values show offsets)."""
    audio = {name: np.arange(1, n + 1, dtype=np.float32) for name, n in lengths.items()}
    return lambda path: audio[Path(path).name]


def _ramp_clips(lengths: dict[str, int]) -> list[ClipRecord]:
    return [ClipRecord(Path(name), i % 2, name) for i, name in enumerate(lengths)]


# --------------------------------------------------------------------------- AudioFolder


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "data"
    for label in ("dog", "cat"):
        for i in range(3):
            _write_clip(root / label / f"{i:02d}.wav", seed=i)
    _write_clip(root / "cat" / "sub" / "deep.flac")
    (root / "cat" / ".hidden.wav").write_bytes(b"")
    (root / "cat" / "notes.txt").write_text("not audio")
    (root / ".cache").mkdir()
    (root / "splits").mkdir()
    return root


def test_audio_folder_lists_classes_and_clips(folder):
    data = AudioFolder(folder)
    assert data.classes == ["cat", "dog"]
    assert data.class_to_idx == {"cat": 0, "dog": 1}
    ids = [(clip.label, clip.track_id) for clip in data.clips]
    assert ids == [
        (0, "cat/00"),
        (0, "cat/01"),
        (0, "cat/02"),
        (0, "cat/sub/deep"),
        (1, "dog/00"),
        (1, "dog/01"),
        (1, "dog/02"),
    ]
    assert all(clip.path.is_absolute() and clip.path.is_file() for clip in data.clips)
    assert len(AudioFolder(folder, extensions=(".FLAC",), allow_empty=True)) == 1


def test_audio_folder_errors(tmp_path, folder):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        AudioFolder(tmp_path / "missing")
    with pytest.raises(NotADirectoryError):
        AudioFolder(folder / "dog" / "00.wav")
    bare = tmp_path / "bare"
    (bare / "splits").mkdir(parents=True)
    (bare / ".git").mkdir()
    with pytest.raises(FileNotFoundError, match="no class subfolders"):
        AudioFolder(bare)
    (folder / "bird").mkdir()
    with pytest.raises(FileNotFoundError, match=r"bird contains no audio files.*allow_empty"):
        AudioFolder(folder)
    data = AudioFolder(folder, allow_empty=True)
    assert data.classes == ["bird", "cat", "dog"] and len(data) == 7


def test_split_lists_are_read_and_validated(folder):
    assert load_split_lists(folder) is None
    (folder / "splits" / "train.txt").write_text(
        "# training clips\ndog/00.wav\n\n  cat/00.wav  \ncat/sub/deep.flac\n"
    )
    (folder / "splits" / "test.txt").write_text("dog/01.wav\n")
    lists = load_split_lists(folder)
    assert list(lists) == ["train", "val", "test"]
    assert lists["train"] == [
        folder / "dog/00.wav",
        folder / "cat/00.wav",
        folder / "cat/sub/deep.flac",
    ]
    assert lists["val"] == [] and lists["test"] == [folder / "dog/01.wav"]
    splits = AudioFolder(folder).splits()
    assert [clip.track_id for clip in splits["train"]] == ["dog/00", "cat/00", "cat/sub/deep"]
    assert [clip.track_id for clip in splits["test"]] == ["dog/01"]


@pytest.mark.parametrize(
    ("train", "test", "error", "message"),
    [
        ("dog/00.wav\ndog/09.wav\n", "", FileNotFoundError, r"train\.txt:2: listed file .*09"),
        ("dog/00.wav\n", "dog/00.wav\n", ValueError, r"test\.txt:1: .*already listed in train"),
        ("dog/00.wav\ndog/00.wav\n", "", ValueError, "already listed"),
        ("/abs/dog.wav\n", "", ValueError, "absolute"),
    ],
)
def test_bad_split_lists(folder, train, test, error, message):
    (folder / "splits" / "train.txt").write_text(train)
    (folder / "splits" / "test.txt").write_text(test)
    with pytest.raises(error, match=message):
        load_split_lists(folder)


def test_split_lists_need_train_and_name_clips(folder):
    (folder / "splits" / "val.txt").write_text("dog/00.wav\n")
    with pytest.raises(FileNotFoundError, match=r"no train\.txt"):
        load_split_lists(folder)
    (folder / "splits" / "train.txt").write_text("cat/notes.txt\n")
    with pytest.raises(ValueError, match="not clips of this dataset"):
        AudioFolder(folder).splits()


# --------------------------------------------------------------------------- make_splits


def _grouped_clips(n_tracks_per_class: list[int], clips_per_track: int = 2) -> list[ClipRecord]:
    return [
        ClipRecord(Path(f"c{label}/t{t}_{k}.wav"), label, f"c{label}/t{t}")
        for label, n in enumerate(n_tracks_per_class)
        for t in range(n)
        for k in range(clips_per_track)
    ]


def _assert_partition_grouped(clips, splits):
    assert sorted(c.path for s in splits.values() for c in s) == sorted(c.path for c in clips)
    split_of = {}
    for name, members in splits.items():
        for clip in members:
            assert split_of.setdefault(clip.track_id, name) == name


def test_make_splits_is_stratified_grouped_and_seeded():
    clips = _grouped_clips([10, 10, 20])
    splits = make_splits(clips, (0.7, 0.15, 0.15), seed=3)
    _assert_partition_grouped(clips, splits)
    per_class = {name: Counter(c.label for c in members) for name, members in splits.items()}
    # Tracks per class: 10 -> 7/2/1 (largest remainder, ties to val), 20 -> 14/3/3; 2 clips each.
    assert per_class["train"] == {0: 14, 1: 14, 2: 28}
    assert per_class["val"] == {0: 4, 1: 4, 2: 6}
    assert per_class["test"] == {0: 2, 1: 2, 2: 6}
    assert make_splits(clips, seed=3) == splits
    assert make_splits(clips, seed=4) != splits


def test_make_splits_reaches_every_split_for_small_classes():
    splits = make_splits(_grouped_clips([3, 4]), (0.7, 0.15, 0.15))
    for members in splits.values():
        assert {c.label for c in members} == {0, 1}


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(1, 12), min_size=1, max_size=4),
    st.integers(1, 3),
    st.sampled_from([(0.7, 0.15, 0.15), (0.8, 0.2, 0.0), (0.5, 0.25, 0.25), (1.0, 0.0, 0.0)]),
    st.integers(0, 2**16),
)
def test_make_splits_property(n_tracks, clips_per_track, fractions, seed):
    clips = _grouped_clips(n_tracks, clips_per_track)
    splits = make_splits(clips, fractions, seed=seed)
    _assert_partition_grouped(clips, splits)
    for label, n in enumerate(n_tracks):
        for name, share in zip(("train", "val", "test"), fractions, strict=True):
            count = sum(c.label == label for c in splits[name]) // clips_per_track
            if share == 0:
                assert count == 0
            else:
                # Rounding, plus at most one track moved to fill an empty split.
                assert abs(count - n * share) <= 2


def test_make_splits_rejects_bad_input():
    with pytest.raises(ValueError, match="fractions"):
        make_splits(_grouped_clips([3]), (0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="fractions"):
        make_splits(_grouped_clips([3]), (0.0, 0.5, 0.5))
    with pytest.raises(ValueError, match="empty"):
        make_splits([])
    mixed = [ClipRecord(Path("a.wav"), 0, "t"), ClipRecord(Path("b.wav"), 1, "t")]
    with pytest.raises(ValueError, match="track 't' has clips with labels 0 and 1"):
        make_splits(mixed)


# --------------------------------------------------------------------------- GTZAN


def _gtzan(root: Path, genres=("blues", "jazz", "rock"), tracks: int = 4) -> Path:
    for genre in genres:
        for i in range(tracks):
            _write_clip(root / "genres_original" / genre / f"{genre}.{i:05d}.wav", 0.2, seed=i)
    return root


@pytest.fixture
def gtzan_root(tmp_path) -> Path:
    return _gtzan(tmp_path / "gtzan")


def test_gtzan_subset_is_sorted_with_warning(gtzan_root):
    with pytest.warns(UserWarning, match="sorted order"):
        data = GTZAN(gtzan_root, n_folds=4)
    assert data.classes == ["blues", "jazz", "rock"]
    assert data.root == gtzan_root / "genres_original"
    assert data.clips[0].track_id == "blues.00000" and len(data) == 12
    with pytest.warns(UserWarning):
        same = GTZAN(gtzan_root / "genres_original", n_folds=4)
    assert same.clips == data.clips


def test_gtzan_full_set_uses_reference_order(tmp_path):
    root = tmp_path / "Data" / "genres_original"
    for genre in sorted(GTZAN_GENRES):
        (root / genre).mkdir(parents=True)
        (root / genre / f"{genre}.00000.wav").write_bytes(b"")
    data = GTZAN(tmp_path / "Data", n_folds=2, test_fold=None)
    assert data.classes == list(GTZAN_GENRES)
    assert data.class_to_idx["pop"] == 0 and data.class_to_idx["jazz"] == 9


def test_gtzan_generated_folds(gtzan_root):
    with pytest.warns(UserWarning):
        data = GTZAN(gtzan_root, n_folds=4, seed=1)
    assert len(data.folds) == 4
    for fold in data.folds:
        # Stratified: 4 tracks per genre dealt over 4 folds = one per genre per fold.
        assert sorted(c.label for c in fold) == [0, 1, 2]
    tracks = [c.track_id for fold in data.folds for c in fold]
    assert sorted(tracks) == sorted(c.track_id for c in data.clips)
    splits = data.splits()
    assert splits["val"] == data.folds[0] and splits["test"] == data.folds[1]
    assert splits["train"] == data.folds[2] + data.folds[3]
    with pytest.warns(UserWarning):
        other = GTZAN(gtzan_root, n_folds=4, seed=2)
    assert other.folds != data.folds


def test_gtzan_reference_folds_without_test(gtzan_root):
    with pytest.warns(UserWarning):
        data = GTZAN(gtzan_root, n_folds=3, test_fold=None)
    splits = data.splits()
    assert splits["test"] == [] and splits["val"] == data.folds[0]
    assert splits["train"] == data.folds[1] + data.folds[2]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"val_fold": 0}, "fold numbers"),
        ({"test_fold": 6}, "fold numbers"),
        ({"val_fold": 2, "test_fold": 2}, "both 2"),
        ({"n_folds": 2}, "no fold for training"),
        ({"n_folds": 1, "test_fold": None}, "at least 2"),
    ],
)
def test_gtzan_bad_fold_choice(gtzan_root, kwargs, message):
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=message):
        GTZAN(gtzan_root, **kwargs)


def test_gtzan_missing_layout(tmp_path):
    (tmp_path / "misc").mkdir()
    with pytest.raises(FileNotFoundError, match="genres_original"):
        GTZAN(tmp_path)


def test_gtzan_saved_folds_round_trip(tmp_path, gtzan_root):
    with pytest.warns(UserWarning):
        data = GTZAN(gtzan_root, n_folds=4, seed=5)
    written = data.save_folds(tmp_path / "folds")
    assert [p.name for p in written] == ["fold1.txt", "fold2.txt", "fold3.txt", "fold4.txt"]
    assert (
        written[0].read_text().splitlines()[0].startswith(data.folds[0][0].path.parent.name + "/")
    )
    with pytest.warns(UserWarning):
        again = GTZAN(gtzan_root, n_folds=4, fold_lists=tmp_path / "folds", seed=99)
    assert again.folds == data.folds
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="n_folds=5"):
        GTZAN(gtzan_root, fold_lists=tmp_path / "folds")


def test_gtzan_fixed_split_lists_in_any_spelling(tmp_path, gtzan_root):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text(
        "blues/blues.00000.wav\nblues.00001.wav\n# note\njazz.00000\nrock.00000.au\tblues\n"
    )
    (lists / "valid.txt").write_text("jazz/jazz.00001.wav\nrock.00099.wav\n")
    (lists / "test.txt").write_text("rock/rock.00001.wav\n")
    with pytest.warns(UserWarning) as caught:
        data = GTZAN(gtzan_root, fold_lists=lists)
    assert any("rock.00099" in str(w.message) for w in caught)
    splits = data.splits()
    assert data.folds is None
    assert [c.track_id for c in splits["train"]] == [
        "blues.00000",
        "blues.00001",
        "jazz.00000",
        "rock.00000",
    ]
    assert [c.track_id for c in splits["val"]] == ["jazz.00001"]
    assert [c.track_id for c in splits["test"]] == ["rock.00001"]
    # The same files through an explicit mapping (e.g. Kereliuk's *_filtered.txt names).
    mapping = {"train": lists / "train.txt", "test": lists / "test.txt"}
    with pytest.warns(UserWarning):
        explicit = GTZAN(gtzan_root, fold_lists=mapping).splits()
    assert explicit["train"] == splits["train"] and explicit["val"] == []


def test_gtzan_overlapping_lists_are_rejected(tmp_path, gtzan_root):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text("blues.00000.wav\n")
    (lists / "test.txt").write_text("blues/blues.00000.wav\n")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="already listed"):
        GTZAN(gtzan_root, fold_lists=lists)
    with pytest.warns(UserWarning), pytest.raises(FileNotFoundError, match=r"train\.txt"):
        GTZAN(gtzan_root, fold_lists=tmp_path)


def test_unreadable_gtzan_file_is_skipped_and_counted(tmp_path, gtzan_root):
    corrupt = gtzan_root / "genres_original" / "jazz" / "jazz.00054.wav"
    corrupt.write_bytes(b"RIFF....WAVEfmt broken")
    with pytest.warns(UserWarning):
        data = GTZAN(gtzan_root, n_folds=4)
    assert len(data) == 13
    cache = DecodedAudioCache(tmp_path / "cache", SR)
    with pytest.warns(UserWarning, match=r"skipping 1 unreadable audio files.*jazz\.00054\.wav"):
        train = RandomChunkDataset(data.clips, cache, 1600)
    assert train.summary.unreadable == 1 and len(train) == 12
    assert corrupt in train.unreadable
    assert "1 unreadable clips skipped" in str(train.summary)
    with pytest.raises(AudioDecodeError, match=r"jazz\.00054\.wav"):
        EvenChunkDataset(data.clips, cache, 1600, sample_rate=SR, skip_unreadable=False)


# --------------------------------------------------------------------------- chunking


def test_random_chunks_reproduce_across_instances_and_resume(tmp_path):
    paths = [_write_clip(tmp_path / f"{i}.wav", 0.5, seed=i) for i in range(4)]
    clips = [ClipRecord(p, i % 2, p.stem) for i, p in enumerate(paths)]
    cache = DecodedAudioCache(tmp_path / "cache", SR)

    def epoch_items(dataset, epoch):
        dataset.set_epoch(epoch)
        return [dataset[i][0] for i in range(len(dataset))]

    run = RandomChunkDataset(clips, cache, 1000, seed=7)
    uninterrupted = [epoch_items(run, e) for e in range(3)]
    resumed = RandomChunkDataset(clips, DecodedAudioCache(tmp_path / "cache", SR), 1000, seed=7)
    for a, b in zip(epoch_items(resumed, 2), uninterrupted[2], strict=True):
        assert torch.equal(a, b)
    # Epochs draw new crops; a different seed draws other crops.
    assert not all(torch.equal(a, b) for a, b in zip(*uninterrupted[:2], strict=True))
    other = RandomChunkDataset(clips, cache, 1000, seed=8)
    assert not all(
        torch.equal(a, b) for a, b in zip(epoch_items(other, 0), uninterrupted[0], strict=True)
    )
    # Every chunk is a crop of the peak-normalised clip, and the decoding happened once.
    for clip, chunk in zip(clips, uninterrupted[1], strict=True):
        whole = peak_normalize(cache.get(clip.path))
        starts = [s for s in range(whole.size - 999) if whole[s] == chunk[0].item()]
        assert any(np.array_equal(whole[s : s + 1000], chunk.numpy()) for s in starts)
    assert cache.stats.decoded == 4
    chunk, label = run[1]
    assert chunk.dtype == torch.float32 and chunk.shape == (1000,) and label == 1


def test_random_chunks_match_in_dataloader_workers(tmp_path):
    paths = [_write_clip(tmp_path / f"{i}.wav", 0.3, seed=i) for i in range(6)]
    clips = [ClipRecord(p, i % 3, p.stem) for i, p in enumerate(paths)]
    dataset = RandomChunkDataset(clips, DecodedAudioCache(tmp_path / "cache", SR), 800, seed=1)
    dataset.set_epoch(4)
    serial = next(iter(DataLoader(dataset, batch_size=6)))
    parallel = torch.cat([b[0] for b in DataLoader(dataset, batch_size=2, num_workers=2)])
    assert serial[0].shape == (6, 800)
    assert torch.equal(serial[0], parallel)
    assert serial[1].tolist() == [0, 1, 2, 0, 1, 2]


def test_waveform_transform_gets_the_item_generator():
    lengths = {"a": 500, "b": 300}

    def add_noise(chunk, rng):
        return chunk + rng.standard_normal(chunk.shape).astype(np.float32)

    first, second = (
        RandomChunkDataset(
            _ramp_clips(lengths),
            _ramp_loader(lengths),
            100,
            normalize=False,
            waveform_transform=add_noise,
        )
        for _ in range(2)
    )
    assert torch.equal(first[0][0], second[0][0])
    plain = RandomChunkDataset(_ramp_clips(lengths), _ramp_loader(lengths), 100, normalize=False)
    assert not torch.equal(first[0][0], plain[0][0])
    # Same generator stream: the offset comes first, then the transform's draws.
    rng = np.random.default_rng([0, 0, 0])
    start = int(rng.integers(0, 401))
    expected = np.arange(start + 1, start + 101, dtype=np.float32) + rng.standard_normal(
        100
    ).astype(np.float32)
    np.testing.assert_array_equal(first[0][0].numpy(), expected)


@pytest.mark.parametrize(
    ("transform", "message"),
    [(lambda x, rng: x[:-1], "must keep the shape"), (lambda x, rng: x * np.nan, "NaN")],
)
def test_bad_waveform_transform(transform, message):
    lengths = {"a": 500}
    dataset = RandomChunkDataset(
        _ramp_clips(lengths), _ramp_loader(lengths), 100, waveform_transform=transform
    )
    with pytest.raises(ValueError, match=message):
        dataset[0]


def test_short_clips_pad_or_skip():
    lengths = {"long": 500, "short": 40, "exact": 100}
    padded = RandomChunkDataset(_ramp_clips(lengths), _ramp_loader(lengths), 100, normalize=False)
    assert (padded.summary.padded, padded.summary.skipped, len(padded)) == (1, 0, 3)
    chunk = padded[1][0].numpy()
    np.testing.assert_array_equal(chunk[:40], np.arange(1, 41))
    assert not chunk[40:].any()
    np.testing.assert_array_equal(padded[2][0].numpy(), np.arange(1, 101))
    skipped = RandomChunkDataset(_ramp_clips(lengths), _ramp_loader(lengths), 100, short="skip")
    assert (skipped.summary.padded, skipped.summary.skipped, len(skipped)) == (0, 1, 2)
    assert [c.track_id for c in skipped.clips] == ["long", "exact"]
    assert str(skipped.summary).startswith(
        "2 clips, 2 chunks per epoch; short clips: 0 padded, 1 skipped"
    )
    with pytest.raises(ValueError, match="no usable clips"):
        RandomChunkDataset(_ramp_clips({"s": 5}), _ramp_loader({"s": 5}), 100, short="skip")


def test_silent_clip_stays_silent(tmp_path):
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros(2000, np.float32), SR)
    dataset = RandomChunkDataset([ClipRecord(path, 0, "s")], DecodedAudioCache(None, SR), 500)
    chunk = dataset[0][0]
    assert torch.isfinite(chunk).all() and not chunk.any()


def test_chunk_dataset_argument_errors():
    lengths = {"a": 500}
    clips, loader = _ramp_clips(lengths), _ramp_loader(lengths)
    with pytest.raises(ValueError, match="chunk_samples"):
        RandomChunkDataset(clips, loader, 0)
    with pytest.raises(ValueError, match="short"):
        RandomChunkDataset(clips, loader, 10, short="crop")
    with pytest.raises(ValueError, match="seed"):
        RandomChunkDataset(clips, loader, 10, seed=-1)
    dataset = RandomChunkDataset(clips, loader, 10)
    with pytest.raises(ValueError, match="epoch"):
        dataset.set_epoch(-1)
    with pytest.raises(IndexError):
        dataset[1]
    with pytest.raises(ValueError, match="1-D"):
        RandomChunkDataset(clips, lambda path: np.zeros((2, 50), np.float32), 10)
    with pytest.raises(ValueError, match="shorter than one chunk"):
        EvenChunkDataset(clips, loader, 100, span_seconds=0.5, sample_rate=100)


# Short draws are padded on purpose here; the padding warning is tested on its own.
@pytest.mark.filterwarnings("ignore:.*shorter than the chunks:UserWarning")
@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 3000),
    st.integers(1, 1000),
    st.integers(0, 2**31),
    st.integers(0, 1000),
    st.integers(0, 5),
)
def test_random_crop_is_always_in_range(length, chunk_samples, seed, epoch, n_extra):
    lengths = {f"c{i}": length + i for i in range(n_extra + 1)}
    dataset = RandomChunkDataset(
        _ramp_clips(lengths), _ramp_loader(lengths), chunk_samples, seed=seed, normalize=False
    )
    dataset.set_epoch(epoch)
    index = n_extra
    chunk = dataset[index][0].numpy()
    n = length + index
    start = int(chunk[0]) - 1  # the ramp's value tells the offset
    assert 0 <= start <= max(n - chunk_samples, 0)
    valid = min(chunk_samples, n - start)
    np.testing.assert_array_equal(chunk[:valid], np.arange(start + 1, start + valid + 1))
    assert not chunk[valid:].any()


def test_even_chunks_positions_and_clip_index():
    lengths = {"a": 1000, "b": 100, "c": 60, "d": 250}
    dataset = EvenChunkDataset(
        _ramp_clips(lengths),
        _ramp_loader(lengths),
        100,
        n_chunks=8,
        span_seconds=9.0,
        sample_rate=100,
        normalize=False,
    )
    # a: span 900 -> starts 0..800 in 8 steps; b: one exact chunk; c: one padded; d: 151 starts.
    np.testing.assert_array_equal(dataset.starts[:8], [0, 114, 228, 342, 457, 571, 685, 800])
    np.testing.assert_array_equal(dataset.starts[8:10], [0, 0])
    np.testing.assert_array_equal(dataset.starts[10:], np.arange(8) * 150 // 7)
    np.testing.assert_array_equal(dataset.clip_of_item, [0] * 8 + [1, 2] + [3] * 8)
    assert dataset.n_clips == 4 and len(dataset) == 18
    assert (dataset.summary.padded, dataset.summary.items) == (1, 18)
    chunk, label, clip_index = dataset[3]
    np.testing.assert_array_equal(chunk.numpy(), np.arange(343, 443))
    assert (label, clip_index) == (0, 0)
    chunk, _, clip_index = dataset[9]
    assert clip_index == 2 and chunk[:60].tolist() == list(range(1, 61)) and not chunk[60:].any()
    skipping = EvenChunkDataset(
        _ramp_clips(lengths),
        _ramp_loader(lengths),
        100,
        span_seconds=9.0,
        sample_rate=100,
        short="skip",
    )
    assert skipping.n_clips == 3 and skipping.summary.skipped == 1
    np.testing.assert_array_equal(skipping.clip_of_item, [0] * 8 + [1] + [2] * 8)


def test_even_chunks_collapse_for_one_second_clips(tmp_path):
    path = _write_clip(tmp_path / "one.wav", 1.0)
    dataset = EvenChunkDataset(
        [ClipRecord(path, 3, "one")], DecodedAudioCache(tmp_path / "cache", SR), SR, sample_rate=SR
    )
    assert len(dataset) == 1 and dataset.n_clips == 1
    chunk, label, clip_index = dataset[0]
    assert chunk.shape == (SR,) and (label, clip_index) == (3, 0)
    assert chunk.abs().max().item() == pytest.approx(1.0)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 10_000), st.integers(1, 3_000), st.integers(1, 20), st.integers(1, 12_000))
def test_even_chunk_starts_property(length, chunk_samples, n_chunks, span_samples):
    starts = even_chunk_starts(length, chunk_samples, n_chunks, span_samples)
    last = min(length, span_samples) - chunk_samples
    assert starts.dtype == np.int64 and starts[0] == 0
    assert 1 <= len(starts) <= n_chunks
    if last > 0:
        assert len(starts) == min(n_chunks, last + 1)
        assert np.all(np.diff(starts) > 0)
        assert starts[-1] == (last if len(starts) > 1 else 0)
        assert starts.max() + chunk_samples <= min(length, span_samples)
    else:
        assert starts.tolist() == [0]
