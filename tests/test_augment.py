"""Tests for audio_cnn.augment: seedable waveform transforms, SpecAugment, precomputation."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from audio_cnn.augment import (
    DEFAULT_AUGMENTATION,
    AddNoise,
    Compose,
    PitchShift,
    PrecomputedVariants,
    RandomFilter,
    RandomGain,
    SpecAugment,
    TimeStretch,
    WaveformAugmentation,
    build_augmentation,
    precompute_variants,
)

SR = 16000
FAST = settings(max_examples=25, deadline=None)
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


def _tone(freq: float, seconds: float = 0.25, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64)))


def _peak_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / SR)[np.argmax(spectrum)])


def _music(seconds: float = 0.25) -> np.ndarray:
    """A deterministic test clip with several partials and a little noise."""
    noise = np.random.default_rng(123).standard_normal(int(seconds * SR)).astype(np.float32)
    return _tone(220, seconds) + _tone(1800, seconds, 0.2) + 0.05 * noise


TRANSFORMS = {
    "gain": RandomGain(),
    "white_noise": AddNoise(),
    "pink_noise": AddNoise(color="either"),
    "filter": RandomFilter(sample_rate=SR),
    "pitch_shift": PitchShift(sample_rate=SR),
    "time_stretch": TimeStretch(),
    "compose": Compose(
        [
            TimeStretch(p=0.5),
            PitchShift(sample_rate=SR, p=0.5),
            RandomFilter(sample_rate=SR),
            RandomGain(p=0.5),
            AddNoise(p=0.5),
        ]
    ),
}
ALL = pytest.mark.parametrize("transform", TRANSFORMS.values(), ids=TRANSFORMS.keys())


# ---------------------------------------------------------------------------------------------
# Contract shared by every waveform transform


@ALL
def test_same_seed_same_output_and_different_seeds_differ(transform):
    x = _music()
    first = transform(x, np.random.default_rng(7))
    np.testing.assert_array_equal(first, transform(x, np.random.default_rng(7)))
    assert any(
        not np.array_equal(first, transform(x, np.random.default_rng(seed))) for seed in range(3)
    )


@ALL
def test_shape_dtype_and_input_untouched(transform):
    x = _music().astype(np.float64)
    before = x.copy()
    y = transform(x, np.random.default_rng(0))
    assert y.shape == x.shape
    assert y.dtype == np.float32
    np.testing.assert_array_equal(x, before)


@ALL
def test_silent_input_stays_finite(transform):
    y = transform(np.zeros(4000, np.float32), np.random.default_rng(0))
    assert np.isfinite(y).all()
    assert np.abs(y).max() < 1e-6


@pytest.mark.parametrize(
    "transform", [t for t in TRANSFORMS.values() if isinstance(t, WaveformAugmentation)]
)
def test_probability_zero_is_identity(transform):
    x = _music()
    np.testing.assert_array_equal(
        dataclasses.replace(transform, p=0.0)(x, np.random.default_rng(0)), x
    )


@FAST
@given(p=st.floats(0.1, 0.9), seed=st.integers(0, 2**32 - 1))
def test_probability_is_the_applied_fraction(p, seed):
    halve = RandomGain(-6.0206, -6.0206, p=p)
    rng = np.random.default_rng(seed)
    x = np.ones(4, np.float32)
    applied = np.mean([halve(x, rng)[0] < 0.75 for _ in range(2000)])
    assert abs(applied - p) < 0.06  # over 5 binomial standard deviations


@pytest.mark.parametrize(
    ("x", "error", "match"),
    [
        (np.array([0.0, np.nan, 0.0]), ValueError, "NaN or Inf"),
        (np.array([0.0, np.inf]), ValueError, "NaN or Inf"),
        (np.zeros((2, 100)), ValueError, "mono"),
        (np.zeros(100, np.int16), TypeError, "floating"),
        (np.zeros(0, np.float32), ValueError, "non-empty"),
        ([0.0, 0.1], TypeError, "numpy array"),
    ],
)
@ALL
def test_bad_waveforms_raise(transform, x, error, match):
    with pytest.raises(error, match=match):
        transform(x, np.random.default_rng(0))


@pytest.mark.parametrize("rng", [0, np.random.RandomState(0), None])
def test_rng_must_be_a_generator(rng):
    with pytest.raises(TypeError, match=r"numpy\.random\.Generator"):
        RandomGain()(_music(), rng)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: RandomGain(3, -12), "ordered"),
        (lambda: RandomGain(p=1.5), r"\[0, 1\]"),
        (lambda: AddNoise(p=-0.1), r"\[0, 1\]"),
        (lambda: AddNoise(snr_db=(40, 10)), "ordered"),
        (lambda: AddNoise(snr_db=(math.nan, 10)), "finite"),
        (lambda: AddNoise(snr_db=(10,)), "pair"),
        (lambda: AddNoise(snr_db="10-40"), "pair"),
        (lambda: AddNoise(color="blue"), "color"),
        (lambda: RandomFilter(kind="bandpass", sample_rate=SR), "kind"),
        (lambda: RandomFilter(lowpass_hz=(1000, 8000), sample_rate=SR), "between 0.0 and 8000"),
        (lambda: RandomFilter(highpass_hz=(0, 100), sample_rate=SR), "between"),
        (lambda: RandomFilter(sample_rate=0), "sample_rate"),
        (lambda: RandomFilter(order=0, sample_rate=SR), "order"),
        (lambda: PitchShift(sample_rate=-16000), "sample_rate"),
        (lambda: PitchShift(semitones=(12, -12), sample_rate=SR), "ordered"),
        (lambda: TimeStretch(rate=(0.0, 1.2)), "between 0.0"),
        (lambda: TimeStretch(n_fft=0), "n_fft"),
    ],
)
def test_bad_parameters_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_sample_rate_is_required():
    with pytest.raises(TypeError, match="sample_rate"):
        PitchShift()


# ---------------------------------------------------------------------------------------------
# What each transform does, measured


@FAST
@given(seed=st.integers(0, 2**32 - 1), low=st.floats(-30, 10), width=st.floats(0, 20))
def test_gain_in_decibels_lies_in_range(seed, low, width):
    x = _music()
    y = RandomGain(low, low + width)(x, np.random.default_rng(seed))
    gain_db = 10 * math.log10(_power(y) / _power(x))
    assert low - 1e-3 <= gain_db <= low + width + 1e-3


def test_fixed_gain_is_exact():
    x = _music()
    y = RandomGain(-6, -6)(x, np.random.default_rng(0))
    assert 10 * math.log10(_power(y) / _power(x)) == pytest.approx(-6, abs=1e-4)


@FAST
@given(seed=st.integers(0, 2**32 - 1), color=st.sampled_from(["white", "pink", "either"]))
def test_noise_snr_lies_in_range(seed, color):
    x = _music()
    y = AddNoise(snr_db=(10, 40), color=color)(x, np.random.default_rng(seed))
    snr_db = 10 * math.log10(_power(x) / _power(y - x))
    assert 10 - 0.01 <= snr_db <= 40 + 0.01


@pytest.mark.parametrize("color", ["white", "pink"])
def test_fixed_noise_snr_is_met(color):
    x = _music()
    y = AddNoise(snr_db=(20, 20), color=color)(x, np.random.default_rng(0))
    assert 10 * math.log10(_power(x) / _power(y - x)) == pytest.approx(20, abs=0.01)


def test_pink_noise_has_falling_spectrum_and_white_is_flat():
    x = np.full(8000, 0.1, np.float32)  # DC only, so the difference is the noise

    def band_ratio(color: str) -> float:
        noise = AddNoise(snr_db=(0, 0), color=color)(x, np.random.default_rng(1)) - x
        power = np.abs(np.fft.rfft(noise)) ** 2
        freqs = np.fft.rfftfreq(noise.size, 1 / SR)
        low = power[(freqs >= 100) & (freqs < 200)].mean()
        high = power[(freqs >= 4000) & (freqs < 8000)].mean()
        return float(low / high)

    assert band_ratio("pink") > 10  # 1/f predicts about 40
    assert 0.5 < band_ratio("white") < 2


@pytest.mark.parametrize(
    ("kind", "stop_hz", "pass_hz"), [("highpass", 200, 4000), ("lowpass", 4000, 200)]
)
def test_filter_attenuates_stop_band(kind, stop_hz, pass_hz):
    filt = RandomFilter(kind, highpass_hz=(1000, 1000), lowpass_hz=(1000, 1000), sample_rate=SR)
    middle = slice(1000, 3000)  # away from the edges, where padding acts

    def gain_db(freq: float) -> float:
        x = _tone(freq)
        y = filt(x, np.random.default_rng(0))
        return 10 * math.log10(_power(y[middle]) / _power(x[middle]))

    assert gain_db(stop_hz) < -40
    assert gain_db(pass_hz) > -1


def test_filter_either_uses_both_kinds():
    filt = RandomFilter("either", highpass_hz=(1000, 1000), lowpass_hz=(1000, 1000), sample_rate=SR)
    low, high = _tone(200), _tone(4000)
    kinds = set()
    for seed in range(20):
        y = filt(low + high, np.random.default_rng(seed))
        kinds.add("lowpass" if _power(y - low) < 0.01 * _power(low) else "highpass")
        assert min(_power(y - low), _power(y - high)) < 0.01 * _power(low)
    assert kinds == {"lowpass", "highpass"}


def test_filter_handles_very_short_clips():
    y = RandomFilter(sample_rate=SR)(np.array([0.5, -0.5], np.float32), np.random.default_rng(0))
    assert y.shape == (2,)
    assert np.isfinite(y).all()


@pytest.mark.parametrize("semitones", [5.0, -7.0])
def test_pitch_shift_moves_the_peak_by_the_semitone_factor(semitones):
    x = _tone(1000, seconds=0.5)
    y = PitchShift((semitones, semitones), sample_rate=SR)(x, np.random.default_rng(0))
    expected = 1000 * 2 ** (semitones / 12)
    assert _peak_hz(y) == pytest.approx(expected, rel=0.01)


def test_expensive_transforms_reject_clips_shorter_than_n_fft():
    with pytest.raises(ValueError, match="n_fft=2048"):
        PitchShift(sample_rate=SR)(np.ones(1000, np.float32), np.random.default_rng(0))
    with pytest.raises(ValueError, match="n_fft=512"):
        TimeStretch(n_fft=512)(np.ones(100, np.float32), np.random.default_rng(0))


@pytest.mark.parametrize("rate", [0.8, 1.25])
@pytest.mark.parametrize("seed", [0, 1])
def test_time_stretch_keeps_length_and_scales_durations(rate, seed):
    x = np.zeros(SR // 2, np.float32)
    burst = slice(int(0.15 * SR), int(0.35 * SR))  # 0.2 s of 440 Hz in the middle
    x[burst] = _tone(440, 0.5)[burst]
    y = TimeStretch((rate, rate), n_fft=512)(x, np.random.default_rng(seed))
    assert y.shape == x.shape
    # Length of the tone burst in the stretched signal (audio seconds, not a timing).
    frames = np.sqrt(np.mean(y.reshape(-1, 160) ** 2, axis=1))  # 10 ms frames
    burst_seconds = np.count_nonzero(frames > 0.5 * frames.max()) * 0.01
    assert burst_seconds == pytest.approx(0.2 / rate, abs=0.02)
    assert _peak_hz(y) == pytest.approx(440, abs=5)


# ---------------------------------------------------------------------------------------------
# Compose


def test_compose_applies_in_order_each_with_its_own_draws():
    x = _music()
    gain, noise = RandomGain(), AddNoise()
    rng = np.random.default_rng(3)
    expected = noise(gain(x, rng), rng)
    np.testing.assert_array_equal(Compose([gain, noise])(x, np.random.default_rng(3)), expected)
    assert not np.array_equal(Compose([noise, gain])(x, np.random.default_rng(3)), expected)


def test_empty_compose_is_identity():
    x = _music()
    np.testing.assert_array_equal(Compose([])(x, np.random.default_rng(0)), x)


def test_compose_split_and_is_expensive():
    stretch, gain, shift = TimeStretch(), RandomGain(), PitchShift(sample_rate=SR)
    expensive, cheap = Compose([stretch, gain, shift]).split()
    assert expensive == Compose([stretch, shift])
    assert cheap == Compose([gain])
    assert expensive.is_expensive
    assert not cheap.is_expensive
    assert TimeStretch.is_expensive and PitchShift.is_expensive
    assert not any(c.is_expensive for c in (RandomGain, AddNoise, RandomFilter))


def test_compose_rejects_other_callables():
    with pytest.raises(TypeError, match="WaveformAugmentation"):
        Compose([lambda x, rng: x])


# ---------------------------------------------------------------------------------------------
# SpecAugment


def _fully_masked(masked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows (mel bands) and columns (frames) of one (n_mels, frames) mask that are all True."""
    return masked.all(dim=1), masked.all(dim=0)


