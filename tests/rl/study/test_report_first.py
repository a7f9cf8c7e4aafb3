"""The report answers first (#27 item 6): the verdict sentence from the results table, the
summary figure and the headline before every detail, digits that match the interval, and
no bare number where an interval does not pin one."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from rl.study.crosstask import RL_OVER_SUPERVISED
from rl.study.curves import sorted_xy
from rl.study.headline import headline_table
from rl.study.report import (
    Figure,
    Section,
    format_interval,
    interval_digits,
    render_html,
    render_markdown,
)
from rl.study.results import finalize_table, result_row
from rl.study.verdict import verdict_sentence

INF = math.inf
NAN = math.nan


@pytest.mark.parametrize(("value", "lo", "hi", "text"), [
    # narrow: every digit the table has
    (100.5, 100.1, 100.9, "100.5 [100.1, 100.9]"),
    # +-13%: two digits
    (534.8, 472.4, 607.7, "530 [470, 610]"),
    (1.607, 1.142, 2.258, "1.6 [1.1, 2.3]"),
    # a factor 7: the value keeps one digit, the ends one or two
    (79.37, 45.94, 318.5, "80 [50, 320]"),
    # a factor 140: one digit, the small end at the same decimal place
    (2.873, 0.2415, 34.18, "3 [0.2, 34]"),
    # half-width 365 (leading digits > 354): rounded to the hundreds
    (963.0, 696.1, 1427.0, "1,000 [700, 1,400]"),
    # negative values (returns, exponents)
    (-96.85, -120.0, -80.0, "-97 [-120, -80]"),
    # open at the top: a lower bound, not the point estimate
    (13920.0, 4137.0, INF, ">= 4,137"),
    (NAN, 1837.0, INF, ">= 1,837"),
    # from 0 to inf: unresolved, with the interval's ends
    (5506.0, 0.0, INF, "unresolved (interval 0 to inf)"),
    # a bound row (value NaN)
    (NAN, 0.0, 25.0, "0 to 25"),
    # no interval: the value as the table has it; nothing: '-'
    (123.6, NAN, NAN, "123.6"),
    (NAN, NAN, NAN, "-"),
])
def test_format_interval(value, lo, hi, text):
    assert format_interval(value, lo, hi) == text


def test_format_interval_bounds_and_digits():
    from rl.study.report import format_ends

    assert format_ends(0.3774, 29.75) == "0.4, 30"  # a factor 80: one digit
    assert format_ends(472.4, 607.7) == "470, 610"
    assert format_interval(NAN, 1837.0, INF, bound=">=") == ">= 1,837"
    assert format_interval(NAN, 0.0, 250.0, bound="<=") == "<= 250"
    assert interval_digits(534.8, 472.4, 607.7) == 2
    assert interval_digits(79.37, 45.94, 318.5) == 1
    assert interval_digits(100.5, 100.1, 100.9) == 4
    assert interval_digits(5.0, 0.0, INF) == 4  # no finite interval: all the digits


def _ratio(task, sup, value, lo, hi, note=""):
    return result_row("measured", "rl", task, RL_OVER_SUPERVISED, value, term=sup,
                      target=1.0, lo=lo, hi=hi, unit="ratio", note=note)


def test_verdict_sentence_from_the_table():
    df = finalize_table([
        _ratio("CartPole", "digits-mlp", 1.174, 0.8424, 1.63),
        _ratio("CartPole", "digits-cnn", 3.636, 2.655, 4.993),
        _ratio("MinAtar-Breakout", "digits-cnn", 6.171, 3.183, 11.63),
        _ratio("Breakout", "digits-mlp", NAN, 3.276, INF),
    ])
    s = verdict_sentence(df)
    assert s.count(".") >= 1 and s.endswith(".") and "\n" not in s
    assert s.startswith("RL's critical batch size is as large as supervised learning's or "
                        "larger")
    # The smallest and largest ratio with their intervals, digits to match.
    assert "1.2 [0.8, 1.6] (CartPole over digits-mlp)" in s
    assert "6 [3, 12] (MinAtar-Breakout over digits-cnn)" in s
    assert "above 1 for two of three pairs, contains 1 for one" in s
    # The bound is a bound, never a point.
    assert "Breakout's B_crit is only a bound (>= 3.276 over digits-mlp)" in s

    # Every interval above 1: the plain answer.
    df = finalize_table([_ratio("CartPole", "digits-cnn", 3.636, 2.655, 4.993)])
    assert verdict_sentence(df).startswith("RL needs larger batches than supervised learning")


def test_verdict_sentence_when_rl_is_only_a_bound():
    df = finalize_table([_ratio("Breakout", "digits-mlp", NAN, 3.276, INF),
                         _ratio("Breakout", "digits-cnn", NAN, 10.33, INF)])
    s = verdict_sentence(df)
    assert s.startswith("RL needs batches at least as large as supervised learning, as far "
                        "as bounds tell")
    assert "only bounded" in s and ">= 3.276 over digits-mlp" in s and ">= 10.33" in s
    assert "[" not in s  # no interval invented for a bound
    # A ratio with a point but an open end is a bound too, never a bare number.
    df = finalize_table([_ratio("Breakout", "digits-mlp", 5.0, 3.276, INF)])
    s = verdict_sentence(df)
    assert ">= 3.276 over digits-mlp" in s and "5" not in s.replace("3.276", "")


def test_verdict_sentence_without_a_ratio_says_why():
    df = finalize_table([result_row("measured", "rl", "CartPole", "b_crit", 265.0, target=200.0,
                                    lo=119.5, hi=1096.0, unit="agent steps")])
    s = verdict_sentence(df)
    assert s.startswith("No verdict") and "no supervised sweep" in s
    assert "CartPole 300 [100, 1,100]" in s


def test_headline_shows_no_bare_number_for_an_unresolved_interval():
    rows = []
    for term, (v, lo, hi) in {"total": (79.37, 45.94, 318.5), "policy": (5506.0, 0.0, INF),
                              "value": (13920.0, 4137.0, INF)}.items():
        rows.append(result_row("measured", "rl", "CartPole", "b_simple", v, term=term, lo=lo,
                               hi=hi, unit="agent steps", n=58))
    rows += [result_row("measured", "rl", "CartPole", "b_simple_start", 123.6, term="total",
                        lo=0.0, hi=273.9, unit="agent steps", n=14),
             result_row("measured", "rl", "CartPole", "b_simple_end", NAN, term="total",
                        unit="agent steps", n=14)]
    head = headline_table(finalize_table(rows)).set_index("task").loc["CartPole"]
    assert head["B_simple total [95%]"] == "80 [50, 320]"
    assert head["B_simple policy [95%]"] == "unresolved (interval 0 to inf)"
    assert head["B_simple value [95%]"] == ">= 4,137"
    assert "5,506" not in " ".join(map(str, head.values))
    quarters = head["B_simple total: first -> last quarter"]
    assert quarters == "120 -> unresolved" and "-> -" not in quarters


def test_verdict_and_summary_come_before_the_tables_and_details(tmp_path):
    png = tmp_path / "summary.png"
    from PIL import Image

    Image.new("RGB", (4, 4), "white").save(png)
    head = pd.DataFrame({"task": ["CartPole"], "B_crit": ["530 [470, 610]"]})
    sections = [
        Section("Across tasks", paragraphs=["details"], collapsed=True),
        Section("Headline", tables=[(head, "headline")], figures=[Figure(png, "summary")],
                figures_first=True),
        Section("Results table", tables=[(head, "results")], collapsed=True),
    ]
    page = render_html("T", [], sections, lead=["VERDICT sentence."])
    at = {k: page.index(k) for k in ('class="verdict"', "<img", 'id="headline"', "<details>",
                                     "Across tasks", 'id="results"')}
    assert at['class="verdict"'] < at["<img"] < at['id="headline"'] < at["<details>"]
    assert at["<details>"] < at["Across tasks"] < at['id="results"']
    assert page.count("<details>") == 2 and "<details open" not in page
    md = render_markdown("T", [], sections, tmp_path, lead=["VERDICT sentence."])
    assert md.index("**VERDICT sentence.**") < md.index("![summary]") < md.index("| CartPole")
    assert md.index("| CartPole") < md.index("## Across tasks")


def test_sorted_xy_never_zig_zags():
    x, y = sorted_xy([3, 1, np.nan, 2, 5], [30, 10, 99, 20, np.inf])
    assert list(x) == [1, 2, 3] and list(y) == [10, 20, 30]
    assert np.all(np.diff(x) >= 0)


def test_binned_median_line_is_sorted_and_robust():
    from rl.analysis.sweep_fits import binned_median

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 500, 400)  # a trajectory's returns, in no order
    y = np.exp(rng.normal(np.log(100), 0.5, 400))
    y[:5] = 1e6  # a few wild estimates move no median
    bx, by = binned_median(x, y, bins=10)
    assert len(bx) == 10 and np.all(np.diff(bx) > 0)
    assert np.all((by > 50) & (by < 200))
    assert binned_median([], [])[0].size == 0


def _page_height(browser: str, page, tmp_path) -> int:
    """The rendered page's height in CSS pixels at 1,280 px wide, measured in a copy of the
    page with a script added (the report itself has none)."""
    import re
    import subprocess

    probe = tmp_path / "probe.html"
    probe.write_text(page.replace(
        "</body></html>", '<script>window.addEventListener("load", () => document.body.'
        'setAttribute("data-h", document.documentElement.scrollHeight))</script></body></html>'),
        encoding="utf-8")
    out = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900",
         "--virtual-time-budget=3000", "--dump-dom", probe.resolve().as_uri()],
        capture_output=True, text=True, timeout=120).stdout
    return int(re.search(r'data-h="(\d+)"', out).group(1))


def test_collapsed_details_keep_the_page_short_in_chromium(tmp_path):
    import shutil

    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                    if shutil.which(n)), None)
    if browser is None:
        pytest.skip("no Chromium installed (`make chromium`)")
    from PIL import Image

    png = tmp_path / "summary.png"
    Image.new("RGB", (1200, 500), "white").save(png)
    big = pd.DataFrame({"task": [f"task {i}" for i in range(300)], "value": range(300)})
    sections = [Section("Headline", tables=[(big.head(8), "headline")],
                        figures=[Figure(png, "summary")], figures_first=True),
                Section("Results table", tables=[(big, "results")], collapsed=True)]
    short = _page_height(browser, render_html("T", [], sections, lead=["Verdict."]), tmp_path)
    sections[1].collapsed = False
    long = _page_height(browser, render_html("T", [], sections, lead=["Verdict."]), tmp_path)
    assert short < 1500 < 5000 < long, (short, long)


def test_a_sweep_mean_without_interval_says_so():
    df = finalize_table([
        result_row("measured", "supervised", "digits-mlp", "b_crit", 455.5, target=-0.03,
                   lo=372.9, hi=560.8, unit="training examples"),
        result_row("measured", "supervised", "digits-mlp", "b_simple_sweep", 475.9,
                   term="total", target=-0.03, unit="training examples", n=45)])
    head = headline_table(df).set_index("task").loc["digits-mlp"]
    assert head["B_simple total [95%]"] == "475.9 (sweep runs' mean, no interval)"
    assert head["B_crit [interval]"] == "460 [370, 560]"


def test_summary_figure_draws_an_open_interval_as_a_bound():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    from rl.study.headline import _errbar

    fig = MplFigure()
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.set_yscale("log")
    row = lambda v, lo, hi: pd.Series({"value": v, "lo": lo, "hi": hi})  # noqa: E731
    assert _errbar(ax, 0, row(428300.0, 16260.0, INF), marker="o", color="C0")
    assert not ax.containers  # no error bar around the point estimate
    (pts,) = ax.collections
    assert pts.get_offsets()[0][1] == 16260.0  # the marker sits at the lower end
    assert not _errbar(ax, 1, row(5506.0, 0.0, INF), marker="o", color="C0")  # unresolved
    assert _errbar(ax, 2, row(534.8, 472.4, 607.7), marker="s", color="C3")
    assert len(ax.containers) == 1
