"""The HTML report as a person sees it: rendered by headless Chromium, with the network cut.

A realistic report (two classes, each a matplotlib grid of heatmaps with K = 3 concept
players, plus a table and the settings) is opened from a file. Chromium's DOM dump shows
what was built; a screenshot shows that each class's figure was decoded and drawn (each
grid has a background colour found nowhere else on the page); screenshots of the page
opened at a figure's fragment and at the Close links' fragment show a figure enlarged over
the page and closed again; Chromium's network log shows that the page asked for nothing.
Control pages prove the network check can fail.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import soundfile as sf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from audio_concepts.report import MeanSem, Panel, Report

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="headless Chromium is not installed at /usr/bin/chromium "
    "(Debian: apt-get install chromium; .ci/run installs it)",
)

_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Containers often have a tiny /dev/shm; shared memory there can crash the renderer.
    "--disable-dev-shm-usage",
    # No name resolves: any attempt to reach a server fails instead of hanging.
    "--host-resolver-rules=MAP * ~NOTFOUND",
    # Exact sRGB pixels, so the figures' known colours can be found in the screenshot.
    "--force-color-profile=srgb",
    "--hide-scrollbars",
)
_WINDOW = (1280, 2400)
# Each class's figure has a background colour that appears nowhere else on the page.
_CLASS_COLOURS = {"kick drum": (255, 0, 255), "hi-hat": (0, 255, 255)}
_K = 3
_TIMEOUT_S = 60


def _grid_png(colour: tuple[int, int, int], seed: int) -> bytes:
    """Standard, K concept and residual heatmaps of one class as one PNG."""
    rng = np.random.default_rng(seed)
    background = tuple(c / 255 for c in colour)
    # 900 × 240 px: narrower than two grid columns (no full row), wider than one column.
    figure = Figure(figsize=(7.5, 2.0), dpi=120, facecolor=background)
    FigureCanvasAgg(figure)  # headless, no pyplot: the test leaves the backend alone
    axes = figure.subplots(1, _K + 2)
    for ax, name in zip(
        axes, ["standard", *(f"concept {k + 1}" for k in range(_K)), "residual"], strict=True
    ):
        ax.imshow(rng.standard_normal((32, 32)), cmap="bwr", vmin=-3, vmax=3, origin="lower")
        ax.set_title(name, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", facecolor=background)
    return buffer.getvalue()


def _concept_wav(frequency: float, sample_rate: int = 16000) -> bytes:
    t = np.arange(sample_rate) / sample_rate
    buffer = io.BytesIO()
    sf.write(buffer, 0.3 * np.sin(2 * np.pi * frequency * t), sample_rate, format="WAV")
    return buffer.getvalue()


def _realistic_report() -> tuple[Report, dict[str, bytes]]:
    report = Report("DRSA concepts of the toy task", "Two classes, K = 3 concepts each.")
    concepts = report.section("Concepts", "One panel per class: heatmaps and concept audio.")
    grids = {
        name: _grid_png(colour, seed) for seed, (name, colour) in enumerate(_CLASS_COLOURS.items())
    }
    concepts.panel_grid(
        [
            Panel(
                name,
                png,
                f"Relevance of {name} split into {_K} concepts and the residual.",
                {f"concept {k + 1}": _concept_wav(220.0 * (k + 1)) for k in range(_K)},
            )
            for name, png in grids.items()
        ]
    )
    results = report.section("Patch flipping", "Area under the curve; lower is better.")
    results.table(
        [
            {"method": "drsa", "AUPC": MeanSem(0.412, 0.011), "recovery": MeanSem(0.71, 0.02)},
            {"method": "prca", "AUPC": MeanSem(0.455, 0.012), "recovery": MeanSem(0.52, 0.02)},
            {"method": "standard", "AUPC": MeanSem(0.483, 0.013), "recovery": None},
        ],
        caption="Mean ± s.e.m. over 64 inputs and 2 seeds",
    )
    report.section("Settings").settings(
        {"layer": "features.10", "n_subspaces": _K, "seeds": [0, 1]}
    )
    return report, grids


class _Elements(HTMLParser):
    """Tags and attributes of a document, each with the indices of its open ancestors.

    ``text`` maps an element's index to the text inside it (descendants' included).
    """

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None], tuple[int, ...]]] = []
        self.text: dict[int, str] = {}
        self._open: list[int] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs), tuple(self._open)))
        if tag not in ("img", "meta", "br", "link", "source"):
            self._open.append(len(self.elements) - 1)

    def handle_endtag(self, tag):
        while self._open and self.elements[self._open.pop()][0] != tag:
            pass

    def handle_data(self, data):
        for index in self._open:
            self.text[index] = self.text.get(index, "") + data

    def tags(self, tag: str) -> list[tuple[int, dict[str, str | None], tuple[int, ...]]]:
        return [(i, a, p) for i, (t, a, p) in enumerate(self.elements) if t == tag]


def _chromium(page: Path, work: Path, *mode: str, fragment: str = "") -> tuple[str, list[str]]:
    """Open ``page`` in a fresh headless Chromium; its stdout and the URLs the page requested.

    ``fragment`` (e.g. ``"#figure-1"``) is appended to the page's URL.
    """
    net_log = work / "net-log.json"
    command = [
        str(CHROMIUM),
        *_FLAGS,
        f"--user-data-dir={work / 'profile'}",
        f"--window-size={_WINDOW[0]},{_WINDOW[1]}",
        f"--log-net-log={net_log}",
        *mode,
        page.as_uri() + fragment,
    ]
    # A session of its own, so a hung browser can be stopped with all its child processes.
    browser = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=work,
        start_new_session=True,
    )
    try:
        stdout, stderr = browser.communicate(timeout=_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(browser.pid, signal.SIGKILL)
        browser.communicate()
        pytest.fail(f"chromium did not finish within {_TIMEOUT_S} s on {page}")
    assert browser.returncode == 0, f"chromium failed ({browser.returncode}):\n{stderr[-3000:]}"
    return stdout, _page_requests(net_log)


def _page_requests(net_log: Path) -> list[str]:
    """URLs the page asked the network stack for.

    The browser's own background traffic (update and time checks) also appears in the net
    log; requests made on behalf of a page opened from a file carry ``file://`` in their
    network isolation key.
    """
    log = json.loads(net_log.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        event["params"]["url"]
        for event in log["events"]
        if event["type"] == start
        and "url" in event.get("params", {})
        and "file://" in event["params"].get("network_isolation_key", "")
    ]


def _screenshot(page: Path, work: Path, fragment: str = "") -> tuple[np.ndarray, list[str]]:
    """The page's pixels (rows × columns × RGB, 0–255) opened at ``fragment``; its requests."""
    work.mkdir()
    path = work / "screenshot.png"
    _, requests = _chromium(page, work, f"--screenshot={path}", fragment=fragment)
    pixels = np.round(matplotlib.image.imread(path)[..., :3] * 255).astype(int)
    assert pixels.shape[:2] == (_WINDOW[1], _WINDOW[0])
    return pixels, requests