def _run_length(flags: torch.Tensor) -> int:
    """Length of the single run of True values, asserting it is contiguous."""
    where = torch.nonzero(flags).flatten()
    if where.numel() == 0:
        return 0
    assert where[-1] - where[0] + 1 == where.numel()
    return where.numel()


@FAST
@given(
    seed=st.integers(0, 2**63 - 1),
    n_mels=st.integers(4, 40),
    frames=st.integers(4, 40),
    max_freq=st.integers(0, 3),
    max_time=st.integers(0, 3),
)
def test_spec_augment_masks_bands_within_max_sizes_with_the_floor(
    seed, n_mels, frames, max_freq, max_time
):
    x = torch.rand(3, 2, n_mels, frames) + 1  # strictly above any fill value
    augment = SpecAugment(max_time=max_time, max_freq=max_freq, generator=seed)
    y = augment(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    masked = y != x
    assert torch.all(y[masked] == -4.0)
    for example in masked:
        assert torch.equal(example[0], example[1])  # channels share masks
        rows, cols = _fully_masked(example[0])
        assert _run_length(rows) <= max_freq
        assert _run_length(cols) <= max_time
        # Every masked bin belongs to a masked band or a masked span.
        assert torch.equal(example[0], rows[:, None] | cols[None, :])


def test_spec_augment_masks_something_and_respects_fill_value():
    x = torch.zeros(8, 1, 64, 64)
    y = SpecAugment(max_time=10, max_freq=10, fill=-11.5, generator=0)(x)
    assert (y == -11.5).any()
    assert set(torch.unique(y).tolist()) == {-11.5, 0.0}


def test_spec_augment_several_masks_per_axis():
    x = torch.zeros(16, 1, 128, 128)
    y = SpecAugment(n_time_masks=3, max_time=5, n_freq_masks=0, generator=0)(x)
    cols = (y == -4).all(dim=2).squeeze(1)  # (B, frames)
    assert not (y == -4).all(dim=3).any()  # no frequency masks
    assert cols.sum(dim=1).max() <= 15
    assert cols.sum(dim=1).max() > 5  # more than one mask's worth somewhere


def test_spec_augment_is_identity_in_eval_mode():
    augment = SpecAugment(generator=0).eval()
    x = torch.rand(2, 1, 32, 32)
    assert augment(x) is x


def test_spec_augment_does_not_modify_its_input():
    x = torch.rand(2, 1, 32, 32)
    before = x.clone()
    SpecAugment(generator=0)(x)
    assert torch.equal(x, before)


def test_spec_augment_is_seedable():
    x = torch.rand(4, 1, 128, 128)
    first = SpecAugment(generator=5)(x)
    assert torch.equal(first, SpecAugment(generator=5)(x))
    assert not torch.equal(first, SpecAugment(generator=6)(x))
    shared = SpecAugment(generator=torch.Generator().manual_seed(5))
    assert torch.equal(first, shared(x))
    per_call = SpecAugment(generator=99)(x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first, per_call)


def test_spec_augment_generator_state_advances():
    augment = SpecAugment(generator=0)
    x = torch.rand(4, 1, 128, 128)
    assert not torch.equal(augment(x), augment(x))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_spec_augment_keeps_device_and_dtype_and_seed_means_same_masks(device, dtype):
    x = torch.rand(4, 1, 32, 32)
    reference = SpecAugment(max_time=8, max_freq=8, generator=2)(x) == -4
    y = SpecAugment(max_time=8, max_freq=8, generator=2)(x.to(device, dtype))
    assert y.device == x.to(device).device and y.dtype == dtype
    assert torch.equal((y == -4).cpu(), reference)


@pytest.mark.parametrize(
    ("x", "error", "match"),
    [
        (torch.rand(1, 32, 32), ValueError, "shape"),
        (torch.zeros(2, 1, 8, 8, dtype=torch.int64), TypeError, "floating"),
        (torch.full((1, 1, 8, 8), math.nan), ValueError, "NaN or Inf"),
        (torch.zeros(0, 1, 8, 8), ValueError, "non-empty"),
        (np.zeros((1, 1, 8, 8), np.float32), TypeError, "torch.Tensor"),
    ],
)
def test_spec_augment_rejects_bad_batches(x, error, match):
    with pytest.raises(error, match=match):
        SpecAugment(generator=0)(x)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_time": -1}, ValueError, "max_time"),
        ({"n_freq_masks": 1.5}, ValueError, "n_freq_masks"),
        ({"fill": "zero"}, ValueError, "fill"),
        ({"fill": math.inf}, ValueError, "finite"),
        ({"generator": "seed"}, TypeError, "generator"),
    ],
)
def test_spec_augment_rejects_bad_parameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        SpecAugment(**kwargs)


