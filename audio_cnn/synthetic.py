"""Synthetic audio classification with known sound objects, for measuring concept recovery.

A :class:`SyntheticTask` generates every clip deterministically from ``(seed, class_index,
clip_index)``, so a clip's separate sound objects (``sources``) and their time–frequency masks
on the front-end's frame grid can be regenerated at any time from the clip's file name; nothing
but the mixed WAV needs to be stored. Each class owns a list of :class:`SoundObject` specs; a
clip sums a random subset of its class's objects, a few distractor sinusoids drawn from the same
distribution for every class, and white noise, then peak-normalises the mix.

:meth:`SyntheticTask.toy` is the reference task (two classes, four objects each, whose classes
differ in one property per object, so that only the objects decide the class).
:meth:`SyntheticTask.scenes` is a 3 s task for the reference front-end (four classes, three
objects of their own each, sounding in random windows of the clip).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import io
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from atomic_io import atomic_path, read_json, write_json_atomic, write_text_atomic

if TYPE_CHECKING:
    from audio_cnn.frontend import LogMel

__all__ = [
    "SCENE_OBJECTS",
    "TOY_OBJECTS",
    "SoundObject",
    "SyntheticClip",
    "SyntheticTask",
    "clip_from_path",
    "harmonic_tone",
    "load_synthetic_task",
    "modulated_tone",
    "object_masks",
    "objects_from_path",
    "pulsed_tone",
    "sawtooth_tone",
    "sound_event",
    "two_note_melody",
    "write_synthetic_dataset",
]

Synthesizer = Callable[[np.random.Generator, int, int], np.ndarray]

METADATA_FILE = "synthetic.json"
_FORMAT = "audio_cnn.synthetic"
_FORMAT_VERSION = 1
_SPLIT_NAMES = ("train", "val", "test")
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*(?:_[A-Za-z0-9.-]+)*$")
# Leading words of the seed sequences keep the clip and split random streams apart.
_CLIP_STREAM, _SPLIT_STREAM = 1, 2
_FINGERPRINT_SEGMENTS = 16
_NOTE_RAMP_SECONDS = 0.01


@dataclass(frozen=True)
class SoundObject:
    """A kind of sound that can appear in a synthetic clip.

    Parameters
    ----------
    name:
        Unique name (letters, digits, ``.``, ``-``, single ``_``); stored in dataset metadata.
    synthesize:
        Pure function ``(rng, n_samples, sample_rate) -> waveform`` of shape ``(n_samples,)``
        that draws all its random parameters from ``rng``. Its scale does not matter: the task
        rescales each object to unit peak and then applies a random gain.
    bands:
        Frequency ranges ``(low, high)`` in Hz that hold the object's energy for every draw; the
        first one holds its spectral peak. Distractors avoid these bands.
    """

    name: str
    synthesize: Synthesizer
    bands: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if not _NAME_PATTERN.match(self.name):
            raise ValueError(
                f"sound object name {self.name!r} must use letters, digits, '.', '-' and single "
                "'_' and start with a letter or digit"
            )
        if not callable(self.synthesize):
            raise TypeError(f"sound object {self.name!r}: synthesize must be callable")
        bands = tuple((float(low), float(high)) for low, high in self.bands)
        if not bands or any(not 0.0 <= low < high for low, high in bands):
            raise ValueError(
                f"sound object {self.name!r}: bands must be a non-empty list of (low, high) Hz "
                f"with 0 <= low < high, got {self.bands}"
            )
        object.__setattr__(self, "bands", bands)


def _time_axis(n_samples: int, sample_rate: int) -> np.ndarray:
    return np.arange(n_samples, dtype=np.float64) / sample_rate


def _harmonic_stack(phase: np.ndarray, n_harmonics: int) -> np.ndarray:
    """Partials k = 1..n of a running phase (radians) with amplitudes 1/k."""
    return sum(np.sin(k * phase) / k for k in range(1, n_harmonics + 1))


def _pulsed_tone(
    rng: np.random.Generator,
    n_samples: int,
    sample_rate: int,
    *,
    freq_hz: tuple[float, float],
    rate_hz: tuple[float, float],
) -> np.ndarray:
    t = _time_axis(n_samples, sample_rate)
    freq, rate = rng.uniform(*freq_hz), rng.uniform(*rate_hz)
    carrier = np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
    # Squared positive half-waves: smooth pulses separated by silences of equal length.
    pulses = np.maximum(np.sin(2 * np.pi * (rate * t + rng.uniform())), 0.0) ** 2
    return carrier * pulses


def _sawtooth_tone(
    rng: np.random.Generator,
    n_samples: int,
    sample_rate: int,
    *,
    freq_hz: tuple[float, float],
    rate_hz: tuple[float, float],
    rising: bool,
    depth_db: float,
    jump_fraction: float,
) -> np.ndarray:
    t = _time_axis(n_samples, sample_rate)
    freq, rate = rng.uniform(*freq_hz), rng.uniform(*rate_hz)
    carrier = np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
    cycle = np.mod(rate * t + rng.uniform(), 1.0)
    if not rising:
        cycle = 1.0 - cycle
    # The sawtooth is linear in dB, as a log-mel image shows it; its "instant" jump is a short
    # ramp so that it does not click across all frequencies.
    slow = 1.0 - jump_fraction
    level = np.where(cycle < slow, cycle / slow, (1.0 - cycle) / jump_fraction)
    return carrier * 10.0 ** (depth_db * (level - 1.0) / 20.0)


def _harmonic_tone(
    rng: np.random.Generator,
    n_samples: int,
    sample_rate: int,
    *,
    freq_hz: tuple[float, float],
    n_harmonics: int,
) -> np.ndarray:
    t = _time_axis(n_samples, sample_rate)
    phase = 2 * np.pi * rng.uniform(*freq_hz) * t + rng.uniform(0, 2 * np.pi)
    return _harmonic_stack(phase, n_harmonics)


def _two_note_melody(
    rng: np.random.Generator,
    n_samples: int,
    sample_rate: int,
    *,
    low_note_hz: tuple[float, float],
    high_note_hz: tuple[float, float],
    note_seconds: tuple[float, float],
    n_harmonics: int,
) -> np.ndarray:
    t = _time_axis(n_samples, sample_rate)
    notes = np.array([rng.uniform(*low_note_hz), rng.uniform(*high_note_hz)])
    note_length = rng.uniform(*note_seconds)
    position = t / note_length + rng.uniform(0, 2)
    which = np.floor(position).astype(np.int64) % 2
    # Integrating the instantaneous frequency keeps the phase continuous at note changes, and
    # short ramps around each change keep the frequency jump from splattering across the band.
    phase = 2 * np.pi * np.cumsum(notes[which]) / sample_rate + rng.uniform(0, 2 * np.pi)
    to_edge = np.minimum(position % 1.0, 1.0 - position % 1.0) * note_length
    articulation = np.sin(0.5 * np.pi * np.minimum(to_edge / _NOTE_RAMP_SECONDS, 1.0)) ** 2
    return articulation * _harmonic_stack(phase, n_harmonics)


def _modulated_tone(
    rng: np.random.Generator,
    n_samples: int,
    sample_rate: int,
    *,
    band_hz: tuple[float, float],
    vibrato_hz: float,
    rate_hz: tuple[float, float],
) -> np.ndarray:
    t = _time_axis(n_samples, sample_rate)
    carrier = rng.uniform(band_hz[0] + vibrato_hz, band_hz[1] - vibrato_hz)
    depth, rate = rng.uniform(0.5, 1.0) * vibrato_hz, rng.uniform(*rate_hz)
    mod_phase = 2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)
    # Vibrato keeps the instantaneous frequency within carrier ± depth, inside the band.
    phase = 2 * np.pi * carrier * t - depth / rate * np.cos(mod_phase)
    tremolo = 1.0 - 0.4 * (0.5 + 0.5 * np.sin(mod_phase))
    return np.sin(phase + rng.uniform(0, 2 * np.pi)) * tremolo


def pulsed_tone(
    name: str, freq_hz: tuple[float, float], rate_hz: tuple[float, float]
) -> SoundObject:
    """A sine of random frequency in ``freq_hz`` (Hz), gated into smooth pulses.

    The pulse rate (pulses per second) is drawn from ``rate_hz``; each pulse lasts half a
    period and its phase within the clip is random.
    """
    synth = functools.partial(_pulsed_tone, freq_hz=freq_hz, rate_hz=rate_hz)
    return SoundObject(name, synth, (freq_hz,))


def sawtooth_tone(
    name: str,
    freq_hz: tuple[float, float],
    rate_hz: tuple[float, float],
    *,
    rising: bool,
    depth_db: float = 30.0,
    jump_fraction: float = 0.1,
) -> SoundObject:
    """A sine of random frequency in ``freq_hz`` (Hz) under a sawtooth level envelope.

    The level, linear in dB over ``depth_db``, repeats ``rate_hz`` times a second (random in the
    range) and either rises slowly and drops quickly (``rising=True``) or jumps up and decays
    slowly; the quick part takes ``jump_fraction`` of a period.
    """
    if not 0.0 < jump_fraction < 1.0 or not depth_db > 0:
        raise ValueError(
            f"need 0 < jump_fraction < 1 and depth_db > 0, got {jump_fraction} and {depth_db}"
        )
    synth = functools.partial(
        _sawtooth_tone,
        freq_hz=freq_hz,
        rate_hz=rate_hz,
        rising=rising,
        depth_db=depth_db,
        jump_fraction=jump_fraction,
    )
    return SoundObject(name, synth, (freq_hz,))


def _harmonic_bands(
    low_hz: float, high_hz: float, n_harmonics: int
) -> tuple[tuple[float, float], ...]:
    if isinstance(n_harmonics, bool) or not isinstance(n_harmonics, int) or n_harmonics < 1:
        raise ValueError(f"n_harmonics must be a positive int, got {n_harmonics!r}")
    return tuple((k * low_hz, k * high_hz) for k in range(1, n_harmonics + 1))


def harmonic_tone(name: str, freq_hz: tuple[float, float], n_harmonics: int = 3) -> SoundObject:
    """A steady harmonic tone: fundamental random in ``freq_hz`` (Hz), partials k with gain 1/k."""
    synth = functools.partial(_harmonic_tone, freq_hz=freq_hz, n_harmonics=n_harmonics)
    return SoundObject(name, synth, _harmonic_bands(*freq_hz, n_harmonics))


def two_note_melody(
    name: str,
    low_note_hz: tuple[float, float],
    high_note_hz: tuple[float, float],
    note_seconds: tuple[float, float] = (0.1, 0.2),
    n_harmonics: int = 3,
) -> SoundObject:
    """Two harmonic notes (same timbre as :func:`harmonic_tone`) alternating at a steady pace.

    The note frequencies are drawn from ``low_note_hz`` and ``high_note_hz`` (Hz), the note
    length from ``note_seconds``; the melody starts at a random point of its cycle.
    """
    synth = functools.partial(
        _two_note_melody,
        low_note_hz=low_note_hz,
        high_note_hz=high_note_hz,
        note_seconds=note_seconds,
        n_harmonics=n_harmonics,
    )
    low, high = min(low_note_hz[0], high_note_hz[0]), max(low_note_hz[1], high_note_hz[1])
    return SoundObject(name, synth, _harmonic_bands(low, high, n_harmonics))


def modulated_tone(
    name: str,
    band_hz: tuple[float, float],
    vibrato_hz: float = 100.0,
    rate_hz: tuple[float, float] = (4.0, 8.0),
) -> SoundObject:
    """A sine with vibrato (up to ``vibrato_hz`` deep) and tremolo that stays inside ``band_hz``.

    The carrier is random in the band shrunk by ``vibrato_hz`` on both sides; the modulation
    rate (Hz) is drawn from ``rate_hz``.
    """
    if not band_hz[1] - band_hz[0] > 2 * vibrato_hz:
        raise ValueError(f"band {band_hz} Hz is too narrow for a vibrato of ±{vibrato_hz} Hz")
    synth = functools.partial(
        _modulated_tone, band_hz=band_hz, vibrato_hz=vibrato_hz, rate_hz=rate_hz
    )
    return SoundObject(name, synth, (band_hz,))


def _sound_event(
    rng: np.random.Generator,
    n_samples: int,
    sample_rate: int,
    *,
    synthesize: Synthesizer,
    seconds: tuple[float, float],
    ramp_seconds: float,
) -> np.ndarray:
    # The inner sound draws first, so its parameters are those it has without the window.
    wave = np.asarray(synthesize(rng, n_samples, sample_rate), dtype=np.float64)
    duration = n_samples / sample_rate
    length = min(rng.uniform(*seconds), duration)
    onset = rng.uniform(0.0, duration - length)
    start = min(n_samples - 1, round(onset * sample_rate))
    stop = min(n_samples, start + max(1, round(length * sample_rate)))
    gate = np.zeros(n_samples)
    gate[start:stop] = _ramped_gate(stop - start, round(ramp_seconds * sample_rate))
    return wave * gate


def sound_event(
    obj: SoundObject, seconds: tuple[float, float], ramp_seconds: float = 0.05
) -> SoundObject:
    """``obj`` sounding during one random window of the clip, silent elsewhere.

    The window lasts a random ``seconds`` (uniform; capped at the clip's length) and starts at
    a random time that keeps it inside the clip; raised-cosine ramps of ``ramp_seconds`` open
    and close it. Name and bands are ``obj``'s.
    """
    low, high = (float(v) for v in seconds)
    if not 0 < low <= high < math.inf or not 0 <= ramp_seconds < math.inf:
        raise ValueError(
            f"need 0 < seconds[0] <= seconds[1] and ramp_seconds >= 0, got {seconds} and "
            f"{ramp_seconds}"
        )
    synth = functools.partial(
        _sound_event, synthesize=obj.synthesize, seconds=(low, high), ramp_seconds=ramp_seconds
    )
    return SoundObject(obj.name, synth, obj.bands)


def _toy_objects() -> dict[str, SoundObject]:
    objects = [
        pulsed_tone("pulse_slow", (100.0, 150.0), rate_hz=(2.0, 3.0)),
        pulsed_tone("pulse_fast", (100.0, 150.0), rate_hz=(6.0, 8.0)),
        sawtooth_tone("saw_rising", (500.0, 600.0), (3.0, 5.0), rising=True),
        sawtooth_tone("saw_falling", (500.0, 600.0), (3.0, 5.0), rising=False),
        harmonic_tone("harmonic_tone", (800.0, 1000.0)),
        two_note_melody("melody", (800.0, 880.0), (920.0, 1000.0)),
        modulated_tone("mod_tone_low", (3500.0, 4000.0)),
        modulated_tone("mod_tone_high", (4000.0, 4500.0)),
    ]
    return {obj.name: obj for obj in objects}


TOY_OBJECTS: Mapping[str, SoundObject] = MappingProxyType(_toy_objects())
"""The sound objects of :meth:`SyntheticTask.toy`, by name (class 0 uses ``pulse_slow``,
``saw_rising``, ``harmonic_tone``, ``mod_tone_low``; class 1 ``pulse_fast``, ``saw_falling``,
``melody``, ``mod_tone_high``)."""


def _scene_objects() -> dict[str, SoundObject]:
    # Each class owns one object in each of three regions (low, mid, high); within a region
    # the four classes take separate bands. The kind of sound a class gets in a region varies,
    # so no kind (pulses, sawtooth envelopes, harmonic stacks, vibrato) marks a class. Each
    # object sounds in one random window (seconds range after it): long ones for the rhythmic
    # low sounds, so that several periods show, shorter ones higher up.
    classes = [
        [  # scene0: slow low pulses, a steady three-partial tone, a low whistle
            (pulsed_tone("scene0_thump", (90.0, 105.0), rate_hz=(2.0, 3.0)), (1.5, 3.0)),
            (harmonic_tone("scene0_organ", (540.0, 570.0), n_harmonics=3), (1.0, 2.5)),
            (modulated_tone("scene0_whistle", (2200.0, 2500.0), vibrato_hz=60.0), (0.6, 1.8)),
        ],
        [  # scene1: fast low pulses, a two-note melody with two partials, a middle whistle
            (pulsed_tone("scene1_knock", (150.0, 170.0), rate_hz=(6.0, 8.0)), (1.5, 3.0)),
            (
                two_note_melody("scene1_melody", (660.0, 680.0), (720.0, 740.0), n_harmonics=2),
                (1.0, 2.5),
            ),
            (modulated_tone("scene1_whistle", (3000.0, 3350.0), vibrato_hz=60.0), (0.6, 1.8)),
        ],
        [  # scene2: a rising low sawtooth, a falling mid sawtooth, high beeps
            (sawtooth_tone("scene2_swell", (240.0, 270.0), (2.0, 4.0), rising=True), (1.5, 3.0)),
            (sawtooth_tone("scene2_fade", (850.0, 920.0), (3.0, 5.0), rising=False), (1.0, 2.5)),
            (pulsed_tone("scene2_beep", (4000.0, 4450.0), rate_hz=(4.0, 6.0)), (0.6, 1.8)),
        ],
        [  # scene3: a falling low sawtooth, mid pings, a high whistle
            (sawtooth_tone("scene3_decay", (370.0, 410.0), (2.0, 4.0), rising=False), (1.5, 3.0)),
            (pulsed_tone("scene3_ping", (1200.0, 1280.0), rate_hz=(3.0, 4.0)), (1.0, 2.5)),
            (modulated_tone("scene3_whistle", (5300.0, 5900.0)), (0.6, 1.8)),
        ],
    ]
    objects = [sound_event(obj, seconds) for objects in classes for obj, seconds in objects]
    return {obj.name: obj for obj in objects}


SCENE_OBJECTS: Mapping[str, SoundObject] = MappingProxyType(_scene_objects())
"""The sound objects of :meth:`SyntheticTask.scenes`, by name; class ``sceneN`` uses the three
named ``sceneN_*`` (in this order: low, mid, high)."""

_BUILTIN_OBJECTS: Mapping[str, SoundObject] = MappingProxyType({**TOY_OBJECTS, **SCENE_OBJECTS})


@dataclass(frozen=True, eq=False)
class SyntheticClip:
    """One generated clip with its ground truth.

    Attributes
    ----------
    clip_id:
        ``"<class_name>_<clip_index>"``, also the WAV file's stem.
    label:
        Class index.
    clip_index:
        Index of the clip within its class.
    sample_rate:
        Samples per second.
    waveform:
        ``(T,)`` float32, the peak-normalised mix.
    object_names:
        Names of the objects present, in the class's object order.
    sources:
        ``(n_present, T)`` float32, each present object's contribution at the mix's scale.
    background:
        ``(T,)`` float32, distractors plus noise at the mix's scale; ``sources.sum(0) +
        background`` equals ``waveform`` up to float32 rounding.
    """

    clip_id: str
    label: int
    clip_index: int
    sample_rate: int
    waveform: np.ndarray
    object_names: tuple[str, ...]
    sources: np.ndarray
    background: np.ndarray


def _ordered_pair(value: Sequence[float], name: str, *, integer: bool = False) -> tuple[Any, Any]:
    if len(value) != 2:
        raise ValueError(f"{name} must be a pair (low, high), got {value!r}")
    low, high = (int(v) for v in value) if integer else (float(v) for v in value)
    if not low <= high or not math.isfinite(high - low):
        raise ValueError(f"{name} must be (low, high) with low <= high, got {tuple(value)}")
    return low, high


def _merge_intervals(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for low, high in sorted(intervals):
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


@dataclass(frozen=True)
class SyntheticTask:
    """A synthetic classification task whose clips are sums of known sound objects.

    Parameters
    ----------
    class_names:
        One name per class (also the folder name on disk).
    class_objects:
        For each class, its sound objects. An object may be shared by classes.
    sample_rate:
        Samples per second of every clip.
    duration:
        Clip length in seconds.
    object_count_probs:
        Entry ``i`` is the probability that a clip holds ``i + 1`` of its class's objects
        (chosen without replacement); must sum to 1 and not exceed the smallest class.
    object_gain_db:
        Range of each object's peak level in dB (uniform), before the mix is normalised.
    distractor_count:
        Inclusive range of the number of distractor sinusoids per clip.
    distractor_gain_db:
        Range of each distractor's peak level in dB (uniform).
    distractor_freq_hz:
        Frequency range of distractors; drawn log-uniformly from it minus every object band of
        every class widened by ``distractor_band_margin`` (relative), so distractors sound the
        same in every class and stay out of the object bands.
    distractor_band_margin:
        Relative widening of object bands for distractor avoidance (0.1 = ±10 %).
    distractor_min_seconds:
        Shortest distractor; each starts and stops at random times within the clip.
    noise_level:
        Standard deviation of white Gaussian noise, on the scale of the objects (0 dB = 1).
    fade_seconds:
        Raised-cosine fade applied to every sound's ends, so nothing clicks.
    peak:
        Absolute peak of the normalised mix.
    seed:
        Non-negative integer; every clip is a function of ``(seed, class_index, clip_index)``.
    """

    class_names: tuple[str, ...]
    class_objects: tuple[tuple[SoundObject, ...], ...]
    sample_rate: int = 16000
    duration: float = 1.0
    object_count_probs: tuple[float, ...] = (0.5, 0.2, 0.2, 0.1)
    object_gain_db: tuple[float, float] = (-6.0, 0.0)
    distractor_count: tuple[int, int] = (3, 5)
    distractor_gain_db: tuple[float, float] = (-30.0, -18.0)
    distractor_freq_hz: tuple[float, float] = (60.0, 7000.0)
    distractor_band_margin: float = 0.1
    distractor_min_seconds: float = 0.25
    noise_level: float = 0.003
    fade_seconds: float = 0.01
    peak: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.class_names, str):
            raise TypeError(f"class_names must be a sequence of names, got {self.class_names!r}")
        object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))
        object.__setattr__(self, "class_objects", tuple(tuple(o) for o in self.class_objects))
        object.__setattr__(
            self, "object_count_probs", tuple(float(p) for p in self.object_count_probs)
        )
        for name in ("object_gain_db", "distractor_gain_db", "distractor_freq_hz"):
            object.__setattr__(self, name, _ordered_pair(getattr(self, name), name))
        count = _ordered_pair(self.distractor_count, "distractor_count", integer=True)
        object.__setattr__(self, "distractor_count", count)
        self._validate_scalars()
        self._validate_classes()
        self._validate_mixing()

    def _validate_scalars(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer):
            raise TypeError(f"seed must be an int, got {type(self.seed).__name__}")
        if self.seed < 0:
            raise ValueError(f"seed must be non-negative, got {self.seed}")
        if isinstance(self.sample_rate, bool) or not isinstance(self.sample_rate, int | np.integer):
            raise TypeError(f"sample_rate must be an int, got {type(self.sample_rate).__name__}")
        if self.sample_rate <= 0 or not 0 < self.duration < math.inf or self.n_samples < 1:
            raise ValueError(
                f"sample_rate and duration must be positive and finite, got {self.sample_rate} Hz "
                f"and {self.duration} s"
            )

    def _validate_classes(self) -> None:
        names = self.class_names
        if len(names) < 2 or len(set(names)) != len(names):
            raise ValueError(f"class_names must hold at least two distinct names, got {names}")
        for name in names:
            if not _NAME_PATTERN.match(name):
                raise ValueError(
                    f"class name {name!r} must use letters, digits, '.', '-' and single '_' "
                    "(it becomes a folder and file name prefix)"
                )
        if len(self.class_objects) != len(names):
            raise ValueError(
                f"class_objects has {len(self.class_objects)} entries for {len(names)} classes"
            )
        seen: dict[str, SoundObject] = {}
        for name, objects in zip(names, self.class_objects, strict=True):
            for obj in objects:
                if not isinstance(obj, SoundObject):
                    raise TypeError(f"class {name!r}: objects must be SoundObject, got {obj!r}")
            if not objects or len({o.name for o in objects}) != len(objects):
                raise ValueError(f"class {name!r} needs at least one object and unique names")
            for obj in objects:
                if seen.setdefault(obj.name, obj) is not obj:
                    raise ValueError(f"two different sound objects are named {obj.name!r}")
                if max(high for _, high in obj.bands) > self.sample_rate / 2:
                    raise ValueError(
                        f"object {obj.name!r} has energy above the Nyquist frequency "
                        f"{self.sample_rate / 2} Hz; raise sample_rate or lower its bands"
                    )

    def _validate_mixing(self) -> None:
        probs = np.asarray(self.object_count_probs)
        smallest = min(len(objects) for objects in self.class_objects)
        if (
            probs.size == 0
            or probs.size > smallest
            or not np.all(probs >= 0)
            or not math.isclose(probs.sum(), 1.0, abs_tol=1e-6)
        ):
            raise ValueError(
                f"object_count_probs must be non-negative, sum to 1 and have at most {smallest} "
                f"entries (the smallest class's object count), got {self.object_count_probs}"
            )
        if self.distractor_count[0] < 0 or not 0 <= self.distractor_band_margin:
            raise ValueError("distractor_count and distractor_band_margin must be non-negative")
        low, high = self.distractor_freq_hz
        if not 0 < low < high <= self.sample_rate / 2:
            raise ValueError(
                f"distractor_freq_hz must satisfy 0 < low < high <= {self.sample_rate / 2} Hz "
                f"(Nyquist), got {self.distractor_freq_hz}"
            )
        if self.distractor_count[1] > 0 and not self._distractor_intervals():
            raise ValueError(
                "the object bands leave no room for distractors in distractor_freq_hz; widen "
                "the range, lower distractor_band_margin or set distractor_count to (0, 0)"
            )
        if not 0 < self.distractor_min_seconds <= self.duration:
            raise ValueError("distractor_min_seconds must be in (0, duration]")
        if not 0 <= self.fade_seconds <= self.duration / 2:
            raise ValueError("fade_seconds must be in [0, duration / 2]")
        if not 0 <= self.noise_level < math.inf:
            raise ValueError(f"noise_level must be finite and >= 0, got {self.noise_level}")
        if not 0 < self.peak <= 1:
            raise ValueError(f"peak must be in (0, 1], got {self.peak}")

    @classmethod
    def toy(cls, seed: int = 0, **overrides: Any) -> SyntheticTask:
        """The reference toy task (METHOD.md §6): 2 classes × 4 objects, 1 s clips at 16 kHz.

        Class 0 ↔ class 1, each pair differing in one property: pulses at 2–3 ↔ 6–8 Hz
        (100–150 Hz tone); sawtooth envelope rising ↔ falling (500–600 Hz); steady harmonic
        tone ↔ alternating two-note melody (800–1000 Hz fundamentals); modulated tone in
        3.5–4 ↔ 4–4.5 kHz. ``overrides`` replace any other field.
        """
        return cls(
            class_names=("class0", "class1"),
            class_objects=(
                tuple(
                    TOY_OBJECTS[n]
                    for n in ("pulse_slow", "saw_rising", "harmonic_tone", "mod_tone_low")
                ),
                tuple(
                    TOY_OBJECTS[n] for n in ("pulse_fast", "saw_falling", "melody", "mod_tone_high")
                ),
            ),
            seed=seed,
            **overrides,
        )

    @classmethod
    def scenes(cls, seed: int = 0, **overrides: Any) -> SyntheticTask:
        """A 3 s task for the reference (``gtzan``) front-end: 4 classes × 3 objects of their own.

        One clip is exactly one model chunk of the ``gtzan`` preset (3 s at 16 kHz: 48000
        samples, 128 frames at hop 360). Class ``sceneN`` owns the objects ``sceneN_*`` of
        :data:`SCENE_OBJECTS`, one in each of three frequency regions, and no object or band is
        shared between classes, so a class's evidence is its own objects and nothing else:

        ========  =====================  ==========================  =========================
        class     low (pure tone)        mid                         high
        ========  =====================  ==========================  =========================
        scene0    pulses 2–3/s, 90–105   steady tone, 540–570 Hz     vibrato tone 2.2–2.5 kHz
                  Hz                     fundamental, 3 partials
        scene1    pulses 6–8/s, 150–170  two-note melody 660–740     vibrato tone 3.0–3.35
                  Hz                     Hz, 2 partials              kHz
        scene2    rising sawtooth        falling sawtooth envelope,  pulses 4–6/s, 4.0–4.45
                  envelope, 240–270 Hz   850–920 Hz                  kHz
        scene3    falling sawtooth       pulses 3–4/s, 1.2–1.28 kHz  vibrato tone 5.3–5.9 kHz
                  envelope, 370–410 Hz
        ========  =====================  ==========================  =========================

        Every object sounds in one random window of the clip (:func:`sound_event`; low
        objects 1.5–3 s, mid 1–2.5 s, high 0.6–1.8 s, with 50 ms ramps), so a clip's objects
        overlap partly in time and lie apart in frequency, and their masks differ in both. A
        clip holds 1, 2 or 3 of its class's objects with probabilities 0.2, 0.4, 0.4 (80 % have
        the two or more that concept recovery needs), over 4–8 distractor sinusoids (0.25–3 s,
        −30…−18 dB) drawn the same way for every class in the gaps between all classes' bands
        (±5 % margin: above 1 kHz a mel band of the front-end is 2–4 % wide), and white noise.

        Why: on a task whose classes share objects, or whose background carries class
        evidence, removing a class's objects need not remove its logit, and a flipping measure
        on that logit then means little (METHOD.md §5). With four classes each needing its
        own objects, and a background that is the same for all, the logit should rest on the
        objects; check it per model (remove a clip's objects, see whether its logit halves).
        ``overrides`` replace any other field.
        """
        fields: dict[str, Any] = {
            "class_names": tuple(f"scene{i}" for i in range(4)),
            "class_objects": tuple(
                tuple(SCENE_OBJECTS[n] for n in SCENE_OBJECTS if n.startswith(f"scene{i}_"))
                for i in range(4)
            ),
            "duration": 3.0,
            "object_count_probs": (0.2, 0.4, 0.4),
            "distractor_count": (4, 8),
            "distractor_band_margin": 0.05,
            "seed": seed,
        }
        return cls(**{**fields, **overrides})

    @property
    def n_samples(self) -> int:
        """Samples per clip."""
        return round(self.duration * self.sample_rate)

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    def clip_id(self, class_index: int, clip_index: int) -> str:
        """``"<class_name>_<clip_index:05d>"``, the stem of the clip's WAV file."""
        class_index, clip_index = self._check_indices(class_index, clip_index)
        return f"{self.class_names[class_index]}_{clip_index:05d}"

    def clip_path(self, class_index: int, clip_index: int) -> str:
        """Relative path ``"<class_name>/<clip_id>.wav"`` (POSIX separators) of a clip."""
        return f"{self.class_names[class_index]}/{self.clip_id(class_index, clip_index)}.wav"

    def parse_clip_path(self, relative_path: str | os.PathLike[str]) -> tuple[int, int]:
        """``(class_index, clip_index)`` of a path made by :meth:`clip_path`.

        Raises
        ------
        ValueError
            If the path is not ``<class_name>/<class_name>_<digits>.wav`` for a class of the task.
        """
        parts = Path(relative_path).parts
        if len(parts) == 2 and parts[0] in self.class_names:
            class_index = self.class_names.index(parts[0])
            prefix, stem = f"{parts[0]}_", parts[1].removesuffix(".wav")
            number = stem.removeprefix(prefix)
            if stem.startswith(prefix) and parts[1].endswith(".wav") and number.isdecimal():
                clip_index = int(number)
                if self.clip_id(class_index, clip_index) == stem:
                    return class_index, clip_index
        raise ValueError(
            f"{os.fspath(relative_path)!r} is not a synthetic clip path of this task; expected "
            f"'<class>/<class>_<5+ digit index>.wav' with a class in {list(self.class_names)}"
        )

    def _check_indices(self, class_index: int, clip_index: int) -> tuple[int, int]:
        for name, value in (("class_index", class_index), ("clip_index", clip_index)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if not 0 <= class_index < self.n_classes:
            raise ValueError(f"class_index must be in 0..{self.n_classes - 1}, got {class_index}")
        if clip_index < 0:
            raise ValueError(f"clip_index must be non-negative, got {clip_index}")
        return int(class_index), int(clip_index)

    def make_clip(self, class_index: int, clip_index: int) -> SyntheticClip:
        """Generate one clip of class ``class_index``.

        The result depends only on ``(seed, class_index, clip_index)`` and the task's
        parameters, never on which clips were generated before.

        Returns
        -------
        SyntheticClip
            The float32 mix ``(T,)`` peak-normalised to ``peak``, the present objects' sources
            ``(n_present, T)`` and the background ``(T,)``, all at the mix's scale.
        """
        class_index, clip_index = self._check_indices(class_index, clip_index)
        objects = self.class_objects[class_index]
        structure, present, (distractor_seq, noise_seq, *object_seqs) = self._structure(
            class_index, clip_index
        )
        gains = 10.0 ** (structure.uniform(*self.object_gain_db, size=len(objects)) / 20.0)

        t = _time_axis(self.n_samples, self.sample_rate)
        edges = _ramped_gate(self.n_samples, round(self.fade_seconds * self.sample_rate))
        sources = np.stack(
            [
                gains[i]
                * edges
                * self._synthesize(objects[i], np.random.default_rng(object_seqs[i]))
                for i in present
            ]
        )
        noise = np.random.default_rng(noise_seq).standard_normal(self.n_samples)
        background = self._distractors(np.random.default_rng(distractor_seq), t)
        background += self.noise_level * noise
        mix = sources.sum(axis=0) + background
        scale = _peak_scale(mix, self.peak)
        return SyntheticClip(
            clip_id=self.clip_id(class_index, clip_index),
            label=class_index,
            clip_index=clip_index,
            sample_rate=self.sample_rate,
            waveform=(mix * scale).astype(np.float32),
            object_names=tuple(objects[i].name for i in present),
            sources=(sources * scale).astype(np.float32),
            background=(background * scale).astype(np.float32),
        )

    def present_objects(self, class_index: int, clip_index: int) -> tuple[str, ...]:
        """Names of the objects present in a clip (its ``object_names``), without
        synthesising it: the clip's first random draws decide them."""
        class_index, clip_index = self._check_indices(class_index, clip_index)
        present = self._structure(class_index, clip_index)[1]
        return tuple(self.class_objects[class_index][i].name for i in present)

    def _structure(
        self, class_index: int, clip_index: int
    ) -> tuple[np.random.Generator, np.ndarray, list[np.random.SeedSequence]]:
        """A clip's structure generator after drawing which objects are present, those
        objects' indices (sorted), and the seeds of the distractors, the noise and each
        class object, in that order."""
        n_objects = len(self.class_objects[class_index])
        root = np.random.SeedSequence([_CLIP_STREAM, self.seed, class_index, clip_index])
        # One child stream per role and per class object: each object's parameters stay the
        # same whichever other objects are drawn.
        structure_seq, *streams = root.spawn(3 + n_objects)
        structure = np.random.default_rng(structure_seq)
        probs = np.asarray(self.object_count_probs)
        n_present = 1 + int(structure.choice(probs.size, p=probs / probs.sum()))
        present = np.sort(structure.choice(n_objects, size=n_present, replace=False))
        return structure, present, streams

    def _synthesize(self, obj: SoundObject, rng: np.random.Generator) -> np.ndarray:
        """The object's waveform at unit peak, checked."""
        wave = np.asarray(obj.synthesize(rng, self.n_samples, self.sample_rate), dtype=np.float64)
        if wave.shape != (self.n_samples,) or not np.all(np.isfinite(wave)):
            raise ValueError(
                f"sound object {obj.name!r} must return {self.n_samples} finite samples, got "
                f"shape {wave.shape}{'' if np.all(np.isfinite(wave)) else ' with NaN/Inf'}"
            )
        return wave * _peak_scale(wave, 1.0)

    def _distractor_intervals(self) -> list[tuple[float, float]]:
        """Frequency intervals (Hz) open to distractors: the range minus widened object bands."""
        widen = 1.0 + self.distractor_band_margin
        blocked = _merge_intervals(
            [
                (low / widen, high * widen)
                for objects in self.class_objects
                for obj in objects
                for low, high in obj.bands
            ]
        )
        free, (start, stop) = [], self.distractor_freq_hz
        for low, high in blocked:
            if low > start:
                free.append((start, min(low, stop)))
            start = max(start, high)
            if start >= stop:
                break
        if start < stop:
            free.append((start, stop))
        return [(low, high) for low, high in free if high > low]

    def _distractors(self, rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
        """Sum of the clip's distractor sinusoids ``(T,)``."""
        count = int(rng.integers(self.distractor_count[0], self.distractor_count[1] + 1))
        if count == 0:
            return np.zeros_like(t)
        intervals = np.log(np.array(self._distractor_intervals()))
        widths = intervals[:, 1] - intervals[:, 0]
        # Log-uniform over the union of free intervals: draw a position along their joint length.
        position = rng.uniform(0.0, widths.sum(), size=count)
        starts = np.concatenate([[0.0], np.cumsum(widths)[:-1]])
        which = np.searchsorted(starts, position, side="right") - 1
        freqs = np.exp(intervals[which, 0] + position - starts[which])
        gains = 10.0 ** (rng.uniform(*self.distractor_gain_db, size=count) / 20.0)
        phases = rng.uniform(0.0, 2 * np.pi, size=count)
        lengths = rng.uniform(self.distractor_min_seconds, self.duration, size=count)
        onsets = rng.uniform(0.0, 1.0, size=count) * (self.duration - lengths)
        total, ramp = np.zeros_like(t), round(self.fade_seconds * self.sample_rate)
        for freq, gain, phase, onset, length in zip(
            freqs, gains, phases, onsets, lengths, strict=True
        ):
            start = math.ceil(onset * self.sample_rate)
            stop = min(t.size, math.ceil((onset + length) * self.sample_rate))
            tone = np.sin(2 * np.pi * freq * t[start:stop] + phase)
            total[start:stop] += gain * _ramped_gate(stop - start, ramp) * tone
        return total

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe parameters; sound objects are stored by name."""
        data = {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in dataclasses.fields(self)
        }
        data["class_objects"] = [[o.name for o in objects] for objects in self.class_objects]
        data["seed"] = int(self.seed)
        return data

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], objects: Mapping[str, SoundObject] | None = None
    ) -> SyntheticTask:
        """Inverse of :meth:`to_dict`.

        Parameters
        ----------
        data:
            Output of :meth:`to_dict`; unknown keys are an error.
        objects:
            Sound objects by name for names that are not built in (:data:`TOY_OBJECTS`,
            :data:`SCENE_OBJECTS`).
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"unknown synthetic task keys {sorted(unknown)}; known: {sorted(known)}"
            )
        catalogue = {**_BUILTIN_OBJECTS, **(objects or {})}
        names = [name for class_names in data.get("class_objects", ()) for name in class_names]
        missing = sorted(set(names) - set(catalogue))
        if missing:
            raise ValueError(
                f"the task uses sound objects {missing} that are not built in; pass them as "
                "objects={name: SoundObject}"
            )
        fields = dict(data)
        fields["class_objects"] = [[catalogue[n] for n in names] for names in data["class_objects"]]
        return cls(**fields)


_SILENCE = 1e-10


def _peak_scale(wave: np.ndarray, peak: float) -> float:
    """Factor that brings ``max|wave|`` to ``peak``; 1 for (near-)silence, which stays as is."""
    largest = float(np.max(np.abs(wave), initial=0.0))
    if not math.isfinite(largest):
        raise ValueError("cannot peak-normalise a waveform that contains NaN or Inf")
    return peak / largest if largest > _SILENCE else 1.0


def _ramped_gate(length: int, ramp: int) -> np.ndarray:
    """``(length,)`` ones with raised-cosine ramps of ``ramp`` samples (at most half) at ends."""
    gate = np.ones(length)
    ramp = min(ramp, length // 2)
    if ramp > 0:
        rise = np.sin(0.5 * np.pi * (np.arange(ramp) + 0.5) / ramp) ** 2
        gate[:ramp] = rise
        gate[length - ramp :] = rise[::-1]
    return gate


def object_masks(
    clip: SyntheticClip,
    logmel: LogMel,
    *,
    floor: float | None = None,
    dynamic_range_db: float = 40.0,
) -> np.ndarray:
    """Time–frequency bins where each present object dominates the clip.

    Each source, the background and the mix go through ``logmel``'s STFT and mel filterbank
    (linear mel values ``mel_filterbank @ |stft| ** power``, what the front-end takes the log
    of), on the device of ``logmel``; the frames are exactly its output frames. Bin ``(m, f)``
    belongs to object ``j`` when ``j`` has the largest mel value among all objects and the
    background there, and that value is above zero, at least ``floor`` and at most
    ``dynamic_range_db`` below the mix's largest mel value.

    Parameters
    ----------
    clip:
        A clip from :meth:`SyntheticTask.make_clip`.
    logmel:
        The front-end whose frame grid and scale the masks use: an
        :class:`audio_cnn.frontend.LogMel`, or any object with its flat attributes
        ``sample_rate`` (Hz), ``power``, ``floor`` (log10 units or ``None``),
        ``mel_filterbank`` (``(n_mels, n_fft // 2 + 1)`` tensor) and method ``stft``
        (``(B, T)`` waveforms to a complex ``(B, n_fft // 2 + 1, frames)`` STFT).
    floor:
        Smallest linear mel value that counts. ``None``: the front-end's own floor,
        ``10 ** logmel.floor`` (1e-4 for the default front-end, whose clamp is −4 in log10):
        quieter bins all look like silence to the model. A front-end without a floor
        (``logmel.floor is None``) tells every non-zero value apart, so then only
        ``dynamic_range_db`` limits the masks.
    dynamic_range_db:
        Bins more than this many dB (of amplitude, whatever the front-end's ``power``) below
        the mix's peak bin are in no mask.

    Returns
    -------
    numpy.ndarray
        ``(n_present, n_mels, frames)`` bool, in ``clip.object_names`` order; masks are disjoint.
    """
    import torch

    if logmel.sample_rate != clip.sample_rate:
        raise ValueError(
            f"clip {clip.clip_id} is sampled at {clip.sample_rate} Hz but the front-end expects "
            f"{logmel.sample_rate} Hz; use a LogMel config with the task's sample_rate"
        )
    if floor is None:
        # The front-end's clamp, from log10 units to a linear mel value.
        floor = 0.0 if logmel.floor is None else 10.0**logmel.floor
    elif not floor > 0:
        raise ValueError(f"floor must be positive (a linear mel value) or None, got {floor}")
    if not dynamic_range_db > 0:
        raise ValueError(f"dynamic_range_db must be positive, got {dynamic_range_db}")
    filterbank = logmel.mel_filterbank
    signals = np.concatenate([clip.sources, clip.background[None], clip.waveform[None]])
    wave = torch.as_tensor(signals, dtype=filterbank.dtype, device=filterbank.device)
    with torch.no_grad():
        magnitude = logmel.stft(wave).abs() ** logmel.power
        mel = torch.matmul(filterbank, magnitude).cpu().numpy()
    parts, mix = mel[:-1], mel[-1]
    # Mel values scale as amplitude ** power, so the amplitude dB range scales by power.
    relative = float(mix.max()) * 10.0 ** (-dynamic_range_db * logmel.power / 20.0)
    # The smallest positive float keeps silent bins (and all of a silent clip) out of the masks.
    threshold = max(floor, relative, float(np.finfo(mel.dtype).tiny))
    winner = parts.argmax(axis=0)
    n_present = len(clip.object_names)
    return (winner == np.arange(n_present)[:, None, None]) & (parts[:n_present] >= threshold)


def _library_version() -> str | None:
    try:
        return importlib.metadata.version("zennit-drsa")
    except importlib.metadata.PackageNotFoundError:
        return None


def _fingerprint(task: SyntheticTask) -> list[list[float]]:
    """Segment RMS of clip 0 of every class: detects a changed generator, with float slack."""
    rows = []
    for class_index in range(task.n_classes):
        wave = task.make_clip(class_index, 0).waveform.astype(np.float64)
        segments = np.array_split(wave, _FINGERPRINT_SEGMENTS)
        rows.append([float(f"{np.sqrt(np.mean(s**2)):.6g}") for s in segments])
    return rows


def _metadata(
    task: SyntheticTask, clips_per_class: int, splits: Sequence[float], subtype: str
) -> dict[str, Any]:
    return {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "library_version": _library_version(),
        "task": task.to_dict(),
        "clips_per_class": clips_per_class,
        "splits": dict(zip(_SPLIT_NAMES, (float(f) for f in splits), strict=True)),
        "subtype": subtype,
        "fingerprint": _fingerprint(task),
    }


def _metadata_differences(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """Keys whose values differ; the library version is informational and ignored."""
    differences = [
        key
        for key in wanted
        if key not in ("library_version", "fingerprint") and stored.get(key) != wanted[key]
    ]
    if not _fingerprints_match(stored.get("fingerprint"), wanted["fingerprint"]):
        differences.append("fingerprint")
    return differences


def _fingerprints_match(stored: Any, wanted: list[list[float]]) -> bool:
    try:
        stored_array = np.asarray(stored, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    wanted_array = np.asarray(wanted)
    return stored_array.shape == wanted_array.shape and bool(
        np.allclose(stored_array, wanted_array, rtol=1e-4, atol=1e-7)
    )


def _read_metadata(root: Path) -> dict[str, Any]:
    path = root / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {root} is not a synthetic dataset; create one with "
            "write_synthetic_dataset (or `audio-cnn synth`)"
        )
    meta = read_json(path, what="a synthetic dataset's metadata; regenerate the dataset")
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise ValueError(f"{path} does not describe a synthetic dataset (format {_FORMAT!r})")
    if meta.get("format_version") != _FORMAT_VERSION:
        raise ValueError(
            f"{path} has format version {meta.get('format_version')}, this library reads "
            f"version {_FORMAT_VERSION}; regenerate the dataset with this version"
        )
    return meta


def load_synthetic_task(
    root: str | os.PathLike[str], objects: Mapping[str, SoundObject] | None = None
) -> SyntheticTask:
    """Rebuild the task that wrote the dataset in ``root``.

    Parameters
    ----------
    root:
        Folder written by :func:`write_synthetic_dataset`.
    objects:
        Sound objects by name, needed only for objects that are not built in
        (:data:`TOY_OBJECTS`, :data:`SCENE_OBJECTS`).

    Raises
    ------
    ValueError
        If this library's generator no longer reproduces the stored clips (checked on clip 0
        of each class), since regenerated sources and masks would then not match the WAVs.
    """
    root = Path(root)
    meta = _read_metadata(root)
    task = SyntheticTask.from_dict(meta["task"], objects)
    if not _fingerprints_match(meta.get("fingerprint"), _fingerprint(task)):
        raise ValueError(
            f"{root}: this version of the generator does not reproduce the stored clips (the "
            f"dataset was written by library version {meta.get('library_version')}); "
            "regenerate the dataset, or install the version that wrote it"
        )
    return task


def clip_from_path(
    root: str | os.PathLike[str],
    relative_path: str | os.PathLike[str],
    task: SyntheticTask | None = None,
) -> SyntheticClip:
    """Regenerate the clip (with its sources) stored at ``root / relative_path``.

    Parameters
    ----------
    root:
        Folder written by :func:`write_synthetic_dataset`.
    relative_path:
        ``"<class_name>/<clip_id>.wav"`` as listed in ``splits/*.txt``; an absolute path inside
        ``root`` is accepted too. The file itself is not read.
    task:
        The dataset's task, to skip re-reading ``synthetic.json`` when looping over many clips
        (``load_synthetic_task(root)``).
    """
    task, indices = _clip_indices(root, relative_path, task)
    return task.make_clip(*indices)


def objects_from_path(
    root: str | os.PathLike[str],
    relative_path: str | os.PathLike[str],
    task: SyntheticTask | None = None,
) -> tuple[str, ...]:
    """Names of the objects sounding in the clip stored at ``root / relative_path`` (its
    ``object_names``), without synthesising it; arguments as for :func:`clip_from_path`."""
    task, indices = _clip_indices(root, relative_path, task)
    return task.present_objects(*indices)


def _clip_indices(
    root: str | os.PathLike[str],
    relative_path: str | os.PathLike[str],
    task: SyntheticTask | None,
) -> tuple[SyntheticTask, tuple[int, int]]:
    """The task (loaded if not given) and ``(class_index, clip_index)`` of a stored clip."""
    root = Path(root)
    if task is None:
        task = load_synthetic_task(root)
    path = Path(relative_path)
    if path.is_absolute():
        try:
            path = path.resolve().relative_to(root.resolve())
        except ValueError as error:
            raise ValueError(f"{relative_path} is not inside the dataset folder {root}") from error
    return task, task.parse_clip_path(path)


def _split_lists(
    task: SyntheticTask, clips_per_class: int, fractions: Sequence[float]
) -> dict[str, list[str]]:
    """Relative clip paths per split, stratified: every class is split in the same proportions."""
    bounds = np.round(np.cumsum(fractions) * clips_per_class).astype(int)
    bounds[-1] = clips_per_class
    lists: dict[str, list[str]] = {name: [] for name in _SPLIT_NAMES}
    for class_index in range(task.n_classes):
        rng = np.random.default_rng([_SPLIT_STREAM, task.seed, class_index])
        order = rng.permutation(clips_per_class)
        for name, chunk in zip(_SPLIT_NAMES, np.split(order, bounds[:-1]), strict=True):
            lists[name] += [task.clip_path(class_index, int(i)) for i in np.sort(chunk)]
    return lists


_SUBTYPES = ("PCM_16", "PCM_24", "FLOAT")


def _is_complete(path: Path, task: SyntheticTask, subtype: str) -> bool:
    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError):
        return False
    return (
        info.frames == task.n_samples
        and info.samplerate == task.sample_rate
        and info.channels == 1
        and info.subtype == subtype
    )


def write_synthetic_dataset(
    root: str | os.PathLike[str],
    task: SyntheticTask | None = None,
    clips_per_class: int = 2000,
    splits: Sequence[float] = (0.7, 0.15, 0.15),
    progress: bool = True,
    subtype: str = "PCM_16",
) -> Path:
    """Write a task's clips as WAV files with split lists and metadata.

    Layout: ``root/<class_name>/<clip_id>.wav`` (mono), ``root/splits/{train,val,test}.txt``
    (one relative path per line, each class split in the same proportions by a seeded
    shuffle) and ``root/synthetic.json`` (everything :func:`load_synthetic_task` needs to
    regenerate any clip's sources and masks from its file name). Every file is written to a
    temporary name and renamed into place. Calling again with the same arguments completes an
    interrupted run and skips complete files.

    Parameters
    ----------
    root:
        Target folder: missing, empty, or an earlier dataset written with the same arguments.
    task:
        The task; default :meth:`SyntheticTask.toy`.
    clips_per_class:
        Clips generated per class (indices ``0..clips_per_class - 1``).
    splits:
        Fractions ``(train, val, test)``, non-negative, summing to 1.
    progress:
        Show a tqdm progress bar.
    subtype:
        WAV sample format: ``"PCM_16"``, ``"PCM_24"`` or ``"FLOAT"``.

    Returns
    -------
    pathlib.Path
        ``root``.

    Raises
    ------
    FileExistsError
        If ``root`` is not empty and is not this very dataset.
    """
    task = SyntheticTask.toy() if task is None else task
    if isinstance(clips_per_class, bool) or not isinstance(clips_per_class, int | np.integer):
        raise TypeError(f"clips_per_class must be an int, got {type(clips_per_class).__name__}")
    if clips_per_class < 1:
        raise ValueError(f"clips_per_class must be at least 1, got {clips_per_class}")
    fractions = np.asarray(splits, dtype=np.float64)
    if (
        fractions.shape != (3,)
        or not np.all(fractions >= 0)
        or not math.isclose(fractions.sum(), 1.0, abs_tol=1e-6)
    ):
        raise ValueError(f"splits must be 3 non-negative fractions summing to 1, got {splits}")
    if subtype not in _SUBTYPES:
        raise ValueError(f"subtype must be one of {_SUBTYPES}, got {subtype!r}")
    root = Path(root)
    meta = _metadata(task, int(clips_per_class), fractions.tolist(), subtype)
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root} exists and is not a folder; choose another path")
    if root.is_dir() and any(root.iterdir()):
        if not (root / METADATA_FILE).is_file():
            raise FileExistsError(
                f"{root} is not empty and holds no {METADATA_FILE}; write the dataset to an "
                "empty or new folder"
            )
        differences = _metadata_differences(_read_metadata(root), meta)
        if differences:
            raise FileExistsError(
                f"{root} holds a synthetic dataset with different {', '.join(differences)}; "
                "write to an empty folder, or delete this one to regenerate it"
            )
    else:
        write_json_atomic(root / METADATA_FILE, meta)

    total = task.n_classes * int(clips_per_class)
    with tqdm(total=total, disable=not progress, desc="synthetic clips", unit="clip") as bar:
        for class_index in range(task.n_classes):
            for clip_index in range(int(clips_per_class)):
                path = root / task.clip_path(class_index, clip_index)
                if not _is_complete(path, task, subtype):
                    clip = task.make_clip(class_index, clip_index)
                    # Encoding in memory avoids libsndfile's fsync on close, which costs more
                    # than generating the clip.
                    encoded = io.BytesIO()
                    sf.write(encoded, clip.waveform, task.sample_rate, subtype, format="WAV")
                    with atomic_path(path) as tmp:
                        tmp.write_bytes(encoded.getvalue())
                bar.update()
    for name, paths in _split_lists(task, int(clips_per_class), fractions).items():
        write_text_atomic(root / "splits" / f"{name}.txt", "".join(p + "\n" for p in paths))
    return root
