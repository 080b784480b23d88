"""The model under study, as the analysis sees it: a classifier, its front-end, its classes.

The analysis needs little of a model: the network that maps log-mel inputs to class logits
(Zennit explains it), the front-end that turns waveforms into those inputs
(:class:`~audio_concepts.frontend.LogMelFrontend`) and the class names. :class:`AudioModel`
holds exactly that, plus how clips are cut into chunks when the model is scored. An
``audio_cnn`` run becomes one with :meth:`AudioModel.from_run`; any other model is built
directly, e.g. a user's CNN behind a torchaudio ``MelSpectrogram``::

    model = AudioModel(cnn, TorchaudioLogMel(mel, chunk_seconds=1.0), ("dog", "cat"))
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from audio_concepts.frontend import LogMelFrontend
from zennit_drsa.layers import resolve_layer

__all__ = ["AudioModel"]

_SHORT_CLIPS = ("pad", "skip")


@dataclass(frozen=True)
class AudioModel:
    """A log-mel classifier under study.

    Attributes
    ----------
    network:
        ``(B, 1, n_mels, frames)`` log-mel → ``(B, n_classes)`` logits, in eval mode (LRP
        of a network in training mode is refused).
    frontend:
        Waveforms ``(B, T)`` at ``frontend.sample_rate`` → the network's input.
    class_names:
        One name per logit, in logit order (the class folders' names of the data).
    default_layer:
        Layer decomposed when the settings name none (``None``: the settings must name one).
    name:
        How the report names the model (e.g. the run directory).
    run:
        The ``audio_cnn`` run directory it was loaded from, if any (recorded in the analysis,
        so that later steps can load it again from the command line).
    eval_chunks, eval_span_seconds, short_clips:
        How a clip is scored: the mean logit of ``eval_chunks`` evenly spaced chunks of its
        first ``eval_span_seconds``; clips shorter than a chunk are zero-padded (``"pad"``)
        or left out (``"skip"``).
    """

    network: nn.Module
    frontend: LogMelFrontend
    class_names: tuple[str, ...]
    default_layer: str | None = None
    name: str = "model"
    run: Path | None = None
    eval_chunks: int = 8
    eval_span_seconds: float = 29.0
    short_clips: str = "pad"

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_names", tuple(self.class_names))
        problems = []
        if not isinstance(self.network, nn.Module):
            problems.append(f"network must be a torch.nn.Module, got {type(self.network).__name__}")
        if not isinstance(self.frontend, LogMelFrontend):
            problems.append(
                f"frontend {type(self.frontend).__name__} lacks what the analysis reads of a "
                "log-mel front-end (see audio_concepts.frontend.LogMelFrontend; wrap a "
                "torchaudio MelSpectrogram in TorchaudioLogMel)"
            )
        names = self.class_names
        if len(names) < 2 or not all(isinstance(n, str) and n for n in names):
            problems.append(f"class_names must be two or more non-empty strings, got {names!r}")
        elif len(set(names)) != len(names):
            problems.append(f"class_names must be distinct, got {names!r}")
        if not (isinstance(self.eval_chunks, int) and self.eval_chunks >= 1):
            problems.append(f"eval_chunks must be a positive int, got {self.eval_chunks!r}")
        if not (self.eval_span_seconds > 0 and math.isfinite(self.eval_span_seconds)):
            problems.append(f"eval_span_seconds must be positive, got {self.eval_span_seconds!r}")
        if self.short_clips not in _SHORT_CLIPS:
            problems.append(f"short_clips must be one of {_SHORT_CLIPS}, got {self.short_clips!r}")
        if problems:
            raise ValueError("invalid model under study: " + "; ".join(problems))

    @classmethod
    def from_run(
        cls,
        run: str | os.PathLike[str],
        *,
        which: str = "best",
        device: str | torch.device | None = None,
    ) -> AudioModel:
        """The model of a run directory written by ``audio-cnn train``.

        Its default layer is the ReLU output of the 4th convolutional block (the reference
        pipeline's layer) and clips are scored as the run's evaluation scores them.
        """
        from audio_cnn.checkpoint import load_run

        trained = load_run(run, which=which, device=device)
        settings = trained.checkpoint.get("run_settings", {}).get("train", {})
        return cls(
            network=trained.model,
            frontend=trained.logmel,
            class_names=tuple(trained.class_names),
            default_layer=trained.model.block_output(4),
            name=str(Path(run).resolve()),
            run=Path(run).resolve(),
            eval_chunks=settings.get("eval_chunks", 8),
            eval_span_seconds=settings.get("eval_span_seconds", 29.0),
            short_clips=settings.get("short_clips", "pad"),
        )

    @property
    def device(self) -> torch.device:
        """Device of the network's parameters (the CPU for a network without any)."""
        parameter = next(self.network.parameters(), None)
        return parameter.device if parameter is not None else torch.device("cpu")

    def to(self, device: str | torch.device) -> AudioModel:
        """The model with network and front-end moved to ``device`` (in place; returns self)."""
        self.network.to(device)
        self.frontend.to(device)
        return self

    def replace(self, **changes: object) -> AudioModel:
        """A copy with some fields replaced (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def input_of(self, waveform: torch.Tensor) -> torch.Tensor:
        """The network's input for waveforms ``(B, T)``, without gradients."""
        with torch.no_grad():
            return self.frontend(waveform)

    def layer_shape(self, layer: str) -> tuple[int, int]:
        """Channels ``d`` and map positions ``H · W`` of ``layer``'s output for one chunk.

        Runs one silent chunk through front-end and network, on the network's device.

        Raises
        ------
        ValueError
            If the network has no such layer (the message suggests names).
        """
        _, module = resolve_layer(self.network, layer)
        shapes: list[torch.Size] = []
        handle = module.register_forward_hook(lambda _m, _i, output: shapes.append(output.shape))
        try:
            silence = torch.zeros(1, self.frontend.chunk_samples, device=self.device)
            with torch.no_grad():
                self.network(self.frontend(silence))
        finally:
            handle.remove()
        return int(shapes[0][1]), math.prod(shapes[0][2:])
