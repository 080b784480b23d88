"""The analysis folder on disk: where each step writes, and the record ``fit`` leaves there.

An analysis folder holds (each file written atomically, arrays as ``.npz`` without pickle)::

    analysis.json                       AnalysisState: model, data, layer, settings, timings
    subspaces/<method>/<class>/seed<s>  fitted estimators (.npz + .json, zennit_drsa.save)
    explanations/inputs.npz             the explained chunks: logmel, waveform, labels, clips
    explanations/<method>_seed<s>.npz   heatmaps, layer_relevance, logits
    evaluation/results.json             per-input AUPC and recovery per method and seed
    evaluation/metrics.json, *.png      accuracy and confusion matrices, flipping curves
    report.html, report_media/          the report and the figures and sounds it embeds
    summary.json                        the summary the report shows
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from atomic_io import atomic_path, read_json, write_json_atomic
from audio_concepts.config import AnalysisConfig

__all__ = ["STATE_FORMAT", "AnalysisState", "Workspace"]

STATE_FORMAT = "zennit_drsa.analysis"
"""The ``format`` of ``analysis.json`` (named before the application had its own package)."""

_REQUIRED = ("data_dir", "data_kind", "class_names", "layer", "channels", "subspace_dim",
             "n_locations", "config")  # fmt: skip


@dataclass(frozen=True)
class AnalysisState:
    """What ``fit`` recorded in ``analysis.json``; the later steps need only the folder.

    Attributes
    ----------
    model_name:
        How the report names the model under study.
    run:
        The ``audio_cnn`` run directory of the model, if it is one (later steps load it from
        there when no model is given); ``None`` for another model.
    data_dir, data_kind:
        The audio folder and its layout (``"synthetic"``, ``"gtzan"``, ``"folder"``).
    class_names:
        The model's classes, in logit order.
    layer, channels, subspace_dim, n_locations:
        The decomposed layer, its channels ``d``, the subspaces' ``d_k`` and the map positions
        sampled per chunk (:class:`~audio_concepts.planning.LayerPlan`).
    config:
        The analysis settings.
    fit_clips:
        Per class: clips and vectors the subspaces were fitted on.
    fit_id:
        Identifies this fit; every later step records the fit it was computed from and is
        refused when that is not the folder's current fit (a re-fit, or a killed one).
    timings_s:
        Seconds each step took (``fit``, ``explain``, ``evaluate``, ``report``), as run.
    """

    model_name: str
    run: str | None
    data_dir: str
    data_kind: str
    class_names: tuple[str, ...]
    layer: str
    channels: int
    subspace_dim: int
    n_locations: int
    config: AnalysisConfig
    fit_clips: dict[str, dict[str, int]] = field(default_factory=dict)
    fit_id: str = ""
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def has_residual(self) -> bool:
        """Whether the subspaces leave part of the layer out (``K · d_k < d``)."""
        return self.subspace_dim * self.config.n_subspaces < self.channels

    def with_timings(self, timings: Mapping[str, float]) -> AnalysisState:
        """A copy that records the seconds of the steps in ``timings`` (step → seconds)."""
        return dataclasses.replace(self, timings_s={**self.timings_s, **timings})

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe content of ``analysis.json``."""
        return {
            "format": STATE_FORMAT,
            "model": self.model_name,
            "run": self.run,
            "data_dir": self.data_dir,
            "data_kind": self.data_kind,
            "class_names": list(self.class_names),
            "layer": self.layer,
            "channels": self.channels,
            "subspace_dim": self.subspace_dim,
            "n_locations": self.n_locations,
            "config": self.config.to_dict(),
            "fit_clips": self.fit_clips,
            "fit_id": self.fit_id,
            "timings_s": self.timings_s,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "analysis.json") -> AnalysisState:
        """Inverse of :meth:`to_dict`; a ``ValueError`` naming ``source`` for anything else."""
        if not isinstance(data, Mapping) or data.get("format") != STATE_FORMAT:
            raise ValueError(f"{source} was not written by zennit-drsa fit")
        missing = [key for key in _REQUIRED if key not in data]
        if missing:
            raise ValueError(f"{source} lacks {missing}: run 'zennit-drsa fit' again")
        try:
            return cls(
                model_name=str(data.get("model") or data.get("run") or "model"),
                run=data.get("run"),
                data_dir=str(data["data_dir"]),
                data_kind=str(data["data_kind"]),
                class_names=tuple(data["class_names"]),
                layer=str(data["layer"]),
                channels=int(data["channels"]),
                subspace_dim=int(data["subspace_dim"]),
                n_locations=int(data["n_locations"]),
                config=AnalysisConfig.from_dict(data["config"]),
                fit_clips=dict(data.get("fit_clips") or {}),
                fit_id=str(data.get("fit_id", "")),
                timings_s=dict(data.get("timings_s") or {}),
            )
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"{source} is damaged ({error}): run 'zennit-drsa fit' again"
            ) from None


