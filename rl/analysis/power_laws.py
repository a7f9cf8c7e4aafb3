"""Power laws of the batch-size tradeoff against performance (Hestness et al. 2017).

``fit_power_law`` fits log y = a + k log x by least squares. ``tradeoff_power_laws`` fits
B_crit, S_min and E_min of a critical-batch sweep against the target return, with the
exponent's interval from the seed bootstrap of ``rl.analysis.fit`` (one resampling of the runs per
replicate, shared by every target). ``noise_scale_power_law`` fits B_simple against the
smoothed return along noise-scale runs (ratio of means per return bin). Both refuse, with
the reason, fewer than 3 points or a range of x narrower than ``MIN_SPAN``. The x axis
(the return itself, not its distance to the best return) and why: docs/scaling-laws.md.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from rl.analysis.checks import check_open_unit, require_table
from rl.analysis.fit import (
    B_CRIT_CI,
    best_per_batch,
    critical_batch_replicates,
    draw_seeds,
    fit_from_runs,
)
from rl.analysis.ticks import tidy_log_axis
from rl.measure.run_average import ratio_summary
from rl.measure.warmup import counted_measurements
from rl.runs.files import save_figure
from rl.sweeps.results import GNS_TERMS, long_results

__all__ = [
    "MIN_POINTS",
    "MIN_SPAN",
    "POWER_LAW_COLUMNS",
    "PowerLawFit",
    "fit_power_law",
    "exponent_replicates",
    "noise_scale_by_return",
    "noise_scale_points",
    "noise_scale_power_law",
    "plot_power_laws",
    "tradeoff_power_laws",
]

MIN_POINTS = 3
"""Fewest points a power law is fitted to (two parameters and one degree of freedom)."""
MIN_SPAN = 2.0
"""Smallest max(x) / min(x) accepted: over a narrower range any curve looks like a line
in log-log axes, and the exponent's interval is mostly extrapolation."""
TRADEOFF_QUANTITIES = ("b_crit", "s_min", "e_min")
SETTLED = ("finished", "failed")


@dataclass(frozen=True)
class PowerLawFit:
    """log y = log_prefactor + exponent log x, least squares over ``n_points`` points.

    ``exponent_lo``/``exponent_hi``: the bootstrap percentile interval at level ``ci``
    (NaN without a bootstrap); ``exponent_se``: the least-squares standard error, and
    ``t_lo``/``t_hi`` its Student-t interval (exact for independent Gaussian log errors).
    When ``ok`` is False the numbers are NaN and ``reason`` says why and what would fix it.
    """

    ok: bool
    reason: str
    exponent: float = math.nan
    log_prefactor: float = math.nan
    exponent_se: float = math.nan
    t_lo: float = math.nan
    t_hi: float = math.nan
    exponent_lo: float = math.nan
    exponent_hi: float = math.nan
    ci: float = 0.95
    n_points: int = 0
    x_span: float = math.nan
    rms_log: float = math.nan
    n_boot: int = 0
    boot_failed: int = 0

    def predict(self, x: Any) -> np.ndarray:
        return np.exp(self.log_prefactor) * np.asarray(x, dtype=float) ** self.exponent

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_points(x: Any, y: Any, *, min_points: int = MIN_POINTS,
                 min_span: float = MIN_SPAN) -> str:
    """'' when (x, y) can carry a power law, else the reason it cannot."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        return f"x and y must be 1-D of equal length (got shapes {x.shape} and {y.shape})"
    good = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if not good.all():
        return (f"{int((~good).sum())} point(s) are not finite and > 0 (x={x[~good].tolist()}, "
                f"y={y[~good].tolist()}); a power law needs x > 0 and y > 0")
    if x.size < min_points:
        return (f"only {x.size} point(s); a power law needs at least {min_points} (reach more "
                "targets, or measure over a longer run)")
    span = float(x.max() / x.min())
    if span < min_span:
        return (f"x spans only {x.min():.4g}..{x.max():.4g} (a factor {span:.3g} < {min_span:g}); "
                f"the exponent would be an extrapolation. Use targets (or returns) at least "
                f"{min_span:g}x apart")
    return ""


def check_ci(ci: Any) -> None:
    check_open_unit(ci, "ci", "a confidence level, e.g. 0.95 for 95%")


def fit_power_law(x: Any, y: Any, *, ci: float = 0.95, min_points: int = MIN_POINTS,
                  min_span: float = MIN_SPAN) -> PowerLawFit:
    """Least-squares fit of log y = a + k log x, with the Student-t interval of k.

    Refuses (``ok=False`` with the reason) fewer than ``min_points`` points, non-positive
    or non-finite values, and max(x) / min(x) < ``min_span``. Never raises for bad data;
    raises ValueError for ``ci`` outside (0, 1).
    """
    check_ci(ci)
    problem = check_points(x, y, min_points=min_points, min_span=min_span)
    if problem:
        return PowerLawFit(False, problem, ci=ci, n_points=int(np.size(x)))
    lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    n = lx.size
    line = stats.linregress(lx, ly)
    k, a = float(line.slope), float(line.intercept)
    rss = float(((ly - a - k * lx) ** 2).sum())
    se = float(line.stderr) if n > 2 else math.nan  # (linregress: 0 for two points)
    half = float(stats.t.ppf(0.5 + ci / 2.0, n - 2)) * se if n > 2 else math.nan
    return PowerLawFit(True, "", exponent=k, log_prefactor=a, exponent_se=se, t_lo=k - half,
                       t_hi=k + half, ci=ci, n_points=n, x_span=float(np.exp(lx.max() - lx.min())),
                       rms_log=math.sqrt(rss / n))


def slopes(log_x: np.ndarray, log_y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Least-squares slopes of many weighted datasets at once: (R, n) arrays -> (R,)."""
    sw = w.sum(axis=1, keepdims=True)
    with np.errstate(all="ignore"):
        mx = (w * log_x).sum(axis=1, keepdims=True) / sw
        my = (w * log_y).sum(axis=1, keepdims=True) / sw
        dx = np.where(w > 0, log_x - mx, 0.0)
        dy = np.where(w > 0, log_y - my, 0.0)
        return (w * dx * dy).sum(axis=1) / (w * dx * dx).sum(axis=1)