def _colour_box(pixels: np.ndarray, colour: tuple[int, int, int]) -> tuple[int, ...] | None:
    """Top, bottom, left, right (exclusive) of the pixels of ``colour``; ``None`` if none."""
    rows, columns = np.nonzero((np.abs(pixels - colour) <= 6).all(axis=-1))
    if rows.size == 0:
        return None
    return rows.min(), rows.max() + 1, columns.min(), columns.max() + 1


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """The report on disk, its DOM after load, its screenshots and the page requests.

    Screenshots: the page as opened, opened at the first figure's fragment (enlarged) and
    at the fragment of the Close links.
    """
    root = tmp_path_factory.mktemp("report")
    report, grids = _realistic_report()
    page = report.write(root / "report.html")
    (root / "dom").mkdir()
    dom, dom_requests = _chromium(page, root / "dom", "--dump-dom")
    pixels, shot_requests = _screenshot(page, root / "shot")
    enlarged, enlarged_requests = _screenshot(page, root / "enlarged", "#figure-1")
    closed, closed_requests = _screenshot(page, root / "closed", "#close")
    return {
        "dom": dom,
        "grids": grids,
        "pixels": pixels,
        "enlarged": enlarged,
        "closed": closed,
        "requests": dom_requests + shot_requests + enlarged_requests + closed_requests,
    }


