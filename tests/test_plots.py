"""Figures: valid PNGs, relevance shares in titles, axes in Hz and seconds, input checks."""

import itertools
import os

import matplotlib.image
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.text import Text
from test_patch_flipping import linear_problem

from audio_cnn.frontend import LogMel, LogMelConfig
from audio_concepts.plots import (
    plot_concept_distribution,
    plot_concept_grid,
    plot_concept_prototypes,
    plot_flipping_curves,
    plot_objective_trace,
    plot_spectrogram,
)
from zennit_drsa.evaluation import patch_flipping

SMALL = LogMelConfig(
    sample_rate=8000, n_fft=256, hop_length=128, n_mels=16, f_max=None, n_frames=12,
    chunk_seconds=0.25,
)  # fmt: skip
DPI = 30  # small PNGs keep the tests fast
M, F = SMALL.n_mels, SMALL.n_frames
SHARES = np.array([0.2, 0.31, 0.4, 0.09])  # three concepts and the residual


@pytest.fixture(scope="module")
def logmel() -> LogMel:
    return LogMel(SMALL)


def _png(path) -> np.ndarray:
    """The PNG at ``path`` read back; checks that it is a real, non-empty image."""
    assert path.stat().st_size > 0
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4) and min(image.shape[:2]) > 20
    assert image[..., :3].std() > 0  # not a blank canvas
    return image


def _no_temp_files(folder) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def _titles(figure: Figure) -> list[str]:
    return [ax.get_title() for ax in figure.axes if ax.get_title()]


def _drawn_as(text: Text, literal: str) -> bool:
    """Whether ``text`` is drawn like ``literal`` shown as plain text (no mathtext)."""
    renderer = text.figure.canvas.get_renderer()
    reference = text.figure.text(
        0,
        0,
        literal,
        fontproperties=text.get_fontproperties(),
        rotation=text.get_rotation(),
        parse_math=False,
    )
    try:
        drawn = text.get_window_extent(renderer)
        expected = reference.get_window_extent(renderer)
        return bool(np.allclose(drawn.size, expected.size))
    finally:
        reference.remove()


def _suptitle(figure: Figure) -> Text:
    (text,) = [t for t in figure.texts if t.get_text() == figure.get_suptitle()]
    return text


def _overlap(a, b) -> bool:
    """Whether two display-space boxes share any area (touching edges do not count)."""
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_spectrogram_axes_are_seconds_and_hz(logmel, tmp_path, rng):
    image = rng.uniform(-4, 0, (M, F))
    figure = plot_spectrogram(image, logmel, path=tmp_path / "s.png", dpi=DPI)
    _png(tmp_path / "s.png")
    ax = figure.axes[0]
    assert ax.get_xlabel() == "time (s)" and ax.get_ylabel() == "frequency (Hz)"
    labels = [t.get_text() for t in ax.get_yticklabels()]
    bands = ax.get_yticks().round().astype(int)
    assert labels == [f"{f:.0f}" for f in logmel.mel_frequencies()[bands]]
    assert labels[0] != labels[-1] and bands[0] == 0 and bands[-1] == M - 1
    times = logmel.frame_times()
    half_hop = SMALL.hop_length / SMALL.sample_rate / 2
    assert ax.get_xlim() == pytest.approx((times[0] - half_hop, times[-1] + half_hop))
    assert figure.axes[1].get_ylabel() == "log10 mel magnitude"  # the colour bar
    _no_temp_files(tmp_path)


def test_spectrogram_draws_into_given_axes(logmel, rng):
    figure = Figure()
    ax = figure.add_subplot()
    result = plot_spectrogram(torch.rand(1, M, F), logmel, ax, title="mine", colorbar=False)
    assert result is figure and ax.get_title() == "mine" and len(figure.axes) == 1


