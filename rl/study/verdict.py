"""The report's first sentence: RL's critical batch size against supervised learning's.

Built from the results table's ``b_crit_over_supervised`` rows (``rl.study.crosstask``): each
RL task's B_crit (agent steps) over each supervised sweep's (examples), with the interval
from the ends of the two profile intervals, or a bound where a B_crit is one. Nothing is
hard-coded: the words follow the intervals (above 1, below 1, or containing 1).
"""

from __future__ import annotations

import math

import pandas as pd

from rl.study.crosstask import RL_OVER_SUPERVISED
from rl.study.report import format_interval

__all__ = ["verdict_sentence"]

_WORDS = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
          "eleven", "twelve"]


def _count(n: int) -> str:
    """A count in words (the page shows no number that is not in the results table)."""
    return _WORDS[n] if 0 <= n < len(_WORDS) else f"{n:,}"


def _bound(r: pd.Series) -> str:
    """'>= x' or '<= x' for a ratio row that is a bound, else ''."""
    lo, hi = r["lo"], r["hi"]
    if lo == lo and hi == hi and math.isinf(hi) and lo > 0:
        return format_interval(math.nan, lo, hi, bound=">=")
    if lo == lo and hi == hi and lo <= 0 and math.isfinite(hi):
        return format_interval(math.nan, lo, hi, bound="<=")
    return ""


def _why_none(df: pd.DataFrame) -> str:
    """Why there is no ratio, and the RL B_crit there is."""
    crit = df[(df["quantity"] == "b_crit") & (df["source"] == "measured")]
    rl = crit[crit["kind"] == "rl"]
    sup = crit[crit["kind"] == "supervised"]
    cells = []
    for task, mine in rl.groupby("task", sort=False):
        fitted = mine[mine["value"].notna()].sort_values("target")
        if len(fitted):
            r = fitted.iloc[-1]
            cells.append(f"{task} {format_interval(r['value'], r['lo'], r['hi'])}")
    missing = ("no supervised sweep" if sup.empty else "no RL task with a fitted B_crit"
               if not cells else "no supervised sweep with a fitted B_crit")
    have = f"; RL B_crit (agent steps): {', '.join(cells)}" if cells else ""
    return f"this study has {missing} to compare{have}."


def _pair(r: pd.Series) -> str:
    return f"{r['task']} over {r['term']}"


def verdict_sentence(df: pd.DataFrame) -> str:
    """One sentence: is RL's B_crit larger or smaller than supervised learning's, by how
    much, and how sure, with the numbers and intervals of the results table ``df``.

    Pairs whose interval lies above 1 say RL's B_crit is larger, below 1 smaller, and
    containing 1 undecided; a pair where a B_crit is only a bound is named as a bound."""
    rows = df[(df["quantity"] == RL_OVER_SUPERVISED) & (df["source"] == "measured")]
    measured = rows[rows["value"].notna() & rows["lo"].notna() & rows["hi"].notna()
                    & rows["hi"].map(lambda x: math.isfinite(x))]
    # Every other row with an open end (a bound on either B_crit) is a bound, value or not.
    bounds = [(r, b) for i, r in rows.iterrows() if i not in measured.index and (b := _bound(r))]
    if measured.empty and not bounds:
        return "No verdict on RL against supervised B_crit: " + _why_none(df)
    above = int((measured["lo"] > 1).sum())
    below = int((measured["hi"] < 1).sum())
    between = len(measured) - above - below
    by_task: dict[str, list[str]] = {}
    for r, b in bounds:
        by_task.setdefault(r["task"], []).append(f"{b} over {r['term']}")
    bound_words = "; ".join(f"{t}: {', '.join(c)}" for t, c in by_task.items())
    if measured.empty:
        larger = all(b.startswith(">=") and r["lo"] >= 1 for r, b in bounds)
        smaller = all(b.startswith("<=") and r["hi"] <= 1 for r, b in bounds)
        lead = ("RL needs batches at least as large as supervised learning, as far as bounds "
                "tell" if larger else "RL needs batches at most as large as supervised "
                "learning, as far as bounds tell" if smaller else
                "RL's critical batch size against supervised learning's is unresolved")
        return (f"{lead}: no RL task here has a fitted B_crit, so RL B_crit (agent steps) "
                f"over supervised B_crit (examples) is only bounded: {bound_words}.")
    if above == len(measured):
        lead = "RL needs larger batches than supervised learning"
    elif below == len(measured):
        lead = "RL needs smaller batches than supervised learning"
    elif above and not below:
        lead = "RL's critical batch size is as large as supervised learning's or larger"
    elif below and not above:
        lead = "RL's critical batch size is as small as supervised learning's or smaller"
    else:
        lead = "RL's critical batch size against supervised learning's is not settled"
    order = measured.sort_values("value")
    lo_r, hi_r = order.iloc[0], order.iloc[-1]
    cell = lambda r: format_interval(r["value"], r["lo"], r["hi"])  # noqa: E731
    spread = (f"{cell(lo_r)} ({_pair(lo_r)}) to {cell(hi_r)} ({_pair(hi_r)})"
              if len(order) > 1 else f"{cell(lo_r)} ({_pair(lo_r)})")
    n = len(measured)
    tally = (f"the interval lies above 1 for {_count(above) if above else 'none'} of "
             f"{_count(n)} {'pair' if n == 1 else 'pairs'}, contains 1 for "
             f"{_count(between) if between else 'none'} and lies below 1 for "
             f"{_count(below) if below else 'none'}")
    tail = ""
    if bounds:
        names = list(by_task)
        who = (f"{names[0]}'s B_crit is" if len(names) == 1 else
               f"{', '.join(names[:-1])} and {names[-1]}'s B_crit are")
        cells = ", ".join(by_task[names[0]]) if len(names) == 1 else bound_words
        tail = f"; {who} only a bound ({cells})"
    return (f"{lead}: RL B_crit (agent steps) over supervised B_crit (examples) runs from "
            f"{spread}, intervals >= 90%; {tally}{tail}.")
