"""The critical-batch fit of a finished sweep, and its figures.

``fit_sweep`` fits S = S_min (1 + B_crit / B) per target from a results table
(``rl.analysis.fit``); ``plot_fits`` and ``plot_b_simple`` draw the sweep's figures.
See docs/critical-batch.md.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rl.analysis.fit import (
    B_CRIT_CI,
    FIT_COLUMNS,
    CriticalBatchFit,
    best_per_batch,
    fit_from_runs,
    plot_pareto,
    plot_steps_and_samples,
)
from rl.analysis.ticks import tidy_log_axis
from rl.measure.supervised import SUPERVISED_TASKS
from rl.runs.files import save_figure
from rl.runs.metrics import load_metrics
from rl.runs.record import has_metrics
from rl.sweeps.results import GNS_TERMS, INDEPENDENT_SPLITS, b_simple_curve, long_results
from rl.sweeps.settings import tkey

# Runs whose outcome is known: finished, or failed on their own (diverged: did not reach).
_SETTLED = ("finished", "failed")
LEGEND_BATCH_SIZES = 8
"""up to this many batch sizes in a B_simple plot: a legend names each; more: a colour bar"""


def fit_sweep(df: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0, ci: float = B_CRIT_CI,
              range_factor: float = 2.0, floors: Mapping[str, float] | None = None
              ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Critical batch size per (env, target) of a results table, with B_simple beside it.

    Uses runs whose status is finished or failed (a failed run did not reach what it did
    not reach); pending, running and interrupted runs are left out and counted in
    ``runs_unsettled``. ``rl.analysis.fit.fit_from_runs`` picks the best lr per batch size, fits
    S(B) with its profile interval, tests the lack of fit, leaves each batch size out and
    bootstraps seeds; targets at or below ``floors[env]`` (the untrained-play floor of the
    sweep, docs/sweeps.md) are refused.

    The B_simple columns beside the fit (``b_simple_{term}``) are the mean, over the runs
    at each batch size's best lr (every seed, every batch size whose best lr reached the
    target), of each run's run-averaged B_simple (mean trace_sigma / mean g2 over all its
    measured iterations, until it stopped); ``b_simple_runs`` counts the runs with a finite
    value. Only runs whose rollouts were split along the environment axis count
    (``gns_split`` "envs"; a supervised run's independent draws, "iid"): a run with fewer
    environments than groups is split in time, its groups are correlated and its B_simple
    biased low (docs/noise-scale.md). NaN where no such run measured the noise scale.

    ``min_seeds``: the fewest seeds at any batch size that reached the target (at its best
    lr); below ``rl.analysis.fit.FEW_SEEDS`` the interval is too narrow (``few_seeds_caveat``).

    Returns (fit table: rl.analysis.fit.FIT_COLUMNS + b_simple_total/policy/value, b_simple_runs,
    min_seeds, runs_used, runs_unsettled; per batch size table of
    rl.analysis.fit.best_per_batch).
    """

    settled = df[df["status"].isin(_SETTLED)].copy()
    unsettled = df[~df["status"].isin(_SETTLED)]
    if "gns_split" in settled:  # (tables written before the column: every run counts)
        settled.loc[~settled["gns_split"].isin(INDEPENDENT_SPLITS),
                    [f"b_simple_{t}" for t in GNS_TERMS]] = math.nan
    long = long_results(settled)
    extra = [*[f"b_simple_{t}" for t in GNS_TERMS], "b_simple_runs", "min_seeds", "runs_used",
             "runs_unsettled"]
    if long.empty:
        return pd.DataFrame(columns=[*FIT_COLUMNS, *extra]), pd.DataFrame()
    fits = fit_from_runs(long, n_boot=n_boot, seed=seed, ci=ci, range_factor=range_factor,
                         floors=floors)
    per_batch, per_seed = best_per_batch(long)
    for i, fit in fits.iterrows():
        mine = per_seed[(per_seed["env"] == fit["env"]) & (per_seed["target"] == fit["target"])]
        for term in GNS_TERMS:
            v = mine[f"b_simple_{term}"].astype(float)
            fits.loc[i, f"b_simple_{term}"] = float(v.mean()) if v.notna().any() else math.nan
        fits.loc[i, "b_simple_runs"] = int(mine["b_simple_total"].astype(float).notna().sum())
        used = per_batch[(per_batch["env"] == fit["env"]) & (per_batch["target"] == fit["target"])
                         & per_batch["reached"].astype(bool)]
        fits.loc[i, "min_seeds"] = int(used["n_seeds"].min()) if len(used) else math.nan
        fits.loc[i, "runs_used"] = int((settled["env"] == fit["env"]).sum())
        fits.loc[i, "runs_unsettled"] = int((unsettled["env"] == fit["env"]).sum())
    return fits[[*FIT_COLUMNS, *extra]], per_batch


