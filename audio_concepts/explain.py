"""Step 2 of an analysis: concept heatmaps of the evaluation chunks, for every fitted method.

Per class ``eval_clips_per_class`` clips of the ``eval_split`` (test by default; on
synthetic data only clips with at least ``min_objects`` sound objects) contribute their first
chunk; each chunk is explained for its TRUE class with that class's subspaces, by every
method and seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from audio_concepts.data import AudioData
from audio_concepts.fit import Subspaces
from audio_concepts.sharding import gather_computed, share
from audio_concepts.workspace import AnalysisState, Workspace
from zennit_drsa import DRSAAttributor, load
from zennit_drsa.composites import audio_composite
from zennit_drsa.estimators import SubspaceEstimator

__all__ = ["Explanations", "concept_maps", "explain_chunks", "load_subspaces"]


@dataclass(frozen=True)
class Explanations:
    """The explained chunks and every fit's concept heatmaps of them.

    Attributes
    ----------
    inputs:
        ``logmel`` ``(N, 1, M, F)``, ``waveform`` ``(N, T)``, ``labels`` ``(N,)`` and ``clips``
        (paths relative to the audio folder) of the ``N`` explained chunks.
    maps:
        ``(method, seed)`` → ``heatmaps`` ``(N, K + 1, 1, M, F)`` (the last map is the
        residual), ``layer_relevance`` ``(N, K + 1)`` and ``logits`` ``(N, n_classes)``.
    """

    inputs: dict[str, np.ndarray]
    maps: dict[tuple[str, int], dict[str, np.ndarray]]

    def save(self, workspace: Workspace, state: AnalysisState) -> None:
        """Write ``explanations/inputs.npz`` and one ``<method>_seed<s>.npz`` per fit.

        The fit's maps go first and the inputs, which record the fit they belong to, last:
        an interrupted save leaves explanations that :meth:`load` refuses.
        """
        workspace.inputs_path.unlink(missing_ok=True)
        for (method, seed), arrays in self.maps.items():
            workspace.save_arrays(workspace.explanation_path(method, seed), **arrays)
        workspace.save_arrays(workspace.inputs_path, **self.inputs, fit_id=np.array(state.fit_id))

    @classmethod
    def load(cls, workspace: Workspace, state: AnalysisState) -> Explanations:
        """What :meth:`save` wrote for ``state``'s fit; refused if it came from another."""
        inputs = workspace.load_arrays(workspace.inputs_path)
        fit_id = str(inputs.pop("fit_id", ""))
        workspace.check_fit(fit_id, state, workspace.inputs_path, "explain")
        config = state.config
        maps = {
            (method, seed): workspace.load_arrays(workspace.explanation_path(method, seed))
            for method in config.methods
            for seed in config.method_seeds(method)
        }
        return cls(inputs, maps)


def load_subspaces(workspace: Workspace, state: AnalysisState) -> Subspaces:
    """The estimators the fit step saved for ``state``'s fit; refused if one is from another."""
    config = state.config
    subspaces: Subspaces = {}
    for method in config.methods:
        for seed in config.method_seeds(method):
            for label, name in enumerate(state.class_names):
                path = workspace.subspace_path(method, name, seed)
                estimator = load(path)
                fit_id = estimator.metadata_.get("fit_id", "")
                workspace.check_fit(fit_id, state, path.with_suffix(".json"), "fit")
                subspaces.setdefault((method, seed), {})[label] = estimator
    return subspaces


def explain_chunks(
    data: AudioData, state: AnalysisState, subspaces: Subspaces, *, progress: bool = True
) -> Explanations:
    """Concept heatmaps of the evaluation chunks for their true class, per fit.

    Parameters
    ----------
    data:
        The audio folder, opened for the model under study.
    state:
        The record of the fit (layer, settings).
    subspaces:
        The fitted estimators (:func:`~audio_concepts.fit.fit_subspaces` or
        :func:`load_subspaces`).
    progress:
        Show a progress bar.
    """
    model, config = data.model, state.config
    device = model.device
    chunks = data.chunks(data.evaluation_clips(config), 1)
    items = [chunks[i] for i in range(len(chunks))]
    waveforms = torch.stack([waveform for waveform, _, _ in items])
    labels = torch.tensor([label for _, label, _ in items])
    inputs = torch.cat(
        [model.input_of(w.to(device)).cpu() for w in waveforms.split(config.batch_size)]
    )
    explained = {
        "logmel": inputs.numpy(),
        "waveform": waveforms.numpy(),
        "labels": labels.numpy(),
        "clips": np.array([data.relative_name(chunks.clips[clip].path) for *_, clip in items]),
    }
    # Under torchrun each rank explains its share of the chunks; gathered in rank order.
    part = share(len(labels))

    def explain_share() -> dict[tuple[str, int], dict[str, np.ndarray]]:
        return {
            key: concept_maps(
                model.network,
                config.composite,
                state.layer,
                per_class,
                inputs[part],
                labels[part],
                batch_size=config.batch_size,
                device=device,
            )
            for key, per_class in tqdm(subspaces.items(), desc="explain", disable=not progress)
        }

    parts = gather_computed(explain_share, "explain")
    maps = {
        key: {name: np.concatenate([p[key][name] for p in parts]) for name in parts[0][key]}
        for key in parts[0]
    }
    return Explanations(explained, maps)


def concept_maps(
    network: torch.nn.Module,
    composite: str,
    layer: str,
    per_class: dict[int, SubspaceEstimator],
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int,
    device: torch.device,
) -> dict[str, np.ndarray]:
    """One decomposition's concept heatmaps of ``inputs`` for their classes ``labels``.

    Parameters
    ----------
    network:
        The classifier, in eval mode.
    composite:
        LRP composite name (:func:`~zennit_drsa.composites.audio_composite`).
    layer:
        The layer the subspaces live at.
    per_class:
        Class index → fitted estimator (the same ``K`` for all).
    inputs:
        ``(N, 1, M, F)`` log-mel inputs (any device).
    labels:
        ``(N,)`` class explained for each input.
    batch_size, device:
        Inputs per pass and where they run.

    Returns
    -------
    dict
        ``heatmaps`` ``(N, K + 1, 1, M, F)`` float32 (the last map is the residual),
        ``layer_relevance`` ``(N, K + 1)`` float64 and ``logits`` ``(N, n_classes)``.
    """
    heatmaps, relevance, logits = [], [], []
    with DRSAAttributor(
        network, audio_composite(composite, network), layer, per_class
    ) as attributor:
        for x, y in zip(inputs.split(batch_size), labels.split(batch_size), strict=True):
            explanation = attributor.explain(x.to(device), target=y.to(device))
            heatmaps.append(explanation.heatmaps.float().cpu())
            relevance.append(explanation.layer_relevance.double().cpu())
            logits.append(explanation.output.float().cpu())
    return {
        "heatmaps": torch.cat(heatmaps).numpy(),
        "layer_relevance": torch.cat(relevance).numpy(),
        "logits": torch.cat(logits).numpy(),
    }
