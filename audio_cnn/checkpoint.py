"""Checkpoints of training runs: atomic writes, safe loading, and the trained-run API.

A checkpoint is a plain dictionary of tensors and JSON-like values saved with ``torch.save``
and read back with ``torch.load(weights_only=True)`` (no arbitrary unpickling). It carries
everything needed to use the model without the training code: the model and front-end
configurations and the class names.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from atomic_io import atomic_path
from audio_cnn.frontend import LogMel, LogMelConfig
from audio_cnn.model import AudioCNN, AudioCNNConfig

__all__ = [
    "CHECKPOINT_FORMAT",
    "TrainedRun",
    "load_checkpoint",
    "load_run",
    "resolve_device",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = 1
_REQUIRED_KEYS = ("format", "model_config", "logmel_config", "class_names", "model_state")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The torch device to compute on, checked before any work.

    Parameters
    ----------
    device:
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``; ``None`` picks CUDA when available,
        else the CPU.

    Raises
    ------
    ValueError
        One line naming the device when it is not a device name or not available here.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(
            f"device {str(device)!r} is not a torch device; use cpu, cuda, cuda:N or mps"
        ) from error
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(
                f"device {str(device)!r}: CUDA is not available on this machine "
                "(no GPU, or torch built without CUDA); use --device cpu"
            )
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(
                f"device {str(device)!r}: this machine has {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
    elif resolved.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {str(device)!r}: MPS is not available; use --device cpu")
    elif resolved.type != "cpu":
        raise ValueError(f"device {str(device)!r} is not supported; use cpu, cuda, cuda:N or mps")
    return resolved


def _gist(error: BaseException) -> str:
    """The first sentence of an error's message (torch writes whole paragraphs)."""
    lines = str(error).strip().splitlines()
    return lines[0].strip().split(". ")[0].rstrip(".") if lines else type(error).__name__


def save_checkpoint(path: str | os.PathLike[str], checkpoint: dict[str, Any]) -> None:
    """Write ``checkpoint`` to ``path`` atomically (temporary file, then rename).

    A failed write (e.g. a full disk) raises ``OSError`` naming the file and leaves an
    existing file at ``path`` as it was.
    """
    missing = [key for key in _REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise ValueError(f"checkpoint is missing {missing}")
    with atomic_path(path) as tmp:
        try:
            torch.save(checkpoint, tmp)
        except RuntimeError as error:
            # torch's zip writer reports a failed write (a full disk, a vanished folder) as a
            # RuntimeError with a C++ location; it is a file-system failure like any other.
            detail = str(error).strip().splitlines()[0] if str(error).strip() else "no detail"
            raise OSError(
                f"cannot write checkpoint {path}, is the disk full? (torch: {detail})"
            ) from error


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a checkpoint written by :func:`save_checkpoint` (tensors on the CPU).

    The file is read with ``torch.load(weights_only=True)``: pickled Python objects are
    refused, never run. The checkpoint must hold the entries a run needs, settings that build
    a model and front-end, one class name per logit, and finite weights of exactly the shapes
    of that model.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a file.
    ValueError
        One line naming the file when it is not a torch file, holds pickled objects, is not
        an ``audio_cnn`` checkpoint, comes from a newer version, does not fit its own model
        settings, or holds NaN or infinite weights.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only" not in str(error).lower():  # a damaged file, not a refused object
            raise ValueError(f"cannot read checkpoint {path}: damaged ({_gist(error)})") from error
        raise ValueError(
            f"refusing to load {path}: it holds pickled Python objects, which could run code "
            f"({_gist(error)}); an audio_cnn checkpoint holds tensors and plain values only"
        ) from error
    except Exception as error:  # torch raises several types for files it cannot read
        raise ValueError(
            f"cannot read checkpoint {path}: not a file written by torch.save, or damaged "
            f"({type(error).__name__}: {_gist(error)})"
        ) from error
    if not isinstance(checkpoint, dict) or any(key not in checkpoint for key in _REQUIRED_KEYS):
        held = sorted(map(str, checkpoint))[:6] if isinstance(checkpoint, dict) else None
        raise ValueError(
            f"{path} is not an audio_cnn checkpoint: it needs the entries {list(_REQUIRED_KEYS)}"
            + (
                f", it holds {held}"
                if held is not None
                else f", it holds a {type(checkpoint).__name__}"
            )
        )
    version = checkpoint["format"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{path} has an invalid checkpoint format {version!r}")
    if version > CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path} has checkpoint format {version}, newer than this library "
            f"supports ({CHECKPOINT_FORMAT}); upgrade zennit-drsa"
        )
    _check_model(path, checkpoint)
    return checkpoint


def _check_model(path: Path, checkpoint: dict[str, Any]) -> None:
    """Refuse a checkpoint whose settings, class names or weights do not make a working model."""
    try:
        if not isinstance(checkpoint["model_config"], dict) or not isinstance(
            checkpoint["logmel_config"], dict
        ):
            raise TypeError("model_config and logmel_config must be dictionaries")
        config = AudioCNNConfig.from_dict(checkpoint["model_config"])
        LogMelConfig.from_dict(checkpoint["logmel_config"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path} holds invalid model settings: {_gist(error)}") from error

    names = checkpoint["class_names"]
    if (
        not isinstance(names, list)
        or not all(isinstance(name, str) for name in names)
        or len(set(names)) != len(names)
    ):
        raise ValueError(
            f"{path}: class_names must be a list of distinct strings, got {names!r:.80}"
        )
    if len(names) != config.n_classes:
        raise ValueError(
            f"{path} names {len(names)} classes {names!r:.80} but its model has "
            f"{config.n_classes} outputs; the checkpoint is inconsistent: train the run again"
        )

    state = checkpoint["model_state"]
    if not isinstance(state, dict) or not all(
        isinstance(value, torch.Tensor) for value in state.values()
    ):
        raise ValueError(f"{path}: model_state must map parameter names to tensors")
    # Shapes only: a model on the meta device allocates no memory.
    with torch.device("meta"):
        expected = {name: tuple(t.shape) for name, t in AudioCNN(config).state_dict().items()}
    found = {str(name): tuple(t.shape) for name, t in state.items()}
    if found != expected:
        problems = {
            "missing": sorted(set(expected) - set(found)),
            "unexpected": sorted(set(found) - set(expected)),
            "other shape": sorted(n for n in set(found) & set(expected) if found[n] != expected[n]),
        }
        shown = "; ".join(f"{kind} {_some(names)}" for kind, names in problems.items() if names)
        raise ValueError(
            f"{path}: its weights do not fit the model its settings describe ({shown}); "
            "it comes from another architecture or program"
        )
    broken = [
        str(name)
        for name, tensor in state.items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]
    if broken:
        raise ValueError(
            f"{path} holds NaN or infinite weights in {_some(broken)}: the file is damaged or "
            "its training diverged; use the other checkpoint (--checkpoint best or last) or "
            "train again"
        )


def _some(names: list[str]) -> str:
    """The first three names, and '...' if there are more (keeps messages on one line)."""
    return ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")


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
        Where to put the model (checked by :func:`resolve_device`); default CPU.

    Raises
    ------
    FileNotFoundError, ValueError
        One line naming the run or file (see :func:`load_checkpoint`).
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
    return trained.to(resolve_device(device)) if device is not None else trained
