"""Open a dataset directory of any supported layout as class names plus train/val/test clips.

The training and evaluation commands accept three layouts and tell them apart here:

* a synthetic dataset written by :func:`audio_cnn.synthetic.write_synthetic_dataset`
  (``synthetic.json`` at the root; front-end preset from the clips' length: ``toy`` for the
  1 s toy task, ``gtzan`` for the 3 s scenes task);
* a GTZAN tree (``genres_original/<genre>/<genre>.000NN.wav``; preset ``gtzan``);
* any folder with one subfolder per class (split lists in ``splits/`` if present); its
  preset comes from the clips' durations (:func:`~audio_cnn.chunks.fitting_preset`), read
  from the file headers, so 1 s clips are not zero-padded to 3 s chunks.

Every :class:`DatasetDir` says why it got its preset (:attr:`DatasetDir.preset_reason`) and
what its clips last (:attr:`DatasetDir.durations`); :func:`duration_report` tells whether
the clips fit the chunks of the preset finally chosen (e.g. by ``--preset``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from audio_cnn.chunks import chunk_fit_warning, fitting_preset
from audio_cnn.datasets import GTZAN, GTZAN_GENRES, AudioFolder, ClipRecord
from audio_cnn.frontend import LogMelConfig

__all__ = [
    "MAX_DURATION_CLIPS",
    "ClipDurations",
    "DatasetDir",
    "DurationReport",
    "clip_durations",
    "duration_report",
    "open_dataset_dir",
]

MAX_DURATION_CLIPS = 300
"""Durations are read from at most this many clip headers (a seeded sample of larger
datasets): the median is then known to within a few percent, in well under a second."""
# The sample does not follow the split seed: the preset, which a resumed run must reproduce,
# depends on the data only.
_DURATION_SEED = 0


@dataclass(frozen=True)
class ClipDurations:
    """Clip durations read from file headers (``soundfile.info``), nothing decoded.

    Attributes
    ----------
    seconds:
        Duration in seconds of every measured clip.
    n_clips:
        Clips in the dataset; more than were measured when a sample was drawn.
    unreadable:
        Measured clips whose header soundfile cannot read (e.g. formats only the audioread
        fallback decodes); they are left out of :attr:`seconds`.
    """

    seconds: tuple[float, ...]
    n_clips: int
    unreadable: int = 0

    @property
    def median(self) -> float | None:
        """Median duration in seconds, ``None`` when no header could be read."""
        return float(np.median(self.seconds)) if self.seconds else None

    def __str__(self) -> str:
        if not self.seconds:
            return f"no clip duration readable ({self.unreadable} headers unreadable)"
        measured = len(self.seconds)
        over = (
            f"{measured} clips"
            if measured == self.n_clips
            else f"a sample of {measured} of {self.n_clips} clips"
        )
        return (
            f"median clip {self.median:.2f} s (shortest {min(self.seconds):.2f} s, longest "
            f"{max(self.seconds):.2f} s) over {over}"
        )


def clip_durations(
    paths: Sequence[str | os.PathLike[str]],
    *,
    max_clips: int = MAX_DURATION_CLIPS,
    seed: int = _DURATION_SEED,
) -> ClipDurations:
    """Durations of clips from their headers: all of them, or a seeded sample.

    Parameters
    ----------
    paths:
        Audio files.
    max_clips:
        Read at most this many headers; larger lists are sampled without replacement with
        ``numpy.random.default_rng(seed)``.
    seed:
        Seed of the sample.

    Returns
    -------
    ClipDurations
        The durations in seconds (header frames / header rate) and the count of unreadable
        headers.
    """
    chosen = list(paths)
    if len(chosen) > max_clips:
        picks = np.random.default_rng(seed).choice(len(chosen), size=max_clips, replace=False)
        chosen = [chosen[i] for i in np.sort(picks)]
    seconds, unreadable = [], 0
    for path in chosen:
        try:
            info = sf.info(str(path))
        except (sf.SoundFileError, RuntimeError, OSError):
            unreadable += 1
            continue
        if info.samplerate > 0:
            seconds.append(info.frames / info.samplerate)
    return ClipDurations(tuple(seconds), len(paths), unreadable)


@dataclass(frozen=True)
class DatasetDir:
    """A dataset directory resolved to its classes and splits.

    Attributes
    ----------
    root:
        The directory given.
    kind:
        ``"synthetic"``, ``"gtzan"`` or ``"folder"``.
    preset:
        Default front-end/model preset for this data (``"toy"`` or ``"gtzan"``):
        ``"gtzan"`` for a GTZAN layout, and for synthetic data and a plain folder the preset
        whose chunks fit the median clip (:func:`~audio_cnn.chunks.fitting_preset`).
    class_names:
        Class names in label order.
    splits:
        ``{"train": [...], "val": [...], "test": [...]}`` clip records, disjoint by track.
    preset_reason:
        One line saying which preset and why, e.g. ``"preset 'toy' (1 s chunks): median
        clip 1.00 s (shortest 0.98 s, longest 1.02 s) over 500 clips"``.
    durations:
        Durations of the clips of all splits, from their headers (see
        :func:`clip_durations`).
    """

    root: Path
    kind: str
    preset: str
    class_names: list[str]
    splits: dict[str, list[ClipRecord]]
    preset_reason: str = ""
    durations: ClipDurations = field(default_factory=lambda: ClipDurations((), 0))


def _chunk_seconds(preset: str) -> float:
    return LogMelConfig.preset(preset).chunk_seconds


def _preset_from(durations: ClipDurations) -> tuple[str, str]:
    """The preset for a plain folder of clips, and the reason."""
    if durations.median is None:
        return "gtzan", (
            f"preset 'gtzan' ({_chunk_seconds('gtzan'):g} s chunks): the default, since {durations}"
        )
    preset = fitting_preset(durations.median)
    return preset, f"preset {preset!r} ({_chunk_seconds(preset):g} s chunks): {durations}"


def _is_gtzan(root: Path) -> bool:
    if any((root / name).is_dir() for name in ("genres_original", "genres")):
        return True
    present = {entry.name for entry in root.iterdir() if entry.is_dir()}
    return len(present & set(GTZAN_GENRES)) >= 2 and present <= set(GTZAN_GENRES) | {"splits"}


def _measured(
    root: Path, kind: str, class_names: list[str], splits: dict[str, list[ClipRecord]]
) -> DatasetDir:
    durations = clip_durations([clip.path for clips in splits.values() for clip in clips])
    if kind == "folder":
        preset, reason = _preset_from(durations)
    elif kind == "synthetic" and durations.median is not None:
        # The toy task's 1 s clips take the toy preset, the 3 s scenes task the gtzan one.
        preset = fitting_preset(durations.median)
        reason = (
            f"preset {preset!r} ({_chunk_seconds(preset):g} s chunks): a synthetic dataset "
            f"of clips this long; {durations}"
        )
    else:
        preset = "toy" if kind == "synthetic" else "gtzan"
        layout = "a synthetic dataset" if kind == "synthetic" else "a GTZAN layout"
        reason = f"preset {preset!r} ({_chunk_seconds(preset):g} s chunks): {layout}; {durations}"
    return DatasetDir(root, kind, preset, class_names, splits, reason, durations)


def open_dataset_dir(root: str | os.PathLike[str], *, seed: int = 0) -> DatasetDir:
    """Recognise the layout of ``root`` and return its classes, splits and preset.

    ``seed`` only matters where splits are generated (no split lists on disk); the preset
    of a plain folder depends on the clips' durations only (see :class:`DatasetDir`).
    Raises ``FileNotFoundError`` / ``NotADirectoryError`` naming the path when ``root`` is not
    a usable dataset directory.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(
            f"dataset directory {root} does not exist (create the toy task with "
            f"'audio-cnn synth {root}')"
        )
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is a file; expected a dataset directory")
    if (root / "synthetic.json").is_file():
        folder = AudioFolder(root)
        return _measured(root, "synthetic", folder.classes, folder.splits(seed=seed))
    if _is_gtzan(root):
        gtzan = GTZAN(root, seed=seed)
        return _measured(root, "gtzan", list(gtzan.classes), gtzan.splits())
    folder = AudioFolder(root)
    return _measured(root, "folder", folder.classes, folder.splits(seed=seed))


