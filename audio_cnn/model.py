"""A configurable VGG-style CNN on log-mel spectrograms, built to be explained with LRP.

The layout follows what hook-based LRP needs: every module is used exactly once in
``forward``, ReLUs are not in-place, and module names are stable (``features.N`` for the
convolutional part, ``classifier.N`` for the dense part) so layers can be named in
configuration files and on the command line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["AudioCNN", "AudioCNNConfig"]


def _as_tuple(value: int | Sequence[int], length: int, name: str) -> tuple[int, ...]:
    """Broadcast an int to ``length`` entries, or check a sequence has that many."""
    if isinstance(value, int):
        return (value,) * length
    values = tuple(int(v) for v in value)
    if len(values) != length:
        raise ValueError(f"{name} has {len(values)} entries but there are {length} blocks")
    return values


@dataclass(frozen=True)
class AudioCNNConfig:
    """Architecture of an :class:`AudioCNN`.

    Parameters
    ----------
    input_shape:
        ``(n_mels, frames)`` of the log-mel input; the flatten size is inferred from it.
    in_channels:
        Input channels (1 for a single log-mel image).
    channels:
        Output channels of each convolutional block.
    convs_per_block:
        Convolutions per block: one int for all blocks or one per block.
    kernel_size:
        Square kernel size of every convolution (odd; "same" padding keeps map sizes).
    pool_size:
        Max-pooling size after each block: one int for all blocks or one per block
        (1 disables pooling in that block).
    batch_norm:
        Insert ``BatchNorm2d`` after each convolution (merge it with a canonizer for LRP).
    dense:
        Widths of the hidden dense layers.
    dropout:
        Dropout probability after each hidden dense layer (inactive in eval mode).
    n_classes:
        Number of output logits.
    """

    input_shape: tuple[int, int] = (128, 128)
    in_channels: int = 1
    channels: tuple[int, ...] = (32, 32, 64, 64, 128)
    convs_per_block: int | tuple[int, ...] = 1
    kernel_size: int = 3
    pool_size: int | tuple[int, ...] = 2
    batch_norm: bool = False
    dense: tuple[int, ...] = (128, 128)
    dropout: float = 0.4
    n_classes: int = 10

    PRESETS = ("gtzan", "toy")

    def __post_init__(self) -> None:
        # Normalise sequences so configs loaded from JSON compare equal to presets.
        for name in ("input_shape", "channels", "dense"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        for name in ("convs_per_block", "pool_size"):
            value = getattr(self, name)
            if not isinstance(value, int):
                object.__setattr__(self, name, tuple(int(v) for v in value))
        if len(self.input_shape) != 2 or min(self.input_shape) < 1:
            raise ValueError(f"input_shape must be (n_mels, frames) > 0, got {self.input_shape}")
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"channels must be a non-empty list of positive ints: {self.channels}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd int, got {self.kernel_size}")
        if self.n_classes < 2:
            raise ValueError(f"n_classes must be at least 2, got {self.n_classes}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.in_channels < 1 or (self.dense and min(self.dense) < 1):
            raise ValueError("in_channels and dense widths must be positive")
        n_blocks = len(self.channels)
        if min(_as_tuple(self.convs_per_block, n_blocks, "convs_per_block")) < 1:
            raise ValueError("convs_per_block must be at least 1")
        height, width = self.input_shape
        for pool in _as_tuple(self.pool_size, n_blocks, "pool_size"):
            if pool < 1:
                raise ValueError("pool_size must be at least 1")
            height, width = height // pool, width // pool
            if height < 1 or width < 1:
                raise ValueError(
                    f"input_shape {self.input_shape} is too small for {n_blocks} pooling blocks "
                    f"of size {self.pool_size}: use fewer blocks or a larger input"
                )

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> AudioCNNConfig:
        """Named architectures.

        ``"gtzan"``: the reference 3 s model (input 128×128, five Conv3×3–ReLU–MaxPool2 blocks
        with 32, 32, 64, 64, 128 channels, dense 128–128 with dropout 0.4, 10 classes).
        ``"toy"``: the same shape of network scaled to the 64×64 toy task (2 classes).
        """
        presets = {
            "gtzan": cls(),
            "toy": cls(
                input_shape=(64, 64),
                channels=(16, 16, 32, 32, 64),
                dense=(64, 64),
                dropout=0.2,
                n_classes=2,
            ),
        }
        if name not in presets:
            raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(presets)}")
        return dataclasses.replace(presets[name], **overrides)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary (tuples become lists)."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AudioCNNConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"unknown AudioCNN config keys {sorted(unknown)}; known: {sorted(known)}"
            )
        return cls(**dict(data))


class AudioCNN(nn.Module):
    """VGG-style CNN: conv blocks (Conv → [BatchNorm] → ReLU, then MaxPool) and a dense head.

    Input ``(B, in_channels, n_mels, frames)`` log-mel images; output ``(B, n_classes)`` logits.
    ``features`` holds the convolutional blocks, ``classifier`` starts with ``Flatten`` and holds
    the dense layers, so every layer has a stable name such as ``features.3`` or ``classifier.1``.
    """

    def __init__(self, config: AudioCNNConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        config = dataclasses.replace(config or AudioCNNConfig(), **overrides)
        self.config = config
        n_blocks = len(config.channels)
        convs = _as_tuple(config.convs_per_block, n_blocks, "convs_per_block")
        pools = _as_tuple(config.pool_size, n_blocks, "pool_size")

        layers: list[nn.Module] = []
        self._block_ends: list[int] = []
        in_channels = config.in_channels
        for out_channels, n_convs, pool in zip(config.channels, convs, pools, strict=True):
            for _ in range(n_convs):
                layers.append(
                    nn.Conv2d(in_channels, out_channels, config.kernel_size, padding="same")
                )
                if config.batch_norm:
                    layers.append(nn.BatchNorm2d(out_channels))
                layers.append(nn.ReLU())
                in_channels = out_channels
            self._block_ends.append(len(layers) - 1)
            if pool > 1:
                layers.append(nn.MaxPool2d(pool))
        self.features = nn.Sequential(*layers)

        height, width = config.input_shape
        for pool in pools:
            height, width = height // pool, width // pool
        head: list[nn.Module] = [nn.Flatten()]
        width_in = in_channels * height * width
        for width_out in config.dense:
            head += [nn.Linear(width_in, width_out), nn.ReLU(), nn.Dropout(config.dropout)]
            width_in = width_out
        head.append(nn.Linear(width_in, config.n_classes))
        self.classifier = nn.Sequential(*head)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> AudioCNN:
        """Build a named architecture (see :meth:`AudioCNNConfig.preset`)."""
        return cls(AudioCNNConfig.preset(name, **overrides))

    def block_output(self, block: int) -> str:
        """Name of the last ReLU of convolutional block ``block`` (1-based), e.g. ``features.10``.

        This is the layer DRSA uses by default (the reference pipeline takes block 4). Negative
        values count from the end (``-1`` = last block).
        """
        n_blocks = len(self._block_ends)
        index = block - 1 if block > 0 else n_blocks + block
        if block == 0 or not 0 <= index < n_blocks:
            raise ValueError(f"block must be in 1..{n_blocks} or -{n_blocks}..-1, got {block}")
        return f"features.{self._block_ends[index]}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, n_classes)`` for log-mel images ``(B, in_channels, n_mels, frames)``."""
        expected = (self.config.in_channels, *self.config.input_shape)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"AudioCNN expects input of shape (B, {', '.join(map(str, expected))}), "
                f"got {tuple(x.shape)}; check the LogMel settings match the model's input_shape"
            )
        return self.classifier(self.features(x))