def test_concept_grid_titles_carry_shares(logmel, tmp_path, rng):
    heatmaps = rng.standard_normal((4, 1, M, F))
    figure = plot_concept_grid(
        rng.uniform(-4, 0, (M, F)), heatmaps, SHARES, logmel, tmp_path / "g.png",
        title="clip", dpi=DPI,
    )  # fmt: skip
    _png(tmp_path / "g.png")
    assert _titles(figure) == [
        "input",
        "standard · R = 1",
        "concept 1 · 20 %",
        "concept 2 · 31 %",
        "concept 3 · 40 %",
        "residual · 9 %",
    ]
    images = [ax.images[0] for ax in figure.axes if ax.images]
    assert len(images) == 6
    standard = images[1]
    np.testing.assert_allclose(standard.get_array(), heatmaps[:, 0].sum(axis=0))
    limit = np.abs(heatmaps.sum(axis=0)).max()
    for shown in images[1:]:  # shared, symmetric scale centred at 0
        assert shown.get_clim() == pytest.approx((-limit, limit))
        assert shown.get_cmap().name == "bwr"
    assert figure.get_suptitle() == "clip"


def test_concept_grid_rows_for_several_inputs(logmel, tmp_path, rng):
    heatmaps = rng.standard_normal((2, 4, M, F))
    relevances = np.stack([SHARES, [-0.5, 0.1, 0.2, 0.0]])
    figure = plot_concept_grid(
        torch.rand(2, 1, M, F), heatmaps, relevances, logmel, tmp_path / "g.png",
        concept_names=["beat", "bass", "voice"], input_names=["a", "b"], shared_scale=False,
        dpi=DPI,
    )  # fmt: skip
    _png(tmp_path / "g.png")
    titles = _titles(figure)
    assert titles[:6] == ["a", "standard · R = 1", "beat · 20 %", "bass · 31 %", "voice · 40 %",
                          "residual · 9 %"]  # fmt: skip
    # A non-positive total has no shares: the raw relevances are shown instead.
    assert titles[6:] == ["b", "standard · R = -0.2", "beat · R = -0.5", "bass · R = 0.1",
                          "voice · R = 0.2", "residual · R = 0"]  # fmt: skip
    limits = {ax.images[0].get_clim() for ax in figure.axes if ax.images}
    assert len(limits) > 3  # each heatmap on its own scale
    ylabels = [ax.get_ylabel() for ax in figure.axes if ax.images]
    assert ylabels.count("frequency (Hz)") == 2  # left column only


@pytest.mark.parametrize(
    ("image", "heatmaps", "relevances", "match"),
    [
        ((M, F), (4, M + 1, F), (4,), "do not match the input"),
        ((M, F), (4, M, F - 1), (4,), "do not match the input"),
        ((M, F), (4, M, F), (3,), "do not match 4 heatmaps"),
        ((M, F), (1, M, F), (1,), "at least one concept"),
        ((2, M, F), (3, 4, M, F), (3, 4), "do not match the input"),
        ((2, M, F), (2, 4, M, F), (4,), "do not match 4 heatmaps"),
        ((M + 1, F), (4, M + 1, F), (4,), "mel bands"),
        ((2, 2, M, F), (2, 4, M, F), (2, 4), "logmel_image must be"),
    ],
)
def test_concept_grid_rejects_mismatched_shapes(logmel, image, heatmaps, relevances, match):
    with pytest.raises(ValueError, match=match):
        plot_concept_grid(np.zeros(image), np.zeros(heatmaps), np.ones(relevances), logmel)


def test_concept_grid_rejects_bad_values_and_names(logmel):
    good = (np.zeros((M, F)), np.zeros((4, M, F)), SHARES)
    with pytest.raises(ValueError, match="NaN or Inf"):
        plot_concept_grid(good[0], good[1] * np.nan, good[2], logmel)
    with pytest.raises(ValueError, match="2 names for 4"):
        plot_concept_grid(*good, logmel, concept_names=["a", "b"])
    with pytest.raises(ValueError, match="input_names"):
        plot_concept_grid(*good, logmel, input_names=["a", "b"])


