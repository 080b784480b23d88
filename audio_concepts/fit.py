"""Step 1 of an analysis: every method's subspaces, per class, from the class's own evidence.

Per class ``c``: activation/context pairs at the layer from training-split chunks of class
``c``, explaining class ``c``'s logit (:func:`zennit_drsa.collect`); every method (DRSA and
its baselines) fitted on them with the same ``K`` and ``d_k``, and saved without pickle.
"""

from __future__ import annotations

import functools
import uuid

from torch.utils.data import Subset
from tqdm.auto import tqdm

from audio_concepts.config import AnalysisConfig
from audio_concepts.data import FIT_CHUNKS, AudioData
from audio_concepts.planning import LayerPlan
from audio_concepts.sharding import (
    computed_everywhere,
    gather_parts,
    is_writer,
    on_rank0,
    share,
    world,
)
from audio_concepts.workspace import AnalysisState, Workspace
from zennit_drsa import collect, save
from zennit_drsa.composites import audio_composite
from zennit_drsa.estimators import DRSA, DSA, PRCA, RandomSubspaces, SubspaceEstimator

__all__ = ["Subspaces", "fit_subspaces", "make_estimator"]

Subspaces = dict[tuple[str, int], dict[int, SubspaceEstimator]]
"""Fitted estimators: ``(method, seed)`` → class label → estimator."""


def fit_subspaces(
    data: AudioData,
    workspace: Workspace,
    config: AnalysisConfig,
    plan: LayerPlan,
    *,
    progress: bool = True,
) -> tuple[AnalysisState, Subspaces]:
    """Fit and save every method's subspaces per class; the record of the fit.

    Parameters
    ----------
    data:
        The audio folder, opened for the model under study.
    workspace:
        Where the estimators go (``subspaces/<method>/<class>/seed<s>``).
    config:
        Analysis settings.
    plan:
        The layer and subspace shape (:func:`~audio_concepts.planning.plan_layer`).
    progress:
        Show a progress bar.

    Returns
    -------
    tuple
        The :class:`~audio_concepts.workspace.AnalysisState` (not yet written) and the
        fitted estimators.

    Raises
    ------
    ValueError
        If a class has no training clips.
    """
    model = data.model
    device = model.device
    # Under torchrun every rank takes rank 0's id; rank 0 alone writes (see sharding).
    fit_id = on_rank0(lambda: uuid.uuid4().hex, "fit")
    if is_writer():
        workspace.forget_fit()
    distributed = world()[1] > 1
    composite = audio_composite(config.composite, model.network)
    fit_clips: dict[str, dict[str, int]] = {}
    subspaces: Subspaces = {}
    names = model.class_names
    for label, name in enumerate(tqdm(names, desc="fit", disable=not progress)):
        clips = data.train_clips(label, config)
        if not clips:
            raise ValueError(f"class {name!r} has no training clips in {data.root}")
        chunks = data.chunks(clips, FIT_CHUNKS)
        # Each rank collects a contiguous share of the chunks, drawing the locations of their
        # positions in the whole, so that the shares together are one process's pairs.
        part = share(len(chunks), f"training chunks of class {name!r}")
        collect_share = functools.partial(
            collect,
            model.network,
            composite,
            plan.layer,
            data.input_batches(
                Subset(chunks, range(part.start, part.stop)), config.batch_size, device
            ),
            label,
            n_locations=plan.n_locations,
            random_state=config.seeds[0],
            device=device,
            progress=False,
            first_index=part.start,
        )
        # An error on one rank stops all (none waits for it); the vectors stay on their rank.
        pairs = computed_everywhere(collect_share, f"collecting class {name!r}")
        n_vectors = sum(gather_parts(pairs.n_vectors))
        fit_clips[name] = {"clips": len(clips), "vectors": n_vectors}
        for method in config.methods:
            for seed in config.method_seeds(method):
                estimator = make_estimator(method, config, plan.subspace_dim, seed, device)
                # Data-parallel: sums over samples are all-reduced; identical on every rank.
                estimator.set_params(distributed=distributed)
                estimator.fit(pairs.activations, context=pairs.context)
                estimator.set_params(distributed=False)  # the saved estimator works alone
                subspaces.setdefault((method, seed), {})[label] = estimator
                if not is_writer():
                    continue
                save(
                    estimator,
                    workspace.subspace_path(method, name, seed),
                    metadata={
                        "layer": plan.layer,
                        "class": name,
                        "method": method,
                        "seed": seed,
                        "fit_id": fit_id,
                    },
                )
    state = AnalysisState(
        model_name=model.name,
        run=None if model.run is None else str(model.run),
        data_dir=str(data.root.resolve()),
        data_kind=data.kind,
        class_names=names,
        layer=plan.layer,
        channels=plan.channels,
        subspace_dim=plan.subspace_dim,
        n_locations=plan.n_locations,
        config=config,
        fit_clips=fit_clips,
        fit_id=fit_id,
    )
    return state, subspaces


def make_estimator(
    method: str, config: AnalysisConfig, dims: int, seed: int, device: object
) -> SubspaceEstimator:
    """An unfitted estimator of ``method`` with the analysis' ``K``, ``d_k`` and solver settings."""
    shape = {"n_subspaces": config.n_subspaces, "subspace_dim": dims}
    if method in ("drsa", "dsa"):
        solver = DRSA if method == "drsa" else DSA
        return solver(
            **shape,
            max_iter=config.max_iter,
            n_restarts=config.n_restarts,
            tol=config.tol,
            random_state=seed,
            device=device,
        )
    if method == "prca":
        return PRCA(**shape)
    return RandomSubspaces(**shape, random_state=seed)
