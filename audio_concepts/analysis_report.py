"""The analysis report: what is measured, what can be believed, results, concepts, settings.

Lays out :class:`~audio_concepts.report.Report` (the self-contained HTML builder) from one
analysis: the summary table and curves, per class the DRSA concept panels with a player per
sonified concept and the prototypes figure, the relevance distribution and objective traces.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from audio_concepts.config import SPLIT_NAMES
from audio_concepts.evaluation_report import add_evaluation_sections
from audio_concepts.explain import Explanations
from audio_concepts.fit import Subspaces
from audio_concepts.frontend import LogMelFrontend
from audio_concepts.plots import (
    plot_concept_distribution,
    plot_concept_grid,
    plot_concept_prototypes,
    plot_objective_trace,
)
from audio_concepts.report import MeanSem, Panel, Report
from audio_concepts.sonification import sonify, write_wav
from audio_concepts.workspace import AnalysisState, Workspace

__all__ = ["build_report"]


def build_report(
    frontend: LogMelFrontend,
    workspace: Workspace,
    state: AnalysisState,
    summary: dict[str, Any],
    explanations: Explanations,
    subspaces: Subspaces,
    *,
    examples_per_class: int = 2,
    prototypes_per_concept: int = 4,
    progress: bool = True,
    notes: Sequence[str] = (),
    extra_sections: Callable[[Report, Path], None] | None = None,
) -> Report:
    """The report of one analysis (not yet written), its figures and sounds in ``report_media``.

    Parameters
    ----------
    frontend:
        The model's front-end (axes of the figures, sonification).
    workspace, state, summary, explanations, subspaces:
        The analysis: its folder, the record of its fit, its summary, the explained chunks
        and the fitted estimators (for their objective traces).
    examples_per_class:
        Evaluation chunks per class shown as concept panels (DRSA, first seed), each with an
        audio player for the original and one per concept (sonified concept heatmaps).
    prototypes_per_concept:
        Per class and concept, the chunks with the highest concept relevance shown in the
        class's prototype figure (DRSA, first seed; the residual gets a row too unless the
        subspaces span the whole layer).
    progress:
        Show a progress bar.
    notes:
        Paragraphs added to the results section (e.g. where settings came from).
    extra_sections:
        Called as ``extra_sections(report, media_dir)`` after the results section, to add
        sections of one's own; PNGs written into ``media_dir`` are embedded like the others.
    """
    config = state.config
    split = config.eval_split
    media = workspace.media_dir
    steps = tqdm(total=4, desc="report", disable=not progress)

    report = Report(
        "DRSA concept analysis",
        f"Model {state.model_name} on {state.data_dir} ({state.data_kind} data, classes "
        f"{', '.join(state.class_names)}); layer {state.layer}, K = {config.n_subspaces} "
        f"subspaces of dimension {state.subspace_dim}; explained and evaluated on "
        f"{SPLIT_NAMES[split]} clips.",
    )
    about = report.section("What is measured")
    for text in _EXPLANATION_TEXT:
        about.paragraph(text)
    add_evaluation_sections(report, summary, workspace.evaluation_dir)
    overview = report.section("Results")
    overview.paragraph(
        f"Accuracy on the {SPLIT_NAMES[split]} split (clip level): {summary['accuracy']:.4f}. "
        f"Explanations and measures below use {SPLIT_NAMES[split]} clips "
        f"(eval_split = {split!r}). Seeds: {', '.join(map(str, config.seeds))}."
    )
    for warning in summary.get("warnings", []):
        overview.paragraph(f"Warning: {warning}.")
    for note in notes:
        overview.paragraph(note)
    overview.figure(
        workspace.evaluation_dir / "confusion_clip.png", f"Confusion matrix ({SPLIT_NAMES[split]})"
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
                "ceiling": entry.get("ceiling"),
                "recovery normalised (chance 0, ceiling 1)": entry.get("recovery_normalized"),
                "inputs": entry["n"],
            }
        )
    overview.table(
        rows,
        caption="Patch flipping (normalised AUPC: lower is better within [0, 1]) and concept "
        "recovery (higher is better; chance: one concept holding everything; ceiling: the best "
        "any decomposition with K concepts can reach when clips hold more objects than K)",
    )
    note = _aupc_note(summary)
    if note is not None:
        overview.paragraph(note)
    methods = summary["methods"]
    overview.table(
        [
            {
                "class": name,
                **{m: entry["aupc_per_class"].get(name) for m, entry in methods.items()},
            }
            for name in state.class_names
        ],
        caption="Normalised AUPC per class (columns: methods; mean over the class's inputs "
        "and the seeds)",
    )
    recovery = _recovery_per_class(methods, state.class_names)
    if recovery is not None:
        overview.table(
            recovery, caption="Concept recovery per class, each method with its chance level"
        )
    overview.figure(workspace.evaluation_dir / "flipping.png", "Mean normalised flipping curves")
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
    inputs = explanations.inputs
    explanation = explanations.maps[(method, config.seeds[0])]
    for label, name in enumerate(state.class_names):
        chosen = np.flatnonzero(inputs["labels"] == label)[:examples_per_class]
        if chosen.size == 0:
            concepts.section(name, f"No {SPLIT_NAMES[split]} chunk of this class was explained.")
            continue
        panels = _class_panels(
            frontend, inputs, explanation, chosen, name, media, config.n_subspaces
        )
        section = concepts.section(name).panel_grid(panels)
        prototypes = _class_prototypes(
            frontend, state, inputs, explanation, label, media, prototypes_per_concept
        )
        section.figure(
            prototypes,
            f"Prototypes of {name} ({method}): the {SPLIT_NAMES[split]} chunks most relevant "
            "to each concept, titled with the clip and the concept's share of its relevance",
        )
    steps.update()

    figures = report.section("Relevance distribution and fitting")
    distribution = media / "distribution.png"
    plot_concept_distribution(
        explanation["layer_relevance"], inputs["labels"], state.class_names, distribution
    )
    figures.figure(
        distribution, f"Share of relevance per concept ({method}, {SPLIT_NAMES[split]} chunks)"
    )
    traces = {
        (m, name): [subspaces[(m, s)][label].objective_trace_ for s in config.method_seeds(m)]
        for m in config.methods
        if m in ("drsa", "dsa")
        for label, name in enumerate(state.class_names)
    }
    if traces:
        trace_png = media / "objective.png"
        plot_objective_trace(traces, trace_png)
        figures.figure(
            trace_png,
            "Objective per iteration: colour marks the class, line style the method; one line "
            "per seed",
        )
    steps.update()

    report.section("Settings").settings(
        {"analysis": state.to_dict(), "timings_s": dict(state.timings_s)}, "All settings"
    )
    steps.update()
    steps.close()
    return report


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
    "uses the single LRP heatmap. Inputs with a non-positive initial score are excluded. "
    "The normalised AUPC is 1 if removing patches never lowers the score; a value below 0 "
    "or above 1 means the score crossed zero or rose while evidence was removed, and there "
    "'lower is better' no longer holds.",
    "Concept recovery (synthetic data only) asks whether concepts separate the known sound "
    "objects: for clips with two or more objects, each object's positive relevance is split "
    "over the concepts, objects are matched one-to-one to concepts, and the matched shares "
    "are averaged. 1 means every object has its own concept; the chance level 1/#objects is "
    "what one concept holding everything scores.",
    "Beyond these, interventional recovery removes each sound object from the waveform and "
    "measures how much each concept's layer relevance drops (the subspaces judged without "
    "heatmaps), and concept selectivity removes a concept's top patches and asks whether its "
    "own layer relevance drops more than the others'. A measure is only believed on a task "
    "after it ranks decompositions of known quality correctly (see the meta-evaluation).",
    "These numbers describe this model, layer and K on this data; they are measurements, "
    "not guarantees, and small test sets give wide error bars.",
)


def _aupc_note(summary: dict[str, Any]) -> str | None:
    """What AUPCs outside [0, 1] mean, if the summary has any (class means or per class)."""
    values = [
        value
        for entry in summary["methods"].values()
        for value in (entry["aupc"], entry["aupc_pooled"], *entry["aupc_per_class"].values())
        if value is not None
    ]
    if all(0.0 <= value <= 1.0 for value in values):
        return None
    return (
        f"Some normalised AUPCs lie outside [0, 1] (from {min(values):.2f} to "
        f"{max(values):.2f}). The normalised AUPC is the area under the true class's score, "
        "divided by its unperturbed value, against the fraction of the input removed: 1 if "
        "removing patches never lowered the score, near 0 if it fell to zero at once. Below "
        "0, the score crossed zero and turned negative while evidence was removed; above 1, "
        "it rose above its starting value. 'Lower is better' holds only within [0, 1]: a "
        "value below 0 says the score went negative, not that the heatmap is better than "
        "one scoring 0, so compare such methods and classes on their curves."
    )


def _recovery_per_class(
    methods: dict[str, Any], class_names: Sequence[str]
) -> list[dict[str, Any]] | None:
    """One row per class: each method's recovery and chance level; ``None`` if none has any."""
    rows = []
    for name in class_names:
        row: dict[str, Any] = {"class": name}
        for method, entry in methods.items():
            if entry["recovery_per_class"] is not None:
                row[method] = entry["recovery_per_class"].get(name)
                row[f"{method} chance"] = entry["chance_per_class"].get(name)
        rows.append(row)
    if all(value is None for row in rows for key, value in row.items() if key != "class"):
        return None
    return rows


