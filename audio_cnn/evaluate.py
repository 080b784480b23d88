"""Evaluate a trained run on a split of an audio dataset: metrics as JSON and figures."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atomic_io import read_json, write_json_atomic
from audio_cnn.audio_io import DecodedAudioCache
from audio_cnn.checkpoint import load_run, resolve_device
from audio_cnn.chunks import EvenChunkDataset
from audio_cnn.dataset_dirs import open_dataset_dir
from audio_cnn.datasets import ClipRecord
from audio_cnn.figures import plot_confusion_matrix
from audio_cnn.inference import predict_chunks
from audio_cnn.metrics import classification_metrics

__all__ = ["ClipPredictions", "evaluate", "predict_clips", "score_clips", "write_scores"]


def evaluate(
    run: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    *,
    split: str | None = None,
    which: str = "best",
    out_dir: str | os.PathLike[str] | None = None,
    n_chunks: int | None = None,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score a trained run on a split of a dataset at chunk and clip level.

    Parameters
    ----------
    run:
        Run directory written by :func:`audio_cnn.train`.
    data_dir:
        The dataset directory (same layout rules as training): the run's own training data,
        or other data with the same classes.
    split:
        ``"train"``, ``"val"``, ``"test"`` or ``"all"`` (every clip). Default: ``"test"``
        for the data the run was trained on (the run records its data directory), ``"all"``
        for other data, whose splits the run never saw.
    which:
        ``"best"`` or ``"last"`` checkpoint.
    out_dir:
        Where ``metrics.json`` and the confusion-matrix PNGs go. Default:
        ``run/evaluation/<split>`` for the run's own data, ``run/evaluation/<data
        folder>-<split>`` for other data (with a hash of the data's path added if that name
        already holds the evaluation of another folder), so the run's own results are never
        overwritten.
    n_chunks:
        Evenly spaced chunks per clip; default the run's training setting (8 of the first 29 s).
    device:
        Torch device (checked before any work); default CUDA when available, else the CPU.

    Returns
    -------
    A JSON-safe dictionary: ``accuracy`` and ``balanced_accuracy`` (clip level: mean logit over
    a clip's chunks), ``per_class_accuracy``, ``chunk_accuracy``, the full ``chunk`` and
    ``clip`` sections of :func:`audio_cnn.metrics.classification_metrics`, the ``split``,
    the checkpoint used, the ``data_dir`` scored (absolute), whether it is the run's
    ``training_data``, the ``output_dir`` and the unreadable files skipped.

    Raises
    ------
    ValueError
        The data's classes differ from the run's, or the split is unknown.
    """
    device = resolve_device(device)
    trained = load_run(run, which=which, device=device)
    dataset = open_dataset_dir(data_dir)
    if dataset.class_names != trained.class_names:
        missing = [name for name in trained.class_names if name not in dataset.class_names]
        extra = [name for name in dataset.class_names if name not in trained.class_names]
        differences = "; ".join(
            f"{label} {names}"
            for label, names in (("missing", missing), ("not in the run", extra))
            if names
        )
        raise ValueError(
            f"{data_dir} has classes {dataset.class_names} but the run {run} was trained on "
            f"{trained.class_names} ({differences or 'in another order'}); evaluate needs data "
            "with one folder per class of the run, named as in the run"
        )
    run_settings = trained.checkpoint.get("run_settings")
    run_settings = run_settings if isinstance(run_settings, dict) else {}
    data_path = Path(data_dir).resolve()
    training_data = run_settings.get("data_dir") == str(data_path)
    split = split or ("test" if training_data else "all")
    if split == "all":
        clips = [clip for clips in dataset.splits.values() for clip in clips]
    elif split in dataset.splits:
        clips = dataset.splits[split]
    else:
        raise ValueError(f"unknown split {split!r}; choose one of {[*dataset.splits, 'all']}")
    run_dir = Path(run) if Path(run).is_dir() else Path(run).parent
    if out_dir is None:
        out_dir = _evaluation_dir(run_dir / "evaluation", data_path, split, training_data)
    settings = run_settings.get("train", {})
    cache = DecodedAudioCache(run_dir / "cache", trained.logmel.config.sample_rate)
    return score_clips(
        trained.model,
        trained.logmel,
        trained.class_names,
        clips,
        cache,
        split=split,
        n_chunks=n_chunks or settings.get("eval_chunks", 8),
        span_seconds=settings.get("eval_span_seconds", 29.0),
        short_clips=settings.get("short_clips", "pad"),
        out_dir=out_dir,
        batch_size=batch_size,
        device=device,
        progress=progress,
        details={
            "checkpoint": which,
            "data_dir": str(data_path),
            "training_data": training_data,
            "output_dir": str(out_dir),
        },
    )


