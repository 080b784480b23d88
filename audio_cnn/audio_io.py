"""Decoding audio files into validated float32 waveforms, and caching the decoded result.

Decoding is the slow step of an audio pipeline (parsing, down-mixing, resampling), so it
should happen once per file, not once per epoch. :func:`load_audio` decodes one file and
refuses bad audio loudly (:class:`AudioDecodeError` names the file and the reason);
:class:`DecodedAudioCache` keeps the decoded waveforms as ``.npy`` files keyed by the
source file's identity, so later epochs, later runs and DataLoader workers only read them.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from atomic_io import atomic_path

__all__ = [
    "AudioDecodeError",
    "CacheStats",
    "DecodeReport",
    "DecodedAudioCache",
    "load_audio",
    "peak_normalize",
]

_RESAMPLER = "soxr_hq"
# Part of every cache key: bump it whenever decoding changes, so stale entries are never read.
_CACHE_FORMAT = 1


class AudioDecodeError(ValueError):
    """An audio file could not be turned into a valid waveform.

    Parameters
    ----------
    path:
        The offending file (kept as :attr:`path`).
    reason:
        What is wrong and, where possible, how to fix it (kept as :attr:`reason`).
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot decode audio file '{self.path}': {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        # DataLoader workers pickle exceptions; the default reduce would drop `reason`.
        return type(self), (self.path, self.reason)


def _check_sample_rate(sample_rate: int) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer):
        raise TypeError(f"sample_rate must be an int (Hz), got {sample_rate!r}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive (Hz), got {sample_rate}")
    return int(sample_rate)


def _decode_with_audioread(path: Path) -> tuple[np.ndarray, int]:
    """Decode via librosa's audioread path, for containers libsndfile does not know."""
    with warnings.catch_warnings():
        # The fallback is deliberate here; librosa's notices about it are noise to our users.
        warnings.filterwarnings("ignore", message="PySoundFile failed", category=UserWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        samples, rate = librosa.load(path, sr=None, mono=False, dtype=np.float32)
    return np.atleast_2d(samples), int(rate)


def _decode(path: Path) -> tuple[np.ndarray, int]:
    """Decode ``path`` at its native rate; returns ``(samples (C, T) float32, rate in Hz)``."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise AudioDecodeError(path, "the file does not exist") from None
    except OSError as error:
        raise AudioDecodeError(path, f"the file cannot be read ({error.strerror})") from error
    if not path.is_file():
        raise AudioDecodeError(path, "not a regular file")
    if size == 0:
        raise AudioDecodeError(path, "the file is empty (0 bytes); re-download or remove it")
    try:
        samples, rate = sf.read(path, dtype="float32", always_2d=True)
        return samples.T, int(rate)
    except (sf.SoundFileError, RuntimeError) as soundfile_error:
        try:
            return _decode_with_audioread(path)
        except Exception as fallback_error:  # audioread raises many unrelated types
            fallback = f"{type(fallback_error).__name__} {fallback_error}".strip()
            raise AudioDecodeError(
                path,
                "unsupported format or corrupt file "
                f"(soundfile: {soundfile_error}; audioread fallback: {fallback}); "
                "convert it to WAV/FLAC or remove it",
            ) from soundfile_error


def load_audio(path: str | os.PathLike[str], sample_rate: int, *, mono: bool = True) -> np.ndarray:
    """Decode an audio file, down-mix it and resample it once.

    soundfile (libsndfile: WAV, FLAC, OGG, MP3, AU, AIFF, ...) is tried first; formats it
    cannot read go through librosa's audioread fallback (needs e.g. ffmpeg installed).
    Resampling uses soxr at "high quality" (``soxr_hq``) and only when the file's rate
    differs from ``sample_rate``.

    Parameters
    ----------
    path:
        Audio file.
    sample_rate:
        Target sample rate in Hz.
    mono:
        Average all channels into one (the default). With ``False`` every channel is kept.

    Returns
    -------
    numpy.ndarray
        float32 samples in [-1, 1] for PCM sources, shape ``(T,)`` when ``mono`` else
        ``(C, T)``, at ``sample_rate``.

    Raises
    ------
    AudioDecodeError
        The file is missing, empty (0 bytes or 0 samples), unreadable in every decoder, or
        holds NaN/Inf samples. Bad samples are reported, never silently repaired.
    """
    path = Path(path)
    sample_rate = _check_sample_rate(sample_rate)
    samples, native_rate = _decode(path)
    if samples.shape[-1] == 0:
        raise AudioDecodeError(path, "the file holds no samples (zero length); remove it")
    finite = np.isfinite(samples)
    if not finite.all():
        n_bad = int(samples.size - np.count_nonzero(finite))
        first = int(np.argmin(finite.all(axis=0)))
        raise AudioDecodeError(
            path,
            f"{n_bad} of {samples.size} samples are NaN or infinite (first at sample {first}); "
            "repair or remove the file",
        )
    if mono:
        samples = samples[0] if samples.shape[0] == 1 else samples.mean(axis=0)
    if native_rate != sample_rate:
        samples = librosa.resample(
            samples, orig_sr=native_rate, target_sr=sample_rate, res_type=_RESAMPLER
        )
    return np.ascontiguousarray(samples, dtype=np.float32)


def peak_normalize(
    x: np.ndarray, *, eps: float = 1e-8, reference: np.ndarray | None = None
) -> np.ndarray:
    """Scale a waveform so that its largest absolute sample is 1.

    Parameters
    ----------
    x:
        Floating-point samples, any shape.
    eps:
        Peaks at or below ``eps`` count as silence: ``x`` is then returned unchanged (the
        same object, not a copy), so silent clips never cause a division by zero.
    reference:
        Take the peak from this array instead of ``x``. Dividing a crop by its whole clip's
        peak (``peak_normalize(clip[a:b], reference=clip)``) equals cropping the normalised
        clip, without normalising the whole clip.

    Returns
    -------
    numpy.ndarray
        ``x / peak`` with the dtype and shape of ``x``, or ``x`` itself for silence.

    Raises
    ------
    TypeError
        ``x`` is not floating point.
    ValueError
        The peak source is empty or contains NaN/Inf.
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"peak_normalize needs floating-point samples, got dtype {x.dtype}")
    source = x if reference is None else np.asarray(reference)
    if source.size == 0:
        raise ValueError("cannot peak-normalise: the waveform is empty")
    # max/min instead of abs().max(): no temporary copy of a long clip.
    peak = max(float(source.max()), -float(source.min()))
    if not np.isfinite(peak):
        raise ValueError("cannot peak-normalise: the waveform contains NaN or infinite values")
    if peak <= eps:
        return x
    return x / np.asarray(peak, dtype=x.dtype)