def test_concept_distribution(tmp_path, rng):
    relevances = rng.uniform(0.1, 1, (30, 4))
    relevances[:3] *= -1  # no positive total: left out
    labels = np.arange(30) % 3
    labels[labels == 2] = 0  # class 2 has no inputs
    for kind in ("box", "violin"):
        path = tmp_path / f"{kind}.png"
        figure = plot_concept_distribution(
            relevances, labels, ["pop", "metal", "jazz"], path, kind=kind, dpi=DPI
        )
        _png(path)
        pop, metal, jazz = figure.axes
        assert pop.get_title() == "pop\n(n = 18, 2 with R ≤ 0 left out)"
        assert metal.get_title() == "metal\n(n = 9, 1 with R ≤ 0 left out)"
        assert jazz.get_title() == "jazz\n(n = 0)"
        assert [t.get_text() for t in pop.get_xticklabels()] == [
            "concept 1", "concept 2", "concept 3", "residual"
        ]  # fmt: skip
        assert pop.get_ylabel() == "share of relevance (%)"
        # The dots are the shares in percent of the kept inputs of the class.
        dots = pop.collections[-1].get_offsets()[:, 1]
        kept = relevances[3:][labels[3:] == 0]
        expected = 100 * kept / kept.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(np.sort(dots), np.sort(expected.ravel()))


@pytest.mark.parametrize(
    ("relevances", "labels", "match"),
    [
        (np.ones((5, 4)), np.zeros(4, int), "labels must be 5"),
        (np.ones((5, 4)), np.zeros(5), "integer"),
        (np.ones((5, 4)), np.full(5, 2), r"\[0, 2\)"),
        (np.ones((5, 4)), np.full(5, -1), r"\[0, 2\)"),
        (np.ones((5, 1)), np.zeros(5, int), "K \\+ 1 >= 2"),
        (np.ones(5), np.zeros(5, int), "K \\+ 1 >= 2"),
        (np.full((5, 4), np.inf), np.zeros(5, int), "NaN or Inf"),
    ],
)
def test_concept_distribution_rejects_bad_input(relevances, labels, match):
    with pytest.raises(ValueError, match=match):
        plot_concept_distribution(relevances, labels, ["a", "b"])


def test_concept_distribution_wraps_many_classes(tmp_path):
    names = [f"genre {i}" for i in range(7)]
    figure = plot_concept_distribution(
        np.ones((7, 3)), np.arange(7), names, tmp_path / "d.png", columns=3, dpi=DPI
    )
    _png(tmp_path / "d.png")
    visible = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title().split("\n")[0] for ax in visible] == names
    assert len(figure.axes) == 9  # a 3 × 3 grid, two panels hidden
    assert [ax.get_ylabel() for ax in visible].count("share of relevance (%)") == 3


@pytest.mark.parametrize(
    ("options", "match"),
    [({"kind": "bar"}, "kind"), ({"columns": 0}, "columns"), ({"class_names": []}, "empty")],
)
def test_concept_distribution_rejects_bad_options(options, match):
    arguments = {"class_names": ["a"], **options}
    with pytest.raises(ValueError, match=match):
        plot_concept_distribution(np.ones((2, 3)), np.zeros(2, int), **arguments)


# Five inputs; relevance of concept 1, concept 2 and the residual per input (hand-made ranks).
PROTOTYPE_RELEVANCES = np.array(
    [
        [0.1, 0.6, 0.3],  # a
        [0.5, 0.2, 0.3],  # b
        [-0.2, 0.9, 0.3],  # c
        [0.5, 0.1, -0.1],  # d: ties with b for concept 1, comes after it
        [0.3, 0.3, 0.4],  # e
    ]
)


