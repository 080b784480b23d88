"""A concept analysis of an audio classifier, from audio folder to report, in four steps.

:class:`Analysis` joins the model under study (:class:`~audio_concepts.model.AudioModel`),
its audio folder (:class:`~audio_concepts.data.AudioData`), the settings
(:class:`~audio_concepts.config.AnalysisConfig`) and the analysis folder
(:class:`~audio_concepts.workspace.Workspace`). Each step writes its results there and hands
them to the next in memory, so a run of all four loads the model and the audio once:

1. :meth:`Analysis.fit` (:mod:`~audio_concepts.fit`): per class, every method's subspaces
   from training-split chunks of the class, explaining the class's logit.
2. :meth:`Analysis.explain` (:mod:`~audio_concepts.explain`): concept heatmaps of
   evaluation-split chunks for their true class, with each method's per-class subspaces.
3. :meth:`Analysis.evaluate` (:mod:`~audio_concepts.evaluate`): patch flipping, concept
   recovery on synthetic data, the model's accuracy on the same split.
4. :meth:`Analysis.report` (:mod:`~audio_concepts.analysis_report`): ``report.html``
   (self-contained) and ``summary.json``.

A later session (or the ``zennit-drsa`` command) resumes with :meth:`Analysis.open`, which
reads what earlier steps left in the folder. The functions :func:`fit_concepts`,
:func:`explain_concepts`, :func:`evaluate_concepts` and :func:`write_report` run one step
each on a folder, as the command line does.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

from atomic_io import write_json_atomic
from audio_cnn.ownership import lock_folder
from audio_concepts.analysis_report import build_report
from audio_concepts.config import METHODS, AnalysisConfig, positive_int
from audio_concepts.data import AudioData
from audio_concepts.diagnostics import coverage_warning
from audio_concepts.evaluate import evaluate_explanations
from audio_concepts.explain import Explanations, explain_chunks, load_subspaces
from audio_concepts.fit import Subspaces, fit_subspaces
from audio_concepts.model import AudioModel
from audio_concepts.planning import plan_layer
from audio_concepts.report import Report
from audio_concepts.sharding import is_writer
from audio_concepts.summary import format_summary, summarize
from audio_concepts.workspace import AnalysisState, Workspace

__all__ = [
    "METHODS",
    "Analysis",
    "AnalysisConfig",
    "evaluate_concepts",
    "explain_and_evaluate",
    "explain_concepts",
    "fit_concepts",
    "format_summary",
    "summarize_concepts",
    "write_report",
]

ModelSource = AudioModel | str | os.PathLike[str]
"""The model under study, or the directory of an ``audio_cnn`` run to load it from."""


class Analysis:
    """One concept analysis: model, audio, settings and folder; the four steps as methods.

    Build it with :meth:`create` (before fitting) or :meth:`open` (after); each step's
    results stay in memory for the next and are written to the folder.

    Parameters
    ----------
    model:
        The model under study, on the device to compute on.
    data:
        Its audio folder.
    workspace:
        The analysis folder.
    config:
        Analysis settings.
    state:
        The record of a finished fit (``None`` before :meth:`fit`).
    """

    def __init__(
        self,
        model: AudioModel,
        data: AudioData,
        workspace: Workspace,
        config: AnalysisConfig,
        state: AnalysisState | None = None,
    ) -> None:
        self.model = model
        self.data = data
        self.workspace = workspace
        self.config = config
        self._state = state
        self._subspaces: Subspaces | None = None
        self._explanations: Explanations | None = None
        self._results: dict[str, Any] | None = None

    @classmethod
    def create(
        cls,
        model: ModelSource,
        data_dir: str | os.PathLike[str],
        out_dir: str | os.PathLike[str],
        config: AnalysisConfig | None = None,
    ) -> Analysis:
        """A new analysis of ``model`` on ``data_dir`` into ``out_dir`` (nothing computed yet).

        Parameters
        ----------
        model:
            An :class:`AudioModel`, or a run directory written by ``audio-cnn train`` (its
            best checkpoint).
        data_dir:
            The audio folder (synthetic, GTZAN or folder-per-class layout) with the model's
            classes.
        out_dir:
            The analysis folder.
        config:
            Settings; default :class:`AnalysisConfig()`. ``config.device`` (default: CUDA when
            available) is where the model is moved.

        Raises
        ------
        ValueError
            If the data's classes differ from the model's, or the ``eval_split`` has no clips.
        FileNotFoundError
            If the run or the data directory does not exist.
        """
        config = config or AnalysisConfig()
        audio_model = _model(model, config.device)
        workspace = Workspace(Path(out_dir))
        data = AudioData.open(data_dir, audio_model, _cache_dir(audio_model, workspace))
        data.split_clips(config.eval_split)  # fail now, not after fitting
        return cls(audio_model, data, workspace, config)

    @classmethod
    def open(cls, out_dir: str | os.PathLike[str], *, model: AudioModel | None = None) -> Analysis:
        """The analysis in ``out_dir`` after :meth:`fit`, to run the later steps.

        Parameters
        ----------
        out_dir:
            A folder written by :meth:`fit` (``zennit-drsa fit``).
        model:
            The model under study; default: loaded from the ``audio_cnn`` run recorded by the
            fit (a model that is not a run must be given again).
        """
        workspace = Workspace(Path(out_dir))
        state = workspace.read_state()
        if model is None:
            if state.run is None:
                raise ValueError(
                    f"{workspace.state_path} records a model that is not an audio_cnn run "
                    f"({state.model_name}); pass it again: Analysis.open(out_dir, model=...)"
                )
            model = AudioModel.from_run(state.run)
        model = _model(model, state.config.device)
        data = AudioData.open(state.data_dir, model, _cache_dir(model, workspace))
        return cls(model, data, workspace, state.config, state)

    # ----- what the steps computed --------------------------------------------------------

    @property
    def state(self) -> AnalysisState:
        """The record of the fit."""
        if self._state is None:
            raise RuntimeError("the analysis has not been fitted yet: call fit() first")
        return self._state

    @property
    def subspaces(self) -> Subspaces:
        """The fitted estimators, ``(method, seed)`` → class label → estimator."""
        if self._subspaces is None:
            self._subspaces = load_subspaces(self.workspace, self.state)
        return self._subspaces

    @property
    def explanations(self) -> Explanations:
        """The explained chunks and their concept heatmaps, per fit."""
        if self._explanations is None:
            self._explanations = Explanations.load(self.workspace, self.state)
        return self._explanations

    @property
    def results(self) -> dict[str, Any]:
        """The evaluation results (``evaluation/results.json``)."""
        if self._results is None:
            self._results = self.workspace.read_results(self.state)
        return self._results

    # ----- the steps --------------------------------------------------------------------------

    def fit(self, *, progress: bool = True) -> AnalysisState:
        """Step 1: fit every method's subspaces per class; write them and ``analysis.json``."""
        start = time.perf_counter()
        plan = plan_layer(self.model, self.config)
        coverage = coverage_warning(
            plan.layer, plan.channels, self.config.n_subspaces, plan.subspace_dim
        )
        if coverage is not None:
            warnings.warn(coverage, UserWarning, stacklevel=2)
        with self._writing():
            self._state, self._subspaces = fit_subspaces(
                self.data, self.workspace, self.config, plan, progress=progress
            )
            self._explanations = self._results = None
            self._record("fit", start)
        return self.state

    def explain(self, *, progress: bool = True) -> Explanations:
        """Step 2: concept heatmaps of the evaluation chunks (``explanations/``)."""
        start = time.perf_counter()
        with self._writing():
            explanations = explain_chunks(self.data, self.state, self.subspaces, progress=progress)
            if is_writer():
                explanations.save(self.workspace, self.state)
            self._explanations, self._results = explanations, None
            self._record("explain", start)
        return explanations

    def evaluate(self, *, progress: bool = True) -> dict[str, Any]:
        """Step 3: every measure, the reference decompositions that validate them, the sanity
        checks and the accuracy (``evaluation/``; see :mod:`audio_concepts.evaluate`)."""
        start = time.perf_counter()
        with self._writing():
            self._results = evaluate_explanations(
                self.data,
                self.workspace,
                self.state,
                self.explanations,
                self.subspaces,
                progress=progress,
            )
            self._record("evaluate", start)
        return self._results

    def summary(self) -> dict[str, Any]:
        """Class-averaged figures per method (see :func:`~audio_concepts.summary.summarize`)."""
        return summarize(self.state, self.results)

    def report(
        self,
        *,
        examples_per_class: int = 2,
        prototypes_per_concept: int = 4,
        progress: bool = True,
        timings: dict[str, float] | None = None,
        notes: Sequence[str] = (),
        extra_sections: Callable[[Report, Path], None] | None = None,
        extra_summary: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Step 4: write ``report.html`` and ``summary.json``; return the summary.

        Parameters
        ----------
        examples_per_class, prototypes_per_concept, progress, notes, extra_sections:
            See :func:`~audio_concepts.analysis_report.build_report`.
        timings:
            Seconds of steps run before the analysis (e.g. the demo's ``synthesise`` and
            ``train``), shown and summarised with the analysis' own.
        extra_summary:
            Entries added to the summary (e.g. the demo's choice of layer and ``K``).

        Returns
        -------
        dict
            The summary written to ``summary.json``, ``timings_s`` holding every step's
            seconds, the report's included.
        """
        for name, value in (
            ("examples_per_class", examples_per_class),
            ("prototypes_per_concept", prototypes_per_concept),
        ):
            if not positive_int(value):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        start = time.perf_counter()
        if timings:  # earlier steps, listed first
            self._state = replace(self.state, timings_s={**timings, **self.state.timings_s})
        explanations = self.explanations  # first: a stale one names the earliest step to redo
        summary = self.summary()
        if not is_writer():  # under torchrun: one report, written by rank 0
            return {**summary, "timings_s": dict(self.state.timings_s), **(extra_summary or {})}
        with self._writing():
            build_report(
                self.model.frontend,
                self.workspace,
                self.state,
                summary,
                explanations,
                self.subspaces,
                examples_per_class=examples_per_class,
                prototypes_per_concept=prototypes_per_concept,
                progress=progress,
                notes=notes,
                extra_sections=extra_sections,
            ).write(self.workspace.report_path)
            self._record("report", start)
            summary = {
                **summary,
                "timings_s": dict(self.state.timings_s),
                **(extra_summary or {}),
            }
            write_json_atomic(self.workspace.summary_path, summary)
        return summary

    def _record(self, step: str, start: float) -> None:
        """Record the seconds since ``start`` as ``step``'s in ``analysis.json``."""
        self._state = self.state.with_timings({step: time.perf_counter() - start})
        if is_writer():
            self.workspace.write_state(self._state)

    def _writing(self) -> AbstractContextManager[Any]:
        """Hold the analysis folder: one writer at a time (a second is refused, named).

        Under torchrun rank 0 holds it for all ranks (the others compute, never write).
        """
        if not is_writer():
            return contextlib.nullcontext()
        return lock_folder(
            self.workspace.root, what="analysis folder", hint="or write to another --out"
        )


# --------------------------------------------------------------------------- one step per call


def fit_concepts(
    run: ModelSource,
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
        Run directory written by ``audio-cnn train`` (its best checkpoint is used), or an
        :class:`~audio_concepts.model.AudioModel`.
    data_dir:
        The dataset the model was trained on (synthetic, GTZAN or folder-per-class layout).
    out_dir:
        Analysis directory; ``analysis.json`` records the model, data, settings and layer so
        that the later steps need only ``out_dir``.
    config:
        Settings; default :class:`AnalysisConfig()`.
    progress:
        Show tqdm progress bars.

    Returns
    -------
    dict
        The analysis record written to ``out_dir/analysis.json``.

    Raises
    ------
    ValueError
        If the data's classes differ from the model's, a class has no training clips, the
        ``eval_split`` has no clips to explain later, or a setting does not fit the model
        (e.g. ``subspace_dim · K`` above the layer's channels; see
        :func:`~audio_concepts.planning.plan_layer`).
    FileNotFoundError
        If the run or the data directory does not exist.
    """
    return Analysis.create(run, data_dir, out_dir, config).fit(progress=progress).to_dict()


def explain_concepts(
    out_dir: str | os.PathLike[str], *, model: AudioModel | None = None, progress: bool = True
) -> Path:
    """Concept heatmaps of evaluation chunks for their true class, for every method and seed.

    Per class the first ``eval_clips_per_class`` clips of the ``eval_split`` (test by
    default) are taken (on synthetic data only those with at least one sound object); each
    contributes its first chunk.

    Parameters
    ----------
    out_dir:
        Directory written by :func:`fit_concepts`.
    model:
        The model under study; default: the run recorded by the fit.
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
    analysis = Analysis.open(out_dir, model=model)
    analysis.explain(progress=progress)
    return analysis.workspace.explanations_dir


def evaluate_concepts(
    out_dir: str | os.PathLike[str], *, model: AudioModel | None = None, progress: bool = True
) -> Path:
    """Every measure of the explanations in ``out_dir``, with references, sanity checks and
    the accuracy.

    See :mod:`audio_concepts.evaluate`.

    Returns
    -------
    pathlib.Path
        ``out_dir/evaluation``, holding ``results.json`` (see
        :func:`~audio_concepts.evaluate.evaluate_explanations`), ``flipping.png`` (mean
        curves), ``sanity.png`` and the accuracy's ``metrics.json`` and confusion matrices.
    """
    analysis = Analysis.open(out_dir, model=model)
    analysis.evaluate(progress=progress)
    return analysis.workspace.evaluation_dir


def explain_and_evaluate(
    out_dir: str | os.PathLike[str], *, model: AudioModel | None = None, progress: bool = True
) -> Path:
    """:func:`explain_concepts` then :func:`evaluate_concepts`; returns the evaluation folder."""
    analysis = Analysis.open(out_dir, model=model)
    analysis.explain(progress=progress)
    analysis.evaluate(progress=progress)
    return analysis.workspace.evaluation_dir


def summarize_concepts(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Class-averaged AUPC and recovery per method from the evaluation in ``out_dir``.

    See :func:`~audio_concepts.summary.summarize`.

    Raises
    ------
    FileNotFoundError
        If ``fit`` or ``evaluate`` has not been run on ``out_dir``.
    """
    workspace = Workspace(Path(out_dir))
    state = workspace.read_state()
    return summarize(state, workspace.read_results(state))


def write_report(
    out_dir: str | os.PathLike[str],
    *,
    model: AudioModel | None = None,
    examples_per_class: int = 2,
    prototypes_per_concept: int = 4,
    progress: bool = True,
    timings: dict[str, float] | None = None,
    notes: Sequence[str] = (),
    extra_sections: Callable[[Report, Path], None] | None = None,
) -> dict[str, Any]:
    """Write ``out_dir/report.html`` and ``out_dir/summary.json`` from the evaluation.

    See :meth:`Analysis.report`; ``model`` defaults to the run recorded by the fit.
    """
    return Analysis.open(out_dir, model=model).report(
        examples_per_class=examples_per_class,
        prototypes_per_concept=prototypes_per_concept,
        progress=progress,
        timings=timings,
        notes=notes,
        extra_sections=extra_sections,
    )


# --------------------------------------------------------------------------- helpers


def _model(model: ModelSource, device: str | None) -> AudioModel:
    """``model`` (or the run it names) on ``device`` (default: CUDA when available)."""
    import torch

    try:
        target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        raise ValueError(
            f"device {device!r} is not a torch device, e.g. 'cpu' or 'cuda:0'"
        ) from None
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asks for CUDA, which this machine lacks; use 'cpu'")
    if isinstance(model, AudioModel):
        return model.to(target)
    return AudioModel.from_run(model, device=target)


def _cache_dir(model: AudioModel, workspace: Workspace) -> Path:
    # An audio_cnn run's own cache, shared with audio_cnn.evaluate; else the analysis'.
    return model.run / "cache" if model.run is not None else workspace.root / "cache"
