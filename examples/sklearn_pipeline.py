"""scikit-learn workflow: DRSA in a ``Pipeline``, context routed as metadata, cross-validated.

1. Train the toy AudioCNN for a few seconds on in-memory clips of the synthetic task and
   collect activation/context vectors at the 4th block for class 1.
2. With metadata routing on, the context vectors travel with ``fit`` through a ``Pipeline``
   to the subspace estimator. Folds keep each clip's vectors together (``GroupKFold``); the
   score is the DRSA objective on held-out clips, for DRSA and for PRCA subspaces of the same
   size. (Under metadata routing, scikit-learn 1.9's ``Pipeline.score`` always forwards
   ``sample_weight``, which the estimators' ``score`` does not take, so the fitted step is
   scored directly and the folds are run by hand rather than by ``cross_validate``.)
3. Refit the DRSA pipeline on all vectors and explain clips with its fitted step.

Run: ``python examples/sklearn_pipeline.py [--clips 64] [--steps 60]``
"""

from __future__ import annotations

import argparse

import numpy as np
import sklearn
from _toy import toy_clips, train_toy_model
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline

from zennit_drsa.attribution import DRSAAttributor
from zennit_drsa.collect import collect
from zennit_drsa.composites import audio_composite
from zennit_drsa.estimators import DRSA, PRCA

TARGET = 1


def subspace_pipeline(estimator: DRSA | PRCA) -> Pipeline:
    """A pipeline whose subspace step receives ``context`` in ``fit``."""
    return Pipeline([("subspaces", estimator.set_fit_request(context=True))])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=64, help="clips per class (default 64)")
    parser.add_argument("--steps", type=int, default=60, help="training steps (default 60)")
    parser.add_argument("--max-iter", type=int, default=500, help="DRSA iterations")
    args = parser.parse_args(argv)
    sklearn.set_config(enable_metadata_routing=True)

    x, y = toy_clips(args.clips)
    model = train_toy_model(x, y, args.steps)
    composite = audio_composite("reference", model)
    layer = model.block_output(4)
    vectors = collect(model, composite, layer, x[y == TARGET], TARGET, progress=False)
    a, c = vectors.activations, vectors.context

    candidates = {
        "DRSA": DRSA(n_subspaces=4, subspace_dim=8, max_iter=args.max_iter, random_state=0),
        "PRCA": PRCA(n_subspaces=4, subspace_dim=8),
    }
    print(f"held-out DRSA objective J (3 folds of clips, {vectors.n_vectors} vectors at {layer}):")
    folds = list(GroupKFold(3).split(a, groups=vectors.input_index))
    for name, estimator in candidates.items():
        pipeline = subspace_pipeline(estimator)
        scores = np.array(
            [
                pipeline.fit(a[train], context=c[train])[-1].score(a[test], context=c[test])
                for train, test in folds
            ]
        )
        print(f"  {name}: {scores.mean():.4f} ± {scores.std():.4f}")

    pipeline = subspace_pipeline(candidates["DRSA"]).fit(a, context=c)
    drsa = pipeline.named_steps["subspaces"]
    print("mean relevance per subspace (training vectors): "
          + ", ".join(f"{v:.4f}" for v in drsa.subspace_relevance_))  # fmt: skip

    with DRSAAttributor(model, composite, layer, drsa) as attributor:
        explanation = attributor.explain(x[y == TARGET][:4], target=TARGET)
    shares = explanation.layer_relevance / explanation.layer_total[:, None]
    print("share of each clip's layer relevance per subspace (last: residual):")
    for row in shares:
        print("  " + "  ".join(f"{value:6.1%}" for value in row.tolist()))


if __name__ == "__main__":
    main()
