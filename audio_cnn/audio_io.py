"""Decoding audio files into validated float32 waveforms, and caching the decoded result.

Decoding is the slow step of an audio pipeline (parsing, down-mixing, resampling), so it
should happen once per file, not once per epoch. :func:`load_audio` decodes one file and
refuses bad audio loudly (:class:`AudioDecodeError` names the file and the reason);
:class:`DecodedAudioCache` keeps the decoded waveforms as ``.npy`` files keyed by a hash of
the source file's bytes, so later epochs, later runs and DataLoader workers only read them.
:meth:`DecodedAudioCache.prepare` decodes a dataset up front and reports, with warnings and
in its :class:`DecodeReport`, the files that are damaged (undecodable, truncated) or useless
to a classifier (too short, silent).
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import re
import struct
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
from audio_cnn.datasets import name_some

__all__ = [
    "MIN_CLIP_SECONDS",
    "SILENCE_PEAK",
    "AudioDecodeError",
    "CacheStats",
    "DecodeReport",
    "DecodedAudioCache",
    "load_audio",
    "peak_normalize",
    "wav_truncation",
]

MIN_CLIP_SECONDS = 0.1
"""Clips shorter than this (in seconds) are left out by :meth:`DecodedAudioCache.prepare`: they
span a few STFT frames at most, so any model input made from them is almost all padding."""
SILENCE_PEAK = 1e-4
"""Clips whose largest absolute sample is at or below this (−80 dBFS, about three steps of
16-bit PCM) count as silent and are left out by :meth:`DecodedAudioCache.prepare`: peak
normalisation would blow their noise floor up to full scale."""

_RESAMPLER = "soxr_hq"
# Part of every cache key: bump it whenever decoding or keying changes, so stale entries are
# never read. 2: keys hash the source file's bytes (1 hashed its path, size and mtime).
_CACHE_FORMAT = 2
# Source files are hashed in blocks of this many bytes (1 MiB): bounded memory, few calls.
_HASH_BLOCK = 1 << 20
# Byte order of the RIFF container variants (little-endian RIFF, big-endian RIFX).
_RIFF_BYTE_ORDER = {b"RIFF": "<", b"RIFX": ">"}
# Writers that stream to a pipe cannot know the data size and leave one of these instead.
_UNKNOWN_DATA_SIZES = (0, 0xFFFFFFFF)


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


def _wav_layout(path: Path) -> tuple[int, int, int, int] | None:
    """``(data offset, declared data bytes, block align, frame rate)`` of a RIFF/RIFX WAVE
    file's ``data`` chunk, or ``None`` when ``path`` is no such file or its header is
    incomplete (the decoder reports those)."""
    block_align = rate = 0
    with open(path, "rb") as file:
        header = file.read(12)
        order = _RIFF_BYTE_ORDER.get(header[:4])
        if order is None or header[8:12] != b"WAVE":
            return None
        while len(chunk := file.read(8)) == 8:
            (size,) = struct.unpack(f"{order}I", chunk[4:])
            if chunk[:4] == b"data":
                return file.tell(), size, block_align, rate
            # The fields needed are in the first 14 bytes; never trust a huge declared size.
            body = file.read(min(size, 64)) if chunk[:4] == b"fmt " else b""
            if len(body) >= 14:
                rate, _, block_align = struct.unpack(f"{order}IIH", body[4:14])
            # Chunks are padded to an even size; seeking past the end just ends the loop.
            file.seek(size - len(body) + (size & 1), os.SEEK_CUR)
    return None


def wav_truncation(path: str | os.PathLike[str]) -> str | None:
    """Whether a WAV file holds fewer sample frames than its header declares.

    libsndfile silently shortens such a file to the frames present (a download or copy that
    stopped early), so the decoded clip is shorter than the recording without a word. This
    compares the ``data`` chunk's declared size with the bytes after it; only the header is
    read.

    Parameters
    ----------
    path:
        Any file; only RIFF/RIFX WAVE files are checked (other formats, and WAVs written to a
        pipe with an unknown data size, give ``None``).

    Returns
    -------
    str or None
        What is missing, e.g. ``"truncated: the header declares 16000 frames (1.00 s) but the
        file holds 7989 (0.50 s)"``, or ``None`` when the file is complete or not a WAV.
    """
    path = Path(path)
    try:
        layout = _wav_layout(path)
        size = path.stat().st_size
    except OSError:
        return None  # unreadable files are reported by the decoder
    if layout is None:
        return None
    offset, declared_bytes, block_align, rate = layout
    if declared_bytes in _UNKNOWN_DATA_SIZES or block_align == 0 or rate == 0:
        return None
    if size - offset >= declared_bytes:
        return None
    declared, held = declared_bytes // block_align, max(size - offset, 0) // block_align
    return (
        f"truncated: the header declares {declared} frames ({declared / rate:.2f} s) but the "
        f"file holds {held} ({held / rate:.2f} s)"
    )


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

    Notes
    -----
    A truncated WAV file decodes to the frames it holds; :func:`wav_truncation` tells, and
    :meth:`DecodedAudioCache.prepare` reports it.
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
    """Outcome of :meth:`DecodedAudioCache.prepare`: every file in exactly one of kept or left
    out, and the kept ones that are damaged flagged.

    Attributes
    ----------
    lengths:
        Decoded length in samples (at the cache's sample rate) of every file that decoded,
        including those then left out as too short or silent.
    failed:
        Every file left out, with the reason: it cannot be decoded, or it decoded but is too
        short or silent (those are also in :attr:`too_short` / :attr:`silent`). Callers drop
        these files from training and evaluation.
    too_short:
        Files shorter than ``min_seconds``, with the reason (left out, also in
        :attr:`failed`).
    silent:
        Files whose peak is at or below ``silence_peak``, with the reason (left out, also in
        :attr:`failed`; a file too short and silent counts as too short only).
    truncated:
        WAV files holding fewer frames than their header declares, with what is missing
        (see :func:`wav_truncation`). They are kept: the frames present are genuine audio of
        the labelled class, and a truncation that leaves them too short or silent makes
        them left out by those rules.
    """

    lengths: dict[Path, int] = field(default_factory=dict)
    failed: dict[Path, str] = field(default_factory=dict)
    too_short: dict[Path, str] = field(default_factory=dict)
    silent: dict[Path, str] = field(default_factory=dict)
    truncated: dict[Path, str] = field(default_factory=dict)

    @property
    def ok(self) -> list[Path]:
        """Files kept (decoded, neither too short nor silent), in the order they were given."""
        return [path for path in self.lengths if path not in self.failed]

    @property
    def undecodable(self) -> dict[Path, str]:
        """Files that could not be decoded, with the reason (a part of :attr:`failed`)."""
        return {path: reason for path, reason in self.failed.items() if path not in self.lengths}

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe counts and the reason for every file left out or truncated."""
        return {
            "kept": len(self.ok),
            "left_out": len(self.failed),
            "undecodable": len(self.undecodable),
            "too_short": len(self.too_short),
            "silent": len(self.silent),
            "truncated": len(self.truncated),
            "files": {
                **{str(path): reason for path, reason in self.failed.items()},
                **{str(path): f"{reason} (kept)" for path, reason in self.truncated.items()},
            },
        }

    def __str__(self) -> str:
        total = len(self.lengths) + len(self.undecodable)
        lines = [
            f"kept {len(self.ok)} of {total} audio files; left out {len(self.failed)}: "
            f"{len(self.undecodable)} undecodable, {len(self.too_short)} too short, "
            f"{len(self.silent)} silent; {len(self.truncated)} truncated (kept)"
        ]
        lines += [f"  {path}: {reason}" for path, reason in self.failed.items()]
        lines += [f"  {path}: {reason} (kept)" for path, reason in self.truncated.items()]
        return "\n".join(lines)


def _entry_stem(path: Path) -> str:
    """A filesystem-safe prefix for cache file names, so humans can tell entries apart."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", path.stem)[:40]


class DecodedAudioCache:
    """Decoded, resampled mono waveforms, cached on disk (and optionally in memory).

    An entry is a float32 ``.npy`` file named after a hash (BLAKE2b) of the source file's
    bytes, the sample rate and the decoder version: a file whose content changes gets a new
    key and is decoded again, even when its size and modification time stay the same (a
    re-export, a copy that keeps times). Every access hashes the source (cheap next to
    decoding: it is read at disk speed, not parsed); stale entries, and entries of older
    cache versions, are never found again and stay on disk until the directory is deleted.
    Entries are written to a uniquely named temporary file in the cache directory and then
    renamed with :func:`os.replace`, so concurrent writers (threads, DataLoader workers,
    parallel runs) never expose a half-written entry. An entry that still fails to load
    (truncated by a crash, damaged on disk, wrong dtype or rank) is discarded with a warning
    and decoded again, never returned. When an entry cannot be written (full disk, no
    permission) the temporary file is removed and an :class:`OSError` naming the cache
    folder is raised: nothing half-written is left behind.

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
        self._keys: dict[Path, tuple[tuple[int, ...], str]] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        # Locks do not pickle; a worker's LRU starts empty rather than copying the parent's.
        del state["_lock"]
        state["_memory"] = OrderedDict()
        state["_keys"] = {}
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
        """The cache key of ``path``: a hash of its content (and of the decoding settings).

        Hashing is most of the cost of a cached read, so the key is remembered per file while
        the file's status is unchanged. The status includes the change time, which every write
        and every ``os.utime`` update, so an edit that keeps size and modification time still
        gets a new key.
        """
        try:
            status = os.stat(path)
        except OSError:
            status = None  # reported below, where the file is opened
        if status is not None:
            identity = (
                status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns,
                status.st_ctime_ns,
            )  # fmt: skip
            with self._lock:
                known = self._keys.get(path)
            if known is not None and known[0] == identity:
                return known[1]
        digest = hashlib.blake2b(digest_size=16)
        try:
            with open(path, "rb") as file:
                while block := file.read(_HASH_BLOCK):
                    digest.update(block)
        except FileNotFoundError:
            raise AudioDecodeError(path, "the file does not exist") from None
        except IsADirectoryError:
            raise AudioDecodeError(path, "not a regular file") from None
        except OSError as error:
            raise AudioDecodeError(path, f"the file cannot be read ({error.strerror})") from error
        digest.update(repr((self.sample_rate, _RESAMPLER, _CACHE_FORMAT)).encode())
        key = f"{_entry_stem(path)}-{digest.hexdigest()}"
        if status is not None:
            with self._lock:
                self._keys[path] = (identity, key)
        return key

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
            try:
                self._write_entry(entry, audio)
            except OSError as error:
                # One line naming the folder, not the temporary file deep inside it.
                raise OSError(
                    error.errno or errno.EIO,
                    f"cannot write the decoded-audio cache in {self.directory} "
                    f"({error.strerror or error}); free space there or choose another cache "
                    "folder",
                ) from error
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
        self,
        paths: Iterable[str | os.PathLike[str]],
        progress: bool = True,
        *,
        min_seconds: float = MIN_CLIP_SECONDS,
        silence_peak: float = SILENCE_PEAK,
    ) -> DecodeReport:
        """Decode every file once, up front, check it, and report what is wrong, loudly.

        A bad file does not stop the loop: its reason is recorded and the rest continue. With
        ``directory=None`` nothing is kept (except in the memory LRU), so this only checks.
        Cached files are read (memory-mapped) to measure their peak, not decoded again.

        Every file ends up kept or left out (:attr:`DecodeReport.failed`):

        * undecodable files are left out;
        * clips shorter than ``min_seconds`` are left out (too short): their model inputs
          would be almost all zero padding, yet still get a confident class;
        * silent clips (peak at or below ``silence_peak``) are left out: there is nothing to
          classify, and peak normalisation would scale their noise floor up to full scale;
        * truncated WAV files (:func:`wav_truncation`) are kept with the frames present,
          unless those are too short or silent.

        Each group that is not empty gets one :class:`UserWarning` saying how many files, a
        few of their names, and what to do.

        Parameters
        ----------
        paths:
            Audio files.
        progress:
            Show a tqdm progress bar.
        min_seconds:
            Shortest clip kept, in seconds (0 keeps every decodable clip).
        silence_peak:
            Clips whose largest absolute sample is at or below this are silent (0 flags only
            all-zero clips).

        Returns
        -------
        DecodeReport
            Lengths of the decoded files, the files left out and why, the truncated ones.

        Raises
        ------
        OSError
            A cache entry cannot be written (full disk, no permission); one line naming the
            cache folder, nothing half-written left behind.
        """
        paths = [Path(path) for path in paths]
        min_samples = math.ceil(min_seconds * self.sample_rate)
        report = DecodeReport()
        for path in tqdm(paths, desc="decoding audio", unit="file", disable=not progress):
            try:
                audio = self._fetch(path, header_only=True)
            except AudioDecodeError as error:
                report.failed[path] = error.reason
                continue
            length = report.lengths[path] = int(audio.shape[0])
            # max/min instead of abs().max(): no temporary copy of a long (memory-mapped) clip.
            peak = max(float(audio.max()), -float(audio.min()))
            if length < min_samples:
                report.failed[path] = report.too_short[path] = (
                    f"too short: {length / self.sample_rate:.3f} s ({length} samples), "
                    f"under {min_seconds:g} s"
                )
            elif peak <= silence_peak:
                report.failed[path] = report.silent[path] = (
                    f"silent: peak {peak:.2g} (at most {silence_peak:g})"
                )
            truncation = wav_truncation(path)
            if truncation is not None:
                report.truncated[path] = truncation
        _warn_about(report, min_seconds, silence_peak)
        return report


def _warn_about(report: DecodeReport, min_seconds: float, silence_peak: float) -> None:
    """One warning per kind of problem in ``report`` (stack level: the caller of prepare)."""
    problems = (
        # Each decode error already says what to do with its file.
        (report.undecodable, "cannot be decoded and are left out", ""),
        (
            report.too_short,
            f"are shorter than {min_seconds:g} s and are left out",
            "remove them, or pass a lower min_seconds to keep them",
        ),
        (
            report.silent,
            f"are silent (peak at most {silence_peak:g}) and are left out",
            "check the recordings (a muted input, a wrong channel) or remove them",
        ),
        (
            report.truncated,
            "are truncated WAV files (the header declares more frames than the file holds); "
            "the frames present are kept",
            "re-download or re-export them",
        ),
    )
    total = len(report.lengths) + len(report.undecodable)
    for files, what, advice in problems:
        if files:
            warnings.warn(
                f"{len(files)} of {total} audio files {what}: {name_some(files)}"
                + (f"; {advice}" if advice else ""),
                UserWarning,
                stacklevel=3,
            )
