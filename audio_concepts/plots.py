"""Figures of DRSA explanations on log-mel inputs (matplotlib, PNG).

Every function returns a :class:`matplotlib.figure.Figure` and, given a ``path``, also saves it
as a PNG atomically (a temporary file in the same directory, then ``os.replace``). Figures are
built on an Agg canvas without pyplot: nothing is registered globally, nothing stays open, and
the caller's matplotlib backend is left alone.

Spectrogram-like panels share one layout: time in seconds on the x axis (frame centres from
:meth:`~audio_concepts.frontend.LogMelFrontend.frame_times`), mel bands on the y axis labelled
with their centre frequencies in Hz
(:meth:`~audio_concepts.frontend.LogMelFrontend.mel_frequencies`, so the ticks are
mel-spaced). Heatmaps use a diverging colour map centred at 0 (red: positive relevance, blue:
negative).

Names of concept maps are 1-based for readers: ``concept 1`` is ``heatmaps[0]``.

Text passed in (titles, class, clip, concept and method names) is drawn as it is: a ``$``
never starts matplotlib's mathtext, so a class called ``a$x^$`` is shown as ``a$x^$``
instead of failing to draw.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.lines import Line2D
from numpy.typing import ArrayLike

from atomic_io import atomic_path
from zennit_drsa.evaluation import PatchFlippingResult, aupc_table, mean_sem, pooled_curves

if TYPE_CHECKING:
    from audio_concepts.frontend import LogMelFrontend

__all__ = [
    "plot_concept_distribution",
    "plot_concept_grid",
    "plot_concept_prototypes",
    "plot_flipping_curves",
    "plot_objective_trace",
    "plot_spectrogram",
]

PathLike = str | os.PathLike[str]
_LOGMEL_LABEL = "log10 mel magnitude"
_RELEVANCE_LABEL = "relevance"
_PANEL = 2.3  # inches per spectrogram panel
# Line styles of the groups of plot_objective_trace (e.g. methods), one each.
_LINE_STYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 4)))


def plot_spectrogram(
    logmel_image: ArrayLike | torch.Tensor,
    logmel: LogMelFrontend,
    ax: Axes | None = None,
    *,
    path: PathLike | None = None,
    title: str | None = "log-mel spectrogram",
    cmap: str = "magma",
    colorbar: bool = True,
    dpi: int = 120,
) -> Figure:
    """Draw one log-mel spectrogram with time in seconds and frequency in Hz.

    Parameters
    ----------
    logmel_image:
        Log-mel values ``(n_mels, frames)`` (or ``(1, n_mels, frames)``) in log10 units, as the
        front-end returns them.
    logmel:
        The front-end that made the image (for the time and frequency axes).
    ax:
        Axes to draw into; default a new figure.
    path:
        Save the figure there as a PNG (atomically); default: do not save.
    title:
        Axes title; ``None`` for none.
    cmap:
        Colour map name.
    colorbar:
        Add a colour bar in log10 units.
    dpi:
        Resolution of the saved PNG.

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn into (``ax.figure`` when ``ax`` is given).
    """
    image = _image(logmel_image, "logmel_image", logmel)
    if ax is None:
        figure = _figure(_PANEL * 2, _PANEL * 1.4)
        ax = figure.add_subplot()
    else:
        figure = ax.figure
    shown = _draw(ax, image, logmel, cmap=cmap)
    if title is not None:
        ax.set_title(_literal(title))
    if colorbar:
        figure.colorbar(shown, ax=ax, label=_LOGMEL_LABEL)
    if path is not None:
        _save(figure, path, dpi)
    return figure


def plot_concept_grid(
    logmel_image: ArrayLike | torch.Tensor,
    heatmaps: ArrayLike | torch.Tensor,
    relevances: ArrayLike | torch.Tensor,
    logmel: LogMelFrontend,
    path: PathLike | None = None,
    *,
    concept_names: Sequence[str] | None = None,
    input_names: Sequence[str] | None = None,
    title: str | None = None,
    shared_scale: bool = True,
    cmap: str = "bwr",
    dpi: int = 120,
) -> Figure:
    """Input, standard heatmap, concept heatmaps and residual side by side, one row per input.

    Row layout: the log-mel input; the standard heatmap (the sum of all maps, titled with the
    total relevance ``R``); the K concept heatmaps and the residual, each titled with its share
    of the total relevance, e.g. ``"concept 2 · 31 %"``. Shares are ``R_k / Σ_j R_j``; when the
    total is not positive a share means nothing, and the title shows ``R = R_k`` instead.

    Parameters
    ----------
    logmel_image:
        The input, ``(n_mels, frames)`` for one, or ``(n, n_mels, frames)`` /
        ``(n, 1, n_mels, frames)`` for several.
    heatmaps:
        The K concept maps then the residual: ``(K + 1, n_mels, frames)`` or
        ``(K + 1, 1, n_mels, frames)`` for one input; ``(n, K + 1, ...)`` for several.
    relevances:
        Relevance of each map at the DRSA layer, ``(K + 1,)`` or ``(n, K + 1)``.
    logmel:
        The front-end (for the axes).
    path:
        Save the figure there as a PNG (atomically); default: do not save.
    concept_names:
        K names (the last map is called ``"residual"``) or K + 1 names; default
        ``"concept 1"`` … ``"concept K"``, ``"residual"``.
    input_names:
        One title per input; default ``"input"`` (one) or ``"input 1"`` … (several).
    title:
        Figure title.
    shared_scale:
        One symmetric colour range for all heatmaps of a row (maps comparable by colour);
        otherwise each heatmap gets its own symmetric range (faint maps visible).
    cmap:
        Diverging colour map, centred at 0.
    dpi:
        Resolution of the saved PNG.

    Returns
    -------
    matplotlib.figure.Figure
    """
    images, maps, scores, single = _explained_inputs(logmel_image, heatmaps, relevances, logmel)
    n, n_maps = scores.shape
    names = _concept_names(concept_names, n_maps)
    rows = _labels(input_names, n, "input_names", "input" if single else "input {}")

    figure = _figure(_PANEL * (n_maps + 2) + 1.2, _PANEL * n + (0.4 if title else 0))
    grid = figure.subplots(n, n_maps + 2, squeeze=False, sharex=True, sharey=True)
    for i in range(n):
        axes = grid[i]
        shown = _draw(axes[0], images[i], logmel, cmap="magma")
        axes[0].set_title(_literal(rows[i]))
        figure.colorbar(shown, ax=axes[0], label=_LOGMEL_LABEL)
        total = float(scores[i].sum())
        panels = [("standard", maps[i].sum(axis=0), f"R = {total:.3g}")]
        panels += [(name, maps[i, k], _share(scores[i, k], total)) for k, name in enumerate(names)]
        limit = max(_limit(m) for _, m, _ in panels)
        for ax, (name, heatmap, note) in zip(axes[1:], panels, strict=True):
            bound = limit if shared_scale else _limit(heatmap)
            shown = _draw(ax, heatmap, logmel, cmap=cmap, vmin=-bound, vmax=bound)
            ax.set_title(f"{_literal(name)} · {note}")
            if not shared_scale:
                figure.colorbar(shown, ax=ax)
        if shared_scale:
            figure.colorbar(shown, ax=list(axes[1:]), label=_RELEVANCE_LABEL)
    _outer_labels(grid)
    if title:
        figure.suptitle(_literal(title))
    if path is not None:
        _save(figure, path, dpi)
    return figure


def plot_concept_prototypes(
    logmel_images: ArrayLike | torch.Tensor,
    heatmaps: ArrayLike | torch.Tensor,
    relevances: ArrayLike | torch.Tensor,
    logmel: LogMelFrontend,
    path: PathLike | None = None,
    *,
    n_prototypes: int = 4,
    clip_names: Sequence[str] | None = None,
    concept_names: Sequence[str] | None = None,
    residual: bool = True,
    title: str | None = "Most relevant chunks per concept",
    cmap: str = "bwr",
    dpi: int = 120,
) -> Figure:
    """Prototypes: per concept, the explained chunks with the highest relevance for it.

    One row per concept (then the residual, unless ``residual`` is false): the
    ``n_prototypes`` inputs with the largest layer relevance ``R_k`` of that concept, by
    decreasing ``R_k`` (ties keep input order). Each panel shows the log-mel input in grey
    with the concept's heatmap over it (red: positive, blue: negative; opacity
    ``sqrt(|relevance| / max)``, so faint relevance stays visible), titled with the clip's
    name and the concept's share ``R_k / Σ_j R_j`` of the input's relevance (``R = R_k``
    when the total is not positive), e.g. ``"clip_07.wav · 31 %"``; a name too long for its
    panel is shortened in the middle (``"speaker_…_take_07.wav · 31 %"``), so titles never
    run into each other. Heatmaps of a row share one symmetric colour range and colour
    bar.

    Parameters
    ----------
    logmel_images:
        The explained inputs, ``(n, n_mels, frames)`` or ``(n, 1, n_mels, frames)``, log10
        units (one input may also be given as for :func:`plot_concept_grid`).
    heatmaps:
        Their concept maps then the residual, ``(n, K + 1, [1,] n_mels, frames)``.
    relevances:
        ``(n, K + 1)`` relevance of each map at the DRSA layer; ranks the inputs.
    logmel:
        The front-end (for the axes).
    path:
        Save the figure there as a PNG (atomically); default: do not save.
    n_prototypes:
        Inputs per concept (fewer when there are fewer inputs).
    clip_names:
        One name per input for the panel titles; default ``"input 1"`` … ``"input n"``.
    concept_names:
        K or K + 1 names, as for :func:`plot_concept_grid`.
    residual:
        Add a row for the residual map (pointless when the subspaces span the layer and the
        residual is zero).
    title:
        Figure title.
    cmap:
        Diverging colour map of the heatmaps, centred at 0.
    dpi:
        Resolution of the saved PNG.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not _positive_int(n_prototypes):
        raise ValueError(f"n_prototypes must be a positive int, got {n_prototypes!r}")
    images, maps, scores, _ = _explained_inputs(
        logmel_images, heatmaps, relevances, logmel, "logmel_images"
    )
    n, n_maps = scores.shape
    names = _concept_names(concept_names, n_maps)
    clips = _labels(clip_names, n, "clip_names", "input {}")
    rows = n_maps if residual else n_maps - 1
    ranked = _top_inputs(scores[:, :rows], n_prototypes)
    totals = scores.sum(axis=1)

    columns = ranked.shape[1]
    figure = _figure(_PANEL * columns + 1.2, _PANEL * rows + (0.4 if title else 0))
    grid = figure.subplots(rows, columns, squeeze=False, sharex=True, sharey=True)
    titles = []
    for k in range(rows):
        limit = max(_limit(maps[i, k]) for i in ranked[k])
        for ax, i in zip(grid[k], ranked[k], strict=True):
            _draw(ax, images[i], logmel, cmap="Greys")
            alpha = np.sqrt(np.clip(np.abs(maps[i, k]) / limit, 0.0, 1.0))
            shown = _draw(ax, maps[i, k], logmel, cmap=cmap, vmin=-limit, vmax=limit, alpha=alpha)
            note = _share(scores[i, k], totals[i])
            ax.set_title(f"{_literal(clips[i])} · {note}", fontsize=8)
            titles.append((ax, clips[i], note))
        figure.colorbar(shown, ax=list(grid[k]), label=_RELEVANCE_LABEL)
    _outer_labels(grid)
    for k in range(rows):
        grid[k, 0].set_ylabel(f"{_literal(names[k])}\nfrequency (Hz)")
    if title:
        figure.suptitle(_literal(title))
    _fit_titles(figure, titles)
    if path is not None:
        _save(figure, path, dpi)
    return figure