# ---------------------------------------------------------------------------------------------
# build_augmentation


def test_build_none_and_all_off_give_none():
    assert build_augmentation(None) is None
    assert build_augmentation({}) is None
    assert build_augmentation({"gain": {"p": 0}, "noise": None}) is None


def test_default_config_matches_reference_with_expensive_off():
    augment = build_augmentation(DEFAULT_AUGMENTATION)
    assert [type(t) for t in augment.transforms] == [RandomFilter, RandomGain, AddNoise]
    assert not augment.is_expensive
    gain = augment.transforms[1]
    assert (gain.min_db, gain.max_db, gain.p) == (-12, 3, 0.5)
    assert augment.transforms[0].sample_rate == 16000
    assert DEFAULT_AUGMENTATION["pitch_shift"]["semitones"] == [-12, 12]
    assert DEFAULT_AUGMENTATION["time_stretch"]["rate"] == [0.8, 1.2]


def test_default_config_survives_json_and_enables_expensive_ones_first():
    config = json.loads(json.dumps(DEFAULT_AUGMENTATION))
    assert build_augmentation(config) == build_augmentation(DEFAULT_AUGMENTATION)
    config["pitch_shift"]["p"] = 0.3
    config["time_stretch"]["p"] = 1.0
    augment = build_augmentation(dict(reversed(config.items())), sample_rate=22050)
    assert [type(t) for t in augment.transforms] == [
        TimeStretch,
        PitchShift,
        RandomFilter,
        RandomGain,
        AddNoise,
    ]
    assert augment.transforms[1].sample_rate == 22050
    expensive, _ = augment.split()
    assert len(expensive.transforms) == 2


