"""One self-contained HTML file per run: figures, audio players, tables and settings.

Everything a reader needs is inside the file: PNG figures and WAV players are embedded as
``data:`` URIs, the style sheet is inline, there is no JavaScript, and a
Content-Security-Policy forbids the browser to load anything from elsewhere, so the report
reads the same offline, from an e-mail attachment or years later. All text is escaped.

Figures can be enlarged: each has an id (``figure-1``, ``figure-2``, …), clicking it opens
``#figure-N``, and the style sheet shows the ``:target`` figure over the page at the image's
own pixel size (scrollable, with its caption and players); its *Close* link, or the
browser's Back button, returns to the page. ``report.html#figure-3`` opens figure 3
enlarged. Panels whose image is too wide for a column of the grid span the page's width.
Table columns that no row fills (e.g. recovery on data without known objects) are left out.

Build a report top-down and write it atomically::

    report = Report("DRSA on the toy task")
    overview = report.section("Overview", "What was fitted, and how well it explains.")
    overview.table(rows, caption="Patch flipping (lower is better)")
    concepts = report.section("Concepts")
    concepts.panel_grid([Panel("class 0", png, audio={"concept 1": wav}), ...])
    report.section("Settings").settings(config)
    report.write("out/report.html")

The document is built with the standard library only (``html``, ``base64``, ``json``): no
template engine, no browser-side code (the policy would block an inline script anyway).
"""

from __future__ import annotations

import base64
import html
import itertools
import json
import math
import numbers
import os
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from atomic_io import write_text_atomic

__all__ = ["MeanSem", "Panel", "Report", "Section"]

Media = bytes | str | os.PathLike[str]
"""PNG or WAV content: the file's bytes, or the path of a file to read."""

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MISSING = "–"
_DEEPEST_HEADING = 6
# The fragment of every Close link. No element has this id (the report reserves it), so
# following the link ends the :target without scrolling: the page stays where it was.
_CLOSE = "close"
# Panels with a wider image (pixels) span the grid's row: two minimum columns (460 px each)
# would show them at half size or less.
_WIDE_PANEL_PX = 920
# The browser may load nothing but what the file embeds: data: images and audio, inline CSS.
_CSP = "default-src 'none'; img-src data:; media-src data:; style-src 'unsafe-inline'"
_STYLE = """
:root { color-scheme: light; --ink: #1f2328; --muted: #57606a; --line: #d0d7de;
  --soft: #f6f8fa; --accent: #0b5cad; }
* { box-sizing: border-box; }
body { margin: 0; background: #fff; color: var(--ink); line-height: 1.5;
  font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", sans-serif; }
main { max-width: 1200px; margin: 0 auto; padding: 1.5rem 1.25rem 4rem; }
h1 { font-size: 1.9rem; margin: 0.5rem 0 1rem; }
h2 { font-size: 1.45rem; margin-top: 2.5rem; padding-bottom: 0.3rem;
  border-bottom: 1px solid var(--line); }
h3 { font-size: 1.2rem; margin-top: 2rem; }
h4, h5, h6 { font-size: 1rem; margin-top: 1.5rem; }
p { max-width: 75ch; }
a { color: var(--accent); }
nav.toc { background: var(--soft); border: 1px solid var(--line); border-radius: 6px;
  padding: 0.75rem 1.25rem; max-width: 75ch; }
nav.toc h2 { font-size: 1.05rem; margin: 0.25rem 0; border: 0; padding: 0; }
nav.toc ol { margin: 0.25rem 0; padding-left: 1.25rem; }
figure { margin: 1rem 0; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption, .caption { color: var(--muted); font-size: 0.9rem; margin: 0.35rem 0; }
.table-wrap { overflow-x: auto; margin: 1rem 0; }
table { border-collapse: collapse; font-size: 0.95rem; }
caption { caption-side: top; text-align: left; color: var(--muted); padding-bottom: 0.4rem; }
th, td { border: 1px solid var(--line); padding: 0.35rem 0.7rem; text-align: left; }
th { background: var(--soft); }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.grid { display: grid; gap: 1rem; margin: 1rem 0;
  grid-template-columns: repeat(auto-fill, minmax(min(100%, 460px), 1fr)); }
.panel { margin: 0; padding: 0.75rem; border: 1px solid var(--line); border-radius: 6px; }
.panel > figcaption { color: var(--ink); font-weight: 600; font-size: 1rem; margin-top: 0; }
.player { margin: 0.5rem 0; }
.player figcaption { margin: 0 0 0.15rem; }
audio { display: block; width: 100%; max-width: 480px; }
details { margin: 1rem 0; border: 1px solid var(--line); border-radius: 6px; }
summary { cursor: pointer; padding: 0.5rem 0.75rem; background: var(--soft); }
pre { margin: 0; padding: 0.75rem; overflow-x: auto; font-size: 0.85rem; }
.grid > .wide { grid-column: 1 / -1; }
a.zoom { display: block; cursor: zoom-in; }
a.close { display: none; }
.zoomable:target { position: fixed; inset: 0; z-index: 10; margin: 0; padding: 3rem 1rem 1rem;
  overflow: auto; background: #fff; border: 0; border-radius: 0; outline: none; }
.zoomable:target a.zoom { cursor: default; }
.zoomable:target img { max-width: none; }
.zoomable:target > a.close { display: block; position: fixed; top: 0; left: 0; right: 0;
  z-index: 11; padding: 0.6rem 1.25rem; background: var(--soft);
  border-bottom: 1px solid var(--line); text-align: right; font-weight: 600; }
"""


