"""The concept analysis swept over layers and ``K``: one analysis per pair, a table and a figure.

Which layer and how many concepts suit a model is an empirical question (METHOD.md §5: on
synthetic data DRSA led PRCA at one block and not at another, and fell behind when ``K``
exceeded the number of sound objects). :func:`sweep_concepts` answers it with the same
evaluation as a single analysis: for every ``(layer, K)`` it runs
:func:`~audio_concepts.analysis.fit_concepts`, :func:`~audio_concepts.analysis.explain_concepts`
and :func:`~audio_concepts.analysis.evaluate_concepts` into ``out_dir/<layer>_K<k>/`` (a
complete analysis directory: ``zennit-drsa report out_dir/<layer>_K<k>`` renders it), then
collects each method's class-mean AUPC, concept recovery and every measure's mean, with
which measures were validated at that pair, into ``out_dir/sweep.json`` and draws
``out_dir/sweep.png``. :func:`best_pair` chooses by validated measures only, and
:func:`selectivity_agreement` reports how well concept selectivity (computable on any data)
tracks ground-truth recovery across the sweep's rows.

Choose settings on validation clips (``AnalysisConfig(eval_split="val")``) and report the
chosen ones on test clips, so that the reported numbers are not the ones the choice was
tuned on.

A sweep resumes: a pair whose analysis finished (``<layer>_K<k>/sweep_entry.json``) is not
computed again, so an interrupted sweep, or one extended by more layers or ``K``, only runs
what is missing. A finished pair computed with other settings is an error, not silently
reused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from atomic_io import atomic_path, read_json, write_json_atomic
from audio_cnn.ownership import lock_folder
from audio_concepts.analysis import Analysis, ModelSource
from audio_concepts.config import AnalysisConfig
from audio_concepts.measures import MEASURES
from audio_concepts.planning import plan_layer
from audio_concepts.sharding import is_writer
from audio_concepts.workspace import Workspace

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "SweepResult",
    "SweepRow",
    "best_pair",
    "choice_measures",
    "choice_pairs",
    "format_sweep",
    "load_sweep",
    "plot_sweep",
    "selectivity_agreement",
    "sweep_concepts",
]

_FORMAT = "zennit_drsa.sweep"  # file format name, kept across the move
_ENTRY = "sweep_entry.json"
_STANDARD = "standard"
# Settings that change how a pair is computed, not what: a finished pair is reused across them.
_EXECUTION = ("batch_size", "device")


@dataclass(frozen=True)
class SweepRow:
    """One method's evaluation at one layer and ``K``.

    Attributes
    ----------
    layer:
        Module name of the decomposed layer.
    n_subspaces:
        Number of concepts ``K``.
    method:
        Subspace method, or ``"standard"`` (the single LRP heatmap, the same at every ``K``).
    aupc:
        Disentangled patch-flipping AUPC, mean over classes of the per-class mean (lower is
        better); ``None`` if no input had a positive score.
    aupc_pooled, aupc_sem:
        Mean ± standard error of the AUPC pooled over inputs and seeds.
    recovery, chance:
        Concept recovery and its chance level, class means (synthetic data only, else
        ``None``; always ``None`` for ``"standard"``).
    n:
        AUPC values pooled (inputs × seeds).
    measures:
        Every measure's pooled mean (inputs averaged over seeds first; see
        :func:`~audio_concepts.summary.summarize`), by name.
    validated:
        Per measure, whether it was validated at this layer and ``K`` (the same for every
        method of the pair; empty without references).
    """

    layer: str
    n_subspaces: int
    method: str
    aupc: float | None
    aupc_pooled: float | None
    aupc_sem: float | None
    recovery: float | None
    chance: float | None
    n: int
    measures: dict[str, float | None] = dataclasses.field(default_factory=dict)
    validated: dict[str, bool] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class SweepResult:
    """The rows of a sweep and where it was written.

    Attributes
    ----------
    out_dir:
        The sweep directory (``sweep.json``, ``sweep.png``, one analysis per pair).
    layers, n_subspaces:
        The layers and ``K`` values swept, in the order given.
    eval_split:
        Split whose clips were explained and evaluated.
    accuracy:
        The run's clip-level accuracy on ``eval_split``.
    rows:
        One row per layer, ``K`` and method (layers outermost, then ``K``).
    computed, reused:
        The ``(layer, K)`` pairs computed by this call and those found finished and skipped.
    settings:
        The shared analysis settings (``layer`` and ``n_subspaces`` vary per pair).
    """

    out_dir: Path
    layers: tuple[str, ...]
    n_subspaces: tuple[int, ...]
    eval_split: str
    accuracy: float
    rows: tuple[SweepRow, ...]
    computed: tuple[tuple[str, int], ...]
    reused: tuple[tuple[str, int], ...]
    settings: dict[str, Any]

    @property
    def methods(self) -> tuple[str, ...]:
        """Methods in the rows, in first-seen order."""
        return tuple(dict.fromkeys(row.method for row in self.rows))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary (the content of ``sweep.json``)."""
        return {
            "format": _FORMAT,
            "layers": list(self.layers),
            "n_subspaces": list(self.n_subspaces),
            "eval_split": self.eval_split,
            "accuracy": self.accuracy,
            "rows": [dataclasses.asdict(row) for row in self.rows],
            "choice_measures": choice_measures(self),
            "choice_pairs": [list(pair) for pair in choice_pairs(self)],
            "selectivity_agreement": selectivity_agreement(self),
            "settings": self.settings,
        }


