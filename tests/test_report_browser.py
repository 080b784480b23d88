"""The HTML report as a person sees it: rendered by headless Chromium, with the network cut.

A realistic report (two classes, each a matplotlib grid of heatmaps with K = 3 concept
players, plus a table and the settings) is opened from a file. Chromium's DOM dump shows
what was built; a screenshot shows that each class's figure was decoded and drawn (each
grid has a background colour found nowhere else on the page); Chromium's network log shows
that the page asked for nothing. Control pages prove the network check can fail.
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
    figure = Figure(figsize=(7.5, 2.0), dpi=80, facecolor=background)
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
    """Tags and attributes of a document, each with the indices of its open ancestors."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None], tuple[int, ...]]] = []
        self._open: list[int] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs), tuple(self._open)))
        if tag not in ("img", "meta", "br", "link", "source"):
            self._open.append(len(self.elements) - 1)

    def handle_endtag(self, tag):
        while self._open and self.elements[self._open.pop()][0] != tag:
            pass

    def tags(self, tag: str) -> list[tuple[int, dict[str, str | None], tuple[int, ...]]]:
        return [(i, a, p) for i, (t, a, p) in enumerate(self.elements) if t == tag]


def _chromium(page: Path, work: Path, *mode: str) -> tuple[str, list[str]]:
    """Open ``page`` in a fresh headless Chromium; its stdout and the URLs the page requested."""
    net_log = work / "net-log.json"
    command = [
        str(CHROMIUM),
        *_FLAGS,
        f"--user-data-dir={work / 'profile'}",
        f"--window-size={_WINDOW[0]},{_WINDOW[1]}",
        f"--log-net-log={net_log}",
        *mode,
        page.as_uri(),
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


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """The report written to disk, its DOM after load, its screenshot and the page requests."""
    root = tmp_path_factory.mktemp("report")
    report, grids = _realistic_report()
    page = report.write(root / "report.html")
    (root / "dom").mkdir()
    dom, dom_requests = _chromium(page, root / "dom", "--dump-dom")
    (root / "shot").mkdir()
    screenshot = root / "shot" / "screenshot.png"
    _, shot_requests = _chromium(page, root / "shot", f"--screenshot={screenshot}")
    return {
        "dom": dom,
        "grids": grids,
        "screenshot": screenshot,
        "requests": dom_requests + shot_requests,
    }


def test_every_class_has_its_concept_panel_and_players_in_the_dom(rendered):
    document = _Elements(rendered["dom"])
    panels = [(i, a) for i, a, _ in document.tags("figure") if a.get("class") == "panel"]
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
    pixels = np.round(matplotlib.image.imread(rendered["screenshot"])[..., :3] * 255).astype(int)
    assert pixels.shape[:2] == (_WINDOW[1], _WINDOW[0])
    # Not blank: a real page has text, borders and pictures on its white background.
    assert (pixels.min(axis=-1) < 200).mean() > 0.01
    boxes = []
    for (name, colour), png in zip(_CLASS_COLOURS.items(), rendered["grids"].values(), strict=True):
        rows, columns = np.nonzero((np.abs(pixels - colour) <= 6).all(axis=-1))
        assert rows.size > 0, f"the {name} figure is not visible in the screenshot"
        top, bottom, left, right = rows.min(), rows.max() + 1, columns.min(), columns.max() + 1
        height, width = bottom - top, right - left
        natural_width, natural_height = matplotlib.image.imread(io.BytesIO(png)).shape[1::-1]
        # The figure is drawn whole and undistorted: its colour spans a box of the image's
        # aspect ratio, at a readable size, mostly filled by the background colour.
        assert width >= 300, f"{name}: drawn only {width} px wide"
        assert width / height == pytest.approx(natural_width / natural_height, rel=0.05)
        assert rows.size / (height * width) > 0.4
        boxes.append((top, bottom, left, right))
    (top_a, bottom_a, left_a, right_a), (top_b, bottom_b, left_b, right_b) = boxes
    assert right_a <= left_b or right_b <= left_a or bottom_a <= top_b or bottom_b <= top_a


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
    """The report of a real (small) analysis of the toy run, rendered: DOM and requests."""
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
    return _Elements(dom), requests, class_names, config.n_subspaces


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_analysis_report_shows_every_class_with_panels_and_players(analysis_page):
    document, requests, class_names, k = analysis_page
    panels = [
        (index, attrs)
        for index, attrs, _ in document.tags("figure")
        if attrs.get("class") == "panel"
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
