"""Decoding, validation, peak normalisation and the decoded-audio cache."""

from __future__ import annotations

import math
import os
import pickle
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from audio_cnn.audio_io import (
    AudioDecodeError,
    DecodedAudioCache,
    load_audio,
    peak_normalize,
)

SR = 16_000


def _tone(seconds: float, sample_rate: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _write(path: Path, samples: np.ndarray, sample_rate: int = SR, **kwargs) -> Path:
    sf.write(path, samples, sample_rate, **kwargs)
    return path


def _dominant_frequency(x: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * sample_rate / len(x))


# --------------------------------------------------------------------------- load_audio


def test_load_mono_float_wav_is_exact(tmp_path):
    x = _tone(0.25, SR)
    y = load_audio(_write(tmp_path / "a.wav", x, subtype="FLOAT"), SR)
    assert y.dtype == np.float32
    assert y.shape == x.shape
    np.testing.assert_array_equal(y, x)


def test_stereo_is_averaged_or_kept(tmp_path):
    left, right = _tone(0.1, SR, 300), _tone(0.1, SR, 700, amp=0.2)
    path = _write(tmp_path / "st.wav", np.stack([left, right], axis=1), subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path, SR), (left + right) / 2, atol=1e-7)
    both = load_audio(path, SR, mono=False)
    assert both.shape == (2, left.size) and both.dtype == np.float32
    np.testing.assert_array_equal(both[1], right)