def percentile_interval(values: np.ndarray, ci: float) -> tuple[float, float]:
    """Percentile interval of the finite values (NaN when there are none)."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(v, [(1 - ci) / 2, (1 + ci) / 2], method="inverted_cdf")
    return float(lo), float(hi)


def replicate_exponents(x: np.ndarray, y: np.ndarray, usable: np.ndarray, *,
                        min_points: int = MIN_POINTS, min_span: float = MIN_SPAN) -> np.ndarray:
    """Exponent of each bootstrap replicate: y (R, n) at x (n,) or (R, n), over the points
    ``usable`` in it; NaN where fewer than ``min_points`` are usable or they span less than
    ``min_span``."""
    x = np.broadcast_to(np.asarray(x, dtype=float), y.shape)
    ok = usable & np.isfinite(y) & (y > 0) & np.isfinite(x) & (x > 0)
    w = ok.astype(float)
    lx, ly = np.log(np.where(ok, x, 1.0)), np.log(np.where(ok, y, 1.0))
    with np.errstate(all="ignore"):
        span = np.exp(np.where(ok, lx, -np.inf).max(axis=1) - np.where(ok, lx, np.inf).min(axis=1))
    k = slopes(lx, ly, w)
    return np.where((w.sum(axis=1) >= min_points) & (span >= min_span), k, np.nan)


# --------------------------------------------------------------------------------------
# B_crit, S_min, E_min against the target
# --------------------------------------------------------------------------------------

POWER_LAW_COLUMNS = ["env", "quantity", "term", "axis", "ok", "reason", "exponent",
                     "exponent_lo", "exponent_hi", "exponent_se", "t_lo", "t_hi", "ci",
                     "log_prefactor", "n_points", "x_min",
                     "x_max", "x_span", "rms_log", "n_boot", "boot_failed"]


def performance_axis(values: Any, axis: str, best_return: float | None) -> np.ndarray:
    """x of a power law in performance: the return itself (``axis='return'``) or its
    distance to the best return (``axis='distance'``, needs ``best_return``)."""
    v = np.asarray(values, dtype=float)
    if axis == "return":
        return v
    if axis == "distance":
        if best_return is None or not math.isfinite(best_return):
            raise ValueError("axis='distance' needs the game's best return (best_return=...); "
                             "use axis='return' for games without a known maximum")
        return best_return - v
    raise ValueError(f"unknown axis {axis!r}; choose 'return' or 'distance'")


def _row(env: str, quantity: str, term: str, axis: str, fit: PowerLawFit,
         x: np.ndarray) -> dict[str, Any]:
    d = {k: v for k, v in fit.as_dict().items() if k in POWER_LAW_COLUMNS}
    x = x[np.isfinite(x)]
    return dict(d, env=env, quantity=quantity, term=term, axis=axis,
                x_min=float(x.min()) if x.size else math.nan,
                x_max=float(x.max()) if x.size else math.nan)


def tradeoff_power_laws(
    results: pd.DataFrame, *, fits: pd.DataFrame | None = None, n_boot: int = 1000,
    seed: int = 0, ci: float = 0.95, axis: str = "return", best_return: float | None = None,
    range_factor: float = 2.0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """B_crit, S_min and E_min of a sweep as power laws in performance, per env.

    Args:
        results: the sweep's results table (``rl.sweeps.results.results_table``: one row per run);
            finished and failed runs are used.
        fits: its per-target fit table (``rl.analysis.sweep_fits.fit_sweep``); computed when None.
        n_boot, seed, ci: the exponent's percentile interval. Each replicate resamples the
            seeds of every batch size once (``rl.analysis.fit.draw_seeds``) and refits B_crit at
            every target on the same draws (``rl.analysis.fit.critical_batch_replicates``), then the
            power law over the targets whose refit is in range.
        axis, best_return: x = the target return (default), or best_return - target.

    Returns (power-law table: ``POWER_LAW_COLUMNS``, one row per env and quantity; points:
    env, target, x, quantity, value, lo, hi from the per-target fits). A quantity is
    refused (ok False) when fewer than 3 targets have a successful fit, or their x span
    less than ``MIN_SPAN``.
    """
    check_ci(ci)
    require_table(results, ["status"], "the sweep's results table")
    if not any(str(c).startswith("iterations_to_target_") for c in results.columns):
        raise ValueError("the sweep's results table has no iterations_to_target_<target> "
                         f"column, so no target to fit; columns present: {list(results.columns)}")
    settled = results[results["status"].isin(SETTLED)]
    try:
        long = long_results(settled)
    except KeyError as e:  # a column the per-target table is built from
        raise ValueError(f"the sweep's results table lacks column(s) {e}; columns present: "
                         f"{list(results.columns)}") from None
    if fits is None:
        fits = fit_from_runs(long, n_boot=n_boot, seed=seed, range_factor=range_factor)
    _, per_seed = best_per_batch(long) if len(long) else (None, long)
    rng = np.random.default_rng(seed)
    rows, points = [], []
    for env, f in fits.groupby("env", sort=True):
        f = f.sort_values("target")
        ok = f[f["ok"].astype(bool)]
        x_all = performance_axis(f["target"], axis, best_return)
        for _, r in f.iterrows():
            for q in TRADEOFF_QUANTITIES:
                points.append(dict(env=env, target=r["target"],
                                   x=float(performance_axis([r["target"]], axis, best_return)[0]),
                                   quantity=q, value=r[q], lo=r[f"{q}_lo"], hi=r[f"{q}_hi"]))
        x = performance_axis(ok["target"], axis, best_return)
        failed = f[~f["ok"].astype(bool)]
        why = "; ".join(f"target {t:g}: {str(m)[:120]}" for t, m in
                        zip(failed["target"], failed["reason"], strict=True))
        reps = _replicates(env, ok, per_seed, n_boot, rng, range_factor) if len(ok) >= 3 \
            else None
        for q in TRADEOFF_QUANTITIES:
            if len(ok) < MIN_POINTS:
                fit = PowerLawFit(False, f"only {len(ok)} of {len(f)} targets have a B_crit fit "
                                  f"(at least {MIN_POINTS} are needed)" + (f"; {why}" if why
                                                                            else ""),
                                  ci=ci, n_points=len(ok))
                rows.append(_row(env, q, "", axis, fit, x_all))
                continue
            fit = fit_power_law(x, ok[q].to_numpy(float), ci=ci)
            if fit.ok and reps is not None:
                values, usable = reps[q]
                k = replicate_exponents(x, values, usable)
                lo, hi = percentile_interval(k, ci)
                fit = PowerLawFit(**{**fit.as_dict(), "exponent_lo": lo, "exponent_hi": hi,
                                     "n_boot": n_boot, "boot_failed": int(np.isnan(k).sum())})
            rows.append(_row(env, q, "", axis, fit, x))
    return (pd.DataFrame(rows, columns=POWER_LAW_COLUMNS),
            pd.DataFrame(points, columns=["env", "target", "x", "quantity", "value", "lo",
                                          "hi"]))


def _replicates(env: str, ok: pd.DataFrame, per_seed: pd.DataFrame, n_boot: int,
                rng: np.random.Generator, range_factor: float
                ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per quantity: (R, n_targets) bootstrap refits and which of them are usable."""
    mine = per_seed[per_seed["env"] == env]
    batch_sizes = sorted(mine["rollout_batch_size"].astype(float).unique())
    seeds = {b: sorted(mine.loc[mine["rollout_batch_size"] == b, "seed"].unique())
             for b in batch_sizes}
    draws = dict(zip(batch_sizes, draw_seeds([len(seeds[b]) for b in batch_sizes], n_boot, rng),
                     strict=True))
    out = {q: (np.full((n_boot, len(ok)), np.nan), np.zeros((n_boot, len(ok)), bool))
           for q in TRADEOFF_QUANTITIES}
    for j, target in enumerate(ok["target"]):
        at = mine[mine["target"] == target]
        bs = sorted(at["rollout_batch_size"].astype(float).unique())
        per_b = []
        for b in bs:
            s = at[at["rollout_batch_size"] == b].set_index("seed")["iterations_to_target"]
            per_b.append(s.reindex(seeds[b]).to_numpy(float))
        if len(bs) < 3:
            continue
        rep = critical_batch_replicates(bs, per_b, [draws[b] for b in bs],
                                        range_factor=range_factor)
        for q in TRADEOFF_QUANTITIES:
            out[q][0][:, j] = getattr(rep, q)
            out[q][1][:, j] = rep.usable
    return out