def _fit_object(row: Mapping[str, Any]):
    ok = bool(row["ok"])
    return CriticalBatchFit(ok, "ok" if ok else "failed", str(row["reason"]),
                            s_min=float(row["s_min"]), e_min=float(row["e_min"]),
                            b_crit=float(row["b_crit"]))


def units(env: str) -> dict[str, str]:
    """How a sweep of ``env`` counts: B and E, S, the progress measure (a supervised task's:
    examples, optimizer steps, its progress score; docs/sweeps.md)."""
    if env in SUPERVISED_TASKS:
        return dict(batch="examples", steps="optimizer steps", target="progress score")
    return dict(batch="agent steps", steps="PPO iterations", target="return")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def seed_table(df: pd.DataFrame) -> pd.DataFrame | None:
    """Every settled run at each batch size's best lr per target (``best_per_batch``'s
    per-seed table) of a sweep's results table, for ``plot_fits``; None if there is none."""
    try:
        long = long_results(df[df["status"].isin(_SETTLED)])
        return None if long.empty else best_per_batch(long)[1]
    except (KeyError, TypeError, ValueError):
        return None


def _seed_points(axes, per_seed: pd.DataFrame | None, row) -> None:
    """Every seed at each batch size's best lr that reached the target, as small points: the
    spread behind each median."""
    if per_seed is None or not len(per_seed):
        return
    mine = per_seed[(per_seed["env"] == row["env"]) & (per_seed["target"] == row["target"])]
    mine = mine[mine["iterations_to_target"].notna()]
    if not len(mine):
        return
    b = mine["rollout_batch_size"].to_numpy(float)
    s = mine["iterations_to_target"].to_numpy(float)
    kw = dict(s=12, color="0.45", alpha=0.7, zorder=2, marker=".")
    axes[0].scatter(s, b * s, label="each seed (best lr)", **kw)
    axes[1].scatter(b, s, label="each seed (best lr)", **kw)
    axes[2].scatter(b, b * s, label="each seed (best lr)", **kw)


def _fit_band(axes, row, b: np.ndarray) -> None:
    """The band of S(B) and E(B) from the ends of the S_min, E_min and B_crit intervals
    (where the fit has them): lowest and highest curve over those ends."""
    try:
        s_lo, s_hi, e_lo, e_hi, b_lo, b_hi = (float(row[k]) for k in (
            "s_min_lo", "s_min_hi", "e_min_lo", "e_min_hi", "b_crit_lo", "b_crit_hi"))
    except (KeyError, TypeError, ValueError):
        return
    if not all(math.isfinite(v) and v > 0 for v in (s_lo, s_hi, e_lo, e_hi, b_lo, b_hi)):
        return
    grid = np.geomspace(b.min() / 4, b.max() * 4, 100)
    kw = dict(color="C0", alpha=0.15, lw=0, label=f"fit band ({B_CRIT_CI:.0%} interval ends)")
    axes[1].fill_between(grid, s_lo * (1 + b_lo / grid), s_hi * (1 + b_hi / grid), **kw)
    axes[2].fill_between(grid, e_lo * (1 + grid / b_hi), e_hi * (1 + grid / b_lo), **kw)