def sweep_concepts(
    run: ModelSource,
    data_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    layers: Sequence[str],
    n_subspaces: Sequence[int],
    config: AnalysisConfig | None = None,
    progress: bool = True,
) -> SweepResult:
    """Fit, explain and evaluate every method at every layer and ``K``; tabulate and plot.

    All settings are checked against the model (layer names, ``K · d_k`` within each
    layer's channels) before anything is computed.

    Parameters
    ----------
    run:
        Run directory written by ``audio-cnn train``, or an
        :class:`~audio_concepts.model.AudioModel`.
    data_dir:
        The dataset the model was trained on.
    out_dir:
        Sweep directory: ``<layer>_K<k>/`` per pair (an analysis directory as written by
        :func:`~audio_concepts.analysis.fit_concepts`), ``sweep.json`` and ``sweep.png``.
    layers:
        Module names of the layers to decompose, e.g. ``["features.10", "features.13"]``
        (``AudioCNN.block_output(n)`` names block ``n``'s output).
    n_subspaces:
        Values of ``K``, e.g. ``[2, 4, 8, 16]``.
    config:
        The other analysis settings (their ``layer`` and ``n_subspaces`` are replaced per
        pair); default :class:`~audio_concepts.analysis.AnalysisConfig()`. A fixed
        ``subspace_dim`` must fit every ``K`` at every layer; ``None`` uses ``d // K``.
    progress:
        Show tqdm progress bars.

    Returns
    -------
    SweepResult

    Raises
    ------
    ValueError
        If ``layers`` or ``n_subspaces`` is empty, repeats a value or holds a bad value, a
        layer is not in the model, ``K`` subspaces do not fit a layer, or a finished pair
        in ``out_dir`` was computed with other settings, run or data.
    FileNotFoundError
        If the run does not exist.
    """
    config = config or AnalysisConfig()
    out_dir = Path(out_dir)
    layers, ks = _check_grid(layers, n_subspaces)
    pairs = [(layer, k) for layer in layers for k in ks]
    configs = {
        pair: dataclasses.replace(config, layer=pair[0], n_subspaces=pair[1]) for pair in pairs
    }
    # One model and one opened audio folder serve every pair.
    first = Analysis.create(run, data_dir, _pair_dir(out_dir, pairs[0]), config)
    for pair_config in configs.values():
        plan_layer(first.model, pair_config)
    source = {"run": first.model.name, "data_dir": str(first.data.root.resolve())}
    finished = {pair: _finished(out_dir, pair, configs[pair], source) for pair in pairs}

    # Under torchrun every rank computes each pair's shares; rank 0 alone locks and writes.
    holding = (
        lock_folder(out_dir, what="sweep folder", hint="or sweep into another --out")
        if is_writer()
        else contextlib.nullcontext()
    )
    with holding:
        summaries: dict[tuple[str, int], dict[str, Any]] = {}
        for pair in pairs:
            if finished[pair] is not None:
                summaries[pair] = finished[pair]
                continue
            folder = _pair_dir(out_dir, pair)
            if progress:
                tqdm.write(f"sweep: layer {pair[0]}, K = {pair[1]} → {folder}")
            analysis = Analysis(first.model, first.data, Workspace(folder), configs[pair])
            analysis.fit(progress=progress)
            analysis.explain(progress=progress)
            analysis.evaluate(progress=progress)
            summaries[pair] = analysis.summary()
            entry = {"config": configs[pair].to_dict(), **source, "summary": summaries[pair]}
            if is_writer():
                write_json_atomic(folder / _ENTRY, entry)

        settings = {k: v for k, v in config.to_dict().items() if k not in ("layer", "n_subspaces")}
        result = SweepResult(
            out_dir=out_dir,
            layers=tuple(layers),
            n_subspaces=tuple(ks),
            eval_split=config.eval_split,
            accuracy=summaries[pairs[0]]["accuracy"],
            rows=tuple(row for pair in pairs for row in _rows(pair, summaries[pair])),
            computed=tuple(pair for pair in pairs if finished[pair] is None),
            reused=tuple(pair for pair in pairs if finished[pair] is not None),
            settings={**settings, **source},
        )
        if is_writer():
            write_json_atomic(out_dir / "sweep.json", result.to_dict())
            plot_sweep(result, out_dir / "sweep.png")
    return result