# --------------------------------------------------------------------------------------
# B_simple against the smoothed return along runs
# --------------------------------------------------------------------------------------


def _measured_rows(metrics: pd.DataFrame, term: str) -> pd.DataFrame:
    """The measurements that count (``rl.measure.warmup``) with a finite return, in order."""
    if "return_recent" not in metrics or f"gns/{term}/g2" not in metrics:
        return pd.DataFrame(columns=["g2", "trace", "ret"])
    m = counted_measurements(metrics, term)
    m = m[np.isfinite(m["return_recent"].to_numpy(float))]
    return pd.DataFrame({"g2": m["g2"], "trace": m["trace_sigma"], "ret": m["return_recent"]})


def noise_scale_points(metrics: Sequence[pd.DataFrame], term: str = "total", *,
                       n_bins: int = 6, min_rows: int = 3) -> pd.DataFrame:
    """B_simple per bin of the smoothed return, pooled over runs.

    The measurements that count (after the warm-up, ``rl.measure.warmup``; finite g2,
    trace_sigma, return_recent) of every run are pooled and cut into ``n_bins`` bins of
    equal counts by return_recent; per bin, x = the mean return and B_simple = mean
    trace_sigma / mean g2 with the block-bootstrap 95% interval of
    ``rl.measure.run_average.ratio_summary`` (blocks within each run, in run order; hi = inf
    where mean |G|^2 is not resolved above zero), Fieller's beside it and the heavy-tail
    diagnostic. Bins with fewer than ``min_rows`` rows are merged away. Columns: bin,
    ret_lo, ret_hi, x, b_simple, lo, hi, n, fieller_lo, fieller_hi, g2_top_share,
    heavy_tailed.
    """
    rows = [_measured_rows(m, term).assign(run=i) for i, m in enumerate(metrics)]
    pooled = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    cols = ["bin", "ret_lo", "ret_hi", "x", "b_simple", "lo", "hi", "n", "fieller_lo",
            "fieller_hi", "g2_top_share", "heavy_tailed"]
    if len(pooled) < min_rows:
        return pd.DataFrame(columns=cols)
    n_bins = max(1, min(n_bins, len(pooled) // min_rows))
    edges = bin_edges(pooled["ret"].to_numpy(float), n_bins)
    pooled["bin"] = _bin_of(pooled["ret"].to_numpy(float), edges)
    out = []
    for b, g in pooled.groupby("bin", sort=True):
        s = ratio_summary(g["g2"], g["trace"], runs=g["run"])
        out.append(dict(bin=int(b), ret_lo=edges[b], ret_hi=edges[b + 1], x=g["ret"].mean(),
                        b_simple=s["b_simple"], lo=s["b_simple_lo"], hi=s["b_simple_hi"],
                        n=len(g), fieller_lo=s["fieller_lo"], fieller_hi=s["fieller_hi"],
                        g2_top_share=s["g2_top_share"], heavy_tailed=s["heavy_tailed"]))
    return pd.DataFrame(out, columns=cols)


def noise_scale_by_return(metrics: pd.DataFrame, n_bins: int = 6,
                          terms: Sequence[str] = GNS_TERMS) -> pd.DataFrame:
    """B_simple per bin of ``return_recent`` along one run, every term: the phases of a run
    compared at equal return rather than by quarters of its measurements.

    ``noise_scale_points`` on the run alone (equal-count bins after the warm-up). One row per
    term and bin: term, bin, return_lo, return_hi, return_recent (the bin's mean return),
    measurements, b_simple, b_simple_lo, b_simple_hi (block bootstrap 95%), fieller_lo,
    fieller_hi, g2_top_share, heavy_tailed.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    parts = []
    for term in terms:
        pts = noise_scale_points([metrics], term, n_bins=n_bins)
        if pts.empty:
            continue
        parts.append(pts.rename(columns={"ret_lo": "return_lo", "ret_hi": "return_hi",
                                         "x": "return_recent", "lo": "b_simple_lo",
                                         "hi": "b_simple_hi", "n": "measurements"})
                     .assign(term=term))
    cols = ["term", "bin", "return_lo", "return_hi", "return_recent", "measurements",
            "b_simple", "b_simple_lo", "b_simple_hi", "fieller_lo", "fieller_hi",
            "g2_top_share", "heavy_tailed"]
    return pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)


def bin_edges(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Quantile edges (n_bins + 1, duplicates removed) over ``values``."""
    edges = np.unique(np.quantile(values, np.linspace(0, 1, n_bins + 1)))
    if edges.size < 2:
        edges = np.array([values.min(), values.max() + 1e-12])
    return edges


def _bin_of(ret: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.clip(np.searchsorted(edges, ret, side="right") - 1, 0, len(edges) - 2)


def resampled_rows(rows: np.ndarray, edges: np.ndarray, n_boot: int,
                   rng: np.random.Generator) -> np.ndarray:
    """(n_boot, bins, 4) bin sums of one run's rows resampled with replacement within
    each return bin."""
    b = _bin_of(rows[:, 2], edges)
    out = np.zeros((n_boot, len(edges) - 1, 4))
    for j in range(len(edges) - 1):
        in_bin = rows[b == j]
        if len(in_bin):
            counts = rng.multinomial(len(in_bin), np.full(len(in_bin), 1.0 / len(in_bin)),
                                     size=n_boot)
            out[:, j, :3] = counts @ in_bin
            out[:, j, 3] = len(in_bin)
    return out


def exponent_replicates(runs: Sequence[np.ndarray], *, n_bins: int = 6, n_boot: int = 1000,
                        seed: int = 0, axis: str = "return",
                        best_return: float | None = None) -> np.ndarray:
    """Bootstrap exponents of B_simple against the return (``noise_scale_power_law``'s
    interval), from each run's (rows, 3) array of g2, trace, return (the rows that count).

    One level of resampling, refitted on the pooled rows' bin edges: each run's rows are
    resampled with replacement within each return bin, and the runs are kept. NaN where a
    replicate has fewer than ``MIN_POINTS`` usable bins.
    """
    all_ret = np.concatenate([r[:, 2] for r in runs])
    edges = bin_edges(all_ret, max(1, min(n_bins, all_ret.size // 3)))
    rng = np.random.default_rng(seed)
    sums = sum(resampled_rows(r, edges, n_boot, rng) for r in runs)
    g, t, ret, n = np.moveaxis(sums, -1, 0)
    with np.errstate(all="ignore"):
        ok = (n > 0) & (g > 0) & (t >= 0)
        xs, ys = np.where(ok, ret / n, np.nan), np.where(ok, t / g, np.nan)
    return replicate_exponents(performance_axis(xs, axis, best_return), ys, np.isfinite(ys))


def noise_scale_power_law(
    metrics: Sequence[pd.DataFrame], term: str = "total", *, n_bins: int = 6,
    n_boot: int = 1000, seed: int = 0, ci: float = 0.95, axis: str = "return",
    best_return: float | None = None,
) -> tuple[PowerLawFit, pd.DataFrame]:
    """B_simple against the smoothed return as a power law, over ``noise_scale_points``.

    Bins whose x is not > 0 (a return <= 0 on the return axis) are left out. The interval:
    the percentiles of ``exponent_replicates``: one level of resampling, each run's rows
    within each return bin, the runs kept. Drawing the runs and then the rows inside the
    drawn runs, as before, counted the rows' noise twice (a drawn run's totals already
    carry it): intervals about 1.2x too wide at 3 runs, 1.3x at 8. Drawing whole runs alone
    is no interval with the 1 to 3 noise runs a game has (2 runs: 3 distinct draws). So the
    interval is the estimator's noise for runs that follow one law; a seed-to-seed
    difference in the law itself is not in it. Returns (fit, points).
    """
    check_ci(ci)
    pts = noise_scale_points(metrics, term, n_bins=n_bins)
    x_pts = performance_axis(pts["x"], axis, best_return) if len(pts) else np.array([])
    use = (x_pts > 0) & (pts["b_simple"].to_numpy(float) > 0) if len(pts) else np.array([], bool)
    fit = fit_power_law(x_pts[use], pts["b_simple"].to_numpy(float)[use], ci=ci)
    if len(pts) and use.sum() < len(pts) and not fit.ok:
        fit = PowerLawFit(False, fit.reason + f" ({len(pts) - int(use.sum())} of {len(pts)} "
                          "return bins left out: x <= 0 or B_simple not > 0)", ci=ci,
                          n_points=int(use.sum()))
    if not fit.ok or n_boot <= 0:
        return fit, pts
    runs = [_measured_rows(m, term).to_numpy(float) for m in metrics]
    k = exponent_replicates([r for r in runs if len(r)], n_bins=n_bins, n_boot=n_boot,
                            seed=seed, axis=axis, best_return=best_return)
    lo, hi = percentile_interval(k, ci)
    return PowerLawFit(**{**fit.as_dict(), "exponent_lo": lo, "exponent_hi": hi,
                          "n_boot": n_boot, "boot_failed": int(np.isnan(k).sum())}), pts


def noise_scale_power_laws(env: str, metrics: Sequence[pd.DataFrame], **kw: Any
                           ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``noise_scale_power_law`` for every loss term: (POWER_LAW_COLUMNS rows, points with
    env and term)."""
    rows, pts = [], []
    axis = kw.get("axis", "return")
    for term in GNS_TERMS:
        fit, p = noise_scale_power_law(metrics, term, **kw)
        x = p["x"].to_numpy(float) if len(p) else np.array([])
        rows.append(_row(env, "b_simple", term, axis, fit, x))
        pts.append(p.assign(env=env, term=term))
    return pd.DataFrame(rows, columns=POWER_LAW_COLUMNS), pd.concat(pts, ignore_index=True)


# --------------------------------------------------------------------------------------
# Plot
# --------------------------------------------------------------------------------------

_STYLE = {"b_crit": ("s", "C3"), "s_min": ("o", "C4"), "e_min": ("D", "C5"),
          "total": ("o", "C0"), "policy": ("^", "C1"), "value": ("v", "C2")}


def _draw(ax: Any, x: np.ndarray, y: np.ndarray, lo: np.ndarray, hi: np.ndarray,
          fit: pd.Series | None, key: str, label: str) -> None:
    marker, color = _STYLE[key]
    good = np.isfinite(y) & (y > 0) & (x > 0)
    if not good.any():
        return
    lower = np.where(np.isfinite(lo) & (lo > 0), y - lo, 0.0)
    upper = np.where(np.isfinite(hi), hi - y, 0.0)
    ax.errorbar(x[good], y[good], yerr=[np.maximum(lower[good], 0), np.maximum(upper[good], 0)],
                marker=marker, color=color, linestyle="none", capsize=3, label=label)
    if fit is not None and bool(fit["ok"]):
        grid = np.geomspace(x[good].min(), x[good].max(), 50)
        law = PowerLawFit(True, "", exponent=float(fit["exponent"]),
                          log_prefactor=float(fit["log_prefactor"]))
        ax.plot(grid, law.predict(grid), color=color, lw=1.2,
                label=f"fit: exponent {fit['exponent']:.3g} "
                      f"[{fit['exponent_lo']:.3g}, {fit['exponent_hi']:.3g}]")


def plot_power_laws(path: str | os.PathLike[str], env: str, tradeoff: pd.DataFrame | None,
                    tradeoff_points: pd.DataFrame | None, noise: pd.DataFrame | None,
                    noise_points: pd.DataFrame | None, *,
                    noise_source: str = "noise-scale runs") -> Path:
    """One PNG: B_crit, S_min, E_min against the target (left) and B_simple against the
    smoothed return (right), log-log, with the fitted lines; written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: slow import, figures only
    from matplotlib.figure import Figure  # lazy: slow import, figures only

    def has(points: pd.DataFrame | None, col: str) -> bool:
        if points is None or not len(points):
            return False
        y, x = points[col].to_numpy(float), points["x"].to_numpy(float)
        return bool((np.isfinite(y) & (y > 0) & (x > 0)).any())

    # Only the panels with points: no half-empty "no data" panel.
    panels = [k for k, ok in (("tradeoff", has(tradeoff_points, "value")),
                              ("noise", has(noise_points, "b_simple"))) if ok] or ["tradeoff"]
    fig = Figure(figsize=(6.5 * len(panels), 4.8))
    FigureCanvasAgg(fig)
    made = fig.subplots(1, len(panels), squeeze=False)[0]
    axes = dict(zip(panels, made, strict=True))
    if "tradeoff" in axes and tradeoff_points is not None and len(tradeoff_points):
        ax = axes["tradeoff"]
        for q in TRADEOFF_QUANTITIES:
            p = tradeoff_points[tradeoff_points["quantity"] == q]
            f = tradeoff[tradeoff["quantity"] == q] if tradeoff is not None else None
            fit = f.iloc[0] if f is not None and len(f) else None
            _draw(ax, p["x"].to_numpy(float), p["value"].to_numpy(float),
                  p["lo"].to_numpy(float), p["hi"].to_numpy(float), fit, q, q)
        ax.set_xlabel("target return")
        ax.set_ylabel("B_crit, E_min (agent steps); S_min (PPO iterations)")
    if "noise" in axes:
        ax = axes["noise"]
        for term in GNS_TERMS:
            p = noise_points[noise_points["term"] == term]
            f = noise[noise["term"] == term] if noise is not None else None
            fit = f.iloc[0] if f is not None and len(f) else None
            _draw(ax, p["x"].to_numpy(float), p["b_simple"].to_numpy(float),
                  p["lo"].to_numpy(float), p["hi"].to_numpy(float), fit, term,
                  f"B_simple, {term} loss")
        ax.set_xlabel("smoothed return (bin mean of return_recent)")
        ax.set_ylabel("B_simple (agent steps)")
    for ax in axes.values():
        if ax.has_data():
            ax.set_xscale("log")
            ax.set_yscale("log")
            tidy_log_axis(ax)
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", transform=ax.transAxes)
    if "tradeoff" in axes:
        axes["tradeoff"].set_title(f"critical-batch sweep: per-target fits ({B_CRIT_CI:.0%} "
                                   "seed-bootstrap bars)", fontsize=9)
    if "noise" in axes:
        axes["noise"].set_title(f"{noise_source}: per return bin (Fieller 95% bars)",
                                fontsize=9)
    fig.suptitle(f"{env}: power laws in performance (log-log)", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path, dpi=90)
