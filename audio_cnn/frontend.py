"""Log-mel front-end: waveforms to log-mel spectrograms, with exact frame-to-sample alignment.

The default configuration reproduces the reference pipeline: a librosa-style ``center=True``
STFT (zero padding of ``n_fft // 2`` samples at both ends, periodic Hann window) → magnitude →
HTK mel filterbank without filter normalisation, 0–8 kHz → ``log10(x + 1e-7)`` → clamp at −4
→ the first frame dropped → 128 frames kept.

Frame ``t`` of the (uncut) STFT covers the samples ``[t * hop - offset, t * hop - offset +
n_fft)`` of the input, where ``offset = n_fft // 2`` with centring and 0 without. Output frame
``k`` is STFT frame ``t = drop_first_frames + k``; only the kept frames are computed. The same
framing serves :meth:`LogMel.stft` and :meth:`LogMel.istft`, so relevance maps can be mapped back
to time, and sonified, on exactly the samples the model saw.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LogMel", "LogMelConfig", "librosa_logmel"]

# Periodic windows, as librosa/scipy build them for spectral analysis (``fftbins=True``).
_WINDOWS: dict[str, Callable[..., torch.Tensor]] = {
    "hann": torch.hann_window,
    "hamming": torch.hamming_window,
    "blackman": torch.blackman_window,
    "bartlett": torch.bartlett_window,
}
_PAD_MODES = ("constant", "reflect")
_NORMS = (None, "slaney")
_CPU_BLOCK = 2**20  # frame samples per block of clips on the CPU (see LogMel.forward)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _as_float(name: str, value: Any) -> float:
    """``value`` as a finite float; JSON may hand over ints for float fields."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class LogMelConfig:
    """Settings of a :class:`LogMel` front-end (stored in checkpoints via :meth:`to_dict`).

    Parameters
    ----------
    sample_rate:
        Sample rate of the input waveforms in Hz.
    n_fft:
        STFT frame length in samples (also the window length).
    hop_length:
        Samples between the starts of consecutive frames.
    n_mels:
        Number of mel bands.
    f_min, f_max:
        Frequency range of the mel filterbank in Hz; ``f_max=None`` means ``sample_rate / 2``.
    power:
        Exponent applied to the STFT magnitude (1: magnitude, 2: power).
    log_offset:
        Added before ``log10`` so silence maps to ``log10(log_offset)`` instead of ``-inf``.
    clamp_min:
        Lower bound of the log-mel values in log10 units; ``None`` disables clamping.
    drop_first_frames:
        STFT frames discarded at the start (the reference drops one).
    n_frames:
        Frames kept after the dropped ones; ``None`` keeps all frames the input yields.
    chunk_seconds:
        Length of the audio chunks the model is trained on, in seconds.
    window:
        Periodic analysis window: ``"hann"``, ``"hamming"``, ``"blackman"`` or ``"bartlett"``.
    htk:
        HTK mel scale (``True``) or the Slaney scale (``False``).
    norm:
        Mel filter normalisation: ``None`` (peak 1) or ``"slaney"`` (unit area).
    center:
        Centre frames on ``t * hop_length`` by padding ``n_fft // 2`` samples at both ends.
    pad_mode:
        Padding used when centring: ``"constant"`` (zeros, librosa's default) or ``"reflect"``.
    """

    sample_rate: int = 16000
    n_fft: int = 800
    hop_length: int = 360
    n_mels: int = 128
    f_min: float = 0.0
    f_max: float | None = 8000.0
    power: float = 1.0
    log_offset: float = 1e-7
    clamp_min: float | None = -4.0
    drop_first_frames: int = 1
    n_frames: int | None = 128
    chunk_seconds: float = 3.0
    window: str = "hann"
    htk: bool = True
    norm: str | None = None
    center: bool = True
    pad_mode: str = "constant"

    PRESETS: ClassVar[tuple[str, ...]] = ("gtzan", "toy")

    def __post_init__(self) -> None:
        _check_int("sample_rate", self.sample_rate, 1)
        _check_int("n_fft", self.n_fft, 2)
        _check_int("hop_length", self.hop_length, 1)
        _check_int("n_mels", self.n_mels, 1)
        _check_int("drop_first_frames", self.drop_first_frames, 0)
        if self.n_frames is not None:
            _check_int("n_frames", self.n_frames, 1)
        # Normalise numbers so configs read back from JSON compare equal to presets.
        for name in ("f_min", "power", "log_offset", "chunk_seconds"):
            object.__setattr__(self, name, _as_float(name, getattr(self, name)))
        for name in ("f_max", "clamp_min"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _as_float(name, getattr(self, name)))
        nyquist = self.sample_rate / 2
        if not 0.0 <= self.f_min < _upper_frequency(self) <= nyquist:
            raise ValueError(
                f"need 0 <= f_min < f_max <= sample_rate / 2 = {nyquist} Hz, "
                f"got f_min={self.f_min}, f_max={self.f_max}"
            )
        for name in ("power", "log_offset", "chunk_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.window not in _WINDOWS:
            raise ValueError(f"unknown window {self.window!r}; choose one of {sorted(_WINDOWS)}")
        if self.norm not in _NORMS:
            raise ValueError(f"norm must be one of {_NORMS}, got {self.norm!r}")
        if self.pad_mode not in _PAD_MODES:
            raise ValueError(f"pad_mode must be one of {_PAD_MODES}, got {self.pad_mode!r}")
        for name in ("htk", "center"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        needed = _required_samples(self, self.n_frames or 1)
        if self.chunk_samples < needed:
            raise ValueError(
                f"a chunk of {self.chunk_seconds} s ({self.chunk_samples} samples) is too short "
                f"for {self.n_frames} frames after dropping {self.drop_first_frames}: "
                f"it needs {needed} samples; raise chunk_seconds or lower n_frames"
            )

    @property
    def chunk_samples(self) -> int:
        """Samples per chunk: ``round(chunk_seconds * sample_rate)``."""
        return round(self.chunk_seconds * self.sample_rate)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> LogMelConfig:
        """Named settings, optionally with some fields replaced.

        ``"gtzan"``: the reference pipeline (the defaults); a 3 s chunk of 48000 samples at
        16 kHz gives a 1×128×128 input. ``"toy"``: n_fft 480, hop 240, 64 mels, 64 frames,
        1 s chunks (16000 samples) → 1×64×64.
        """
        presets = {
            "gtzan": cls(),
            "toy": cls(n_fft=480, hop_length=240, n_mels=64, n_frames=64, chunk_seconds=1.0),
        }
        if name not in presets:
            raise ValueError(f"unknown front-end preset {name!r}; choose one of {cls.PRESETS}")
        return dataclasses.replace(presets[name], **overrides)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary of all fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LogMelConfig:
        """Rebuild a configuration from :meth:`to_dict` output; missing keys take defaults.

        Raises ``ValueError`` for unknown keys (e.g. a typo or a newer format).
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown LogMelConfig keys {unknown}; known keys: {sorted(known)}")
        return cls(**data)


def _upper_frequency(config: LogMelConfig) -> float:
    """Upper edge of the filterbank in Hz (``f_max``, or the Nyquist frequency if ``None``)."""
    return config.sample_rate / 2 if config.f_max is None else config.f_max


def _offset(config: LogMelConfig) -> int:
    """Samples between the start of STFT frame 0 and the signal start (centre padding)."""
    return config.n_fft // 2 if config.center else 0


def _available_frames(config: LogMelConfig, length: int) -> int:
    """STFT frames (before dropping) that a signal of ``length`` samples yields."""
    padded = length + 2 * _offset(config)
    return 0 if padded < config.n_fft else 1 + (padded - config.n_fft) // config.hop_length


def _required_samples(config: LogMelConfig, n_frames: int) -> int:
    """Smallest signal length that yields ``n_frames`` frames after the dropped ones."""
    last = config.drop_first_frames + n_frames - 1
    needed = max(1, last * config.hop_length + config.n_fft - 2 * _offset(config))
    if config.center and config.pad_mode == "reflect":
        # Reflection padding needs more samples than it pads.
        needed = max(needed, _offset(config) + 1)
    return needed


def _mel_filterbank(config: LogMelConfig) -> np.ndarray:
    """Mel filterbank ``(n_mels, n_fft // 2 + 1)`` in float64, exactly as librosa builds it."""
    # Imported here: librosa pulls in scipy.signal (about a second), needed only at construction.
    import librosa

    return librosa.filters.mel(
        sr=config.sample_rate,
        n_fft=config.n_fft,
        n_mels=config.n_mels,
        fmin=config.f_min,
        fmax=config.f_max,
        htk=config.htk,
        norm=config.norm,
        dtype=np.float64,
    )


def _filter_blocks(filterbank: np.ndarray, size: int = 16) -> list[tuple[int, int, int, int]]:
    """Split the bands into blocks of ``size``: ``(first band, stop band, first bin, stop bin)``.

    Blocks of 16 bands measured 3× faster than the full matmul for the reference filterbank
    (one CPU thread); smaller blocks cost more in per-call overhead than they save.
    """
    blocks = []
    for m0 in range(0, filterbank.shape[0], size):
        m1 = min(m0 + size, filterbank.shape[0])
        bins = np.flatnonzero(filterbank[m0:m1].any(axis=0))
        lo, hi = (int(bins[0]), int(bins[-1]) + 1) if bins.size else (0, 0)
        blocks.append((m0, m1, lo, hi))
    return blocks


def librosa_logmel(waveform: np.ndarray, config: LogMelConfig | None = None) -> np.ndarray:
    """The reference pipeline computed with librosa, one clip at a time (for cross-checks).

    Parameters
    ----------
    waveform:
        One mono clip ``(T,)``, float32 or float64.
    config:
        Front-end settings; default :class:`LogMelConfig`.

    Returns
    -------
    numpy.ndarray
        Log-mel ``(n_mels, frames)`` in log10 units, the same frames as :class:`LogMel`.
    """
    import librosa

    c = config if config is not None else LogMelConfig()
    mel = librosa.feature.melspectrogram(
        y=waveform,
        sr=c.sample_rate,
        n_fft=c.n_fft,
        hop_length=c.hop_length,
        window=c.window,
        center=c.center,
        pad_mode=c.pad_mode,
        power=c.power,
        n_mels=c.n_mels,
        fmin=c.f_min,
        fmax=c.f_max,
        htk=c.htk,
        norm=c.norm,
    )
    logmel = np.log10(mel + c.log_offset)
    if c.clamp_min is not None:
        logmel = np.maximum(logmel, c.clamp_min)
    stop = None if c.n_frames is None else c.drop_first_frames + c.n_frames
    return logmel[:, c.drop_first_frames : stop]


class LogMel(nn.Module):
    """Waveforms ``(B, T)`` or ``(B, 1, T)`` to log-mel spectrograms ``(B, 1, n_mels, frames)``.

    Differentiable, batched and deterministic. Works on the device of the module (move it with
    ``.to(device)``; the window and filterbank are non-persistent buffers) and in the input's
    floating dtype; float16/bfloat16 inputs are computed in float32 and returned in their dtype.

    Parameters
    ----------
    config:
        Front-end settings; default :class:`LogMelConfig` (the reference pipeline).
    **overrides:
        Fields of ``config`` to replace, e.g. ``LogMel(n_frames=None)``.
    """

    window: torch.Tensor
    _filterbank: torch.Tensor

    def __init__(self, config: LogMelConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        config = config if config is not None else LogMelConfig()
        if not isinstance(config, LogMelConfig):
            raise TypeError(
                f"config must be a LogMelConfig, got {type(config).__name__}; use "
                "LogMel.preset(name) or LogMel(LogMelConfig.from_dict(mapping))"
            )
        self.config = dataclasses.replace(config, **overrides) if overrides else config
        window = _WINDOWS[self.config.window](self.config.n_fft, periodic=True, dtype=torch.float64)
        dtype = torch.get_default_dtype()
        self.register_buffer("window", window.to(dtype), persistent=False)
        filterbank = _mel_filterbank(self.config)
        self._blocks = _filter_blocks(filterbank)
        self.register_buffer(
            "_filterbank", torch.from_numpy(filterbank).to(dtype), persistent=False
        )

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> LogMel:
        """A front-end with named settings (see :meth:`LogMelConfig.preset`)."""
        return cls(LogMelConfig.preset(name, **overrides))

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"sample_rate={c.sample_rate}, n_fft={c.n_fft}, hop_length={c.hop_length}, "
            f"n_mels={c.n_mels}, n_frames={c.n_frames}, drop_first_frames={c.drop_first_frames}"
        )

    # ----- the frame grid and scales, flat (what an analysis of the model reads) ---------------

    @property
    def sample_rate(self) -> int:
        """Sample rate of the input waveforms in Hz."""
        return self.config.sample_rate

    @property
    def n_fft(self) -> int:
        """STFT frame length in samples (also the window length)."""
        return self.config.n_fft

    @property
    def hop_length(self) -> int:
        """Samples between the starts of consecutive frames."""
        return self.config.hop_length

    @property
    def n_mels(self) -> int:
        """Number of mel bands (the height of the output)."""
        return self.config.n_mels

    @property
    def power(self) -> float:
        """Exponent of the STFT magnitude before the mel filterbank (1: magnitude)."""
        return self.config.power

    @property
    def chunk_samples(self) -> int:
        """Samples of one model input chunk (``chunk_seconds`` at ``sample_rate``)."""
        return self.config.chunk_samples

    @property
    def floor(self) -> float | None:
        """The smallest output value, in log10 units (``clamp_min``); ``None``: not clamped.

        The log-mel of silence: the value to write where evidence is removed (patch flipping).
        """
        return self.config.clamp_min

    @property
    def n_freq(self) -> int:
        """Number of STFT frequency bins, ``n_fft // 2 + 1``."""
        return self.config.n_fft // 2 + 1

    @property
    def mel_filterbank(self) -> torch.Tensor:
        """Mel filterbank ``(n_mels, n_fft // 2 + 1)`` on the module's device (peak 1 per band)."""
        return self._filterbank

    # ----- alignment ---------------------------------------------------------------------------

    def n_output_frames(self, length: int) -> int:
        """Output frames for a signal of ``length`` samples (``n_frames`` unless it is ``None``)."""
        if self.config.n_frames is not None:
            return self.config.n_frames
        return max(0, _available_frames(self.config, length) - self.config.drop_first_frames)

    def required_samples(self, n_frames: int | None = None) -> int:
        """Smallest input length in samples giving ``n_frames`` output frames.

        ``n_frames`` defaults to ``config.n_frames`` (one frame when that is ``None``).
        """
        n_frames = n_frames if n_frames is not None else (self.config.n_frames or 1)
        _check_int("n_frames", n_frames, 1)
        return _required_samples(self.config, n_frames)

    def frame_bounds(self, n_frames: int | None = None) -> np.ndarray:
        """Sample range ``[start, stop)`` of each output frame, int64 array ``(frames, 2)``.

        Indices are in the coordinates of the unpadded input: with centring, the first and last
        frames may start before 0 or end after the signal's length (those samples are padding).
        Output frame ``k`` is STFT frame ``drop_first_frames + k``.

        Parameters
        ----------
        n_frames:
            Number of output frames; default ``config.n_frames``. Required when that is ``None``
            (use :meth:`n_output_frames` to get it for a signal length).
        """
        n_frames = n_frames if n_frames is not None else self.config.n_frames
        if n_frames is None:
            raise ValueError(
                "this front-end keeps all frames (n_frames=None): pass n_frames, "
                "e.g. logmel.n_output_frames(length)"
            )
        _check_int("n_frames", n_frames, 0)
        c = self.config
        t = np.arange(c.drop_first_frames, c.drop_first_frames + n_frames, dtype=np.int64)
        start = t * c.hop_length - _offset(c)
        return np.stack([start, start + c.n_fft], axis=1)

    def frame_centers(self, n_frames: int | None = None) -> np.ndarray:
        """Centre sample of each output frame (window peak, ``start + n_fft // 2``), int64."""
        return self.frame_bounds(n_frames)[:, 0] + self.config.n_fft // 2

    def frame_times(self, n_frames: int | None = None) -> np.ndarray:
        """Centre of each output frame in seconds, float64 ``(frames,)``."""
        return self.frame_centers(n_frames) / self.config.sample_rate

    def mel_frequencies(self) -> np.ndarray:
        """Centre frequency in Hz of each mel band (the peak of its triangle), ``(n_mels,)``."""
        import librosa

        c = self.config
        edges = librosa.mel_frequencies(
            c.n_mels + 2, fmin=c.f_min, fmax=_upper_frequency(c), htk=c.htk
        )
        return edges[1:-1]

    # ----- computation -------------------------------------------------------------------------

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """Log-mel spectrogram ``(B, 1, n_mels, frames)`` in log10 units of ``waveform``.

        Raises ``ValueError`` for a wrong shape, non-finite samples (naming the batch items) or
        a signal too short for ``n_frames`` frames; ``TypeError`` for a non-floating dtype.
        """
        signal = self._validated(waveform)
        if signal.device.type == "cpu":
            # Large intermediates cost more in page faults and cache misses than the FFT
            # itself: blocks of about 2**20 frame samples measured 2× faster than 64 clips
            # at once. Accelerators get the whole batch.
            per_block = max(
                1, _CPU_BLOCK // (self.n_output_frames(signal.shape[1]) * self.config.n_fft)
            )
            logmel = torch.cat([self._logmel(block) for block in signal.split(per_block)])
        else:
            logmel = self._logmel(signal)
        return logmel.unsqueeze(1).to(waveform.dtype)

    def _logmel(self, signal: torch.Tensor) -> torch.Tensor:
        """Log-mel ``(B, n_mels, frames)`` of a validated ``(B, T)`` batch."""
        c = self.config
        spectrum = self._spectrum(signal)
        if spectrum.requires_grad:
            # |z| has a zero subgradient at z = 0, where sqrt(re² + im²) would give NaN.
            magnitude = spectrum.abs().pow(c.power)
        else:
            # In place on the fresh spectrum: about 1.6× faster than the complex abs().
            parts = torch.view_as_real(spectrum).square_()
            magnitude = parts[..., 0] + parts[..., 1]
            if c.power != 2.0:
                magnitude.pow_(c.power / 2)
        filterbank = self._filterbank.to(magnitude.dtype)
        # Each block of mel bands only sees the frequency bins under its triangles, which
        # skips most of the (mostly zero) filterbank: (bands, bins) @ (B, bins, frames).
        mel = torch.cat(
            [
                torch.matmul(filterbank[m0:m1, lo:hi], magnitude[..., lo:hi].mT)
                for m0, m1, lo, hi in self._blocks
            ],
            dim=1,
        )
        logmel = torch.log10(mel + c.log_offset)
        return logmel if c.clamp_min is None else logmel.clamp(min=c.clamp_min)

    def stft(self, waveform: torch.Tensor) -> torch.Tensor:
        """Complex STFT ``(B, n_fft // 2 + 1, frames)`` of exactly the output frames.

        Same framing, window and dropped frames as :meth:`forward`; the log-mel output is
        ``log10(mel_filterbank @ |stft| ** power + log_offset)`` (then clamped).
        """
        return self._spectrum(self._validated(waveform)).mT

    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """Invert :meth:`stft` by windowed overlap-add: ``(B, n_freq, frames)`` → ``(B, length)``.

        Frame ``k`` of ``spec`` is placed at ``frame_bounds(frames)[k]`` and the sum is divided by
        the summed squared window. Samples no kept frame covers (or covers only with zero window
        weight) are 0. ``istft(stft(x), x.shape[-1])`` reproduces ``x`` on the covered samples.
        """
        if not torch.is_tensor(spec) or not spec.is_complex():
            raise TypeError(f"spec must be a complex tensor, got {_describe(spec)}")
        if spec.dim() != 3 or spec.shape[1] != self.n_freq or spec.shape[2] < 1:
            raise ValueError(
                f"spec must have shape (B, {self.n_freq}, frames >= 1), got {tuple(spec.shape)}"
            )
        _check_int("length", length, 1)
        c = self.config
        batch, _, n_frames = spec.shape
        frames = torch.fft.irfft(spec.mT, n=c.n_fft, dim=-1)
        window = self.window.to(frames.dtype)
        signal = _overlap_add(frames * window, c.hop_length)
        weight = _overlap_add(window.square().expand(1, n_frames, c.n_fft), c.hop_length)
        signal = torch.where(
            weight > 0, signal / weight.clamp(min=torch.finfo(weight.dtype).tiny), 0
        )
        span = signal.shape[1]
        # Place the span (starting at the first frame's start) into [0, length).
        start = int(self.frame_bounds(n_frames)[0, 0])
        lo, hi = max(start, 0), min(start + span, length)
        out = signal.new_zeros(batch, length)
        if lo < hi:
            out[:, lo:hi] = signal[:, lo - start : hi - start]
        return out

    def _validated(self, waveform: torch.Tensor) -> torch.Tensor:
        """Check a waveform batch; return it as ``(B, T)`` in the computation dtype."""
        if not torch.is_tensor(waveform):
            raise TypeError(f"waveform must be a torch.Tensor, got {_describe(waveform)}")
        if not waveform.is_floating_point():
            raise TypeError(
                f"waveform must have a floating dtype, got {waveform.dtype}; "
                "convert integer PCM with waveform.float() / 32768 (or your format's full scale)"
            )
        if waveform.dim() == 3 and waveform.shape[1] == 1:
            waveform = waveform[:, 0]
        if waveform.dim() != 2:
            raise ValueError(
                f"waveform must have shape (B, T) or (B, 1, T) (mono), "
                f"got {tuple(waveform.shape)}; add a batch axis with waveform[None] "
                "or mix channels down first"
            )
        if waveform.shape[0] == 0:
            raise ValueError("waveform batch is empty (B = 0)")
        if waveform.device != self.window.device:
            raise ValueError(
                f"waveform is on {waveform.device} but the front-end is on "
                f"{self.window.device}: move one of them, e.g. logmel.to(waveform.device)"
            )
        # A sum is non-finite whenever a sample is (or on overflow): a cheap first check.
        if not bool(torch.isfinite(waveform.sum(dim=1)).all()):
            finite = torch.isfinite(waveform).all(dim=1)
            if not bool(finite.all()):
                bad = torch.nonzero(~finite).flatten().tolist()
                raise ValueError(f"waveform has NaN or Inf samples in batch item(s) {bad[:20]}")
        length = waveform.shape[1]
        needed = _required_samples(self.config, self.config.n_frames or 1)
        if length < needed:
            raise ValueError(
                f"waveform has {length} samples but {self._frames_wanted()} need at least {needed} "
                f"({needed / self.config.sample_rate:.4f} s): pad or use longer chunks"
            )
        if waveform.dtype not in (torch.float32, torch.float64):
            waveform = waveform.float()  # FFTs need single or double precision
        return waveform

    def _frames_wanted(self) -> str:
        """How many frames the configuration asks for, in words (for error messages)."""
        c = self.config
        wanted = f"{c.n_frames} frames" if c.n_frames is not None else "one frame"
        return f"{wanted} after dropping {c.drop_first_frames}"

    def _spectrum(self, waveform: torch.Tensor) -> torch.Tensor:
        """Complex spectrum ``(B, frames, n_freq)`` of the kept frames of ``(B, T)`` input."""
        c = self.config
        length = waveform.shape[1]
        n_frames = self.n_output_frames(length)
        # Only the samples under the kept frames are padded and framed.
        start = c.drop_first_frames * c.hop_length - _offset(c)
        stop = start + (n_frames - 1) * c.hop_length + c.n_fft
        pad = (max(0, -start), max(0, stop - length))
        if c.pad_mode == "constant":
            segment = F.pad(waveform[:, max(start, 0) : min(stop, length)], pad)
        else:
            # Reflection must see the true signal edge, so pad first and cut after.
            padded = F.pad(waveform[:, None], pad, mode=c.pad_mode)[:, 0]
            segment = padded[:, start + pad[0] : stop + pad[0]]
        frames = segment.unfold(-1, c.n_fft, c.hop_length)
        return torch.fft.rfft(frames * self.window.to(frames.dtype), dim=-1)


def _overlap_add(frames: torch.Tensor, hop_length: int) -> torch.Tensor:
    """Sum frames ``(N, frames, n_fft)`` placed ``hop_length`` apart into ``(N, span)``."""
    n, n_frames, n_fft = frames.shape
    span = (n_frames - 1) * hop_length + n_fft
    folded = F.fold(frames.mT, (1, span), (1, n_fft), stride=(1, hop_length))
    return folded.reshape(n, span)


def _describe(value: Any) -> str:
    if torch.is_tensor(value):
        return f"a tensor of dtype {value.dtype}"
    return type(value).__name__
