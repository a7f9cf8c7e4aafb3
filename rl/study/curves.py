"""Learning curves of the runs behind a task's B_crit: the return against agent steps of
the sweep's runs at each batch size's best learning rate (every seed), one small figure per
task; where the run metrics were not kept (a sweep stored as its results table), a line
saying so instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from rl.analysis.ticks import tidy_log_axis
from rl.runs.files import save_figure
from rl.runs.metrics import load_metrics
from rl.runs.record import has_metrics
from rl.study.plan import Part
from rl.study.report import format_value
from rl.study.results import best_lr_runs, part_table
from rl.sweeps.spec import plan_runs

__all__ = ["curve_runs", "plot_learning_curves", "sorted_xy"]

X, Y = "agent_steps", "return_recent"


def sorted_xy(x, y) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) with the non-finite pairs dropped, sorted by x: a line through them never
    zig-zags back."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    order = np.argsort(x[keep], kind="stable")
    return x[keep][order], y[keep][order]


def curve_runs(part: Part) -> tuple[dict[int, list[tuple[str, float, pd.DataFrame]]], str]:
    """The best-lr runs of a sweep part with their metrics, by batch size: {batch size:
    [(run name, lr, metrics)]}, and '' or why there are none."""
    try:
        table = part_table(part)
    except Exception as e:  # noqa: BLE001 - a stored sweep without its table: say so
        return {}, f"no results table ({type(e).__name__})"
    chosen = set(best_lr_runs(part, table))
    if not chosen:
        return {}, "no run reached the highest target yet"
    out: dict[int, list] = {}
    missing = 0
    for p in plan_runs(part.spec):
        if p.name not in chosen:
            continue
        if not has_metrics(p.run_dir):
            missing += 1
            continue
        m = load_metrics(p.run_dir)
        if X not in m or Y not in m:
            missing += 1
            continue
        b = int(m["rollout_batch_size"].iloc[0]) if "rollout_batch_size" in m else 0
        lr = float(m["learning_rate"].iloc[0]) if "learning_rate" in m else float("nan")
        out.setdefault(b, []).append((p.name, lr, m))
    if not out:
        return {}, ("run metrics not kept (the sweep is stored as its results table only)"
                    if missing else "no run metrics")
    return dict(sorted(out.items())), ""


def plot_learning_curves(task: str, runs: dict[int, list[tuple[str, float, pd.DataFrame]]],
                         path: str | os.PathLike[str], target: float | None = None) -> Path:
    """Return against agent steps (log axis) per batch size at its best lr: one colour per
    batch size named in the legend (no colour bar), one thin line per seed, the target as a
    dashed line."""
    import matplotlib  # lazy: slow import, figures only
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: slow import
    from matplotlib.figure import Figure as MplFigure  # lazy: slow import

    fig = MplFigure(figsize=(6.4, 3.4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    cmap = matplotlib.colormaps["viridis"]
    n = len(runs)
    for i, (b, rs) in enumerate(runs.items()):
        color = cmap(0.9 * i / max(n - 1, 1))
        for j, (_, lr, m) in enumerate(rs):
            x, y = sorted_xy(m[X], m[Y])
            label = f"B = {format_value(b)} (lr {lr:.3g}, {len(rs)} seeds)" if j == 0 else None
            ax.plot(x, y, color=color, lw=1.0, alpha=0.85, label=label)
    if target is not None and target == target:
        ax.axhline(target, color="0.3", ls="--", lw=1, label=f"target {format_value(target)}")
    ax.set_xscale("log")
    tidy_log_axis(ax, "x")
    ax.set_xlabel("agent steps")
    ax.set_ylabel("return (recent episodes)")
    ax.set_title(f"{task}: runs at each batch size's best lr", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best", framealpha=0.9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=90)
    return path
