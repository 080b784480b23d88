"""Step 3 of an analysis: every measure of every decomposition, the references, the model.

For each fitted method and seed (and the standard heatmap) the evaluate step computes, per
explained input and through one code path (:mod:`~audio_concepts.scoring`):

* disentangled deletion AUPC under the ``union``, ``round_robin`` and ``positive_sum``
  orderings, and the insertion AUPC under the analysis' ``ordering``;
* concept selectivity (any data);
* on synthetic data, heatmap recovery (with its chance level, ceiling and normalised score)
  and interventional recovery (objects removed from the waveform).

On synthetic data it also scores, the same way, the reference decompositions of known
quality that decide which measures can be believed (METHOD.md §5,
:mod:`~audio_concepts.meta_evaluation`): the standard heatmap split by the object masks
(``oracle``) and held by one concept (``entangled``), and at the layer oracle, random and
entangled *subspaces* (:func:`~audio_concepts.interventions.fit_layer_references`). It
checks whether the task suits logit-based flipping measures (``fitness``: removing a clip's
objects should halve its logit), runs the model-randomisation sanity checks on the first
``sanity_inputs`` inputs, and scores the model's clip-level accuracy on ``eval_split``.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from atomic_io import write_json_atomic
from audio_cnn.evaluate import ClipPredictions, predict_clips, write_scores
from audio_concepts import interventions as exact
from audio_concepts.config import AnalysisConfig
from audio_concepts.data import AudioData
from audio_concepts.diagnostics import as_json, concept_overlap
from audio_concepts.explain import Explanations, concept_maps
from audio_concepts.fit import Subspaces
from audio_concepts.measures import MEASURES, deletion_name
from audio_concepts.plots import plot_flipping_curves, plot_sanity_checks
from audio_concepts.sanity_checks import sanity_checks
from audio_concepts.scoring import FlippingSettings, floats, score_layer, score_maps
from audio_concepts.sharding import concatenate_lists, gather_computed, on_rank0, share
from audio_concepts.workspace import AnalysisState, Workspace
from zennit_drsa.composites import audio_composite
from zennit_drsa.estimators import SubspaceEstimator
from zennit_drsa.evaluation import PatchFlippingResult

__all__ = ["ORDERINGS", "evaluate_explanations"]

ORDERINGS: tuple[str, ...] = ("union", "round_robin", "positive_sum")
"""Orderings of disentangled deletion, each its own measure."""

# Per-input values that need the sound objects (not reported for the standard map).
_TRUTH_KEYS = ("recovery", "recovery_normalized", "chance", "ceiling")


def evaluate_explanations(
    data: AudioData,
    workspace: Workspace,
    state: AnalysisState,
    explanations: Explanations,
    subspaces: Subspaces,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Score the explanations, the references and the model; write them under ``evaluation/``.

    Parameters
    ----------
    data:
        The audio folder, opened for the model under study.
    workspace, state:
        Where results go, and the record of the fit.
    explanations:
        The explained inputs and every fit's heatmaps.
    subspaces:
        The fitted estimators the heatmaps came from (layer measures need them).
    progress:
        Show progress bars.

    Returns
    -------
    dict
        The content of ``evaluation/results.json``: ``fit_id``; ``labels``; ``measures``
        (names computed, see :data:`~audio_concepts.measures.MEASURES`); ``methods``: per
        method and ``"standard"`` one record per seed with ``measures`` (name → one value
        per input, ``None`` where undefined), ``selectivity_matrix`` and, kept for older
        readers, ``aupc`` (deletion under the analysis' ordering), ``recovery`` and
        ``chance``; ``references`` (synthetic data): ``oracle``, ``entangled``,
        ``oracle_subspaces``, ``random_subspaces``, ``entangled_subspace`` in the same
        form, ``eligible`` (inputs with two or more scored objects) and ``layer`` (how the
        layer references were built); ``fitness`` (synthetic data); ``sanity``;
        ``accuracy``; ``n_inputs``; ``overlap`` (per method the mean heatmap cosine of every
        pair of concepts). ``evaluation/`` also gets ``flipping.png``, ``sanity.png`` and
        the accuracy's ``metrics.json`` and confusion matrices.
    """
    model, config = data.model, state.config
    device = model.device
    inputs = explanations.inputs
    labels = inputs["labels"]
    clips = [str(clip) for clip in inputs["clips"]]
    removal = config.removal if config.removal is not None else model.frontend.floor
    if removal is None:
        raise ValueError("the front-end has no floor; set AnalysisConfig.removal (--removal)")
    settings = FlippingSettings(
        patch_size=tuple(config.patch_size),
        orderings=ORDERINGS,
        insertion_ordering=config.ordering,
        removal=float(removal),
        score=config.score,
        selectivity_fraction=config.selectivity_fraction,
        batch_size=128,
        device=device,
    )
    # Under torchrun each rank scores its share of the inputs; gathered in rank order below.
    part = share(len(labels))
    # Fitted before the shares are scored: the fit shares its collection by rank too, and
    # its collective calls must not wait inside one rank's scoring.
    layer = None
    if data.kind == "synthetic" and config.references:
        layer = exact.fit_layer_references(data, state, seed=config.seeds[0], progress=progress)
    parts = gather_computed(
        lambda: _score_share(
            data, state, explanations, subspaces, part, settings, clips, layer, progress=progress
        ),
        "evaluate",
    )
    merged = _merge(parts)
    # The accuracy on the whole split: each rank predicts its share of the split's clips.
    split_clips = data.split_clips(config.eval_split)
    split_part = share(len(split_clips), f"clips of the {config.eval_split} split")
    predictions = ClipPredictions.concatenate(
        gather_computed(
            lambda: predict_clips(
                model.network,
                model.frontend,
                split_clips[split_part],
                data.cache,
                n_chunks=model.eval_chunks,
                span_seconds=model.eval_span_seconds,
                short_clips=model.short_clips,
                device=device,
                progress=progress,
            ),
            "predicting the split's clips",
        )
    )

    def finish() -> dict[str, Any]:
        # Whole-split and whole-folder work: one process computes and writes it.
        return _finish(data, workspace, state, explanations, subspaces, merged, predictions)

    return on_rank0(finish, "evaluate")