def _evaluation_dir(root: Path, data_dir: Path, split: str, training_data: bool) -> Path:
    """Where the evaluation of ``split`` of ``data_dir`` goes, under ``root``.

    The run's own data: ``root/<split>``. Other data: ``root/<folder name>-<split>``, or, when
    that folder holds the evaluation of another data folder of the same name (or one that
    cannot be read), ``root/<folder name>-<hash of the path>-<split>``.
    """
    if training_data:
        return root / split
    name = data_dir.name or "data"
    plain = root / f"{name}-{split}"
    if not (plain / "metrics.json").exists():
        return plain
    try:
        recorded = read_json(plain / "metrics.json", what="evaluation metrics").get("data_dir")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if recorded == str(data_dir):
        return plain
    digest = hashlib.sha256(str(data_dir).encode("utf-8")).hexdigest()[:8]
    return root / f"{name}-{digest}-{split}"


@dataclass(frozen=True)
class ClipPredictions:
    """A classifier's chunk logits on some clips: what :func:`score_clips` scores.

    Plain arrays, so that the predictions of several processes can be gathered and joined
    (:meth:`concatenate`) before one of them scores all.

    Attributes
    ----------
    logits : numpy.ndarray
        ``(n_chunks, n_classes)`` float32 chunk logits.
    labels : numpy.ndarray
        ``(n_chunks,)`` int64 true class of each chunk.
    clip_index : numpy.ndarray
        ``(n_chunks,)`` int64 index of each chunk's clip among the clips kept.
    n_clips : int
        Clips kept (decodable and long enough).
    skipped : dict
        Path → reason of every clip left out.
    """

    logits: np.ndarray
    labels: np.ndarray
    clip_index: np.ndarray
    n_clips: int
    skipped: dict[str, str]

    @staticmethod
    def concatenate(parts: Sequence[ClipPredictions]) -> ClipPredictions:
        """The predictions of consecutive groups of clips, as one (clip indices shifted)."""
        offsets = np.cumsum([0, *(part.n_clips for part in parts)])
        return ClipPredictions(
            np.concatenate([part.logits for part in parts]),
            np.concatenate([part.labels for part in parts]),
            np.concatenate(
                [part.clip_index + offset for part, offset in zip(parts, offsets[:-1], strict=True)]
            ),
            int(offsets[-1]),
            {path: reason for part in parts for path, reason in part.skipped.items()},
        )


def predict_clips(
    model: torch.nn.Module,
    logmel: Callable[[torch.Tensor], torch.Tensor],
    clips: Sequence[ClipRecord],
    cache: DecodedAudioCache,
    *,
    n_chunks: int = 8,
    span_seconds: float = 29.0,
    short_clips: str = "pad",
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> ClipPredictions:
    """The chunk logits of a log-mel classifier on clips (arguments as for
    :func:`score_clips`); clips the cache cannot decode are left out and listed."""
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
    return ClipPredictions(
        np.asarray(logits),
        np.asarray(labels),
        np.asarray(clip_index),
        len(kept),
        {str(path): reason for path, reason in report.failed.items()},
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
    predictions = predict_clips(
        model,
        logmel,
        clips,
        cache,
        n_chunks=n_chunks,
        span_seconds=span_seconds,
        short_clips=short_clips,
        batch_size=batch_size,
        device=device,
        progress=progress,
    )
    return write_scores(predictions, class_names, split=split, out_dir=out_dir, details=details)


def write_scores(
    predictions: ClipPredictions,
    class_names: Sequence[str],
    *,
    split: str,
    out_dir: str | os.PathLike[str],
    details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The metrics of :func:`score_clips` from predictions; written to ``out_dir``
    (``metrics.json`` and the confusion matrices) and returned."""
    names = list(class_names)
    metrics = classification_metrics(
        predictions.logits, predictions.labels, predictions.clip_index, names
    )
    result = {
        "accuracy": metrics["clip"]["accuracy"],
        "balanced_accuracy": metrics["clip"]["balanced_accuracy"],
        "per_class_accuracy": metrics["clip"]["per_class_accuracy"],
        "chunk_accuracy": metrics["chunk"]["accuracy"],
        "split": split,
        **(details or {}),
        "class_names": names,
        "skipped_files": dict(predictions.skipped),
        **metrics,
    }
    out_dir = Path(out_dir)
    try:
        write_json_atomic(out_dir / "metrics.json", result)
        for level in ("clip", "chunk"):
            plot_confusion_matrix(
                metrics[level]["confusion_matrix"],
                names,
                out_dir / f"confusion_{level}.png",
                title=f"{split} split, {level} level (accuracy {metrics[level]['accuracy']:.3f})",
            )
    except OSError as error:
        # Each file is replaced atomically: a failed write leaves the earlier one intact.
        raise OSError(f"cannot write the evaluation to {out_dir} ({error})") from error
    return result
