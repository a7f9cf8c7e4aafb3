"""Readable log axes: plain numbers at the decades (1, 10, 100, 1,000 ...; 2 and 5 between
where the axis spans under two decades), no labels on the minor ticks, so that labels such
as "2x10^2  3x10^2  4x10^2" never crowd or overlap."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["plain_number", "tidy_log_axis"]


def plain_number(x: float, _pos: Any = None) -> str:
    """A tick label: 0.01, 0.5, 20, 1,000, 2e+06 (3 significant digits at most)."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    if 1e-3 <= abs(x) < 1e6:
        text = f"{x:,.3g}" if abs(x) < 1e3 else f"{round(x):,}"
        return text
    return f"{x:.0e}".replace("e+0", "e").replace("e-0", "e-")


def tidy_log_axis(ax: Any, which: str = "both") -> None:
    """On the log-scaled axes of ``ax`` (``which``: "x", "y" or "both"): major ticks at
    1, 2, 5 x 10^k when the axis spans under two decades, else at the decades; plain number
    labels; no minor tick labels. Axes that are not log-scaled are left as they are."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # lazy: slow import

    for name in ("x", "y") if which == "both" else (which,):
        axis = ax.xaxis if name == "x" else ax.yaxis
        if (ax.get_xscale() if name == "x" else ax.get_yscale()) != "log":
            continue
        lo, hi = sorted(ax.get_xlim() if name == "x" else ax.get_ylim())
        span = math.log10(hi / lo) if lo > 0 and hi > 0 else 99.0
        subs = (1.0, 2.0, 5.0) if span < 2 else (1.0,)
        axis.set_major_locator(LogLocator(base=10, subs=subs))
        axis.set_major_formatter(FuncFormatter(plain_number))
        axis.set_minor_formatter(NullFormatter())
