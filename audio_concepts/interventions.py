"""Exact interventions on synthetic clips: remove sound objects from the waveform.

A synthetic clip is a sum of known parts (:class:`audio_cnn.synthetic.SyntheticClip`): the
mix equals ``Σ_j source_j + background``. Removing object ``j`` is therefore exact, with no
model of the audio in between: ``mix − source_j``. This module builds those interventions
for the explained inputs of an analysis (:func:`build_interventions`) and uses them three
ways (METHOD §5):

* :func:`task_fitness`: does removing every object remove the true class's logit? A flipping
  measure on a class logit means something only on a task where it does.
* :func:`interventional_scores`: interventional concept recovery, the drop of every concept's
  layer relevance ``R_k`` when each object is removed (:func:`layer_relevance_fn` computes
  ``R_k`` and the logits), scored by
  :func:`~zennit_drsa.evaluation.interventional_recovery`.
* :func:`fit_layer_references`: decompositions of known quality at the layer, to validate a
  measure: the oracle (one subspace per object, from each object played alone), random
  subspaces, and one subspace holding the whole layer.

All waveforms are cut exactly as the explained chunk: samples ``[0, chunk_samples)`` of the
clip (zero-padded when the clip is shorter; later chunks, for the reference fits, as
:meth:`AudioData.chunks <audio_concepts.data.AudioData.chunks>` places them), divided by the
peak ``max |·|`` of the clip's whole mix, as :func:`audio_cnn.audio_io.peak_normalize` with
``reference=`` divides a crop.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import Subset
from tqdm.auto import tqdm
from zennit.core import Composite

from audio_cnn.audio_io import peak_normalize
from audio_concepts.data import FIT_CHUNKS, AudioData
from audio_concepts.model import AudioModel
from audio_concepts.sharding import computed_everywhere, gather_parts, share, world
from audio_concepts.workspace import AnalysisState
from zennit_drsa import DRSAAttributor, collect
from zennit_drsa.composites import audio_composite
from zennit_drsa.context import target_gradient
from zennit_drsa.estimators import OracleSubspaces, RandomSubspaces, SubspaceEstimator
from zennit_drsa.evaluation import InterventionalRecoveryScore, interventional_recovery

__all__ = [
    "FITNESS_THRESHOLD",
    "REFERENCE_KINDS",
    "Interventions",
    "LayerReferences",
    "LayerRelevance",
    "build_interventions",
    "fit_layer_references",
    "fitness_logits",
    "interventional_scores",
    "layer_relevance_fn",
    "summarize_fitness",
    "task_fitness",
]

FITNESS_THRESHOLD = 0.9
"""Share of a class's clips that must pass (logit at least halved when every object is removed)
for the task to count as fit for flipping measures on that class's logit. Fixed in advance,
before any method's figures were looked at, so that it cannot be tuned to a result."""

REFERENCE_KINDS = ("oracle_subspaces", "random_subspaces", "entangled_subspace")
"""The decompositions :func:`fit_layer_references` fits, best known quality first."""

_RANK_TOLERANCE = 1e-6  # singular values below this fraction of the largest count as 0

RelevanceAndLogits = Callable[[torch.Tensor, torch.Tensor], tuple[Any, Any]]
"""``(x (N, C, H, W), targets (N,)) -> (R (N, K), logits (N, n_classes))``."""


# ----- building the interventions ---------------------------------------------------------------