def load_sweep(path: str | os.PathLike[str]) -> SweepResult:
    """Read a ``sweep.json`` written by :func:`sweep_concepts`.

    The result's ``out_dir`` is the file's folder; every pair counts as ``reused``.

    Raises
    ------
    ValueError
        If the file is not a sweep (wrong ``format``) or a row lacks a field.
    OSError
        If it cannot be read.
    """
    path = Path(path)
    data = read_json(path, what="a sweep written by zennit-drsa sweep (run the sweep again)")
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a sweep written by zennit_drsa.sweep_concepts")
    try:
        rows = tuple(SweepRow(**row) for row in data["rows"])
        layers, ks = tuple(data["layers"]), tuple(data["n_subspaces"])
        return SweepResult(
            out_dir=path.parent,
            layers=layers,
            n_subspaces=ks,
            eval_split=data["eval_split"],
            accuracy=data["accuracy"],
            rows=rows,
            computed=(),
            reused=tuple((layer, k) for layer in layers for k in ks),
            settings=data["settings"],
        )
    except (KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a complete sweep ({error})") from None


def choice_measures(result: SweepResult) -> list[str]:
    """The measures that choose settings, in order: the first measure (in the order of
    :data:`~audio_concepts.measures.MEASURES`, ground-truth measures first) validated at some
    swept pair, then, to break ties, the measures validated at every pair where it is.

    Only figures of validated measures are compared: :func:`best_pair` looks only at the
    pairs where the first measure is validated (:func:`choice_pairs`).
    """
    pairs = _validated_by_pair(result)
    for measure in MEASURES:
        chosen = [pair for pair, validated in pairs.items() if validated.get(measure.name)]
        if chosen:
            ties = [
                other.name
                for other in MEASURES
                if other is not measure and all(pairs[pair].get(other.name) for pair in chosen)
            ]
            return [measure.name, *ties]
    return []


def choice_pairs(result: SweepResult) -> list[tuple[str, int]]:
    """The ``(layer, K)`` pairs :func:`best_pair` chooses from: those where the first of
    :func:`choice_measures` is validated."""
    usable = choice_measures(result)
    if not usable:
        return []
    return [pair for pair, flags in _validated_by_pair(result).items() if flags.get(usable[0])]


def _validated_by_pair(result: SweepResult) -> dict[tuple[str, int], dict[str, bool]]:
    return {(row.layer, row.n_subspaces): row.validated for row in result.rows}


def best_pair(result: SweepResult, method: str = "drsa") -> tuple[str, int]:
    """The ``(layer, K)`` where ``method``'s concepts are best by validated measures only.

    The first of :func:`choice_measures` decides among the pairs where it is validated
    (:func:`choice_pairs`); ties go to the next measures, validated at all of those pairs.
    A pair where the measure failed its validation takes no part: its figure is not trusted
    there. Only ``method``'s rows are looked at, not its margin over the baselines, so the
    choice does not favour a comparison.

    Raises
    ------
    ValueError
        If no measure is validated at any pair (then no choice can be justified: look at
        the sweep's figures and choose by hand, or sweep on data with known sound objects),
        or the sweep has no row of ``method`` with those measures.
    """
    usable = choice_measures(result)
    if not usable:
        raise ValueError(
            "no measure is validated at any swept layer and K, so the sweep cannot choose "
            "settings by a measure it can trust; choose the layer and K yourself (see "
            "sweep.png), or sweep on synthetic data whose sound objects are known"
        )
    pairs = set(choice_pairs(result))
    better = {measure.name: measure.better for measure in MEASURES}
    candidates = [
        row
        for row in result.rows
        if row.method == method
        and (row.layer, row.n_subspaces) in pairs
        and row.measures.get(usable[0]) is not None
    ]
    if not candidates:
        raise ValueError(f"the sweep has no evaluated rows of method {method!r}")

    def merit(row: SweepRow) -> tuple[float, ...]:
        values = []
        for name in usable:
            value = row.measures.get(name)
            sign = 1.0 if better[name] == "higher" else -1.0
            values.append(-math.inf if value is None else sign * value)
        return tuple(values)

    best = max(candidates, key=merit)
    return best.layer, best.n_subspaces


def selectivity_agreement(result: SweepResult) -> dict[str, Any] | None:
    """How well concept selectivity (no ground truth needed) tracks ground-truth recovery.

    Spearman rank correlation, over the sweep's rows (methods × layers × K; seeds pooled
    within a row), between selectivity and heatmap recovery, and between selectivity and
    interventional recovery. A high correlation is what lets users trust selectivity on
    their own data, where recovery cannot be computed.

    Returns
    -------
    dict or None
        Per recovery measure ``rho``, ``p_value`` (two-sided) and ``n`` rows; ``None`` if
        the sweep has fewer than three rows with both figures.
    """
    from scipy.stats import spearmanr

    found: dict[str, Any] = {}
    for truth in ("recovery", "interventional_recovery"):
        pairs = [
            (row.measures["selectivity"], row.measures[truth])
            for row in result.rows
            if row.measures.get("selectivity") is not None and row.measures.get(truth) is not None
        ]
        if len(pairs) < 3:
            continue
        x, y = np.array(pairs).T
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            continue
        test = spearmanr(x, y)
        found[truth] = {
            "rho": float(test.statistic),
            "p_value": float(test.pvalue),
            "n": len(pairs),
        }
    return found or None


def format_sweep(result: SweepResult) -> str:
    """The sweep as a plain-text table: layer, K, method, AUPC, recovery and chance.

    ``AUPC`` is the class mean (lower is better), ``pooled ± s.e.m.`` the mean over inputs
    and seeds with its standard error; ``recovery`` and ``chance`` are class means.
    """
    usable = choice_measures(result)
    shown = [m.name for m in MEASURES if any(m.name in row.measures for row in result.rows)]
    header = (
        f"{'layer':<14} {'K':>3} {'method':<9} {'AUPC':>7} {'pooled ± s.e.m.':>17} "
        f"{'recovery':>9} {'chance':>7}"
    )
    lines = [
        f"{result.eval_split} accuracy {result.accuracy:.4f}",
        "measures that choose (the first decides among the pairs where it is validated: "
        + ", ".join(f"{layer} K={k}" for layer, k in choice_pairs(result))
        + "): "
        + (", ".join(usable) if usable else "none"),
        header + "".join(f" {_short(name):>9}" for name in shown),
    ]
    for row in result.rows:
        pooled = f"{_text(row.aupc_pooled)} ± {_text(row.aupc_sem)}"
        lines.append(
            f"{row.layer:<14} {row.n_subspaces:>3} {row.method:<9} {_text(row.aupc):>7} "
            f"{pooled:>17} {_text(row.recovery):>9} {_text(row.chance):>7}"
            + "".join(f" {_text(row.measures.get(name)):>9}" for name in shown)
        )
    agreement = selectivity_agreement(result)
    for truth, figures in (agreement or {}).items():
        lines.append(
            f"selectivity vs {truth} across rows: Spearman rho {figures['rho']:+.2f} "
            f"(p {figures['p_value']:.2g}, {figures['n']} rows)"
        )
    return "\n".join(lines)


def _short(name: str) -> str:
    """A column heading of at most 9 characters for a measure name."""
    return {
        "interventional_recovery": "interv.",
        "selectivity": "select.",
        "deletion_union": "del.union",
        "deletion_round_robin": "del.rr",
        "deletion_positive_sum": "del.psum",
        "insertion": "insertion",
        "recovery": "recov.",
    }.get(name, name[:9])


def plot_sweep(
    result: SweepResult, path: str | os.PathLike[str] | None = None, *, dpi: int = 120
) -> Figure:
    """AUPC against ``K`` and recovery against ``K``, a line per method and layer.

    Colour marks the method, line style and marker the layer; ``K`` is on a log2 axis. The
    recovery panel draws the chance level as a dashed black line (it depends only on the
    evaluated clips) and says so when the data have no known sound objects.

    Parameters
    ----------
    result:
        A sweep (:func:`sweep_concepts`).
    path:
        Save the figure there as a PNG (atomically); default: do not save.
    dpi:
        Resolution of the saved PNG.

    Returns
    -------
    matplotlib.figure.Figure
    """
    # Import here: `import zennit_drsa` should not pull in matplotlib.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12.5, 4.4), layout="constrained")
    FigureCanvasAgg(figure)
    aupc_ax, recovery_ax = figure.subplots(1, 2)
    ks = np.array(result.n_subspaces)
    order = np.argsort(ks)
    for m, method in enumerate(result.methods):
        for j, layer in enumerate(result.layers):
            style = {
                "color": f"C{m % 10}",
                "linestyle": ("-", "--", ":", "-.")[j % 4],
                "marker": "osD^v<>"[j % 7],
                "label": f"{method} · {layer}",
            }
            aupc_ax.plot(ks[order], _series(result, layer, method, "aupc")[order], **style)
            if method != _STANDARD:
                recovery = _series(result, layer, method, "recovery")[order]
                recovery_ax.plot(ks[order], recovery, **style)
    chance = np.array([_mean_chance(result, k) for k in ks])[order]
    if np.isfinite(chance).any():
        recovery_ax.plot(ks[order], chance, color="black", linestyle="--", label="chance")
    else:
        recovery_ax.text(
            0.5,
            0.5,
            "no concept recovery\n(needs synthetic data with known objects)",
            transform=recovery_ax.transAxes,
            ha="center",
            va="center",
        )
    aupc_ax.set(title="Patch flipping (lower is better)", ylabel="AUPC (class mean)")
    recovery_ax.set(title="Concept recovery (higher is better)", ylabel="recovery (class mean)")
    for ax in (aupc_ax, recovery_ax):
        _k_axis(ax, result.n_subspaces)
    # One legend beside both panels: inside, a dozen entries hide the lines.
    handles, labels = aupc_ax.get_legend_handles_labels()
    for handle, label in zip(*recovery_ax.get_legend_handles_labels(), strict=True):
        if label not in labels:  # the chance line
            handles.append(handle)
            labels.append(label)
    if handles:
        figure.legend(handles, labels, loc="outside right center", fontsize=7)
    figure.suptitle(f"Sweep over layers and K ({result.eval_split} clips)")
    if path is not None:
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png", dpi=dpi)
    return figure


# ----- helpers -----------------------------------------------------------------------------


def _check_grid(layers: Sequence[str], ks: Sequence[int]) -> tuple[list[str], list[int]]:
    """The swept layers and K values as lists, or a ValueError naming every problem."""
    layers, ks = list(layers), list(ks)
    problems = []
    if not layers or not all(isinstance(layer, str) and layer for layer in layers):
        problems.append(f"layers must be one or more module names, got {layers!r}")
    elif len(set(layers)) != len(layers):
        problems.append(f"layers must be distinct, got {layers}")
    if not ks or not all(isinstance(k, int) and not isinstance(k, bool) and k > 0 for k in ks):
        problems.append(f"n_subspaces must be one or more positive ints, got {ks!r}")
    elif len(set(ks)) != len(ks):
        problems.append(f"n_subspaces must be distinct, got {ks}")
    if problems:
        raise ValueError("invalid sweep settings: " + "; ".join(problems))
    return layers, ks


def _pair_dir(out_dir: Path, pair: tuple[str, int]) -> Path:
    return out_dir / f"{pair[0]}_K{pair[1]}"


def _finished(
    out_dir: Path, pair: tuple[str, int], config: AnalysisConfig, source: dict[str, str]
) -> dict[str, Any] | None:
    """The summary of a finished pair with the same settings, ``None`` if not finished."""
    path = _pair_dir(out_dir, pair) / _ENTRY
    if not path.is_file():
        return None
    entry = read_json(path, what="a finished pair of a sweep (delete it to recompute)")
    done = entry.get("config", {})
    differ = [
        key
        for key, value in config.to_dict().items()
        if key not in _EXECUTION and done.get(key) != value
    ]
    differ += [name for name, value in source.items() if entry.get(name) != value]
    if differ:
        raise ValueError(
            f"{path.parent} holds a finished analysis with other settings ({', '.join(differ)} "
            "differ); sweep into a new --out directory or delete that folder"
        )
    return entry["summary"]


def _rows(pair: tuple[str, int], summary: dict[str, Any]) -> list[SweepRow]:
    return [
        SweepRow(
            layer=pair[0],
            n_subspaces=pair[1],
            method=method,
            aupc=entry["aupc"],
            aupc_pooled=entry["aupc_pooled"],
            aupc_sem=entry["aupc_sem"],
            recovery=entry["recovery"],
            chance=entry["chance"],
            n=entry["n"],
            measures={name: m["mean"] for name, m in entry.get("means", {}).items()},
            validated={
                name: bool(row["validated"]) for name, row in summary.get("measures", {}).items()
            },
        )
        for method, entry in summary["methods"].items()
    ]


def _series(result: SweepResult, layer: str, method: str, field: str) -> np.ndarray:
    """``field`` of ``method`` at ``layer`` for each K of the result (NaN where missing)."""
    values = {
        row.n_subspaces: getattr(row, field)
        for row in result.rows
        if row.layer == layer and row.method == method
    }
    return np.array([_nan(values.get(k)) for k in result.n_subspaces], dtype=np.float64)


def _mean_chance(result: SweepResult, k: int) -> float:
    values = [row.chance for row in result.rows if row.n_subspaces == k and row.chance is not None]
    return float(np.mean(values)) if values else math.nan


def _k_axis(ax: Axes, ks: Sequence[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(ks), [str(k) for k in sorted(ks)])
    ax.minorticks_off()
    ax.set_xlabel("K (concepts)")
    ax.grid(alpha=0.3)


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _text(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"
