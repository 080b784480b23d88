"""Sonification of concept heatmaps: alignment, reconstruction, masks, loudness, WAV files."""

import librosa
import numpy as np
import pytest
import scipy.ndimage
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from audio_cnn.frontend import LogMel, LogMelConfig
from audio_concepts.sonification import (
    mel_to_stft,
    sonification_masks,
    sonify,
    sonify_to_files,
    write_wav,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# A small front-end (0.5 s at 8 kHz → 32 × 30) so that most tests run in milliseconds.
SMALL = LogMelConfig(
    sample_rate=8000, n_fft=256, hop_length=128, n_mels=32, f_max=None, n_frames=30,
    chunk_seconds=0.5,
)  # fmt: skip
FAST = settings(max_examples=15, deadline=None)


@pytest.fixture(scope="module")
def small() -> LogMel:
    return LogMel(SMALL)


def _tones(config: LogMelConfig) -> np.ndarray:
    """A mixture of three tones (440 Hz, 1234 Hz, 3100 Hz), one chunk long, float32."""
    t = np.arange(config.chunk_samples) / config.sample_rate
    signal = (
        0.5 * np.sin(2 * np.pi * 440 * t)
        + 0.3 * np.sin(2 * np.pi * 1234 * t + 1)
        + 0.2 * np.sin(2 * np.pi * 3100 * t + 2)
    )
    return signal.astype(np.float32)


def _ones(logmel: LogMel, concepts: int = 1) -> np.ndarray:
    return np.ones((concepts, 1, logmel.config.n_mels, logmel.config.n_frames), np.float32)


def _covered(logmel: LogMel) -> np.ndarray:
    """Samples under a kept frame with non-zero window weight, as a boolean mask."""
    length = logmel.config.chunk_samples
    covered = np.zeros(length, bool)
    for start, stop in logmel.frame_bounds():
        # The periodic Hann window is 0 at its first sample only.
        covered[max(start + 1, 0) : min(stop, length)] = True
    return covered


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


# ----- alignment ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "where"),
    # GTZAN's first kept frame starts 40 samples before the clip; toy's starts at sample 0.
    [("toy", "first"), ("toy", "middle"), ("toy", "last"), ("gtzan", "first"), ("gtzan", "last")],
)
def test_one_frame_sounds_exactly_on_its_samples(preset, where, rng):
    logmel = LogMel.preset(preset)
    c = logmel.config
    frame = {"first": 0, "middle": c.n_frames // 2, "last": c.n_frames - 1}[where]
    noise = rng.standard_normal(c.chunk_samples).astype(np.float32)
    heatmap = np.zeros((1, 1, c.n_mels, c.n_frames), np.float32)
    heatmap[..., frame] = 1.0
    audio = sonify(noise, heatmap, logmel, percentile=0, smoothing=0, method="pinv")[0]
    start, stop = logmel.frame_bounds()[frame]
    inside = np.zeros(c.chunk_samples, bool)
    inside[max(start, 0) : min(stop, c.chunk_samples)] = True
    assert np.abs(audio[~inside]).max() == 0
    # The window peak (frame centre) carries sound; an off-by-one frame would be silent there.
    centre = logmel.frame_centers()[frame]
    assert np.abs(audio[centre - 20 : centre + 20]).max() > 0.1 * np.abs(noise).max()


@pytest.mark.parametrize("preset", ["toy", "gtzan"])
def test_tone_burst_is_heard_where_it_is(preset, rng):
    logmel = LogMel.preset(preset)
    c = logmel.config
    hop, length = c.hop_length, c.chunk_samples
    burst = slice(length // 3, length // 3 + 2 * hop)
    t = np.arange(burst.stop - burst.start) / c.sample_rate
    signal = 1e-3 * rng.standard_normal(length).astype(np.float32)
    signal[burst] += np.sin(2 * np.pi * 1000 * t) * np.hanning(t.size)
    bounds = logmel.frame_bounds()
    hit = (bounds[:, 0] < burst.stop) & (bounds[:, 1] > burst.start)
    heatmaps = np.zeros((2, 1, c.n_mels, c.n_frames), np.float32)
    heatmaps[0, ..., hit] = 1.0  # the frames holding the burst
    heatmaps[1, ..., np.flatnonzero(hit) + 3 * hit.sum()] = 1.0  # frames well after it
    audio = sonify(signal, heatmaps, logmel, percentile=0, smoothing=0)
    near = slice(burst.start - hop, burst.stop + hop)
    energy = np.square(audio, dtype=np.float64)
    assert energy[0, near].sum() > 0.97 * energy[0].sum()
    # Wrong frames: the burst itself is silent (those frames do not overlap it).
    assert np.abs(audio[1, burst]).max() == 0
    assert energy[1].sum() > 0  # ... while the noise they do hold is sonified


# ----- reconstruction and the mel inverse ---------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "method", "minimum"),
    [("toy", "nnls", 0.95), ("toy", "pinv", 0.9), ("gtzan", "nnls", 0.95)],
)
def test_all_ones_mask_reconstructs_the_original(preset, method, minimum):
    logmel = LogMel.preset(preset)
    signal = _tones(logmel.config)
    audio = sonify(signal, _ones(logmel), logmel, percentile=0, smoothing=0, method=method)[0]
    covered = _covered(logmel)
    assert np.corrcoef(audio[covered], signal[covered])[0, 1] > minimum
    assert np.abs(audio).max() < 1.5 * np.abs(signal).max()  # no blow-up at the edges
    assert np.all(audio[~covered] == 0)


def test_mel_to_stft_fits_as_well_as_librosa(small, rng):
    c = small.config
    spec = small.stft(torch.from_numpy(rng.standard_normal((1, c.chunk_samples))))
    basis = small.mel_filterbank.double()
    # A few frames keep librosa's L-BFGS solver (seconds per clip) quick.
    mel = (basis @ spec.abs())[0, :, :4] * torch.from_numpy(rng.uniform(0, 1, (c.n_mels, 4)))
    ours = mel_to_stft(mel, basis, n_iter=500, tol=0)
    reference = librosa.feature.inverse.mel_to_stft(
        mel.numpy(), sr=c.sample_rate, n_fft=c.n_fft, power=1.0, htk=True, norm=None
    )

    def misfit(x):
        return float(np.linalg.norm(basis.numpy() @ np.asarray(x) - mel.numpy()))

    assert ours.shape == (small.n_freq, 4) and bool((ours >= 0).all())
    assert misfit(ours) <= 1.01 * misfit(reference)
    assert misfit(mel_to_stft(mel, basis, method="pinv")) >= misfit(ours)


@pytest.mark.parametrize("power", [1.0, 2.0])
def test_mel_to_stft_inverts_an_exact_mel_spectrogram(small, power, rng):
    spec = small.stft(torch.from_numpy(rng.standard_normal((2, small.config.chunk_samples))))
    basis = small.mel_filterbank.double()
    mel = basis @ spec.abs().pow(power)
    magnitude = mel_to_stft(mel, basis, power=power, n_iter=300)
    assert magnitude.shape == spec.shape and magnitude.dtype == torch.float64
    misfit = torch.linalg.norm(basis @ magnitude.pow(power) - mel) / torch.linalg.norm(mel)
    assert misfit < 1e-2


def test_mel_to_stft_rejects_bad_input(small):
    basis = small.mel_filterbank
    good = torch.ones(SMALL.n_mels, 4)
    with pytest.raises(ValueError, match="non-negative"):
        mel_to_stft(-good, basis)
    with pytest.raises(ValueError, match="non-negative"):
        mel_to_stft(good * torch.nan, basis)
    with pytest.raises(ValueError, match="does not match"):
        mel_to_stft(good[1:], basis)
    with pytest.raises(ValueError, match="method"):
        mel_to_stft(good, basis, method="lbfgs")
    with pytest.raises(ValueError, match="power"):
        mel_to_stft(good, basis, power=0)
    with pytest.raises(ValueError, match="n_iter"):
        mel_to_stft(good, basis, n_iter=0)
    with pytest.raises(ValueError, match="tol"):
        mel_to_stft(good, basis, tol=float("nan"))


# ----- masks -------------------------------------------------------------------------------


@FAST
@given(seed=st.integers(0, 2**32 - 1), sigma=st.floats(0, 3), percentile=st.floats(0, 100))
def test_soft_mask_is_the_documented_recipe(seed, sigma, percentile):
    heatmap = np.random.default_rng(seed).standard_normal((12, 9))
    mask = sonification_masks(torch.from_numpy(heatmap), percentile, sigma).numpy()
    rectified = np.maximum(heatmap, 0)
    threshold = np.percentile(rectified, percentile)
    kept = np.where((rectified >= threshold) & (rectified > 0), rectified, 0)
    expected = scipy.ndimage.gaussian_filter(kept, sigma, mode="nearest", truncate=4.0)
    expected = expected / expected.max() if expected.max() > 0 else expected
    np.testing.assert_allclose(mask, expected, atol=1e-12)
    assert mask.min() >= 0 and mask.max() <= 1


@FAST
@given(seed=st.integers(0, 2**32 - 1), low=st.floats(0, 95), step=st.floats(1, 50))
def test_higher_percentile_keeps_fewer_bins(seed, low, step):
    heatmaps = torch.from_numpy(np.random.default_rng(seed).standard_normal((3, 16, 16)))
    for mode in ("soft", "binary"):
        loose = sonification_masks(heatmaps, low, 0, mode) > 0
        strict = sonification_masks(heatmaps, min(low + step, 100), 0, mode) > 0
        assert bool((strict <= loose).all())  # strict ⊆ loose
        assert bool(strict.flatten(1).any(1).all())  # the maximum always stays
    kept = (sonification_masks(heatmaps, low, 0) > 0).flatten(1).double().mean(1)
    positive = (heatmaps > 0).flatten(1).double().mean(1)
    assert bool((kept <= torch.clamp(positive, max=1 - low / 100) + 1 / 256 + 1e-12).all())


def test_smoothing_widens_the_mask_and_binary_mode_is_flat():
    heatmap = torch.zeros(20, 20, dtype=torch.float64)
    heatmap[10, 10], heatmap[4, 4] = 2.0, 1.0
    sharp = sonification_masks(heatmap, 0, 0)
    assert int((sharp > 0).sum()) == 2 and float(sharp[4, 4]) == 0.5
    assert float(sonification_masks(heatmap, 0, 0, "binary")[4, 4]) == 1.0
    support = [int((sonification_masks(heatmap, 0, s) > 0).sum()) for s in (0.5, 1.0, 2.0)]
    assert support == sorted(support) and support[0] > 2
    wide_in_time = sonification_masks(heatmap, 0, (0, 2))
    assert bool((wide_in_time[9] == 0).all()) and int((wide_in_time[10] > 0).sum()) > 1


def test_mask_of_a_map_without_positive_bins_is_zero():
    heatmaps = -torch.rand(2, 5, 5)
    heatmaps[1] = 0
    for mode in ("soft", "binary"):
        assert bool((sonification_masks(heatmaps, 50, 1.0, mode) == 0).all())


def test_masks_reject_bad_input():
    good = torch.rand(4, 4)
    with pytest.raises(ValueError, match="percentile"):
        sonification_masks(good, -1)
    with pytest.raises(ValueError, match="mask"):
        sonification_masks(good, mode="hard")
    with pytest.raises(ValueError, match="smoothing"):
        sonification_masks(good, smoothing=float("inf"))
    with pytest.raises(ValueError, match="NaN"):
        sonification_masks(good * torch.nan)
    with pytest.raises(ValueError, match="non-empty"):
        sonification_masks(good[:0])


# ----- loudness, batching, silence ----------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_loudness_matches_the_original_on_covered_samples(small, device, rng):
    logmel = LogMel(SMALL).to(device)
    signal = _tones(SMALL)
    heatmaps = rng.standard_normal((3, 1, SMALL.n_mels, SMALL.n_frames))
    audio = sonify(torch.from_numpy(signal).to(device), heatmaps, logmel)
    covered = _covered(small)
    for sound in audio:
        assert _rms(sound[covered]) == pytest.approx(_rms(signal[covered]), rel=1e-4)
    raw = sonify(signal, heatmaps, small, match_loudness=False)
    assert all(_rms(r[covered]) < 0.9 * _rms(signal[covered]) for r in raw)


def test_batched_equals_one_by_one(small, rng):
    c = small.config
    signals = rng.standard_normal((3, c.chunk_samples)).astype(np.float32)
    signals[1] *= 0.01  # a quiet clip among loud ones
    heatmaps = rng.standard_normal((3, 4, 1, c.n_mels, c.n_frames)).astype(np.float32)
    batched = sonify(signals, heatmaps, small, percentile=70, smoothing=(1.0, 0.5))
    assert batched.shape == (3, 4, c.chunk_samples) and batched.dtype == np.float32
    for i in range(3):
        alone = sonify(signals[i], heatmaps[i], small, percentile=70, smoothing=(1.0, 0.5))
        np.testing.assert_allclose(batched[i], alone, atol=2e-3 * np.abs(alone).max())
        single = sonify(signals[i], heatmaps[i, 1:2], small, percentile=70, smoothing=(1.0, 0.5))
        np.testing.assert_allclose(batched[i, 1], single[0], atol=2e-3 * np.abs(alone).max())


def test_silence_in_silence_out_without_nan(small, rng):
    c = small.config
    signal = _tones(c)
    heatmaps = np.zeros((3, 1, c.n_mels, c.n_frames))
    heatmaps[1] = -1.0  # negative evidence only
    heatmaps[2, ..., 5] = 1.0
    audio = sonify(np.stack([signal, 0 * signal]), np.stack([heatmaps, heatmaps]), small)
    assert np.isfinite(audio).all()
    assert np.all(audio[0, :2] == 0) and np.all(audio[1] == 0)
    assert _rms(audio[0, 2]) > 0


@FAST
@given(
    seed=st.integers(0, 2**32 - 1),
    percentile=st.floats(0, 100),
    smoothing=st.floats(0, 3),
    mask=st.sampled_from(["soft", "binary"]),
)
def test_any_heatmap_gives_finite_audio_at_the_original_loudness_or_silence(
    small, seed, percentile, smoothing, mask
):
    rng = np.random.default_rng(seed)
    c = small.config
    signal = rng.standard_normal(c.chunk_samples) * rng.uniform(1e-4, 10)
    heatmaps = rng.standard_normal((2, 1, c.n_mels, c.n_frames)) * rng.uniform(1e-6, 1e6)
    options = {"percentile": percentile, "smoothing": smoothing, "mask": mask, "n_iter": 30}
    audio = sonify(signal, heatmaps, small, **options)
    assert audio.shape == (2, c.chunk_samples) and np.isfinite(audio).all()
    covered = _covered(small)
    target = _rms(signal[covered])
    for sound in audio:
        assert _rms(sound[covered]) == pytest.approx(target, rel=1e-3) or not sound.any()


def test_float64_and_tensor_inputs(small, rng):
    c = small.config
    signal = rng.standard_normal(c.chunk_samples)
    heatmaps = rng.standard_normal((2, 1, c.n_mels, c.n_frames))
    from_numpy = sonify(signal, heatmaps, small)
    from_torch = sonify(torch.from_numpy(signal), torch.from_numpy(heatmaps), small)
    assert from_numpy.dtype == np.float32
    np.testing.assert_array_equal(from_numpy, from_torch)
    tracked = torch.from_numpy(signal).requires_grad_()  # e.g. straight from an attribution
    np.testing.assert_array_equal(sonify(tracked, heatmaps, small), from_numpy)


# ----- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda w, h: (w, h[..., 1:]), "frames"),
        (lambda w, h: (w, h[..., 1:, :]), "mel bands"),
        (lambda w, h: (w, h[:, 0]), "shape"),
        (lambda w, h: (w, h[:0]), "no concepts"),
        (lambda w, h: (np.stack([w, w]), h), "for 1 inputs but the waveform batch has 2"),
        (lambda w, h: (np.stack([w, w]), np.stack([h, h, h])), "3 inputs"),
        (lambda w, h: (w, np.where(h > 1, np.nan, h)), "NaN"),
        (lambda w, h: (w[:100], h), "samples"),
        (lambda w, h: (np.where(w > 2, np.inf, w), h), "NaN or Inf"),
        (lambda w, h: (w[:0], h), "T >= 1"),
    ],
)
def test_bad_shapes_and_values_are_named(small, rng, change, match):
    signal = rng.standard_normal(SMALL.chunk_samples).astype(np.float32)
    heatmaps = rng.standard_normal((2, 1, SMALL.n_mels, SMALL.n_frames)).astype(np.float32)
    waveform, maps = change(signal, heatmaps)
    with pytest.raises(ValueError, match=match):
        sonify(waveform, maps, small)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"percentile": 101}, "percentile"),
        ({"percentile": float("nan")}, "percentile"),
        ({"smoothing": -1}, "smoothing"),
        ({"smoothing": (1, 2, 3)}, "smoothing"),
        ({"mask": "hard"}, "mask"),
        ({"method": "griffinlim"}, "method"),
        ({"n_iter": 0}, "n_iter"),
        ({"tol": -1}, "tol"),
        ({"window_floor": 1.0}, "window_floor"),
    ],
)
def test_bad_options_are_named(small, options, match):
    with pytest.raises(ValueError, match=match):
        sonify(_tones(SMALL), _ones(small), small, **options)