def test_default_config_is_not_mutated_by_building():
    before = copy.deepcopy(DEFAULT_AUGMENTATION)
    build_augmentation(DEFAULT_AUGMENTATION)
    assert before == DEFAULT_AUGMENTATION


@pytest.mark.parametrize(
    ("config", "error", "match"),
    [
        ({"reverb": {}}, ValueError, r"unknown augmentation.*'reverb'.*valid names.*'gain'"),
        ({"gain": {"max": 3}}, ValueError, r"unknown parameter.*'max'.*valid ones.*'max_db'"),
        ({"filter": {"sample_rate": 8000}}, ValueError, "build_augmentation's argument"),
        ({"gain": {"min_db": 6, "max_db": 3}}, ValueError, "'gain'.*ordered"),
        ({"noise": {"p": 2}}, ValueError, r"'noise'.*\[0, 1\]"),
        ({"filter": {"lowpass_hz": [100, 9000]}}, ValueError, "'filter'.*between"),
        ({"gain": 0.5}, TypeError, "'gain' must map"),
        ([("gain", {})], TypeError, "mapping"),
    ],
)
def test_build_rejects_bad_configs(config, error, match):
    with pytest.raises(error, match=match):
        build_augmentation(config)


def test_build_rejects_bad_sample_rate():
    with pytest.raises(ValueError, match="sample_rate"):
        build_augmentation(DEFAULT_AUGMENTATION, sample_rate=0)