def test_every_class_has_its_concept_panel_and_players_in_the_dom(rendered):
    document = _Elements(rendered["dom"])
    panels = [
        (i, a) for i, a, _ in document.tags("figure") if "panel" in (a.get("class") or "").split()
    ]
    assert len(panels) == len(_CLASS_COLOURS)
    for (panel, _), (name, png) in zip(panels, rendered["grids"].items(), strict=True):
        images = [a for _, a, parents in document.tags("img") if panel in parents]
        players = [a for _, a, parents in document.tags("audio") if panel in parents]
        assert [a["alt"] for a in images] == [name]
        assert base64.b64decode(images[0]["src"].removeprefix("data:image/png;base64,")) == png
        assert len(players) == _K
        for player in players:
            assert "controls" in player
            wav = base64.b64decode(player["src"].removeprefix("data:audio/wav;base64,"))
            samples, rate = sf.read(io.BytesIO(wav))
            assert rate == 16000 and samples.shape == (16000,)
    assert len(document.tags("table")) == 1
    assert len(document.tags("tr")) == 1 + 3
    assert len(document.tags("details")) == 1
    assert len(document.tags("h2")) == 1 + 3  # contents + three sections


def test_screenshot_shows_each_class_figure_drawn_whole(rendered):
    pixels = rendered["pixels"]
    # Not blank: a real page has text, borders and pictures on its white background.
    assert (pixels.min(axis=-1) < 200).mean() > 0.01
    boxes = []
    for (name, colour), png in zip(_CLASS_COLOURS.items(), rendered["grids"].values(), strict=True):
        box = _colour_box(pixels, colour)
        assert box is not None, f"the {name} figure is not visible in the screenshot"
        top, bottom, left, right = box
        height, width = bottom - top, right - left
        natural_width, natural_height = matplotlib.image.imread(io.BytesIO(png)).shape[1::-1]
        # The figure is drawn whole and undistorted: its colour spans a box of the image's
        # aspect ratio, at a readable size, mostly filled by the background colour.
        assert width >= 300, f"{name}: drawn only {width} px wide"
        assert width / height == pytest.approx(natural_width / natural_height, rel=0.05)
        filled = (np.abs(pixels[top:bottom, left:right] - colour) <= 6).all(axis=-1).mean()
        assert filled > 0.4
        boxes.append(box)
    (top_a, bottom_a, left_a, right_a), (top_b, bottom_b, left_b, right_b) = boxes
    assert right_a <= left_b or right_b <= left_a or bottom_a <= top_b or bottom_b <= top_a


def test_each_panel_figure_links_to_its_own_fragment(rendered):
    document = _Elements(rendered["dom"])
    panels = [
        (i, a) for i, a, _ in document.tags("figure") if "panel" in (a.get("class") or "").split()
    ]
    assert [a["id"] for _, a in panels] == ["figure-1", "figure-2"]
    for panel, attrs in panels:
        links = [(i, a) for i, a, parents in document.tags("a") if panel in parents]
        assert [a["href"] for _, a in links] == ["#close", f"#{attrs['id']}"]
        (image,) = [a for _, a, parents in document.tags("img") if links[1][0] in parents]
        assert image["src"].startswith("data:image/png;base64,")


def test_a_figure_opened_at_its_fragment_is_shown_at_full_size_over_the_page(rendered):
    (name, colour), (other, other_colour) = _CLASS_COLOURS.items()
    natural_width = matplotlib.image.imread(io.BytesIO(rendered["grids"][name])).shape[1]
    _, _, left, right = _colour_box(rendered["pixels"], colour)
    in_column = right - left
    top, _, left, right = _colour_box(rendered["enlarged"], colour)
    enlarged = right - left
    # In the page the grid is squeezed into its column; enlarged, it is drawn pixel for pixel.
    assert in_column < 0.7 * natural_width
    assert enlarged == pytest.approx(natural_width, abs=2)
    assert top < 150, "the enlarged figure is not at the top of the window"
    # The enlarged figure covers the page: the other class's figure is hidden behind it.
    assert _colour_box(rendered["enlarged"], other_colour) is None, other


