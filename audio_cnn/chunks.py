"""Chunking datasets: clips become fixed-length float32 waveform chunks for the model.

:class:`RandomChunkDataset` (training: one random crop per clip per epoch, a pure function of
``(seed, epoch, index)`` so resumed runs see the same crops) and :class:`EvenChunkDataset`
(evaluation: evenly spaced crops) read clips through an ``audio`` loader, normally a
:class:`~audio_cnn.audio_io.DecodedAudioCache`, so files are decoded once, not per epoch.

Chunk length and clip length must fit: when most clips are shorter than a chunk (zero
padding) or a preset with longer chunks fits them (cropping away context), both datasets
warn, with the preset to choose (:func:`chunk_fit_warning`, :func:`fitting_preset`).
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from audio_cnn.audio_io import AudioDecodeError, peak_normalize
from audio_cnn.datasets import ClipRecord, name_some
from audio_cnn.frontend import LogMelConfig

__all__ = [
    "ChunkSummary",
    "EvenChunkDataset",
    "RandomChunkDataset",
    "chunk_fit_warning",
    "even_chunk_starts",
    "fitting_preset",
]

AudioLoader = Callable[[Path], np.ndarray]


@dataclass(frozen=True)
class ChunkSummary:
    """What a chunking dataset kept and dropped; ``print`` it to log it.

    Attributes
    ----------
    clips:
        Clips kept.
    items:
        Chunks served per epoch.
    padded:
        Kept clips shorter than one chunk, zero-padded at the end.
    skipped:
        Clips shorter than one chunk that were dropped (``short="skip"``).
    unreadable:
        Clips dropped because they could not be decoded (listed in ``dataset.unreadable``).
    """

    clips: int
    items: int
    padded: int
    skipped: int
    unreadable: int

    def __str__(self) -> str:
        return (
            f"{self.clips} clips, {self.items} chunks per epoch; short clips: {self.padded} "
            f"padded, {self.skipped} skipped; {self.unreadable} unreadable clips skipped"
        )


def _check_chunking(chunk_samples: int, short: str, normalize: bool) -> int:
    chunk_samples = operator.index(chunk_samples)
    if chunk_samples <= 0:
        raise ValueError(f"chunk_samples must be positive, got {chunk_samples}")
    if short not in ("pad", "skip"):
        raise ValueError(f"short must be 'pad' or 'skip', got {short!r}")
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize must be True or False, got {normalize!r}")
    return chunk_samples


def _preset_chunks() -> dict[str, float]:
    """Chunk length in seconds of each front-end preset, shortest first."""
    chunks = {name: LogMelConfig.preset(name).chunk_seconds for name in LogMelConfig.PRESETS}
    return dict(sorted(chunks.items(), key=lambda item: item[1]))


def fitting_preset(median_seconds: float) -> str:
    """The front-end preset whose chunks fit clips of this typical length.

    That is the preset with the longest chunks no longer than ``median_seconds``, so the
    median clip is never zero-padded; when every preset's chunks are longer, the one with
    the shortest chunks. With the presets of :class:`~audio_cnn.frontend.LogMelConfig`:
    ``"toy"`` (1 s chunks) below 3 s, ``"gtzan"`` (3 s chunks) from 3 s on.

    Parameters
    ----------
    median_seconds:
        Median clip duration in seconds.

    Returns
    -------
    str
        A name in ``LogMelConfig.PRESETS``.
    """
    chunks = _preset_chunks()
    fitting = [name for name, seconds in chunks.items() if seconds <= median_seconds]
    return fitting[-1] if fitting else next(iter(chunks))


def chunk_fit_warning(
    lengths: Sequence[float] | np.ndarray,
    chunk_length: float,
    *,
    sample_rate: float | None,
    short: str = "pad",
) -> str | None:
    """Say so when clips and chunks do not fit: most clips shorter than a chunk, or most
    longer than the chunks of a preset that would fit them better.

    Parameters
    ----------
    lengths:
        Clip lengths, in samples at ``sample_rate`` (durations in seconds with
        ``sample_rate=1``).
    chunk_length:
        Chunk length in the same unit.
    sample_rate:
        Hz; ``None`` when unknown: lengths are then told in samples, and no preset (whose
        chunks are in seconds) can be suggested.
    short:
        What happens to clips shorter than a chunk: ``"pad"`` (zero-padded) or ``"skip"``
        (left out), for the wording.

    Returns
    -------
    str or None
        The warning text (how many clips, by how much, and what to do), or ``None`` when
        most clips fit.
    """
    lengths = np.asarray(lengths, dtype=float)
    n = lengths.size
    if n == 0:
        return None
    rate = 1.0 if sample_rate is None else float(sample_rate)

    def shown(length: float) -> str:
        return f"{length:.0f} samples" if sample_rate is None else f"{length / rate:.2f} s"

    median = float(np.median(lengths))
    # Presets name chunk lengths in seconds, so they can only be suggested at a known rate.
    better = None if sample_rate is None else fitting_preset(median / rate)
    better_chunk = None if better is None else _preset_chunks()[better] * rate
    advice = (
        ""
        if better is None
        else f"choose the preset whose chunks fit these clips: --preset {better} "
        f"({shown(better_chunk)} chunks)"
    )
    short_clips = lengths[lengths < chunk_length]
    if 2 * short_clips.size > n:
        gap = float(np.median(chunk_length - short_clips))
        fate = (
            f"zero-padded by a median {shown(gap)} ({gap / chunk_length:.0%} of each chunk "
            "is silence the model learns from)"
            if short == "pad"
            else "left out (short clips are skipped)"
        )
        if better_chunk is None:
            advice = "use shorter chunks"
        elif better_chunk >= chunk_length:
            advice = (
                "no preset has shorter chunks; set short_clips to 'skip' to leave the short "
                "clips out, or use longer recordings"
            )
        return (
            f"{short_clips.size} of {n} clips ({short_clips.size / n:.0%}) are shorter than "
            f"the chunks of {shown(chunk_length)} and are {fate}; {advice}"
        )
    if better_chunk is None or better_chunk <= chunk_length:
        return None
    long_clips = int(np.count_nonzero(lengths >= better_chunk))
    if 2 * long_clips <= n:
        return None
    return (
        f"{long_clips} of {n} clips ({long_clips / n:.0%}) are at least {shown(better_chunk)} "
        f"long (median {shown(median)}) but are cut into chunks of {shown(chunk_length)}: the "
        f"model hears {chunk_length / median:.0%} of a typical clip at a time; {advice}"
    )


def _length_of(audio: AudioLoader, path: Path) -> int:
    """Length in samples; uses the loader's cheap ``length`` when it has one (the cache)."""
    length = getattr(audio, "length", None)
    return int(length(path)) if callable(length) else len(_waveform(audio, path))