def _class_panels(
    frontend: LogMelFrontend,
    inputs: dict[str, np.ndarray],
    explanation: dict[str, np.ndarray],
    chosen: np.ndarray,
    class_name: str,
    media: Path,
    n_subspaces: int,
) -> list[Panel]:
    """One panel per chosen chunk: concept grid plus original and sonified concept players."""
    heatmaps = explanation["heatmaps"][chosen]
    audio = sonify(inputs["waveform"][chosen], heatmaps[:, :n_subspaces], frontend)
    rate = frontend.sample_rate
    panels = []
    for row, index in enumerate(chosen):
        clip = str(inputs["clips"][index])
        stem = media / f"{class_name}_{index}"
        grid = stem.with_name(stem.name + "_grid.png")
        plot_concept_grid(
            inputs["logmel"][index, 0],
            heatmaps[row],
            explanation["layer_relevance"][index],
            frontend,
            grid,
            title=clip,
        )
        players = {"original": stem.with_name(stem.name + "_original.wav")}
        write_wav(players["original"], inputs["waveform"][index], rate)
        for k in range(n_subspaces):
            players[f"concept {k + 1}"] = stem.with_name(stem.name + f"_concept{k + 1}.wav")
            write_wav(players[f"concept {k + 1}"], audio[row, k], rate)
        logit = float(explanation["logits"][index].max())
        panels.append(Panel(f"{class_name} · {clip}", grid, f"max logit {logit:.2f}", players))
    return panels


def _class_prototypes(
    frontend: LogMelFrontend,
    state: AnalysisState,
    inputs: dict[str, np.ndarray],
    explanation: dict[str, np.ndarray],
    label: int,
    media: Path,
    n_prototypes: int,
) -> Path:
    """The prototype figure of one class (PNG path): its chunks ranked by concept relevance."""
    chosen = np.flatnonzero(inputs["labels"] == label)
    name = state.class_names[label]
    path = media / f"{name}_prototypes.png"
    plot_concept_prototypes(
        inputs["logmel"][chosen],
        explanation["heatmaps"][chosen],
        explanation["layer_relevance"][chosen],
        frontend,
        path,
        n_prototypes=n_prototypes,
        clip_names=[Path(str(clip)).name for clip in inputs["clips"][chosen]],
        residual=state.has_residual,
        title=f"{name}: most relevant chunks per concept",
    )
    return path
