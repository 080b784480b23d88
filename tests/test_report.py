"""The self-contained HTML report: structure, escaping, formatting, embedding, atomic writes."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import struct
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import example, given, settings
from hypothesis import strategies as st

from audio_concepts.analysis_report import _aupc_note
from audio_concepts.report import MeanSem, Panel, Report
from zennit_drsa.evaluation import AUPCRow, RecoveryGroup

# Attributes through which an HTML document can make a browser fetch something.
_URL_ATTRIBUTES = {
    "src",
    "href",
    "srcset",
    "poster",
    "data",
    "action",
    "formaction",
    "background",
    "cite",
    "longdesc",
    "manifest",
    "ping",
    "xlink:href",
}


class _Document(HTMLParser):
    """Elements (tag, attributes, text inside) of an HTML document, in document order."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: dict[int, str] = {}
        self.styles: list[str] = []
        self._open: list[int] = []
        self._in_style = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        if tag not in ("img", "meta", "br", "hr", "link", "input", "source"):
            self._open.append(len(self.elements) - 1)
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        while self._open:
            index = self._open.pop()
            if self.elements[index][0] == tag:
                break
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)
        for index in self._open:
            self.text[index] = self.text.get(index, "") + data

    def find(self, tag: str) -> list[tuple[int, dict[str, str | None]]]:
        return [(i, attrs) for i, (t, attrs) in enumerate(self.elements) if t == tag]

    def texts(self, tag: str) -> list[str]:
        return [self.text.get(i, "") for i, _ in self.find(tag)]


