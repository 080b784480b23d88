"""The one-command demo: the toy task from synthesis to report.

:func:`run_demo` synthesises the toy task (METHOD.md §6: 2 classes × 2000 one-second clips
with known sound objects), trains the toy CNN, and runs one
:class:`~audio_concepts.analysis.Analysis` (fit DRSA and its baselines per class, explain and
evaluate the test split, write the report).

Which layer and how many concepts ``K``: the demo takes the ``(layer, K)`` pair where DRSA's
own figures were best on validated measures only (:func:`audio_concepts.sweep.best_pair`:
the first measure validated somewhere decides among the pairs where it is validated) in a
sweep over the last three convolutional blocks and ``K ∈ {2, 4, 8}``, evaluated on the
**validation** split, so the test figures it reports were not used to choose. The sweep
takes longer than the demo itself, so by default the demo reads a sweep recorded on the
demo's own model (same seed, settings and data; shipped as
``audio_concepts/data/demo_sweep.json``); ``sweep=True`` (``zennit-drsa demo --sweep``) runs
it again and chooses from the fresh one. The report shows the sweep's table and figure and
says which one was used.
"""

from __future__ import annotations

import dataclasses
import os
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audio_concepts.analysis import Analysis
from audio_concepts.config import AnalysisConfig
from audio_concepts.report import Report
from audio_concepts.summary import format_summary
from audio_concepts.sweep import (
    SweepResult,
    best_pair,
    choice_measures,
    choice_pairs,
    load_sweep,
    plot_sweep,
    selectivity_agreement,
    sweep_concepts,
)

if TYPE_CHECKING:
    from audio_cnn.train import TrainConfig

__all__ = ["DEMO_BLOCKS", "DEMO_KS", "DEMO_SEEDS", "demo_training", "recorded_sweep", "run_demo"]

# The sweep's grid: the last three convolutional blocks of the toy CNN and K.
DEMO_BLOCKS = (3, 4, 5)
DEMO_KS = (2, 4, 8)
# Analysis seeds (random baseline, DRSA/DSA starts) as offsets from the demo's seed.
DEMO_SEEDS = (0, 1, 2)
_RECORDED = "demo_sweep.json"
# Validation clips per class each swept pair is evaluated on: fewer than the demo's final
# evaluation (AnalysisConfig's default) to keep the nine pairs affordable on two cores.
SWEEP_CLIPS_PER_CLASS = 40
# K when no measure is validated at any swept pair: one concept per sound object of a
# toy class (four), fixed before any figure was seen.
FALLBACK_K = 4


def recorded_sweep() -> SweepResult:
    """The sweep recorded on the demo's model (seed 0, default settings; validation split)."""
    with resources.as_file(resources.files("audio_concepts") / "data" / _RECORDED) as path:
        return load_sweep(path)


