"""Run averages of noise-scale estimates (rl/measure/run_average.py): the block-bootstrap
interval, the top-share diagnostic, the replayed EMA."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rl.measure.gns import GNSTracker
from rl.measure.run_average import (
    HEAVY_TAIL_SHARE,
    block_bootstrap_ratio,
    block_length,
    ema_ratios,
    ratio_summary,
    top_share,
)


def ar1(rng, n: int, rho: float, df: float) -> np.ndarray:
    """Stationary AR(1) series with unit variance and Student-t innovations (df > 2)."""
    e = rng.standard_t(df, size=n) / math.sqrt(df / (df - 2))
    x = np.empty(n)
    x[0] = e[0]
    for i in range(1, n):
        x[i] = rho * x[i - 1] + math.sqrt(1 - rho**2) * e[i]
    return x


def binomial_band(p: float, n: int, z: float = 3.5) -> tuple[float, float]:
    sd = math.sqrt(n * p * (1 - p))
    return n * p - z * sd, n * p + z * sd


def test_block_bootstrap_covers_a_known_ratio_on_correlated_heavy_tailed_series():
    # 300 series of 400 measurements: g2 = 1 + 3 x, trace = 100 + 50 y with x, y AR(1)
    # (rho 0.3) of Student-t(5) innovations; the true ratio is 100. Misses of a 95%
    # interval ~ Binomial(300, 0.05) at the nominal rate: 15 +- 3.5 sd = [1.8, 28.2].
    # Blocks of round(400^(1/3)) = 7 keep the correlation: the block bootstrap's variance is
    # (1 + 2 sum_{k<7} (1 - k/7) rho^k) / (1 + 2 sum_k rho^k) = 0.91 of the truth, an
    # expected miss rate of 6%; resampling single measurements (blocks of 1) would see
    # 1 / 1.86 of it and miss 15% (45 of 300), outside the band.
    rng = np.random.default_rng(7)
    reps, n = 300, 400
    assert block_length(n) == 7
    misses = unbounded = 0
    for r in range(reps):
        g2 = 1.0 + 3.0 * ar1(rng, n, 0.3, 5.0)
        tr = 100.0 + 50.0 * ar1(rng, n, 0.3, 5.0)
        _, lo, hi = block_bootstrap_ratio(g2, tr, n_boot=1000, seed=r)
        misses += not lo <= 100.0 <= hi
        unbounded += hi == math.inf
    lo_band, hi_band = binomial_band(0.05, reps)
    assert lo_band <= misses <= hi_band, misses
    assert unbounded < reps // 10  # g2 is resolved (mean / standard error about 4.5)


def test_unresolved_mean_g2_gives_an_unbounded_upper_end():
    rng = np.random.default_rng(0)
    g2 = 0.05 + 3.0 * rng.normal(size=60)  # mean / standard error about 0.13
    g2 += 0.2 - g2.mean()  # a positive mean, far from resolved
    tr = 100.0 + 10.0 * rng.normal(size=60)
    b, lo, hi = block_bootstrap_ratio(g2, tr)
    assert b == pytest.approx(tr.mean() / 0.2) and hi == math.inf and 0 <= lo < b
    # mean g2 <= 0: no ratio at all, as rl.measure.gns.ratio_interval
    assert all(math.isnan(v) for v in block_bootstrap_ratio(g2 - 1.0, tr))
    # fewer than 3 measurements: the ratio without bounds
    b, lo, hi = block_bootstrap_ratio([1.0, 2.0], [3.0, 3.0])
    assert b == 2.0 and math.isnan(lo) and math.isnan(hi)


def test_blocks_stay_inside_each_run():
    # Two runs, each constant: a replicate that keeps every run's own count of measurements
    # reproduces the pooled means exactly, so the interval collapses onto the ratio; blocks
    # crossing runs or a free count per run would not.
    g2 = np.r_[np.full(30, 1.0), np.full(50, 2.0)]
    tr = np.r_[np.full(30, 10.0), np.full(50, 40.0)]
    runs = np.r_[np.zeros(30), np.ones(50)]
    b, lo, hi = block_bootstrap_ratio(g2, tr, runs=runs)
    assert b == pytest.approx(2300 / 130) and lo == pytest.approx(b) and hi == pytest.approx(b)
    _, lo, hi = block_bootstrap_ratio(g2, tr)  # one run: blocks mix the two levels
    assert lo < b < hi


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="differ in length"):
        block_bootstrap_ratio([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="non-finite"):
        block_bootstrap_ratio([1.0, math.nan, 3.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="ci"):
        block_bootstrap_ratio([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], ci=95)
    with pytest.raises(ValueError, match="labels"):
        block_bootstrap_ratio([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], runs=[0, 1])


def test_top_share_of_normal_and_heavy_tailed_estimates():
    rng = np.random.default_rng(3)
    # |x| half-normal: the top 5% (|x| > 1.96) carry 2 phi(1.96) / sqrt(2 / pi) = 0.147 of
    # sum |x|. Delta method for n = 2000: sd = sqrt(E[x^2; |x| > 1.96] - 0.117^2) /
    # (sqrt(n) E|x|) = sqrt(0.279 - 0.0137) / (44.7 x 0.798) = 0.0144; within 3.5 sd.
    share = top_share(rng.normal(size=2000))
    assert abs(share - 0.147) < 3.5 * 0.0144
    assert ratio_summary(1.0 + rng.normal(size=200), 100 + rng.normal(size=200))[
        "heavy_tailed"] is False
    # |x| Pareto with index a: the top fraction p carries p^(1 - 1/a) of the sum, 0.76 for
    # a = 1.1 (infinite variance: a few estimates carry most of the sum), 0.14 for a = 3.
    def pareto(a, n=2000):
        return (rng.pareto(a, size=n) + 1.0) * rng.choice([-1.0, 1.0], size=n)

    s = ratio_summary(pareto(1.1), 100.0 + rng.normal(size=2000))
    assert s["g2_top_share"] > HEAVY_TAIL_SHARE and s["heavy_tailed"] is True
    assert not ratio_summary(pareto(3.0), 100.0 + rng.normal(size=2000))["heavy_tailed"]
    assert top_share([0.0, 0.0]) != top_share([0.0, 0.0])  # nan: nothing to share
    assert top_share([3.0, -1.0]) == 0.75  # one of two: the largest |x|


def test_summary_keys_and_fieller_beside_the_bootstrap():
    rng = np.random.default_rng(1)
    g2, tr = 1.0 + 0.2 * rng.normal(size=100), 50.0 + 5.0 * rng.normal(size=100)
    s = ratio_summary(g2, tr)
    assert s["b_simple"] == pytest.approx(tr.mean() / g2.mean())
    assert s["measurements"] == 100 and s["negative_g2_fraction"] == 0.0
    # both intervals bracket the ratio and agree to within a quarter of their width here
    # (independent normal estimates: the two methods estimate the same normal spread)
    assert s["b_simple_lo"] < s["b_simple"] < s["b_simple_hi"]
    assert s["fieller_lo"] < s["b_simple"] < s["fieller_hi"]
    width = s["fieller_hi"] - s["fieller_lo"]
    assert abs(s["b_simple_lo"] - s["fieller_lo"]) < width / 4
    assert abs(s["b_simple_hi"] - s["fieller_hi"]) < width / 4
    empty = ratio_summary([], [])
    assert empty["measurements"] == 0 and math.isnan(empty["b_simple"])


def test_ema_ratios_replay_the_trainer_tracker():
    rng = np.random.default_rng(2)
    g2, tr = 0.3 + rng.normal(size=50), 10.0 + rng.normal(size=50)
    tracker, expected = GNSTracker(beta=0.9), []
    for g, t in zip(g2, tr, strict=True):
        tracker.update(g, t)
        expected.append(tracker.ema_b_simple)
    np.testing.assert_allclose(ema_ratios(g2, tr, beta=0.9), expected, rtol=1e-10)
    assert ema_ratios([], []).size == 0
    with pytest.raises(ValueError, match="beta"):
        ema_ratios([1.0], [1.0], beta=1.0)
