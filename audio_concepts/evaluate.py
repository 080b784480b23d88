"""Step 3 of an analysis: patch flipping, concept recovery and the model's accuracy.

Disentangled patch flipping uses each method's K concept heatmaps (the residual is not a
concept); standard patch flipping uses the standard LRP heatmap (the sum of all maps, from the
first DRSA fit or else the first method). Concept recovery needs known sound objects and is
computed on synthetic data only (masks from :func:`audio_cnn.synthetic.object_masks` on the
model's log-mel grid; clips with two or more objects count). The accuracy is the model's
clip-level accuracy on the ``eval_split``, the split whose chunks were explained.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from atomic_io import write_json_atomic
from audio_cnn.evaluate import score_clips
from audio_concepts.data import AudioData
from audio_concepts.diagnostics import as_json, concept_overlap
from audio_concepts.explain import Explanations
from audio_concepts.plots import plot_flipping_curves
from audio_concepts.workspace import AnalysisState, Workspace
from zennit_drsa.evaluation import PatchFlippingResult, concept_recovery, patch_flipping

__all__ = ["evaluate_explanations"]


def evaluate_explanations(
    data: AudioData,
    workspace: Workspace,
    state: AnalysisState,
    explanations: Explanations,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Score the explanations and the model; write them under ``evaluation/``.

    Returns
    -------
    dict
        The content of ``evaluation/results.json``: the ``fit_id`` it was computed from;
        ``labels``; per method (and ``"standard"``) one record per seed with the AUPC per
        input and, on synthetic data, the recovery score and chance level per input (``None``
        where undefined); ``accuracy``; ``n_inputs``; ``overlap``, per method the mean
        heatmap cosine of every pair of concepts
        (:func:`~audio_concepts.diagnostics.concept_overlap`). ``evaluation/`` also gets
        ``flipping.png`` (mean curves) and the accuracy's ``metrics.json`` and confusion
        matrices.
    """
    model, config = data.model, state.config
    device = model.device
    folder = workspace.evaluation_dir
    metrics = score_clips(
        model.network,
        model.frontend,
        model.class_names,
        data.split_clips(config.eval_split),
        data.cache,
        split=config.eval_split,
        n_chunks=model.eval_chunks,
        span_seconds=model.eval_span_seconds,
        short_clips=model.short_clips,
        out_dir=folder,
        device=device,
        progress=progress,
    )
    inputs = explanations.inputs
    logmel = torch.from_numpy(inputs["logmel"])
    labels = inputs["labels"]
    removal = config.removal if config.removal is not None else model.frontend.floor
    if removal is None:
        raise ValueError("the front-end has no floor; set AnalysisConfig.removal (--removal)")
    flipping = {
        "patch_size": config.patch_size,
        "ordering": config.ordering,
        "removal": float(removal),
        "score": config.score,
        "batch_size": 128,
        "device": device,
    }
    masks = data.object_masks([str(clip) for clip in inputs["clips"]])
    results: dict[str, Any] = {"fit_id": state.fit_id, "methods": {}, "labels": labels.tolist()}
    curves: dict[str, list[PatchFlippingResult]] = {}
    jobs = list(explanations.maps)
    standard_job = ("drsa", config.seeds[0]) if "drsa" in config.methods else jobs[0]
    for method, seed in tqdm(jobs, desc="evaluate", disable=not progress):
        maps = torch.from_numpy(explanations.maps[(method, seed)]["heatmaps"])
        entries = [(method, maps[:, :-1])]
        if (method, seed) == standard_job:
            entries.append(("standard", maps.sum(dim=1)))
        for name, heatmaps in entries:
            result = patch_flipping(model.network, logmel, heatmaps, labels, **flipping)
            record: dict[str, Any] = {"seed": seed, "aupc": _floats(result.aupc)}
            if masks is not None and name != "standard":
                scores = [concept_recovery(h, m) for h, m in zip(heatmaps, masks, strict=True)]
                record["recovery"] = [s.score if s.eligible else None for s in scores]
                record["chance"] = [s.chance if s.eligible else None for s in scores]
            results["methods"].setdefault(name, []).append(record)
            curves.setdefault(name, []).append(result)
    results["accuracy"] = metrics["accuracy"]
    results["n_inputs"] = len(labels)
    results["overlap"] = _overlap(explanations, config.n_subspaces)
    plot_flipping_curves(
        curves,
        folder / "flipping.png",
        title=f"Patch flipping ({config.ordering}, patches {config.patch_size})",
    )
    write_json_atomic(workspace.results_path, results)
    return results


def _overlap(explanations: Explanations, n_subspaces: int) -> dict[str, list[list[Any]]]:
    """Per method the (K, K) mean heatmap cosine of its concepts, averaged over seeds."""
    if n_subspaces < 2:
        return {}
    matrices: dict[str, list[np.ndarray]] = {}
    for (method, _), arrays in explanations.maps.items():
        matrices.setdefault(method, []).append(concept_overlap(arrays["heatmaps"][:, :-1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN entries stay NaN
        return {m: as_json(np.nanmean(np.stack(ms), axis=0)) for m, ms in matrices.items()}


def _floats(values: np.ndarray) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in values]
