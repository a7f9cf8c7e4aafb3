"""B_simple averaged over many measurements: ratio of means, block-bootstrap interval, tails.

``ratio_summary`` is the one summary of a run, segment or return bin: mean tr(Sigma) /
mean |G|^2 with a circular block-bootstrap interval (primary), Fieller's interval beside it,
and the share of sum |G|^2 carried by the largest 5% of estimates (flagged when over half).
``ema_ratios`` replays the trainer's smoothing. See docs/noise-scale.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

from rl.measure.gns import ratio_interval

__all__ = [
    "HEAVY_TAIL_SHARE",
    "TOP_FRACTION",
    "block_bootstrap_ratio",
    "block_length",
    "ema_ratios",
    "ratio_summary",
    "top_share",
]

TOP_FRACTION = 0.05
"""The largest estimates whose share of sum |G|^2 is reported: this fraction of them."""
HEAVY_TAIL_SHARE = 0.5
"""Flag a summary as heavy-tailed when the top ``TOP_FRACTION`` of |G|^2 estimates carry more
than this share of their sum (normal estimates: about 0.15, docs/noise-scale.md)."""
N_BOOT = 2000
"""Bootstrap replicates: the 2.5% quantile then rests on 50 replicates."""


def block_length(n: int) -> int:
    """Measurements per bootstrap block for a series of ``n``: round(n^(1/3)), at least 1.

    n^(1/3) is the rate that minimizes the error of block-bootstrap variance and two-sided
    interval estimates (Hall, Horowitz and Jing 1995)."""
    return max(1, round(n ** (1.0 / 3.0)))


def _series(values, name: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds non-finite values; pass finite estimates only")
    return x


def _run_slices(runs, n: int) -> list[slice]:
    """Contiguous stretches of equal run labels (each run's measurements, in order)."""
    if runs is None:
        return [slice(0, n)]
    labels = np.asarray(runs).reshape(-1)
    if len(labels) != n:
        raise ValueError(f"runs has {len(labels)} labels for {n} measurements")
    cuts = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    bounds = [0, *cuts.tolist(), n]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def block_bootstrap_ratio(g2, trace_sigma, *, runs: Sequence | None = None, ci: float = 0.95,
                          n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float, float]:
    """(mean trace_sigma / mean g2, lower, upper): circular block-bootstrap percentile interval.

    The measurements are a time series: consecutive ones share the slowly drifting policy,
    and single |G|^2 estimates can be heavy-tailed. Each replicate rebuilds every run's
    series (``runs``: one label per measurement, each run's measurements contiguous and in
    order; None = one run) from blocks of ``block_length(n_run)`` consecutive measurements
    starting at uniform positions, wrapping around the end (Politis and Romano 1992), and
    takes the ratio of the pooled means. A replicate whose mean g2 is <= 0 has an unbounded
    ratio (+inf), so the upper end is inf when more than (1 - ci) / 2 of the replicates do:
    mean |G|^2 not resolved above zero. Negative ratios are clipped at 0 (B_simple >= 0).

    As ``ratio_interval``: the ratio is nan when mean g2 <= 0 or mean trace_sigma < 0 (then
    the bounds are nan too), and the bounds are nan with fewer than 3 measurements.
    """
    g2, tr = _series(g2, "g2"), _series(trace_sigma, "trace_sigma")
    if len(g2) != len(tr):
        raise ValueError(f"g2 and trace_sigma differ in length: {len(g2)} != {len(tr)}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    n = len(g2)
    if n == 0:
        return math.nan, math.nan, math.nan
    g, t = float(g2.mean()), float(tr.mean())
    if not (g > 0.0 and t >= 0.0):
        return math.nan, math.nan, math.nan
    ratio = t / g
    if n < 3:
        return ratio, math.nan, math.nan
    rng = np.random.default_rng(seed)
    g_sum, t_sum = np.zeros(n_boot), np.zeros(n_boot)
    for part in _run_slices(runs, n):
        gr, trr = g2[part], tr[part]
        m = len(gr)
        length = block_length(m)
        blocks = -(-m // length)
        starts = rng.integers(0, m, size=(n_boot, blocks))
        index = ((starts[:, :, None] + np.arange(length)) % m).reshape(n_boot, -1)[:, :m]
        g_sum += gr[index].sum(axis=1)
        t_sum += trr[index].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        reps = np.where(g_sum > 0, np.maximum(t_sum, 0.0) / g_sum, math.inf)
    reps.sort()
    alpha = 1.0 - ci
    lo = reps[int(math.floor(alpha / 2 * (n_boot - 1)))]
    hi = reps[int(math.ceil((1 - alpha / 2) * (n_boot - 1)))]
    return ratio, float(lo), float(hi)


def top_share(values, fraction: float = TOP_FRACTION) -> float:
    """Share of sum |x| carried by the ceil(fraction n) largest |x| (nan when sum |x| = 0).

    For estimates normal around a mean small against their spread (|x| half-normal) the top
    5% carry 2 phi(1.96) / sqrt(2 / pi) = 0.147 of the sum; a heavy tail carries far more.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    a = np.abs(np.asarray(values, dtype=np.float64).reshape(-1))
    total = a.sum()
    if a.size == 0 or not total > 0:
        return math.nan
    k = max(1, math.ceil(fraction * a.size))
    return float(np.partition(a, a.size - k)[a.size - k:].sum() / total)


def ratio_summary(g2, trace_sigma, *, runs: Sequence | None = None, ci: float = 0.95,
                  seed: int = 0) -> dict[str, float]:
    """Ratio of means over measurements (one run, segment or return bin) with its intervals.

    Keys: b_simple, b_simple_lo, b_simple_hi (``block_bootstrap_ratio``, the primary
    interval), fieller_lo, fieller_hi (``rl.measure.gns.ratio_interval``, which assumes
    normal means), measurements, g2_mean, trace_sigma_mean, negative_g2_fraction,
    g2_top_share (``top_share`` of the g2 estimates) and heavy_tailed (g2_top_share >
    ``HEAVY_TAIL_SHARE``: a few estimates carry most of the sum, the normal approximation
    behind Fieller's interval fails and the bootstrap's coverage is approximate too).
    """
    g2 = np.asarray(g2, dtype=np.float64).reshape(-1)
    tr = np.asarray(trace_sigma, dtype=np.float64).reshape(-1)
    b, lo, hi = block_bootstrap_ratio(g2, tr, runs=runs, ci=ci, seed=seed)
    z = NormalDist().inv_cdf(0.5 + ci / 2)
    _, f_lo, f_hi = ratio_interval(g2, tr, z=z) if len(g2) else (math.nan,) * 3
    share = top_share(g2) if len(g2) else math.nan
    return {
        "b_simple": b, "b_simple_lo": lo, "b_simple_hi": hi,
        "fieller_lo": f_lo, "fieller_hi": f_hi, "measurements": int(len(g2)),
        "g2_mean": float(g2.mean()) if len(g2) else math.nan,
        "trace_sigma_mean": float(tr.mean()) if len(tr) else math.nan,
        "negative_g2_fraction": float((g2 < 0).mean()) if len(g2) else math.nan,
        "g2_top_share": share, "heavy_tailed": bool(share > HEAVY_TAIL_SHARE),
    }


def ema_ratios(g2, trace_sigma, beta: float = 0.99) -> np.ndarray:
    """After each measurement, the ratio of the bias-corrected EMAs of trace_sigma and g2.

    The smoothing of ``rl.measure.gns.GNSTracker`` replayed over a series: m_t = beta m_{t-1}
    + (1 - beta) x_t, read as m_t / (1 - beta^t); nan where the smoothed g2 <= 0 or the
    smoothed trace_sigma < 0.
    """
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    g2, tr = _series(g2, "g2"), _series(trace_sigma, "trace_sigma")
    if len(g2) == 0:
        return np.array([], dtype=np.float64)
    from scipy.signal import lfilter  # lazy: 1-2 s to import; rl.train.config imports this module

    correction = 1.0 - beta ** np.arange(1, len(g2) + 1)
    g = lfilter([1.0 - beta], [1.0, -beta], g2) / correction
    t = lfilter([1.0 - beta], [1.0, -beta], tr) / correction
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((g > 0) & (t >= 0), t / g, math.nan)