def test_integer_waveform_is_refused(small):
    pcm = (_tones(SMALL) * 32767).astype(np.int16)
    with pytest.raises(TypeError, match="floating"):
        sonify(pcm, _ones(small), small)


# ----- WAV files ----------------------------------------------------------------------------


def test_wav_round_trip(tmp_path, rng):
    audio = (0.5 * rng.uniform(-1, 1, 1000)).astype(np.float32)
    assert write_wav(tmp_path / "a.wav", audio, 8000) == 1.0
    read, rate = sf.read(tmp_path / "a.wav", dtype="float32")
    assert rate == 8000
    np.testing.assert_allclose(read, audio, atol=1 / 32767)
    write_wav(tmp_path / "b.wav", torch.from_numpy(audio), 8000, subtype="FLOAT")
    np.testing.assert_array_equal(sf.read(tmp_path / "b.wav", dtype="float32")[0], audio)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "b.wav"]  # no temp files


def test_wav_peaks_are_scaled_or_clipped(tmp_path):
    audio = np.array([0.0, 2.0, -1.0, 0.5])
    gain = write_wav(tmp_path / "scaled.wav", audio, 8000, subtype="FLOAT")
    assert gain == pytest.approx(0.99 / 2)
    np.testing.assert_allclose(sf.read(tmp_path / "scaled.wav")[0], audio * gain, atol=1e-7)
    assert write_wav(tmp_path / "clipped.wav", audio, 8000, peak="clip", subtype="FLOAT") == 1.0
    np.testing.assert_allclose(
        sf.read(tmp_path / "clipped.wav")[0], [0.0, 0.99, -0.99, 0.5], atol=1e-7
    )