@dataclass(frozen=True)
class DurationReport:
    """How a dataset's clips fit a chunk length (see :func:`duration_report`).

    Attributes
    ----------
    chunk_seconds:
        The chunk length checked, in seconds.
    durations:
        The clips' durations.
    padded:
        Measured clips shorter than a chunk (zero-padded, or skipped with
        ``short_clips="skip"``).
    warning:
        What is wrong and what to do, when most clips are shorter than a chunk or a preset
        with longer chunks fits them; ``None`` when they fit.
    """

    chunk_seconds: float
    durations: ClipDurations
    padded: int
    warning: str | None

    def __str__(self) -> str:
        return (
            f"{self.durations}; {self.padded} of {len(self.durations.seconds)} shorter than "
            f"the {self.chunk_seconds:g} s chunks"
        )


def duration_report(dataset: DatasetDir, chunk_seconds: float) -> DurationReport:
    """Whether the clips of ``dataset`` fit chunks of ``chunk_seconds``, before decoding.

    Call it with the chunk length of the preset finally used (``--preset`` may override
    :attr:`DatasetDir.preset`) and warn loudly with :attr:`DurationReport.warning` when it is
    set: most clips would be zero-padded, or cut into chunks shorter than a preset that fits
    them (the same check the chunking datasets make once the clips are decoded).

    Parameters
    ----------
    dataset:
        An opened dataset directory.
    chunk_seconds:
        Chunk length in seconds, e.g. ``LogMelConfig.preset(name).chunk_seconds``.

    Returns
    -------
    DurationReport
        The count of clips shorter than a chunk and the warning text, if any.
    """
    seconds = np.asarray(dataset.durations.seconds, dtype=float)
    return DurationReport(
        chunk_seconds,
        dataset.durations,
        int(np.count_nonzero(seconds < chunk_seconds)),
        chunk_fit_warning(seconds, chunk_seconds, sample_rate=1),
    )