@dataclass(frozen=True)
class Interventions:
    """The explained inputs of synthetic clips, with each sound object removed in turn.

    Rows hold waveforms and their model inputs; every explained input ``i`` owns one mix row,
    one row per present object with that object removed, and one background row (all objects
    removed). Removal is exact (``mix − source_j``) and the remaining sounds keep the level
    they have in the mix: the rows are NOT peak-normalised again. Re-normalising would raise
    the level of everything left and so change the input by more than the removed object; the
    drop of a relevance or logit would then mix the object's absence with a gain change.

    Attributes
    ----------
    clips:
        ``(N,)`` clip paths relative to the audio folder, in the order given.
    labels:
        ``(N,)`` int64 class of each clip (its true class).
    object_names:
        Per input, the names of its ``J_i`` present objects, in the class's object order.
    waveform:
        ``(R, T)`` float32 waveforms, ``T = chunk_samples``, in the units of the model's input
        waveforms (the clip's whole mix has peak 1).
    logmel:
        ``(R, 1, n_mels, frames)`` float32 model inputs of the rows (``model.input_of``), on
        the CPU.
    mix_row:
        ``(N,)`` int64 row of each input's mix (its explained chunk, regenerated).
    removal_rows:
        Per input, ``(J_i,)`` int64 rows of ``mix − source_j``, in ``object_names`` order.
    background_row:
        ``(N,)`` int64 row of each input's ``mix − Σ_j source_j`` (distractors and noise).
    """

    clips: tuple[str, ...]
    labels: np.ndarray
    object_names: tuple[tuple[str, ...], ...]
    waveform: torch.Tensor
    logmel: torch.Tensor
    mix_row: np.ndarray
    removal_rows: tuple[np.ndarray, ...]
    background_row: np.ndarray

    def __post_init__(self) -> None:
        n, rows = len(self.clips), self.logmel.shape[0]
        lengths = {
            "labels": len(self.labels),
            "object_names": len(self.object_names),
            "mix_row": len(self.mix_row),
            "removal_rows": len(self.removal_rows),
            "background_row": len(self.background_row),
        }
        wrong = {name: length for name, length in lengths.items() if length != n}
        if wrong:
            raise ValueError(f"Interventions: {n} clips but lengths {wrong}")
        if self.waveform.shape[0] != rows:
            raise ValueError(
                f"Interventions: {self.waveform.shape[0]} waveform rows but {rows} logmel rows"
            )
        for i, (names, removals) in enumerate(
            zip(self.object_names, self.removal_rows, strict=True)
        ):
            if len(removals) != len(names):
                raise ValueError(
                    f"Interventions: input {i} has {len(names)} objects but {len(removals)} "
                    "removal rows"
                )
        every = np.concatenate([self.mix_row, self.background_row, *self.removal_rows])
        if every.size and (every.min() < 0 or every.max() >= rows):
            raise ValueError(f"Interventions: row indices outside 0..{rows - 1}")

    @property
    def n_inputs(self) -> int:
        """Number of explained inputs ``N``."""
        return len(self.clips)

    @property
    def n_objects(self) -> np.ndarray:
        """``(N,)`` int64 number of objects ``J_i`` of each input."""
        return np.array([len(names) for names in self.object_names], dtype=np.int64)


def build_interventions(
    data: AudioData, clips: Sequence[str], *, batch_size: int = 32
) -> Interventions | None:
    """Regenerate each clip and remove its sound objects from the explained chunk.

    The mix row is the regenerated mix, not the decoded WAV: it equals the explained input up
    to the WAV's rounding (16 bits for the toy data), and every removal is a difference from
    exactly that mix. Shapes and units: see :class:`Interventions`.

    Parameters
    ----------
    data:
        The audio folder, opened for the model under study.
    clips:
        The explained inputs' clip paths relative to the folder
        (``Explanations.inputs["clips"]``); each stands for the clip's first chunk.
    batch_size:
        Waveforms per front-end call (on the model's device).

    Returns
    -------
    Interventions or None
        ``None`` unless the data are synthetic (only they know their objects).

    Raises
    ------
    ValueError
        If the task's sample rate is not the front-end's (the regenerated clips would not be
        the audio the model heard).
    """
    if data.kind != "synthetic":
        return None
    frontend = data.model.frontend
    chunk_samples = int(frontend.chunk_samples)
    waves: list[np.ndarray] = []
    labels, names, mix_row, removal_rows, background_row = [], [], [], [], []
    for path in clips:
        clip = data.synthetic_clip(path)
        _check_rate(clip, frontend.sample_rate)
        mix = clip.waveform.astype(np.float64)
        sources = clip.sources.astype(np.float64)
        signals = [mix, *(mix - source for source in sources), mix - sources.sum(axis=0)]
        first = len(waves)
        waves.extend(_chunk(signal, clip.waveform, 0, chunk_samples) for signal in signals)
        labels.append(int(clip.label))
        names.append(tuple(clip.object_names))
        mix_row.append(first)
        removal_rows.append(np.arange(first + 1, first + 1 + len(sources), dtype=np.int64))
        background_row.append(first + 1 + len(sources))
    waveform = torch.from_numpy(np.stack(waves)) if waves else torch.zeros(0, chunk_samples)
    return Interventions(
        clips=tuple(str(path) for path in clips),
        labels=np.array(labels, dtype=np.int64),
        object_names=tuple(names),
        waveform=waveform,
        logmel=_model_inputs(data.model, waveform, batch_size),
        mix_row=np.array(mix_row, dtype=np.int64),
        removal_rows=tuple(removal_rows),
        background_row=np.array(background_row, dtype=np.int64),
    )


