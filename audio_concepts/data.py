"""The audio an analysis reads: an audio folder opened for one model, its clips and chunks.

:class:`AudioData` opens the folder once (synthetic, GTZAN or folder-per-class layout, via
:func:`audio_cnn.open_dataset_dir`), checks that its classes are the model's, and decodes
through one cache at the front-end's sample rate. The steps ask it for the clips they use —
training clips of a class to fit on, the evaluation split's clips to explain — cut into the
model's chunks, as log-mel batches, and on synthetic data for the sound objects' masks.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from audio_cnn.audio_io import DecodedAudioCache
from audio_cnn.chunks import EvenChunkDataset
from audio_cnn.dataset_dirs import DatasetDir, open_dataset_dir
from audio_cnn.datasets import ClipRecord
from audio_concepts.config import EVAL_SPLITS, AnalysisConfig
from audio_concepts.model import AudioModel

__all__ = ["FIT_CHUNKS", "AudioData", "choose_clips"]

FIT_CHUNKS = 10
"""Evenly spaced chunks per clip whose vectors the subspaces are fitted on (METHOD.md §6:
10 of a GTZAN clip's first 29 s; a one-second toy clip has one)."""

_SPAN_SECONDS = 29.0


@dataclass(frozen=True)
class AudioData:
    """An audio folder opened for one model.

    Attributes
    ----------
    dataset:
        The folder's classes and splits.
    cache:
        Decoded audio at the front-end's sample rate.
    model:
        The model whose front-end cuts and transforms the audio.
    """

    dataset: DatasetDir
    cache: DecodedAudioCache
    model: AudioModel

    @classmethod
    def open(
        cls,
        data_dir: str | os.PathLike[str],
        model: AudioModel,
        cache_dir: str | os.PathLike[str],
    ) -> AudioData:
        """Open ``data_dir`` for ``model``, decoding into ``cache_dir``.

        Raises
        ------
        ValueError
            If the folder's classes differ from the model's.
        FileNotFoundError
            If ``data_dir`` does not exist.
        """
        dataset = open_dataset_dir(data_dir)
        if tuple(dataset.class_names) != model.class_names:
            raise ValueError(
                f"{data_dir} has classes {dataset.class_names} but the model has "
                f"{list(model.class_names)}"
            )
        return cls(dataset, DecodedAudioCache(cache_dir, model.frontend.sample_rate), model)

    @property
    def root(self) -> Path:
        return Path(self.dataset.root)

    @property
    def kind(self) -> str:
        return self.dataset.kind

    # ----- clips ------------------------------------------------------------------------------

    def split_clips(self, split: str) -> list[ClipRecord]:
        """The clips of a split; a ``ValueError`` if it has none."""
        clips = self.dataset.splits.get(split) or []
        if not clips:
            raise ValueError(
                f"{self.root} has no {split} clips to explain; pick another eval_split "
                f"(one of {EVAL_SPLITS})"
            )
        return clips

    def train_clips(self, label: int, config: AnalysisConfig) -> list[ClipRecord]:
        """``config.fit_clips_per_class`` training clips of class ``label`` (all for ``None``),
        taken as ``config.subset`` and ``config.stratify`` say (see :func:`choose_clips`)."""
        clips = [clip for clip in self.dataset.splits["train"] if clip.label == label]
        return choose_clips(clips, config.fit_clips_per_class, config)

    def evaluation_clips(self, config: AnalysisConfig) -> list[ClipRecord]:
        """Per class ``eval_clips_per_class`` clips of ``config.eval_split``, taken as
        ``config.subset`` and ``config.stratify`` say (see :func:`choose_clips`).

        On synthetic data only clips with at least ``config.min_objects`` sound objects count.
        """
        clips_of_split = self.split_clips(config.eval_split)
        chosen = []
        for label in range(len(self.dataset.class_names)):
            clips = [clip for clip in clips_of_split if clip.label == label]
            if self.kind == "synthetic":
                least = config.min_objects
                clips = [c for c in clips if len(self.synthetic_clip(c.path).object_names) >= least]
            chosen.extend(choose_clips(clips, config.eval_clips_per_class, config))
        return chosen

    def relative_name(self, path: str | os.PathLike[str]) -> str:
        """A clip's path relative to the folder (as stored with explanations)."""
        try:
            return str(Path(path).resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(path)

    # ----- chunks and inputs ------------------------------------------------------------------

    def chunks(self, clips: Sequence[ClipRecord], n_chunks: int) -> EvenChunkDataset:
        """``n_chunks`` evenly spaced model-length chunks of each clip's first 29 s.

        The clips are decoded and checked first (:meth:`DecodedAudioCache.prepare
        <audio_cnn.audio_io.DecodedAudioCache.prepare>`): undecodable, too short or silent
        clips are left out with a warning that counts them, as in training.

        Raises
        ------
        ValueError
            If no clip is left.
        """
        report = self.cache.prepare([clip.path for clip in clips], progress=False)
        kept = [clip for clip in clips if clip.path not in report.failed]
        if clips and not kept:
            raise ValueError(f"none of the {len(clips)} clips could be used: {report}")
        frontend = self.model.frontend
        return EvenChunkDataset(
            kept,
            self.cache,
            frontend.chunk_samples,
            n_chunks=n_chunks,
            span_seconds=max(_SPAN_SECONDS, frontend.chunk_samples / frontend.sample_rate),
            sample_rate=frontend.sample_rate,
        )

    def input_batches(
        self, chunks: EvenChunkDataset, batch_size: int, device: torch.device
    ) -> Iterator[torch.Tensor]:
        """The model's inputs ``(B, 1, n_mels, frames)`` of ``chunks``, batch by batch."""
        for waveform, _, _ in DataLoader(chunks, batch_size=batch_size):
            yield self.model.input_of(waveform.to(device))

    # ----- synthetic data: known sound objects --------------------------------------------------

    @functools.cached_property
    def synthetic_task(self) -> Any:
        """The :class:`~audio_cnn.synthetic.SyntheticTask` that wrote a synthetic folder."""
        from audio_cnn.synthetic import load_synthetic_task

        return load_synthetic_task(self.root)

    def synthetic_clip(self, path: str | os.PathLike[str]) -> Any:
        """The :class:`~audio_cnn.synthetic.SyntheticClip` (with its sources) stored at
        ``path`` (relative to the folder) of a synthetic folder, regenerated."""
        from audio_cnn.synthetic import clip_from_path

        return clip_from_path(self.root, path, self.synthetic_task)

    def present_objects(self, path: str | os.PathLike[str]) -> tuple[str, ...]:
        """Names of the sound objects of the synthetic clip at ``path`` (as for
        :meth:`synthetic_clip`), without regenerating its audio."""
        from audio_cnn.synthetic import objects_from_path

        return objects_from_path(self.root, path, self.synthetic_task)

    def object_masks(self, clips: Sequence[str]) -> list[np.ndarray] | None:
        """Per clip (paths relative to the folder) the masks of its sound objects on the
        model's log-mel grid, ``(n_objects, n_mels, frames)`` bool; ``None`` unless the data
        are synthetic."""
        if self.kind != "synthetic":
            return None
        from audio_cnn.synthetic import object_masks

        frontend = self.model.frontend
        device = frontend.window.device
        frontend.to("cpu")  # the masks are computed once per clip on the CPU
        try:
            return [object_masks(self.synthetic_clip(path), frontend) for path in clips]
        finally:
            frontend.to(device)


def choose_clips(
    clips: Sequence[ClipRecord], limit: int | None, config: AnalysisConfig
) -> list[ClipRecord]:
    """At most ``limit`` of ``clips`` (all of them for ``None``), as the settings say.

    ``config.subset == "first"`` takes the first clips in path order. ``"random"`` takes a
    random sample seeded by ``config.seeds[0]``, in random order (so whatever is shown first,
    e.g. the report's examples, is random too); with ``config.stratify``, the strata named by
    the pattern's first group in each clip's file name (files it does not match form one
    stratum) take turns, each in its own random order, so that every stratum is represented
    before any is repeated.
    """
    if config.subset == "first":
        return list(clips)[:limit]
    rng = np.random.default_rng(config.seeds[0])
    order = [clips[i] for i in rng.permutation(len(clips))]
    if config.stratify is not None:
        pattern = re.compile(config.stratify)
        strata: dict[str, list[ClipRecord]] = {}
        for clip in order:
            match = pattern.search(Path(clip.path).name)
            name = "" if match is None else (match.group(1) if pattern.groups else match.group())
            strata.setdefault(name, []).append(clip)
        turns = itertools.zip_longest(*strata.values())
        order = [clip for turn in turns for clip in turn if clip is not None]
    return order[:limit]