def plot_concept_distribution(
    relevances: ArrayLike | torch.Tensor,
    labels: ArrayLike | torch.Tensor,
    class_names: Sequence[str],
    path: PathLike | None = None,
    *,
    concept_names: Sequence[str] | None = None,
    kind: Literal["box", "violin"] = "box",
    title: str | None = "Concept relevance shares per class",
    columns: int = 5,
    dpi: int = 120,
) -> Figure:
    """Per class, the distribution over inputs of each concept's share of the relevance.

    One panel per class (``columns`` panels per row); in each, one box (or violin) per concept
    map with the inputs' shares ``R_k / Σ_j R_j`` in percent, and the inputs as dots. Inputs
    whose total relevance is not positive have no meaningful shares and are left out (their
    count is shown).

    Parameters
    ----------
    relevances:
        ``(n, K + 1)`` relevance of each concept map (then the residual) per input.
    labels:
        ``(n,)`` class index per input, in ``[0, len(class_names))``.
    class_names:
        Name of each class.
    path:
        Save the figure there as a PNG (atomically); default: do not save.
    concept_names:
        K or K + 1 names, as for :func:`plot_concept_grid`.
    kind:
        ``"box"`` or ``"violin"`` (a violin needs two distinct values; fewer show dots only).
    title:
        Figure title.
    columns:
        Panels per row of the figure.
    dpi:
        Resolution of the saved PNG.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns must be an int >= 1, got {columns!r}")
    scores = _array(relevances, "relevances")
    if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] < 2:
        raise ValueError(
            f"relevances must be (n >= 1, K + 1 >= 2) (inputs × concept maps), got {scores.shape}"
        )
    classes = np.asarray(labels.cpu() if torch.is_tensor(labels) else labels)
    if classes.shape != (scores.shape[0],) or not np.issubdtype(classes.dtype, np.integer):
        raise ValueError(
            f"labels must be {scores.shape[0]} integer class indices (one per row of "
            f"relevances), got shape {classes.shape} and dtype {classes.dtype}"
        )
    if not class_names:
        raise ValueError("class_names is empty: pass one name per class")
    if classes.min() < 0 or classes.max() >= len(class_names):
        raise ValueError(
            f"labels must lie in [0, {len(class_names)}) to index class_names, "
            f"got {classes.min()}…{classes.max()}"
        )
    if kind not in ("box", "violin"):
        raise ValueError(f"kind must be 'box' or 'violin', got {kind!r}")
    names = _concept_names(concept_names, scores.shape[1])
    totals = scores.sum(axis=1)
    valid = totals > 0
    shares = 100 * scores[valid] / totals[valid, None]
    classes_valid = classes[valid]

    positions = np.arange(1, len(names) + 1)
    n_cols = min(len(class_names), columns)
    n_rows = -(-len(class_names) // n_cols)
    figure = _figure(max(3.0, 0.55 * len(names) + 1.2) * n_cols, 3.2 * n_rows + 0.4)
    grid = figure.subplots(n_rows, n_cols, squeeze=False, sharey=True).ravel()
    for ax in grid[len(class_names) :]:
        ax.set_visible(False)
    jitter = np.random.default_rng(0)  # fixed: the same data give the same picture
    for c, (ax, class_name) in enumerate(zip(grid, class_names, strict=False)):
        data = shares[classes_valid == c]
        left_out = int(np.sum(classes == c) - data.shape[0])
        note = f"n = {data.shape[0]}" + (f", {left_out} with R ≤ 0 left out" if left_out else "")
        ax.set_title(f"{_literal(class_name)}\n({note})", fontsize=9)
        ax.axhline(0, color="grey", linewidth=0.8)
        if data.shape[0]:
            _distribution(ax, data, positions, kind)
            offsets = jitter.uniform(-0.12, 0.12, data.shape)
            ax.scatter(positions + offsets, data, s=6, color="black", alpha=0.4, zorder=3)
        else:
            ax.text(0.5, 0.5, "no inputs", transform=ax.transAxes, ha="center", va="center")
        ax.set_xticks(positions, [_literal(n) for n in names], rotation=45, ha="right")
        ax.set_xlim(0.4, len(names) + 0.6)
        ax.grid(axis="y", alpha=0.3)
    for ax in grid[::n_cols]:
        ax.set_ylabel("share of relevance (%)")
    if title:
        figure.suptitle(_literal(title))
    if path is not None:
        _save(figure, path, dpi)
    return figure


def plot_objective_trace(
    traces: Mapping[str, ArrayLike | Sequence[ArrayLike]]
    | Mapping[tuple[str, str], ArrayLike | Sequence[ArrayLike]],
    path: PathLike | None = None,
    *,
    log_x: bool = False,
    log_y: bool = False,
    title: str | None = "Objective during fitting",
    ylabel: str = "objective J(U)",
    dpi: int = 120,
) -> Figure:
    """Objective value against iteration, one line per estimator and restart.

    All lines of one name share its colour (restarts included); names get distinct colours.
    The legend stands beside the axes, so it never hides a curve.

    Parameters
    ----------
    traces:
        Name → its objective per iteration: one trace ``(iterations,)``, several restarts
        ``(restarts, iterations)``, or a sequence of 1-D traces of different lengths.
        Iteration ``i`` (1-based) is ``trace[i - 1]``. NaN leaves a gap. Names are either
        all strings (e.g. estimators; the legend lists each with its number of restarts) or
        all ``(group, name)`` pairs such as ``(method, class)``: the colour then marks the
        name and the line style the group (at most six groups), and the legend lists each
        name once and each group once, however many pairs there are.
    path:
        Save the figure there as a PNG (atomically); default: do not save.
    log_x, log_y:
        Logarithmic iteration / objective axis (``log_y`` needs positive values).
    title, ylabel:
        Figure title and y-axis label.
    dpi:
        Resolution of the saved PNG.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not traces:
        raise ValueError("traces is empty: pass at least one name → objective values")
    lines = {key: _restarts(key, value) for key, value in traces.items()}
    if log_y and any(bool(np.any(t[np.isfinite(t)] <= 0)) for ts in lines.values() for t in ts):
        raise ValueError("log_y needs positive objective values; plot with log_y=False")
    styles, legend = _trace_styles(lines)

    figure = _figure(7.5, 4.0)
    ax = figure.add_subplot()
    for key, restarts in lines.items():
        for trace in restarts:
            ax.plot(
                np.arange(1, trace.size + 1),
                trace,
                **styles[key],
                alpha=1.0 if len(restarts) == 1 else 0.6,
                linewidth=1.2,
            )
    ax.set(xlabel="iteration", ylabel=_literal(ylabel))
    if log_x:
        ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    if title:
        ax.set_title(_literal(title))
    ax.grid(alpha=0.3)
    # Beside the axes (constrained layout makes room): inside, a dozen entries hide curves.
    ax.legend(
        handles=legend,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0.0,
        fontsize=8,
        ncols=1 + (len(legend) - 1) // 18,
    )
    if path is not None:
        _save(figure, path, dpi)
    return figure