# ---------------------------------------------------------------------------------------------
# Precomputed variants

CHEAP = Compose([RandomGain(), AddNoise(color="either")])


def _clips() -> list[tuple[str, np.ndarray]]:
    return [("blues/blues.00000.wav", _music()), ("b", _tone(300)), ("c", _tone(700, 0.1))]


def test_precompute_round_trip(tmp_path: Path):
    out = precompute_variants(_clips(), CHEAP, n_variants=3, seed=11, directory=tmp_path / "v")
    variants = PrecomputedVariants(out)
    assert len(variants) == 3 and variants.n_variants == 3 and variants.seed == 11
    assert variants.keys == ("blues/blues.00000.wav", "b", "c")
    assert "RandomGain" in variants.augment
    assert "c" in variants and "d" not in variants
    for key, audio in _clips():
        stack = [variants[key, v] for v in range(3)]
        for variant in stack:
            assert variant.shape == audio.shape and variant.dtype == np.float32
        assert not np.array_equal(stack[0], stack[1])
    # Nothing else, in particular no temporary files.
    assert sorted(path.name for path in out.iterdir()) == [
        "000000.npy",
        "000001.npy",
        "000002.npy",
        "variants.json",
    ]


def test_precompute_is_reproducible_and_independent_of_clip_order(tmp_path: Path):
    a = PrecomputedVariants(precompute_variants(_clips(), CHEAP, 2, 5, tmp_path / "a", False))
    b = PrecomputedVariants(
        precompute_variants(reversed(_clips()), CHEAP, 4, 5, tmp_path / "b", progress=False)
    )
    c = PrecomputedVariants(precompute_variants(_clips(), CHEAP, 2, 6, tmp_path / "c", False))
    for key, _ in _clips():
        for v in range(2):
            np.testing.assert_array_equal(a[key, v], b[key, v])
        assert not np.array_equal(a[key, 0], c[key, 0])