@dataclass
class CacheStats:
    """Counters of one :class:`DecodedAudioCache` instance, in this process.

    DataLoader workers each hold a copy of the cache, so their counts are not summed here.
    """

    decoded: int = 0
    """Files decoded (first use, changed source, or repaired entry)."""
    disk_hits: int = 0
    """Waveforms served from a ``.npy`` cache entry."""
    memory_hits: int = 0
    """Waveforms served from the in-memory LRU."""
    repaired: int = 0
    """Corrupt or half-written cache entries found, discarded and re-decoded."""


@dataclass(frozen=True)
class DecodeReport:
    """Outcome of :meth:`DecodedAudioCache.prepare`.

    Attributes
    ----------
    lengths:
        Decoded length in samples (at the cache's sample rate) of every readable file.
    failed:
        The reason for every file that could not be decoded.
    """

    lengths: dict[Path, int] = field(default_factory=dict)
    failed: dict[Path, str] = field(default_factory=dict)

    @property
    def ok(self) -> list[Path]:
        """Files that decoded successfully, in the order they were given."""
        return list(self.lengths)

    def __str__(self) -> str:
        total = len(self.lengths) + len(self.failed)
        lines = [f"decoded {len(self.lengths)} of {total} audio files, {len(self.failed)} failed"]
        lines += [f"  {path}: {reason}" for path, reason in self.failed.items()]
        return "\n".join(lines)