def _waveform(audio: AudioLoader, path: Path) -> np.ndarray:
    samples = audio(path)
    if not isinstance(samples, np.ndarray) or samples.ndim != 1 or samples.size == 0:
        raise ValueError(
            f"the audio loader returned {type(samples).__name__} of shape "
            f"{getattr(samples, 'shape', '?')} for {path}; it must return a non-empty 1-D "
            "numpy array (mono samples)"
        )
    return samples


def _screen(
    clips: Sequence[ClipRecord],
    audio: AudioLoader,
    chunk_samples: int,
    short: str,
    skip_unreadable: bool,
    sample_rate: int | None,
) -> tuple[list[ClipRecord], list[int], int, int, dict[Path, str]]:
    """Drop unreadable clips (with a warning, or raise) and, with ``short="skip"``, too-short
    ones; warn when most clips do not fit the chunks (:func:`chunk_fit_warning`).

    Returns kept clips, their lengths, the numbers padded and skipped, and the unreadable
    files with reasons.
    """
    kept, lengths, readable, padded, skipped = [], [], [], 0, 0
    unreadable: dict[Path, str] = {}
    for clip in clips:
        try:
            length = _length_of(audio, clip.path)
        except AudioDecodeError as error:
            if not skip_unreadable:
                raise
            unreadable[clip.path] = error.reason
            continue
        readable.append(length)
        if length < chunk_samples:
            if short == "skip":
                skipped += 1
                continue
            padded += 1
        kept.append(clip)
        lengths.append(length)
    if unreadable:
        warnings.warn(
            f"skipping {len(unreadable)} unreadable audio files ({name_some(unreadable)})",
            UserWarning,
            stacklevel=3,
        )
    if not kept:
        raise ValueError(
            f"no usable clips out of {len(clips)}: {len(unreadable)} unreadable, {skipped} "
            f"shorter than {chunk_samples} samples and skipped"
        )
    misfit = chunk_fit_warning(readable, chunk_samples, sample_rate=sample_rate, short=short)
    if misfit is not None:
        warnings.warn(misfit, UserWarning, stacklevel=3)
    return kept, lengths, padded, skipped, unreadable


def _crop(samples: np.ndarray, start: int, chunk_samples: int, normalize: bool) -> np.ndarray:
    """``samples[start:start + chunk_samples]``, zero-padded at the end, as a fresh float32
    array; with ``normalize`` divided by the whole clip's peak (as if normalised first)."""
    piece = samples[start : start + chunk_samples]
    if normalize:
        piece = peak_normalize(piece, reference=samples)
    chunk = np.zeros(chunk_samples, dtype=np.float32)
    chunk[: piece.shape[0]] = piece
    return chunk


