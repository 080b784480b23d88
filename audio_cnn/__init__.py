"""The audio CNN under study: log-mel front-end, datasets, VGG-style model, training.

Data flows one way: audio files → :mod:`~audio_cnn.audio_io` (decode, resample, cache) →
:mod:`~audio_cnn.datasets` (clips and splits) → :mod:`~audio_cnn.chunks` (fixed-length
waveform chunks, :mod:`~audio_cnn.augment`) → :class:`LogMel` → :class:`AudioCNN` →
:mod:`~audio_cnn.train` / :mod:`~audio_cnn.evaluate`. :mod:`~audio_cnn.synthetic` makes a toy
task whose sound objects and their time–frequency masks are known.
"""

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
from audio_cnn.checkpoint import TrainedRun, load_checkpoint, load_run, save_checkpoint
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
from audio_cnn.synthetic import (
    SoundObject,
    SyntheticClip,
    SyntheticTask,
    clip_from_path,
    load_synthetic_task,
    object_masks,
    write_synthetic_dataset,
)
from audio_cnn.train import TrainConfig, TrainingDivergedError, TrainResult, train

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
    "make_splits",
    "object_masks",
    "open_dataset_dir",
    "peak_normalize",
    "precompute_variants",
    "predict_chunks",
    "predict_files",
    "save_checkpoint",
    "train",
    "write_synthetic_dataset",
]