@dataclass(frozen=True)
class Workspace:
    """The paths of one analysis folder, and reading and writing what lies there.

    Attributes
    ----------
    root:
        The analysis folder.
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # ----- paths ---------------------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.root / "analysis.json"

    def subspace_path(self, method: str, class_name: str, seed: int) -> Path:
        """Stem of a fitted estimator's files (``.npz`` and ``.json``)."""
        return self.root / "subspaces" / method / class_name / f"seed{seed}"

    @property
    def explanations_dir(self) -> Path:
        return self.root / "explanations"

    @property
    def inputs_path(self) -> Path:
        return self.explanations_dir / "inputs.npz"

    def explanation_path(self, method: str, seed: int) -> Path:
        return self.explanations_dir / f"{method}_seed{seed}.npz"

    @property
    def evaluation_dir(self) -> Path:
        return self.root / "evaluation"

    @property
    def results_path(self) -> Path:
        return self.evaluation_dir / "results.json"

    @property
    def report_path(self) -> Path:
        return self.root / "report.html"

    @property
    def media_dir(self) -> Path:
        return self.root / "report_media"

    @property
    def summary_path(self) -> Path:
        return self.root / "summary.json"

    # ----- reading and writing ----------------------------------------------------------------

    def read_state(self) -> AnalysisState:
        """The record of ``fit``; a one-line error if it is missing or damaged."""
        if not self.state_path.is_file():
            raise FileNotFoundError(
                f"{self.state_path} does not exist: run "
                f"'zennit-drsa fit RUN DATA --out {self.root}' first"
            )
        data = read_json(self.state_path, what="an analysis record")
        return AnalysisState.from_dict(data, str(self.state_path))

    def write_state(self, state: AnalysisState) -> None:
        write_json_atomic(self.state_path, state.to_dict())

    def forget_fit(self) -> None:
        """Remove the record of the fit before a new one overwrites its subspaces.

        Until the new fit finishes, the folder has no fit: the later steps refuse to run
        instead of mixing old and new subspaces (a killed re-fit leaves it so).
        """
        self.state_path.unlink(missing_ok=True)

    def read_results(self, state: AnalysisState) -> dict[str, Any]:
        """``evaluation/results.json`` of ``state``'s fit, written by the evaluate step."""
        if not self.results_path.is_file():
            raise FileNotFoundError(
                f"{self.results_path} does not exist: run 'zennit-drsa evaluate {self.root}' first"
            )
        results = read_json(self.results_path, what="evaluation results")
        self.check_fit(results.get("fit_id", "") if isinstance(results, dict) else None, state,
                       self.results_path, "evaluate")  # fmt: skip
        return results

    def check_fit(self, fit_id: object, state: AnalysisState, path: Path, step: str) -> None:
        """Refuse what ``step`` wrote at ``path`` unless it came from ``state``'s fit."""
        if fit_id != state.fit_id:
            raise ValueError(
                f"{path} was computed from an earlier fit of this folder, not from the current "
                f"one (layer {state.layer}, K = {state.config.n_subspaces}): run "
                f"'zennit-drsa {step} {self.root}' again"
            )

    @staticmethod
    def save_arrays(path: Path, **arrays: np.ndarray) -> None:
        """``path`` as an ``.npz`` of ``arrays``, written atomically."""
        with atomic_path(path) as tmp, open(tmp, "wb") as file:
            np.savez(file, **arrays)

    def load_arrays(self, path: Path) -> dict[str, np.ndarray]:
        """The arrays of an ``.npz`` written by the explain step (never unpickled)."""
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} does not exist: run 'zennit-drsa explain {self.root}' first"
            )
        with np.load(path, allow_pickle=False) as file:
            return {name: file[name] for name in file.files}
