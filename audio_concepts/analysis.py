"""The concept analysis of a trained audio CNN, from audio folder to report, in four steps.

One code path serves the toy demo and a user's own run and audio folder (synthetic, GTZAN
or folder-per-class layout), each step reading what the previous one wrote into ``out_dir``:

1. :func:`fit_concepts`: per class ``c``, activation/context pairs at the layer from
   training-split chunks of class ``c`` explaining class ``c``'s logit; every method (DRSA
   and its baselines) fitted with the same ``K`` and ``d_k``; estimators saved without pickle
   under ``out_dir/subspaces/<method>/<class>/seed<s>``.
2. :func:`explain_concepts`: concept heatmaps of test-split chunks (validation-split with
   ``AnalysisConfig(eval_split="val")``) for their TRUE class, with each method's per-class
   subspaces (``out_dir/explanations/<method>_seed<s>.npz``).
3. :func:`evaluate_concepts`: disentangled patch flipping per method, standard patch flipping
   of the standard heatmap, concept recovery on synthetic data, accuracy on the same split
   (``out_dir/evaluation/``).
4. :func:`write_report`: ``report.html`` (self-contained) and ``summary.json``
   (:func:`summarize_concepts`).

:func:`audio_concepts.demo.run_demo` synthesises the toy task, trains the CNN and runs all
four steps;
:func:`audio_concepts.sweep.sweep_concepts` runs steps 1–3 over several layers and ``K``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from atomic_io import atomic_path, write_text_atomic
from audio_cnn.audio_io import DecodedAudioCache
from audio_cnn.checkpoint import TrainedRun, load_run
from audio_cnn.chunks import EvenChunkDataset
from audio_cnn.dataset_dirs import DatasetDir, open_dataset_dir
from audio_cnn.datasets import ClipRecord
from audio_concepts.plots import plot_flipping_curves
from zennit_drsa.attribution import DRSAAttributor
from zennit_drsa.collect import collect
from zennit_drsa.composites import audio_composite
from zennit_drsa.estimators import DRSA, DSA, PRCA, RandomSubspaces, SubspaceEstimator, load, save
from zennit_drsa.evaluation import (
    PatchFlippingResult,
    aupc_table,
    concept_recovery,
    patch_flipping,
)
from zennit_drsa.layers import resolve_layer

if TYPE_CHECKING:
    from audio_concepts.report import Report

__all__ = [
    "METHODS",
    "AnalysisConfig",
    "LayerPlan",
    "evaluate_concepts",
    "explain_and_evaluate",
    "explain_concepts",
    "fit_concepts",
    "format_summary",
    "plan_layer",
    "summarize_concepts",
    "write_report",
]

METHODS = ("drsa", "prca", "dsa", "random")
"""Subspace methods compared by the analysis; ``"standard"`` (the LRP heatmap) is always added."""

_SEEDED = {"drsa", "dsa", "random"}
_ORDERINGS = ("round_robin", "union")
_SCORES = ("logit", "relu_logit")
_SPLIT_NAMES = {"test": "test", "val": "validation"}  # eval_split → words for the report
_EVAL_SPLITS = tuple(_SPLIT_NAMES)
_STATE = "analysis.json"
_FORMAT = "zennit_drsa.analysis"  # file format name, kept across the move
# GTZAN (METHOD.md §6): 10 evenly spaced chunks per clip for DRSA data; a toy clip has one.
_FIT_CHUNKS = 10
_SPAN_SECONDS = 29.0


@dataclass(frozen=True)
class AnalysisConfig:
    """Settings of a concept analysis (JSON-safe; validated on construction).

    Attributes
    ----------
    layer:
        Layer whose output the subspaces decompose; ``None``: ``model.block_output(4)``, the
        ReLU output of the 4th convolutional block (the reference pipeline's layer).
    n_subspaces:
        Number of concepts ``K``, the same for every method.
    subspace_dim:
        Dimension ``d_k`` of every subspace; ``None``: ``d // K``.
    n_locations:
        Random map positions per chunk whose (activation, context) pairs are collected;
        capped at the number of positions of the layer's map.
    fit_clips_per_class:
        Training-split clips per class used for fitting (``None``: all). Each contributes up
        to 10 evenly spaced chunks (one for a 1 s toy clip).
    eval_clips_per_class:
        Clips per class of ``eval_split`` that are explained and evaluated (first chunk of
        each).
    eval_split:
        Split whose clips are explained and evaluated (and on which the accuracy is
        reported): ``"test"``, or ``"val"`` to choose settings (e.g. in a sweep over layers
        and K, :mod:`audio_concepts.sweep`) without looking at the test clips.
    composite:
        LRP composite name for :func:`~zennit_drsa.composites.audio_composite`.
    methods:
        Subset of :data:`METHODS`.
    max_iter, n_restarts, tol:
        Iteration limit, random starts and relative-improvement tolerance (over 10
        iterations) of the DRSA and DSA solvers. The default ``1e-4`` (the estimators' own is
        ``1e-6``) saves time: on the toy task the objective after 200 iterations was within
        0.1 % of its value at convergence with ``1e-6`` (about 350 iterations).
    patch_size:
        ``(mel bins, frames)`` of a patch-flipping patch.
    ordering:
        ``"round_robin"`` or ``"union"`` (see :func:`~zennit_drsa.evaluation.patch_flipping`).
    removal:
        Value written into removed patches; ``None``: the front-end's log-mel floor
        (``logmel.config.clamp_min``).
    score:
        ``"logit"`` or ``"relu_logit"``.
    seeds:
        Seeds of the random baseline and of the DRSA/DSA random starts; each seeded method
        is fitted and evaluated once per seed and the results pooled. PRCA is deterministic
        and fitted once.
    batch_size:
        Chunks per forward/backward pass.
    device:
        Torch device; ``None``: CUDA when available, else the CPU.
    """

    layer: str | None = None
    n_subspaces: int = 4
    subspace_dim: int | None = None
    n_locations: int = 20
    fit_clips_per_class: int | None = 200
    eval_clips_per_class: int = 40
    eval_split: str = "test"
    composite: str = "reference"
    methods: tuple[str, ...] = METHODS
    max_iter: int = 1000
    n_restarts: int = 4
    tol: float = 1e-4
    patch_size: tuple[int, int] = (8, 8)
    ordering: str = "round_robin"
    removal: float | None = None
    score: str = "logit"
    seeds: tuple[int, ...] = (0,)
    batch_size: int = 32
    device: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", tuple(self.methods))
        object.__setattr__(self, "seeds", tuple(self.seeds))
        object.__setattr__(self, "patch_size", tuple(self.patch_size))
        problems = []
        positive = ("n_subspaces", "n_locations", "eval_clips_per_class", "max_iter")
        for name in (*positive, "n_restarts", "batch_size"):
            if not _positive_int(getattr(self, name)):
                problems.append(f"{name} must be a positive int, got {getattr(self, name)!r}")
        for name in ("subspace_dim", "fit_clips_per_class"):
            value = getattr(self, name)
            if value is not None and not _positive_int(value):
                problems.append(f"{name} must be a positive int or None, got {value!r}")
        if self.layer is not None and (not isinstance(self.layer, str) or not self.layer):
            problems.append(f"layer must be a module name or None, got {self.layer!r}")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods or len(set(self.methods)) != len(self.methods):
            problems.append(f"methods must be distinct names from {METHODS}, got {self.methods}")
        if len(self.patch_size) != 2 or not all(_positive_int(s) for s in self.patch_size):
            problems.append(f"patch_size must be two positive ints, got {self.patch_size!r}")
        if not (isinstance(self.tol, int | float) and self.tol >= 0):
            problems.append(f"tol must be a number >= 0, got {self.tol!r}")
        if self.ordering not in _ORDERINGS:
            problems.append(f"ordering must be one of {_ORDERINGS}, got {self.ordering!r}")
        if self.eval_split not in _EVAL_SPLITS:
            problems.append(f"eval_split must be one of {_EVAL_SPLITS}, got {self.eval_split!r}")
        if self.score not in _SCORES:
            problems.append(f"score must be one of {_SCORES}, got {self.score!r}")
        if self.removal is not None and not (
            isinstance(self.removal, int | float) and math.isfinite(self.removal)
        ):
            problems.append(f"removal must be a finite number or None, got {self.removal!r}")
        if not self.seeds or not all(isinstance(s, int) and s >= 0 for s in self.seeds):
            problems.append(f"seeds must be non-negative ints (at least one), got {self.seeds}")
        if len(set(self.seeds)) != len(self.seeds):
            problems.append(f"seeds must be distinct, got {self.seeds}")
        if problems:
            raise ValueError("invalid analysis settings: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary (tuples become lists)."""
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnalysisConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown analysis settings {unknown}; known: {sorted(known)}")
        return cls(**data)

    def method_seeds(self, method: str) -> tuple[int, ...]:
        """Seeds a method is fitted with (one for the deterministic PRCA)."""
        return self.seeds if method in _SEEDED else self.seeds[:1]


class LayerPlan(NamedTuple):
    """What an :class:`AnalysisConfig` means for one trained model (see :func:`plan_layer`).

    Attributes
    ----------
    layer:
        Module name of the decomposed layer.
    channels:
        Channels ``d`` of the layer's output (the dimension of its activation vectors).
    positions:
        Map positions of the layer's output per input (``H · W``; 1 for a dense layer).
    subspace_dim:
        Dimension ``d_k`` of every subspace.
    n_locations:
        Map positions sampled per chunk (``config.n_locations`` capped at ``positions``).
    """

    layer: str
    channels: int
    positions: int
    subspace_dim: int
    n_locations: int


def plan_layer(trained: TrainedRun, config: AnalysisConfig) -> LayerPlan:
    """Resolve the layer and subspace shape of ``config`` for a trained model, or fail early.

    Runs one forward pass of a zero input (on the model's device) to measure the layer.

    Parameters
    ----------
    trained:
        The trained run (:func:`audio_cnn.checkpoint.load_run`).
    config:
        Analysis settings.

    Returns
    -------
    LayerPlan

    Raises
    ------
    ValueError
        If the model has no such layer (the message suggests names), or ``K`` subspaces of
        dimension ``d_k`` do not fit in the layer's channels.
    """
    layer = config.layer or trained.model.block_output(4)
    channels, positions = _layer_shape(trained, layer)
    dims = config.subspace_dim or channels // config.n_subspaces
    if dims < 1 or dims * config.n_subspaces > channels:
        raise ValueError(
            f"K={config.n_subspaces} subspaces of dimension {dims} do not fit in the "
            f"{channels} channels of layer {layer!r}; lower n_subspaces or subspace_dim"
        )
    return LayerPlan(layer, channels, positions, dims, min(config.n_locations, positions))


# --------------------------------------------------------------------------- step 1: fit


def fit_concepts(
    run: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: AnalysisConfig | None = None,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit every method's subspaces per class and save them under ``out_dir/subspaces``.

    Parameters
    ----------
    run:
        Run directory written by ``audio-cnn train`` (its best checkpoint is used).
    data_dir:
        The dataset the run was trained on (synthetic, GTZAN or folder-per-class layout).
    out_dir:
        Analysis directory; ``analysis.json`` records the run, data, settings and layer so that
        the later steps need only ``out_dir``.
    config:
        Settings; default :class:`AnalysisConfig()`.
    progress:
        Show tqdm progress bars.

    Returns
    -------
    dict
        The analysis state written to ``out_dir/analysis.json``.

    Raises
    ------
    ValueError
        If the data's classes differ from the run's, a class has no training clips, the
        ``eval_split`` has no clips to explain later, or a setting does not fit the model
        (e.g. ``subspace_dim · K`` above the layer's channels; see :func:`plan_layer`).
    FileNotFoundError
        If the run or the data directory does not exist.
    """
    config = config or AnalysisConfig()
    out_dir = Path(out_dir)
    device = _device(config.device)
    trained = load_run(run, device=device)
    dataset = _open_matching(data_dir, trained)
    _split_clips(dataset, config.eval_split)  # fail now, not after fitting
    plan = plan_layer(trained, config)
    layer, dims = plan.layer, plan.subspace_dim
    composite = audio_composite(config.composite, trained.model)
    cache = _cache(run, trained)
    state = {
        "format": _FORMAT,
        "run": str(Path(run).resolve()),
        "data_dir": str(Path(data_dir).resolve()),
        "data_kind": dataset.kind,
        "class_names": dataset.class_names,
        "layer": layer,
        "channels": plan.channels,
        "subspace_dim": dims,
        "n_locations": plan.n_locations,
        "config": config.to_dict(),
        "fit_clips": {},
    }
    jobs = [(m, s) for m in config.methods for s in config.method_seeds(m)]
    for label, name in enumerate(tqdm(dataset.class_names, desc="fit", disable=not progress)):
        clips = _class_clips(dataset.splits["train"], label, config.fit_clips_per_class)
        if not clips:
            raise ValueError(f"class {name!r} has no training clips in {data_dir}")
        chunks = _chunks(clips, trained, cache, _FIT_CHUNKS)
        pairs = collect(
            trained.model,
            composite,
            layer,
            _logmel_batches(chunks, trained, config.batch_size, device),
            label,
            n_locations=plan.n_locations,
            random_state=config.seeds[0],
            device=device,
            progress=False,
        )
        state["fit_clips"][name] = {"clips": len(clips), "vectors": pairs.n_vectors}
        for method, seed in jobs:
            estimator = _estimator(method, config, dims, seed, device)
            estimator.fit(pairs.activations, context=pairs.context)
            save(
                estimator,
                _subspace_path(out_dir, method, name, seed),
                metadata={"layer": layer, "class": name, "method": method, "seed": seed},
            )
    write_text_atomic(out_dir / _STATE, json.dumps(state, indent=2))
    return state


# --------------------------------------------------------------------------- step 2: explain


def explain_concepts(out_dir: str | os.PathLike[str], *, progress: bool = True) -> Path:
    """Concept heatmaps of evaluation chunks for their true class, for every method and seed.

    Per class the first ``eval_clips_per_class`` clips of the ``eval_split`` (test by
    default) are taken (on synthetic data only those with at least one sound object); each
    contributes its first chunk.

    Parameters
    ----------
    out_dir:
        Directory written by :func:`fit_concepts`.
    progress:
        Show tqdm progress bars.

    Returns
    -------
    pathlib.Path
        ``out_dir/explanations``, holding ``inputs.npz`` (``logmel`` ``(N, 1, M, F)``,
        ``waveform`` ``(N, T)``, ``labels`` ``(N,)``, ``clips`` (relative paths)) and one
        ``<method>_seed<s>.npz`` per fit (``heatmaps`` ``(N, K + 1, 1, M, F)``,
        ``layer_relevance`` ``(N, K + 1)``, ``logits`` ``(N, n_classes)``).
    """
    out_dir = Path(out_dir)
    state, config = _read_state(out_dir)
    device = _device(config.device)
    trained = load_run(state["run"], device=device)
    dataset = _open_matching(state["data_dir"], trained)
    clips = _evaluation_clips(dataset, config)
    chunks = _chunks(clips, trained, _cache(state["run"], trained), 1)
    items = [chunks[i] for i in range(len(chunks))]
    waveforms = torch.stack([waveform for waveform, _, _ in items])
    labels = torch.tensor([label for _, label, _ in items])
    paths = [chunks.clips[clip].path for _, _, clip in items]
    with torch.no_grad():
        inputs = torch.cat(
            [trained.logmel(w.to(device)).cpu() for w in waveforms.split(config.batch_size)]
        )
    root = Path(state["data_dir"])
    folder = out_dir / "explanations"
    _save_npz(
        folder / "inputs.npz",
        logmel=inputs.numpy(),
        waveform=waveforms.numpy(),
        labels=labels.numpy(),
        clips=np.array([str(_relative(path, root)) for path in paths]),
    )
    composite = audio_composite(config.composite, trained.model)
    jobs = [(m, s) for m in config.methods for s in config.method_seeds(m)]
    for method, seed in tqdm(jobs, desc="explain", disable=not progress):
        subspaces = {
            label: load(_subspace_path(out_dir, method, name, seed))
            for label, name in enumerate(state["class_names"])
        }
        heatmaps, relevance, logits = [], [], []
        with DRSAAttributor(trained.model, composite, state["layer"], subspaces) as attributor:
            for x, y in zip(
                inputs.split(config.batch_size), labels.split(config.batch_size), strict=True
            ):
                explanation = attributor.explain(x.to(device), target=y.to(device))
                heatmaps.append(explanation.heatmaps.float().cpu())
                relevance.append(explanation.layer_relevance.double().cpu())
                logits.append(explanation.output.float().cpu())
        _save_npz(
            folder / f"{method}_seed{seed}.npz",
            heatmaps=torch.cat(heatmaps).numpy(),
            layer_relevance=torch.cat(relevance).numpy(),
            logits=torch.cat(logits).numpy(),
        )
    return folder


# --------------------------------------------------------------------------- step 3: evaluate


def evaluate_concepts(out_dir: str | os.PathLike[str], *, progress: bool = True) -> Path:
    """Patch flipping, concept recovery and accuracy of the explanations in ``out_dir``.

    The accuracy is the run's clip-level accuracy on the ``eval_split`` (test by default),
    the split whose chunks were explained.

    Disentangled patch flipping uses each method's K concept heatmaps (the residual is not a
    concept); standard patch flipping uses the standard LRP heatmap (the sum of all maps, from
    the first DRSA fit or else the first method). Concept recovery needs known sound objects
    and is computed on synthetic data only (masks from
    :func:`audio_cnn.synthetic.object_masks` on the model's log-mel grid; clips with two or
    more objects count).

    Returns
    -------
    pathlib.Path
        ``out_dir/evaluation``, holding ``results.json`` (per method and seed: AUPC per
        input, recovery score and chance per input; accuracy), ``flipping.png`` (mean
        curves) and the accuracy's ``metrics.json`` and confusion matrices.
    """
    from audio_cnn.evaluate import evaluate
    from audio_cnn.synthetic import clip_from_path, load_synthetic_task, object_masks

    out_dir = Path(out_dir)
    state, config = _read_state(out_dir)
    device = _device(config.device)
    folder = out_dir / "evaluation"
    metrics = evaluate(
        state["run"],
        state["data_dir"],
        split=config.eval_split,
        out_dir=folder,
        device=device,
        progress=progress,
    )
    trained = load_run(state["run"], device=device)
    inputs = _load_npz(out_dir / "explanations" / "inputs.npz")
    logmel = torch.from_numpy(inputs["logmel"])
    labels = inputs["labels"]
    removal = config.removal if config.removal is not None else trained.logmel.config.clamp_min
    if removal is None:
        raise ValueError("the front-end has no clamp floor; set AnalysisConfig.removal")
    flipping = {
        "patch_size": config.patch_size,
        "ordering": config.ordering,
        "removal": float(removal),
        "score": config.score,
        "batch_size": 128,
        "device": device,
    }
    masks = None
    if state["data_kind"] == "synthetic":
        task = load_synthetic_task(state["data_dir"])
        masks = [
            object_masks(clip_from_path(state["data_dir"], path, task), trained.logmel.cpu())
            for path in inputs["clips"]
        ]
        trained.logmel.to(device)
    results: dict[str, Any] = {"methods": {}, "labels": labels.tolist()}
    curves: dict[str, list[PatchFlippingResult]] = {}
    jobs = [(m, s) for m in config.methods for s in config.method_seeds(m)]
    standard_job = ("drsa", config.seeds[0]) if "drsa" in config.methods else jobs[0]
    for method, seed in tqdm(jobs, desc="evaluate", disable=not progress):
        maps = torch.from_numpy(_load_npz(_explanation_path(out_dir, method, seed))["heatmaps"])
        entries = [(method, maps[:, :-1])]
        if (method, seed) == standard_job:
            entries.append(("standard", maps.sum(dim=1)))
        for name, heatmaps in entries:
            result = patch_flipping(trained.model, logmel, heatmaps, labels, **flipping)
            record = {"seed": seed, "aupc": _floats(result.aupc)}
            if masks is not None and name != "standard":
                scores = [concept_recovery(h, m) for h, m in zip(heatmaps, masks, strict=True)]
                record["recovery"] = [s.score if s.eligible else None for s in scores]
                record["chance"] = [s.chance if s.eligible else None for s in scores]
            results["methods"].setdefault(name, []).append(record)
            curves.setdefault(name, []).append(result)
    results["accuracy"] = metrics["accuracy"]
    results["n_inputs"] = len(labels)
    plot_flipping_curves(
        curves,
        folder / "flipping.png",
        title=f"Patch flipping ({config.ordering}, patches {config.patch_size})",
    )
    write_text_atomic(folder / "results.json", json.dumps(results, indent=2))
    return folder


def explain_and_evaluate(out_dir: str | os.PathLike[str], *, progress: bool = True) -> Path:
    """:func:`explain_concepts` then :func:`evaluate_concepts`; returns the evaluation folder."""
    explain_concepts(out_dir, progress=progress)
    return evaluate_concepts(out_dir, progress=progress)


# --------------------------------------------------------------------------- step 4: report


def summarize_concepts(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Class-averaged AUPC and recovery per method from the evaluation in ``out_dir``.

    Parameters
    ----------
    out_dir:
        Directory after :func:`evaluate_concepts`.

    Returns
    -------
    dict
        ``accuracy`` (clip level, on ``settings["eval_split"]``); under ``methods`` for each
        method and ``"standard"`` the class-averaged mean ``aupc`` (lower is better), the
        pooled ``aupc_pooled`` ± ``aupc_sem`` over ``n`` inputs × seeds (``n_excluded``
        left out), per-class values, and ``recovery`` / ``chance`` (class-averaged; ``None``
        where undefined); ``seeds``; ``settings``.

    Raises
    ------
    FileNotFoundError
        If ``fit`` or ``evaluate`` has not been run on ``out_dir``.
    """
    out_dir = Path(out_dir)
    state, config = _read_state(out_dir)
    path = out_dir / "evaluation" / "results.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: run 'zennit-drsa evaluate {out_dir}' first"
        )
    return _summary(state, config, json.loads(path.read_text()))


def write_report(
    out_dir: str | os.PathLike[str],
    *,
    examples_per_class: int = 2,
    prototypes_per_concept: int = 4,
    progress: bool = True,
    timings: dict[str, float] | None = None,
    notes: Sequence[str] = (),
    extra_sections: Callable[[Report, Path], None] | None = None,
) -> dict[str, Any]:
    """Write ``out_dir/report.html`` and ``out_dir/summary.json`` from the evaluation.

    Parameters
    ----------
    out_dir:
        Directory after :func:`evaluate_concepts`.
    examples_per_class:
        Evaluation chunks per class shown as concept panels (DRSA, first seed), each with an
        audio player for the original and one per concept (sonified concept heatmaps).
    prototypes_per_concept:
        Per class and concept, the chunks with the highest concept relevance shown in the
        class's prototype figure (DRSA, first seed; the residual gets a row too unless the
        subspaces span the whole layer).
    progress:
        Show a tqdm progress bar.
    timings:
        Optional step name → seconds, shown in the report's settings.
    notes:
        Paragraphs added to the report's results section (e.g. where settings came from).
    extra_sections:
        Called as ``extra_sections(report, media_dir)`` after the results section, to add
        sections of one's own (:mod:`audio_concepts.demo` adds the sweep that chose its layer
        and K); PNGs written into ``media_dir`` are embedded like the others.

    Returns
    -------
    dict
        The summary written to ``summary.json`` (see :func:`summarize_concepts`), with
        ``timings_s``.
    """
    from audio_concepts.report import MeanSem, Panel, Report

    for name, value in (
        ("examples_per_class", examples_per_class),
        ("prototypes_per_concept", prototypes_per_concept),
    ):
        if not _positive_int(value):
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    out_dir = Path(out_dir)
    state, config = _read_state(out_dir)
    summary = summarize_concepts(out_dir)
    summary["timings_s"] = timings or {}
    split = config.eval_split
    media = out_dir / "report_media"
    steps = tqdm(total=4, desc="report", disable=not progress)

    report = Report(
        "DRSA concept analysis",
        f"Run {state['run']} on {state['data_dir']} ({state['data_kind']} data, classes "
        f"{', '.join(state['class_names'])}); layer {state['layer']}, K = {config.n_subspaces} "
        f"subspaces of dimension {state['subspace_dim']}; explained and evaluated on "
        f"{_SPLIT_NAMES[split]} clips.",
    )
    about = report.section("What is measured")
    for text in _EXPLANATION_TEXT:
        about.paragraph(text)
    overview = report.section("Results")
    overview.paragraph(
        f"Accuracy on the {_SPLIT_NAMES[split]} split (clip level): {summary['accuracy']:.4f}. "
        f"Explanations and measures below use {_SPLIT_NAMES[split]} clips "
        f"(eval_split = {split!r}). Seeds: {', '.join(map(str, config.seeds))}."
    )
    for note in notes:
        overview.paragraph(note)
    overview.figure(
        out_dir / "evaluation" / "confusion_clip.png", f"Confusion matrix ({_SPLIT_NAMES[split]})"
    )
    rows = []
    for method, entry in summary["methods"].items():
        rows.append(
            {
                "method": method,
                "AUPC (class mean)": entry["aupc"],
                "AUPC (pooled, mean ± s.e.m.)": MeanSem(entry["aupc_pooled"], entry["aupc_sem"]),
                "recovery (class mean)": entry["recovery"],
                "chance": entry["chance"],
                "inputs": entry["n"],
            }
        )
    overview.table(rows, caption="Patch flipping (lower AUPC is better) and concept recovery")
    per_class = []
    for method, entry in summary["methods"].items():
        for name in state["class_names"]:
            per_class.append(
                {
                    "method": method,
                    "class": name,
                    "AUPC": entry["aupc_per_class"].get(name),
                    "recovery": (entry["recovery_per_class"] or {}).get(name),
                    "chance": (entry["chance_per_class"] or {}).get(name),
                }
            )
    overview.table(per_class, caption="Per class")
    overview.figure(out_dir / "evaluation" / "flipping.png", "Mean normalised flipping curves")
    if extra_sections is not None:
        media.mkdir(parents=True, exist_ok=True)
        extra_sections(report, media)
    steps.update()

    concepts = report.section(
        "Concepts (DRSA)",
        "Per class: input, standard heatmap, the K concept heatmaps and the residual, with "
        "each map's share of the relevance at the layer; below, the original chunk and one "
        "sonified concept per player. Then the class's prototypes: per concept, the chunks "
        "with the highest relevance for it, its heatmap over the log-mel input.",
    )
    method = "drsa" if "drsa" in config.methods else config.methods[0]
    seed = config.seeds[0]
    trained = load_run(state["run"])
    inputs = _load_npz(out_dir / "explanations" / "inputs.npz")
    explanation = _load_npz(_explanation_path(out_dir, method, seed))
    for label, name in enumerate(state["class_names"]):
        chosen = np.flatnonzero(inputs["labels"] == label)[:examples_per_class]
        if chosen.size == 0:
            concepts.section(name, f"No {_SPLIT_NAMES[split]} chunk of this class was explained.")
            continue
        panels = _class_panels(
            Panel, trained, inputs, explanation, chosen, name, media, config.n_subspaces
        )
        section = concepts.section(name).panel_grid(panels)
        prototypes = _class_prototypes(
            trained, state, inputs, explanation, label, media, prototypes_per_concept
        )
        section.figure(
            prototypes,
            f"Prototypes of {name} ({method}): the {_SPLIT_NAMES[split]} chunks most relevant "
            "to each concept, titled with the clip and the concept's share of its relevance",
        )
    steps.update()

    figures = report.section("Relevance distribution and fitting")
    from audio_concepts.plots import plot_concept_distribution, plot_objective_trace

    distribution = media / "distribution.png"
    plot_concept_distribution(
        explanation["layer_relevance"], inputs["labels"], state["class_names"], distribution
    )
    figures.figure(
        distribution, f"Share of relevance per concept ({method}, {_SPLIT_NAMES[split]} chunks)"
    )
    traces = {
        f"{m} · {name}": [
            load(_subspace_path(out_dir, m, name, s)).objective_trace_
            for s in config.method_seeds(m)
        ]
        for m in config.methods
        if m in ("drsa", "dsa")
        for name in state["class_names"]
    }
    if traces:
        trace_png = media / "objective.png"
        plot_objective_trace(traces, trace_png)
        figures.figure(trace_png, "Objective per iteration (one line per class and seed)")
    steps.update()

    report.section("Settings").settings(
        {"analysis": state, "timings_s": summary["timings_s"]}, "All settings"
    )
    report.write(out_dir / "report.html")
    write_text_atomic(out_dir / "summary.json", json.dumps(summary, indent=2))
    steps.update()
    steps.close()
    return summary


_EXPLANATION_TEXT = (
    "Each method finds K orthogonal subspaces of the layer's activation space per class; an "
    "evaluation chunk (test split unless the settings say eval_split = 'val') is explained "
    "for its true class, and each subspace gives one concept heatmap (LRP of the relevance "
    "that passes through it). DRSA maximises a soft-min over subspaces "
    "of the relevance they carry; PRCA takes the top eigenvectors of the relevance "
    "covariance; DSA pools activation energy without context; random subspaces are a "
    "Haar-random basis. All use the same K and subspace dimension.",
    "Disentangled patch flipping removes patches of the log-mel input (set to the removal "
    "value, the log-mel floor by default) in the order given by the K concept heatmaps "
    "(round robin or union), and tracks the true class's score; the AUPC is the area under "
    "the score, normalised by the unperturbed score, against the true fraction of area "
    "removed. Lower means the heatmaps locate evidence more faithfully; the standard row "
    "uses the single LRP heatmap. Inputs with a non-positive initial score are excluded.",
    "Concept recovery (synthetic data only) asks whether concepts separate the known sound "
    "objects: for clips with two or more objects, each object's positive relevance is split "
    "over the concepts, objects are matched one-to-one to concepts, and the matched shares "
    "are averaged. 1 means every object has its own concept; the chance level 1/#objects is "
    "what one concept holding everything scores.",
    "These numbers describe this model, layer and K on this data; they are measurements, "
    "not guarantees, and small test sets give wide error bars.",
)


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a plain-text table: method, AUPC mean ± s.e.m., recovery, chance."""
    lines = [
        f"{summary['settings']['eval_split']} accuracy {summary['accuracy']:.4f}; "
        f"seeds {summary['seeds']}",
        f"{'method':<10} {'AUPC (class mean)':>18} {'AUPC pooled ± s.e.m.':>22} "
        f"{'recovery':>9} {'chance':>7}",
    ]
    for method, entry in summary["methods"].items():
        pooled = f"{_text(entry['aupc_pooled'])} ± {_text(entry['aupc_sem'])}"
        lines.append(
            f"{method:<10} {_text(entry['aupc']):>18} {pooled:>22} "
            f"{_text(entry['recovery']):>9} {_text(entry['chance']):>7}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- helpers


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _device(device: str | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _text(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _open_matching(data_dir: str | os.PathLike[str], trained: TrainedRun) -> DatasetDir:
    dataset = open_dataset_dir(data_dir)
    if dataset.class_names != trained.class_names:
        raise ValueError(
            f"{data_dir} has classes {dataset.class_names} but the run was trained on "
            f"{trained.class_names}"
        )
    return dataset


def _layer_shape(trained: TrainedRun, layer: str) -> tuple[int, int]:
    """Channels and number of map positions of ``layer``'s output."""
    _, module = resolve_layer(trained.model, layer)
    device = next(trained.model.parameters()).device
    shapes: list[torch.Size] = []
    handle = module.register_forward_hook(lambda _m, _i, output: shapes.append(output.shape))
    try:
        with torch.no_grad():
            config = trained.model.config
            trained.model(torch.zeros(1, config.in_channels, *config.input_shape, device=device))
    finally:
        handle.remove()
    return int(shapes[0][1]), math.prod(shapes[0][2:])


def _cache(run: str | os.PathLike[str], trained: TrainedRun) -> DecodedAudioCache:
    # The run's own cache, shared with audio_cnn.evaluate.
    return DecodedAudioCache(Path(run) / "cache", trained.logmel.config.sample_rate)


def _class_clips(clips: Sequence[ClipRecord], label: int, limit: int | None) -> list[ClipRecord]:
    chosen = [clip for clip in clips if clip.label == label]
    return chosen if limit is None else chosen[:limit]


def _split_clips(dataset: DatasetDir, split: str) -> list[ClipRecord]:
    clips = dataset.splits.get(split) or []
    if not clips:
        raise ValueError(
            f"{dataset.root} has no {split} clips to explain; pick another eval_split "
            f"(one of {_EVAL_SPLITS})"
        )
    return clips


def _evaluation_clips(dataset: DatasetDir, config: AnalysisConfig) -> list[ClipRecord]:
    clips_of_split = _split_clips(dataset, config.eval_split)
    task = None
    if dataset.kind == "synthetic":
        from audio_cnn.synthetic import load_synthetic_task

        task = load_synthetic_task(dataset.root)
    chosen = []
    for label in range(len(dataset.class_names)):
        clips = [clip for clip in clips_of_split if clip.label == label]
        if task is not None:
            clips = [c for c in clips if _n_objects(task, dataset.root, c) >= 1]
        chosen.extend(clips[: config.eval_clips_per_class])
    return chosen


def _n_objects(task: Any, root: Path, clip: ClipRecord) -> int:
    from audio_cnn.synthetic import clip_from_path

    return len(clip_from_path(root, clip.path, task).object_names)


def _chunks(
    clips: Sequence[ClipRecord], trained: TrainedRun, cache: DecodedAudioCache, n_chunks: int
) -> EvenChunkDataset:
    config = trained.logmel.config
    return EvenChunkDataset(
        clips,
        cache,
        config.chunk_samples,
        n_chunks=n_chunks,
        span_seconds=max(_SPAN_SECONDS, config.chunk_seconds),
        sample_rate=config.sample_rate,
    )


def _logmel_batches(
    chunks: EvenChunkDataset, trained: TrainedRun, batch_size: int, device: torch.device
) -> Iterator[torch.Tensor]:
    for waveform, _, _ in DataLoader(chunks, batch_size=batch_size):
        with torch.no_grad():
            yield trained.logmel(waveform.to(device))


def _estimator(
    method: str, config: AnalysisConfig, dims: int, seed: int, device: torch.device
) -> SubspaceEstimator:
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


def _subspace_path(out_dir: Path, method: str, class_name: str, seed: int) -> Path:
    return out_dir / "subspaces" / method / class_name / f"seed{seed}"


def _explanation_path(out_dir: Path, method: str, seed: int) -> Path:
    return out_dir / "explanations" / f"{method}_seed{seed}.npz"


def _relative(path: Path, root: Path) -> Path:
    try:
        return Path(path).resolve().relative_to(root.resolve())
    except ValueError:
        return Path(path)


def _read_state(out_dir: Path) -> tuple[dict[str, Any], AnalysisConfig]:
    path = out_dir / _STATE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: run 'zennit-drsa fit RUN DATA --out {out_dir}' first"
        )
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise ValueError(f"{path} was not written by zennit-drsa fit")
    return state, AnalysisConfig.from_dict(state["config"])


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as file:
        np.savez(file, **arrays)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: run 'zennit-drsa explain {path.parent.parent}' first"
        )
    with np.load(path, allow_pickle=False) as file:
        return {name: file[name] for name in file.files}


