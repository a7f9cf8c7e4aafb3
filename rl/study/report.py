"""Rendering of study reports: one self-contained HTML page and its Markdown twin.

The renderer knows nothing about RL: it is given a title, short paragraphs, tables
(``pandas.DataFrame``) and figures (PNG files), and lays them out. The HTML page needs
nothing but itself to be viewed: plots are embedded as base64 ``data:`` URIs, the CSS is
inline, and there is no script and no external link. The Markdown file shows the same
tables and links the PNG files by their path relative to the report.

Numbers are written with ``format_value``, which is exact for values already rounded to
``SIGNIFICANT_DIGITS`` significant digits (``round_sig``): a reader (or a test) can parse a
number printed in the page back to the very value in the table it came from.
"""

from __future__ import annotations

import base64
import html
import math
import numbers
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from rl.runs.files import atomic_write_text

__all__ = [
    "SIGNIFICANT_DIGITS",
    "Figure",
    "Section",
    "format_ends",
    "format_interval",
    "format_value",
    "interval_digits",
    "render_html",
    "render_markdown",
    "round_sig",
    "unresolved",
    "write_report",
]

SIGNIFICANT_DIGITS = 4
MISSING = "-"

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px auto;
       max-width: 1320px; color: #1d2330; background: #ffffff; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #d5d9e0; }
