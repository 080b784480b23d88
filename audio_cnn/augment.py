"""Seedable data augmentation: waveform transforms, SpecAugment masks, precomputed variants.

Waveform transforms work on one mono clip, a float32 array of shape ``(T,)``, and draw every
random number from an explicit :class:`numpy.random.Generator`. A dataset that derives that
generator from ``(seed, epoch, index)`` therefore produces exactly the same augmented clips
when a killed training run is resumed. Each transform is applied with its own probability
``p``; :class:`Compose` chains them. Cheap transforms run on the fly; the expensive ones
(``is_expensive = True``: pitch shift, time stretch) can be precomputed once per clip with
:func:`precompute_variants` and read back with :class:`PrecomputedVariants`.

:class:`SpecAugment` masks bands of a batch of log-mel spectrograms during training and fills
them with the log-mel floor (the front-end's clamp value), never 0, which is loud in log10
space.

Default ranges follow the reference pipeline (METHOD.md §6); see :data:`DEFAULT_AUGMENTATION`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import librosa
import numpy as np
import scipy.signal
import torch
from torch import nn
from tqdm.auto import tqdm

from atomic_io import atomic_path, read_json, write_json_atomic
from audio_cnn.frontend import LogMelConfig

__all__ = [
    "DEFAULT_AUGMENTATION",
    "AddNoise",
    "Compose",
    "PitchShift",
    "PrecomputedVariants",
    "RandomFilter",
    "RandomGain",
    "SpecAugment",
    "TimeStretch",
    "WaveformAugmentation",
    "build_augmentation",
    "precompute_variants",
]

# The default front-end clamps log10 magnitudes here (METHOD.md §6): the level of silence.
# Read from its configuration, the one definition.
_LOG_MEL_FLOOR = LogMelConfig.clamp_min
_MANIFEST = "variants.json"
_MANIFEST_FORMAT = 1


# ---------------------------------------------------------------------------------------------
# Validation helpers


def _check_probability(p: float) -> float:
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"probability p must lie in [0, 1], got {p}")
    return p


def _check_finite_number(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number}")
    return number


def _check_range(
    name: str, value: Any, *, low: float = -math.inf, high: float = math.inf
) -> tuple[float, float]:
    """Check ``value`` is an ordered pair of finite numbers inside the open interval (low, high)."""
    try:
        if isinstance(value, (str, bytes)):
            raise TypeError
        lo, hi = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high), got {value!r}") from None
    lo = _check_finite_number(f"{name}[0]", lo)
    hi = _check_finite_number(f"{name}[1]", hi)
    if lo > hi:
        raise ValueError(f"{name} must be ordered (low <= high), got ({lo}, {hi}); swap them")
    if lo <= low or hi >= high:
        raise ValueError(f"{name} must lie strictly between {low} and {high}, got ({lo}, {hi})")
    return lo, hi


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_waveform(x: Any) -> np.ndarray:
    """Return ``x`` as a float32 array of shape (T,), or raise naming what is wrong."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"expected a numpy array of shape (T,), got {type(x).__name__}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(
            f"expected a floating-point waveform, got dtype {x.dtype}; "
            "convert integer PCM to float in [-1, 1] first"
        )
    if x.ndim != 1:
        raise ValueError(
            f"expected a mono waveform of shape (T,), got shape {x.shape}; mix down first"
        )
    if x.size == 0:
        raise ValueError("expected a non-empty waveform, got 0 samples")
    if not np.isfinite(x).all():
        raise ValueError("waveform contains NaN or Inf; fix or drop the clip before augmenting")
    return x.astype(np.float32, copy=False)


def _check_rng(rng: Any) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
            f"got {type(rng).__name__}"
        )


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _rms_power(x: np.ndarray) -> float:
    # float64: float32 squares of quiet clips underflow.
    return float(np.mean(np.square(x, dtype=np.float64)))


# ---------------------------------------------------------------------------------------------
# Waveform augmentations