# ----- shared drawing ----------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    """A pyplot-free figure on an Agg canvas (no global state, nothing to close)."""
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: PathLike, dpi: int) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)


def _draw(ax: Axes, image: np.ndarray, logmel: LogMelFrontend, **style: object) -> AxesImage:
    """Show ``(n_mels, frames)`` with time in seconds (x) and mel-spaced Hz ticks (y)."""
    n_mels, n_frames = image.shape
    times = logmel.frame_times(n_frames)
    half_hop = logmel.hop_length / logmel.sample_rate / 2
    extent = (times[0] - half_hop, times[-1] + half_hop, -0.5, n_mels - 0.5)
    shown = ax.imshow(
        image, origin="lower", aspect="auto", interpolation="nearest", extent=extent, **style
    )
    bands = np.unique(np.linspace(0, n_mels - 1, min(n_mels, 6)).round().astype(int))
    frequencies = logmel.mel_frequencies()[bands]
    ax.set_yticks(bands, [f"{f:.0f}" for f in frequencies])
    ax.set(xlabel="time (s)", ylabel="frequency (Hz)")
    return shown


def _literal(text: str) -> str:
    """``text`` escaped so that matplotlib draws it as it is, never as mathtext.

    Only an unescaped ``$`` starts mathtext (where ``^``, ``_`` and ``\\`` are special);
    ``\\$`` is drawn as ``$``.
    """
    return text.replace("$", r"\$")


