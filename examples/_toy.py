"""Shared set-up of the examples: in-memory clips of the toy task and a briefly trained model.

The clips come from :meth:`audio_cnn.synthetic.SyntheticTask.toy` (two classes of four sound
objects, one-second clips at 16 kHz), turned into ``(N, 1, 64, 64)`` log-mels by the toy
front-end. The model is the toy :class:`~audio_cnn.model.AudioCNN`, trained with Adam for a
few seconds (a fixed number of steps) on those clips: enough to separate the classes on this
easy task, far from a converged model.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from audio_cnn.frontend import LogMel
from audio_cnn.model import AudioCNN
from audio_cnn.synthetic import SyntheticTask

__all__ = ["toy_clips", "train_toy_model"]


def toy_clips(per_class: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-mels ``(2 · per_class, 1, 64, 64)`` and labels ``(2 · per_class,)`` of the toy task."""
    task = SyntheticTask.toy(seed=seed)
    clips = [task.make_clip(label, index) for label in (0, 1) for index in range(per_class)]
    waveforms = torch.as_tensor(np.stack([clip.waveform for clip in clips]))
    with torch.no_grad():
        logmels = LogMel.preset("toy")(waveforms)
    return logmels, torch.tensor([clip.label for clip in clips])


def train_toy_model(x: torch.Tensor, y: torch.Tensor, steps: int, seed: int = 0) -> AudioCNN:
    """The toy AudioCNN after ``steps`` Adam steps on mini-batches of 32; in eval mode."""
    torch.manual_seed(seed)
    model = AudioCNN.preset("toy")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = torch.randint(len(x), (32,), generator=generator)
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean()
    print(f"toy AudioCNN trained for {steps} steps: training accuracy {accuracy:.0%}")
    return model
