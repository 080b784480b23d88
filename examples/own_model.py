"""Your own log-mel model through the whole analysis: fit, explain, evaluate, report.

The model here is not an ``audio_cnn`` run: a small CNN of our own behind a torchaudio
``MelSpectrogram``, trained for a few steps in this script. The analysis only needs three
things of it (:class:`audio_concepts.AudioModel`): the network, the front-end — wrapped in
:class:`audio_concepts.TorchaudioLogMel`, which tells the analysis where the frames lie and
how to invert them for sound — and the class names. The audio is the synthetic toy task
(``audio_cnn.write_synthetic_dataset``, written here as an ordinary folder of WAV files per
class) because its sound objects are known, so concept recovery can be scored too; any
folder-per-class audio works the same way.

Run:  python examples/own_model.py --out own-model-out   (then open own-model-out/report.html)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio
from torch import nn

from audio_cnn import open_dataset_dir, write_synthetic_dataset
from audio_cnn.synthetic import SyntheticTask
from audio_concepts import Analysis, AnalysisConfig, AudioModel, TorchaudioLogMel, format_summary


def my_cnn(n_classes: int) -> nn.Sequential:
    """A user's CNN on (B, 1, 64, 63) log-mels: three conv blocks and a linear classifier."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 8 * 7, n_classes),
    )


def train(network: nn.Module, frontend: nn.Module, data_dir: Path, steps: int) -> float:
    """A few Adam steps on the training split's clips; returns the final training accuracy."""
    dataset = open_dataset_dir(data_dir)
    clips = dataset.splits["train"]
    waveforms = torch.as_tensor(
        np.stack([sf.read(clip.path, dtype="float32")[0] for clip in clips])
    )
    labels = torch.tensor([clip.label for clip in clips])
    with torch.no_grad():
        inputs = frontend(waveforms)
    optimizer = torch.optim.Adam(network.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    network.train()
    for _ in range(steps):
        batch = torch.randint(len(inputs), (32,), generator=generator)
        loss = nn.functional.cross_entropy(network(inputs[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    network.eval()  # LRP explains a network in eval mode (training mode is refused)
    with torch.no_grad():
        return float((network(inputs).argmax(1) == labels).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--out", type=Path, help="analysis folder (default: a temporary one)")
    parser.add_argument("--clips", type=int, default=40, help="toy clips per class")
    parser.add_argument("--steps", type=int, default=150, help="training steps of the CNN")
    parser.add_argument("--max-iter", type=int, default=200, help="DRSA/DSA solver iterations")
    args = parser.parse_args()
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch) / "analysis"
        data_dir = write_synthetic_dataset(
            Path(scratch) / "audio", SyntheticTask.toy(), clips_per_class=args.clips, progress=False
        )
        mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=16000, n_fft=512, hop_length=256, n_mels=64, power=1.0
        )
        frontend = TorchaudioLogMel(mel, chunk_seconds=1.0)
        network = my_cnn(n_classes=2)
        accuracy = train(network, frontend, data_dir, args.steps)
        print(
            f"my CNN + torchaudio MelSpectrogram: {args.steps} steps, train accuracy {accuracy:.2f}"
        )

        class_names = open_dataset_dir(data_dir).class_names  # one folder per class
        model = AudioModel(network, frontend, class_names, name="my CNN + MelSpectrogram")
        config = AnalysisConfig(
            layer="7",  # the third convolution's ReLU: 32 channels on a 16 × 15 map
            n_subspaces=2,
            fit_clips_per_class=args.clips,
            eval_clips_per_class=6,
            max_iter=args.max_iter,
            n_restarts=2,
        )
        analysis = Analysis.create(model, data_dir, out, config)
        state = analysis.fit(progress=False)
        print(f"fit: layer {state.layer}, K = {config.n_subspaces} of {state.subspace_dim} dims")
        analysis.explain(progress=False)
        analysis.evaluate(progress=False)
        summary = analysis.report(progress=False)
        print(format_summary(summary))
        report = analysis.workspace.report_path
        print(f"report: {report} ({report.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