def test_concept_prototypes_rank_inputs_by_concept_relevance(logmel, tmp_path, rng):
    heatmaps = rng.standard_normal((5, 3, 1, M, F))
    figure = plot_concept_prototypes(
        rng.uniform(-4, 0, (5, 1, M, F)), heatmaps, PROTOTYPE_RELEVANCES, logmel,
        tmp_path / "p.png", n_prototypes=3, clip_names=list("abcde"),
        concept_names=["beat", "voice"], dpi=DPI,
    )  # fmt: skip
    _png(tmp_path / "p.png")
    panels = [ax for ax in figure.axes if ax.images]
    # Rows: beat (b, d tie in input order, then e), voice (c, a, e), residual (e, then a, b, c
    # tie at 0.3: the first two). Titles carry the concept's share of the input's relevance.
    assert [ax.get_title() for ax in panels] == [
        "b · 50 %", "d · 100 %", "e · 30 %",
        "c · 90 %", "a · 60 %", "e · 30 %",
        "e · 40 %", "a · 30 %", "b · 30 %",
    ]  # fmt: skip
    # Each panel: the log-mel input, then the heatmap of its concept over it.
    order = [1, 3, 4, 2, 0, 4, 4, 0, 1]
    for panel, row, i in zip(panels, np.repeat([0, 1, 2], 3), order, strict=True):
        base, overlay = panel.images
        assert base.get_cmap().name == "Greys"
        np.testing.assert_allclose(overlay.get_array(), heatmaps[i, row, 0])
        assert overlay.get_clim()[0] == -overlay.get_clim()[1]
    assert panels[0].get_ylabel() == "beat\nfrequency (Hz)"
    assert panels[6].get_ylabel() == "residual\nfrequency (Hz)"
    assert panels[6].get_xlabel() == "time (s)" and panels[0].get_xlabel() == ""
    assert figure.get_suptitle() == "Most relevant chunks per concept"


def test_concept_prototypes_without_residual_and_with_few_inputs(logmel, rng):
    relevances = np.array([[1.0, -2.0, 0.0], [-1.0, -1.0, 0.0]])  # second: total ≤ 0
    figure = plot_concept_prototypes(
        rng.uniform(-4, 0, (2, M, F)), np.zeros((2, 3, M, F)), relevances, logmel,
        n_prototypes=5, residual=False, title=None,
    )  # fmt: skip
    panels = [ax for ax in figure.axes if ax.images]
    assert [ax.get_title() for ax in panels] == [
        "input 1 · R = 1", "input 2 · R = -1", "input 2 · R = -1", "input 1 · R = -2"
    ]  # fmt: skip
    assert figure.get_suptitle() == ""


def test_prototype_titles_never_overlap_even_with_long_clip_names(logmel, tmp_path, rng):
    speakers = ["jackson", "nicolas", "theo", "yweweler", "george"]
    clips = [f"speaker_{s}_recording_session_2019_take_{i:04d}.wav" for i, s in enumerate(speakers)]
    figure = plot_concept_prototypes(
        rng.uniform(-4, 0, (5, M, F)), rng.standard_normal((5, 3, M, F)), PROTOTYPE_RELEVANCES,
        logmel, tmp_path / "p.png", n_prototypes=4, clip_names=clips, dpi=DPI,
    )  # fmt: skip
    _png(tmp_path / "p.png")
    figure.draw_without_rendering()
    renderer = figure.canvas.get_renderer()
    panels = [ax for ax in figure.axes if ax.images]
    boxes = [ax.title.get_window_extent(renderer) for ax in panels]
    for (i, a), (j, b) in itertools.combinations(enumerate(boxes), 2):
        assert not _overlap(a, b), f"titles {panels[i].get_title()!r} and {panels[j].get_title()!r}"
    for ax, box in zip(panels, boxes, strict=True):
        area = ax.get_window_extent(renderer)
        assert area.x0 <= box.x0 and box.x1 <= area.x1, ax.get_title()
    # Shortened in the middle: the start and the end (take number, share) stay readable.
    first = panels[0].get_title()
    assert first.startswith("speaker_") and first.endswith("_0001.wav · 50 %")
    assert "…" in first and len(first) < len(clips[1]) + len(" · 50 %")


