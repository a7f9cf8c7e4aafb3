"""Critical batch size fits (McCandlish et al. 2018, arXiv 1812.06162).

See docs/critical-batch.md for the full description.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from scipy.optimize import least_squares
from scipy.special import expit

from rl.analysis.levels import B_CRIT_CI

__all__ = [
    "B_CRIT_CI",
    "FEW_SEEDS",
    "MIN_EACH_SIDE",
    "LackOfFit",
    "lack_of_fit",
    "leave_one_out",
    "few_seeds_caveat",
    "CriticalBatchFit",
    "FitError",
    "BootstrapResult",
    "fit_critical_batch",
    "bootstrap_critical_batch",
    "critical_batch_replicates",
    "draw_seeds",
    "Replicates",
    "best_per_batch",
    "fit_from_runs",
    "plot_pareto",
    "plot_steps_and_samples",
]

# How far (in natural-log units) beyond the observed batch sizes the optimiser may move
# log B_crit. e^10 ~ 2e4, far outside any range accepted by the range check below, so a fit
# that stops at this bound is always reported as degenerate rather than trusted.
_LOG_B_CRIT_PAD = 10.0
# Spacing of the coarse grid over log B_crit used to start the fit (natural-log units).
_GRID_STEP = 0.05
# Below this spread of the model's sensitivity d log S / d log B_crit across the batch
# sizes, S_min and B_crit cannot be told apart (the two Jacobian columns are parallel).
_MIN_SENSITIVITY_SPREAD = 1e-3

FEW_SEEDS = 3
"""Below this many seeds at a batch size, a seed-bootstrap interval is flagged as too narrow."""


def few_seeds_caveat(min_seeds: float) -> str:
    """Why a seed-bootstrap interval is too narrow when some batch size of the fit has fewer
    than ``FEW_SEEDS`` seeds ("" otherwise). Resampling n values with replacement keeps on
    average (n - 1) / n of the variance of their mean: for 2 seeds {a, b} the resampled
    mean is a, (a + b) / 2 or b with probabilities 1/4, 1/2, 1/4, variance (a - b)^2 / 8,
    whose expectation is half the true variance of (a + b) / 2; for 1 seed it is 0."""
    if not min_seeds < FEW_SEEDS:
        return ""
    return (f"only {min_seeds:g} seed(s) at some batch size: a seed bootstrap keeps on average "
            f"(n - 1) / n of the variance of a mean of n seeds (half for 2, none for 1), so "
            f"the seed-only interval is too narrow; run {FEW_SEEDS} or more seeds per batch "
            "size for one to rely on (the profile interval does not resample seeds)")


MIN_EACH_SIDE = 2
"""A B_crit is a measured number only with at least this many distinct batch sizes at or
above it and this many below it; otherwise the knee is not covered and it is a bound."""

# Failure kinds reported in CriticalBatchFit.kind.
OK = "ok"
INVALID_INPUT = "invalid_input"
TOO_FEW_BATCH_SIZES = "too_few_batch_sizes"
B_CRIT_ABOVE_RANGE = "b_crit_above_range"
B_CRIT_BELOW_RANGE = "b_crit_below_range"
UNIDENTIFIABLE = "unidentifiable"
LOWER_BOUND = "lower_bound"
UPPER_BOUND = "upper_bound"
TARGET_BELOW_FLOOR = "target_below_floor"


class FitError(ValueError):
    """The data cannot determine the critical batch size; the message says why and what
    data would fix it."""


@dataclass(frozen=True)
class CriticalBatchFit:
    """Result of ``fit_critical_batch``.

    ``ok`` is True only for a measured B_crit: a fit within the batch sizes' range with at
    least ``MIN_EACH_SIDE`` distinct batch sizes at or above it and as many below it. When
    ``ok`` is False the point estimates are NaN and ``reason`` says why (``kind`` is a short
    label: ``invalid_input``, ``too_few_batch_sizes``, ``b_crit_above_range``,
    ``b_crit_below_range``, ``unidentifiable``, ``lower_bound``, ``upper_bound``). Where the
    data still bound B_crit on one side, ``bound`` is ">=" or "<=" and ``b_crit_bound`` its
    value: the interval's end on that side (``lower_bound`` / ``upper_bound``, and the range
    failures when the interval has that end).

    Attributes:
        s_min: minimum number of PPO iterations to the target (B -> infinity).
        e_min: minimum number of agent steps to the target (B -> 0).
        b_crit: E_min / S_min, in agent steps.
        b_crit_lo, b_crit_hi, s_min_lo, s_min_hi, e_min_lo, e_min_hi: the profile interval
            at level ``ci`` from the residuals of the fit (docs/critical-batch.md): it
            carries every source of scatter of the points around the curve, seeds and lack
            of fit alike. 0 or inf where the data do not bound that end. NaN without a fit.
        ci: the level of those intervals.
        b_crit_fitted: the least-squares B_crit whatever the verdict (NaN only when no fit
            ran): what a refused fit ran off to, and the leave-one-out values.
        bound, b_crit_bound: see above ("" and NaN for a measured B_crit or no bound).
        n_at_or_above, n_below: distinct batch sizes at or above / below the fitted B_crit.
        rms_log: root-mean-square of the residuals log S_obs - log S_model.
        log_b_crit_se: asymptotic standard error of log B_crit from the fit's Jacobian,
            sigma_hat * sqrt([(J^T J)^-1]_cc) with sigma_hat^2 = RSS / (n_points - 2); NaN
            when there are only two points. A rough guide; the profile interval is better.
        n_points: number of (B, S) points fitted (repeated batch sizes allowed).
        n_batch_sizes: number of distinct batch sizes among them.
    """

    ok: bool
    kind: str
    reason: str
    s_min: float = float("nan")
    e_min: float = float("nan")
    b_crit: float = float("nan")
    b_crit_lo: float = float("nan")
    b_crit_hi: float = float("nan")
    s_min_lo: float = float("nan")
    s_min_hi: float = float("nan")
    e_min_lo: float = float("nan")
    e_min_hi: float = float("nan")
    ci: float = float("nan")
    b_crit_fitted: float = float("nan")
    bound: str = ""
    b_crit_bound: float = float("nan")
    n_at_or_above: int = 0
    n_below: int = 0
    rms_log: float = float("nan")
    log_b_crit_se: float = float("nan")
    n_points: int = 0
    n_batch_sizes: int = 0

    def steps(self, batch_sizes: Any) -> np.ndarray:
        """Model S(B) = S_min (1 + B_crit / B), in PPO iterations."""
        b = np.asarray(batch_sizes, dtype=float)
        return self.s_min * (1.0 + self.b_crit / b)

    def samples(self, batch_sizes: Any) -> np.ndarray:
        """Model E(B) = E_min (1 + B / B_crit), in agent steps."""
        b = np.asarray(batch_sizes, dtype=float)
        return self.e_min * (1.0 + b / self.b_crit)

    def raise_if_failed(self) -> CriticalBatchFit:
        """Return self if the fit is usable, else raise ``FitError(reason)``."""
        if not self.ok:
            raise FitError(f"{self.kind}: {self.reason}")
        return self

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def bound_text(self) -> str:
        """'>= 1,234' / '<= 1,234' for a bound, '' otherwise."""
        if not self.bound or not np.isfinite(self.b_crit_bound):
            return ""
        return f"{self.bound} {self.b_crit_bound:,.0f}"


# --------------------------------------------------------------------------------------
# The model and its least-squares fit
# --------------------------------------------------------------------------------------
#
# Parameters theta = (a, c) = (log S_min, log B_crit). With x_i = log B_i:
#     log S_model_i = a + log(1 + exp(c - x_i))
#     d log S_model_i / d a = 1
#     d log S_model_i / d c = p_i = B_crit / (B_i + B_crit) = expit(c - x_i)  in (0, 1)
# For fixed c the best a is the (weighted) mean of log S_i - log(1 + exp(c - x_i)), so the
# sum of squares can be profiled to a function of c alone. That profile is what the coarse
# starting grid and the vectorised bootstrap refits use; the reported single fit is then
# polished with scipy.optimize.least_squares over (a, c).


def _log1p_ratio(c: np.ndarray, log_b: np.ndarray) -> np.ndarray:
    """log(1 + B_crit / B) for every (c, x) pair, computed stably as logaddexp(0, c - x)."""
    return np.logaddexp(0.0, c[..., None] - log_b)


def _profile_fit_many(
    log_b: np.ndarray, y: np.ndarray, w: np.ndarray, c_lo: float, c_hi: float
) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares fits of many datasets that share the batch sizes ``log_b``.

    Args:
        log_b: (n,) natural logs of the batch sizes.
        y: (R, n) log steps-to-target; entries with zero weight are ignored (may be inf).
        w: (R, n) weights, 1 for points in a dataset and 0 for points left out.
        c_lo, c_hi: bounds on c = log B_crit.

    Returns (a, c): (R,) arrays of log S_min and log B_crit. Rows need >= 2 weighted points;
    the caller checks identifiability.

    Method: evaluate the profiled sum of squares on a grid over c (matrix products, so all
    rows at once), then refine each row's minimum with Gauss-Newton steps on the profile,
    each step clipped to one grid spacing.
    """
    y = np.where(w > 0, y, 0.0)
    sw = w.sum(axis=1)
    # Subtracting each row's mean leaves the profiled RSS unchanged (a absorbs it) and
    # reduces cancellation in the expanded sum of squares below.
    y_mean = (w * y).sum(axis=1) / sw
    y = y - y_mean[:, None]
    n_grid = int(np.ceil((c_hi - c_lo) / _GRID_STEP)) + 1
    grid = np.linspace(c_lo, c_hi, n_grid)
    h = grid[1] - grid[0]
    f = _log1p_ratio(grid, log_b)  # (G, n)
    # RSS(c) = sum w (y - f)^2 - (sum w (y - f))^2 / sum w, expanded into matrix products.
    wy = w * y
    swy = wy.sum(axis=1)[:, None]
    rss = (
        (wy * y).sum(axis=1)[:, None]
        - 2.0 * wy @ f.T
        + w @ (f * f).T
        - (swy - w @ f.T) ** 2 / sw[:, None]
    )
    c = grid[np.argmin(rss, axis=1)]
    for _ in range(60):
        p = expit(c[:, None] - log_b)
        r = y - _log1p_ratio(c, log_b)
        r_bar = (w * r).sum(axis=1) / sw
        p_bar = (w * p).sum(axis=1) / sw
        num = (w * (r - r_bar[:, None]) * p).sum(axis=1)
        den = (w * (p - p_bar[:, None]) ** 2).sum(axis=1)
        step = np.divide(num, den, out=np.zeros_like(num), where=den > 1e-300)
        c = np.clip(c + np.clip(step, -h, h), c_lo, c_hi)
    r = y - _log1p_ratio(c, log_b)
    a = (w * r).sum(axis=1) / sw
    return a + y_mean, c  # undo the centring of y