@dataclass(frozen=True)
class WaveformAugmentation(ABC):
    """Base class: a random transform of a mono waveform, applied with probability ``p``.

    Subclasses implement :meth:`_apply`; the base class validates the input and decides,
    with one draw from ``rng``, whether to apply the transform.

    Parameters
    ----------
    p:
        Probability in [0, 1] that the transform is applied to a given call.
    """

    p: float = field(default=1.0, kw_only=True)

    #: True for transforms worth precomputing (see :func:`precompute_variants`).
    is_expensive: ClassVar[bool] = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "p", _check_probability(self.p))

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augment one clip.

        Parameters
        ----------
        x:
            Mono waveform, shape ``(T,)``, floating point, finite. Never modified in place.
        rng:
            Source of every random draw; the same generator state gives the same output.

        Returns
        -------
        numpy.ndarray
            The augmented waveform, float32, shape ``(T,)``; ``x`` itself (as float32) when
            the transform is not applied.
        """
        x = _check_waveform(x)
        _check_rng(rng)
        if rng.random() >= self.p:
            return x
        return self._apply(x, rng).astype(np.float32, copy=False)

    @abstractmethod
    def _apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Transform a validated float32 waveform ``(T,)``; return an array of the same shape."""


@dataclass(frozen=True)
class RandomGain(WaveformAugmentation):
    """Scale the waveform by a gain drawn uniformly in decibels.

    The result is not clipped: positive gains may exceed 1 in magnitude, which the log-mel
    front-end handles without distortion.

    Parameters
    ----------
    min_db, max_db:
        Gain range in dB (amplitude: ``10 ** (dB / 20)``), ``min_db <= max_db``.
    p:
        Probability of applying the gain.
    """

    min_db: float = -12.0
    max_db: float = 3.0

    def __post_init__(self) -> None:
        super().__post_init__()
        lo, hi = _check_range("(min_db, max_db)", (self.min_db, self.max_db))
        object.__setattr__(self, "min_db", lo)
        object.__setattr__(self, "max_db", hi)

    def _apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        gain_db = rng.uniform(self.min_db, self.max_db)
        return x * np.float32(10.0 ** (gain_db / 20.0))


@dataclass(frozen=True)
class AddNoise(WaveformAugmentation):
    """Add white or pink Gaussian noise at a signal-to-noise ratio drawn uniformly in dB.

    The noise power is set relative to the clip's mean power, so the SNR holds exactly
    (up to float32 rounding) for every clip. A silent clip has no defined SNR and is
    returned unchanged.

    Parameters
    ----------
    snr_db:
        Range ``(low, high)`` of the signal-to-noise ratio in dB.
    color:
        ``"white"`` (flat spectrum), ``"pink"`` (power ∝ 1/f) or ``"either"`` (each with
        probability 1/2).
    p:
        Probability of adding noise.
    """

    snr_db: tuple[float, float] = (10.0, 40.0)
    color: str = "white"

    COLORS: ClassVar[tuple[str, ...]] = ("white", "pink", "either")

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "snr_db", _check_range("snr_db", self.snr_db))
        if self.color not in self.COLORS:
            raise ValueError(f"color must be one of {self.COLORS}, got {self.color!r}")

    def _apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        snr_db = rng.uniform(*self.snr_db)
        pink = self.color == "pink" or (self.color == "either" and rng.random() < 0.5)
        signal_power = _rms_power(x)
        if signal_power == 0.0:
            return x
        noise = rng.standard_normal(x.size)
        if pink:
            spectrum = np.fft.rfft(noise)
            # Amplitude ∝ f^(-1/2); the DC bin gets the first bin's weight, not infinity.
            spectrum /= np.sqrt(np.maximum(np.arange(spectrum.size), 1))
            noise = np.fft.irfft(spectrum, n=x.size)
        scale = math.sqrt(signal_power / 10.0 ** (snr_db / 10.0) / _rms_power(noise))
        return x + (scale * noise).astype(np.float32)