def run_demo(
    out_dir: str | os.PathLike[str],
    *,
    clips_per_class: int = 2000,
    epochs: int = 20,
    max_minutes: float | None = None,
    seed: int = 0,
    sweep: bool = False,
    config: AnalysisConfig | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The toy task end to end: synthesise, train, fit, explain, evaluate, report.

    Writes ``out_dir/data`` (the toy task), ``out_dir/run`` (the trained CNN), with
    ``sweep=True`` ``out_dir/sweep``, and the analysis (``report.html``, ``summary.json``,
    ...) into ``out_dir``, and prints a summary table.

    Parameters
    ----------
    out_dir:
        Output directory (missing, empty, or an earlier demo with the same arguments: the
        data are reused, training resumes from its last checkpoint, a sweep resumes).
    clips_per_class:
        Toy clips per class (70 % train, 15 % validation, 15 % test).
    epochs, max_minutes:
        Training epochs and an optional time budget (training stops after the epoch that
        exceeds it). No budget by default, so the same seed gives the same model and figures
        whatever the machine's load.
    seed:
        Seed of the data and the training; the analysis uses the seeds ``seed + s`` for
        ``s`` in :data:`DEMO_SEEDS`.
    sweep:
        Run the sweep over :data:`DEMO_BLOCKS` × :data:`DEMO_KS` on the validation split
        and choose the layer and ``K`` from it, instead of from :func:`recorded_sweep`.
    config:
        Analysis settings; default :class:`AnalysisConfig` with the seeds above and the
        chosen layer and ``K``. When given, it is used as it is (the sweep, if run, uses its
        other settings; the report still shows which pair the sweep would choose).
    progress:
        Show tqdm progress bars.

    Returns
    -------
    dict
        The summary (see :meth:`~audio_concepts.analysis.Analysis.report`; ``timings_s``
        holds every step from synthesis to report), with ``"demo"``: the chosen layer and
        ``K`` and where the sweep came from.
    """
    from audio_cnn.model import AudioCNN
    from audio_cnn.synthetic import SyntheticTask, write_synthetic_dataset
    from audio_cnn.train import train

    out_dir = Path(out_dir)
    timings: dict[str, float] = {}
    start = time.perf_counter()

    def lap(step: str) -> None:
        timings[step] = time.perf_counter() - start - sum(timings.values())

    data = write_synthetic_dataset(
        out_dir / "data",
        SyntheticTask.toy(seed=seed),
        clips_per_class=clips_per_class,
        progress=progress,
    )
    lap("synthesise")
    run = out_dir / "run"
    device = None if config is None else config.device
    training = demo_training(epochs=epochs, max_minutes=max_minutes, seed=seed, device=device)
    train(
        data,
        run,
        preset="toy",
        config=training,
        resume=(run / "last.pt").is_file(),
        progress=progress,
    )
    lap("train")

    # The toy task's files are generated i.i.d., so its first clips are a random sample; the
    # recorded sweep was computed on them ("first"), and the demo keeps that protocol.
    base = config or AnalysisConfig(seeds=tuple(seed + s for s in DEMO_SEEDS), subset="first")
    if sweep:
        model = AudioCNN.preset("toy")
        chosen_from = sweep_concepts(
            run,
            data,
            out_dir / "sweep",
            layers=[model.block_output(block) for block in DEMO_BLOCKS],
            n_subspaces=DEMO_KS,
            config=dataclasses.replace(
                base, eval_split="val", eval_clips_per_class=SWEEP_CLIPS_PER_CLASS
            ),
            progress=progress,
        )
        origin = f"computed by this demo in {out_dir / 'sweep'}"
        lap("sweep")
    else:
        chosen_from = recorded_sweep()
        origin = (
            "recorded on the demo's default model (seed 0) and shipped with the package; "
            "`zennit-drsa demo --sweep` computes it again"
        )
    try:
        layer, k = best_pair(chosen_from)
        choice_note = None
    except ValueError as error:
        # Fixed before looking at any figure: the reference pipeline's layer (the model's
        # default) and one concept per sound object of a class.
        layer, k = AudioCNN.preset("toy").block_output(4), FALLBACK_K
        choice_note = f"{error}; the demo falls back to layer {layer}, K = {k}"
    config = config or dataclasses.replace(base, layer=layer, n_subspaces=k)

    # One analysis, in memory from fit to report: the model and the audio are loaded once.
    analysis = Analysis.create(run, data, out_dir, config)
    analysis.fit(progress=progress)
    analysis.explain(progress=progress)
    analysis.evaluate(progress=progress)

    def sweep_section(report: Report, media: Path) -> None:
        _add_sweep_section(report, media, chosen_from, origin, (layer, k), config, choice_note)

    demo = {
        "layer": config.layer,
        "n_subspaces": config.n_subspaces,
        "sweep_choice": {"layer": layer, "n_subspaces": k},
        "sweep_origin": "computed" if sweep else "recorded",
        "choice_measures": choice_measures(chosen_from),
        "choice_note": choice_note,
        "selectivity_agreement": selectivity_agreement(chosen_from),
    }
    summary = analysis.report(
        progress=progress,
        timings=timings,
        extra_sections=sweep_section,
        extra_summary={"demo": demo},
    )
    print(format_summary(summary))
    print(f"report: {out_dir / 'report.html'}  (wall time {time.perf_counter() - start:.0f} s)")
    return summary


def _add_sweep_section(
    report: Report,
    media: Path,
    result: SweepResult,
    origin: str,
    choice: tuple[str, int],
    config: AnalysisConfig,
    note: str | None,
) -> None:
    """The sweep that chose the layer and K: how, table, figure."""
    used = (config.layer, config.n_subspaces)
    usable = choice_measures(result)
    how = (
        f"The demo takes the pair where DRSA's own figures are best on validated measures only "
        f"({', '.join(usable)}, in that order; among the pairs where {usable[0]} is "
        f"validated: {', '.join(f'{layer} K={k}' for layer, k in choice_pairs(result))}), "
        f"without looking at the baselines or the test split: layer {choice[0]}, "
        f"K = {choice[1]}."
        if note is None
        else f"No choice by a validated measure was possible: {note}."
    )
    section = report.section(
        "Choice of layer and K",
        f"The sweep over layers and K below was evaluated on the {result.eval_split} split "
        f"({origin}). {how}"
        + (
            ""
            if used == choice
            else f" This run was given other settings: layer {used[0]}, K = {used[1]}."
        ),
    )
    agreement = selectivity_agreement(result)
    for truth, figures in (agreement or {}).items():
        section.paragraph(
            f"Concept selectivity (which needs no ground truth) against {truth.replace('_', ' ')} "
            f"across the sweep's rows (methods × layers × K): Spearman rho "
            f"{figures['rho']:+.2f}, p = {figures['p_value']:.2g}, {figures['n']} rows."
        )
    section.table(
        [
            {
                "layer": row.layer,
                "K": row.n_subspaces,
                "method": row.method,
                "AUPC (class mean)": row.aupc,
                "recovery (class mean)": row.recovery,
                "chance": row.chance,
                **{name: row.measures.get(name) for name in usable},
            }
            for row in result.rows
        ],
        caption=f"Sweep ({result.eval_split} split; lower AUPC and higher recovery are better)",
    )
    figure = media / "sweep.png"
    plot_sweep(result, figure)
    section.figure(figure, "AUPC and concept recovery against K, per method and layer")


def demo_training(
    *, epochs: int = 20, max_minutes: float | None = None, seed: int = 0, device: str | None = None
) -> TrainConfig:
    """The demo's training: the toy preset with the fixed recipe its recorded sweep used.

    The sweep shipped with the package was computed on the model these settings train: cosine
    decay over ``epochs`` (20), batches of 64, no SpecAugment, patience 8 (the value it was
    recorded with: the same model, and an earlier demo folder still resumes) and no time
    budget, so that the same seed gives the same model on any machine. The toy preset's own
    default (stop on a validation plateau within 5 minutes) would end where the machine's
    speed says.
    """
    from audio_cnn.train import TrainConfig

    return TrainConfig.preset(
        "toy",
        epochs=epochs,
        batch_size=64,
        spec_augment=False,
        scheduler="cosine",
        patience=8,
        max_minutes=max_minutes,
        seed=seed,
        device=device,
    )