def _c_bounds(log_b: np.ndarray) -> tuple[float, float]:
    return float(log_b.min() - _LOG_B_CRIT_PAD), float(log_b.max() + _LOG_B_CRIT_PAD)


def _range_verdict(
    b_crit: float, e_min: float, s_min: float, b_lo: float, b_hi: float, range_factor: float
) -> tuple[str, str]:
    """Classify a fitted B_crit against the observed batch-size range [b_lo, b_hi]."""
    if b_crit > b_hi * range_factor:
        return B_CRIT_ABOVE_RANGE, (
            f"S falls almost like 1/B over the whole range {b_lo:g}..{b_hi:g} (near-perfect "
            f"linear scaling): the fit puts B_crit at {b_crit:.3g} agent steps, more than "
            f"{range_factor:g}x the largest batch size. Only E_min (~{e_min:.3g} agent steps) "
            f"is determined. Add batch sizes above {b_hi:g} until S stops halving when B doubles."
        )
    if b_crit < b_lo / range_factor:
        return B_CRIT_BELOW_RANGE, (
            f"S barely changes with B over the whole range {b_lo:g}..{b_hi:g}: the fit puts "
            f"B_crit at {b_crit:.3g} agent steps, less than 1/{range_factor:g} of the smallest "
            f"batch size. Only S_min (~{s_min:.3g} PPO iterations) is determined. Add batch "
            f"sizes below {b_lo:g} until S grows when B shrinks."
        )
    return OK, ""


def _validate(batch_sizes: Any, steps_to_target: Any) -> tuple[np.ndarray, np.ndarray, str]:
    """Return (B, S, problem); problem is '' when the inputs are usable."""
    try:
        b = np.asarray(batch_sizes, dtype=float)
        s = np.asarray(steps_to_target, dtype=float)
    except (TypeError, ValueError) as exc:
        return np.array([]), np.array([]), f"inputs are not numeric arrays ({exc})"
    if b.ndim != 1 or s.ndim != 1 or b.shape != s.shape:
        return b, s, (
            f"batch_sizes and steps_to_target must be 1-D arrays of equal length "
            f"(got shapes {b.shape} and {s.shape})"
        )
    bad = ~(np.isfinite(b) & np.isfinite(s) & (b > 0) & (s > 0))
    if bad.any():
        idx = np.flatnonzero(bad).tolist()
        return b, s, (
            f"non-finite or non-positive values at positions {idx} "
            f"(batch_sizes={b[bad].tolist()}, steps_to_target={s[bad].tolist()}); every batch "
            f"size and step count must be a finite number > 0. Drop batch sizes that did not "
            f"reach the target (NaN/inf) before fitting, and report them separately."
        )
    return b, s, ""


