"""What the analysis needs of a model's log-mel front-end, and an adapter for torchaudio's.

The analysis explains a classifier of log-mel spectrograms. Besides turning waveforms into its
input, the front-end tells the analysis where its frames lie in time, which mel band covers
which frequencies, how the log-mel was made (to sonify concept heatmaps by inverting it) and its
floor (the log-mel of silence, written where patch flipping removes evidence).
:class:`audio_cnn.LogMel` has all of that; :class:`TorchaudioLogMel` gives it to a
``torchaudio.transforms.MelSpectrogram`` followed by a logarithm, so that a user's own model
goes through the analysis without being an ``audio_cnn`` run.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from torchaudio.transforms import MelSpectrogram

__all__ = ["LogMelFrontend", "TorchaudioLogMel"]


@runtime_checkable
class LogMelFrontend(Protocol):
    """A log-mel front-end as the analysis uses it (``audio_cnn.LogMel`` is one).

    Attributes
    ----------
    sample_rate:
        Sample rate of the waveforms in Hz.
    n_fft, hop_length:
        STFT frame length and hop, in samples.
    n_mels:
        Mel bands: the height of the log-mel.
    power:
        Exponent of the STFT magnitude before the mel filterbank (1: magnitude, 2: power).
    chunk_samples:
        Samples of one model input (the clip length the model was trained on).
    floor:
        The log-mel of silence (the smallest output value); ``None`` if unbounded, in which
        case patch flipping needs an explicit removal value.
    window:
        The analysis window ``(n_fft,)``; its device is the front-end's.
    mel_filterbank:
        ``(n_mels, n_fft // 2 + 1)``: mel magnitude = ``mel_filterbank @ |stft| ** power``.
    """

    sample_rate: int
    n_fft: int
    hop_length: int
    n_mels: int
    power: float
    chunk_samples: int
    floor: float | None
    window: torch.Tensor
    mel_filterbank: torch.Tensor

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        """Waveforms ``(B, T)`` → the model's input ``(B, 1, n_mels, frames)``."""
        ...

    def stft(self, waveform: torch.Tensor) -> torch.Tensor:
        """Complex STFT ``(B, n_fft // 2 + 1, frames)`` of exactly the output frames."""
        ...

    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """Inverse of :meth:`stft`: ``(B, n_fft // 2 + 1, frames)`` → ``(B, length)``."""
        ...

    def frame_bounds(self, n_frames: int) -> np.ndarray:
        """Sample range ``[start, stop)`` of each output frame, int64 ``(frames, 2)``."""
        ...

    def frame_times(self, n_frames: int) -> np.ndarray:
        """Centre of each output frame in seconds, ``(frames,)``."""
        ...

    def mel_frequencies(self) -> np.ndarray:
        """Centre frequency of each mel band in Hz, ``(n_mels,)``."""
        ...

    def to(self, device: torch.device | str) -> LogMelFrontend:
        """The front-end on ``device``."""
        ...


class TorchaudioLogMel(nn.Module):
    """A ``torchaudio.transforms.MelSpectrogram`` and a log10, as a :class:`LogMelFrontend`.

    ``forward`` computes ``log10(mel(waveform) + offset)``, clamped at ``floor``, with a
    channel axis: ``(B, T)`` → ``(B, 1, n_mels, frames)``, in log10 units like
    ``audio_cnn.LogMel`` (floors and thresholds mean the same for both). The frame grid,
    window, filterbank and inverse STFT are read from the wrapped transform, so concept
    heatmaps can be placed in time and frequency and sonified.

    Parameters
    ----------
    mel:
        The transform, e.g. ``MelSpectrogram(sample_rate=16000, n_fft=512, hop_length=256,
        n_mels=64)``; its settings are used as they are.
    chunk_seconds:
        Length of one model input in seconds (the clips the model is trained on).
    offset:
        Added before the logarithm, so silence maps to ``log10(offset)``.
    floor:
        Lower bound of the output; default ``log10(offset)``, the log-mel of silence.
    """

    window: torch.Tensor

    def __init__(
        self,
        mel: MelSpectrogram,
        *,
        chunk_seconds: float,
        offset: float = 1e-6,
        floor: float | None = None,
    ) -> None:
        super().__init__()
        if not (offset > 0 and math.isfinite(offset)):
            raise ValueError(f"offset must be a positive number, got {offset!r}")
        if not (chunk_seconds > 0 and math.isfinite(chunk_seconds)):
            raise ValueError(f"chunk_seconds must be a positive number, got {chunk_seconds!r}")
        spectrogram = mel.spectrogram
        if spectrogram.power is None or spectrogram.normalized or spectrogram.pad:
            raise ValueError(
                "the MelSpectrogram must take a magnitude power (power=1.0 or 2.0) without "
                "normalisation or extra padding (normalized=False, pad=0), so that its frames "
                "can be placed in time and its STFT inverted"
            )
        self.mel = mel
        self.offset = float(offset)
        self.floor = math.log10(offset) if floor is None else float(floor)
        self.sample_rate = int(mel.sample_rate)
        self.n_fft = int(spectrogram.n_fft)
        self.hop_length = int(spectrogram.hop_length)
        self.win_length = int(spectrogram.win_length)
        self.n_mels = int(mel.n_mels)
        self.power = float(spectrogram.power)
        self.center = bool(spectrogram.center)
        self.pad_mode = str(spectrogram.pad_mode)
        self.chunk_samples = round(chunk_seconds * self.sample_rate)
        # torch.stft centres a shorter window in n_fft samples: the frame's full span.
        window = spectrogram.window
        left = (self.n_fft - window.shape[0]) // 2
        full = torch.nn.functional.pad(window, (left, self.n_fft - window.shape[0] - left))
        self.register_buffer("window", full, persistent=False)

    @property
    def mel_filterbank(self) -> torch.Tensor:
        """``(n_mels, n_fft // 2 + 1)`` on the module's device."""
        return self.mel.mel_scale.fb.mT

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """Log-mel ``(B, 1, n_mels, frames)`` of waveforms ``(B, T)``."""
        logmel = torch.log10(self.mel(waveform) + self.offset)
        return logmel.clamp(min=self.floor).unsqueeze(1)

    def stft(self, waveform: torch.Tensor) -> torch.Tensor:
        """Complex STFT ``(B, n_fft // 2 + 1, frames)``, the frames of :meth:`forward`."""
        return torch.stft(
            waveform,
            self.n_fft,
            hop_length=self.hop_length,
            window=self.window.to(waveform.dtype),
            center=self.center,
            pad_mode=self.pad_mode,
            return_complex=True,
        )

    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """Inverse of :meth:`stft` (overlap-add): ``(B, n_freq, frames)`` → ``(B, length)``."""
        return torch.istft(
            spec,
            self.n_fft,
            hop_length=self.hop_length,
            window=self.window.to(spec.real.dtype),
            center=self.center,
            length=length,
        )

    def frame_bounds(self, n_frames: int) -> np.ndarray:
        """Sample range ``[start, stop)`` of each frame; centred frames may start before 0."""
        start = np.arange(n_frames, dtype=np.int64) * self.hop_length
        if self.center:
            start -= self.n_fft // 2
        return np.stack([start, start + self.n_fft], axis=1)

    def frame_times(self, n_frames: int) -> np.ndarray:
        """Centre of each frame in seconds, ``(frames,)``."""
        return (self.frame_bounds(n_frames)[:, 0] + self.n_fft // 2) / self.sample_rate

    def mel_frequencies(self) -> np.ndarray:
        """Centre frequency of each mel band in Hz: the frequency of its filter's peak."""
        bins = np.linspace(0.0, self.sample_rate / 2, self.n_fft // 2 + 1)
        return bins[self.mel_filterbank.detach().cpu().numpy().argmax(axis=1)]
