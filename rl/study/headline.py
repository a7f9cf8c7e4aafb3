"""The study's headline: one row per task (B_simple, B_crit, final score) and its figure.

Every number comes from the results table (``rl.study.results``), as printed; measured
and cited values stay apart. See docs/study.md.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from rl.analysis.fit import B_CRIT_CI
from rl.runs.files import save_figure
from rl.study.report import format_interval, format_value, interval_digits
from rl.study.results import ACROSS_TASKS, GNS_TERMS
from rl.study.settings import CITED_LABEL

__all__ = [
    "HEADLINE_COLUMNS",
    "b_crit_bound",
    "headline_b_crit",
    "headline_b_simple",
    "headline_table",
    "pick_row",
    "plot_summary",
]

HEADLINE_COLUMNS = ["source", "task", "unit", "B_simple total [95%]", "B_simple policy [95%]",
                    "B_simple value [95%]", "B_simple total: first -> last quarter",
                    "B_crit [interval]",
                    "B_crit target return", "final score", "reference"]


def pick_row(df: pd.DataFrame, task: str, quantity: str, term: str = "") -> pd.Series | None:
    """The first row of the results table for (task, quantity, term), or None."""
    sel = df[(df["task"] == task) & (df["quantity"] == quantity) & (df["term"] == term)]
    return None if sel.empty else sel.iloc[0]


def _value_or_range(r) -> str:
    if r is None:
        return "-"
    if not pd.isna(r["value"]):
        return format_value(r["value"])
    if pd.isna(r["lo"]):
        return "-"
    if math.isinf(r["hi"]):
        return f"> {format_value(r['lo'])}"
    return f"{format_value(r['lo'])} to {format_value(r['hi'])}"


def headline_b_crit(df: pd.DataFrame, task: str) -> pd.Series | None:
    """The B_crit row shown for a task: the highest target with a measured B_crit, else the
    highest with a bound, else the highest target."""
    sel = df[(df["task"] == task) & (df["quantity"] == "b_crit") & (df["source"] == "measured")]
    if sel.empty:
        return None
    ok = sel[sel["value"].notna()]
    bounds = sel[[bool(b_crit_bound(r)) for _, r in sel.iterrows()]]
    return (ok if len(ok) else bounds if len(bounds) else sel).sort_values("target").iloc[-1]


def headline_b_simple(df: pd.DataFrame, task: str, term: str) -> pd.Series | None:
    """The B_simple row shown for a task: from the noise-scale runs, else from the sweep
    runs (``b_simple_sweep`` at the headline B_crit's target)."""
    r = pick_row(df, task, "b_simple", term)
    if r is not None:
        return r
    sel = df[(df["task"] == task) & (df["quantity"] == "b_simple_sweep") & (df["term"] == term)]
    bc = headline_b_crit(df, task)
    if bc is not None:
        sel = sel[sel["target"] == bc["target"]]
    return None if sel.empty else sel.iloc[-1]


def _b_simple_cell(r) -> str:
    """A B_simple row as shown: value [interval] with the digits the interval allows, a
    bound, or unresolved (``format_interval``); never a bare number for an open interval."""
    if r is None:
        return "-"
    if pd.isna(r["value"]) and pd.isna(r["lo"]) and pd.isna(r["hi"]):
        text = "unresolved (mean |G|^2 not positive)" if r["n"] == r["n"] and r["n"] > 0 \
            else "-"
    else:
        text = format_interval(r["value"], r["lo"], r["hi"])
    if r["quantity"] != "b_simple_sweep" or text == "-":
        return text
    bare = pd.isna(r["lo"]) and pd.isna(r["hi"])
    return text + (" (sweep runs' mean, no interval)" if bare else " (sweep runs)")


def _quarter_cell(r) -> str:
    """B_simple over a quarter of the measurements: the value with its interval's digits,
    ``unresolved`` where its interval does not pin it (0 to inf, or no ratio: mean |G|^2 of
    the quarter not positive), a bound where it is one."""
    if r is None:
        return "-"
    text = _b_simple_cell(r)
    if text.startswith("unresolved") or text == "-":
        return "unresolved"
    if text.startswith((">=", "<=")):
        return text
    return format_value(r["value"], interval_digits(r["value"], r["lo"], r["hi"]))


def _cited_row(df: pd.DataFrame, task: str, mine: pd.DataFrame) -> dict:
    bs, bc = pick_row(df, task, "b_simple"), pick_row(df, task, "b_crit")
    return {"source": "cited", "task": task, "unit": mine["unit"].iloc[0],
            "B_simple total [95%]": _value_or_range(bs),
            "B_simple policy [95%]": "", "B_simple value [95%]": "",
            "B_simple total: first -> last quarter": "",
            "B_crit [interval]": _value_or_range(bc),
            "B_crit target return": "", "final score": "",
            "reference": mine["reference"].iloc[0]}


def _b_crit_cells(df: pd.DataFrame, task: str) -> tuple[str, str]:
    """(B_crit [interval], its target return) as shown."""
    bc = headline_b_crit(df, task)
    runs = pick_row(df, task, "sweep_runs_settled")
    unsettled = "" if runs is None or runs["value"] >= runs["n"] else \
        f" ({format_value(runs['value'])} of {format_value(runs['n'])} runs finished)"
    if bc is None:
        if runs is None and (sweeps := _supervised_sweeps(df, task)):
            return f"see {', '.join(sweeps)} (sweep)", ""
        return ("no sweep" if runs is None else "no fit yet") + unsettled, ""
    if pd.isna(bc["value"]):
        bound = b_crit_bound(bc)
        return (bound or "no fit") + unsettled, format_value(bc["target"])
    return format_interval(bc["value"], bc["lo"], bc["hi"]) + unsettled, \
        format_value(bc["target"])


def _supervised_sweeps(df: pd.DataFrame, task: str) -> list[str]:
    """For the supervised reference run's row: the supervised tasks with a sweep (b_crit
    rows) in the table, else []."""
    mine = df[df["task"] == task]
    if mine.empty or (mine["kind"] != "supervised").any():
        return []
    swept = df[(df["kind"] == "supervised") & (df["quantity"] == "b_crit")
               & (df["source"] == "measured")]
    return [t for t in dict.fromkeys(swept["task"]) if t != task]


def b_crit_bound(r: pd.Series | None) -> str:
    """'>= x' / '<= x' for a b_crit row that is a bound (``rl.study.results``), else ''."""
    if r is None or not pd.isna(r["value"]):
        return ""
    note = str(r["note"])
    if note.startswith("lower bound") and r["lo"] > 0:
        return f">= {format_value(r['lo'])}"
    if note.startswith("upper bound") and math.isfinite(r["hi"]):
        return f"<= {format_value(r['hi'])}"
    return ""


def _score_cell(df: pd.DataFrame, task: str) -> str:
    final = pick_row(df, task, "final_return")
    acc = pick_row(df, task, "final_test_accuracy")
    return (f"return {format_value(final['value'])}" if final is not None else
            f"test accuracy {format_value(acc['value'])}" if acc is not None else "")


def _measured_row(df: pd.DataFrame, task: str, mine: pd.DataFrame) -> dict:
    tot = headline_b_simple(df, task, "total")
    start, end = pick_row(df, task, "b_simple_start", "total"), \
        pick_row(df, task, "b_simple_end", "total")
    b_crit, b_target = _b_crit_cells(df, task)
    units = mine.loc[mine["quantity"] != "sweep_runs_settled", "unit"]  # not "runs"
    unit = tot["unit"] if tot is not None else units.iloc[0] if len(units) else "agent steps"
    return {
        "source": mine["source"].iloc[0], "task": task, "unit": unit,
        "B_simple total [95%]": _b_simple_cell(tot),
        "B_simple policy [95%]": _b_simple_cell(headline_b_simple(df, task, "policy")),
        "B_simple value [95%]": _b_simple_cell(headline_b_simple(df, task, "value")),
        "B_simple total: first -> last quarter": "-" if start is None else
        f"{_quarter_cell(start)} -> {_quarter_cell(end)}",
        "B_crit [interval]": b_crit, "B_crit target return": b_target,
        "final score": _score_cell(df, task), "reference": "",
    }


def headline_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per task, every number taken from the results table ``df`` (as strings)."""
    rows = []
    for task in dict.fromkeys(df["task"]):
        if task == ACROSS_TASKS:
            continue
        mine = df[df["task"] == task]
        if mine["source"].iloc[0] == "cited":
            rows.append(_cited_row(df, task, mine))
        else:
            rows.append(_measured_row(df, task, mine))
    return pd.DataFrame(rows, columns=HEADLINE_COLUMNS)


# --------------------------------------------------------------------------------------
# The summary figure
# --------------------------------------------------------------------------------------

_TERM_STYLE = {"total": ("o", "C0"), "policy": ("^", "C1"), "value": ("v", "C2")}


class _Labels:
    """Legend labels, each given once."""

    def __init__(self):
        self.used: set[str] = set()

    def __call__(self, text: str) -> str | None:
        if text in self.used:
            return None
        self.used.add(text)
        return text


def _errbar(ax, xi, r, **kw) -> bool:
    """A value with its interval; an interval open at the top drawn as what it is, a lower
    bound (a hollow marker at its lower end, an arrow up, no point estimate); an interval
    from 0 to inf not at all (unresolved, as in the table). False if nothing was drawn."""
    v, lo, hi = r["value"], r["lo"], r["hi"]
    if hi == hi and math.isinf(hi):
        if not (lo == lo and lo > 0):
            return False
        color = kw.get("color", "k")
        ax.scatter([xi], [lo], marker=kw.get("marker", "o"), facecolors="none",
                   edgecolors=color, s=kw.get("markersize", 7) ** 2, linewidths=1.4,
                   label=kw.get("label"), zorder=3)
        ax.annotate("", xy=(xi, lo * 6), xytext=(xi, lo),
                    arrowprops=dict(arrowstyle="->", color=color))
        return True
    if not (v > 0):
        return False
    lower = v - lo if lo == lo and lo > 0 else 0.0
    upper = hi - v if hi == hi and math.isfinite(hi) else 0.0
    yerr = [[max(lower, 0.0)], [max(upper, 0.0)]] if (lower or upper) else None
    ax.errorbar([xi], [v], yerr=yerr, capsize=3, linestyle="none", **kw)
    return True


def _plot_measured(ax, df: pd.DataFrame, task: str, xt: float, lab: _Labels) -> None:
    for i, term in enumerate(GNS_TERMS):
        r = headline_b_simple(df, task, term)
        if r is not None:
            marker, color = _TERM_STYLE[term]
            _errbar(ax, xt - 0.2 + 0.1 * i, r, marker=marker, color=color, markersize=7,
                    label=lab(f"B_simple, {term} loss (measured, 95%)"))
    bc = headline_b_crit(df, task)
    if bc is not None and bc["value"] == bc["value"]:
        _errbar(ax, xt + 0.2, bc, marker="s", color="C3", markersize=8,
                label=lab(f"B_crit (measured, {B_CRIT_CI:.0%} profile interval)"))
    elif bound := b_crit_bound(bc):
        y = bc["lo"] if bound.startswith(">=") else bc["hi"]
        ax.scatter([xt + 0.2], [y], marker="_", color="C3", s=120,
                   label=lab("B_crit bound (knee not covered)"))
        ax.annotate("", xy=(xt + 0.2, y * (4 if bound.startswith(">=") else 0.25)),
                    xytext=(xt + 0.2, y), arrowprops=dict(arrowstyle="->", color="C3"))


def _plot_cited(ax, df: pd.DataFrame, task: str, xt: float, lab: _Labels) -> None:
    for quantity, marker, color, name in (("b_simple", "D", "0.25", "B_simple"),
                                          ("b_crit", "s", "0.55", "B_crit")):
        r = pick_row(df, task, quantity)
        if r is None:
            continue
        xi = xt + (-0.12 if quantity == "b_simple" else 0.12)
        label = lab(f"{name}, {CITED_LABEL}")
        if r["value"] == r["value"]:
            ax.scatter([xi], [r["value"]], marker=marker, facecolors="none",
                       edgecolors=color, s=70, linewidths=1.6, label=label, zorder=3)
            continue
        lo, hi = r["lo"], r["hi"]
        top = hi if math.isfinite(hi) else lo * 6
        ax.plot([xi, xi], [lo, top], color=color, lw=2.2, label=label)
        ax.scatter([xi], [lo], marker=marker, facecolors="none", edgecolors=color,
                   s=50, linewidths=1.4, zorder=3)
        if math.isfinite(hi):
            ax.scatter([xi], [hi], marker=marker, facecolors="none",
                       edgecolors=color, s=50, linewidths=1.4, zorder=3)
        else:
            ax.annotate("", xy=(xi, top), xytext=(xi, lo),
                        arrowprops=dict(arrowstyle="->", color=color))


def _finish_axes(ax, order: list[str]) -> None:
    ax.set_yscale("log")
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels(order, rotation=30, ha="right", fontsize=9)
    ax.set_xlim(-0.5, len(order) - 0.5)
    ax.set_ylabel("batch size (RL: agent steps; supervised: examples;\nBillion Word: tokens)",
                  fontsize=8.5)
    ax.set_title("Critical batch size and gradient noise scale: measured (left, blue) and "
                 "cited (right); hollow marker and arrow: a lower bound", fontsize=10)
    ax.grid(True, axis="y", which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", framealpha=0.9)


def plot_summary(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """B_simple (total, policy, value) and B_crit per task on a log axis: measured games,
    the measured supervised reference, and the cited values (hollow markers, legend
    ``CITED_LABEL``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: slow import, figures only
    from matplotlib.figure import Figure as MplFigure  # lazy: slow import, figures only

    tasks = [t for t in dict.fromkeys(df["task"]) if t != ACROSS_TASKS]
    measured = [t for t in tasks if (df.loc[df["task"] == t, "source"] == "measured").all()]
    cited = [t for t in tasks if t not in measured]
    order = measured + cited
    fig = MplFigure(figsize=(max(9.0, 0.7 * len(order) + 3), 5.2))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    if measured:
        ax.axvspan(-0.5, len(measured) - 0.5, color="#eef3fb", zorder=0)
    if cited:
        ax.axvspan(len(measured) - 0.5, len(order) - 0.5, color="#fbf6e9", zorder=0)
    lab = _Labels()
    for i, t in enumerate(order):
        (_plot_measured if t in measured else _plot_cited)(ax, df, t, i, lab)
    _finish_axes(ax, order)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=100)
    return path