@pytest.mark.parametrize(
    ("path", "audio", "rate", "error", "match"),
    [
        ("x.wav", np.array([0.1, np.nan]), 8000, ValueError, "NaN"),
        ("x.wav", np.zeros((2, 10)), 8000, ValueError, "mono"),
        ("x.wav", np.zeros(0), 8000, ValueError, "mono"),
        ("x.wav", np.zeros(10, np.int16), 8000, TypeError, "floating"),
        ("x.flac", np.zeros(10), 8000, ValueError, ".wav"),
        ("x.wav", np.zeros(10), 0, ValueError, "sample_rate"),
        ("x.wav", np.zeros(10), 8000.0, TypeError, "sample_rate"),
        ("x.wav", np.zeros(10), 8000, ValueError, "subtype 'MP3'"),
    ],
)
def test_wav_bad_input_keeps_the_old_file(tmp_path, path, audio, rate, error, match):
    target = tmp_path / path
    target.write_bytes(b"old")
    subtype = "MP3" if "subtype" in match else "PCM_16"
    with pytest.raises(error, match=match):
        write_wav(target, audio, rate, subtype=subtype)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == [path]


def test_sonify_to_files_keeps_relative_levels(tmp_path, small, rng):
    c = small.config
    signals = 3 * rng.standard_normal((2, c.chunk_samples))  # peaks well above 1
    heatmaps = rng.standard_normal((2, 3, 1, c.n_mels, c.n_frames))
    names = ["a", "b", "residual"]
    paths = sonify_to_files(
        tmp_path / "out", "clip", signals, heatmaps, small, concept_names=names, subtype="FLOAT",
        percentile=50,
    )  # fmt: skip
    expected = [f"clip_{i}_{n}.wav" for i in range(2) for n in ["original", *names]]
    assert [p.name for p in paths] == expected
    audio = sonify(signals, heatmaps, small, percentile=50)
    for i in range(2):
        read = [sf.read(p)[0] for p in paths[4 * i : 4 * i + 4]]
        assert max(np.abs(r).max() for r in read) == pytest.approx(0.99, rel=1e-6)
        gain = read[0][100] / signals[i, 100]
        np.testing.assert_allclose(read[1:], audio[i] * gain, atol=1e-6)


def test_sonify_to_files_rejects_unsafe_names(tmp_path, small):
    with pytest.raises(ValueError, match="safe file names"):
        sonify_to_files(tmp_path, "../up", _tones(SMALL), _ones(small), small)
    with pytest.raises(ValueError, match="2 names for 1"):
        sonify_to_files(tmp_path, "x", _tones(SMALL), _ones(small), small, concept_names=["a", "b"])
    with pytest.raises(ValueError, match="unique"):
        sonify_to_files(tmp_path, "x", _tones(SMALL), _ones(small, 2), small, concept_names="aa")
    assert not any(tmp_path.iterdir())