def plot_fits(out: str | os.PathLike[str], fits: pd.DataFrame,
              per_batch: pd.DataFrame, per_seed: pd.DataFrame | None = None) -> list[Path]:
    """One png per (env, target): E vs S with the fitted hyperbola, S(B) and E(B) with the
    fit and, where it has intervals, its band; with ``per_seed`` (``best_per_batch``'s) each
    seed's point beside the medians. Returns the paths written."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: slow import, figures only
    from matplotlib.figure import Figure  # lazy: slow import, figures only

    paths = []
    for _, row in fits.iterrows():
        pts = per_batch[(per_batch["env"] == row["env"]) & (per_batch["target"] == row["target"])
                        & per_batch["reached"]].sort_values("rollout_batch_size")
        if pts.empty:
            continue
        fit = _fit_object(row)
        fig = Figure(figsize=(15, 4.5))
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 3)
        b, s = pts["rollout_batch_size"].to_numpy(float), pts["s_median"].to_numpy(float)
        plot_pareto(axes[0], fit, b, s)
        plot_steps_and_samples(axes[1:], fit, b, s)
        _seed_points(axes, per_seed, row)
        if fit.ok:
            _fit_band(axes, row, b)
        for ax in axes:
            tidy_log_axis(ax)
            ax.legend(fontsize=7)
        if fit.ok:
            ci = f", B_crit interval [{row['b_crit_lo']:.3g}, {row['b_crit_hi']:.3g}]"
        elif str(row.get("bound", "")) and math.isfinite(float(row["b_crit_bound"])):
            ci = f": no measured B_crit, a bound: B_crit {row['bound']} {row['b_crit_bound']:.3g}"
        else:
            ci = f" -- no fit: {str(row['reason'])[:90]}"
        u = units(str(row["env"]))
        fig.suptitle(f"{row['env']}, target {u['target']} {row['target']:g}: B in "
                     f"{u['batch']}, S in {u['steps']}{ci}", fontsize=10)
        fig.tight_layout()
        path = Path(out) / f"fit_{_slug(str(row['env']))}_{tkey(row['target'])}.png"
        save_figure(fig, path, dpi=90)
        paths.append(path)
    return paths


def remove_stale_fit_plots(out: str | os.PathLike[str], fits: pd.DataFrame) -> list[Path]:
    """Remove the fit plots (``fit_<env>_<target>.png``) of the envs in ``fits`` for targets
    it no longer has, as after re-targeting a sweep; returns the paths removed."""
    removed = []
    for env, rows in fits.groupby("env", sort=True):
        slug = _slug(str(env))
        keep = {f"fit_{slug}_{tkey(t)}.png" for t in rows["target"]}
        plot = re.compile(rf"fit_{re.escape(slug)}_[-+0-9.e]+\.png")  # tkey's %g forms
        for path in sorted(Path(out).glob(f"fit_{slug}_*.png")):
            if plot.fullmatch(path.name) and path.name not in keep:
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def binned_median(x, y, bins: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """The median of ``y`` (geometric: on the log scale) in ``bins`` equal-width bins of
    ``x``, at each bin's median x; empty bins dropped, sorted by x."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y) & (y > 0)
    x, y = x[keep], y[keep]
    if not len(x):
        return np.array([]), np.array([])
    edges = np.linspace(x.min(), x.max(), bins + 1)
    which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, bins - 1)
    out = [(np.median(x[which == i]), np.exp(np.median(np.log(y[which == i]))))
           for i in range(bins) if (which == i).any()]
    xs, ys = (np.array(v) for v in zip(*out, strict=True))
    order = np.argsort(xs, kind="stable")
    return xs[order], ys[order]