def _fit_titles(figure: Figure, titles: Sequence[tuple[Axes, str, str]]) -> None:
    """Shorten each ``name · note`` axes title that is wider than its axes.

    The middle of the name gives way to "…" (clip names differ at their ends). A title no
    wider than its axes cannot reach the next axes' title.
    """
    figure.draw_without_rendering()  # constrained layout sizes the axes
    renderer = figure.canvas.get_renderer()
    for ax, name, note in titles:
        room = ax.get_window_extent(renderer).width
        width = ax.title.get_window_extent(renderer).width
        keep = len(name)
        while width > room and keep > 1:
            # Cut in proportion to the excess (the note's width makes it an underestimate).
            keep = max(1, min(keep - 1, int(keep * room / width)))
            ax.title.set_text(f"{_literal(_ellipsize(name, keep))} · {note}")
            width = ax.title.get_window_extent(renderer).width


def _ellipsize(text: str, keep: int) -> str:
    """``text`` with its middle replaced by "…" so that ``keep`` of its characters remain."""
    if keep >= len(text):
        return text
    head = (keep + 1) // 2
    return f"{text[:head]}…{text[len(text) - (keep - head) :]}"


def _trace_styles(
    lines: Mapping[str | tuple[str, str], list[np.ndarray]],
) -> tuple[dict[str | tuple[str, str], dict[str, object]], list[Line2D]]:
    """Colour and line style of each trace name, and the legend's entries.

    String names get a colour each; ``(group, name)`` pairs a colour per name and a line
    style per group, with one legend entry per name (its colour) and per group (its style).
    """
    keys = list(lines)
    if all(isinstance(key, str) for key in keys):
        colours = dict(zip(keys, _colours(len(keys)), strict=True))
        legend = [
            Line2D([], [], color=colours[key], label=_literal(_restarts_label(key, lines[key])))
            for key in keys
        ]
        return {key: {"color": colours[key]} for key in keys}, legend
    if not all(
        isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, str) for k in key)
        for key in keys
    ):
        raise ValueError(
            f"trace names must be all strings or all (group, name) pairs of strings, got {keys}"
        )
    groups = list(dict.fromkeys(group for group, _ in keys))
    names = list(dict.fromkeys(name for _, name in keys))
    if len(groups) > len(_LINE_STYLES):
        raise ValueError(
            f"{len(groups)} groups of traces but only {len(_LINE_STYLES)} line styles; "
            "plot fewer groups per figure"
        )
    colours = dict(zip(names, _colours(len(names)), strict=True))
    dashes = dict(zip(groups, _LINE_STYLES, strict=False))  # fewer groups than styles
    legend = [Line2D([], [], color=colours[name], label=_literal(name)) for name in names]
    legend += [
        Line2D([], [], color="black", linestyle=dashes[group], label=_literal(group))
        for group in groups
    ]
    styles = {key: {"color": colours[key[1]], "linestyle": dashes[key[0]]} for key in keys}
    return styles, legend


