"""Figures for training runs: learning curves and confusion matrices (matplotlib, PNG)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from atomic_io import atomic_path

__all__ = ["plot_confusion_matrix", "plot_training_curves"]


def _figure(width: float, height: float) -> Figure:
    # A bare Figure on an Agg canvas: headless, no pyplot state, the caller's backend untouched.
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: str | os.PathLike[str]) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def plot_training_curves(history: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """Loss and accuracy per epoch (train and validation) as a two-panel PNG at ``path``."""
    epochs = [r["epoch"] for r in history]
    figure = _figure(9, 3.4)
    loss_ax, acc_ax = figure.subplots(1, 2)
    loss_ax.plot(epochs, [r["train_loss"] for r in history], label="train")
    loss_ax.plot(epochs, [r["val_loss"] for r in history], label="validation")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="Loss")
    acc_ax.plot(epochs, [r["train_accuracy"] for r in history], label="train (chunks)")
    acc_ax.plot(epochs, [r["val_clip_accuracy"] for r in history], label="validation (clips)")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="Accuracy", ylim=(0, 1.02))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    _save(figure, path)


def plot_confusion_matrix(
    matrix: np.ndarray | Sequence[Sequence[int]],
    class_names: Sequence[str],
    path: str | os.PathLike[str],
    *,
    title: str = "Confusion matrix",
) -> None:
    """Row-normalised confusion matrix (true class in rows) with counts, as a PNG at ``path``."""
    counts = np.asarray(matrix, dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.nan_to_num(counts / counts.sum(axis=1, keepdims=True))
    size = 1.0 + 0.55 * len(class_names)
    figure = _figure(size + 1.5, size)
    ax = figure.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    for i, j in np.ndindex(counts.shape):
        colour = "white" if shares[i, j] > 0.5 else "black"
        ax.text(j, i, str(counts[i, j]), ha="center", va="center", color=colour, fontsize=8)
    figure.colorbar(image, ax=ax, fraction=0.046, label="share of true class")
    _save(figure, path)