@dataclass(frozen=True)
class RandomFilter(WaveformAugmentation):
    """High- or low-pass Butterworth filter with a randomly drawn cutoff frequency.

    The filter runs forwards and backwards (``scipy.signal.sosfiltfilt``, second-order
    sections): zero phase, so sound events do not move in time, and twice the given order in
    effect (the cutoff is the −6 dB point). The cutoff is drawn log-uniformly in its range.

    Parameters
    ----------
    kind:
        ``"highpass"``, ``"lowpass"`` or ``"either"`` (each with probability 1/2).
    highpass_hz, lowpass_hz:
        Cutoff ranges in Hz for each kind, strictly between 0 and the Nyquist frequency.
        The defaults are the reference pipeline's.
    order:
        Butterworth order of one pass.
    sample_rate:
        Sample rate of the waveforms in Hz.
    p:
        Probability of filtering.
    """

    kind: str = "either"
    highpass_hz: tuple[float, float] = (200.0, 1400.0)
    lowpass_hz: tuple[float, float] = (1400.0, 4000.0)
    order: int = 4
    sample_rate: int = field(kw_only=True)

    KINDS: ClassVar[tuple[str, ...]] = ("highpass", "lowpass", "either")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kind not in self.KINDS:
            raise ValueError(f"kind must be one of {self.KINDS}, got {self.kind!r}")
        object.__setattr__(
            self, "sample_rate", _check_positive_int("sample_rate", self.sample_rate)
        )
        object.__setattr__(self, "order", _check_positive_int("order", self.order))
        nyquist = self.sample_rate / 2
        for name in ("highpass_hz", "lowpass_hz"):
            object.__setattr__(
                self, name, _check_range(name, getattr(self, name), low=0.0, high=nyquist)
            )

    def _apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        highpass = self.kind == "highpass" or (self.kind == "either" and rng.random() < 0.5)
        cutoff = _log_uniform(rng, *(self.highpass_hz if highpass else self.lowpass_hz))
        sos = scipy.signal.butter(
            self.order,
            cutoff,
            btype="highpass" if highpass else "lowpass",
            fs=self.sample_rate,
            output="sos",
        )
        # scipy's default edge padding, shortened so clips shorter than it still work.
        padlen = min(x.size - 1, 3 * (2 * len(sos) + 1))
        return scipy.signal.sosfiltfilt(sos, x.astype(np.float64), padlen=padlen)


@dataclass(frozen=True)
class PitchShift(WaveformAugmentation):
    """Shift the pitch by a number of semitones drawn uniformly, keeping the duration.

    Uses ``librosa.effects.pitch_shift`` (phase-vocoder time stretch, then resampling):
    expensive, a candidate for :func:`precompute_variants`.

    Parameters
    ----------
    semitones:
        Range ``(low, high)`` of the shift in semitones (12 per octave; fractional allowed).
    n_fft:
        STFT size of the phase vocoder in samples; clips must be at least this long.
    sample_rate:
        Sample rate of the waveforms in Hz.
    p:
        Probability of shifting.
    """

    semitones: tuple[float, float] = (-12.0, 12.0)
    n_fft: int = 2048
    sample_rate: int = field(kw_only=True)

    is_expensive: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "semitones", _check_range("semitones", self.semitones))
        object.__setattr__(self, "n_fft", _check_positive_int("n_fft", self.n_fft))
        object.__setattr__(
            self, "sample_rate", _check_positive_int("sample_rate", self.sample_rate)
        )

    def _apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check_long_enough(x, self.n_fft, type(self).__name__)
        steps = rng.uniform(*self.semitones)
        return librosa.effects.pitch_shift(x, sr=self.sample_rate, n_steps=steps, n_fft=self.n_fft)