def _check_rate(clip: Any, sample_rate: int) -> None:
    if clip.sample_rate != sample_rate:
        raise ValueError(
            f"clip {clip.clip_id} is generated at {clip.sample_rate} Hz but the model's "
            f"front-end reads {sample_rate} Hz; the interventions would not be the audio the "
            "model hears"
        )


def _chunk(signal: np.ndarray, clip: np.ndarray, start: int, chunk_samples: int) -> np.ndarray:
    """``signal[start:start + chunk_samples]`` divided by the whole clip's peak, zero-padded,
    float32: the cut of :class:`~audio_cnn.chunks.EvenChunkDataset`."""
    piece = peak_normalize(signal[start : start + chunk_samples], reference=clip)
    chunk = np.zeros(chunk_samples, dtype=np.float32)
    chunk[: piece.shape[0]] = piece
    return chunk


def _model_inputs(model: AudioModel, waveform: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``model.input_of`` of ``(R, T)`` waveforms in batches on its device, back on the CPU."""
    if waveform.shape[0] == 0:
        silence = torch.zeros(1, waveform.shape[1], device=model.device)
        return model.input_of(silence).cpu()[:0]
    device = model.device
    return torch.cat([model.input_of(w.to(device)).cpu() for w in waveform.split(batch_size)])


# ----- task fitness -----------------------------------------------------------------------------


def task_fitness(
    data_or_model: AudioData | AudioModel | nn.Module,
    interventions: Interventions,
    labels: Sequence[int] | np.ndarray | None = None,
    *,
    threshold: float = FITNESS_THRESHOLD,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Whether removing every object removes the true class's logit, per class (JSON-safe).

    METHOD §5: a flipping measure on a class's logit only means something if removing that
    class's evidence removes its logit. Per input, the target logit on the mix (``before``)
    and on the background, every object removed (``after``). An input passes when the logit
    falls by at least half, ``after ≤ before / 2`` with ``before > 0``. An input with
    ``before ≤ 0`` does not pass (its class has no positive evidence to remove) and is counted
    in ``n_nonpositive``. The two steps are also offered apart, for inputs scored in shares:
    :func:`fitness_logits` and :func:`summarize_fitness`.

    Parameters
    ----------
    data_or_model:
        The audio folder (its model is used), the model, or the network itself (log-mel →
        logits).
    interventions:
        From :func:`build_interventions`.
    labels:
        ``(N,)`` target class per input; default: the clips' true classes.
    threshold:
        Share of a class's inputs that must pass; the task is ``fit`` when every class with
        inputs reaches it. Default :data:`FITNESS_THRESHOLD` (0.9), fixed in advance.
    batch_size:
        Inputs per forward pass.

    Returns
    -------
    dict
        See :func:`summarize_fitness`.
    """
    _, _, class_names = _network_of(data_or_model)
    before, after = fitness_logits(data_or_model, interventions, labels, batch_size=batch_size)
    return summarize_fitness(
        interventions.clips,
        _targets(interventions, labels),
        before,
        after,
        class_names,
        threshold=threshold,
    )


def fitness_logits(
    data_or_model: AudioData | AudioModel | nn.Module,
    interventions: Interventions,
    labels: Sequence[int] | np.ndarray | None = None,
    *,
    batch_size: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """Per input the target logit on the mix and with every object removed.

    Parameters are those of :func:`task_fitness`. Returns ``(before, after)``, two ``(N,)``
    float64 arrays in logit units.
    """
    network, device, _ = _network_of(data_or_model)
    targets = _targets(interventions, labels)
    rows = np.concatenate([interventions.mix_row, interventions.background_row])
    logits = _logits(network, interventions.logmel[torch.from_numpy(rows)], device, batch_size)
    n = interventions.n_inputs
    picked = logits[np.arange(2 * n), np.concatenate([targets, targets])]
    return picked[:n], picked[n:]


def summarize_fitness(
    clips: Sequence[str],
    targets: Sequence[int] | np.ndarray,
    before: Sequence[float] | np.ndarray,
    after: Sequence[float] | np.ndarray,
    class_names: Sequence[str] | None = None,
    *,
    threshold: float = FITNESS_THRESHOLD,
) -> dict[str, Any]:
    """The task-fitness verdict of per-input logits (see :func:`task_fitness`).

    Parameters
    ----------
    clips, targets:
        ``(N,)`` clip paths and target classes.
    before, after:
        ``(N,)`` target logits on the mix and with every object removed
        (:func:`fitness_logits`).
    class_names:
        Names of the classes (keys of ``classes``); default: the class indices as text.
    threshold:
        As for :func:`task_fitness`.

    Returns
    -------
    dict
        ``threshold``, ``criterion``, ``fit`` (bool), ``n``, ``n_passing``, ``share_passing``
        (``None`` without inputs), ``n_nonpositive``, ``classes`` (class name → ``label``,
        ``n``, ``n_passing``, ``share_passing``, ``n_nonpositive``, ``mean_before``,
        ``mean_after``; classes with inputs only) and ``inputs`` (per input: ``clip``,
        ``label``, ``before``, ``after``, ``passes``), logits in logit units.
    """
    targets = np.asarray(targets, dtype=np.int64)
    before, after = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    n = len(targets)
    positive = before > 0
    passes = positive & (after <= before / 2)
    classes: dict[str, Any] = {}
    for label in np.unique(targets):
        mine = targets == label
        name = class_names[label] if class_names is not None else str(int(label))
        classes[name] = {
            "label": int(label),
            "n": int(mine.sum()),
            "n_passing": int(passes[mine].sum()),
            "share_passing": float(passes[mine].mean()),
            "n_nonpositive": int((~positive[mine]).sum()),
            "mean_before": float(before[mine].mean()),
            "mean_after": float(after[mine].mean()),
        }
    return {
        "threshold": float(threshold),
        "criterion": "after <= before / 2 with before > 0 (target logit: mix vs all objects "
        "removed)",
        "fit": bool(classes) and all(c["share_passing"] >= threshold for c in classes.values()),
        "n": n,
        "n_passing": int(passes.sum()),
        "share_passing": float(passes.mean()) if n else None,
        "n_nonpositive": int((~positive).sum()),
        "classes": classes,
        "inputs": [
            {
                "clip": str(clip),
                "label": int(label),
                "before": float(b),
                "after": float(a),
                "passes": bool(p),
            }
            for clip, label, b, a, p in zip(clips, targets, before, after, passes, strict=True)
        ],
    }


def _network_of(
    data_or_model: AudioData | AudioModel | nn.Module,
) -> tuple[nn.Module, torch.device, tuple[str, ...] | None]:
    model = data_or_model.model if isinstance(data_or_model, AudioData) else data_or_model
    if isinstance(model, AudioModel):
        return model.network, model.device, model.class_names
    if isinstance(model, nn.Module):
        return model, _device_of(model), None
    raise TypeError(
        f"expected AudioData, AudioModel or a torch network, got {type(data_or_model).__name__}"
    )


def _device_of(network: nn.Module) -> torch.device:
    parameter = next(network.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _targets(interventions: Interventions, labels: Any) -> np.ndarray:
    if labels is None:
        return np.asarray(interventions.labels, dtype=np.int64)
    targets = np.asarray(labels)
    if targets.shape != (interventions.n_inputs,) or targets.dtype.kind not in "iu":
        raise ValueError(
            f"labels must be ({interventions.n_inputs},) integer classes, one per input; got "
            f"shape {targets.shape} and dtype {targets.dtype}"
        )
    return targets.astype(np.int64)


def _logits(
    network: nn.Module, inputs: torch.Tensor, device: torch.device, batch_size: int
) -> np.ndarray:
    network.eval()
    with torch.no_grad():
        out = [network(x.to(device)).double().cpu() for x in inputs.split(batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0))


# ----- concept relevances at the layer ----------------------------------------------------------


class LayerRelevance:
    """Concept relevances ``R_k`` at a layer and the logits, for batches of model inputs.

    Called as ``relevance(x, targets)`` it returns the ``(N, K)`` concept relevances (the
    residual dropped), the contract of ``relevance_fn`` in
    :func:`~zennit_drsa.evaluation.concept_selectivity`; :meth:`relevance_and_logits` adds the
    logits (for :func:`interventional_scores`), :meth:`propagate` keeps the residual. One
    :class:`~zennit_drsa.DRSAAttributor` is built once and registers the composite for each
    call only, so the object can be called any number of times and leaves the network bare
    in between. Only the layer relevances are computed (``mixing`` with no rows): one forward
    pass and one backward pass down to the layer.

    Parameters
    ----------
    network:
        Log-mel → logits; put in eval mode on every call.
    composite:
        The LRP composite (not registered on the network).
    layer:
        Name of the decomposed layer.
    per_class_estimators:
        Class label → fitted estimator (all with the same ``K``), or one estimator for all.
    device:
        Where the passes run; default: the network's device.
    context:
        The context mode the estimators were fitted with (``"exact"`` in the analysis).

    Attributes
    ----------
    n_subspaces:
        ``K``.
    """

    def __init__(
        self,
        network: nn.Module,
        composite: Composite,
        layer: str,
        per_class_estimators: Mapping[int, SubspaceEstimator] | SubspaceEstimator,
        *,
        device: torch.device | str | None = None,
        context: str = "exact",
    ) -> None:
        self.network = network
        self.device = torch.device(device) if device is not None else _device_of(network)
        self.attributor = DRSAAttributor(
            network, composite, layer, per_class_estimators, context=context
        )
        self.n_subspaces = self.attributor.subspaces.n_subspaces

    def propagate(
        self, x: torch.Tensor, targets: torch.Tensor | np.ndarray | Sequence[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, K + 1)`` float64 layer relevances (residual last) and ``(N, n_classes)``
        float64 logits, on the CPU.

        ``targets`` are the ``(N,)`` classes explained (and whose subspaces are used), on
        any device; one int: the same class for all; ``None``: each input's predicted class.
        """
        self.network.eval()
        x = x.to(self.device)
        if targets is None:

            def classes(output: torch.Tensor) -> torch.Tensor:
                return output.argmax(dim=1)

            def attr_output(output: torch.Tensor) -> torch.Tensor:
                return target_gradient(output.argmax(dim=1), output)

        else:
            if not isinstance(targets, torch.Tensor):
                targets = torch.as_tensor(np.asarray(targets))
            classes = targets.to(device=self.device, dtype=torch.long)
            if classes.dim() == 0:
                classes = classes.expand(x.shape[0])
            if classes.shape != (x.shape[0],):
                raise ValueError(
                    f"targets must be ({x.shape[0]},), one class per input; got "
                    f"{tuple(classes.shape)}"
                )

            def attr_output(output: torch.Tensor) -> torch.Tensor:
                return target_gradient(classes, output)

        mixing = torch.zeros(0, self.n_subspaces + 1, device=self.device)
        with torch.enable_grad():
            result = self.attributor.propagate(x, attr_output, mixing=mixing, classes=classes)
        return result.layer_relevance.double().cpu(), result.output.double().cpu()

    def relevance_and_logits(
        self, x: torch.Tensor, targets: torch.Tensor | np.ndarray | Sequence[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, K)`` concept relevances and ``(N, n_classes)`` logits (float64, CPU)."""
        relevance, logits = self.propagate(x, targets)
        return relevance[:, :-1], logits

    def __call__(
        self, x: torch.Tensor, targets: torch.Tensor | np.ndarray | Sequence[int] | None = None
    ) -> torch.Tensor:
        """``(N, K)`` float64 concept relevances ``R_k`` on the CPU."""
        return self.propagate(x, targets)[0][:, :-1]


def layer_relevance_fn(
    network: nn.Module,
    composite: Composite,
    layer: str,
    per_class_estimators: Mapping[int, SubspaceEstimator] | SubspaceEstimator,
    *,
    device: torch.device | str | None = None,
) -> LayerRelevance:
    """A :class:`LayerRelevance`: ``fn(x, targets) -> (N, K)`` concept relevances at
    ``layer``, with ``fn.relevance_and_logits`` for :func:`interventional_scores`."""
    return LayerRelevance(network, composite, layer, per_class_estimators, device=device)


# ----- interventional recovery ------------------------------------------------------------------


def interventional_scores(
    relevance_fn: LayerRelevance | RelevanceAndLogits,
    interventions: Interventions,
    labels: Sequence[int] | np.ndarray | None = None,
    *,
    batch_size: int = 32,
    device: torch.device | str | None = None,
) -> list[InterventionalRecoveryScore | None]:
    """Interventional concept recovery of every input (METHOD §5).

    Per input ``i`` with ``J_i`` objects, for its target class ``c``::

        drops[k, j] = R_k(mix) − R_k(mix − source_j),
        logit_drops[j] = logit_c(mix) − logit_c(mix − source_j),

    scored by :func:`~zennit_drsa.evaluation.interventional_recovery`.

    Parameters
    ----------
    relevance_fn:
        A :class:`LayerRelevance` (its :meth:`~LayerRelevance.relevance_and_logits` is used),
        or any callable ``(x (N, 1, M, F), targets (N,) int64) -> (R (N, K), logits
        (N, n_classes))`` (tensors or arrays).
    interventions:
        From :func:`build_interventions`.
    labels:
        ``(N,)`` target class per input; default: the clips' true classes.
    batch_size:
        Rows per ``relevance_fn`` call; all inputs' mix and removal rows are batched
        together (background rows are not needed).
    device:
        Where the batches are sent before the call; default: left on the CPU (a
        :class:`LayerRelevance` moves them to its own device).

    Returns
    -------
    list
        Per input its :class:`~zennit_drsa.evaluation.InterventionalRecoveryScore`, or
        ``None`` for an input without objects.
    """
    if isinstance(relevance_fn, LayerRelevance):
        relevance_fn = relevance_fn.relevance_and_logits
    targets = _targets(interventions, labels)
    n_objects = interventions.n_objects
    scored = np.flatnonzero(n_objects > 0)
    rows = np.concatenate(
        [np.zeros(0, dtype=np.int64)]
        + [np.r_[interventions.mix_row[i], interventions.removal_rows[i]] for i in scored]
    ).astype(np.int64)
    row_targets = np.repeat(targets[scored], n_objects[scored] + 1)
    relevance, logits = _relevance_of_rows(
        relevance_fn, interventions.logmel, rows, row_targets, batch_size, device
    )
    scores: list[InterventionalRecoveryScore | None] = [None] * interventions.n_inputs
    start = 0
    for i in scored:
        target, count = targets[i], n_objects[i]
        block = slice(start, start + count + 1)
        start += count + 1
        r, logit = relevance[block], logits[block, target]
        drops = r[0][:, None] - r[1:].T
        scores[i] = interventional_recovery(drops, logit[0] - logit[1:])
    return scores


def _relevance_of_rows(
    relevance_fn: RelevanceAndLogits,
    logmel: torch.Tensor,
    rows: np.ndarray,
    targets: np.ndarray,
    batch_size: int,
    device: torch.device | str | None,
) -> tuple[np.ndarray, np.ndarray]:
    relevances, logits = [], []
    for start in range(0, len(rows), batch_size):
        index = torch.from_numpy(rows[start : start + batch_size])
        x = logmel[index]
        y = torch.from_numpy(targets[start : start + batch_size])
        if device is not None:
            x, y = x.to(device), y.to(device)
        r, out = relevance_fn(x, y)
        relevances.append(_as_array(r, "relevances", len(index), 2))
        logits.append(_as_array(out, "logits", len(index), 2))
    if not relevances:
        return np.zeros((0, 0)), np.zeros((0, 0))
    return np.concatenate(relevances), np.concatenate(logits)


def _as_array(values: Any, what: str, n_rows: int, ndim: int) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().to(device="cpu", dtype=torch.float64).numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != ndim or array.shape[0] != n_rows:
        raise ValueError(
            f"relevance_fn returned {what} of shape {array.shape} for a batch of {n_rows}; "
            "expected (relevances (N, K), logits (N, n_classes))"
        )
    return array


# ----- decompositions of known quality at the layer ---------------------------------------------


class LayerReferences(NamedTuple):
    """What :func:`fit_layer_references` returns.

    Attributes
    ----------
    estimators:
        Kind (:data:`REFERENCE_KINDS`) → class label → fitted estimator; empty when the
        references could not be fitted (``description["skipped"]`` says why).
    description:
        JSON-safe: layer, ``n_objects`` ``K_o``, ``subspace_dim`` ``d_o``, ``channels``
        ``d``, seed, and per class its objects, clips, vectors per object (alone) and
        vectors of the mix.
    """

    estimators: dict[str, dict[int, SubspaceEstimator]]
    description: dict[str, Any]


def fit_layer_references(
    data: AudioData,
    state: AnalysisState,
    composite: Composite | None = None,
    *,
    seed: int | None = None,
    progress: bool = False,
) -> LayerReferences:
    """Decompositions of the layer of known quality, per class, for validating a measure.

    Per class ``c`` with ``K_o`` objects (all classes must have as many) and its training
    clips (:meth:`AudioData.train_clips <audio_concepts.data.AudioData.train_clips>`):

    * ``"oracle_subspaces"``: every present object's source played ALONE, cut and scaled as
      the mix's chunks are (the chunks :meth:`AudioData.chunks
      <audio_concepts.data.AudioData.chunks>` takes for fitting, divided by the mix's peak);
      activation/context pairs at the layer for class ``c`` (:func:`zennit_drsa.collect`,
      ``state.n_locations`` positions per chunk), labelled by the object (its index in the
      class's object list), fitted by :class:`~zennit_drsa.estimators.OracleSubspaces` with
      ``K_o`` subspaces of ``d_o`` dimensions;
    * ``"random_subspaces"``: :class:`~zennit_drsa.estimators.RandomSubspaces` of the same
      shape (seeded), fitted on the class's mix pairs as the analysis' fit collects them;
    * ``"entangled_subspace"``: one subspace holding the whole layer (``K = 1``, ``d_1 = d``,
      the projector is the identity), on the same pairs.

    ``d_o = max(1, min(state.subspace_dim, d // K_o, r // K_o))``, ``d`` the layer's channels
    and ``r`` the smallest over the classes of the rank of the objects' activations (played
    alone; singular values above 1e-6 of the largest). The ``r`` term matters where ReLUs
    are dead: the activations then span fewer than ``d`` dimensions, and ``K_o`` blocks of
    ``d // K_o`` would have to share directions that no object uses, which the oracle
    refuses. The same ``d_o`` serves every class.

    Under torchrun this is a collective call: each rank collects the pairs of a contiguous
    share of every class's chunks (with the location draws of their positions in the whole)
    and the references fit data-parallel, so every rank gets one process's references.

    Parameters
    ----------
    data:
        The synthetic audio folder, opened for the model under study.
    state:
        The record of the analysis' fit: layer, channels, ``subspace_dim``, ``n_locations``
        and the settings (clips per class, batch size, composite, seeds).
    composite:
        The LRP composite; default: the one the settings name.
    seed:
        Seed of the location draws and of the random subspaces; default
        ``state.config.seeds[0]``.
    progress:
        Show a progress bar over the classes.

    Returns
    -------
    LayerReferences
        Empty estimators, with a warning saying why (also in ``description["skipped"]``),
        when the classes have different object counts, a class has no training clips, its
        clips show some object in fewer than ``d_o`` vectors, or the oracle cannot separate
        the objects; without a warning when the data are not synthetic.
    """
    if data.kind != "synthetic":
        return LayerReferences({}, {"skipped": "the data are not synthetic"})
    config = state.config
    seed = config.seeds[0] if seed is None else int(seed)
    model = data.model
    device = model.device
    if composite is None:
        composite = audio_composite(config.composite, model.network)
    task = data.synthetic_task
    counts = [len(objects) for objects in task.class_objects]
    if len(set(counts)) != 1:
        return _skipped(
            f"the classes have different numbers of sound objects {counts}; the references "
            "need the same K in every class (one subspace per object)"
        )
    n_objects, d = counts[0], int(state.channels)
    names = model.class_names
    distributed = world()[1] > 1
    gathered = {}
    for label, name in enumerate(tqdm(names, desc="references", disable=not progress)):
        clips = data.train_clips(label, config)
        if not clips:
            return _skipped(f"class {name!r} has no training clips in {data.root}")
        chunks = data.chunks(clips, FIT_CHUNKS)
        object_names = [obj.name for obj in task.class_objects[label]]
        # Under torchrun each rank collects a contiguous share of the chunks, with the
        # location draws of their positions in the whole: the shares are one process's pairs.
        part = share(len(chunks), f"training chunks of class {name!r}")
        first_alone = int(_objects_per_chunk(data, chunks)[: part.start].sum())
        batch_labels: list[np.ndarray] = []
        options = {
            "n_locations": state.n_locations,
            "random_state": seed,
            "device": device,
            "progress": False,
        }

        collect_share = functools.partial(
            collect, model.network, composite, state.layer, target=label, **options
        )
        alone = computed_everywhere(
            functools.partial(
                collect_share,
                _alone_batches(data, chunks, part, object_names, batch_labels, config.batch_size),
                first_index=first_alone,
            ),
            f"collecting the objects of class {name!r} alone",
        )
        mix = computed_everywhere(
            functools.partial(
                collect_share,
                data.input_batches(
                    Subset(chunks, range(part.start, part.stop)), config.batch_size, device
                ),
                first_index=part.start,
            ),
            f"collecting the mixes of class {name!r}",
        )
        # The pairs' input indices count from the share's first input in the whole.
        y = np.concatenate(batch_labels)[alone.input_index - first_alone]
        gathered[label] = (object_names, len(chunks.clips), alone, y, mix)
    rank = min(_rank(alone.activations) for _, _, alone, _, _ in gathered.values())
    dims = max(1, min(int(state.subspace_dim), d // n_objects, rank // n_objects))
    description: dict[str, Any] = {
        "layer": state.layer,
        "n_objects": n_objects,
        "subspace_dim": dims,
        "channels": d,
        "rank": rank,
        "seed": seed,
        "classes": {},
    }
    estimators: dict[str, dict[int, SubspaceEstimator]] = {kind: {} for kind in REFERENCE_KINDS}
    for label, (object_names, n_clips, alone, y, mix) in gathered.items():
        name = names[label]
        vectors = _summed(np.bincount(y, minlength=n_objects))
        per_object = dict(zip(object_names, vectors.tolist(), strict=True))
        if vectors.min() < dims:
            return _skipped(
                f"class {name!r}: its {n_clips} training clips show some objects in fewer than "
                f"d_o = {dims} vectors (vectors per object: {per_object}); raise "
                "fit_clips_per_class or n_locations"
            )
        # Data-parallel fits (sums over the ranks' rows), identical on every rank; an error
        # comes from those sums, so every rank raises it alike.
        try:
            oracle = OracleSubspaces(n_subspaces=n_objects, subspace_dim=dims)
            oracle.set_params(distributed=distributed)
            oracle.fit(alone.activations, y=y, context=alone.context)
        except ValueError as error:
            return _skipped(f"class {name!r}: the oracle cannot separate the objects: {error}")
        estimators["oracle_subspaces"][label] = oracle
        estimators["random_subspaces"][label] = RandomSubspaces(
            n_subspaces=n_objects, subspace_dim=dims, random_state=seed, distributed=distributed
        ).fit(mix.activations, context=mix.context)
        estimators["entangled_subspace"][label] = RandomSubspaces(
            n_subspaces=1, subspace_dim=d, random_state=seed, distributed=distributed
        ).fit(mix.activations, context=mix.context)
        description["classes"][name] = {
            "objects": object_names,
            "clips": n_clips,
            "vectors_per_object": per_object,
            "mix_vectors": int(_summed(np.array([mix.n_vectors]))[0]),
        }
    for per_class in estimators.values():
        for estimator in per_class.values():
            estimator.set_params(distributed=False)  # they work alone from here on
    return LayerReferences(estimators, description)


def _summed(values: np.ndarray) -> np.ndarray:
    """``values`` added up over the ranks (themselves on one process)."""
    return np.sum(gather_parts(values), axis=0)


def _objects_per_chunk(data: AudioData, chunks: Any) -> np.ndarray:
    """``(n_chunks,)`` how many objects sound in each chunk's clip: the inputs
    :func:`_alone_batches` makes of it."""
    per_clip = np.array(
        [len(data.present_objects(clip.path)) for clip in chunks.clips], dtype=np.int64
    )
    return per_clip[np.asarray(chunks.clip_of_item, dtype=np.int64)]


def _rank(activations: np.ndarray) -> int:
    """Dimensions ``(n, d)`` vectors (of all ranks) span: singular values above 1e-6 of the
    largest (the oracle's own tolerance; a dead ReLU channel gives exactly 0), from the
    ``d × d`` second moment in float64, so that the tolerance does not grow with ``n``."""
    values = activations.astype(np.float64)
    eigenvalues = np.linalg.eigvalsh(_summed(values.T @ values))
    if eigenvalues.size == 0 or eigenvalues[-1] <= 0:
        return 0
    return int(np.sum(eigenvalues > _RANK_TOLERANCE**2 * eigenvalues[-1]))


def _skipped(reason: str) -> LayerReferences:
    warnings.warn(f"layer references not fitted: {reason}", UserWarning, stacklevel=3)
    return LayerReferences({}, {"skipped": reason})


def _alone_batches(
    data: AudioData,
    chunks: Any,
    items: slice,
    object_names: Sequence[str],
    labels_out: list[np.ndarray],
    batch_size: int,
) -> Iterator[torch.Tensor]:
    """Model inputs of every present object's source alone, for the chunks ``items`` of
    ``chunks`` (an :class:`~audio_cnn.chunks.EvenChunkDataset`), in batches; each batch's
    object indices are appended to ``labels_out`` as it is yielded."""
    model = data.model
    chunk_samples = int(model.frontend.chunk_samples)
    waves: list[np.ndarray] = []
    labels: list[int] = []
    clip, clip_index = None, -1
    for item in range(len(chunks))[items]:
        if int(chunks.clip_of_item[item]) != clip_index:
            clip_index = int(chunks.clip_of_item[item])
            clip = data.synthetic_clip(chunks.clips[clip_index].path)
            _check_rate(clip, model.frontend.sample_rate)
        start = int(chunks.starts[item])
        for name, source in zip(clip.object_names, clip.sources, strict=True):
            waves.append(_chunk(source.astype(np.float64), clip.waveform, start, chunk_samples))
            labels.append(object_names.index(name))
            if len(waves) == batch_size:
                yield _flush(model, waves, labels, labels_out)
    if waves:
        yield _flush(model, waves, labels, labels_out)


def _flush(
    model: AudioModel, waves: list[np.ndarray], labels: list[int], labels_out: list[np.ndarray]
) -> torch.Tensor:
    batch = model.input_of(torch.from_numpy(np.stack(waves)).to(model.device))
    labels_out.append(np.array(labels, dtype=np.int64))
    waves.clear()
    labels.clear()
    return batch