def test_names_with_mathtext_characters_are_drawn_as_they_are(logmel, tmp_path, rng):
    classes = ["a$x^$", r"b\$_{c}$"]
    clips = ["one$two$.wav", "x^2_$y$.wav"]
    distribution = plot_concept_distribution(
        rng.uniform(0.1, 1, (4, 3)), np.array([0, 1, 0, 1]), classes, tmp_path / "d.png",
        concept_names=["$k$", "c_1"], title=f"{classes[0]} shares", dpi=DPI,
    )  # fmt: skip
    _png(tmp_path / "d.png")
    first, second = distribution.axes
    assert _drawn_as(first.title, f"{classes[0]}\n(n = 2)")
    assert _drawn_as(second.title, f"{classes[1]}\n(n = 2)")
    assert _drawn_as(_suptitle(distribution), f"{classes[0]} shares")
    assert _drawn_as(first.get_xticklabels()[0], "$k$")
    prototypes = plot_concept_prototypes(
        rng.uniform(-4, 0, (2, M, F)), rng.standard_normal((2, 3, M, F)), np.ones((2, 3)),
        logmel, tmp_path / "p.png", clip_names=clips, concept_names=["$k$", "c_1"],
        title=f"{classes[0]}: prototypes", dpi=DPI,
    )  # fmt: skip
    _png(tmp_path / "p.png")
    panel = next(ax for ax in prototypes.axes if ax.images)
    assert _drawn_as(panel.title, f"{clips[0]} · 33 %")
    assert _drawn_as(panel.yaxis.label, "$k$\nfrequency (Hz)")
    assert _drawn_as(_suptitle(prototypes), f"{classes[0]}: prototypes")
    grid = plot_concept_grid(
        rng.uniform(-4, 0, (M, F)), rng.standard_normal((3, M, F)), np.ones(3), logmel,
        tmp_path / "g.png", input_names=[clips[1]], title=classes[0], dpi=DPI,
    )  # fmt: skip
    _png(tmp_path / "g.png")
    assert _drawn_as(grid.axes[0].title, clips[1])
    assert _drawn_as(_suptitle(grid), classes[0])
    trace = plot_objective_trace(
        {("drsa", name): [3.0, 2.0, 1.0] for name in classes}, tmp_path / "t.png", dpi=DPI
    )
    _png(tmp_path / "t.png")
    texts = trace.axes[0].get_legend().get_texts()
    for text, name in zip(texts, [*classes, "drsa"], strict=True):
        assert _drawn_as(text, name), name


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"n_prototypes": 0}, "n_prototypes"),
        ({"clip_names": ["a"]}, "clip_names"),
        ({"relevances": np.zeros((2, 2))}, "do not match 3 heatmaps"),
        ({"logmel_images": np.zeros((2, M + 1, F))}, "logmel_images has 17 mel bands"),
    ],
)
def test_concept_prototypes_reject_bad_input(logmel, options, match):
    arguments = {
        "logmel_images": np.zeros((2, M, F)),
        "heatmaps": np.zeros((2, 3, M, F)),
        "relevances": np.zeros((2, 3)),
        **options,
    }
    with pytest.raises(ValueError, match=match):
        plot_concept_prototypes(logmel=logmel, **arguments)


def test_objective_trace_lines_per_restart(tmp_path, rng):
    traces = {
        "DRSA": np.cumsum(rng.uniform(size=(3, 50)), axis=1),
        "PRCA": [1.0, 2.0, 3.0],
        "DSA": [np.arange(1.0, 10), np.arange(1.0, 30)],  # restarts of different lengths
    }
    figure = plot_objective_trace(traces, tmp_path / "t.png", log_x=True, log_y=True, dpi=DPI)
    _png(tmp_path / "t.png")
    (ax,) = figure.axes
    assert len(ax.lines) == 6
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert ax.get_xlabel() == "iteration"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["DRSA (3 restarts)", "PRCA", "DSA (2 restarts)"]
    np.testing.assert_array_equal(ax.lines[3].get_xdata(), [1, 2, 3])
    assert ax.lines[0].get_color() == ax.lines[2].get_color() != ax.lines[3].get_color()