def plot_b_simple(out: str | os.PathLike[str], df: pd.DataFrame, *,
                  plot_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """One png per env (into ``plot_dir``, default the sweep directory ``out`` whose runs
    are read): B_simple (policy, value, total; log scale) against return_recent, one line
    per batch size (the median in bins of the return, sorted by it, over faint points of
    every measurement) coloured by batch size, named in a legend (up
    to ``LEGEND_BATCH_SIZES`` batch sizes; one colour for one) or on a colour bar. Nothing
    is written for an env without noise-scale measurements. Returns the paths written."""
    from matplotlib import colormaps  # lazy: slow import, figures only
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: slow import, figures only
    from matplotlib.cm import ScalarMappable  # lazy: slow import, figures only
    from matplotlib.colors import LogNorm  # lazy: slow import, figures only
    from matplotlib.figure import Figure  # lazy: slow import, figures only

    out = Path(out)
    paths = []
    for env, runs in df.groupby("env", sort=True):
        curves = []
        for _, r in runs.iterrows():
            path = out / "runs" / str(r["run"])
            if not has_metrics(path):
                continue
            metrics = load_metrics(path)
            if "return_recent" not in metrics:
                continue
            curves.append((float(r["rollout_batch_size"]),
                           {t: b_simple_curve(metrics, t) for t in GNS_TERMS}))
        if not any(len(c[t]) for _, c in curves for t in GNS_TERMS):
            continue
        bs = [b for b, _ in curves]
        u = units(str(env))
        norm = LogNorm(min(bs), max(bs) if max(bs) > min(bs) else min(bs) * 2)
        cmap = colormaps["viridis"]
        distinct = sorted(set(bs))
        # A few batch sizes: a legend naming each (one colour, no colour bar, for one).
        legend = len(distinct) <= LEGEND_BATCH_SIZES
        colour = ({b: "C0" for b in distinct} if len(distinct) == 1 else
                  {b: cmap(0.9 * i / (len(distinct) - 1)) for i, b in enumerate(distinct)}
                  if legend else {b: cmap(norm(b)) for b in distinct})
        fig = Figure(figsize=(15, 4.5), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 3)
        for ax, term in zip(axes, GNS_TERMS, strict=True):
            named = set()
            for b in distinct:
                d = pd.concat([c[term] for bb, c in curves if bb == b and len(c[term])]
                              or [pd.DataFrame(columns=["return_recent", "b_simple"])])
                d = d[d["b_simple"] > 0]
                if not len(d):
                    continue
                label = None
                if legend and b not in named:
                    named.add(b)
                    label = f"B = {b:,.0f}"
                # Each measurement a faint point; the line: the median per return bin,
                # sorted by the return (no zig-zag back and forth).
                ax.scatter(d["return_recent"], d["b_simple"], color=colour[b], s=4,
                           alpha=0.25, lw=0)
                x, y = binned_median(d["return_recent"], d["b_simple"])
                ax.plot(x, y, color=colour[b], lw=1.6, marker="o", markersize=3, label=label)
            ax.set_yscale("log")
            tidy_log_axis(ax)
            ax.set_xlabel("return_recent (mean of the last games)" if u["target"] == "return"
                          else f"{u['target']} (return_recent)")
            ax.set_ylabel(f"B_simple, {term} loss ({u['batch']})")
            ax.set_title(f"{term}", fontsize=9)
            if legend and named:
                ax.legend(fontsize=7, title=f"batch size ({u['batch']})", title_fontsize=7)
        if not legend:
            sm = ScalarMappable(norm=norm, cmap=cmap)
            fig.colorbar(sm, ax=list(axes), label=f"batch size B ({u['batch']})")
        fig.suptitle(f"{env}: noise scale against return (EMA, or ratio of window means)",
                     fontsize=10)
        path = Path(plot_dir or out) / f"b_simple_{_slug(str(env))}.png"
        save_figure(fig, path, dpi=90)
        paths.append(path)
    return paths