h3 { font-size: 1.05em; margin-top: 1.2em; }
p.note { color: #4a5263; font-size: 0.92em; }
table { border-collapse: collapse; margin: 0.6em 0 1em 0; font-size: 0.86em; }
th, td { border: 1px solid #d5d9e0; padding: 3px 7px; vertical-align: top; }
th { background: #eef1f6; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.cited td { background: #fbf6e9; font-style: italic; }
figure { margin: 0.8em 0 1.6em 0; }
figure img { max-width: 100%; border: 1px solid #e3e6ec; }
figcaption { color: #4a5263; font-size: 0.9em; }
code { background: #f3f4f7; padding: 0 3px; }
p.verdict { font-size: 1.08em; background: #eef3fb; border-left: 4px solid #3b6fb6;
            padding: 6px 10px; margin: 0.4em 0 0.8em 0; }
details { margin: 0.5em 0; border-top: 1px solid #d5d9e0; }
details > summary { cursor: pointer; padding: 4px 0; }
details > summary h2 { display: inline; border: none; font-size: 1.1em; }
"""


def round_sig(value: float, digits: int = SIGNIFICANT_DIGITS) -> float:
    """``value`` rounded to ``digits`` significant digits (NaN and inf unchanged)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return math.nan
    if not math.isfinite(v) or v == 0.0:
        return v
    return float(f"{v:.{digits - 1}e}")


def format_value(value, digits: int = SIGNIFICANT_DIGITS) -> str:
    """A number as printed in reports: thousands separators from 10,000 up, at most
    ``digits`` significant digits, ``inf``/``-inf``, and ``-`` for NaN or None.

    For a value already rounded with ``round_sig(value, digits)`` the text parses (after
    removing the commas) back to exactly that value.
    """
    if value is None:
        return MISSING
    if isinstance(value, str):
        return value
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(v):
        return MISSING
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    v = round_sig(v, digits)
    if abs(v) >= 10 ** digits:
        return f"{v:,.0f}"
    return f"{v:,.{digits}g}"


def _place(lo: float, hi: float) -> int | None:
    """The decimal exponent to round a value with interval [lo, hi] to: that of the last
    significant digit of the half-width written with one significant digit, or two where its
    leading digits are 100 to 354 (the Particle Data Group's rule); None if the interval is
    not finite and positive."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return None
    half = (hi - lo) / 2
    exp = math.floor(math.log10(half))
    lead = int(half / 10 ** (exp - 2))  # the three leading digits, 100 to 999
    return exp - 1 if lead <= 354 else exp


def _digits_at(x: float, place: int | None, most: int) -> int:
    """Significant digits of ``x`` rounded at the decimal exponent ``place`` (1 to most)."""
    if place is None or not math.isfinite(x) or x == 0.0:
        return most
    return max(1, min(most, math.floor(math.log10(abs(x))) - place + 1))


def interval_digits(value, lo, hi, *, most: int = SIGNIFICANT_DIGITS) -> int:
    """Significant digits that ``value`` with interval [``lo``, ``hi``] deserves: down to
    the last significant digit of the interval's half-width (``_place``), 1 to ``most``.

    A narrow interval keeps its digits (100.5 [100.1, 100.9]: 4), an interval spanning a
    factor 7 keeps one or two (79.37 [45.94, 318.5]: 80 [50, 320]). No finite interval:
    ``most``."""
    try:
        v, a, b = float(value), float(lo), float(hi)
    except (TypeError, ValueError):
        return most
    return _digits_at(v, _place(a, b), most)


def format_ends(lo, hi, *, most: int = SIGNIFICANT_DIGITS) -> str:
    """"lo, hi" of an interval, each end with the digits the interval's width allows
    (``interval_digits``): 0.3774 to 29.75 shows as "0.4, 30"."""
    a, b = float(lo), float(hi)
    place = _place(a, b)
    return f"{format_value(a, _digits_at(a, place, most))}, " \
        f"{format_value(b, _digits_at(b, place, most))}"


def unresolved(lo, hi) -> str:
    """The words for an interval that does not pin a value: its ends, in full."""
    return f"unresolved (interval {format_value(lo)} to {format_value(hi)})"


def format_interval(value, lo=math.nan, hi=math.nan, *, bound: str = "",
                    most: int = SIGNIFICANT_DIGITS) -> str:
    """A value with its interval as a reader should take it, never a bare number where the
    interval does not pin one:

    * value [lo, hi], every number with ``interval_digits`` significant digits;
    * an interval open at the top (hi = inf) with lo > 0: a lower bound, ``>= lo``;
    * an interval from 0 (or below) to inf, or no value but an interval with both ends
      open: ``unresolved (interval 0 to inf)``;
    * no interval: the value with ``most`` digits; no value and no interval: ``-``.

    ``bound``: ``">="`` or ``"<="`` for a row that is a bound (its value is NaN): the
    bound's end (lo or hi) alone."""
    def num(x):
        try:
            return float(x)
        except (TypeError, ValueError):
            return math.nan

    v, a, b = num(value), num(lo), num(hi)
    if bound == ">=" and a == a:
        return f">= {format_value(a, most)}"
    if bound == "<=" and b == b:
        return f"<= {format_value(b, most)}"
    if a != a and b != b:
        return format_value(v, most) if v == v else MISSING
    if math.isinf(b) and b > 0:
        if a == a and a > 0 and not math.isinf(a):
            return f">= {format_value(a, most)}"
        return unresolved(0.0 if a == a and a >= 0 else a, b)
    if math.isinf(a) and a < 0:
        return f"<= {format_value(b, most)}" if b == b else unresolved(a, b)
    if v != v:
        return f"{format_value(a, most)} to {format_value(b, most)}"
    place = _place(a, b)
    v_, a_, b_ = (format_value(x, _digits_at(x, place, most)) for x in (v, a, b))
    return f"{v_} [{a_}, {b_}]"


@dataclass
class Figure:
    """A PNG file and its caption."""

    path: Path
    caption: str


@dataclass
class Section:
    """A heading, optional paragraphs, tables and figures, in that order."""

    heading: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[tuple[pd.DataFrame, str]] = field(default_factory=list)
    """(table, css id) pairs; numeric cells go through ``format_value``."""
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """small print after the tables"""
    collapsed: bool = False
    """a detail: in the HTML page a closed ``<details>`` (the reader opens it), after the
    sections shown open"""
    figures_first: bool = False
    """figures before the tables (the summary figure above the headline table)"""


def _cell(value) -> tuple[str, bool]:
    """(text, is_number) of one table cell."""
    if isinstance(value, str):
        return value, False
    if value is None:
        return MISSING, False
    if isinstance(value, bool):
        return str(value).lower(), False
    if isinstance(value, numbers.Real):
        return format_value(value), True
    try:
        if pd.isna(value):
            return MISSING, False
    except (TypeError, ValueError):
        pass
    return str(value), False


def _html_table(df: pd.DataFrame, table_id: str) -> str:
    out = [f'<table id="{html.escape(table_id)}">', "<thead><tr>"]
    out += [f"<th>{html.escape(str(c))}</th>" for c in df.columns]
    out.append("</tr></thead><tbody>")
    cited = "source" in df.columns
    for row in df.itertuples(index=False):
        cls = ' class="cited"' if cited and str(row[list(df.columns).index("source")]) == \
            "cited" else ""
        out.append(f"<tr{cls}>")
        for value in row:
            text, is_num = _cell(value)
            td = '<td class="num">' if is_num else "<td>"
            out.append(f"{td}{html.escape(text)}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _png_data_uri(path: Path) -> str:
    data = Path(path).read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError(f"{path} is not a PNG file")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _html_section(section: Section) -> list[str]:
    body = [f"<p>{html.escape(p)}</p>" for p in section.paragraphs]
    tables = [_html_table(df, table_id) for df, table_id in section.tables]
    tables += [f'<p class="note">{html.escape(n)}</p>' for n in section.notes]
    figures = [f'<figure><img src="{_png_data_uri(fig.path)}" alt="{html.escape(fig.caption)}">'
               f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>"
               for fig in section.figures]
    body += figures + tables if section.figures_first else tables + figures
    heading = f"<h2>{html.escape(section.heading)}</h2>"
    if section.collapsed:
        return ["<details>", f"<summary>{heading}</summary>", *body, "</details>"]
    return [heading, *body]


def render_html(title: str, intro: Sequence[str], sections: Sequence[Section],
                lead: Sequence[str] = ()) -> str:
    """The whole page: inline CSS, embedded PNGs, no script, no external resource.

    ``lead``: the verdict, first under the title; then the sections shown open, then the
    collapsed ones (``Section.collapsed``: closed ``<details>``), each group in its order;
    ``intro`` paragraphs come after the lead. Every text is HTML-escaped.
    """
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    parts += [f'<p class="verdict">{html.escape(p)}</p>' for p in lead]
    parts += [f"<p>{html.escape(p)}</p>" for p in intro]
    for section in _ordered(sections):
        parts += _html_section(section)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _ordered(sections: Sequence[Section]) -> list[Section]:
    """The open sections first, then the collapsed ones (each group in its order)."""
    return [s for s in sections if not s.collapsed] + [s for s in sections if s.collapsed]


# Markdown syntax anywhere in a line (CommonMark and GitHub's tables): emphasis, code, links
# and images, raw HTML and entities, table cells, strikethrough, headings.
_MD_INLINE = re.compile(r"([\\`*_\[\]<>|~#&])")
# ... and at the start of a block only: list items, setext underlines, ordered lists.
_MD_BLOCK_START = re.compile(r"^(\s*)([-+=])|^(\s*\d+)([.)])")


def _md_escape(text: str, *, block: bool = False) -> str:
    """``text`` as literal Markdown, on one line: what Markdown would read as syntax is
    backslash-escaped, so that a name (a plugin environment's, say) shows as written and
    can neither break a table nor become a link, emphasis or HTML (the HTML page escapes
    the same text with ``html.escape``). ``block``: the text starts a paragraph or heading,
    where a leading "-", "+", "=" or "1." would start a list or an underline."""
    out = _MD_INLINE.sub(r"\\\1", " ".join(str(text).splitlines()))
    if block:
        out = _MD_BLOCK_START.sub(lambda m: f"{m[1]}\\{m[2]}" if m[2] else f"{m[3]}\\{m[4]}",
                                  out, count=1)
    return out


def _md_table(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(_md_escape(str(c)) for c in df.columns) + " |"
    rule = "| " + " | ".join("---" for _ in df.columns) + " |"
    rows = ["| " + " | ".join(_md_escape(_cell(v)[0]) for v in row) + " |"
            for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def _md_text(text: str) -> str:
    return _md_escape(text.strip(), block=True)


def render_markdown(title: str, intro: Sequence[str], sections: Sequence[Section],
                    base: str | os.PathLike[str], lead: Sequence[str] = ()) -> str:
    """The same content as Markdown, in the same order (the lead in bold, the open sections,
    then the details), every text taken literally (``_md_escape``, as the HTML page escapes
    it); figures are linked relative to ``base``."""
    lines = [f"# {_md_text(title)}", ""]
    for p in lead:
        lines += [f"**{_md_escape(p.strip())}**", ""]
    for p in intro:
        lines += [_md_text(p), ""]
    for section in _ordered(sections):
        lines += [f"## {_md_text(section.heading)}", ""]
        for p in section.paragraphs:
            lines += [_md_text(p), ""]
        tables = []
        for df, _ in section.tables:
            tables += [_md_table(df), ""]
        for n in section.notes:
            tables += [f"*{_md_escape(n.strip())}*", ""]
        figures = []
        for fig in section.figures:
            rel = os.path.relpath(Path(fig.path).resolve(), Path(base).resolve())
            # Percent-encoded: a file name (from an environment's) may hold spaces or ")".
            figures += [f"![{_md_escape(fig.caption)}]({quote(Path(rel).as_posix())})", "",
                        f"*{_md_escape(fig.caption.strip())}*", ""]
        lines += figures + tables if section.figures_first else tables + figures
    return "\n".join(lines)


def write_report(out: str | os.PathLike[str], title: str, intro: Sequence[str],
                 sections: Sequence[Section], *, stem: str = "report",
                 lead: Sequence[str] = ()) -> tuple[Path, Path]:
    """Write ``<out>/<stem>.html`` and ``<out>/<stem>.md`` atomically; returns both paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    html_path, md_path = out / f"{stem}.html", out / f"{stem}.md"
    atomic_write_text(html_path, render_html(title, intro, sections, lead))
    atomic_write_text(md_path, render_markdown(title, intro, sections, out, lead))
    return html_path, md_path
