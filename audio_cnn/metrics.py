"""Classification metrics at chunk and clip level.

A clip is scored by the mean of its chunks' logits (the reference protocol), so a clip-level
prediction uses every chunk the model saw. Everything here is plain numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["classification_metrics", "clip_logits", "confusion_matrix"]


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts ``(n_classes, n_classes)``: row = true class, column = predicted class."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels, int), np.asarray(predictions, int)), 1)
    return matrix


def clip_logits(
    chunk_logits: np.ndarray, chunk_labels: np.ndarray, clip_index: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Average chunk logits per clip.

    Parameters
    ----------
    chunk_logits:
        ``(n_chunks, n_classes)`` logits.
    chunk_labels:
        ``(n_chunks,)`` true class of each chunk (constant within a clip).
    clip_index:
        ``(n_chunks,)`` clip each chunk came from.

    Returns
    -------
    ``(logits, labels)`` of shapes ``(n_clips, n_classes)`` and ``(n_clips,)``, clips in
    increasing ``clip_index`` order.
    """
    clips, inverse = np.unique(clip_index, return_inverse=True)
    sums = np.zeros((len(clips), chunk_logits.shape[1]))
    np.add.at(sums, inverse, chunk_logits)
    counts = np.bincount(inverse, minlength=len(clips))[:, None]
    labels = np.zeros(len(clips), dtype=np.int64)
    labels[inverse] = chunk_labels
    return sums / counts, labels


def _scores(logits: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    n_classes = len(class_names)
    predictions = logits.argmax(axis=1)
    matrix = confusion_matrix(labels, predictions, n_classes)
    support = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.diag(matrix) / support
    present = support > 0
    return {
        "accuracy": float((predictions == labels).mean()) if len(labels) else float("nan"),
        "balanced_accuracy": float(recall[present].mean()) if present.any() else float("nan"),
        "per_class_accuracy": {
            name: (float(recall[i]) if present[i] else None) for i, name in enumerate(class_names)
        },
        "support": {name: int(support[i]) for i, name in enumerate(class_names)},
        "confusion_matrix": matrix.tolist(),
        "n": len(labels),
    }


def classification_metrics(
    chunk_logits: np.ndarray,
    chunk_labels: np.ndarray,
    clip_index: np.ndarray,
    class_names: Sequence[str],
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, per-class accuracy and confusion matrices.

    Returns a JSON-safe dictionary with ``"chunk"`` and ``"clip"`` sections (each with
    ``accuracy``, ``balanced_accuracy``, ``per_class_accuracy``, ``support``,
    ``confusion_matrix`` and ``n``); per-class accuracy is ``None`` for a class with no examples.
    """
    chunk_logits = np.asarray(chunk_logits, dtype=np.float64)
    chunk_labels = np.asarray(chunk_labels, dtype=np.int64)
    clip_index = np.asarray(clip_index, dtype=np.int64)
    if chunk_logits.ndim != 2 or chunk_logits.shape[1] != len(class_names):
        raise ValueError(f"logits must be (n_chunks, {len(class_names)}), got {chunk_logits.shape}")
    if not (len(chunk_logits) == len(chunk_labels) == len(clip_index)):
        raise ValueError("logits, labels and clip indices must have the same length")
    per_clip_logits, per_clip_labels = clip_logits(chunk_logits, chunk_labels, clip_index)
    return {
        "chunk": _scores(chunk_logits, chunk_labels, class_names),
        "clip": _scores(per_clip_logits, per_clip_labels, class_names),
    }