@dataclass(frozen=True)
class TimeStretch(WaveformAugmentation):
    """Change the tempo by a rate drawn uniformly, keeping the pitch and the clip length.

    Uses ``librosa.effects.time_stretch`` (phase vocoder on the STFT; the reference
    pipeline stretched its STFT the same way). ``rate > 1`` speeds up. The stretched signal
    is then fitted back to the input length ``T``: a longer one is cropped at a random
    offset, a shorter one is zero-padded (silence) at a random offset, so padding does not
    always fall on the same side. Expensive, a candidate for :func:`precompute_variants`.

    Parameters
    ----------
    rate:
        Range ``(low, high)`` of the speed factor, both positive.
    n_fft:
        STFT size of the phase vocoder in samples; clips must be at least this long.
    p:
        Probability of stretching.
    """

    rate: tuple[float, float] = (0.8, 1.2)
    n_fft: int = 2048

    is_expensive: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "rate", _check_range("rate", self.rate, low=0.0))
        object.__setattr__(self, "n_fft", _check_positive_int("n_fft", self.n_fft))

    def _apply(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _check_long_enough(x, self.n_fft, type(self).__name__)
        rate = rng.uniform(*self.rate)
        stretched = librosa.effects.time_stretch(x, rate=rate, n_fft=self.n_fft)
        surplus = stretched.size - x.size
        offset = int(rng.integers(0, abs(surplus) + 1))
        if surplus >= 0:
            return stretched[offset : offset + x.size]
        return np.pad(stretched, (offset, -surplus - offset))


def _check_long_enough(x: np.ndarray, n_fft: int, name: str) -> None:
    if x.size < n_fft:
        raise ValueError(
            f"{name} needs at least n_fft={n_fft} samples, got a clip of {x.size}; "
            "use a longer clip or a smaller n_fft"
        )


@dataclass(frozen=True)
class Compose:
    """Apply waveform augmentations in order, each with its own probability.

    Parameters
    ----------
    transforms:
        The augmentations, applied first to last. An empty sequence is the identity.
    """

    transforms: tuple[WaveformAugmentation, ...] = ()

    def __post_init__(self) -> None:
        transforms = tuple(self.transforms)
        for transform in transforms:
            if not isinstance(transform, WaveformAugmentation):
                raise TypeError(
                    f"Compose takes WaveformAugmentation instances, got {type(transform).__name__}"
                )
        object.__setattr__(self, "transforms", transforms)

    @property
    def is_expensive(self) -> bool:
        """True when any of the transforms is expensive."""
        return any(transform.is_expensive for transform in self.transforms)

    def split(self) -> tuple[Compose, Compose]:
        """Separate the expensive transforms (to precompute) from the cheap ones (on the fly).

        Returns
        -------
        (expensive, cheap):
            Two compositions, each keeping the relative order of its transforms. Applying
            ``cheap`` after ``expensive`` draws from the same distribution as ``self`` when
            the expensive transforms already come first (as :func:`build_augmentation`
            orders them); the individual random draws differ.
        """
        expensive = tuple(t for t in self.transforms if t.is_expensive)
        cheap = tuple(t for t in self.transforms if not t.is_expensive)
        return Compose(expensive), Compose(cheap)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augment one clip ``(T,)`` into float32 ``(T,)``, as :class:`WaveformAugmentation`."""
        x = _check_waveform(x)
        _check_rng(rng)
        for transform in self.transforms:
            x = transform(x, rng)
        return x


# ---------------------------------------------------------------------------------------------
# Configuration

# Application order is fixed (expensive first, noise last) whatever the order of the config's
# keys, so results do not depend on how a JSON file was written and Compose.split is exact.
_CONFIG_KEYS: dict[str, type[WaveformAugmentation]] = {
    "time_stretch": TimeStretch,
    "pitch_shift": PitchShift,
    "filter": RandomFilter,
    "gain": RandomGain,
    "noise": AddNoise,
}

#: The reference pipeline's augmentations (METHOD.md §6) as a :func:`build_augmentation`
#: config. Pitch shift and time stretch are off (``p = 0``; the reference used 0.3 and 1.0):
#: they cost far more than the rest of data loading, so enable them deliberately, ideally
#: precomputed with :func:`precompute_variants`. The reference's noise standard deviation of
#: 0.001–0.1 times the signal's is an SNR of 20–60 dB. Deep-copy before editing.
DEFAULT_AUGMENTATION: dict[str, dict[str, Any]] = {
    "time_stretch": {"p": 0.0, "rate": [0.8, 1.2]},
    "pitch_shift": {"p": 0.0, "semitones": [-12.0, 12.0]},
    "filter": {
        "p": 0.4,
        "kind": "either",
        "highpass_hz": [200.0, 1400.0],
        "lowpass_hz": [1400.0, 4000.0],
    },
    "gain": {"p": 0.5, "min_db": -12.0, "max_db": 3.0},
    "noise": {"p": 0.3, "snr_db": [20.0, 60.0], "color": "white"},
}


def build_augmentation(
    config: Mapping[str, Mapping[str, Any] | None] | None, *, sample_rate: int = 16000
) -> Compose | None:
    """Build the waveform augmentation described by a JSON-able config.

    Parameters
    ----------
    config:
        Maps augmentation names (``time_stretch``, ``pitch_shift``, ``filter``, ``gain``,
        ``noise``) to the keyword arguments of their class (:class:`TimeStretch`,
        :class:`PitchShift`, :class:`RandomFilter`, :class:`RandomGain`, :class:`AddNoise`),
        ranges as lists. An entry that is ``None`` or has ``p == 0`` is left out; ``p``
        defaults to 1. Transforms are applied in the order listed above, whatever the
        order of the keys. ``None`` means no augmentation. See :data:`DEFAULT_AUGMENTATION`.
    sample_rate:
        Sample rate in Hz of the waveforms, passed to the transforms that need it.

    Returns
    -------
    Compose or None
        The composition, or ``None`` when nothing would be applied.

    Raises
    ------
    ValueError
        Unknown names or parameters (the message lists the valid ones) or invalid values.
    """
    if config is None:
        return None
    if not isinstance(config, Mapping):
        raise TypeError(f"augmentation config must be a mapping, got {type(config).__name__}")
    sample_rate = _check_positive_int("sample_rate", sample_rate)
    unknown = sorted(set(config) - set(_CONFIG_KEYS))
    if unknown:
        raise ValueError(
            f"unknown augmentation(s) {unknown}; valid names are {sorted(_CONFIG_KEYS)}"
        )
    transforms = []
    for name, cls in _CONFIG_KEYS.items():
        params = config.get(name)
        if params is None:
            continue
        if not isinstance(params, Mapping):
            raise TypeError(
                f"augmentation {name!r} must map parameter names to values, "
                f"got {type(params).__name__}"
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        valid = sorted(fields - {"sample_rate"})
        bad = sorted(set(params) - set(valid))
        if bad:
            hint = "; sample_rate is build_augmentation's argument" if "sample_rate" in bad else ""
            raise ValueError(
                f"unknown parameter(s) {bad} for augmentation {name!r}; valid ones are {valid}"
                + hint
            )
        kwargs = dict(params)
        if "sample_rate" in fields:
            kwargs["sample_rate"] = sample_rate
        try:
            transform = cls(**kwargs)
        except (TypeError, ValueError) as error:
            raise ValueError(f"augmentation {name!r}: {error}") from error
        if transform.p > 0:
            transforms.append(transform)
    return Compose(transforms) if transforms else None


# ---------------------------------------------------------------------------------------------
# Spectrogram masking


class SpecAugment(nn.Module):
    """Mask random frequency bands and time spans of log-mel spectrograms (training only).

    Each example of the batch gets its own masks; all its channels share them. A mask's
    width is drawn uniformly from ``0 … max`` (0: no mask; ``max`` is capped at the axis
    length) and its start uniformly among the positions where it fits. Masks may overlap.
    In eval mode the input is returned unchanged.

    Random numbers come from ``generator``: the one given to :meth:`forward`, else the one
    given here, else torch's default generator of the input's device. An int seeds a
    generator owned by this module (on the CPU; masks are still built on the input's
    device, and a given seed gives the same masks on every device). For exact resumption of
    a killed run, pass :meth:`forward` a generator seeded from ``(seed, epoch, step)``.

    Parameters
    ----------
    n_time_masks, max_time:
        Number of time masks per example and their maximum width in frames.
    n_freq_masks, max_freq:
        Number of frequency masks per example and their maximum width in mel bands.
    fill:
        ``"floor"`` to fill with ``floor``, or a number to fill with.
    floor:
        The log-mel floor: the front-end's clamp value (``LogMel.floor``, log10 units), the
        level of silence; default: that of the default :class:`~audio_cnn.frontend.LogMel`.
    generator:
        A ``torch.Generator``, an int seed, or ``None`` (see above).

    Notes
    -----
    Defaults follow the reference pipeline for 128×128 inputs (one mask per axis, up to 40
    frames and 20 mel bands), which filled with 0 instead of the floor.
    """

    def __init__(
        self,
        n_time_masks: int = 1,
        max_time: int = 40,
        n_freq_masks: int = 1,
        max_freq: int = 20,
        fill: str | float = "floor",
        floor: float | None = _LOG_MEL_FLOOR,
        generator: torch.Generator | int | None = None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("n_time_masks", n_time_masks),
            ("max_time", max_time),
            ("n_freq_masks", n_freq_masks),
            ("max_freq", max_freq),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if isinstance(fill, str):
            if fill != "floor":
                raise ValueError(f"fill must be 'floor' or a number, got {fill!r}")
            fill_value = _check_finite_number("floor", floor)
        else:
            fill_value = _check_finite_number("fill", fill)
        if isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
            generator = torch.Generator().manual_seed(int(generator))
        elif generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator must be a torch.Generator, an int seed or None, "
                f"got {type(generator).__name__}"
            )
        self.n_time_masks = int(n_time_masks)
        self.max_time = int(max_time)
        self.n_freq_masks = int(n_freq_masks)
        self.max_freq = int(max_freq)
        self.fill_value = fill_value
        self.generator = generator

    def extra_repr(self) -> str:
        return (
            f"n_time_masks={self.n_time_masks}, max_time={self.max_time}, "
            f"n_freq_masks={self.n_freq_masks}, max_freq={self.max_freq}, "
            f"fill_value={self.fill_value}"
        )

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mask a batch in training mode; return it unchanged in eval mode.

        Parameters
        ----------
        x:
            Log-mel batch, shape ``(B, C, n_mels, frames)``, floating point, finite.
        generator:
            Overrides the module's generator for this call.

        Returns
        -------
        torch.Tensor
            A new tensor of the same shape, dtype and device with masked bins set to the
            fill value (``x`` itself in eval mode). ``x`` is not modified.
        """
        if not self.training:
            return x
        _check_spectrogram_batch(x)
        generator = generator if generator is not None else self.generator
        batch, _, n_mels, frames = x.shape
        freq = self._bands(batch, n_mels, self.n_freq_masks, self.max_freq, generator, x.device)
        time = self._bands(batch, frames, self.n_time_masks, self.max_time, generator, x.device)
        mask = freq[:, None, :, None] | time[:, None, None, :]
        return x.masked_fill(mask, self.fill_value)

    @staticmethod
    def _bands(
        batch: int,
        size: int,
        n_masks: int,
        max_width: int,
        generator: torch.Generator | None,
        device: torch.device,
    ) -> torch.Tensor:
        """Boolean ``(batch, size)``: True inside any of ``n_masks`` random bands per row."""
        max_width = min(max_width, size)
        draw_device = generator.device if generator is not None else device
        u = torch.rand((2, batch, n_masks), generator=generator, device=draw_device)
        # floor(u * k) lies in 0 … k - 1 for u < 1; the clamps catch float32 rounding up to k.
        width = (u[0] * (max_width + 1)).floor().clamp_(max=max_width)
        start = torch.minimum((u[1] * (size - width + 1)).floor(), size - width)
        width, start = width.long().to(device), start.long().to(device)
        position = torch.arange(size, device=device)
        inside = (position >= start[..., None]) & (position < (start + width)[..., None])
        return inside.any(dim=1)


def _check_spectrogram_batch(x: Any) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor (B, C, n_mels, frames), got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(
            f"expected a log-mel batch of shape (B, C, n_mels, frames), got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"expected a floating-point log-mel batch, got dtype {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"expected a non-empty log-mel batch, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("log-mel batch contains NaN or Inf; check the front-end's clamp")


# ---------------------------------------------------------------------------------------------
# Precomputed variants


def _variant_rng(seed: int, key: str, variant: int) -> np.random.Generator:
    """Generator for one variant of one clip; independent of clip order and of n_variants."""
    key_hash = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng(np.random.SeedSequence([seed, key_hash, variant]))


def precompute_variants(
    clips_audio: Iterable[tuple[str, np.ndarray]],
    augment: Compose,
    n_variants: int,
    seed: int,
    directory: str | os.PathLike[str],
    progress: bool = True,
) -> Path:
    """Precompute ``n_variants`` augmented versions of every clip and store them as ``.npy``.

    Meant for the expensive transforms (``augment.split()[0]``); cheap ones are better
    drawn afresh on the fly. Variant ``v`` of clip ``key`` is ``augment(audio, rng)`` with
    ``rng`` derived from ``(seed, key, v)``: reruns with the same seed reproduce the files,
    whatever the order of the clips.

    Files: one ``NNNNNN.npy`` per clip holding a float32 array ``(n_variants, T)``, and a
    ``variants.json`` manifest written last (each file through a temporary file and an
    atomic rename). An existing manifest is removed first, so an interrupted run never
    leaves a manifest that points at a mix of old and new files.

    Parameters
    ----------
    clips_audio:
        Pairs ``(key, waveform)``: a unique string key and a mono waveform ``(T,)``.
    augment:
        The augmentation to apply.
    n_variants:
        Number of variants per clip (positive).
    seed:
        Non-negative integer seed.
    directory:
        Output directory, created if needed.
    progress:
        Show a progress bar.

    Returns
    -------
    pathlib.Path
        The directory, ready for :class:`PrecomputedVariants`.
    """
    if not isinstance(augment, Compose):
        raise TypeError(f"augment must be a Compose, got {type(augment).__name__}")
    n_variants = _check_positive_int("n_variants", n_variants)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / _MANIFEST).unlink(missing_ok=True)

    files: dict[str, str] = {}
    total = len(clips_audio) if isinstance(clips_audio, Sized) else None
    for key, audio in tqdm(clips_audio, total=total, disable=not progress, desc="augmenting"):
        if not isinstance(key, str) or not key:
            raise TypeError(f"clip keys must be non-empty strings, got {key!r}")
        if key in files:
            raise ValueError(f"duplicate clip key {key!r}; keys must be unique")
        try:
            variants = np.stack(
                [augment(audio, _variant_rng(int(seed), key, v)) for v in range(n_variants)]
            )
        except (TypeError, ValueError) as error:
            kind = TypeError if isinstance(error, TypeError) else ValueError
            raise kind(f"clip {key!r}: {error}") from error
        name = f"{len(files):06d}.npy"
        # Through a file object: np.save would append ".npy" to the temporary path.
        with atomic_path(directory / name) as temporary, open(temporary, "wb") as file:
            np.save(file, variants)
        files[key] = name
    if not files:
        raise ValueError("no clips given; clips_audio must yield (key, waveform) pairs")

    manifest = {
        "format": _MANIFEST_FORMAT,
        "n_variants": n_variants,
        "seed": int(seed),
        "augment": repr(augment),
        "files": files,
    }
    write_json_atomic(directory / _MANIFEST, manifest, indent=1)
    return directory


class PrecomputedVariants:
    """Read-only access to the variants written by :func:`precompute_variants`.

    ``variants[key, v]`` is variant ``v`` (``0 <= v < n_variants``) of clip ``key``: a
    float32 array ``(T,)``. A dataset picks ``v`` with its per-(epoch, index) generator,
    e.g. ``rng.integers(variants.n_variants)``.

    Parameters
    ----------
    directory:
        A directory written by :func:`precompute_variants`.

    Attributes
    ----------
    directory : pathlib.Path
    n_variants : int
    seed : int
    augment : str
        ``repr`` of the augmentation used, for provenance.
    keys : tuple of str
        The clip keys, in the order they were written.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        path = self.directory / _MANIFEST
        if not path.is_file():
            raise FileNotFoundError(
                f"no {_MANIFEST} in {self.directory}; run precompute_variants to create it "
                "(an interrupted run leaves none)"
            )
        manifest = read_json(path, what="a variants manifest; precompute again")
        if not isinstance(manifest, dict) or manifest.get("format") != _MANIFEST_FORMAT:
            raise ValueError(
                f"{path} is not a format-{_MANIFEST_FORMAT} variants manifest; precompute again"
            )
        self.n_variants = int(manifest["n_variants"])
        self.seed = int(manifest["seed"])
        self.augment = str(manifest["augment"])
        self._files: dict[str, str] = dict(manifest["files"])
        self.keys = tuple(self._files)

    def __len__(self) -> int:
        return len(self._files)

    def __contains__(self, key: object) -> bool:
        return key in self._files

    def __getitem__(self, item: tuple[str, int]) -> np.ndarray:
        """Variant ``v`` of clip ``key``, float32 ``(T,)``; ``item`` is ``(key, v)``."""
        key, variant = item
        if key not in self._files:
            raise KeyError(f"clip {key!r} was not precomputed in {self.directory}")
        if not 0 <= variant < self.n_variants:
            raise IndexError(f"variant {variant} out of range 0 … {self.n_variants - 1}")
        path = self.directory / self._files[key]
        stored = np.load(path, mmap_mode="r", allow_pickle=False)
        if stored.ndim != 2 or stored.shape[0] != self.n_variants or stored.dtype != np.float32:
            raise ValueError(
                f"{path} holds {stored.dtype} {stored.shape}, expected float32 "
                f"({self.n_variants}, T); precompute again"
            )
        return np.array(stored[variant])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.directory)!r}, clips={len(self)}, "
            f"n_variants={self.n_variants})"
        )