def fit_critical_batch(
    batch_sizes: Any, steps_to_target: Any, *, range_factor: float = 2.0,
    ci: float = B_CRIT_CI, min_each_side: int = MIN_EACH_SIDE,
) -> CriticalBatchFit:
    """Fit S(B) = S_min (1 + B_crit / B) to steps-to-target measurements.

    Args:
        batch_sizes: rollout batch sizes B in agent steps, one per point. Repeated batch
            sizes (e.g. one point per seed) are allowed.
        steps_to_target: S, PPO iterations to the target, one per point (finite, > 0).
        range_factor: a fitted B_crit below min(B) / range_factor or above
            max(B) * range_factor is reported as degenerate (only one side of the tradeoff
            was observed, so B_crit is an extrapolation bounded on one side only).
        ci: level of the profile intervals.
        min_each_side: distinct batch sizes needed at or above B_crit and below it for a
            measured B_crit (``MIN_EACH_SIDE``); with fewer on one side it is a bound.

    Returns:
        CriticalBatchFit. Never raises for bad data: check ``ok`` / ``reason``, or call
        ``.raise_if_failed()``.

    The fit minimises sum_i (log S_i - log S_min - log(1 + B_crit / B_i))^2 over
    (log S_min, log B_crit), with log B_crit kept within e^10 of the observed range. It
    starts from the best point of a grid over log B_crit (with log S_min profiled out), so
    the result does not depend on a hand-picked initial guess, then polishes with
    ``scipy.optimize.least_squares``. E_min = S_min * B_crit.

    The intervals are profile intervals from the residuals (``_profile_interval``): the
    log B_crit values whose best fit has RSS <= RSS_min (1 + F(ci; 1, n - 2) / (n - 2)),
    and the S_min and E_min those fits allow. The residual variance holds seed noise and
    the scatter of batch sizes around the curve alike, so the interval widens with lack of
    fit, which a seed bootstrap cannot see.

    Not a measured B_crit (``ok=False``):
      * ``invalid_input``: NaN/inf/zero/negative values or mismatched shapes;
      * ``too_few_batch_sizes``: fewer than 3 distinct batch sizes (two parameters cannot be
        checked against two points);
      * ``b_crit_above_range``: all batch sizes far below B_crit (S ~ 1/B, E constant);
      * ``b_crit_below_range``: all batch sizes far above B_crit (S constant);
      * ``unidentifiable``: batch sizes too close together to separate S_min from B_crit;
      * ``lower_bound`` / ``upper_bound``: fewer than ``min_each_side`` batch sizes at or
        above / below the fitted B_crit: the knee is not covered on that side, and B_crit
        is reported as a bound (``bound``, ``b_crit_bound``), never as a number.
    """
    b, s, problem = _validate(batch_sizes, steps_to_target)
    if problem:
        return CriticalBatchFit(False, INVALID_INPUT, problem, n_points=int(b.size))
    counts = dict(n_points=int(b.size), n_batch_sizes=int(np.unique(b).size))
    if counts["n_batch_sizes"] < 3:
        return _too_few_batch_sizes(np.unique(b), counts)
    log_b, log_s = np.log(b), np.log(s)
    theta = _least_squares_fit(log_b, log_s)
    a, c = float(theta[0]), float(theta[1])
    s_min, b_crit = float(np.exp(a)), float(np.exp(c))
    e_min = float(np.exp(a + c))
    r = _residuals(theta, log_b, log_s)
    rms = float(np.sqrt(np.mean(r**2)))
    distinct = np.unique(b)
    n_above = int((distinct >= b_crit).sum())
    shared: dict[str, Any] = dict(
        rms_log=rms, log_b_crit_se=_log_b_crit_se(theta, log_b, r), ci=ci,
        b_crit_fitted=b_crit, n_at_or_above=n_above,
        n_below=int(distinct.size - n_above), **_profile_interval(log_b, log_s, float(r @ r), ci),
        **counts,
    )

    kind, reason = _range_verdict(b_crit, e_min, s_min, b.min(), b.max(), range_factor)
    if kind != OK:
        side = "lower" if kind == B_CRIT_ABOVE_RANGE else "upper"
        return _bounded(kind, reason, side, shared)
    if np.std(expit(c - log_b)) < _MIN_SENSITIVITY_SPREAD:
        return CriticalBatchFit(
            False,
            UNIDENTIFIABLE,
            f"the batch sizes {b.min():g}..{b.max():g} are too close together to separate "
            f"S_min from B_crit (the model's sensitivity to B_crit hardly varies across "
            f"them). Use batch sizes spread over a factor of 16 or more around B_crit.",
            **shared,
        )
    listed = ", ".join(f"{v:g}" for v in distinct)
    if shared["n_at_or_above"] < min_each_side:
        return _bounded(LOWER_BOUND, (
            f"batch sizes at or above the fitted B_crit ({b_crit:,.0f} agent steps): only "
            f"{shared['n_at_or_above']} of {distinct.size} ({listed}): the knee is not covered "
            f"from above, so B_crit is a lower bound. Add batch sizes of "
            f"{2 * distinct.max():g} and more (at least {min_each_side} at or above B_crit)."),
            "lower", shared)
    if shared["n_below"] < min_each_side:
        return _bounded(UPPER_BOUND, (
            f"batch sizes below the fitted B_crit ({b_crit:,.0f} agent steps): only "
            f"{shared['n_below']} of {distinct.size} ({listed}): the knee is not covered from "
            f"below, so B_crit is an upper bound. Add batch sizes of {distinct.min() / 2:g} "
            f"and less (at least {min_each_side} below B_crit)."), "upper", shared)
    return CriticalBatchFit(True, OK, "", s_min=s_min, e_min=e_min, b_crit=b_crit, **shared)


def _bounded(kind: str, reason: str, side: str, shared: dict[str, Any]) -> CriticalBatchFit:
    """A refused fit that bounds B_crit on ``side`` by its interval's end, where it has one."""
    value = shared["b_crit_lo"] if side == "lower" else shared["b_crit_hi"]
    level = f"{shared['ci']:.0%}"
    if side == "lower" and value > 0:
        return CriticalBatchFit(False, kind, f"{reason} B_crit >= {value:,.0f} (the {level} "
                                f"interval's lower end).", bound=">=", b_crit_bound=value,
                                **shared)
    if side == "upper" and np.isfinite(value):
        return CriticalBatchFit(False, kind, f"{reason} B_crit <= {value:,.0f} (the {level} "
                                f"interval's upper end).", bound="<=", b_crit_bound=value,
                                **shared)
    return CriticalBatchFit(False, kind, f"{reason} The {level} interval is unbounded on that "
                            "side too: the data bound nothing.", **shared)