def _entry_stem(path: Path) -> str:
    """A filesystem-safe prefix for cache file names, so humans can tell entries apart."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", path.stem)[:40]


class DecodedAudioCache:
    """Decoded, resampled mono waveforms, cached on disk (and optionally in memory).

    An entry is a float32 ``.npy`` file named after a hash of (absolute path, file size,
    modification time in ns, sample rate, decoder version): a file that changes gets a new
    key and is decoded again; the stale entry stays on disk until the directory is deleted.
    Entries are written to a uniquely named temporary file in the cache directory and then
    renamed with :func:`os.replace`, so concurrent writers (threads, DataLoader workers,
    parallel runs) never expose a half-written entry. An entry that still fails to load
    (truncated by a crash, damaged on disk, wrong dtype or rank) is discarded with a warning
    and decoded again, never returned.

    The instance is callable (``cache(path)`` is ``cache.get(path)``) and picklable, so it
    can be passed as the ``audio`` loader of the chunking datasets.

    Parameters
    ----------
    directory:
        Where entries live (created if needed). ``None`` disables the disk cache: every
        :meth:`get` decodes again (unless the memory LRU holds the waveform).
    sample_rate:
        Target sample rate in Hz of every waveform.
    memory_items:
        Keep this many most recently used waveforms in memory as well (0 disables it). Each
        process (DataLoader worker) has its own LRU.

    Notes
    -----
    Returned arrays are flagged read-only because they may be shared through the LRU; copy
    before modifying in place.
    """

    def __init__(
        self, directory: str | os.PathLike[str] | None, sample_rate: int, *, memory_items: int = 0
    ) -> None:
        self.sample_rate = _check_sample_rate(sample_rate)
        if memory_items < 0:
            raise ValueError(f"memory_items must be >= 0, got {memory_items}")
        self.memory_items = int(memory_items)
        self.directory = None if directory is None else Path(directory).absolute()
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self.stats = CacheStats()
        self._memory: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        # Locks do not pickle; a worker's LRU starts empty rather than copying the parent's.
        del state["_lock"]
        state["_memory"] = OrderedDict()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        directory = None if self.directory is None else str(self.directory)
        return (
            f"{type(self).__name__}({directory!r}, sample_rate={self.sample_rate}, "
            f"memory_items={self.memory_items})"
        )

    def __call__(self, path: str | os.PathLike[str]) -> np.ndarray:
        return self.get(path)

    def _key(self, path: Path) -> str:
        try:
            status = path.stat()
        except FileNotFoundError:
            raise AudioDecodeError(path, "the file does not exist") from None
        identity = (
            str(path.absolute()),
            status.st_size,
            status.st_mtime_ns,
            self.sample_rate,
            _RESAMPLER,
            _CACHE_FORMAT,
        )
        digest = hashlib.sha256(repr(identity).encode()).hexdigest()[:32]
        return f"{_entry_stem(path)}-{digest}"

    def _remember(self, key: str, audio: np.ndarray) -> None:
        if self.memory_items == 0:
            return
        with self._lock:
            self._memory[key] = audio
            self._memory.move_to_end(key)
            while len(self._memory) > self.memory_items:
                self._memory.popitem(last=False)

    def _recall(self, key: str) -> np.ndarray | None:
        with self._lock:
            audio = self._memory.get(key)
            if audio is not None:
                self._memory.move_to_end(key)
                self.stats.memory_hits += 1
            return audio

    def _read_entry(self, entry: Path, source: Path, *, header_only: bool) -> np.ndarray | None:
        """Load a valid entry, or return None (missing) / discard it with a warning (corrupt).

        With ``header_only`` the entry is memory-mapped: its shape is known and its size
        checked against the header without reading the samples.
        """
        try:
            audio = np.load(entry, allow_pickle=False, mmap_mode="r" if header_only else None)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError) as error:
            problem = f"{type(error).__name__}: {error}"
        else:
            if audio.dtype != np.float32 or audio.ndim != 1 or audio.shape[0] == 0:
                problem = f"holds a {audio.dtype} array of shape {audio.shape}"
            else:
                with self._lock:
                    self.stats.disk_hits += 1
                return audio
        warnings.warn(
            f"cache entry {entry} for {source} is corrupt ({problem}); decoding the file again",
            RuntimeWarning,
            stacklevel=4,
        )
        with self._lock:
            self.stats.repaired += 1
        return None

    def _write_entry(self, entry: Path, audio: np.ndarray) -> None:
        # Unique temporary name + os.replace: concurrent writers of one entry are safe.
        with atomic_path(entry) as temporary, open(temporary, "wb") as file:
            np.save(file, audio, allow_pickle=False)

    def _decode(self, path: Path, entry: Path | None) -> np.ndarray:
        audio = load_audio(path, self.sample_rate)
        with self._lock:
            self.stats.decoded += 1
        if entry is not None:
            self._write_entry(entry, audio)
        return audio

    def _fetch(self, path: Path, *, header_only: bool) -> np.ndarray:
        key = self._key(path)
        audio = self._recall(key)
        if audio is not None:
            return audio
        entry = None if self.directory is None else self.directory / f"{key}.npy"
        if entry is not None:
            audio = self._read_entry(entry, path, header_only=header_only)
            if audio is not None and header_only:
                return audio
        if audio is None:
            audio = self._decode(path, entry)
        audio.flags.writeable = False
        self._remember(key, audio)
        return audio

    def get(self, path: str | os.PathLike[str]) -> np.ndarray:
        """The decoded waveform of ``path``.

        Parameters
        ----------
        path:
            Audio file.

        Returns
        -------
        numpy.ndarray
            Read-only float32 samples, shape ``(T,)``, mono, at :attr:`sample_rate`.

        Raises
        ------
        AudioDecodeError
            The file is missing or cannot be decoded (see :func:`load_audio`).
        """
        return self._fetch(Path(path), header_only=False)

    def length(self, path: str | os.PathLike[str]) -> int:
        """Number of samples of the decoded waveform of ``path``.

        Reads only the entry's header (memory-mapped) when the file is cached on disk, and
        decodes it otherwise, so checking the lengths of many cached clips is cheap.

        Raises
        ------
        AudioDecodeError
            The file is missing or cannot be decoded.
        """
        return int(self._fetch(Path(path), header_only=True).shape[0])

    def prepare(
        self, paths: Iterable[str | os.PathLike[str]], progress: bool = True
    ) -> DecodeReport:
        """Decode every file once, up front, and report which ones fail.

        A bad file does not stop the loop: its reason is recorded and the rest continue. With
        ``directory=None`` nothing is kept (except in the memory LRU), so this only checks.

        Parameters
        ----------
        paths:
            Audio files.
        progress:
            Show a tqdm progress bar.

        Returns
        -------
        DecodeReport
            Lengths of the readable files and reasons for the failed ones.
        """
        paths = [Path(path) for path in paths]
        report = DecodeReport()
        for path in tqdm(paths, desc="decoding audio", unit="file", disable=not progress):
            try:
                report.lengths[path] = self.length(path)
            except AudioDecodeError as error:
                report.failed[path] = error.reason
        return report