def _restarts_label(name: str, restarts: list[np.ndarray]) -> str:
    return name if len(restarts) == 1 else f"{name} ({len(restarts)} restarts)"


def _colours(count: int) -> list[tuple[float, ...]]:
    """``count`` distinct colours: tab10's, then their light shades, then a spectrum."""
    if count <= 20:
        # tab20 pairs a dark and a light shade of each hue; the dark ones are tab10.
        shades = colormaps["tab20"].colors
        return [*shades[0::2], *shades[1::2]][:count]
    return [colormaps["turbo"](x) for x in np.linspace(0.05, 0.95, count)]


def _outer_labels(grid: np.ndarray) -> None:
    """Axis labels on the left column and bottom row of a grid only (less clutter)."""
    for (row, col), ax in np.ndenumerate(grid):
        if row != grid.shape[0] - 1:
            ax.set_xlabel("")
        if col != 0:
            ax.set_ylabel("")


def _distribution(ax: Axes, data: np.ndarray, positions: np.ndarray, kind: str) -> None:
    """Boxes or violins of the columns of ``data`` at ``positions``."""
    if kind == "box":
        ax.boxplot(data, positions=positions, widths=0.6, showfliers=False)
        return
    spread = [np.unique(column).size > 1 for column in data.T]
    if any(spread):
        ax.violinplot(
            [column for column, s in zip(data.T, spread, strict=True) if s],
            positions=positions[spread],
            widths=0.8,
            showmedians=True,
        )


