"""Settings of a concept analysis: :class:`AnalysisConfig` (JSON-safe, validated on creation)."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["EVAL_SPLITS", "METHODS", "SPLIT_NAMES", "SUBSETS", "AnalysisConfig", "positive_int"]

METHODS = ("drsa", "prca", "dsa", "random")
"""Subspace methods compared by the analysis; ``"standard"`` (the LRP heatmap) is always added."""

_SEEDED = {"drsa", "dsa", "random"}  # PRCA is deterministic
_ORDERINGS = ("round_robin", "union", "positive_sum")
_SCORES = ("logit", "relu_logit")
SPLIT_NAMES = {"test": "test", "val": "validation"}
"""``eval_split`` → the split's name in words (for reports)."""

EVAL_SPLITS = tuple(SPLIT_NAMES)

SUBSETS = ("random", "first")
"""How clips are taken when only some are used: a seeded random sample, or the first ones."""


@dataclass(frozen=True)
class AnalysisConfig:
    """Settings of a concept analysis (JSON-safe; validated on construction).

    Attributes
    ----------
    layer:
        Layer whose output the subspaces decompose; ``None``: the model's default layer
        (:attr:`AudioModel.default_layer <audio_concepts.model.AudioModel.default_layer>`;
        for an ``audio_cnn`` run the ReLU output of the 4th convolutional block, the
        reference pipeline's layer).
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
        each). The default 100 is sized so that on the demo's task the 95 % CI of DRSA's
        paired recovery difference against each baseline has a half-width of at most about
        0.02 (measured: 0.0165–0.0205 with 90 per class, pooled over three seeds).
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
        (:attr:`LogMelFrontend.floor <audio_concepts.frontend.LogMelFrontend.floor>`).
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
    subset:
        Which clips ``fit_clips_per_class`` and ``eval_clips_per_class`` take from a class:
        ``"random"``, a random sample seeded by the first of ``seeds`` (stratified by
        ``stratify``); ``"first"``, the first clips in path order (as before 0.2; a
        generated task's files are an i.i.d. sample already).
    stratify:
        A regular expression over a clip's file name whose first group (or whole match)
        names a stratum the random subsets are balanced over, e.g. ``"^([a-z]+)_"`` for
        speaker- or accent-prefixed names; ``None``: no strata.
    selectivity_fraction:
        Area of the input removed per concept by concept selectivity, in (0, 1]
        (:func:`~zennit_drsa.evaluation.concept_selectivity`).
    sanity_inputs:
        Explained inputs (the first ones) the model-randomisation sanity checks run on; 0
        skips them.
    min_objects:
        On synthetic data, only clips with at least this many sound objects are explained and
        evaluated. The default 2 makes every evaluated input count for recovery and for the
        validation of measures (with one object the oracle split equals the standard map),
        and compares methods on the clips where there is something to disentangle.
    references:
        On synthetic data, also score the reference decompositions of known quality (oracle,
        random, entangled; maps and subspaces) that validate the measures (METHOD.md §5).
    """

    layer: str | None = None
    n_subspaces: int = 4
    subspace_dim: int | None = None
    n_locations: int = 20
    fit_clips_per_class: int | None = 200
    eval_clips_per_class: int = 100
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
    subset: str = "random"
    stratify: str | None = None
    selectivity_fraction: float = 0.1
    sanity_inputs: int = 16
    min_objects: int = 2
    references: bool = True

    def __post_init__(self) -> None:
        problems = []
        for name in ("methods", "seeds", "patch_size"):
            value = getattr(self, name)
            if isinstance(value, list | tuple):
                object.__setattr__(self, name, tuple(value))
            else:
                problems.append(f"{name} must be a list, got {value!r}")
                object.__setattr__(self, name, ())
        positive = ("n_subspaces", "n_locations", "eval_clips_per_class", "max_iter")
        for name in (*positive, "n_restarts", "batch_size"):
            if not positive_int(getattr(self, name)):
                problems.append(f"{name} must be a positive int, got {getattr(self, name)!r}")
        for name in ("subspace_dim", "fit_clips_per_class"):
            value = getattr(self, name)
            if value is not None and not positive_int(value):
                problems.append(f"{name} must be a positive int or None, got {value!r}")
        if self.layer is not None and (not isinstance(self.layer, str) or not self.layer):
            problems.append(f"layer must be a module name or None, got {self.layer!r}")
        unknown = [m for m in self.methods if not isinstance(m, str) or m not in METHODS]
        if unknown or not self.methods or len(set(self.methods)) != len(self.methods):
            problems.append(f"methods must be distinct names from {METHODS}, got {self.methods}")
        if len(self.patch_size) != 2 or not all(positive_int(n) for n in self.patch_size):
            problems.append(f"patch_size must be two positive ints, got {self.patch_size!r}")
        if not (_number(self.tol) and self.tol >= 0):
            problems.append(f"tol must be a number >= 0, got {self.tol!r}")
        for name, choices in (
            ("ordering", _ORDERINGS),
            ("eval_split", EVAL_SPLITS),
            ("score", _SCORES),
            ("subset", SUBSETS),
        ):
            if not isinstance(getattr(self, name), str) or getattr(self, name) not in choices:
                problems.append(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        for name in ("composite", "device"):
            value = getattr(self, name)
            if not (value is None and name == "device") and not (isinstance(value, str) and value):
                problems.append(f"{name} must be a non-empty string, got {value!r}")
        if self.stratify is not None:
            problems.extend(_check_pattern(self.stratify))
        fraction = self.selectivity_fraction
        if not (_number(fraction) and 0 < fraction <= 1):
            problems.append(f"selectivity_fraction must be in (0, 1], got {fraction!r}")
        if not _count(self.sanity_inputs):
            problems.append(f"sanity_inputs must be an int >= 0, got {self.sanity_inputs!r}")
        if not positive_int(self.min_objects):
            problems.append(f"min_objects must be a positive int, got {self.min_objects!r}")
        if not isinstance(self.references, bool):
            problems.append(f"references must be true or false, got {self.references!r}")
        if self.removal is not None and not (_number(self.removal) and math.isfinite(self.removal)):
            problems.append(f"removal must be a finite number or None, got {self.removal!r}")
        if not self.seeds or not all(_count(seed) for seed in self.seeds):
            problems.append(f"seeds must be non-negative ints (at least one), got {self.seeds}")
        elif len(set(self.seeds)) != len(self.seeds):
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
        if not isinstance(data, dict):
            raise ValueError(f"analysis settings must be a JSON object, got {data!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown analysis settings {unknown}; known: {sorted(known)}")
        return cls(**data)

    def method_seeds(self, method: str) -> tuple[int, ...]:
        """Seeds a method is fitted with (one for the deterministic PRCA)."""
        return self.seeds if method in _SEEDED else self.seeds[:1]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_pattern(pattern: Any) -> list[str]:
    if not isinstance(pattern, str) or not pattern:
        return [f"stratify must be a regular expression or None, got {pattern!r}"]
    try:
        re.compile(pattern)
    except re.error as error:
        return [f"stratify {pattern!r} is not a regular expression ({error})"]
    return []


def positive_int(value: Any) -> bool:
    """Whether ``value`` is an ``int`` (not a ``bool``) above 0."""
    return _count(value) and value > 0


def _count(value: Any) -> bool:
    """Whether ``value`` is an ``int`` (not a ``bool``) of at least 0."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