def test_the_close_fragment_shows_the_page_as_without_a_fragment(rendered):
    # Not pixel for pixel: audio players may or may not have loaded their duration yet.
    for colour in _CLASS_COLOURS.values():
        assert _colour_box(rendered["closed"], colour) == _colour_box(rendered["pixels"], colour)
    top = slice(0, 100)  # where an enlarged figure shows its Close bar
    assert np.array_equal(rendered["closed"][top], rendered["pixels"][top])
    assert not np.array_equal(rendered["enlarged"][top], rendered["pixels"][top])


def test_a_panel_too_wide_for_a_column_spans_the_page(tmp_path):
    wide, narrow = (255, 0, 255), (0, 255, 255)
    report = Report("Wide and narrow")
    report.section("Concepts").panel_grid(
        [
            Panel("wide", _colour_png(wide, 1600, 200)),
            Panel("narrow", _colour_png(narrow, 600, 200)),
        ]
    )
    pixels, _ = _screenshot(report.write(tmp_path / "report.html"), tmp_path / "shot")
    _, bottom, left, right = _colour_box(pixels, wide)
    assert right - left > 0.85 * _WINDOW[0]
    narrow_top, _, narrow_left, _ = _colour_box(pixels, narrow)
    assert narrow_top >= bottom and narrow_left == pytest.approx(left, abs=2)


def _colour_png(colour: tuple[int, int, int], width: int, height: int) -> bytes:
    """A PNG of one colour, ``width`` × ``height`` pixels."""
    buffer = io.BytesIO()
    matplotlib.image.imsave(buffer, np.full((height, width, 3), colour, np.uint8), format="png")
    return buffer.getvalue()


def test_the_report_requests_nothing_from_the_network(rendered):
    assert rendered["requests"] == []


def test_the_request_check_sees_an_external_reference(tmp_path):
    page = tmp_path / "external.html"
    page.write_text(
        '<!DOCTYPE html><html><body><img src="http://example.invalid/picture.png"></body></html>'
    )
    _, requests = _chromium(page, tmp_path, "--dump-dom")
    assert requests == ["http://example.invalid/picture.png"]


def test_the_report_policy_blocks_an_injected_external_reference(tmp_path):
    report, _ = _realistic_report()
    document = report.to_html().replace(
        "<main>", '<main><img src="http://example.invalid/tracker.png">', 1
    )
    page = tmp_path / "tampered.html"
    page.write_text(document, encoding="utf-8")
    dom, requests = _chromium(page, tmp_path, "--dump-dom")
    assert "example.invalid/tracker.png" in dom
    assert requests == []


@pytest.fixture(scope="module")
def analysis_page(toy, small_analysis, tmp_path_factory):
    """The report of a real (small) analysis of the toy run, rendered.

    Its DOM, the page's requests, the class names, K and the analysis summary.
    """
    from audio_concepts.analysis import (
        evaluate_concepts,
        explain_concepts,
        fit_concepts,
        write_report,
    )

    data, run = toy
    out = tmp_path_factory.mktemp("analysis")
    config = small_analysis
    fit_concepts(run, data, out, config, progress=False)
    explain_concepts(out, progress=False)
    evaluate_concepts(out, progress=False)
    write_report(out, examples_per_class=2, progress=False)
    (out / "dom").mkdir()
    dom, requests = _chromium(out / "report.html", out / "dom", "--dump-dom")
    class_names = json.loads((out / "analysis.json").read_text())["class_names"]
    summary = json.loads((out / "summary.json").read_text())
    return _Elements(dom), requests, class_names, config.n_subspaces, summary


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_analysis_report_shows_every_class_with_panels_and_players(analysis_page):
    document, requests, class_names, k, _ = analysis_page
    panels = [
        (index, attrs)
        for index, attrs, _ in document.tags("figure")
        if "panel" in (attrs.get("class") or "").split()
    ]
    for name in class_names:
        own = [
            index
            for index, _ in panels
            if any(
                alt and alt.startswith(f"{name} · ")
                for _, img, parents in document.tags("img")
                if index in parents
                for alt in [img.get("alt")]
            )
        ]
        assert len(own) == 2, f"class {name}: {len(own)} concept panels, expected 2"
        for index in own:
            images = [a for _, a, parents in document.tags("img") if index in parents]
            assert images[0]["src"].startswith("data:image/png;base64,")
            players = [a for _, a, parents in document.tags("audio") if index in parents]
            # The original chunk and one sonified concept per player.
            assert [p["aria-label"] for p in players] == [
                "original",
                *(f"concept {c + 1}" for c in range(k)),
            ]
            assert all(p["src"].startswith("data:audio/wav;base64,") for p in players)
    sources = [a.get("src") or a.get("href") for _, a, _ in document.elements]
    assert all(s is None or s.startswith(("data:", "#")) for s in sources)
    assert requests == []