def test_objective_legend_has_a_colour_per_class_and_a_style_per_method_beside_the_axes(
    tmp_path, rng
):
    classes = [f"digit {c}" for c in range(10)]
    methods = ["drsa", "dsa"]
    traces = {
        (method, name): np.cumsum(rng.uniform(size=(3, 20)), axis=1)  # three seeds
        for method in methods
        for name in classes
    }
    figure = plot_objective_trace(traces, tmp_path / "t.png", dpi=DPI)
    _png(tmp_path / "t.png")
    (ax,) = figure.axes
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == [*classes, *methods]
    handles = legend.legend_handles
    entries = [
        (tuple(h.get_color()) if h.get_color() != "black" else "black", h.get_linestyle())
        for h in handles
    ]
    assert len(set(entries)) == len(entries)
    class_colours = [entry[0] for entry in entries[: len(classes)]]
    assert len(set(class_colours)) == len(classes) and "black" not in class_colours
    assert len({entry[1] for entry in entries[len(classes) :]}) == len(methods)
    # Every line of a class has its colour, every line of a method its style; seeds alike.
    assert len(ax.lines) == len(traces) * 3
    seeds = [key for key in traces for _ in range(3)]
    for line, (method, name) in zip(ax.lines, seeds, strict=True):
        assert tuple(line.get_color()) == class_colours[classes.index(name)]
        assert line.get_linestyle() == handles[len(classes) + methods.index(method)].get_linestyle()
    # The legend stays clear of the data area.
    figure.draw_without_rendering()
    renderer = figure.canvas.get_renderer()
    assert not _overlap(legend.get_window_extent(renderer), ax.get_window_extent(renderer))


def test_objective_legend_colours_stay_distinct_beyond_ten_names(rng):
    figure = plot_objective_trace({f"estimator {i}": rng.uniform(size=5) for i in range(25)})
    colours = [tuple(h.get_color()) for h in figure.axes[0].get_legend().legend_handles]
    assert len(set(colours)) == 25


@pytest.mark.parametrize(
    ("traces", "options", "match"),
    [
        ({}, {}, "empty"),
        ({"a": [1.0], ("m", "a"): [1.0]}, {}, "all strings or all"),
        ({("m", "a", "x"): [1.0]}, {}, "all strings or all"),
        ({(f"m{i}", "a"): [1.0] for i in range(7)}, {}, "7 groups"),
        ({"a": np.zeros((2, 2, 2))}, {}, "restarts, iterations"),
        ({"a": []}, {}, "empty"),
        ({"a": [1.0, np.inf]}, {}, "Inf"),
        ({"a": [np.nan, np.nan]}, {}, "only NaN"),
        ({"a": [1.0, 0.0]}, {"log_y": True}, "positive"),
    ],
)
def test_objective_trace_rejects_bad_input(traces, options, match):
    with pytest.raises(ValueError, match=match):
        plot_objective_trace(traces, **options)


def test_saving_replaces_an_existing_file_atomically(logmel, tmp_path, rng):
    path = tmp_path / "deep" / "figure.png"
    plot_spectrogram(rng.uniform(-4, 0, (M, F)), logmel, path=path, dpi=DPI)
    first = path.read_bytes()
    plot_spectrogram(rng.uniform(-4, 0, (M, F)), logmel, path=path, dpi=DPI, title="other")
    assert path.read_bytes() != first
    _png(path)
    _no_temp_files(path.parent)


def test_plot_flipping_curves_writes_a_png_atomically(tmp_path):
    model, inputs, targets, exact = linear_problem(n_inputs=3)
    exact_run = patch_flipping(model, inputs, exact, targets, patch_size=4, removal=0.0)
    reversed_run = patch_flipping(model, inputs, -exact, targets, patch_size=4, removal=0.0)
    path = tmp_path / "figures" / "flipping.png"
    plot_flipping_curves({"exact": exact_run, "reversed": [reversed_run, reversed_run]}, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(path.parent) == ["flipping.png"]
    coarse = patch_flipping(model, inputs, exact, targets, patch_size=4, n_points=11, removal=0.0)
    with pytest.raises(ValueError, match="n_points"):
        plot_flipping_curves({"fine": exact_run, "coarse": coarse}, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="need PatchFlippingResults"):
        plot_flipping_curves({"array": [0.1, 0.2]}, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
