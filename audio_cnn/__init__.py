"""The audio CNN under study: log-mel front-end, datasets, VGG-style model, training.

Data flows one way: audio files → :mod:`~audio_cnn.audio_io` (decode, resample, cache) →
:mod:`~audio_cnn.datasets` (clips and splits) → :mod:`~audio_cnn.chunks` (fixed-length
waveform chunks, :mod:`~audio_cnn.augment`) → :class:`LogMel` → :class:`AudioCNN` →
:mod:`~audio_cnn.train` / :mod:`~audio_cnn.evaluate`. :mod:`~audio_cnn.synthetic` makes a toy
task whose sound objects and their time–frequency masks are known.

Importing the package is light: submodules (and librosa, soundfile, matplotlib behind them)
load on first use of a name (PEP 562), and nothing changes global state.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "AudioDecodeError": "audio_cnn.audio_io",
    "DecodeReport": "audio_cnn.audio_io",
    "DecodedAudioCache": "audio_cnn.audio_io",
    "load_audio": "audio_cnn.audio_io",
    "peak_normalize": "audio_cnn.audio_io",
    "AddNoise": "audio_cnn.augment",
    "Compose": "audio_cnn.augment",
    "DEFAULT_AUGMENTATION": "audio_cnn.augment",
    "PitchShift": "audio_cnn.augment",
    "PrecomputedVariants": "audio_cnn.augment",
    "RandomFilter": "audio_cnn.augment",
    "RandomGain": "audio_cnn.augment",
    "SpecAugment": "audio_cnn.augment",
    "TimeStretch": "audio_cnn.augment",
    "build_augmentation": "audio_cnn.augment",
    "precompute_variants": "audio_cnn.augment",
    "TrainedRun": "audio_cnn.checkpoint",
    "load_checkpoint": "audio_cnn.checkpoint",
    "load_run": "audio_cnn.checkpoint",
    "resolve_device": "audio_cnn.checkpoint",
    "save_checkpoint": "audio_cnn.checkpoint",
    "ChunkSummary": "audio_cnn.chunks",
    "EvenChunkDataset": "audio_cnn.chunks",
    "RandomChunkDataset": "audio_cnn.chunks",
    "DatasetDir": "audio_cnn.dataset_dirs",
    "open_dataset_dir": "audio_cnn.dataset_dirs",
    "AudioFolder": "audio_cnn.datasets",
    "ClipRecord": "audio_cnn.datasets",
    "GTZAN": "audio_cnn.datasets",
    "GTZAN_GENRES": "audio_cnn.datasets",
    "load_split_lists": "audio_cnn.datasets",
    "make_splits": "audio_cnn.datasets",
    "evaluate": "audio_cnn.evaluate",
    "LogMel": "audio_cnn.frontend",
    "LogMelConfig": "audio_cnn.frontend",
    "predict_chunks": "audio_cnn.inference",
    "predict_files": "audio_cnn.inference",
    "classification_metrics": "audio_cnn.metrics",
    "AudioCNN": "audio_cnn.model",
    "AudioCNNConfig": "audio_cnn.model",
    "SoundObject": "audio_cnn.synthetic",
    "SyntheticClip": "audio_cnn.synthetic",
    "SyntheticTask": "audio_cnn.synthetic",
    "clip_from_path": "audio_cnn.synthetic",
    "load_synthetic_task": "audio_cnn.synthetic",
    "object_masks": "audio_cnn.synthetic",
    "objects_from_path": "audio_cnn.synthetic",
    "write_synthetic_dataset": "audio_cnn.synthetic",
    "FolderInUseError": "audio_cnn.ownership",
    "TrainConfig": "audio_cnn.train",
    "TrainResult": "audio_cnn.train",
    "TrainingDivergedError": "audio_cnn.train",
    "lock_folder": "audio_cnn.ownership",
    "train": "audio_cnn.train",
}

__all__ = [
    "DEFAULT_AUGMENTATION",
    "GTZAN",
    "GTZAN_GENRES",
    "AddNoise",
    "AudioCNN",
    "AudioCNNConfig",
    "AudioDecodeError",
    "AudioFolder",
    "ChunkSummary",
    "ClipRecord",
    "Compose",
    "DatasetDir",
    "DecodeReport",
    "DecodedAudioCache",
    "EvenChunkDataset",
    "FolderInUseError",
    "LogMel",
    "LogMelConfig",
    "PitchShift",
    "PrecomputedVariants",
    "RandomChunkDataset",
    "RandomFilter",
    "RandomGain",
    "SoundObject",
    "SpecAugment",
    "SyntheticClip",
    "SyntheticTask",
    "TimeStretch",
    "TrainConfig",
    "TrainResult",
    "TrainedRun",
    "TrainingDivergedError",
    "build_augmentation",
    "classification_metrics",
    "clip_from_path",
    "evaluate",
    "load_audio",
    "load_checkpoint",
    "load_run",
    "load_split_lists",
    "load_synthetic_task",
    "lock_folder",
    "make_splits",
    "object_masks",
    "objects_from_path",
    "open_dataset_dir",
    "peak_normalize",
    "precompute_variants",
    "predict_chunks",
    "predict_files",
    "resolve_device",
    "save_checkpoint",
    "train",
    "write_synthetic_dataset",
]

if TYPE_CHECKING:
    from audio_cnn.audio_io import (
        AudioDecodeError,
        DecodedAudioCache,
        DecodeReport,
        load_audio,
        peak_normalize,
    )
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
        build_augmentation,
        precompute_variants,
    )
    from audio_cnn.checkpoint import (
        TrainedRun,
        load_checkpoint,
        load_run,
        resolve_device,
        save_checkpoint,
    )
    from audio_cnn.chunks import ChunkSummary, EvenChunkDataset, RandomChunkDataset
    from audio_cnn.dataset_dirs import DatasetDir, open_dataset_dir
    from audio_cnn.datasets import (
        GTZAN,
        GTZAN_GENRES,
        AudioFolder,
        ClipRecord,
        load_split_lists,
        make_splits,
    )
    from audio_cnn.evaluate import evaluate
    from audio_cnn.frontend import LogMel, LogMelConfig
    from audio_cnn.inference import predict_chunks, predict_files
    from audio_cnn.metrics import classification_metrics
    from audio_cnn.model import AudioCNN, AudioCNNConfig
    from audio_cnn.ownership import FolderInUseError, lock_folder
    from audio_cnn.synthetic import (
        SoundObject,
        SyntheticClip,
        SyntheticTask,
        clip_from_path,
        load_synthetic_task,
        object_masks,
        objects_from_path,
        write_synthetic_dataset,
    )
    from audio_cnn.train import TrainConfig, TrainingDivergedError, TrainResult, train


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'audio_cnn' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """Keeps ``audio_cnn.train`` and ``audio_cnn.evaluate`` the functions, as exported.

    Importing a submodule binds it as an attribute of its package; the functions ``train``
    and ``evaluate`` share their modules' names, so without this the first import of
    ``audio_cnn.train`` would turn ``from audio_cnn import train`` into the module. The
    modules stay reachable as ``sys.modules["audio_cnn.train"]``.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == f"{__name__}.{name}":
            self.__dict__.pop(name, None)  # resolve the function lazily instead
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
