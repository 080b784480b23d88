"""Zennit workflow: DRSA concept heatmaps of a toy audio CNN with ``DRSAAttributor``.

1. Train the toy AudioCNN for a few seconds on in-memory clips of the synthetic task.
2. Collect activation and exact-context vectors at the 4th block's ReLU, explaining class 1.
3. Fit K = 4 DRSA subspaces to them.
4. Explain class-1 clips: K concept heatmaps and a residual, which add up to the standard LRP
   heatmap, and the concept relevances at the layer from the same passes.

Run: ``python examples/zennit_workflow.py [--clips 64] [--steps 60]``
"""

from __future__ import annotations

import argparse

import torch
from _toy import toy_clips, train_toy_model
from zennit.attribution import Gradient

from audio_cnn.frontend import LogMel
from zennit_drsa.attribution import DRSAAttributor
from zennit_drsa.collect import collect
from zennit_drsa.composites import audio_composite
from zennit_drsa.estimators import DRSA

TARGET = 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=64, help="clips per class (default 64)")
    parser.add_argument("--steps", type=int, default=60, help="training steps (default 60)")
    parser.add_argument("--max-iter", type=int, default=500, help="DRSA iterations")
    args = parser.parse_args(argv)

    x, y = toy_clips(args.clips)
    model = train_toy_model(x, y, args.steps)
    composite = audio_composite("reference", model)  # WSquare, γ = 0.4, 0.4, 0.2, 0.1, ε
    layer = model.block_output(4)

    vectors = collect(model, composite, layer, x[y == TARGET], TARGET, progress=False)
    drsa = DRSA(n_subspaces=4, subspace_dim=8, max_iter=args.max_iter, random_state=0)
    drsa.fit(vectors.activations, context=vectors.context)
    print(f"DRSA at {layer}: K = 4 subspaces of 8 of {vectors.dim} dims, "
          f"fitted on {vectors.n_vectors} (a, c) pairs")  # fmt: skip

    clips = x[y == TARGET][:4]
    with DRSAAttributor(model, composite, layer, drsa) as attributor:
        explanation = attributor.explain(clips, target=TARGET)
    _, standard = Gradient(model, composite)(clips, torch.eye(2)[[TARGET] * len(clips)])

    print("\nrelevance at the layer per clip: concepts 1..4, residual (they sum to the total)")
    for relevance in explanation.layer_relevance:
        print("  " + "  ".join(f"{value:+8.3f}" for value in relevance.tolist()))
    error = (explanation.heatmaps.sum(1) - standard).abs().max() / standard.abs().max()
    print(f"Σ concept maps + residual vs Zennit's standard heatmap: max error {error:.1e}")

    # Where in frequency each concept's positive relevance lies (mel-band centre of mass).
    mel_hz = torch.as_tensor(LogMel.preset("toy").mel_frequencies(), dtype=torch.float32)
    positive = explanation.concepts.clamp(min=0).sum(dim=(0, 2, 4))  # (K, n_mels)
    centres = (positive * mel_hz).sum(1) / positive.sum(1).clamp(min=1e-12)
    print("frequency centre of each concept's positive relevance: "
          + ", ".join(f"{hz:.0f} Hz" for hz in centres.tolist()))  # fmt: skip


if __name__ == "__main__":
    main()
