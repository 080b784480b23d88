"""Evaluate a trained run on a split of an audio dataset: metrics as JSON and figures."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from atomic_io import write_json_atomic
from audio_cnn.audio_io import DecodedAudioCache
from audio_cnn.checkpoint import load_run
from audio_cnn.chunks import EvenChunkDataset
from audio_cnn.dataset_dirs import open_dataset_dir
from audio_cnn.datasets import ClipRecord
from audio_cnn.figures import plot_confusion_matrix
from audio_cnn.inference import predict_chunks
from audio_cnn.metrics import classification_metrics

__all__ = ["evaluate", "score_clips"]


def evaluate(
    run: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    *,
    split: str = "test",
    which: str = "best",
    out_dir: str | os.PathLike[str] | None = None,
    n_chunks: int | None = None,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score a trained run on one split at chunk and clip level.

    Parameters
    ----------
    run:
        Run directory written by :func:`audio_cnn.train`.
    data_dir:
        The dataset directory (same layout rules as training).
    split:
        ``"train"``, ``"val"`` or ``"test"``.
    which:
        ``"best"`` or ``"last"`` checkpoint.
    out_dir:
        Where ``metrics.json`` and the confusion-matrix PNGs go; default
        ``run/evaluation/<split>``.
    n_chunks:
        Evenly spaced chunks per clip; default the run's training setting (8 of the first 29 s).

    Returns
    -------
    A JSON-safe dictionary: ``accuracy`` and ``balanced_accuracy`` (clip level: mean logit over
    a clip's chunks), ``per_class_accuracy``, ``chunk_accuracy``, the full ``chunk`` and
    ``clip`` sections of :func:`audio_cnn.metrics.classification_metrics`, the ``split``,
    the checkpoint used and the number of unreadable files skipped.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    trained = load_run(run, which=which, device=device)
    dataset = open_dataset_dir(data_dir)
    if dataset.class_names != trained.class_names:
        raise ValueError(
            f"{data_dir} has classes {dataset.class_names} but the run was trained on "
            f"{trained.class_names}"
        )
    if split not in dataset.splits:
        raise ValueError(f"unknown split {split!r}; available: {sorted(dataset.splits)}")
    settings = trained.checkpoint.get("run_settings", {}).get("train", {})
    cache = DecodedAudioCache(Path(run) / "cache", trained.logmel.config.sample_rate)
    out_dir = Path(out_dir) if out_dir is not None else Path(run) / "evaluation" / split
    return score_clips(
        trained.model,
        trained.logmel,
        trained.class_names,
        dataset.splits[split],
        cache,
        split=split,
        n_chunks=n_chunks or settings.get("eval_chunks", 8),
        span_seconds=settings.get("eval_span_seconds", 29.0),
        short_clips=settings.get("short_clips", "pad"),
        out_dir=out_dir,
        batch_size=batch_size,
        device=device,
        progress=progress,
        details={"checkpoint": which},
    )


def score_clips(
    model: torch.nn.Module,
    logmel: Callable[[torch.Tensor], torch.Tensor],
    class_names: Sequence[str],
    clips: Sequence[ClipRecord],
    cache: DecodedAudioCache,
    *,
    split: str,
    n_chunks: int = 8,
    span_seconds: float = 29.0,
    short_clips: str = "pad",
    out_dir: str | os.PathLike[str],
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    progress: bool = True,
    details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Score any log-mel classifier on clips at chunk and clip level; write the metrics.

    Parameters
    ----------
    model:
        Log-mel ``(B, 1, n_mels, frames)`` → logits ``(B, n_classes)``, on ``device``.
    logmel:
        Its front-end, waveforms ``(B, T)`` → the model's input, with ``chunk_samples`` and
        ``sample_rate`` attributes (:class:`~audio_cnn.frontend.LogMel` has them).
    class_names:
        One name per logit.
    clips:
        The clips to score; those the cache cannot decode are left out and listed.
    cache:
        Decoded audio at the front-end's sample rate.
    split:
        The split's name (recorded, and in the figures' titles).
    n_chunks, span_seconds, short_clips:
        Evenly spaced chunks per clip of its first ``span_seconds``; clips shorter than a
        chunk are zero-padded (``"pad"``) or left out (``"skip"``).
    out_dir:
        Where ``metrics.json`` and the confusion-matrix PNGs go.
    details:
        Entries recorded with the metrics (e.g. which checkpoint was scored).

    Returns
    -------
    A JSON-safe dictionary: ``accuracy`` and ``balanced_accuracy`` (clip level: mean logit over
    a clip's chunks), ``per_class_accuracy``, ``chunk_accuracy``, the full ``chunk`` and
    ``clip`` sections of :func:`audio_cnn.metrics.classification_metrics`, the ``split`` and
    the unreadable files skipped.
    """
    report = cache.prepare([clip.path for clip in clips], progress=progress)
    kept = [clip for clip in clips if clip.path not in report.failed]
    chunks = EvenChunkDataset(
        kept,
        cache,
        logmel.chunk_samples,
        n_chunks=n_chunks,
        span_seconds=span_seconds,
        sample_rate=logmel.sample_rate,
        short=short_clips,
    )
    logits, labels, clip_index = predict_chunks(
        model, logmel, chunks, batch_size=batch_size, device=device, progress=progress
    )
    names = list(class_names)
    metrics = classification_metrics(logits, labels, clip_index, names)
    result = {
        "accuracy": metrics["clip"]["accuracy"],
        "balanced_accuracy": metrics["clip"]["balanced_accuracy"],
        "per_class_accuracy": metrics["clip"]["per_class_accuracy"],
        "chunk_accuracy": metrics["chunk"]["accuracy"],
        "split": split,
        **(details or {}),
        "class_names": names,
        "skipped_files": {str(path): reason for path, reason in report.failed.items()},
        **metrics,
    }
    out_dir = Path(out_dir)
    write_json_atomic(out_dir / "metrics.json", result)
    for level in ("clip", "chunk"):
        plot_confusion_matrix(
            metrics[level]["confusion_matrix"],
            names,
            out_dir / f"confusion_{level}.png",
            title=f"{split} split, {level} level (accuracy {metrics[level]['accuracy']:.3f})",
        )
    return result