def _score_share(
    data: AudioData,
    state: AnalysisState,
    explanations: Explanations,
    subspaces: Subspaces,
    part: slice,
    settings: FlippingSettings,
    clips: list[str],
    layer: exact.LayerReferences | None,
    *,
    progress: bool,
) -> dict[str, Any]:
    """Every decomposition's per-input measures on the inputs ``part``, and its curves;
    ``layer``: the layer references to score with the map references (``None``: none)."""
    config = state.config
    inputs = explanations.inputs
    logmel = torch.from_numpy(inputs["logmel"][part])
    labels = inputs["labels"][part]
    masks = data.object_masks(clips[part])
    masks = None if masks is None else [_fit_mask(m, logmel.shape[-2:]) for m in masks]
    changes = exact.build_interventions(data, clips[part]) if masks is not None else None
    scorer = _Scorer(data, state, logmel, labels, settings, masks, changes)

    methods: dict[str, list[dict[str, Any]]] = {}
    references: dict[str, Any] | None = None
    curves: dict[str, list[PatchFlippingResult]] = {}
    jobs = list(explanations.maps)
    standard_job = _standard_job(config, jobs)
    for method, seed in tqdm(jobs, desc="evaluate", disable=not progress):
        maps = explanations.maps[(method, seed)]["heatmaps"][part]
        flipped: dict[str, Any] = {}
        record = scorer.score(maps[:, :-1], subspaces.get((method, seed)), curves=flipped)
        methods.setdefault(method, []).append({"seed": seed, **record})
        curves.setdefault(method, []).append(flipped[config.ordering])
        if (method, seed) == standard_job:
            # The standard map as one concept is also the entangled reference: scored once.
            standard = maps.sum(axis=1)[:, None]
            entangled = scorer.score(standard, None, curves=flipped)
            truth_free = {
                name: values
                for name, values in entangled["measures"].items()
                if name not in _TRUTH_KEYS
            }
            record = scorer.score(standard, None, truth=False, maps=truth_free)
            methods["standard"] = [{"seed": seed, **record}]
            curves["standard"] = [flipped[config.ordering]]
            if masks is not None and layer is not None:
                references = _references(scorer, standard, entangled, layer)
    fitness = None
    if changes is not None:
        before, after = exact.fitness_logits(data.model, changes, labels)
        fitness = {"before": before.tolist(), "after": after.tolist()}
    return {"methods": methods, "references": references, "curves": curves, "fitness": fitness}


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The ranks' shares joined in rank order: per-input lists concatenated, selectivity
    matrices averaged weighted by each share's valid inputs, curves pooled."""
    first = parts[0]
    if len(parts) == 1:
        return first

    def records(pools: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        joined = []
        for shares in zip(*pools, strict=True):
            record = dict(shares[0])
            for key, value in shares[0].items():
                if key == "measures":
                    record[key] = {
                        name: concatenate_lists([s[key][name] for s in shares]) for name in value
                    }
                elif isinstance(value, list) and key != "selectivity_matrix":
                    record[key] = concatenate_lists([s[key] for s in shares])
            if "selectivity_matrix" in shares[0]:
                record["selectivity_matrix"] = _pooled_matrix(shares)
            joined.append(record)
        return joined

    merged: dict[str, Any] = {
        "methods": {
            name: records([p["methods"][name] for p in parts]) for name in first["methods"]
        },
        "curves": {name: [c for p in parts for c in p["curves"][name]] for name in first["curves"]},
        "references": None,
        "fitness": None,
    }
    if first["fitness"] is not None:
        merged["fitness"] = {
            key: concatenate_lists([p["fitness"][key] for p in parts]) for key in first["fitness"]
        }
    if first["references"] is not None:
        references: dict[str, Any] = {"layer": first["references"].get("layer")}
        for name, value in first["references"].items():
            if name == "eligible":
                references[name] = concatenate_lists([p["references"][name] for p in parts])
            elif isinstance(value, list):
                references[name] = records([p["references"][name] for p in parts])
        merged["references"] = references
    return merged


def _pooled_matrix(shares: tuple[dict[str, Any], ...]) -> list[list[float | None]] | None:
    """The mean selectivity matrix over all valid inputs, from each share's mean and count."""
    total, weight = None, 0
    for share_record in shares:
        matrix = share_record.get("selectivity_matrix")
        valid = sum(v is not None for v in share_record["measures"].get("selectivity", []))
        if matrix is None or valid == 0:
            continue
        values = np.array([[np.nan if v is None else v for v in row] for row in matrix])
        total = values * valid if total is None else total + values * valid
        weight += valid
    if total is None:
        return shares[0].get("selectivity_matrix")
    return [floats(row) for row in total / weight]


def _finish(
    data: AudioData,
    workspace: Workspace,
    state: AnalysisState,
    explanations: Explanations,
    subspaces: Subspaces,
    merged: dict[str, Any],
    predictions: ClipPredictions,
) -> dict[str, Any]:
    """Accuracy, task fitness, sanity checks and overlap; ``results.json`` and figures."""
    model, config = data.model, state.config
    folder = workspace.evaluation_dir
    metrics = write_scores(predictions, model.class_names, split=config.eval_split, out_dir=folder)
    labels = explanations.inputs["labels"]
    methods = merged["methods"]
    results: dict[str, Any] = {"fit_id": state.fit_id, "labels": labels.tolist()}
    results["methods"] = methods
    if merged["references"] is not None:
        results["references"] = merged["references"]
    first = next(iter(methods.values()))[0]["measures"]
    results["measures"] = [m.name for m in MEASURES if m.name in first]
    if merged["fitness"] is not None:
        results["fitness"] = exact.summarize_fitness(
            [str(clip) for clip in explanations.inputs["clips"]],
            labels,
            merged["fitness"]["before"],
            merged["fitness"]["after"],
            model.class_names,
        )
    job = _standard_job(config, list(explanations.maps))
    results["sanity"] = _sanity(data, state, explanations, subspaces, job, folder)
    results["accuracy"] = metrics["accuracy"]
    results["n_inputs"] = len(labels)
    results["overlap"] = _overlap(explanations, config.n_subspaces)
    plot_flipping_curves(
        merged["curves"],
        folder / "flipping.png",
        title=f"Patch flipping ({config.ordering}, patches {config.patch_size})",
    )
    write_json_atomic(workspace.results_path, results)
    return results


def _standard_job(config: AnalysisConfig, jobs: list[tuple[str, int]]) -> tuple[str, int]:
    """The fit whose maps give the standard heatmap and run the sanity checks: DRSA's first
    seed, else the first fit."""
    return ("drsa", config.seeds[0]) if "drsa" in config.methods else jobs[0]


class _Scorer:
    """Scores decompositions of the explained inputs, all through the same calls."""

    def __init__(
        self,
        data: AudioData,
        state: AnalysisState,
        logmel: torch.Tensor,
        labels: np.ndarray,
        settings: FlippingSettings,
        masks: list[np.ndarray] | None,
        changes: exact.Interventions | None,
    ) -> None:
        self.data, self.state = data, state
        self.logmel, self.labels = logmel, labels
        self.settings, self.masks, self.changes = settings, masks, changes

    def score(
        self,
        concepts: Any,
        per_class: dict[int, SubspaceEstimator] | None,
        *,
        curves: dict[str, Any] | None = None,
        truth: bool = True,
        maps: dict[str, list[float | None]] | None = None,
    ) -> dict[str, Any]:
        """Every measure of one decomposition: its concept heatmaps, and its subspaces if it
        has them (``per_class``; layer measures need them). ``maps``: map measures already
        computed for the same heatmaps, reused instead of computed again."""
        network, config = self.data.model.network, self.state.config
        masks = self.masks if truth else None
        if maps is None:
            measures = score_maps(
                network, self.logmel, concepts, self.labels, self.settings, masks, curves=curves
            )
        else:
            measures = dict(maps)
        record: dict[str, Any] = {"measures": measures}
        if per_class is not None:
            relevance = exact.layer_relevance_fn(
                network,
                audio_composite(config.composite, network),
                self.state.layer,
                per_class,
                device=self.settings.device,
            )
            selectivity, matrix = score_layer(
                relevance, self.logmel, concepts, self.labels, self.settings
            )
            measures["selectivity"] = selectivity
            record["selectivity_matrix"] = matrix
            if self.changes is not None and truth:
                scores = exact.interventional_scores(
                    relevance, self.changes, self.labels, batch_size=config.batch_size
                )
                measures["interventional_recovery"] = [
                    s.score if s is not None and s.eligible else None for s in scores
                ]
        # Kept for readers of the results of 0.2 and earlier.
        record["aupc"] = measures[deletion_name(config.ordering)]
        if "recovery" in measures:
            record["recovery"], record["chance"] = measures["recovery"], measures["chance"]
        return record

    def heatmaps(self, per_class: dict[int, SubspaceEstimator]) -> np.ndarray:
        """``(N, K, 1, M, F)`` concept heatmaps of a decomposition given by subspaces."""
        config = self.state.config
        maps = concept_maps(
            self.data.model.network,
            config.composite,
            self.state.layer,
            per_class,
            self.logmel,
            torch.from_numpy(self.labels),
            batch_size=config.batch_size,
            device=self.settings.device,
        )
        return maps["heatmaps"][:, :-1]


def _references(
    scorer: _Scorer,
    standard: np.ndarray,
    entangled: dict[str, Any],
    layer: exact.LayerReferences,
) -> dict[str, Any]:
    """The reference decompositions of known quality, scored like the methods.

    ``standard`` ``(N, 1, 1, M, F)`` is the standard heatmap; ``entangled`` its record as one
    concept (already scored with the masks); ``layer`` the fitted layer references.
    """
    assert scorer.masks is not None
    oracle = [s[None] * m[:, None] for s, m in zip(standard[:, 0], scorer.masks, strict=True)]
    found: dict[str, Any] = {
        "oracle": [{"seed": None, **scorer.score(oracle, None)}],
        "entangled": [{"seed": None, **entangled}],
    }
    found["eligible"] = [v is not None for v in found["oracle"][0]["measures"]["recovery"]]
    config = scorer.state.config
    found["layer"] = layer.description
    for name, per_class in layer.estimators.items():
        concepts = scorer.heatmaps(per_class)
        if concepts.shape[1] == 1:
            # One subspace spanning the layer: its map is the standard map (up to rounding),
            # so its map measures are the entangled split's; only its layer measures differ.
            record = scorer.score(concepts, per_class, maps=found["entangled"][0]["measures"])
        else:
            record = scorer.score(concepts, per_class)
        found[name] = [{"seed": config.seeds[0], **record}]
    return found


def _sanity(
    data: AudioData,
    state: AnalysisState,
    explanations: Explanations,
    subspaces: Subspaces,
    job: tuple[str, int],
    folder: Any,
) -> dict[str, Any] | None:
    """The model-randomisation checks of one fit on the first ``sanity_inputs`` inputs."""
    config = state.config
    if config.sanity_inputs == 0 or job not in subspaces:
        return None
    count = min(config.sanity_inputs, len(explanations.inputs["labels"]))
    result = sanity_checks(
        data.model.network,
        config.composite,
        state.layer,
        subspaces[job],
        torch.from_numpy(explanations.inputs["logmel"][:count]),
        torch.from_numpy(explanations.inputs["labels"][:count]),
        len(data.model.class_names),
        seed=config.seeds[0],
        batch_size=config.batch_size,
        device=data.model.device,
    )
    result["method"], result["seed"] = job
    plot_sanity_checks(result, folder / "sanity.png")
    return result


def _fit_mask(masks: np.ndarray, shape: torch.Size) -> np.ndarray:
    """Object masks on the explained input's grid: a clip longer than its chunk has more
    frames (cut to the chunk's), a shorter one fewer (the padding is in no mask)."""
    height, width = shape
    if masks.shape[1] != height:
        raise ValueError(f"object masks have {masks.shape[1]} mel bands, the inputs {height}")
    fitted = np.zeros((masks.shape[0], height, width), dtype=bool)
    frames = min(width, masks.shape[2])
    fitted[:, :, :frames] = masks[:, :, :frames]
    return fitted


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