def _too_few_batch_sizes(distinct: np.ndarray, counts: dict[str, int]) -> CriticalBatchFit:
    return CriticalBatchFit(
        False,
        TOO_FEW_BATCH_SIZES,
        f"only {distinct.size} distinct batch size(s) ({', '.join(f'{v:g}' for v in distinct)})"
        f"; the two-parameter fit needs at least 3 that reached the target. Run more batch "
        f"sizes, spread on both sides of the expected B_crit.",
        **counts,
    )


def _residuals(theta: np.ndarray, log_b: np.ndarray, log_s: np.ndarray) -> np.ndarray:
    """log S - log S_min - log(1 + B_crit / B), with theta = (log S_min, log B_crit)."""
    return log_s - theta[0] - _log1p_ratio(np.asarray(theta[1]), log_b)


def _jacobian(theta: np.ndarray, log_b: np.ndarray, _log_s: Any = None) -> np.ndarray:
    """d residuals / d theta (``least_squares`` passes it the residuals' log S too)."""
    return -np.column_stack([np.ones_like(log_b), expit(theta[1] - log_b)])


def _least_squares_fit(log_b: np.ndarray, log_s: np.ndarray) -> np.ndarray:
    """(log S_min, log B_crit): the grid start polished by ``least_squares``."""
    c_lo, c_hi = _c_bounds(log_b)
    a0, c0 = _profile_fit_many(log_b, log_s[None, :], np.ones((1, log_b.size)), c_lo, c_hi)
    # least_squares wants a start strictly inside the bounds.
    eps = 1e-9
    x0 = np.array([a0[0], np.clip(c0[0], c_lo + eps, c_hi - eps)])
    sol = least_squares(
        _residuals,
        x0,
        jac=_jacobian,
        bounds=([-np.inf, c_lo], [np.inf, c_hi]),
        xtol=1e-14,
        ftol=1e-14,
        gtol=1e-14,
        args=(log_b, log_s),
    )
    return sol.x


def _log_b_crit_se(theta: np.ndarray, log_b: np.ndarray, r: np.ndarray) -> float:
    """Standard error of log B_crit from the Jacobian at the fit (NaN with 2 points)."""
    n_points = int(log_b.size)
    if n_points <= 2:
        return float("nan")
    jac = _jacobian(theta, log_b)
    cov = np.linalg.inv(jac.T @ jac) * float(r @ r) / (n_points - 2)
    return float(np.sqrt(cov[1, 1]))


# Spacing of the grid over log B_crit on which the profile interval is read (natural-log
# units): its ends are accurate to 0.2%.
_PROFILE_STEP = 0.002


def _profile_interval(log_b: np.ndarray, log_s: np.ndarray, rss_min: float,
                      ci: float) -> dict[str, float]:
    """Profile intervals of B_crit, S_min and E_min at level ``ci`` (docs/critical-batch.md).

    The confidence region is {(a, c): RSS(a, c) <= T} with T = RSS_min (1 + F / (n - 2)),
    F the ``ci`` quantile of F(1, n - 2): the usual F region of a least-squares fit, exact
    for a model linear in its parameters with normal errors, and the standard profile
    region otherwise. Since RSS is quadratic in a = log S_min, RSS(a, c) = RSS_p(c) +
    n (a - a(c))^2 with a(c) the profiled optimum, so the region is, for each c with
    RSS_p(c) <= T, the a within sqrt((T - RSS_p(c)) / n) of a(c). An end that reaches the
    edge of the allowed range of c (e^10 beyond the batch sizes) is unbounded: B_crit
    0 or inf, and the S_min or E_min that then run to 0.
    """
    keys = ("b_crit_lo", "b_crit_hi", "s_min_lo", "s_min_hi", "e_min_lo", "e_min_hi")
    n = int(log_b.size)
    if n <= 2 or not (0.0 < ci < 1.0):
        return dict.fromkeys(keys, float("nan"))
    c_lo, c_hi = _c_bounds(log_b)
    grid = np.arange(c_lo, c_hi + _PROFILE_STEP / 2, _PROFILE_STEP)
    r = log_s - _log1p_ratio(grid, log_b)  # (G, n)
    a = r.mean(axis=1)
    rss = ((r - a[:, None]) ** 2).sum(axis=1)
    rss_min = min(rss_min, float(rss.min()))
    df = n - 2
    threshold = rss_min * (1.0 + float(stats.f.ppf(ci, 1, df)) / df)
    inside = rss <= max(threshold, float(rss.min()))
    idx = np.flatnonzero(inside)
    first, last = int(idx[0]), int(idx[-1])
    half = np.sqrt(np.maximum(threshold - rss[inside], 0.0) / n)
    a_in, e_in = a[inside], a[inside] + grid[inside]
    low_open, high_open = first == 0, last == grid.size - 1
    return dict(
        b_crit_lo=0.0 if low_open else float(np.exp(grid[first])),
        b_crit_hi=math.inf if high_open else float(np.exp(grid[last])),
        s_min_lo=0.0 if high_open else float(np.exp((a_in - half).min())),
        s_min_hi=float(np.exp((a_in + half).max())),
        e_min_lo=0.0 if low_open else float(np.exp((e_in - half).min())),
        e_min_hi=float(np.exp((e_in + half).max())),
    )


@dataclass(frozen=True)
class LackOfFit:
    """The lack-of-fit F test of S(B) against the seeds (``lack_of_fit``).

    Attributes:
        f: mean square of the per-batch-size mean log S around the curve (weighted by
            seeds) over the pooled seed variance of log S; about 1 when the batch sizes
            scatter around the curve as much as their seeds explain.
        df_batch: J - 2 (J batch sizes with at least one seed that reached the target).
        df_seeds: sum over batch sizes of (seeds - 1).
        p: P(F(df_batch, df_seeds) >= f): small when batch sizes disagree with the curve.
        seed_sd: pooled sd of log S between seeds of one batch size.
        batch_sd: sd of the batch sizes' own deviations from the curve beyond seed noise
            (log units, method of moments, 0 when the seeds explain all the scatter).
    """

    f: float
    df_batch: int
    df_seeds: int
    p: float
    seed_sd: float
    batch_sd: float


