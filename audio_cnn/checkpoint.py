"""Checkpoints of training runs: atomic writes, safe loading, and the trained-run API.

A checkpoint is a plain dictionary of tensors and JSON-like values saved with ``torch.save``
and read back with ``torch.load(weights_only=True)`` (no arbitrary unpickling). It carries
everything needed to use the model without the training code: the model and front-end
configurations and the class names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from atomic_io import atomic_path
from audio_cnn.frontend import LogMel, LogMelConfig
from audio_cnn.model import AudioCNN, AudioCNNConfig

__all__ = ["CHECKPOINT_FORMAT", "TrainedRun", "load_checkpoint", "load_run", "save_checkpoint"]

CHECKPOINT_FORMAT = 1
_REQUIRED_KEYS = ("format", "model_config", "logmel_config", "class_names", "model_state")


def save_checkpoint(path: str | os.PathLike[str], checkpoint: dict[str, Any]) -> None:
    """Write ``checkpoint`` to ``path`` atomically (temporary file, then rename)."""
    missing = [key for key in _REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise ValueError(f"checkpoint is missing {missing}")
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors on the CPU).

    Raises ``FileNotFoundError`` or ``ValueError`` with the file name when the file is missing,
    unreadable, or not an ``audio_cnn`` checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt files
        raise ValueError(f"cannot read checkpoint {path}: {error}") from error
    if not isinstance(checkpoint, dict) or any(key not in checkpoint for key in _REQUIRED_KEYS):
        raise ValueError(f"{path} is not an audio_cnn checkpoint (missing required entries)")
    if checkpoint["format"] > CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path} has checkpoint format {checkpoint['format']}, newer than this library "
            f"supports ({CHECKPOINT_FORMAT}); upgrade zennit-drsa"
        )
    return checkpoint


@dataclass
class TrainedRun:
    """A trained model with the front-end and class names it was trained with.

    Attributes
    ----------
    model:
        The :class:`AudioCNN` in eval mode.
    logmel:
        The :class:`LogMel` front-end; ``logmel.config.chunk_samples`` is the model's chunk length.
    class_names:
        Class names in logit order.
    checkpoint:
        The raw checkpoint dictionary (history, training settings, epoch).
    """

    model: AudioCNN
    logmel: LogMel
    class_names: list[str]
    checkpoint: dict[str, Any]

    def to(self, device: str | torch.device) -> TrainedRun:
        """Move the model and front-end to ``device``; returns ``self``."""
        self.model.to(device)
        self.logmel.to(device)
        return self

    @torch.no_grad()
    def logits(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, n_classes)`` for chunks ``(B, chunk_samples)`` of peak-normalised audio."""
        device = next(self.model.parameters()).device
        return self.model(self.logmel(waveforms.to(device)))


def load_run(
    run: str | os.PathLike[str], *, which: str = "best", device: str | torch.device | None = None
) -> TrainedRun:
    """Load a trained run directory (or a checkpoint file) for inference.

    Parameters
    ----------
    run:
        A run directory written by ``audio-cnn train`` or a ``.pt`` checkpoint path.
    which:
        ``"best"`` (best validation score) or ``"last"`` checkpoint of a run directory.
    device:
        Where to put the model; default CPU.
    """
    run = Path(run)
    if run.is_dir():
        if which not in ("best", "last"):
            raise ValueError(f"which must be 'best' or 'last', got {which!r}")
        path = run / f"{which}.pt"
        if not path.is_file():
            raise FileNotFoundError(
                f"{run} has no {which}.pt: is it a run directory written by 'audio-cnn train'?"
            )
    else:
        path = run
    checkpoint = load_checkpoint(path)
    model = AudioCNN(AudioCNNConfig.from_dict(checkpoint["model_config"]))
    model.load_state_dict(checkpoint["model_state"])
    model.eval()
    logmel = LogMel(LogMelConfig.from_dict(checkpoint["logmel_config"]))
    trained = TrainedRun(model, logmel, list(checkpoint["class_names"]), checkpoint)
    return trained.to(device) if device is not None else trained