@pytest.mark.parametrize("native_rate", [8_000, 22_050, 44_100])
def test_resampled_once_to_target_rate(tmp_path, native_rate):
    x = _tone(0.5, native_rate, freq=1000.0)
    y = load_audio(_write(tmp_path / f"r{native_rate}.wav", x, native_rate), SR)
    assert y.dtype == np.float32
    assert y.shape == (math.ceil(x.size * SR / native_rate),)
    assert abs(_dominant_frequency(y, SR) - 1000.0) <= 2.0
    # soxr_hq keeps the tone's amplitude (PCM_16 quantisation aside).
    assert abs(np.abs(y[SR // 10 : -SR // 10]).max() - 0.5) < 0.01


def test_flac_matches_wav(tmp_path):
    x = _tone(0.2, 22_050)
    wav = load_audio(_write(tmp_path / "a.wav", x, 22_050), SR)
    flac = load_audio(_write(tmp_path / "a.flac", x, 22_050), SR)
    # Both are 16-bit PCM; libsndfile's float-to-int scaling differs by a few steps of 2**-15.
    np.testing.assert_allclose(flac, wav, atol=2e-4)


def test_silent_file_loads_as_zeros(tmp_path):
    y = load_audio(_write(tmp_path / "silent.wav", np.zeros(800, np.float32)), SR)
    assert y.shape == (800,) and not y.any()


def test_zero_byte_file_names_file_and_reason(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioDecodeError, match=r"empty\.wav.*empty \(0 bytes\)") as info:
        load_audio(path, SR)
    assert info.value.path == path


def test_header_without_samples_is_rejected(tmp_path):
    path = _write(tmp_path / "no_frames.wav", np.zeros(0, np.float32))
    with pytest.raises(AudioDecodeError, match=r"no_frames\.wav.*no samples"):
        load_audio(path, SR)


def test_garbage_with_wav_extension_is_rejected(tmp_path):
    path = tmp_path / "garbage.wav"
    path.write_bytes(b"this is not audio" * 20)
    with pytest.raises(AudioDecodeError, match=r"garbage\.wav.*unsupported format or corrupt"):
        load_audio(path, SR)


def test_missing_file_is_a_decode_error(tmp_path):
    with pytest.raises(AudioDecodeError, match="does not exist"):
        load_audio(tmp_path / "nope.wav", SR)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_reported_not_repaired(tmp_path, bad):
    x = _tone(0.05, SR)
    x[7] = bad
    path = _write(tmp_path / "nan.wav", x, subtype="FLOAT")
    with pytest.raises(AudioDecodeError, match=r"nan\.wav.*1 of 800 samples.*first at sample 7"):
        load_audio(path, SR)


@pytest.mark.parametrize("rate", [0, -16_000, 16_000.0, True])
def test_bad_sample_rate(tmp_path, rate):
    path = _write(tmp_path / "a.wav", _tone(0.01, SR))
    with pytest.raises((TypeError, ValueError), match="sample_rate"):
        load_audio(path, rate)


def test_decode_error_pickles_with_path_and_reason():
    error = pickle.loads(pickle.dumps(AudioDecodeError("x/y.wav", "broken")))
    assert error.path == Path("x/y.wav") and error.reason == "broken"
    assert str(error) == "cannot decode audio file 'x/y.wav': broken"


# --------------------------------------------------------------------------- peak_normalize


def test_peak_normalize_uses_absolute_peak_and_keeps_dtype():
    x = np.array([0.1, -0.4, 0.2], dtype=np.float32)
    y = peak_normalize(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [0.25, -1.0, 0.5])


def test_peak_normalize_leaves_silence_unchanged():
    x = np.zeros(10, np.float32)
    assert peak_normalize(x) is x
    tiny = np.full(4, 1e-9, np.float32)
    assert peak_normalize(tiny) is tiny


def test_peak_normalize_with_reference_equals_crop_of_normalized_clip():
    clip = _tone(0.1, SR) * np.linspace(0, 1, 1600, dtype=np.float32)
    np.testing.assert_array_equal(
        peak_normalize(clip[100:300], reference=clip), peak_normalize(clip)[100:300]
    )


def test_peak_normalize_rejects_bad_input():
    with pytest.raises(TypeError, match="floating-point"):
        peak_normalize(np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="empty"):
        peak_normalize(np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        peak_normalize(np.array([0.5, np.nan], np.float32))
    with pytest.raises(ValueError, match="NaN"):
        peak_normalize(np.zeros(3, np.float32), reference=np.array([np.inf], np.float32))


@settings(max_examples=50, deadline=None)
@given(arrays(np.float32, st.integers(1, 64), elements=st.floats(-1e3, 1e3, width=32)))
def test_peak_normalize_property(x):
    y = peak_normalize(x)
    peak = np.abs(x).max()
    if peak <= 1e-8:
        assert y is x
    else:
        assert np.abs(y).max() == pytest.approx(1.0, rel=1e-6)
        np.testing.assert_allclose(y * peak, x, rtol=1e-5, atol=1e-30)


# --------------------------------------------------------------------------- cache


@pytest.fixture
def clip(tmp_path) -> Path:
    return _write(tmp_path / "clip.wav", _tone(0.3, 22_050), 22_050)


def test_cache_returns_decoded_audio_and_never_decodes_twice(tmp_path, clip):
    first = DecodedAudioCache(tmp_path / "cache", SR)
    audio = first.get(clip)
    np.testing.assert_array_equal(audio, load_audio(clip, SR))
    assert not audio.flags.writeable
    np.testing.assert_array_equal(first(clip), audio)
    assert (first.stats.decoded, first.stats.disk_hits) == (1, 1)
    # A later run (new instance, same directory) reads the entry instead of decoding.
    later = DecodedAudioCache(tmp_path / "cache", SR)
    np.testing.assert_array_equal(later.get(clip), audio)
    assert later.stats.decoded == 0
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1


def test_cache_serves_entry_while_content_is_unchanged_even_if_touched_or_copied(tmp_path, clip):
    cache = DecodedAudioCache(tmp_path / "cache", SR)
    original = cache.get(clip).copy()
    os.utime(clip, ns=(1_000_000_000, 2_000_000_000))  # other mtime, same bytes
    np.testing.assert_array_equal(cache.get(clip), original)
    copy = tmp_path / "clip.wav.d" / "clip.wav"
    copy.parent.mkdir()
    copy.write_bytes(clip.read_bytes())
    np.testing.assert_array_equal(cache.get(copy), original)
    assert (cache.stats.decoded, cache.stats.disk_hits) == (1, 2)


def test_cache_redecodes_a_changed_file(tmp_path, clip):
    cache = DecodedAudioCache(tmp_path / "cache", SR)
    cache.get(clip)
    status = clip.stat()
    changed = _tone(0.4, 22_050, freq=900.0)
    _write(clip, changed, 22_050)
    os.utime(clip, ns=(status.st_atime_ns, status.st_mtime_ns + 1_000_000))
    np.testing.assert_array_equal(cache.get(clip), load_audio(clip, SR))
    assert cache.stats.decoded == 2


@pytest.mark.parametrize("damage", ["truncate", "empty", "wrong_dtype", "garbage"])
def test_corrupt_entry_is_redecoded_never_returned(tmp_path, clip, damage):
    cache = DecodedAudioCache(tmp_path / "cache", SR)
    expected = cache.get(clip).copy()
    (entry,) = (tmp_path / "cache").glob("*.npy")
    if damage == "truncate":
        entry.write_bytes(entry.read_bytes()[:-100])
    elif damage == "empty":
        entry.write_bytes(b"")
    elif damage == "wrong_dtype":
        np.save(entry, expected.astype(np.float64))
    else:
        entry.write_bytes(b"\x93NUMPY garbage")
    fresh = DecodedAudioCache(tmp_path / "cache", SR)
    with pytest.warns(RuntimeWarning, match="corrupt"):
        audio = fresh.get(clip)
    np.testing.assert_array_equal(audio, expected)
    assert (fresh.stats.repaired, fresh.stats.decoded) == (1, 1)
    # The entry was rewritten and is good again.
    again = DecodedAudioCache(tmp_path / "cache", SR)
    np.testing.assert_array_equal(again.get(clip), expected)
    assert again.stats.decoded == 0


def test_length_reads_header_and_repairs_once(tmp_path, clip):
    cache = DecodedAudioCache(tmp_path / "cache", SR)
    n = cache.length(clip)
    assert n == load_audio(clip, SR).shape[0]
    assert cache.length(clip) == n and cache.stats.decoded == 1
    (entry,) = (tmp_path / "cache").glob("*.npy")
    entry.write_bytes(entry.read_bytes()[:-4])
    with pytest.warns(RuntimeWarning, match="corrupt"):
        assert cache.length(clip) == n
    assert (cache.stats.repaired, cache.stats.decoded) == (1, 2)


def test_no_directory_decodes_every_time(clip):
    cache = DecodedAudioCache(None, SR)
    np.testing.assert_array_equal(cache.get(clip), cache.get(clip))
    assert cache.stats.decoded == 2


def test_memory_lru(tmp_path, clip):
    other = _write(tmp_path / "other.wav", _tone(0.1, SR))
    cache = DecodedAudioCache(None, SR, memory_items=1)
    a = cache.get(clip)
    assert cache.get(clip) is a and cache.stats.memory_hits == 1
    cache.get(other)  # evicts clip
    cache.get(clip)
    assert cache.stats.decoded == 3


def test_cache_pickles_without_lru(tmp_path, clip):
    cache = DecodedAudioCache(tmp_path / "cache", SR, memory_items=4)
    cache.get(clip)
    copy = pickle.loads(pickle.dumps(cache))
    np.testing.assert_array_equal(copy.get(clip), cache.get(clip))
    assert copy.stats.memory_hits == 0 and copy.stats.disk_hits == 1


def test_concurrent_writers_leave_one_valid_entry(tmp_path, clip):
    caches = [DecodedAudioCache(tmp_path / "cache", SR) for _ in range(6)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda cache: cache.get(clip), caches))
    for audio in results[1:]:
        np.testing.assert_array_equal(audio, results[0])
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".npy"]
    assert DecodedAudioCache(tmp_path / "cache", SR).get(clip).shape == results[0].shape


def test_prepare_reports_failures_without_raising(tmp_path, clip):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"not audio" * 50)
    bad = _tone(0.05, SR)
    bad[3] = np.nan
    nan = _write(tmp_path / "nan.wav", bad, subtype="FLOAT")
    silent = _write(tmp_path / "silent.wav", np.zeros(400, np.float32))
    cache = DecodedAudioCache(tmp_path / "cache", SR)
    with pytest.warns(UserWarning) as caught:
        report = cache.prepare([clip, empty, garbage, nan, silent], progress=False)
    assert report.ok == [clip]
    assert report.lengths[silent] == 400
    assert set(report.undecodable) == {empty, garbage, nan}
    assert set(report.failed) == {empty, garbage, nan, silent}
    # 25 ms of zeros is too short and silent; it is counted once, as too short.
    assert list(report.too_short) == [silent] and not report.silent
    assert "NaN" in report.failed[nan]
    text = str(report)
    assert text.startswith(
        "kept 1 of 5 audio files; left out 4: 3 undecodable, 1 too short, 0 silent; "
        "0 truncated (kept)"
    )
    assert "garbage.wav" in text
    assert cache.stats.decoded == 2
    messages = [str(warning.message) for warning in caught]
    assert [message.split(":")[0] for message in messages] == [
        "3 of 5 audio files cannot be decoded and are left out",
        "1 of 5 audio files are shorter than 0.1 s and are left out",
    ]


def test_cache_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="memory_items"):
        DecodedAudioCache(tmp_path, SR, memory_items=-1)
    with pytest.raises(ValueError, match="sample_rate"):
        DecodedAudioCache(tmp_path, 0)
    with pytest.raises(AudioDecodeError, match="does not exist"):
        DecodedAudioCache(tmp_path, SR).get(tmp_path / "missing.wav")


def test_decoder_warnings_do_not_leak(tmp_path, clip):
    garbage = tmp_path / "garbage.ogg"
    garbage.write_bytes(b"OggS but not really")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DecodedAudioCache(tmp_path / "cache", SR).get(clip)
        # The audioread fallback's deprecation notices stay inside load_audio.
        with pytest.raises(AudioDecodeError, match=r"garbage\.ogg"):
            load_audio(garbage, SR)


def test_a_cached_read_hashes_the_file_once_while_it_is_unchanged(tmp_path, monkeypatch):
    import hashlib

    import audio_cnn.audio_io as audio_io

    clip = tmp_path / "clip.wav"
    sf.write(clip, np.full(1600, 0.25, dtype=np.float32), 16000)
    cache = DecodedAudioCache(tmp_path / "cache", 16000)
    hashes, blake2b = [], hashlib.blake2b
    monkeypatch.setattr(audio_io.hashlib, "blake2b", lambda **k: hashes.append(1) or blake2b(**k))
    for _ in range(3):
        cache.get(clip)
    assert len(hashes) == 1
    status = clip.stat()
    os.utime(clip, ns=(status.st_atime_ns, status.st_mtime_ns))  # touched: hashed again
    cache.get(clip)
    assert len(hashes) == 2
