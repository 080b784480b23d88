"""Captum workflow: DRSA concept attributions of a toy audio CNN through Captum's API.

1. Train the toy AudioCNN for a few seconds on in-memory clips of the synthetic task.
2. Collect activation/context vectors at the 4th block for class 1 and fit DRSA subspaces.
3. Use ``DRSAAttribution`` like any Captum attribution: one concept's heatmap, the residual,
   the standard map with its conservation delta, the infidelity of each concept's map, and a
   SmoothGrad version through ``NoiseTunnel``; ``LayerDRSAAttribution`` gives the concept
   relevances at the layer.

Run: ``python examples/captum_workflow.py [--clips 64] [--steps 60]``
"""

from __future__ import annotations

import argparse

import torch
from _toy import toy_clips, train_toy_model
from captum.attr import NoiseTunnel
from captum.metrics import infidelity

from zennit_drsa.captum import DRSAAttribution, LayerDRSAAttribution
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
    composite = audio_composite("reference", model)
    layer = model.block_output(4)
    vectors = collect(model, composite, layer, x[y == TARGET], TARGET, progress=False)
    drsa = DRSA(n_subspaces=4, subspace_dim=8, max_iter=args.max_iter, random_state=0)
    drsa.fit(vectors.activations, context=vectors.context)

    clips = x[y == TARGET][:4]
    attribution = DRSAAttribution(model, layer, drsa, composite=composite)
    standard, delta = attribution.attribute(clips, target=TARGET, return_convergence_delta=True)
    print(f"standard map {tuple(standard.shape)}: logit − Σ relevance = "
          f"{delta.abs().max():.2e} at most (relevance the rules absorb)")  # fmt: skip

    concepts = LayerDRSAAttribution(model, layer, drsa, composite=composite)
    print("concept relevance at the layer (mean over clips): "
          + ", ".join(f"{v:+.3f}" for v in concepts.attribute(clips, TARGET).mean(0).tolist())
          + "  (last: residual)")  # fmt: skip

    def perturb(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        noise = 0.1 * torch.randn_like(inputs)
        return noise, inputs - noise

    for concept in [0, 1, 2, 3, "residual"]:
        heatmap = attribution.attribute(clips, target=TARGET, concept=concept)
        score = infidelity(model, perturb, clips, heatmap, target=TARGET, n_perturb_samples=4)
        print(f"concept {concept!s:>8}: Σ relevance {heatmap.sum() / len(clips):+8.3f}  "
              f"infidelity {score.mean():.2e}")  # fmt: skip

    # Captum's wrappers take it like any attribution, e.g. SmoothGrad of the first concept.
    smooth = NoiseTunnel(attribution).attribute(
        clips, nt_type="smoothgrad", nt_samples=4, stdevs=0.1, target=TARGET, concept=0
    )
    first = attribution.attribute(clips, target=TARGET, concept=0)
    similarity = torch.nn.functional.cosine_similarity(first.flatten(1), smooth.flatten(1))
    print(f"concept 0 vs its SmoothGrad version: cosine similarity {similarity.mean():.2f}")


if __name__ == "__main__":
    main()