def _item_index(index: int, length: int) -> int:
    index = operator.index(index)
    if not 0 <= index < length:
        raise IndexError(f"index {index} out of range for a dataset of {length} items")
    return index


class RandomChunkDataset(Dataset):
    """Training chunks: one random crop of every clip per epoch.

    Items are ``(chunk, label)``: a float32 tensor of shape ``(chunk_samples,)`` and an int.

    The crop start, and the generator handed to ``waveform_transform``, come from
    ``numpy.random.default_rng([seed, epoch, index])`` and nothing else, so a run resumed
    at epoch ``e`` sees exactly the crops and augmentations of an uninterrupted run,
    whatever the worker count or order. The start is drawn first (uniform over all valid
    starts; 0 for a clip shorter than the chunk), then the same generator goes to the
    transform.

    Call :meth:`set_epoch` before each epoch. A DataLoader with ``persistent_workers=True``
    keeps the workers' dataset copies, which then never see the new epoch; use
    non-persistent workers (the default) or set the epoch in the workers.

    Parameters
    ----------
    clips:
        Clips to serve; unreadable ones are dropped with a warning at construction.
    audio:
        ``audio(path) -> (T,) float32`` at the model's sample rate, normally a
        :class:`~audio_cnn.audio_io.DecodedAudioCache` (its ``length`` method makes the
        construction-time screening cheap; call its ``prepare`` first for a progress bar).
    chunk_samples:
        Chunk length in samples.
    seed:
        Non-negative base seed.
    short:
        Clips shorter than a chunk: ``"pad"`` with zeros at the end, or ``"skip"`` them.
        Either way a :class:`UserWarning` says so when most clips are shorter than a chunk
        (or much longer, see :func:`chunk_fit_warning`; seconds and presets are named when
        ``audio`` has a ``sample_rate`` attribute, as the cache does).
    normalize:
        Divide by the whole clip's peak before cropping (:func:`peak_normalize`; silent
        clips stay silent).
    waveform_transform:
        Optional ``f(chunk (chunk_samples,) float32, rng) -> same shape``, applied after
        cropping (augmentation).
    skip_unreadable:
        Drop clips whose audio raises :class:`~audio_cnn.audio_io.AudioDecodeError` with a
        warning (the default, so one corrupt file never aborts a run), or let the error
        propagate (``False``, e.g. when a prediction per given file is expected).

    Attributes
    ----------
    clips:
        The clips kept; item ``i`` crops ``clips[i]``.
    summary:
        :class:`ChunkSummary` of kept, padded, skipped and unreadable clips.
    unreadable:
        Reason per dropped unreadable file.
    """

    def __init__(
        self,
        clips: Sequence[ClipRecord],
        audio: AudioLoader,
        chunk_samples: int,
        *,
        seed: int = 0,
        short: str = "pad",
        normalize: bool = True,
        waveform_transform: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
        skip_unreadable: bool = True,
    ) -> None:
        self.chunk_samples = _check_chunking(chunk_samples, short, normalize)
        self.seed = operator.index(seed)
        if self.seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.audio = audio
        self.normalize = normalize
        self.waveform_transform = waveform_transform
        self.epoch = 0
        # The cache knows its rate; then the fit warning can speak seconds and presets.
        rate = getattr(audio, "sample_rate", None)
        self.clips, _, padded, skipped, self.unreadable = _screen(
            clips, audio, self.chunk_samples, short, skip_unreadable, rate
        )
        self.summary = ChunkSummary(
            len(self.clips), len(self.clips), padded, skipped, len(self.unreadable)
        )

    def set_epoch(self, epoch: int) -> None:
        """Select the crops of ``epoch`` (a non-negative int)."""
        epoch = operator.index(epoch)
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        index = _item_index(index, len(self.clips))
        clip = self.clips[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        samples = _waveform(self.audio, clip.path)
        start = int(rng.integers(0, max(samples.shape[0] - self.chunk_samples, 0) + 1))
        chunk = _crop(samples, start, self.chunk_samples, self.normalize)
        if self.waveform_transform is not None:
            chunk = self._transform(chunk, rng, clip.path)
        return torch.from_numpy(chunk), clip.label

    def _transform(self, chunk: np.ndarray, rng: np.random.Generator, path: Path) -> np.ndarray:
        result = np.asarray(self.waveform_transform(chunk, rng))
        if result.shape != chunk.shape:
            raise ValueError(
                f"waveform_transform returned shape {result.shape} for a chunk of {path}; it "
                f"must keep the shape {chunk.shape}"
            )
        if not np.isfinite(result).all():
            raise ValueError(f"waveform_transform produced NaN/Inf for a chunk of {path}")
        return np.ascontiguousarray(result, dtype=np.float32)


def even_chunk_starts(
    length: int, chunk_samples: int, n_chunks: int, span_samples: int
) -> np.ndarray:
    """Start samples of evenly spaced chunks within the first ``span_samples`` of a clip.

    The first chunk starts at 0 and the last ends at ``min(length, span_samples)``. When
    fewer distinct starts exist than ``n_chunks`` (e.g. a 1 s clip cut into 1 s chunks has
    one), ``n_chunks`` is reduced to that number, so no chunk is served twice. A clip shorter
    than one chunk gets the single start 0 (to be padded).

    Parameters
    ----------
    length:
        Clip length in samples.
    chunk_samples:
        Chunk length in samples.
    n_chunks:
        Wanted number of chunks (at least 1).
    span_samples:
        Only the clip's first ``span_samples`` are used.

    Returns
    -------
    numpy.ndarray
        int64 starts, strictly increasing, shape ``(min(n_chunks, distinct starts),)``.
    """
    last = min(length, span_samples) - chunk_samples
    if last <= 0:
        return np.zeros(1, dtype=np.int64)
    n = min(n_chunks, last + 1)
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    # Integer arithmetic: exact, strictly increasing because last >= n - 1.
    return np.arange(n, dtype=np.int64) * last // (n - 1)


class EvenChunkDataset(Dataset):
    """Evaluation chunks: ``n_chunks`` evenly spaced crops of every clip (see
    :func:`even_chunk_starts`), deterministic.

    Items are ``(chunk, label, clip_index)``: a float32 tensor of shape
    ``(chunk_samples,)``, an int label and the int index of the clip.

    Parameters
    ----------
    clips, audio, chunk_samples, short, normalize, skip_unreadable:
        As in :class:`RandomChunkDataset`.
    n_chunks:
        Chunks per clip, at most (fewer when a clip has fewer distinct starts).
    span_seconds:
        Chunks lie within the clip's first ``span_seconds`` (or the whole clip if shorter);
        must cover at least one chunk.
    sample_rate:
        Sample rate in Hz of the loader's waveforms, to convert ``span_seconds``.

    Attributes
    ----------
    clips, summary, unreadable:
        As in :class:`RandomChunkDataset`.
    n_clips:
        Number of clips kept.
    clip_of_item:
        int64 array, shape ``(len(self),)``: the clip (index into ``clips``) of each item,
        for pooling chunk predictions per clip.
    starts:
        int64 array, shape ``(len(self),)``: start sample of each item within its clip.
    """

    def __init__(
        self,
        clips: Sequence[ClipRecord],
        audio: AudioLoader,
        chunk_samples: int,
        *,
        n_chunks: int = 8,
        span_seconds: float = 29.0,
        sample_rate: int,
        short: str = "pad",
        normalize: bool = True,
        skip_unreadable: bool = True,
    ) -> None:
        self.chunk_samples = _check_chunking(chunk_samples, short, normalize)
        n_chunks = operator.index(n_chunks)
        if n_chunks < 1:
            raise ValueError(f"n_chunks must be at least 1, got {n_chunks}")
        if operator.index(sample_rate) <= 0:
            raise ValueError(f"sample_rate must be positive (Hz), got {sample_rate}")
        span_samples = round(float(span_seconds) * sample_rate)
        if not span_samples >= self.chunk_samples:
            raise ValueError(
                f"span_seconds={span_seconds} ({span_samples} samples at {sample_rate} Hz) is "
                f"shorter than one chunk of {self.chunk_samples} samples"
            )
        self.audio = audio
        self.normalize = normalize
        self.clips, lengths, padded, skipped, self.unreadable = _screen(
            clips, audio, self.chunk_samples, short, skip_unreadable, sample_rate
        )
        starts = [
            even_chunk_starts(length, self.chunk_samples, n_chunks, span_samples)
            for length in lengths
        ]
        self.starts = np.concatenate(starts)
        self.clip_of_item = np.repeat(
            np.arange(len(starts), dtype=np.int64), [len(s) for s in starts]
        )
        self.n_clips = len(self.clips)
        self.summary = ChunkSummary(
            self.n_clips, len(self.starts), padded, skipped, len(self.unreadable)
        )

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        index = _item_index(index, len(self.starts))
        clip_index = int(self.clip_of_item[index])
        clip = self.clips[clip_index]
        samples = _waveform(self.audio, clip.path)
        chunk = _crop(samples, int(self.starts[index]), self.chunk_samples, self.normalize)
        return torch.from_numpy(chunk), clip.label, clip_index