def _floats(values: np.ndarray) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in values]


def _class_mean(values: list[float | None], labels: np.ndarray, n_classes: int) -> list[float]:
    """Mean per class over the defined values (NaN for a class without any)."""
    array = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    means = []
    for label in range(n_classes):
        chosen = array[labels == label]
        chosen = chosen[np.isfinite(chosen)]
        means.append(float(chosen.mean()) if chosen.size else float("nan"))
    return means


def _summary(
    state: dict[str, Any], config: AnalysisConfig, results: dict[str, Any]
) -> dict[str, Any]:
    """Class-averaged AUPC and recovery per method, pooled over seeds."""
    names = state["class_names"]
    labels = np.asarray(results["labels"])
    methods: dict[str, Any] = {}
    for method, records in results["methods"].items():
        tiled = np.concatenate([labels] * len(records))
        aupc = [v for r in records for v in r["aupc"]]
        row = aupc_table({method: np.array([np.nan if v is None else v for v in aupc])})[0]
        per_class = _class_mean(aupc, tiled, len(names))
        entry: dict[str, Any] = {
            "aupc": _nan_mean(per_class),
            "aupc_pooled": _finite(row.mean),
            "aupc_sem": _finite(row.sem),
            "n": row.n,
            "n_excluded": row.n_excluded,
            "aupc_per_class": dict(zip(names, map(_finite, per_class), strict=True)),
            "recovery": None,
            "chance": None,
            "recovery_per_class": None,
            "chance_per_class": None,
        }
        if "recovery" in records[0]:
            recovery = _class_mean([v for r in records for v in r["recovery"]], tiled, len(names))
            chance = _class_mean([v for r in records for v in r["chance"]], tiled, len(names))
            entry.update(
                recovery=_nan_mean(recovery),
                chance=_nan_mean(chance),
                recovery_per_class=dict(zip(names, map(_finite, recovery), strict=True)),
                chance_per_class=dict(zip(names, map(_finite, chance), strict=True)),
            )
        methods[method] = entry
    return {
        "accuracy": results["accuracy"],
        "methods": methods,
        "seeds": list(config.seeds),
        "settings": {
            **config.to_dict(),
            "layer": state["layer"],
            "subspace_dim": state["subspace_dim"],
            "n_locations": state["n_locations"],
            "run": state["run"],
            "data_dir": state["data_dir"],
            "n_inputs": results["n_inputs"],
        },
    }


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _nan_mean(values: list[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _class_panels(
    panel: Any,
    trained: TrainedRun,
    inputs: dict[str, np.ndarray],
    explanation: dict[str, np.ndarray],
    chosen: np.ndarray,
    class_name: str,
    media: Path,
    n_subspaces: int,
) -> list[Any]:
    """One panel per chosen chunk: concept grid plus original and sonified concept players."""
    from audio_concepts.plots import plot_concept_grid
    from audio_concepts.sonification import sonify, write_wav

    heatmaps = explanation["heatmaps"][chosen]
    audio = sonify(inputs["waveform"][chosen], heatmaps[:, :n_subspaces], trained.logmel)
    rate = trained.logmel.config.sample_rate
    panels = []
    for row, index in enumerate(chosen):
        clip = str(inputs["clips"][index])
        stem = media / f"{class_name}_{index}"
        grid = stem.with_name(stem.name + "_grid.png")
        plot_concept_grid(
            inputs["logmel"][index, 0],
            heatmaps[row],
            explanation["layer_relevance"][index],
            trained.logmel,
            grid,
            title=clip,
        )
        players = {"original": stem.with_name(stem.name + "_original.wav")}
        write_wav(players["original"], inputs["waveform"][index], rate)
        for k in range(n_subspaces):
            players[f"concept {k + 1}"] = stem.with_name(stem.name + f"_concept{k + 1}.wav")
            write_wav(players[f"concept {k + 1}"], audio[row, k], rate)
        logit = float(explanation["logits"][index].max())
        panels.append(panel(f"{class_name} · {clip}", grid, f"max logit {logit:.2f}", players))
    return panels


def _class_prototypes(
    trained: TrainedRun,
    state: dict[str, Any],
    inputs: dict[str, np.ndarray],
    explanation: dict[str, np.ndarray],
    label: int,
    media: Path,
    n_prototypes: int,
) -> Path:
    """The prototype figure of one class (PNG path): its chunks ranked by concept relevance."""
    from audio_concepts.plots import plot_concept_prototypes

    chosen = np.flatnonzero(inputs["labels"] == label)
    n_subspaces = explanation["layer_relevance"].shape[1] - 1
    name = state["class_names"][label]
    path = media / f"{name}_prototypes.png"
    plot_concept_prototypes(
        inputs["logmel"][chosen],
        explanation["heatmaps"][chosen],
        explanation["layer_relevance"][chosen],
        trained.logmel,
        path,
        n_prototypes=n_prototypes,
        clip_names=[Path(str(clip)).name for clip in inputs["clips"][chosen]],
        residual=state["subspace_dim"] * n_subspaces < state["channels"],
        title=f"{name}: most relevant chunks per concept",
    )
    return path