def _png(width: int = 3, height: int = 2) -> bytes:
    """A tiny valid RGB PNG, built by hand so the test needs no imaging library."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _wav(frequency: float = 440.0, sample_rate: int = 8000) -> bytes:
    t = np.arange(sample_rate // 10) / sample_rate
    buffer = io.BytesIO()
    sf.write(buffer, 0.25 * np.sin(2 * np.pi * frequency * t), sample_rate, format="WAV")
    return buffer.getvalue()


def _full_report(tmp_path: Path) -> Report:
    png_file = tmp_path / "grid.png"
    png_file.write_bytes(_png(5, 4))
    wav_file = tmp_path / "concept.wav"
    wav_file.write_bytes(_wav(330.0))
    report = Report("DRSA <run> & friends", "What this run shows.")
    overview = report.section("Overview", "A first paragraph.")
    overview.paragraph("A second paragraph.").figure(png_file, "The spectrogram")
    overview.audio(wav_file, "The clip")
    results = report.section("Results")
    results.table([{"method": "DRSA", "AUPC": MeanSem(0.4, 0.01)}], caption="Patch flipping")
    classes = report.section("Concepts")
    for name in ("class a", "class b"):
        classes.section(name).panel_grid(
            [Panel(name, _png(), "heatmaps", {f"concept {k}": _wav(200.0 * k) for k in (1, 2)})]
        )
    report.section("Settings").settings({"layer": "features.10", "K": 4, "path": tmp_path})
    return report


def test_report_references_nothing_outside_itself(tmp_path):
    document = _Document(_full_report(tmp_path).to_html())
    tags = [tag for tag, _ in document.elements]
    assert "script" not in tags and "link" not in tags and "iframe" not in tags
    ids = {attrs["id"] for _, attrs in document.elements if "id" in attrs}
    sources = []
    for tag, attrs in document.elements:
        for name, value in attrs.items():
            if name in _URL_ATTRIBUTES:
                assert value is not None, f"<{tag} {name}> has no value"
                sources.append((tag, name, value))
                if name == "href" and attrs.get("class") == "close":
                    # Closing an enlarged figure goes to a fragment no element has.
                    assert tag == "a" and value == "#close" and "close" not in ids
                elif name == "href":
                    assert tag == "a" and value.startswith("#") and value[1:] in ids, value
                else:
                    assert value.startswith(("data:image/png;base64,", "data:audio/wav;base64,"))
            assert "http:" not in (value or "") and "https:" not in (value or "")
    assert len([s for s in sources if s[1] == "src"]) == 1 + 1 + 2 * (1 + 2)
    style = "".join(document.styles)
    assert "@import" not in style and "url(" not in style and "//" not in style
    csp = [a["content"] for _, a in document.find("meta") if a.get("http-equiv")]
    assert csp == ["default-src 'none'; img-src data:; media-src data:; style-src 'unsafe-inline'"]


def test_media_are_embedded_byte_for_byte_with_their_pixel_size(tmp_path):
    png, wav = _png(7, 3), _wav()
    report = Report("media")
    report.section("Media").figure(png, "red").audio(wav, "tone")
    document = _Document(report.to_html())
    ((_, image),) = document.find("img")
    ((_, audio),) = document.find("audio")
    assert base64.b64decode(image["src"].split(",", 1)[1]) == png
    assert (image["width"], image["height"], image["alt"]) == ("7", "3", "red")
    assert base64.b64decode(audio["src"].split(",", 1)[1]) == wav
    assert "controls" in audio
    data, rate = sf.read(io.BytesIO(base64.b64decode(audio["src"].split(",", 1)[1])))
    assert rate == 8000 and data.shape == (800,)


def test_table_of_contents_links_every_section_in_order(tmp_path):
    report = _full_report(tmp_path)
    report.section("Results")  # a repeated title still gets its own anchor
    document = _Document(report.to_html())
    headings = [
        (attrs["id"], document.text[i])
        for i, (tag, attrs) in enumerate(document.elements)
        if tag in ("h2", "h3") and attrs.get("id") != "contents"
    ]
    links = [
        (attrs["href"][1:], document.text[i])
        for i, attrs in document.find("a")
        if attrs.get("class") not in ("zoom", "close")  # a figure's own links
    ]
    assert links == headings
    assert [title for _, title in headings] == [
        "Overview",
        "Results",
        "Concepts",
        "class a",
        "class b",
        "Settings",
        "Results",
    ]
    anchors = [anchor for anchor, _ in headings]
    assert len(set(anchors)) == len(anchors)
    assert document.texts("h3") == ["class a", "class b"]


@settings(max_examples=40, deadline=None)
@given(
    # The title also names a table column; "n" would be the other column's key.
    title=st.text(min_size=1).filter(lambda text: text.strip() and text != "n"),
    words=st.text(min_size=1).filter(str.strip),
    cell=st.text(),
)
@example(title="<script>alert(1)</script>", words='" onerror="x', cell="&amp; <td>b</td>")
def test_all_text_is_escaped(title, words, cell):
    report = Report(title, words)
    section = report.section(title, words)
    section.table([{title: cell, "n": 1}], caption=words)
    section.figure(_png(), caption=words)
    document = _Document(report.to_html())
    assert document.texts("h1") == [title]
    assert document.texts("title") == [title]
    assert document.texts("p") == [words, words]
    if cell.strip():
        assert document.texts("td")[0] == cell
        assert document.texts("th")[0] == title
    else:  # a column without content is left out
        assert document.texts("th") == ["n"]
    assert document.texts("caption") == [words]
    assert document.find("img")[0][1]["alt"] == words
    assert [tag for tag, _ in document.elements].count("script") == 0


def test_table_cells_are_formatted_by_type():
    aupc = AUPCRow("DRSA", 0.53219, 0.01234, 10, 0)
    recovery = RecoveryGroup(0.61, float("nan"), 0.5, 1, 0, 0)
    rows = [
        {"method": "DRSA", "AUPC": aupc, "recovery": recovery, "n": np.int64(12), "ok": True},
        {"method": "PRCA", "AUPC": MeanSem(0.6, 0.02), "n": 3, "ratio": np.float32(2.0)},
        {"method": None, "ratio": float("nan")},
    ]
    report = Report("t")
    report.section("s").table(rows)
    document = _Document(report.to_html())
    assert document.texts("th") == ["method", "AUPC", "recovery", "n", "ok", "ratio"]
    cells = [(document.text.get(i, ""), a.get("class")) for i, a in document.find("td")]
    assert cells == [
        ("DRSA", None),
        ("0.532 ± 0.012", "num"),
        ("0.610 ± n/a", "num"),
        ("12", "num"),
        ("True", None),
        ("–", None),
        ("PRCA", None),
        ("0.600 ± 0.020", "num"),
        ("–", None),
        ("3", "num"),
        ("–", None),
        ("2.000", "num"),
        ("–", None),
        ("–", None),
        ("–", None),
        ("–", None),
        ("–", None),
        ("n/a", "num"),
    ]


def test_table_columns_select_and_order():
    report = Report("t")
    report.section("s").table([{"a": 1.23456, "b": 2, "c": "x"}], columns=["c", "a"], digits=1)
    document = _Document(report.to_html())
    assert document.texts("th") == ["c", "a"]
    assert document.texts("td") == ["x", "1.2"]


@pytest.mark.parametrize(
    ("rows", "options", "message"),
    [
        ([], {}, "non-empty sequence of rows"),
        ({"a": 1}, {}, "non-empty sequence of rows"),
        ([{"a": 1}, [1, 2]], {}, "row 1 is a list"),
        ([{"a": 1}], {"columns": ["a", "b"]}, r"columns \['b'\] are in no row"),
        ([{"a": 1}], {"columns": []}, "columns is empty"),
        ([{"a": math.inf}], {}, "row 0, column 'a': the value is infinite"),
        ([{"a": MeanSem(1.0, -math.inf)}], {}, "column 'a': the value is infinite"),
        ([{"a": 1}], {"digits": -1}, "digits must be a non-negative int"),
        ([{"a": 1}], {"caption": " "}, "table caption is empty"),
    ],
)
def test_bad_tables_are_refused(rows, options, message):
    section = Report("t").section("s")
    with pytest.raises(ValueError, match=message):
        section.table(rows, **options)


def test_bad_media_are_refused_naming_the_file(tmp_path):
    section = Report("t").section("s")
    not_png = tmp_path / "figure.png"
    not_png.write_bytes(b"GIF89a" + bytes(40))
    with pytest.raises(ValueError, match=f"{not_png} is not a PNG image"):
        section.figure(not_png)
    with pytest.raises(ValueError, match="the PNG bytes is not a PNG image"):
        section.figure(b"")
    not_wav = tmp_path / "clip.wav"
    not_wav.write_bytes(_png())
    with pytest.raises(ValueError, match=f"{not_wav} is not a WAV file"):
        section.audio(not_wav)
    with pytest.raises(FileNotFoundError, match=r"missing\.wav"):
        section.audio(tmp_path / "missing.wav")
    with pytest.raises(ValueError, match="must be bytes or a file path, got ndarray"):
        section.figure(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="figure caption is empty"):
        section.figure(_png(), caption="")


def test_bad_structure_is_refused():
    report = Report("t")
    with pytest.raises(ValueError, match="report title is empty"):
        Report("  ")
    with pytest.raises(ValueError, match="section title must be a string, got int"):
        report.section(3)
    section = report.section("s")
    with pytest.raises(ValueError, match="paragraph is empty"):
        section.paragraph("")
    with pytest.raises(ValueError, match="non-empty sequence of Panel"):
        section.panel_grid([])
    with pytest.raises(ValueError, match="non-empty sequence of Panel"):
        section.panel_grid(Panel("a", _png()))
    with pytest.raises(ValueError, match="item 1 is a dict, not a Panel"):
        section.panel_grid([Panel("a", _png()), {"title": "b"}])
    with pytest.raises(ValueError, match="panel 'a': audio must map labels"):
        section.panel_grid([Panel("a", _png(), audio=[_wav()])])
    with pytest.raises(ValueError, match="settings must be a mapping, got list"):
        section.settings([("a", 1)])
    with pytest.raises(ValueError, match="type set is not JSON serialisable"):
        section.settings({"classes": {"a", "b"}})
    deep = section
    for level in range(3, 7):
        deep = deep.section(f"level {level}")
    with pytest.raises(ValueError, match="already at heading level 6"):
        deep.section("level 7")
    with pytest.raises(ValueError, match="paragraph is empty"):
        section.section("with bad text", text=" ")
    with pytest.raises(ValueError, match="paragraph is empty"):
        report.section("with bad text", text="")
    # Refused blocks and sections leave nothing behind.
    document = _Document(report.to_html())
    assert document.find("img") == [] and document.find("details") == []
    headings = [tag for tag, _ in document.elements if re.fullmatch("h[1-6]", tag)]
    assert headings == ["h1", "h2", "h2", "h3", "h4", "h5", "h6"]  # title, contents, "s", ...
    assert "with bad text" not in report.to_html()


def test_settings_are_collapsible_json(tmp_path):
    settings_ = {
        "layer": "features.10",
        "sizes": np.array([16, 16]),
        "tol": np.float64(1e-4),
        "out": tmp_path,
        "missing": None,
        "nested": {"seeds": [0, 1]},
        "nan": float("nan"),
    }
    report = Report("t")
    report.section("Settings").settings(settings_, summary="Run settings")
    document = _Document(report.to_html())
    ((index, _),) = document.find("details")
    assert document.texts("summary") == ["Run settings"]
    shown = json.loads(document.texts("code")[0])
    assert math.isnan(shown.pop("nan"))
    assert shown == {
        "layer": "features.10",
        "sizes": [16, 16],
        "tol": 1e-4,
        "out": str(tmp_path),
        "missing": None,
        "nested": {"seeds": [0, 1]},
    }
    assert document.text[index].startswith("Run settings")


def test_panel_grid_holds_each_figure_with_its_players():
    panels = [
        Panel(f"class {c}", _png(2 + c, 2), f"caption {c}", {f"k{k}": _wav() for k in range(3)})
        for c in range(2)
    ]
    report = Report("t")
    report.section("Concepts").panel_grid(panels)
    document = _Document(report.to_html())
    ((grid, _),) = [(i, a) for i, a in document.find("div") if a.get("class") == "grid"]
    tiles = [i for i, a in document.find("figure") if "panel" in (a.get("class") or "").split()]
    assert len(tiles) == 2 and grid < tiles[0]
    assert [attrs["width"] for _, attrs in document.find("img")] == ["2", "3"]
    for c, (start, end) in enumerate(zip(tiles, [*tiles[1:], len(document.elements)], strict=True)):
        inside = [tag for tag, _ in document.elements[start:end]]
        assert inside.count("img") == 1 and inside.count("audio") == 3
        assert "".join(document.text[start].split()) == f"class{c}Close✕caption{c}k0k1k2"


def _figure_ids(document: _Document) -> list[tuple[str, str | None]]:
    """Per figure: its id and the link that shows it enlarged (the ``href`` around its image)."""
    figures = []
    for index, attrs in document.find("figure"):
        if "zoomable" not in (attrs.get("class") or "").split():
            continue
        inside = document.elements[index + 1 :]
        link = next(a for tag, a in inside if tag == "a" and a.get("class") == "zoom")
        figures.append((attrs["id"], link["href"]))
    return figures


def test_every_figure_and_panel_opens_enlarged_from_a_link_to_its_own_id():
    report = Report("t")
    report.section("Figure 1")  # takes the id figure-1 first
    report.section("Close")  # the Close links' fragment stays free
    section = report.section("s").figure(_png(), "first")
    section.panel_grid([Panel("a", _png()), Panel("b", _png(), audio={"k": _wav()})])
    section.figure(_png())
    document = _Document(report.to_html())
    ids = [attrs.get("id") for _, attrs in document.elements if attrs.get("id")]
    assert ids == ["contents", "figure-1", "close-2", "s", "figure-2", "figure-3", "figure-4",
                   "figure-5"]  # fmt: skip
    assert _figure_ids(document) == [(f"figure-{n}", f"#figure-{n}") for n in range(2, 6)]
    closes = [a["href"] for _, a in document.find("a") if a.get("class") == "close"]
    assert closes == ["#close"] * 4
    # Each image sits inside its zoom link, once: the enlarged view reuses the same element.
    assert len(document.find("img")) == 4
    assert "figure:target" not in "".join(document.styles)  # only zoomable figures enlarge
    assert ".zoomable:target" in "".join(document.styles)


def test_refused_panel_grid_takes_no_figure_id():
    report = Report("t")
    section = report.section("s")
    with pytest.raises(ValueError, match="item 1 is a str"):
        section.panel_grid([Panel("a", _png()), "b"])
    section.figure(_png())
    assert _figure_ids(_Document(report.to_html())) == [("figure-1", "#figure-1")]


def test_panels_too_wide_for_a_column_span_the_row():
    report = Report("t")
    report.section("s").panel_grid([Panel("narrow", _png(920, 2)), Panel("wide", _png(921, 2))])
    document = _Document(report.to_html())
    classes = [a["class"] for _, a in document.find("figure")]
    assert classes == ["panel zoomable", "panel zoomable wide"]


def test_table_leaves_out_columns_without_content():
    rows = [
        {"method": "drsa", "recovery": None, "note": "", "zero": 0.0, "nan": float("nan")},
        {"method": "prca", "recovery": None, "note": "  ", "flag": False},
        {"method": "standard", "extra": None},
    ]
    report = Report("t")
    section = report.section("s").table(rows)
    section.table(rows, columns=["recovery", "method"])
    section.table([{"a": None, "b": ""}])  # nothing to show: the columns stay
    document = _Document(report.to_html())
    assert document.texts("th") == ["method", "zero", "nan", "flag", "method", "a", "b"]
    assert document.texts("td")[:4] == ["drsa", "0.000", "n/a", "–"]


def test_report_is_deterministic(tmp_path):
    assert _full_report(tmp_path).to_html() == _full_report(tmp_path).to_html()


def test_write_is_atomic_and_returns_the_path(tmp_path):
    report = _full_report(tmp_path)
    target = tmp_path / "out" / "run" / "report.html"
    assert report.write(target) == target
    assert target.read_text(encoding="utf-8") == report.to_html()
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    smaller = Report("replaced")
    smaller.write(target)
    assert "<h1>replaced</h1>" in target.read_text(encoding="utf-8")
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.html"]


def test_failed_write_leaves_the_target_and_no_temporary_file(tmp_path):
    # A directory where the file should go makes the final rename fail.
    target = tmp_path / "report.html"
    target.mkdir()
    (target / "keep.txt").write_text("kept")
    with pytest.raises(OSError):
        Report("t").write(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    assert (target / "keep.txt").read_text() == "kept"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _summary(*per_class: dict[str, float | None]) -> dict:
    """A summary with one method per mapping of class → AUPC, class means within [0, 1]."""
    return {
        "methods": {
            f"method {n}": {"aupc": 0.5, "aupc_pooled": 0.5, "aupc_per_class": aupcs}
            for n, aupcs in enumerate(per_class)
        }
    }


def test_analysis_report_notes_what_aupcs_outside_zero_to_one_mean():
    note = _aupc_note(_summary({"one": 0.4, "two": None}, {"one": -1.24, "two": 0.66}))
    assert note is not None
    assert "outside [0, 1] (from -1.24 to 0.66)" in note
    assert "crossed zero" in note and "rose above its starting value" in note
    assert "'Lower is better' holds only within [0, 1]" in note
    assert _aupc_note(_summary({"one": 0.0, "two": 1.0}, {"one": None})) is None
