"""Batched inference over chunk datasets."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from audio_cnn.audio_io import AudioDecodeError, DecodedAudioCache
from audio_cnn.chunks import EvenChunkDataset
from audio_cnn.datasets import ClipRecord
from audio_cnn.frontend import LogMel
from audio_cnn.metrics import clip_logits
from audio_cnn.model import AudioCNN

__all__ = ["predict_chunks", "predict_files"]


@torch.no_grad()
def predict_chunks(
    model: AudioCNN,
    logmel: LogMel,
    dataset: Dataset,
    *,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits for every item of a chunk dataset yielding ``(chunk, label, clip_index)``.

    The model must be in eval mode (the caller decides; this function does not change it).

    Returns
    -------
    ``(logits, labels, clip_index)``: float32 ``(n_chunks, n_classes)``, int64 ``(n_chunks,)``
    and int64 ``(n_chunks,)``, in dataset order.
    """
    if model.training:
        raise ValueError("predict_chunks needs the model in eval mode: call model.eval() first")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    logits, labels, clips = [], [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for chunk, label, clip in tqdm(loader, desc="predict", disable=not progress, leave=False):
        logits.append(model(logmel(chunk.to(device))).float().cpu().numpy())
        labels.append(np.asarray(label, dtype=np.int64))
        clips.append(np.asarray(clip, dtype=np.int64))
    if not logits:
        raise ValueError("the dataset is empty: nothing to predict")
    return np.concatenate(logits), np.concatenate(labels), np.concatenate(clips)


def predict_files(
    run: str | os.PathLike[str],
    files: Sequence[str | os.PathLike[str]],
    *,
    which: str = "best",
    n_chunks: int = 8,
    span_seconds: float = 29.0,
    device: str | torch.device | None = None,
) -> list[dict[str, Any]]:
    """Classify audio files with a trained run (clip level: mean logit over evenly spaced chunks).

    Returns one JSON-safe dictionary per file, in the order given, with ``file``, ``class``,
    ``probability`` (of the predicted class) and ``probabilities`` (per class name); a
    truncated WAV adds a ``warning``. Clips too short or silent to classify (see
    :meth:`~audio_cnn.audio_io.DecodedAudioCache.prepare`) are not classified: their
    ``class`` and probabilities are ``None`` and ``skipped`` says why. Unreadable files raise
    :class:`audio_cnn.audio_io.AudioDecodeError` naming the file; a damaged or foreign
    checkpoint and an unavailable ``device`` raise ``ValueError`` naming them. ``device``
    defaults to the CPU.
    """
    from audio_cnn.checkpoint import load_run, resolve_device

    # Checked before the checkpoint is read: a missing GPU is a one-line error.
    device = resolve_device(device) if device is not None else None
    trained = load_run(run, which=which, device=device)
    config = trained.logmel.config
    # Remember the current file: each of its chunks reads it again.
    cache = DecodedAudioCache(None, config.sample_rate, memory_items=1)
    # Checked first (it warns): a silent or near-empty clip must not get a confident class.
    report = cache.prepare([Path(f) for f in files], progress=False)
    if report.undecodable:
        path, reason = next(iter(report.undecodable.items()))
        raise AudioDecodeError(path, reason)
    clips = [ClipRecord(Path(f), 0, Path(f).stem) for f in files if Path(f) not in report.failed]
    skipped = [
        {"file": str(f), "class": None, "probability": None, "probabilities": None,
         "skipped": report.failed[Path(f)]}
        for f in files
        if Path(f) in report.failed
    ]  # fmt: skip
    if not clips:
        return skipped
    chunks = EvenChunkDataset(
        clips,
        cache,
        config.chunk_samples,
        n_chunks=n_chunks,
        span_seconds=span_seconds,
        sample_rate=config.sample_rate,
        short="pad",
        skip_unreadable=False,
    )
    logits, labels, clip_index = predict_chunks(
        trained.model, trained.logmel, chunks, device=device, progress=False
    )
    per_clip, _ = clip_logits(logits, labels, clip_index)
    probabilities = torch.softmax(torch.from_numpy(per_clip), dim=1).numpy()
    results = []
    for clip, p in zip(clips, probabilities, strict=True):
        best = int(p.argmax())
        results.append(
            {
                "file": str(clip.path),
                "class": trained.class_names[best],
                "probability": float(p[best]),
                "probabilities": dict(zip(trained.class_names, map(float, p), strict=True)),
                **(
                    {"warning": report.truncated[clip.path]}
                    if clip.path in report.truncated
                    else {}
                ),
            }
        )
    order = {str(Path(f)): i for i, f in enumerate(files)}
    return sorted(results + skipped, key=lambda item: order[item["file"]])