def lack_of_fit(batch_sizes: Any, per_seed_steps: list[Any]) -> LackOfFit:
    """Lack-of-fit F test of S(B) = S_min (1 + B_crit / B) against seed scatter.

    Args:
        batch_sizes: the distinct batch sizes B_j (agent steps).
        per_seed_steps: for each B_j, the PPO iterations to the target of its seeds (NaN or
            inf: did not reach; left out).

    The curve is fitted to the mean log S of each batch size, weighted by its seeds n_j;
    F = [sum_j n_j (mean_j - fit_j)^2 / (J - 2)] / s^2 with s^2 the pooled within-batch
    variance of log S, on (J - 2, N - J) degrees of freedom. Under the model with
    independent normal seed noise, F follows that F distribution. NaN without 3 batch
    sizes or without two seeds at any batch size.
    """
    b = np.asarray(batch_sizes, dtype=float)
    ys = []
    for values in per_seed_steps:
        v = np.asarray(values, dtype=float)
        ys.append(np.log(v[np.isfinite(v) & (v > 0)]))
    use = np.array([y.size > 0 for y in ys])
    b, ys = b[use], [y for y, u in zip(ys, use, strict=True) if u]
    n_j = np.array([y.size for y in ys], dtype=float)
    df_batch, df_seeds = int(b.size) - 2, int((n_j - 1).sum())
    nan = LackOfFit(math.nan, max(df_batch, 0), df_seeds, math.nan, math.nan, math.nan)
    if df_batch < 1 or df_seeds < 1:
        return nan
    means = np.array([y.mean() for y in ys])
    s2 = float(sum(((y - y.mean()) ** 2).sum() for y in ys) / df_seeds)
    log_b = np.log(b)
    a, c = _profile_fit_many(log_b, means[None, :], n_j[None, :], *_c_bounds(log_b))
    fitted = a[0] + _log1p_ratio(c, log_b)[0]
    ms_fit = float((n_j * (means - fitted) ** 2).sum() / df_batch)
    f = ms_fit / s2 if s2 > 0 else math.inf
    return LackOfFit(
        f=f, df_batch=df_batch, df_seeds=df_seeds, p=float(stats.f.sf(f, df_batch, df_seeds)),
        seed_sd=math.sqrt(s2), batch_sd=math.sqrt(max(0.0, (ms_fit - s2) / n_j.mean())),
    )


def leave_one_out(batch_sizes: Any, steps_to_target: Any, *, range_factor: float = 2.0,
                  ci: float = B_CRIT_CI) -> dict[float, CriticalBatchFit]:
    """The fit without each distinct batch size in turn: {left-out B: fit of the rest}.

    A B_crit that holds up moves little when any one batch size is left out; compare each
    fit's ``b_crit_fitted`` with the full fit's interval."""
    b = np.asarray(batch_sizes, dtype=float)
    s = np.asarray(steps_to_target, dtype=float)
    return {float(v): fit_critical_batch(b[b != v], s[b != v], range_factor=range_factor, ci=ci)
            for v in np.unique(b)}


# --------------------------------------------------------------------------------------
# Seed bootstrap
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BootstrapResult:
    """Percentile intervals from ``bootstrap_critical_batch``.

    ``n_failed`` counts replicates whose refit was not usable, for any reason: too few batch
    sizes reached the target in the resample (``n_unfittable``; left out of the intervals),
    or the refit put B_crit outside the accepted range. The latter are *kept* in the
    intervals at their limiting values (B_crit -> inf and S_min -> 0 above the range,
    B_crit -> 0 and E_min -> 0 below it), so a wide one-sided uncertainty shows up as an
    infinite or zero interval end instead of being dropped. ``fail_frac`` = n_failed / n_boot.
    """

    b_crit_lo: float
    b_crit_hi: float
    s_min_lo: float
    s_min_hi: float
    e_min_lo: float
    e_min_hi: float
    n_boot: int
    n_failed: int
    n_unfittable: int
    fail_frac: float