def _tables(document: _Elements) -> dict[str, tuple[list[str], list[list[str]]]]:
    """Caption → (column headers, rows of cell texts) of each table of the page."""
    tables = {}
    for index, _, _ in document.tags("table"):

        def inside(tag: str, table: int = index) -> list[str]:
            return [
                document.text.get(i, "") for i, _, parents in document.tags(tag) if table in parents
            ]

        (caption,) = inside("caption")
        header, cells = inside("th"), inside("td")
        tables[caption] = (
            header,
            [cells[r : r + len(header)] for r in range(0, len(cells), len(header))],
        )
    return tables


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_analysis_report_tables_have_a_row_per_class_and_no_empty_column(analysis_page):
    document, _, class_names, _, summary = analysis_page
    tables = _tables(document)
    for caption, (header, rows) in tables.items():
        for number, column in enumerate(header):
            assert any(row[number] != "–" for row in rows), f"{caption}: {column} is empty"
    methods = list(summary["methods"])
    ((header, rows),) = [t for c, t in tables.items() if c.startswith("Normalised AUPC per class")]
    assert header == ["class", *methods]
    assert [row[0] for row in rows] == class_names
    # The toy data have known sound objects: recovery per class, each with its chance level.
    ((header, rows),) = [t for c, t in tables.items() if c.startswith("Concept recovery per class")]
    concept_methods = [m for m in methods if m != "standard"]
    assert header == ["class", *(c for m in concept_methods for c in (m, f"{m} chance"))]
    assert [row[0] for row in rows] == class_names


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_analysis_report_explains_aupcs_outside_zero_to_one_when_there_are_any(analysis_page):
    document, _, _, _, summary = analysis_page
    aupcs = [
        value
        for entry in summary["methods"].values()
        for value in (entry["aupc"], entry["aupc_pooled"], *entry["aupc_per_class"].values())
        if value is not None
    ]
    paragraphs = [document.text.get(index, "") for index, _, _ in document.tags("p")]
    notes = [text for text in paragraphs if "outside [0, 1]" in text]
    assert len(notes) == (0 if all(0 <= v <= 1 for v in aupcs) else 1)


def test_the_meta_evaluation_and_sanity_sections_render(tmp_path):
    # The planted summary of the meta-evaluation tests, with a real sanity figure beside it.
    from test_meta_evaluation import FITNESS, SANITY, TITLES, _state, _summary_results

    from audio_concepts.evaluation_report import add_evaluation_sections
    from audio_concepts.summary import summarize

    summary = summarize(_state(), _summary_results(fitness=FITNESS, sanity=SANITY))
    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    (evaluation / "sanity.png").write_bytes(_grid_png((255, 0, 255), 0))
    report = Report("DRSA concepts of the toy task")
    add_evaluation_sections(report, summary, evaluation)
    page = report.write(tmp_path / "report.html")
    (tmp_path / "dom").mkdir()
    dom, requests = _chromium(page, tmp_path / "dom", "--dump-dom")
    assert requests == []  # nothing from the network (see the requests test above)
    document = _Elements(dom)
    headings = [document.text.get(i, "").strip() for i, _, _ in document.tags("h2")]
    for title in TITLES:
        assert title in headings
    tables = document.tags("table")
    # Headline: one table per validated measure; meta-evaluation: the verdicts and the
    # references' means; separation: one.
    validated = sum(row["validated"] for row in summary["measures"].values())
    assert len(tables) == validated + 2 + 1
    images = [a for _, a, _ in document.tags("img")]
    assert len(images) == 1 and images[0]["src"].startswith("data:image/png;base64,")
    # The figure sits below the tables; opened at its fragment it is shown over the page.
    pixels, _ = _screenshot(page, tmp_path / "shot", "#figure-1")
    assert _colour_box(pixels, (255, 0, 255)) is not None