class MeanSem(NamedTuple):
    """A mean with its standard error, shown in tables as ``0.532 ± 0.012``.

    Any object with real-valued ``mean`` and ``sem`` attributes is shown the same way, e.g.
    :class:`~zennit_drsa.evaluation.AUPCRow` and :class:`~zennit_drsa.evaluation.RecoveryGroup`.
    """

    mean: float
    sem: float


@dataclass(frozen=True)
class Panel:
    """One tile of a :meth:`Section.panel_grid`: a figure with its audio players.

    Attributes
    ----------
    title:
        Shown above the figure, e.g. the class name.
    image:
        PNG bytes or the path of a PNG file, e.g. the grid of standard, concept and residual
        heatmaps of one class.
    caption:
        Optional text below the figure.
    audio:
        Label → WAV bytes or path, one player each in this order (e.g. one per concept).
    """

    title: str
    image: Media
    caption: str | None = None
    audio: Mapping[str, Media] = field(default_factory=dict)


class Section:
    """A titled part of a :class:`Report`; blocks appear in the order they are added.

    Create sections with :meth:`Report.section` (or :meth:`Section.section` for a
    subsection), not directly. The methods that add a block return the section itself, so
    calls can be chained; :meth:`section` returns the new subsection. A block that is refused
    (bad input) leaves the section unchanged.
    """

    def __init__(self, title: str, *, level: int, anchors: set[str]) -> None:
        self.title = _check_text(title, "section title")
        self.level = level
        # Ids already used in the report: every heading gets its own table-of-contents link.
        self.anchor = _unique_anchor(title, anchors)
        self._anchors = anchors
        self._blocks: list[str | Section] = []

    def section(self, title: str, text: str | None = None) -> Section:
        """Add a subsection (one heading level down) and return it.

        Parameters
        ----------
        title:
            Non-empty heading text; listed in the table of contents.
        text:
            Optional first paragraph.
        """
        if self.level >= _DEEPEST_HEADING:
            raise ValueError(
                f"section {self.title!r} is already at heading level {self.level}; HTML has "
                f"no level {self.level + 1}, so add this part to a shallower section"
            )
        child = Section(title, level=self.level + 1, anchors=self._anchors)
        if text is not None:
            child.paragraph(text)
        self._blocks.append(child)
        return child

    def paragraph(self, text: str) -> Section:
        """Add a paragraph of plain text (escaped; line breaks are kept as spaces)."""
        self._blocks.append(f"<p>{_escape(_check_text(text, 'paragraph'))}</p>")
        return self

    def figure(self, png: Media, caption: str | None = None) -> Section:
        """Add a PNG figure, embedded as a data URI; a click shows it enlarged.

        Parameters
        ----------
        png:
            PNG bytes or the path of a PNG file.
        caption:
            Optional caption, also the image's alternative text.

        Raises
        ------
        ValueError
            If the content is not a PNG image (the message names the file).
        OSError
            If the file cannot be read.
        """
        self._blocks.append(_figure_html(png, caption, self._anchors))
        return self

    def audio(self, wav: Media, caption: str | None = None) -> Section:
        """Add an audio player for a WAV file, embedded as a data URI.

        Parameters
        ----------
        wav:
            WAV bytes (RIFF/RF64 container, any codec the browser plays; PCM is safest) or
            the path of a WAV file.
        caption:
            Optional label shown above the player.

        Raises
        ------
        ValueError
            If the content is not a WAV file (the message names the file).
        OSError
            If the file cannot be read.
        """
        self._blocks.append(_audio_html(wav, caption, "audio"))
        return self

    def table(
        self,
        rows: Sequence[Mapping[str, Any]],
        columns: Sequence[str] | None = None,
        caption: str | None = None,
        *,
        digits: int = 3,
    ) -> Section:
        """Add a table with one row per mapping.

        Cells are formatted by type: floats with ``digits`` decimals (NaN as ``n/a``),
        integers as they are, a :class:`MeanSem` (or any object with real ``mean`` and
        ``sem`` attributes) as ``mean ± sem``, ``None`` and missing keys as ``–``, anything
        else as its ``str``. Numeric cells are right-aligned. A column without content in
        any row (``None``, a missing key or blank text in every row) is left out, unless
        no column has content.

        Parameters
        ----------
        rows:
            One mapping column name → value per row.
        columns:
            Column names in display order; default: every key, in order of first appearance.
            Keys not listed are left out.
        caption:
            Optional caption above the table.
        digits:
            Decimals of floating-point values.

        Raises
        ------
        ValueError
            On no rows, a row that is not a mapping, a listed column that no row has, an
            infinite value, or a negative ``digits``.
        """
        self._blocks.append(_table_html(rows, columns, caption, digits))
        return self

    def panel_grid(self, items: Sequence[Panel]) -> Section:
        """Add a responsive grid of panels, e.g. one per class with its concept players.

        A panel whose image is wider than two minimum columns spans the whole row. A click
        on a panel's figure shows the panel enlarged, players included.

        Parameters
        ----------
        items:
            The :class:`Panel` tiles, in display order (at least one).

        Raises
        ------
        ValueError
            On an empty grid, an item that is not a :class:`Panel`, or bad media (see
            :meth:`figure` and :meth:`audio`).
        """
        if isinstance(items, Panel) or not isinstance(items, Sequence) or not items:
            raise ValueError("panel_grid needs a non-empty sequence of Panel items")
        tiles = []
        # Figure ids are taken for good only if every panel is accepted.
        anchors = set(self._anchors)
        for number, item in enumerate(items):
            if not isinstance(item, Panel):
                raise ValueError(
                    f"panel_grid item {number} is a {type(item).__name__}, not a Panel"
                )
            tiles.append(_panel_html(item, anchors))
        self._anchors.update(anchors)
        self._blocks.append('<div class="grid">\n' + "\n".join(tiles) + "\n</div>")
        return self

    def settings(self, settings: Mapping[str, Any], summary: str = "All settings") -> Section:
        """Add collapsible settings, shown as indented JSON when opened.

        Parameters
        ----------
        settings:
            Any JSON-like mapping; paths become strings, numpy scalars and arrays become
            numbers and lists. NaN and infinities are shown as ``NaN`` / ``Infinity``.
        summary:
            Text of the always-visible line that opens the block.

        Raises
        ------
        ValueError
            If ``settings`` is not a mapping or holds a value JSON cannot represent.
        """
        if not isinstance(settings, Mapping):
            raise ValueError(f"settings must be a mapping, got {type(settings).__name__}")
        try:
            text = json.dumps(settings, indent=2, default=_json_value, ensure_ascii=False)
        except (TypeError, ValueError) as error:
            raise ValueError(f"settings cannot be shown as JSON: {error}") from None
        self._blocks.append(
            f"<details><summary>{_escape(_check_text(summary, 'settings summary'))}</summary>"
            f"<pre><code>{_escape(text)}</code></pre></details>"
        )
        return self

    def _html(self) -> str:
        heading = f'<h{self.level} id="{self.anchor}">{_escape(self.title)}</h{self.level}>'
        blocks = [b if isinstance(b, str) else b._html() for b in self._blocks]
        return "\n".join(["<section>", heading, *blocks, "</section>"])

    def _toc(self) -> str:
        entry = f'<li><a href="#{self.anchor}">{_escape(self.title)}</a>'
        children = [b._toc() for b in self._blocks if isinstance(b, Section)]
        if children:
            entry += "<ol>" + "".join(children) + "</ol>"
        return entry + "</li>"


