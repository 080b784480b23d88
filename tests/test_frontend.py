"""LogMel front-end: shapes, agreement with librosa/torchaudio, alignment, inversion, errors."""

import dataclasses
import json

import librosa
import numpy as np
import pytest
import scipy.signal
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from audio_cnn.frontend import LogMel, LogMelConfig, librosa_logmel

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# A small front-end for property tests and gradient checks.
TINY = LogMelConfig(
    sample_rate=8000, n_fft=64, hop_length=24, n_mels=8, f_max=None, n_frames=6, chunk_seconds=0.1
)


def _signals(config: LogMelConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Test clips of one chunk: tones, a chirp, noise and a mixture (float64)."""
    sr, n = config.sample_rate, config.chunk_samples
    t = np.arange(n) / sr
    tones = 0.5 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3100 * t)
    chirp = 0.8 * scipy.signal.chirp(t, f0=50, t1=t[-1], f1=0.45 * sr, method="logarithmic")
    noise = 0.3 * rng.standard_normal(n)
    mixture = 0.5 * tones + 0.3 * chirp + 0.2 * noise * (t > t[-1] / 2)
    return {"tones": tones, "chirp": chirp, "noise": noise, "mixture": mixture}


def _assert_close_where_audible(ours: np.ndarray, reference: np.ndarray, config: LogMelConfig):
    """|diff| <= 1e-3 log10 units where the reference is within 4 decades of its peak."""
    audible = reference >= reference.max() - 4.0
    if config.clamp_min is not None:
        audible &= reference > config.clamp_min
    assert audible.sum() >= reference.shape[1]  # on average one compared bin per frame
    assert np.abs(ours - reference)[audible].max() <= 1e-3


@pytest.mark.parametrize(
    ("preset", "samples", "shape"), [("gtzan", 48000, 128), ("toy", 16000, 64)]
)
@pytest.mark.parametrize("rank", [2, 3])
@pytest.mark.parametrize("device", DEVICES)
def test_preset_shapes(preset, samples, shape, rank, device):
    logmel = LogMel.preset(preset).to(device)
    assert logmel.config.chunk_samples == samples
    waveform = torch.randn(3, samples, device=device)
    if rank == 3:
        waveform = waveform[:, None]
    out = logmel(waveform)
    assert out.shape == (3, 1, shape, shape)
    assert out.device == waveform.device and out.dtype == torch.float32


@pytest.mark.parametrize("preset", ["gtzan", "toy"])
def test_matches_librosa_reference(preset, rng):
    logmel = LogMel.preset(preset).double()
    for name, signal in _signals(logmel.config, rng).items():
        ours = logmel(torch.from_numpy(signal)[None])[0, 0].numpy()
        reference = librosa_logmel(signal, logmel.config)
        assert ours.shape == reference.shape, name
        _assert_close_where_audible(ours, reference, logmel.config)


def test_librosa_logmel_is_the_documented_pipeline(rng):
    signal = rng.standard_normal(48000)
    mel = librosa.feature.melspectrogram(
        y=signal, sr=16000, n_fft=800, hop_length=360, window="hann", center=True, power=1.0,
        n_mels=128, fmin=0.0, fmax=8000.0, htk=True, norm=None,
    )  # fmt: skip
    expected = np.maximum(np.log10(mel + 1e-7), -4.0)[:, 1:129]
    np.testing.assert_array_equal(librosa_logmel(signal), expected)


@pytest.mark.parametrize(
    "overrides",
    [
        {"power": 2.0, "htk": False, "norm": "slaney"},
        {"pad_mode": "reflect", "window": "hamming", "f_min": 60.0, "f_max": None, "power": 1.5},
        {"center": False, "n_frames": None, "drop_first_frames": 0, "clamp_min": None},
    ],
)
def test_options_match_librosa(overrides, rng):
    logmel = LogMel.preset("toy", **overrides).double()
    for signal in _signals(logmel.config, rng).values():
        ours = logmel(torch.from_numpy(signal)[None])[0, 0].numpy()
        reference = librosa_logmel(signal, logmel.config)
        assert ours.shape == reference.shape
        _assert_close_where_audible(ours, reference, logmel.config)


@pytest.mark.parametrize("preset", ["gtzan", "toy"])
def test_matches_torchaudio(preset, rng):
    transforms = pytest.importorskip("torchaudio.transforms")
    logmel = LogMel.preset(preset).double()
    c = logmel.config
    melspec = transforms.MelSpectrogram(
        sample_rate=c.sample_rate, n_fft=c.n_fft, hop_length=c.hop_length, f_min=c.f_min,
        f_max=c.f_max, n_mels=c.n_mels, window_fn=torch.hann_window, power=c.power, center=True,
        pad_mode="constant", norm=None, mel_scale="htk",
    ).double()  # fmt: skip
    batch = torch.from_numpy(np.stack(list(_signals(c, rng).values())))
    reference = torch.log10(melspec(batch) + c.log_offset).clamp(min=c.clamp_min)
    reference = reference[..., c.drop_first_frames : c.drop_first_frames + c.n_frames]
    ours = logmel(batch)[:, 0]
    for ours_item, reference_item in zip(ours.numpy(), reference.numpy(), strict=True):
        _assert_close_where_audible(ours_item, reference_item, c)


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 4),
    extra=st.integers(0, 200),
    keep_all=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_any_length_and_batch_gives_per_item_results(batch, extra, keep_all, seed):
    config = dataclasses.replace(TINY, n_frames=None) if keep_all else TINY
    logmel = LogMel(config)
    length = logmel.required_samples() + extra
    waveform = torch.randn(batch, length, generator=torch.Generator().manual_seed(seed))
    out = logmel(waveform)
    # Frame count as librosa's centred STFT gives it, minus the dropped frame.
    frames = 1 + length // config.hop_length - config.drop_first_frames
    assert out.shape == (batch, 1, config.n_mels, frames if keep_all else config.n_frames)
    assert logmel.n_output_frames(length) == out.shape[-1]
    for i in range(batch):
        torch.testing.assert_close(logmel(waveform[i : i + 1])[0], out[i], rtol=0, atol=1e-5)


def test_deterministic(rng):
    logmel = LogMel.preset("toy")
    waveform = torch.from_numpy(rng.standard_normal((5, 16000)).astype(np.float32))
    assert torch.equal(logmel(waveform), logmel(waveform))


def test_gradcheck_tiny_float64(rng):
    logmel = LogMel(TINY, clamp_min=None).double()
    length = logmel.required_samples() + 10
    waveform = torch.from_numpy(rng.standard_normal((2, length))).requires_grad_()
    assert torch.autograd.gradcheck(logmel, (waveform,), eps=1e-6, atol=1e-5, fast_mode=True)


def test_gradients_are_finite_on_silence_and_nonzero_on_sound():
    logmel = LogMel.preset("toy")
    waveform = torch.zeros(2, 16000)
    waveform[1].normal_(generator=torch.Generator().manual_seed(0))
    waveform.requires_grad_()
    out = logmel(waveform)
    out.sum().backward()
    assert torch.isfinite(waveform.grad).all()
    assert waveform.grad[1].abs().sum() > 0
    # The differentiable path computes the same values as the faster inference path.
    with torch.no_grad():
        torch.testing.assert_close(out, logmel(waveform))


@pytest.mark.parametrize("center", [True, False])
def test_frame_bounds_follow_hop_and_dropped_frames(center):
    logmel = LogMel.preset("gtzan", center=center)
    bounds = logmel.frame_bounds()
    assert bounds.shape == (128, 2) and bounds.dtype == np.int64
    first = 360 - (400 if center else 0)  # STFT frame 1 (frame 0 is dropped)
    np.testing.assert_array_equal(bounds[:, 0], first + 360 * np.arange(128))
    np.testing.assert_array_equal(bounds[:, 1] - bounds[:, 0], 800)
    np.testing.assert_array_equal(logmel.frame_centers(), bounds[:, 0] + 400)
    np.testing.assert_allclose(logmel.frame_times(), logmel.frame_centers() / 16000)
    assert logmel.frame_bounds(3).shape == (3, 2)
    if center:  # centred frames are centred on multiples of the hop
        np.testing.assert_array_equal(logmel.frame_centers(), 360 * np.arange(1, 129))


@pytest.mark.parametrize("sample", [0, 1, 239, 240, 241, 5000, 15359, 15999])
def test_impulse_shows_only_in_frames_containing_it(sample):
    # Without clamping, silence is exactly log10(log_offset) and any sound lies above it.
    logmel = LogMel.preset("toy", clamp_min=None)
    waveform = torch.zeros(1, 16000, dtype=torch.float64)
    waveform[0, sample] = 1.0
    loud = (logmel.double()(waveform)[0, 0] > -7.0 + 1e-9).any(dim=0).numpy()
    start, stop = logmel.frame_bounds().T
    # The periodic Hann window is 0 at a frame's first sample, so that sample is silent.
    np.testing.assert_array_equal(loud, (start < sample) & (sample < stop))


def test_frame_bounds_need_a_count_when_all_frames_are_kept():
    logmel = LogMel.preset("toy", n_frames=None)
    with pytest.raises(ValueError, match="n_output_frames"):
        logmel.frame_bounds()
    assert logmel.frame_bounds(logmel.n_output_frames(16000)).shape == (66, 2)


@pytest.mark.parametrize("preset", ["gtzan", "toy"])
def test_istft_inverts_stft_on_covered_samples(preset, rng):
    logmel = LogMel.preset(preset)
    length = logmel.config.chunk_samples
    waveform = torch.from_numpy(rng.standard_normal((2, length)))
    spec = logmel.stft(waveform)
    assert spec.shape == (2, logmel.n_freq, logmel.config.n_frames) and spec.is_complex()
    restored = logmel.istft(spec, length)
    assert restored.shape == (2, length)
    bounds = logmel.frame_bounds()
    lo, hi = max(bounds[0, 0] + 1, 0), min(bounds[-1, 1], length)
    torch.testing.assert_close(restored[:, lo:hi], waveform[:, lo:hi], rtol=0, atol=1e-6)
    assert torch.count_nonzero(restored[:, :lo]) == 0 and torch.count_nonzero(restored[:, hi:]) == 0


def test_stft_matches_forward(rng):
    logmel = LogMel.preset("toy").double()
    waveform = torch.from_numpy(rng.standard_normal((2, 16000)))
    spec = logmel.stft(waveform)
    mel = logmel.mel_filterbank @ spec.abs()
    expected = torch.log10(mel + 1e-7).clamp(min=-4.0)
    torch.testing.assert_close(logmel(waveform)[:, 0], expected)


def test_mel_filterbank_and_band_centres():
    logmel = LogMel.preset("gtzan")
    reference = librosa.filters.mel(sr=16000, n_fft=800, n_mels=128, htk=True, norm=None, fmax=8000)
    assert logmel.mel_filterbank.shape == (128, 401)
    np.testing.assert_allclose(logmel.mel_filterbank.numpy(), reference, atol=1e-6)
    centres = logmel.mel_frequencies()
    assert centres.shape == (128,) and np.all(np.diff(centres) > 0)
    assert 0.0 < centres[0] and centres[-1] < 8000.0
    # Each triangle peaks within one FFT bin (20 Hz) of its centre.
    peaks = np.fft.rfftfreq(800, 1 / 16000)[reference.argmax(axis=1)]
    assert np.abs(peaks - centres).max() < 20.0


def test_band_centres_span_the_nyquist_range_when_f_max_is_none():
    centres = LogMel.preset("toy", f_min=100.0, f_max=None).mel_frequencies()
    assert centres.shape == (64,) and 100.0 < centres[0] and centres[-1] < 8000.0
    assert centres[-1] > LogMel.preset("toy", f_min=100.0, f_max=7000.0).mel_frequencies()[-1]


@pytest.mark.parametrize("window", ["hann", "hamming", "blackman", "bartlett"])
def test_windows_are_periodic_like_scipy(window):
    logmel = LogMel.preset("toy", window=window)
    expected = scipy.signal.get_window(window, 480, fftbins=True)
    np.testing.assert_allclose(logmel.window.numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_output_dtype_follows_input(dtype, rng):
    logmel = LogMel.preset("toy")
    waveform = torch.from_numpy(rng.uniform(-1, 1, (2, 16000)))
    out = logmel(waveform.to(dtype))
    assert out.dtype == dtype
    reference = logmel(waveform.float())
    torch.testing.assert_close(out.float(), reference, rtol=0, atol=0.05)


def test_buffers_follow_the_module_and_are_not_saved():
    logmel = LogMel.preset("toy").to("meta")
    assert logmel.window.device.type == "meta" and logmel.mel_filterbank.device.type == "meta"
    assert logmel.state_dict() == {}
    with pytest.raises(ValueError, match=r"logmel\.to"):
        logmel(torch.zeros(1, 16000))


@pytest.mark.parametrize("preset", ["gtzan", "toy"])
def test_config_round_trips_through_json(preset):
    config = LogMelConfig.preset(preset)
    restored = LogMelConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    assert LogMel(restored).config == config


def test_presets_and_overrides():
    assert LogMelConfig.preset("gtzan") == LogMelConfig()
    toy = LogMelConfig.preset("toy")
    assert (toy.n_fft, toy.hop_length, toy.n_mels, toy.n_frames) == (480, 240, 64, 64)
    assert LogMel(toy, n_frames=32).config.n_frames == 32
    with pytest.raises(ValueError, match=r"'gtzan', 'toy'"):
        LogMelConfig.preset("speech")
    assert LogMelConfig.from_dict({"f_min": 0, "n_mels": 64}) == LogMelConfig(n_mels=64)


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"\['hop'\]"):
        LogMelConfig.from_dict({"hop": 100})
    with pytest.raises(TypeError, match="from_dict"):
        LogMel({"n_mels": 64})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"n_fft": 1}, "n_fft"),
        ({"hop_length": 0}, "hop_length"),
        ({"sample_rate": 16000.0}, "sample_rate"),
        ({"n_mels": True}, "n_mels"),
        ({"n_frames": 0}, "n_frames"),
        ({"f_max": 9000.0}, "f_max"),
        ({"f_min": 8000.0}, "f_min"),
        ({"power": 0.0}, "power"),
        ({"log_offset": float("nan")}, "log_offset"),
        ({"clamp_min": float("-inf")}, "clamp_min"),
        ({"window": "kaiser"}, "window"),
        ({"norm": "l2"}, "norm"),
        ({"pad_mode": "wrap"}, "pad_mode"),
        ({"htk": 1}, "htk"),
        ({"chunk_seconds": 2.5}, "46080 samples"),
    ],
)
def test_config_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        LogMelConfig(**overrides)


def test_required_samples():
    assert LogMel.preset("gtzan").required_samples() == 128 * 360
    assert LogMel.preset("toy").required_samples() == 64 * 240
    assert LogMel.preset("toy", center=False).required_samples(2) == 2 * 240 + 480
    logmel = LogMel(TINY)
    logmel(torch.zeros(1, logmel.required_samples()))
    with pytest.raises(ValueError, match=f"at least {logmel.required_samples()}"):
        logmel(torch.zeros(1, logmel.required_samples() - 1))


def test_bad_waveforms_raise_clear_errors():
    logmel = LogMel(TINY)
    ok = torch.zeros(3, TINY.chunk_samples)
    nan, inf = ok.clone(), ok.clone()
    nan[2, 5] = float("nan")
    inf[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"batch item\(s\) \[2\]"):
        logmel(nan)
    with pytest.raises(ValueError, match=r"batch item\(s\) \[0\]"):
        logmel(inf)
    with pytest.raises(ValueError, match=r"waveform\[None\]"):
        logmel(ok[0])
    with pytest.raises(ValueError, match="mono"):
        logmel(torch.zeros(3, 2, TINY.chunk_samples))
    with pytest.raises(ValueError, match="empty"):
        logmel(ok[:0])
    with pytest.raises(TypeError, match="floating"):
        logmel(torch.zeros(3, TINY.chunk_samples, dtype=torch.int16))
    with pytest.raises(TypeError, match="ndarray"):
        logmel(np.zeros((3, TINY.chunk_samples)))
    with pytest.raises(TypeError, match="complex"):
        logmel.istft(torch.zeros(1, logmel.n_freq, 4), 100)
    with pytest.raises(ValueError, match=r"\(B, 33, frames >= 1\)"):
        logmel.istft(torch.zeros(1, 30, 4, dtype=torch.complex64), 100)