def _limit(heatmap: np.ndarray) -> float:
    """Symmetric colour limit of a heatmap (positive even for an all-zero map)."""
    return float(np.abs(heatmap).max()) or 1.0


def _share(relevance: float, total: float) -> str:
    return f"{100 * relevance / total:.0f} %" if total > 0 else f"R = {relevance:.3g}"


def _top_inputs(scores: np.ndarray, count: int) -> np.ndarray:
    """``(columns, min(count, n))`` indices of the inputs with the largest score per column.

    ``scores`` is ``(n, columns)``; each row of the result is by decreasing score, ties in
    input order.
    """
    order = np.argsort(-scores, axis=0, kind="stable")
    return order[:count].T


# ----- validation --------------------------------------------------------------------------


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _explained_inputs(
    logmel_image: ArrayLike | torch.Tensor,
    heatmaps: ArrayLike | torch.Tensor,
    relevances: ArrayLike | torch.Tensor,
    logmel: LogMelFrontend,
    image_name: str = "logmel_image",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Checked inputs ``(n, M, F)``, maps ``(n, K + 1, M, F)``, relevances ``(n, K + 1)``.

    Accepts one input (``(M, F)`` with maps ``(K + 1, [1,] M, F)`` and relevances
    ``(K + 1,)``; the flag returned is then true) or several (``(n, [1,] M, F)``).
    """
    images = _array(logmel_image, image_name)
    single = images.ndim == 2
    if single:
        images = images[None]
    elif images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3 or 0 in images.shape:
        raise ValueError(
            f"{image_name} must be (n_mels, frames), (n, n_mels, frames) or "
            f"(n, 1, n_mels, frames), got shape {np.shape(logmel_image)}"
        )
    n, n_mels, n_frames = images.shape
    _check_bands(n_mels, logmel, image_name)
    maps = _array(heatmaps, "heatmaps")
    scores = _array(relevances, "relevances")
    if single:
        maps, scores = maps[None], scores[None]
    if maps.ndim == 5 and maps.shape[2] == 1:
        maps = maps[:, :, 0]
    if maps.ndim != 4 or maps.shape[0] != n or maps.shape[2:] != (n_mels, n_frames):
        raise ValueError(
            f"heatmaps {np.shape(heatmaps)} do not match the input(s) {np.shape(logmel_image)}: "
            "expected (K + 1, [1,] n_mels, frames) per input"
        )
    n_maps = maps.shape[1]
    if n_maps < 2:
        raise ValueError(f"heatmaps need at least one concept and the residual, got {n_maps} map")
    if scores.shape != (n, n_maps):
        raise ValueError(
            f"relevances {np.shape(relevances)} do not match {n_maps} heatmaps (K + 1) "
            f"for {n} input(s): expected {(n_maps,) if single else (n, n_maps)}"
        )
    return images, maps, scores, single


def _array(value: ArrayLike | torch.Tensor, name: str) -> np.ndarray:
    """``value`` as a finite float64 array (tensors are detached and moved to the CPU)."""
    if torch.is_tensor(value):
        value = value.detach().cpu().double().numpy()
    array = np.asarray(value, dtype=np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return array


def _image(value: ArrayLike | torch.Tensor, name: str, logmel: LogMelFrontend) -> np.ndarray:
    array = _array(value, name)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"{name} must be (n_mels, frames), got shape {np.shape(value)}")
    _check_bands(array.shape[0], logmel, name)
    return array


def _check_bands(n_mels: int, logmel: LogMelFrontend, name: str) -> None:
    if n_mels != logmel.n_mels:
        raise ValueError(
            f"{name} has {n_mels} mel bands but the front-end has {logmel.n_mels}; "
            "pass the front-end that made the images"
        )


def _concept_names(names: Sequence[str] | None, n_maps: int) -> list[str]:
    """Names of the K concept maps and the residual, from K or K + 1 names."""
    if names is not None and len(names) == n_maps - 1:
        names = [*names, "residual"]
    default = [f"concept {k + 1}" for k in range(n_maps - 1)] + ["residual"]
    return _labels(names, n_maps, "concept_names (K or K + 1 names)", default)


def _labels(
    names: Sequence[str] | None, count: int, what: str, default: str | list[str]
) -> list[str]:
    if names is None:
        if isinstance(default, list):
            return default
        return [default.format(i + 1) for i in range(count)]
    labels = [str(n) for n in names]
    if len(labels) != count:
        raise ValueError(f"{what}: got {len(labels)} names for {count} items")
    return labels


def _restarts(
    name: str | tuple[str, str], value: ArrayLike | Sequence[ArrayLike]
) -> list[np.ndarray]:
    """One or more 1-D traces from a 1-D array, a 2-D array or a list of 1-D arrays."""
    array = np.asarray(value, dtype=object if _ragged(value) else np.float64)
    if array.dtype == object:
        traces = [np.asarray(v, dtype=np.float64) for v in value]
    elif array.ndim == 1:
        traces = [array]
    elif array.ndim == 2:
        traces = list(array)
    else:
        raise ValueError(
            f"trace {name!r} must be (iterations,) or (restarts, iterations), got {array.shape}"
        )
    for trace in traces:
        if trace.ndim != 1 or trace.size == 0:
            raise ValueError(f"trace {name!r} has an empty or multi-dimensional restart")
        if np.isinf(trace).any() or np.isnan(trace).all():
            raise ValueError(f"trace {name!r} contains Inf or only NaN")
    return traces


def _ragged(value: object) -> bool:
    """Whether ``value`` is a sequence of 1-D sequences of different lengths."""
    if isinstance(value, np.ndarray) or torch.is_tensor(value) or not isinstance(value, Sequence):
        return False
    lengths = {np.size(v) for v in value if np.ndim(v) == 1}
    return len(lengths) > 1


def plot_flipping_curves(
    results: Mapping[str, PatchFlippingResult | Sequence[PatchFlippingResult]],
    path: str | os.PathLike[str],
    *,
    title: str = "Patch flipping",
    dpi: int = 120,
) -> None:
    """Mean normalised perturbation curve per method with an s.e.m. band, as a PNG.

    Parameters
    ----------
    results:
        Method name → a :class:`PatchFlippingResult` or a sequence of them (seeds); the
        valid inputs of all of a method's results are pooled. All results must share the
        same fraction grid (same ``n_points``).
    path:
        Output PNG; written atomically (temporary file in the same directory, then
        ``os.replace``), parent directories created.
    title:
        Figure title.
    dpi:
        Resolution of the PNG.
    """
    if not results:
        raise ValueError("plot_flipping_curves needs at least one method")
    curves = {method: pooled_curves(method, entry) for method, entry in results.items()}
    grid = next(iter(curves.values()))[0]
    if any(not np.array_equal(g, grid) for g, _ in curves.values()):
        raise ValueError("results use different fraction grids; run them with the same n_points")
    rows = {row.method: row for row in aupc_table(results)}

    # A bare Figure on an Agg canvas: no pyplot state, so nothing stays open after saving.
    figure = Figure(figsize=(5.5, 4.0))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    for method, (fractions, normalized) in curves.items():
        if normalized.shape[0] == 0:
            ax.plot([], [], label=f"{_literal(method)} (no valid inputs)")
            continue
        row = rows[method]
        label = f"{_literal(method)} (AUPC {row.mean:.3f} ± {row.sem:.3f}, n={row.n})"
        mean = normalized.mean(axis=0)
        (line,) = ax.plot(fractions, mean, label=label)
        if normalized.shape[0] > 1:
            _, sem = mean_sem(normalized, axis=0)
            ax.fill_between(fractions, mean - sem, mean + sem, color=line.get_color(), alpha=0.25)
    ax.set(xlabel="fraction of area removed", ylabel="f(x) / f(x₀)", xlim=(0, 1))
    ax.set_title(_literal(title))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")


def plot_sanity_checks(
    result: Mapping[str, Any],
    path: PathLike,
    *,
    title: str | None = "Model randomisation sanity checks",
    dpi: int = 120,
) -> Path:
    """Similarity of the concept maps with the trained model's against the randomisation step.

    Draws, for the concept maps, the mean signed Spearman correlation and the mean SSIM with
    an s.e.m. band at each step of the cascade (step 0 ``none``: the unrandomised copy; the
    x tick labels name the layer randomised at each step, all earlier ones staying
    randomised), the standard map's as thin dashed lines, a vertical line between the layers
    above the analysed layer and those below it, and the random-class check's mean ± s.e.m.
    as horizontal bands in the same colours.

    Parameters
    ----------
    result:
        What :func:`~audio_concepts.sanity_checks.sanity_checks` returned (or its JSON).
    path:
        Output file, written atomically: SVG for a ``.svg`` suffix, else PNG.
    title:
        Axes title; ``None`` for none.
    dpi:
        Resolution of a PNG.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    steps = result["cascading"]["steps"]
    if not steps:
        raise ValueError("the result has no cascading steps to plot")
    layer = result.get("settings", {}).get("layer", "analysed layer")
    labels = ["none" if step["randomized"] is None else str(step["randomized"]) for step in steps]
    x = np.arange(len(steps))
    metrics = {"spearman": ("Spearman ρ", "C0"), "ssim": ("SSIM (|maps|)", "C1")}

    def numbers(summary: Mapping[str, Any]) -> tuple[float, float]:
        mean, sem = summary.get("mean"), summary.get("sem")
        return (np.nan if mean is None else mean), (np.nan if sem is None else sem)

    figure = _figure(max(6.0, 0.55 * len(steps) + 2.5), 4.2)
    ax = figure.add_subplot()
    for metric, (name, colour) in metrics.items():
        mean, sem = np.array([numbers(step["concepts"][metric]) for step in steps]).T
        ax.plot(x, mean, marker="o", color=colour, label=f"concepts: {name}")
        ax.fill_between(x, mean - sem, mean + sem, color=colour, alpha=0.25, linewidth=0)
        standard = np.array([numbers(step["standard"][metric])[0] for step in steps])
        ax.plot(x, standard, "--", color=colour, linewidth=1, label=f"standard map: {name}")
        check = result.get("random_class", {})
        if not check.get("skipped", True):
            class_mean, class_sem = numbers(check["concepts"][metric])
            if np.isfinite(class_mean):
                band = class_sem if np.isfinite(class_sem) else 0.0
                ax.axhspan(class_mean - band, class_mean + band, color=colour, alpha=0.12)
                ax.axhline(class_mean, color=colour, linestyle=":", label=f"random class: {name}")
    above = [bool(step["above_layer"]) for step in steps[1:]]
    boundary = 0.5 + sum(above)  # steps 1 .. n_above randomise the layers above
    ax.axvline(boundary, color="0.3", linewidth=1)
    ax.text(
        boundary,
        -1.0,
        _literal(f" ← above | below {layer} →"),
        ha="center",
        va="bottom",
        fontsize=7,
        color="0.3",
        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8},
    )
    ax.set_xticks(x, [_literal(label) for label in labels], rotation=45, ha="right")
    ax.set(xlabel="layer randomised (cumulative, top down)", ylabel="similarity with original")
    ax.set_ylim(-1.05, 1.05)
    ax.axhline(0, color="0.7", linewidth=0.8)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(_literal(title))
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8)
    target = Path(path)
    with atomic_path(target) as tmp:
        figure.savefig(tmp, format="svg" if target.suffix.lower() == ".svg" else "png", dpi=dpi)
    return target