class Report:
    """A self-contained HTML report: a title, a table of contents and sections.

    Parameters
    ----------
    title:
        Page title and main heading.
    text:
        Optional introductory paragraph below the title.

    Examples
    --------
    >>> report = Report("Run 1")
    >>> results = report.section("Results", "Lower AUPC is better.")
    >>> results = results.table([{"method": "DRSA", "AUPC": MeanSem(0.41, 0.02)}])
    >>> "0.410 ± 0.020" in report.to_html()
    True
    """

    def __init__(self, title: str, text: str | None = None) -> None:
        self.title = _check_text(title, "report title")
        self.text = None if text is None else _check_text(text, "introduction")
        self._sections: list[Section] = []
        self._anchors: set[str] = {"contents", _CLOSE}

    def section(self, title: str, text: str | None = None) -> Section:
        """Add a top-level section (``<h2>``, listed in the table of contents) and return it.

        Parameters
        ----------
        title:
            Non-empty heading text.
        text:
            Optional first paragraph.
        """
        section = Section(title, level=2, anchors=self._anchors)
        if text is not None:
            section.paragraph(text)
        self._sections.append(section)
        return section

    def to_html(self) -> str:
        """The complete document as a string (UTF-8 when written)."""
        body = [f"<h1>{_escape(self.title)}</h1>"]
        if self.text is not None:
            body.append(f"<p>{_escape(self.text)}</p>")
        if self._sections:
            entries = "".join(s._toc() for s in self._sections)
            body.append(
                '<nav class="toc" aria-labelledby="contents"><h2 id="contents">Contents</h2>'
                f"<ol>{entries}</ol></nav>"
            )
        body.extend(s._html() for s in self._sections)
        return (
            "<!DOCTYPE html>\n"
            '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_escape(self.title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
            "<body>\n<main>\n" + "\n".join(body) + "\n</main>\n</body>\n</html>\n"
        )

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the report to ``path`` atomically and return the path.

        The document goes to a temporary file in the same directory, which then replaces
        ``path``: readers never see a half-written report, and on error ``path`` is left as
        it was. Missing parent directories are created.
        """
        target = Path(path)
        write_text_atomic(target, self.to_html())
        return target


def _escape(text: str) -> str:
    return html.escape(text, quote=True)


def _check_text(text: object, what: str) -> str:
    if not isinstance(text, str):
        raise ValueError(f"the {what} must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"the {what} is empty")
    return text


def _unique_anchor(title: str, taken: set[str], *, numbered: bool = False) -> str:
    """A URL-fragment-safe id from ``title``, made unique within one report (and taken).

    Ids get a number (``-2``, ``-3``, …) when the plain one is taken; ``numbered`` ids
    always carry one, from ``-1``.
    """
    base = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"
    plain = () if numbered else (base,)
    numbers = itertools.count(1 if numbered else 2)
    candidates = itertools.chain(plain, (f"{base}-{number}" for number in numbers))
    anchor = next(a for a in candidates if a not in taken)
    taken.add(anchor)
    return anchor


def _read_media(media: Media, kind: str) -> tuple[bytes, str]:
    """The bytes of ``media`` and a name for error messages."""
    if isinstance(media, bytes | bytearray | memoryview):
        return bytes(media), f"the {kind} bytes"
    if isinstance(media, str | os.PathLike):
        path = Path(media)
        return path.read_bytes(), str(path)
    raise ValueError(f"a {kind} must be bytes or a file path, got {type(media).__name__}")


def _png_data(png: Media) -> tuple[str, int, int]:
    """Base64 text, width and height (pixels) of a PNG, read from its IHDR chunk."""
    data, name = _read_media(png, "PNG")
    # Signature, then the IHDR chunk: length, type, width, height (big-endian).
    if len(data) < 24 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise ValueError(
            f"{name} is not a PNG image; save figures with format='png' "
            "(e.g. figure.savefig(path, format='png'))"
        )
    width, height = struct.unpack(">II", data[16:24])
    return base64.b64encode(data).decode("ascii"), width, height


def _wav_data(wav: Media) -> str:
    """Base64 text of a WAV file, after checking its RIFF/RF64 header."""
    data, name = _read_media(wav, "WAV")
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RF64") or data[8:12] != b"WAVE":
        raise ValueError(
            f"{name} is not a WAV file; write it with soundfile.write(..., format='WAV')"
        )
    return base64.b64encode(data).decode("ascii")


def _figure_html(png: Media, caption: str | None, anchors: set[str]) -> str:
    encoded, width, height = _png_data(png)
    text = "" if caption is None else _escape(_check_text(caption, "figure caption"))
    figcaption = f"<figcaption>{text}</figcaption>" if text else ""
    anchor = _unique_anchor("figure", anchors, numbered=True)
    image = _zoomable_image(encoded, width, height, text or "figure", anchor)
    return f'<figure class="zoomable" id="{anchor}">{image}{figcaption}</figure>'


def _zoomable_image(encoded: str, width: int, height: int, alt: str, anchor: str) -> str:
    """A PNG that links to its figure's id (shown enlarged), and the figure's Close link.

    ``alt`` must be escaped already.
    """
    return (
        f'<a class="close" href="#{_CLOSE}">Close ✕</a>'
        f'<a class="zoom" href="#{anchor}" title="Show at full size">'
        f'<img src="data:image/png;base64,{encoded}" width="{width}" height="{height}" '
        f'alt="{alt}"></a>'
    )


def _audio_html(wav: Media, caption: str | None, what: str) -> str:
    encoded = _wav_data(wav)
    label = "" if caption is None else _escape(_check_text(caption, f"{what} caption"))
    figcaption = f"<figcaption>{label}</figcaption>" if label else ""
    return (
        f'<figure class="player">{figcaption}<audio controls preload="metadata" '
        f'aria-label="{label or "audio"}" src="data:audio/wav;base64,{encoded}"></audio></figure>'
    )


def _panel_html(panel: Panel, anchors: set[str]) -> str:
    title = _escape(_check_text(panel.title, "panel title"))
    encoded, width, height = _png_data(panel.image)
    parts = []
    if panel.caption is not None:
        parts.append(
            f'<p class="caption">{_escape(_check_text(panel.caption, "panel caption"))}</p>'
        )
    if not isinstance(panel.audio, Mapping):
        raise ValueError(f"panel {panel.title!r}: audio must map labels to WAV files")
    parts.extend(_audio_html(wav, label, "audio") for label, wav in panel.audio.items())
    anchor = _unique_anchor("figure", anchors, numbered=True)
    css = "panel zoomable wide" if width > _WIDE_PANEL_PX else "panel zoomable"
    head = (
        f'<figure class="{css}" id="{anchor}"><figcaption>{title}</figcaption>'
        + _zoomable_image(encoded, width, height, title, anchor)
    )
    return "\n".join([head, *parts]) + "</figure>"


def _table_html(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None,
    caption: str | None,
    digits: int,
) -> str:
    if isinstance(rows, Mapping) or not isinstance(rows, Sequence) or not rows:
        raise ValueError("a table needs a non-empty sequence of rows (one mapping per row)")
    for number, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"table row {number} is a {type(row).__name__}, not a mapping")
    if isinstance(digits, bool) or not isinstance(digits, int) or digits < 0:
        raise ValueError(f"digits must be a non-negative int, got {digits!r}")
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    else:
        columns = list(columns)
        if not columns:
            raise ValueError("columns is empty; leave it out to show every key")
        absent = [c for c in columns if not any(c in row for row in rows)]
        if absent:
            raise ValueError(f"table columns {absent} are in no row; the rows have {list(rows[0])}")
    # A column no row fills (e.g. recovery on data without known objects) only adds dashes.
    columns = [c for c in columns if any(not _blank(row.get(c)) for row in rows)] or columns
    lines = ['<div class="table-wrap"><table>']
    if caption is not None:
        lines.append(f"<caption>{_escape(_check_text(caption, 'table caption'))}</caption>")
    header = "".join(f'<th scope="col">{_escape(str(c))}</th>' for c in columns)
    lines.append(f"<thead><tr>{header}</tr></thead><tbody>")
    for number, row in enumerate(rows):
        cells = []
        for column in columns:
            try:
                text, numeric = _cell(row.get(column), digits)
            except ValueError as error:
                raise ValueError(f"table row {number}, column {column!r}: {error}") from None
            css = ' class="num"' if numeric else ""
            cells.append(f"<td{css}>{_escape(text)}</td>")
        lines.append(f"<tr>{''.join(cells)}</tr>")
    lines.append("</tbody></table></div>")
    return "\n".join(lines)


def _blank(value: Any) -> bool:
    """Whether a table value has no content: ``None`` or blank text."""
    return value is None or (isinstance(value, str) and not value.strip())


def _cell(value: Any, digits: int) -> tuple[str, bool]:
    """Display text of a table value and whether it is numeric (right-aligned)."""
    if value is None:
        return _MISSING, False
    if isinstance(value, bool):
        return str(value), False
    if isinstance(value, numbers.Integral):
        return str(int(value)), True
    if isinstance(value, numbers.Real):
        return _number(float(value), digits), True
    mean, sem = getattr(value, "mean", None), getattr(value, "sem", None)
    if isinstance(mean, numbers.Real) and isinstance(sem, numbers.Real):
        return f"{_number(float(mean), digits)} ± {_number(float(sem), digits)}", True
    return str(value), False


def _number(value: float, digits: int) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        raise ValueError("the value is infinite; fix the computation or show it as text")
    return f"{value:.{digits}f}"


def _json_value(value: Any) -> Any:
    """JSON form of values ``json`` does not know: paths and numpy scalars or arrays."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"a value of type {type(value).__name__} is not JSON serialisable")