def draw_seeds(n_seeds: Any, n_boot: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Seed-bootstrap draws: for each batch size j, an (n_boot, n_seeds[j]) array of
    indices into its seeds, drawn with replacement (an empty array for no seeds). Callers
    that refit several targets on the same runs pass the same draws to each
    (``critical_batch_replicates``), so one replicate is one resampling of the runs."""
    return [rng.integers(0, n, size=(n_boot, n)) if n else np.empty((n_boot, 0), dtype=int)
            for n in (int(k) for k in n_seeds)]


@dataclass(frozen=True)
class Replicates:
    """The refits of one seed bootstrap, one entry per replicate (``critical_batch_replicates``).

    ``fittable``: at least 3 batch sizes had a finite median in the replicate. ``above`` /
    ``below``: B_crit left the accepted range (then b_crit is inf / 0, and s_min / e_min is
    0, as in ``fit_critical_batch``'s verdicts). Values of rows that are not fittable are
    meaningless.
    """

    b_crit: np.ndarray
    s_min: np.ndarray
    e_min: np.ndarray
    fittable: np.ndarray
    above: np.ndarray
    below: np.ndarray

    @property
    def usable(self) -> np.ndarray:
        """Fittable and within the range: B_crit, S_min and E_min all determined."""
        return self.fittable & ~self.above & ~self.below


def critical_batch_replicates(
    batch_sizes: Any, per_seed_steps: list[Any], draws: list[np.ndarray], *,
    range_factor: float = 2.0,
) -> Replicates:
    """Refit S(B) on each replicate of resampled seeds.

    ``draws[j]`` (from ``draw_seeds``) indexes ``per_seed_steps[j]``. Per replicate and
    batch size: the median of the drawn seeds (a seed that did not reach the target counts
    as +inf, so the median is finite only when a strict majority reached it; otherwise
    that batch size drops out of the replicate), then one least-squares refit on the
    medians with the accepted range of ``fit_critical_batch``.
    """
    b = np.asarray(batch_sizes, dtype=float)
    log_b = np.log(b)
    n_boot = int(draws[0].shape[0]) if draws else 0
    medians = np.empty((n_boot, b.size))
    for j, values in enumerate(per_seed_steps):
        v = np.asarray(values, dtype=float)
        v = np.where(np.isfinite(v) & (v > 0), v, np.inf)
        if v.size == 0:
            medians[:, j] = np.inf
            continue
        medians[:, j] = np.median(v[draws[j]], axis=1)
    w = np.isfinite(medians).astype(float)
    fittable = w.sum(axis=1) >= 3
    # Rows that cannot be fitted get dummy weights so the vectorised solver stays finite;
    # their results are discarded by the callers.
    w_fit = np.where(fittable[:, None], w, 1.0)
    y = np.log(np.where(w > 0, medians, 1.0))
    c_lo, c_hi = _c_bounds(log_b)
    a, c = _profile_fit_many(log_b, y, w_fit, c_lo, c_hi)
    s_min, b_crit, e_min = np.exp(a), np.exp(c), np.exp(a + c)

    # Accepted range per replicate, from the batch sizes that entered it.
    b_present = np.where(w > 0, b, np.nan)
    with np.errstate(all="ignore"):
        lo = np.nanmin(np.where(fittable[:, None], b_present, b), axis=1) / range_factor
        hi = np.nanmax(np.where(fittable[:, None], b_present, b), axis=1) * range_factor
    above = fittable & (b_crit > hi)
    below = fittable & (b_crit < lo)
    return Replicates(
        b_crit=np.where(above, np.inf, np.where(below, 0.0, b_crit)),
        s_min=np.where(above, 0.0, s_min), e_min=np.where(below, 0.0, e_min),
        fittable=fittable, above=above, below=below,
    )


def bootstrap_critical_batch(
    batch_sizes: Any,
    per_seed_steps: list[Any],
    *,
    n_boot: int = 1000,
    seed: int | np.random.Generator = 0,
    ci: float = B_CRIT_CI,
    range_factor: float = 2.0,
) -> BootstrapResult:
    """Percentile bootstrap over seeds for B_crit, S_min and E_min.

    Args:
        batch_sizes: the distinct batch sizes B_j (agent steps) that enter the fit.
        per_seed_steps: for each B_j, the per-seed PPO iterations to the target at that
            batch size's chosen learning rate; NaN or inf = the seed did not reach it.
        n_boot, seed, ci: number of replicates, RNG seed (or Generator), interval level.
        range_factor: as in ``fit_critical_batch``.

    Each replicate resamples the seeds of every batch size independently, with
    replacement, takes the median (a seed that did not reach the target counts as +inf, so
    the median is finite only when a strict majority reached it; otherwise that batch size
    drops out of the replicate), and refits S(B) on the medians. The learning rate chosen
    per batch size is held fixed, so the interval does not include the uncertainty of that
    choice.
    """
    b = np.asarray(batch_sizes, dtype=float)
    if b.ndim != 1 or b.size != len(per_seed_steps) or np.unique(b).size != b.size:
        raise ValueError("batch_sizes must be distinct and match per_seed_steps one-to-one")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    draws = draw_seeds([np.size(v) for v in per_seed_steps], n_boot, rng)
    rep = critical_batch_replicates(b, per_seed_steps, draws, range_factor=range_factor)
    b_crit, s_min, e_min, fittable = rep.b_crit, rep.s_min, rep.e_min, rep.fittable
    above, below = rep.above, rep.below

    q = [(1.0 - ci) / 2.0, (1.0 + ci) / 2.0]

    def interval(x: np.ndarray) -> tuple[float, float]:
        x = x[fittable]
        if x.size == 0:
            return float("nan"), float("nan")
        # inverted_cdf picks sample values (no interpolation), so inf ends stay inf.
        lo_, hi_ = np.quantile(x, q, method="inverted_cdf")
        return float(lo_), float(hi_)

    n_unfit = int((~fittable).sum())
    n_failed = n_unfit + int(above.sum() + below.sum())
    return BootstrapResult(
        *interval(b_crit), *interval(s_min), *interval(e_min),
        n_boot=int(n_boot), n_failed=n_failed, n_unfittable=n_unfit,
        fail_frac=n_failed / n_boot if n_boot else float("nan"),
    )


# --------------------------------------------------------------------------------------
# From a table of runs
# --------------------------------------------------------------------------------------

RUN_COLUMNS = (
    "env", "target", "rollout_batch_size", "lr", "seed",
    "iterations_to_target", "agent_steps_to_target",
)
_GROUP = ["env", "target", "rollout_batch_size"]


def _check_columns(df: pd.DataFrame) -> None:
    missing = [col for col in RUN_COLUMNS if col not in df.columns]
    if missing:
        raise ValueError(f"results table lacks columns {missing}; expected {list(RUN_COLUMNS)}")


def _grid_seeds(runs: pd.DataFrame) -> set[Any]:
    """The seeds that ran at every lr of one batch size (the lr grid's seeds; all seeds when
    the lrs share none)."""
    per_lr = [set(g["seed"]) for _, g in runs.groupby("lr", sort=True)]
    common = set.intersection(*per_lr) if per_lr else set()
    return common or set(runs["seed"])


def _lr_edge(best_lr: float, lrs: list[float]) -> str:
    """Where the best lr sits in the grid tried: 'untuned' (one lr), 'low', 'high' or ''."""
    if len(lrs) < 2:
        return "untuned"
    if best_lr <= min(lrs):
        return "low"
    return "high" if best_lr >= max(lrs) else ""


def best_per_batch(
    df: pd.DataFrame, *, min_reach_frac: float = 0.5
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Choose the learning rate per (env, target, rollout_batch_size).

    Args:
        df: one row per run, with columns env, target, rollout_batch_size (agent steps),
            lr, seed, iterations_to_target (PPO iterations; NaN = target not reached) and
            agent_steps_to_target.
        min_reach_frac: an lr is eligible only if the fraction of its seeds that reached
            the target is strictly greater than this (default: a strict majority).

    Rule: a run that did not reach the target counts as +inf iterations. The choice looks
    only at the grid's seeds, those that ran at every lr of the batch size, so that the
    extra seeds of a two-stage sweep (docs/sweeps.md) at one lr do not tilt it. Among the
    eligible learning rates, the one with the lowest median iterations_to_target over the
    grid seeds wins; ties go to the higher reach fraction, then the smaller lr. With a
    strict majority reaching, the median is finite. A learning rate that is fast on the
    seeds that reach the target but fails on most seeds is therefore never chosen. S at
    the chosen lr is then the median over all of its seeds.

    Returns (per_batch, per_seed):
        per_batch: one row per (env, target, rollout_batch_size) with best_lr, n_seeds,
            n_reached, reach_frac, s_median (median PPO iterations at best_lr, all its
            seeds), e_median = rollout_batch_size x s_median (agent steps),
            agent_steps_median (median of the agent_steps_to_target column, for
            cross-checking), n_lrs, n_lrs_eligible, lrs (the grid tried, comma-separated),
            lr_edge ('untuned' for one lr, 'low' / 'high' when the best lr is the grid's
            smallest / largest: extend the grid; '' inside it), reached (bool) and reason
            (why not reached, else ''). Batch sizes with no eligible lr have best_lr,
            s_median, e_median = NaN.
        per_seed: the input rows at each batch size's best lr, with a boolean ``reached``.
    """
    _check_columns(df)
    runs = df.copy()
    runs["reached"] = np.isfinite(runs["iterations_to_target"].astype(float)) & (
        runs["iterations_to_target"].astype(float) > 0
    )
    runs["_s"] = np.where(runs["reached"], runs["iterations_to_target"].astype(float), np.inf)
    runs["_e"] = np.where(runs["reached"], runs["agent_steps_to_target"].astype(float), np.inf)

    def lr_table(g: pd.DataFrame) -> pd.DataFrame:
        out = (g.groupby("lr", sort=True)
               .agg(n_seeds=("_s", "size"), n_reached=("reached", "sum"),
                    s_median=("_s", "median"), agent_steps_median=("_e", "median"))
               .reset_index())
        out["reach_frac"] = out["n_reached"] / out["n_seeds"]
        out["eligible"] = out["reach_frac"] > min_reach_frac
        return out

    rows = []
    for key, g in runs.groupby(_GROUP, sort=True):
        env, target, bsz = key
        lrs = sorted(float(v) for v in g["lr"].unique())
        grid = lr_table(g[g["seed"].isin(_grid_seeds(g))])
        every = lr_table(g).set_index("lr")
        base = dict(env=env, target=target, rollout_batch_size=bsz, n_lrs=len(lrs),
                    n_lrs_eligible=int(grid["eligible"].sum()),
                    lrs=", ".join(f"{v:g}" for v in lrs))
        ok = grid[grid["eligible"]]
        if ok.empty:
            rows.append(dict(
                base, best_lr=np.nan, n_seeds=int(every["n_seeds"].max()), n_reached=0,
                reach_frac=float(grid["reach_frac"].max()), s_median=np.nan, e_median=np.nan,
                agent_steps_median=np.nan, lr_edge="", reached=False,
                reason=f"no lr reached the target in more than {min_reach_frac:.0%} of its "
                       f"seeds (best reach fraction {grid['reach_frac'].max():.0%})",
            ))
            continue
        best_lr = float(ok.sort_values(["s_median", "reach_frac", "lr"],
                                       ascending=[True, False, True]).iloc[0]["lr"])
        best = every.loc[best_lr]
        reached = bool(best["reach_frac"] > min_reach_frac)
        rows.append(dict(
            base, best_lr=best_lr, n_seeds=int(best["n_seeds"]),
            n_reached=int(best["n_reached"]), reach_frac=float(best["reach_frac"]),
            s_median=float(best["s_median"]) if reached else np.nan,
            e_median=float(bsz) * float(best["s_median"]) if reached else np.nan,
            agent_steps_median=float(best["agent_steps_median"]) if reached else np.nan,
            lr_edge=_lr_edge(best_lr, lrs), reached=reached,
            reason="" if reached else
            f"the best lr of the grid seeds ({best_lr:g}) reached the target in "
            f"{best['reach_frac']:.0%} of all its seeds, not more than {min_reach_frac:.0%}",
        ))
    columns = ["env", "target", "rollout_batch_size", "best_lr", "n_seeds", "n_reached",
               "reach_frac", "s_median", "e_median", "agent_steps_median", "n_lrs",
               "n_lrs_eligible", "lrs", "lr_edge", "reached", "reason"]
    per_batch = pd.DataFrame(rows, columns=columns)

    chosen = per_batch.loc[per_batch["reached"], [*_GROUP, "best_lr"]]
    chosen_keys = set(chosen.itertuples(index=False, name=None))
    run_keys = runs[[*_GROUP, "lr"]].itertuples(index=False, name=None)
    per_seed = runs[np.array([key in chosen_keys for key in run_keys], dtype=bool)]
    per_seed = per_seed.drop(columns=["_s", "_e"]).sort_values([*_GROUP, "seed"])
    return per_batch, per_seed.reset_index(drop=True)


FIT_COLUMNS = [
    "env", "target", "ok", "kind", "reason",
    "b_crit", "b_crit_lo", "b_crit_hi", "bound", "b_crit_bound", "b_crit_fitted",
    "s_min", "s_min_lo", "s_min_hi",
    "e_min", "e_min_lo", "e_min_hi",
    "b_crit_seed_lo", "b_crit_seed_hi",
    "lof_f", "lof_df_batch", "lof_df_seeds", "lof_p", "seed_sd_log", "batch_sd_log",
    "n_at_or_above", "n_below",
    "b_crit_loo_min", "b_crit_loo_max", "loo_outside", "b_crit_leave_one_out",
    "lr_untuned", "lr_at_edge",
    "rms_log", "log_b_crit_se",
    "n_batch_sizes", "n_batch_sizes_tried", "batch_sizes_not_reached",
    "n_boot", "boot_failed", "boot_fail_frac",
]
"""Columns of ``fit_from_runs`` (fit.csv); described there."""


def fit_from_runs(
    df: pd.DataFrame,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = B_CRIT_CI,
    *,
    range_factor: float = 2.0,
    min_reach_frac: float = 0.5,
    floors: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """Critical batch size per (env, target) from a table of runs.

    For each (env, target): ``best_per_batch`` chooses the lr per batch size; the batch
    sizes whose best lr reached the target enter ``fit_critical_batch`` with their median
    S. A target at or below ``floors[env]`` (the return untrained play can reach by chance,
    docs/sweeps.md) is refused before fitting.

    Returns one row per (env, target) with columns (``FIT_COLUMNS``):
        env, target, ok (a measured B_crit), kind (``CriticalBatchFit.kind``), reason;
        b_crit, b_crit_lo, b_crit_hi     -- agent steps; the ``ci`` profile interval, which
                                            carries seed scatter and lack of fit alike;
        bound, b_crit_bound              -- ">=" / "<=" and its value where B_crit is a bound;
        b_crit_fitted                    -- the least-squares value whatever the verdict;
        s_min, s_min_lo, s_min_hi        -- PPO iterations (profile interval);
        e_min, e_min_lo, e_min_hi        -- agent steps (profile interval);
        b_crit_seed_lo, b_crit_seed_hi   -- a percentile interval from resampling seeds
                                            only (``bootstrap_critical_batch``): too narrow
                                            when batch sizes scatter around the curve;
        lof_f, lof_df_batch, lof_df_seeds, lof_p, seed_sd_log, batch_sd_log -- ``lack_of_fit``;
        n_at_or_above, n_below           -- batch sizes on each side of the fitted B_crit;
        b_crit_loo_min, b_crit_loo_max   -- range of the fitted B_crit leaving one batch
                                            size out (``leave_one_out``); loo_outside: how
                                            many of those fall outside [b_crit_lo,
                                            b_crit_hi]; b_crit_leave_one_out: "B: value" each;
        lr_untuned                       -- some batch size ran one lr only;
        lr_at_edge                       -- batch sizes whose best lr is the grid's
                                            smallest or largest ("512 (high)"): extend it;
        rms_log, log_b_crit_se           -- fit quality (natural-log units);
        n_batch_sizes (that reached the target and were fitted), n_batch_sizes_tried,
        batch_sizes_not_reached (comma-separated string);
        n_boot, boot_failed, boot_fail_frac -- see ``BootstrapResult``.
    The seed bootstrap runs for measured B_crits only (n_boot = 0 otherwise).
    """
    per_batch, per_seed = best_per_batch(df, min_reach_frac=min_reach_frac)
    rng = np.random.default_rng(seed)
    rows = []
    for (env, target), g in per_batch.groupby(["env", "target"], sort=True):
        reached = g[g["reached"]].sort_values("rollout_batch_size")
        missed = g.loc[~g["reached"], "rollout_batch_size"].tolist()
        edge = g[g["lr_edge"].isin(["low", "high"])]
        row: dict[str, Any] = {col: np.nan for col in FIT_COLUMNS}
        row.update(
            env=env, target=target, n_batch_sizes=len(reached), n_batch_sizes_tried=len(g),
            batch_sizes_not_reached=", ".join(f"{v:g}" for v in missed), n_boot=0,
            boot_failed=0, boot_fail_frac=np.nan, bound="", b_crit_leave_one_out="",
            lr_untuned=bool((g["lr_edge"] == "untuned").any()),
            lr_at_edge=", ".join(f"{b:g} ({e})" for b, e in
                                 zip(edge["rollout_batch_size"], edge["lr_edge"], strict=True)),
        )
        floor = (floors or {}).get(env)
        if floor is not None and float(target) <= floor:
            row.update(ok=False, kind=TARGET_BELOW_FLOOR, reason=(
                f"target {target:g} is not clearly above untrained play: the return that "
                f"untrained play can reach by chance is {floor:.3g} (the sweep's floor, "
                f"docs/sweeps.md); fit a higher target"))
            rows.append(row)
            continue
        bs = reached["rollout_batch_size"].to_numpy(float)
        s_med = reached["s_median"].to_numpy(float)
        fit = fit_critical_batch(bs, s_med, range_factor=range_factor, ci=ci)
        row.update({k: getattr(fit, k) for k in (
            "ok", "kind", "reason", "b_crit", "b_crit_lo", "b_crit_hi", "bound", "b_crit_bound",
            "b_crit_fitted", "s_min", "s_min_lo", "s_min_hi", "e_min", "e_min_lo",
            "e_min_hi", "n_at_or_above", "n_below", "rms_log", "log_b_crit_se")})
        if not fit.ok:  # no measured B_crit: no interval (a bound is its own column)
            row.update({k: np.nan for k in ("b_crit_lo", "b_crit_hi", "s_min_lo", "s_min_hi",
                                            "e_min_lo", "e_min_hi")})
        if fit.kind == TOO_FEW_BATCH_SIZES and missed:
            not_reached = row["batch_sizes_not_reached"]
            row["reason"] += f" Batch sizes that did not reach the target: {not_reached}."
        mine = per_seed[(per_seed["env"] == env) & (per_seed["target"] == target)]
        seeds = [mine.loc[mine["rollout_batch_size"] == v, "iterations_to_target"]
                 .to_numpy(float) for v in bs]
        if len(bs) >= 3:
            lof = lack_of_fit(bs, seeds)
            row.update(lof_f=lof.f, lof_df_batch=lof.df_batch, lof_df_seeds=lof.df_seeds,
                       lof_p=lof.p, seed_sd_log=lof.seed_sd, batch_sd_log=lof.batch_sd)
        if len(bs) >= 4 and np.isfinite(fit.b_crit_fitted):
            loo = {v: f.b_crit_fitted for v, f in
                   leave_one_out(bs, s_med, range_factor=range_factor, ci=ci).items()}
            vals = np.array(list(loo.values()))
            row.update(
                b_crit_loo_min=float(np.nanmin(vals)), b_crit_loo_max=float(np.nanmax(vals)),
                b_crit_leave_one_out="; ".join(f"{v:g}: {x:.4g}" for v, x in loo.items()),
                loo_outside=int(((vals < fit.b_crit_lo) | (vals > fit.b_crit_hi)).sum())
                if fit.ok else np.nan,
            )
        if fit.ok:
            boot = bootstrap_critical_batch(bs, seeds, n_boot=n_boot, seed=rng, ci=ci,
                                            range_factor=range_factor)
            row.update(b_crit_seed_lo=boot.b_crit_lo, b_crit_seed_hi=boot.b_crit_hi,
                       n_boot=boot.n_boot, boot_failed=boot.n_failed,
                       boot_fail_frac=boot.fail_frac)
        rows.append(row)
    return pd.DataFrame(rows, columns=FIT_COLUMNS)


# --------------------------------------------------------------------------------------
# Plots (draw on given axes; the caller owns the figure and the backend, e.g. Agg)
# --------------------------------------------------------------------------------------


def _curve_batch_sizes(fit: CriticalBatchFit, batch_sizes: np.ndarray) -> np.ndarray:
    lo = min(batch_sizes.min(), fit.b_crit) / 4.0
    hi = max(batch_sizes.max(), fit.b_crit) * 4.0
    return np.geomspace(lo, hi, 200)


def plot_pareto(ax: Any, fit: CriticalBatchFit, batch_sizes: Any, S: Any, E: Any = None) -> Any:
    """E (agent steps) against S (PPO iterations), log-log, points labelled by B.

    Draws one scatter of the measured points, one text label per point, and, when the fit
    is ok, one line: the hyperbola (S/S_min - 1)(E/E_min - 1) = 1 traced over B. E defaults
    to B x S. Returns ax.
    """
    b = np.asarray(batch_sizes, dtype=float)
    s = np.asarray(S, dtype=float)
    e = b * s if E is None else np.asarray(E, dtype=float)
    ax.scatter(s, e, zorder=3, label="measured (best lr, median over seeds)")
    for bi, si, ei in zip(b, s, e, strict=True):
        ax.annotate(f"B={bi:g}", (si, ei), textcoords="offset points", xytext=(4, 4),
                    fontsize=8)
    if fit.ok:
        grid = _curve_batch_sizes(fit, b)
        ax.plot(fit.steps(grid), fit.samples(grid),
                label=f"fit: S_min={fit.s_min:.3g}, E_min={fit.e_min:.3g}, "
                      f"B_crit={fit.b_crit:.3g}")
    else:
        ax.set_title(f"no fit: {fit.kind}", fontsize=9)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("S: PPO iterations to target")
    ax.set_ylabel("E: agent steps to target")
    ax.legend(fontsize=8)
    return ax


def plot_steps_and_samples(
    axes: Any, fit: CriticalBatchFit, batch_sizes: Any, S: Any, E: Any = None
) -> Any:
    """S(B) on axes[0] and E(B) on axes[1], log-log, with the fit.

    Each axis gets one scatter of the measured points and, when the fit is ok, two lines:
    the fitted curve and a dashed vertical line at B_crit. E defaults to B x S. Returns axes.
    """
    b = np.asarray(batch_sizes, dtype=float)
    s = np.asarray(S, dtype=float)
    e = b * s if E is None else np.asarray(E, dtype=float)
    ax_s, ax_e = axes[0], axes[1]
    ax_s.scatter(b, s, zorder=3, label="measured")
    ax_e.scatter(b, e, zorder=3, label="measured")
    if fit.ok:
        grid = _curve_batch_sizes(fit, b)
        ax_s.plot(grid, fit.steps(grid), label="S_min (1 + B_crit / B)")
        ax_e.plot(grid, fit.samples(grid), label="E_min (1 + B / B_crit)")
        for ax in (ax_s, ax_e):
            ax.axvline(fit.b_crit, linestyle="--", color="gray",
                       label=f"B_crit = {fit.b_crit:.3g}")
    for ax, ylabel in ((ax_s, "S: PPO iterations to target"),
                       (ax_e, "E: agent steps to target")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("rollout batch size B (agent steps)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    if not fit.ok:
        ax_s.set_title(f"no fit: {fit.kind}", fontsize=9)
    return axes
