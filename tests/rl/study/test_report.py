"""report.md takes every name literally, as report.html does (#24 item 15): a plugin
environment's name cannot break a table or turn into a link, emphasis, code or HTML."""

from __future__ import annotations

import html
import re

import pandas as pd
from markdown_it import MarkdownIt

from rl.study.report import Figure, Section, render_markdown

NAME = "Evil|Env <b>bold</b> *em* _u_ `code` [link](http://x) ~s~ #1 &amp; \\ end"
"""A name as a plugin may register it: every character Markdown reads as syntax."""


def _rendered(tmp_path, name: str) -> str:
    """report.md of a page that shows ``name`` everywhere, rendered as GitHub would."""
    png = tmp_path / "plots" / f"b_simple_{name[:8]} (v1).png"
    png.parent.mkdir()
    png.write_bytes(b"")
    section = Section(
        heading=f"- {name}",
        paragraphs=[f"1. {name}\nsecond line", f"= {name}"],
        tables=[(pd.DataFrame({"env": [name, "plain"], "B_crit": [1.5, -2.0]}), "t")],
        figures=[Figure(png, f"B_simple of {name}")],
        notes=[f"note on {name}"],
    )
    md = render_markdown(f"# {name}", [f"> {name}"], [section], tmp_path)
    return MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(md)


def test_names_in_report_md_show_as_written(tmp_path):
    page = _rendered(tmp_path, NAME)
    # No markup came from the name: one heading per level, no list, quote, rule, emphasis
    # (the notes' and captions' own italics aside), code, link, HTML or strikethrough.
    assert page.count("<h1>") == 1 and page.count("<h2>") == 1
    for tag in ("<ul>", "<ol>", "<blockquote>", "<hr", "<strong>", "<code>", "<a ", "<b>",
                "<s>", "<del>"):
        assert tag not in page, tag
    assert page.count("<em>") == 2  # the note and the figure's caption
    # The name's text is there, as html.escape writes it, in every place it was put.
    text = html.escape(NAME, quote=False)
    assert page.count(text) == 9  # title, intro, heading, 2 paragraphs, cell, note, image, caption
    assert "second line" in page and "\nsecond line" not in page
    # The table keeps its two columns in every row, and numbers their sign.
    rows = re.findall(r"<tr>(.*?)</tr>", page, flags=re.S)
    assert len(rows) == 3 and all(r.count("<t") == 2 for r in rows)
    assert "<td>-2</td>" in page
    # The figure's file name is percent-encoded, not cut at its space or parenthesis.
    assert 'src="plots/b_simple_Evil%7CEnv%20%28v1%29.png"' in page