def test_precompute_with_an_expensive_transform(tmp_path: Path):
    clips = [("x", _music(0.2))]
    out = precompute_variants(clips, Compose([TimeStretch(n_fft=512)]), 2, 0, tmp_path, False)
    variants = PrecomputedVariants(out)
    assert variants[("x", 1)].shape == clips[0][1].shape


def test_interrupted_precompute_leaves_no_manifest(tmp_path: Path):
    precompute_variants(_clips(), CHEAP, 1, 0, tmp_path, progress=False)

    def broken():
        yield "a", _music()
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        precompute_variants(broken(), CHEAP, 1, 0, tmp_path, progress=False)
    with pytest.raises(FileNotFoundError, match="run precompute_variants"):
        PrecomputedVariants(tmp_path)


@pytest.mark.parametrize(
    ("clips", "kwargs", "error", "match"),
    [
        ([("a", _tone(100)), ("a", _tone(200))], {}, ValueError, "duplicate clip key 'a'"),
        ([], {}, ValueError, "no clips"),
        ([("bad", np.full(100, np.nan, np.float32))], {}, ValueError, "clip 'bad'.*NaN"),
        ([(3, _tone(100))], {}, TypeError, "keys must be non-empty strings"),
        (_clips(), {"n_variants": 0}, ValueError, "n_variants"),
        (_clips(), {"seed": -1}, ValueError, "seed"),
        (_clips(), {"augment": RandomGain()}, TypeError, "Compose"),
    ],
)
def test_precompute_rejects_bad_input(tmp_path: Path, clips, kwargs, error, match):
    arguments = {"augment": CHEAP, "n_variants": 2, "seed": 0, "progress": False} | kwargs
    with pytest.raises(error, match=match):
        precompute_variants(clips, directory=tmp_path, **arguments)


def test_precomputed_lookup_errors(tmp_path: Path):
    variants = PrecomputedVariants(precompute_variants(_clips(), CHEAP, 2, 0, tmp_path, False))
    with pytest.raises(KeyError, match="'zzz' was not precomputed"):
        variants["zzz", 0]
    with pytest.raises(IndexError, match="out of range"):
        variants["b", 2]
    (tmp_path / "variants.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        PrecomputedVariants(tmp_path)
