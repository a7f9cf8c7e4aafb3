"""Critical batch size fits (McCandlish et al. 2018, arXiv 1812.06162).

See docs/critical-batch.md for the full description.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import least_squares
from scipy.special import expit

__all__ = [
    "B_CRIT_CI",
    "FEW_SEEDS",
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

B_CRIT_CI = 0.95
"""Default level of the seed-bootstrap intervals of B_crit, S_min and E_min (as the
exponents and the noise scale's Fieller intervals)."""

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
            f"this interval is too narrow; run {FEW_SEEDS} or more seeds per batch size for "
            "one to rely on")


# Failure kinds reported in CriticalBatchFit.kind.
OK = "ok"
INVALID_INPUT = "invalid_input"
TOO_FEW_BATCH_SIZES = "too_few_batch_sizes"
B_CRIT_ABOVE_RANGE = "b_crit_above_range"
B_CRIT_BELOW_RANGE = "b_crit_below_range"
UNIDENTIFIABLE = "unidentifiable"


class FitError(ValueError):
    """The data cannot determine the critical batch size; the message says why and what
    data would fix it."""


@dataclass(frozen=True)
class CriticalBatchFit:
    """Result of ``fit_critical_batch``.

    When ``ok`` is False the numeric estimates are NaN and ``reason`` says why (``kind`` is
    a short machine-readable label: one of ``invalid_input``, ``too_few_batch_sizes``,
    ``b_crit_above_range``, ``b_crit_below_range``, ``unidentifiable``). The reason quotes
    the numbers the optimiser ran off to, where there were any.

    Attributes:
        s_min: minimum number of PPO iterations to the target (B -> infinity).
        e_min: minimum number of agent steps to the target (B -> 0).
        b_crit: E_min / S_min, in agent steps.
        rms_log: root-mean-square of the residuals log S_obs - log S_model.
        log_b_crit_se: asymptotic standard error of log B_crit from the fit's Jacobian,
            sigma_hat * sqrt([(J^T J)^-1]_cc) with sigma_hat^2 = RSS / (n_points - 2); NaN
            when there are only two points. A rough guide; prefer the seed bootstrap.
        n_points: number of (B, S) points fitted (repeated batch sizes allowed).
        n_batch_sizes: number of distinct batch sizes among them.
    """

    ok: bool
    kind: str
    reason: str
    s_min: float = float("nan")
    e_min: float = float("nan")
    b_crit: float = float("nan")
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
            f"is determined; B_crit is bounded below by roughly {b_hi * range_factor:.3g}. "
            f"Add batch sizes above {b_hi:g} until S stops halving when B doubles."
        )
    if b_crit < b_lo / range_factor:
        return B_CRIT_BELOW_RANGE, (
            f"S barely changes with B over the whole range {b_lo:g}..{b_hi:g}: the fit puts "
            f"B_crit at {b_crit:.3g} agent steps, less than 1/{range_factor:g} of the smallest "
            f"batch size. Only S_min (~{s_min:.3g} PPO iterations) is determined; B_crit is "
            f"bounded above by roughly {b_lo / range_factor:.3g}. Add batch sizes below "
            f"{b_lo:g} until S grows when B shrinks."
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
    batch_sizes: Any, steps_to_target: Any, *, range_factor: float = 2.0
) -> CriticalBatchFit:
    """Fit S(B) = S_min (1 + B_crit / B) to steps-to-target measurements.

    Args:
        batch_sizes: rollout batch sizes B in agent steps, one per point. Repeated batch
            sizes (e.g. one point per seed) are allowed.
        steps_to_target: S, PPO iterations to the target, one per point (finite, > 0).
        range_factor: a fitted B_crit below min(B) / range_factor or above
            max(B) * range_factor is reported as degenerate (only one side of the tradeoff
            was observed, so B_crit is an extrapolation bounded on one side only).

    Returns:
        CriticalBatchFit. Never raises for bad data: check ``ok`` / ``reason``, or call
        ``.raise_if_failed()``.

    The fit minimises sum_i (log S_i - log S_min - log(1 + B_crit / B_i))^2 over
    (log S_min, log B_crit), with log B_crit kept within e^10 of the observed range. It
    starts from the best point of a grid over log B_crit (with log S_min profiled out), so
    the result does not depend on a hand-picked initial guess, then polishes with
    ``scipy.optimize.least_squares``. E_min = S_min * B_crit.

    Degenerate data, reported with ``ok=False``:
      * ``invalid_input``: NaN/inf/zero/negative values or mismatched shapes;
      * ``too_few_batch_sizes``: fewer than 3 distinct batch sizes (two parameters cannot be
        checked against two points);
      * ``b_crit_above_range``: all batch sizes far below B_crit (S ~ 1/B, E constant);
      * ``b_crit_below_range``: all batch sizes far above B_crit (S constant);
      * ``unidentifiable``: batch sizes too close together to separate S_min from B_crit.
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

    kind, reason = _range_verdict(b_crit, e_min, s_min, b.min(), b.max(), range_factor)
    if kind != OK:
        return CriticalBatchFit(False, kind, reason, rms_log=rms, **counts)
    if np.std(expit(c - log_b)) < _MIN_SENSITIVITY_SPREAD:
        return CriticalBatchFit(
            False,
            UNIDENTIFIABLE,
            f"the batch sizes {b.min():g}..{b.max():g} are too close together to separate "
            f"S_min from B_crit (the model's sensitivity to B_crit hardly varies across "
            f"them). Use batch sizes spread over a factor of 16 or more around B_crit.",
            rms_log=rms,
            **counts,
        )
    return CriticalBatchFit(
        True, OK, "", s_min=s_min, e_min=e_min, b_crit=b_crit, rms_log=rms,
        log_b_crit_se=_log_b_crit_se(theta, log_b, r), **counts,
    )


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

    Rule: a run that did not reach the target counts as +inf iterations. Among the
    eligible learning rates, the one with the lowest median iterations_to_target over its
    seeds wins; ties go to the higher reach fraction, then the smaller lr. With a strict
    majority reaching, the median is finite. A learning rate that is fast on the seeds
    that reach the target but fails on most seeds is therefore never chosen.

    Returns (per_batch, per_seed):
        per_batch: one row per (env, target, rollout_batch_size) with best_lr, n_seeds,
            n_reached, reach_frac, s_median (median PPO iterations at best_lr),
            e_median = rollout_batch_size x s_median (agent steps), agent_steps_median
            (median of the agent_steps_to_target column, for cross-checking),
            n_lrs, n_lrs_eligible, reached (bool) and reason (why not reached, else '').
            Batch sizes with no eligible lr have best_lr, s_median, e_median = NaN.
        per_seed: the input rows at each batch size's best lr, with a boolean ``reached``.
    """
    _check_columns(df)
    runs = df.copy()
    runs["reached"] = np.isfinite(runs["iterations_to_target"].astype(float)) & (
        runs["iterations_to_target"].astype(float) > 0
    )
    runs["_s"] = np.where(runs["reached"], runs["iterations_to_target"].astype(float), np.inf)
    runs["_e"] = np.where(runs["reached"], runs["agent_steps_to_target"].astype(float), np.inf)
    per_lr = (
        runs.groupby([*_GROUP, "lr"], sort=True)
        .agg(
            n_seeds=("_s", "size"),
            n_reached=("reached", "sum"),
            s_median=("_s", "median"),
            agent_steps_median=("_e", "median"),
        )
        .reset_index()
    )
    per_lr["reach_frac"] = per_lr["n_reached"] / per_lr["n_seeds"]
    per_lr["eligible"] = per_lr["reach_frac"] > min_reach_frac

    rows = []
    for key, g in per_lr.groupby(_GROUP, sort=True):
        env, target, bsz = key
        base = dict(env=env, target=target, rollout_batch_size=bsz,
                    n_lrs=len(g), n_lrs_eligible=int(g["eligible"].sum()))
        ok = g[g["eligible"]]
        if ok.empty:
            rows.append(dict(
                base, best_lr=np.nan, n_seeds=int(g["n_seeds"].max()), n_reached=0,
                reach_frac=float(g["reach_frac"].max()), s_median=np.nan, e_median=np.nan,
                agent_steps_median=np.nan, reached=False,
                reason=f"no lr reached the target in more than {min_reach_frac:.0%} of its "
                       f"seeds (best reach fraction {g['reach_frac'].max():.0%})",
            ))
            continue
        best = ok.sort_values(["s_median", "reach_frac", "lr"],
                              ascending=[True, False, True]).iloc[0]
        rows.append(dict(
            base, best_lr=float(best["lr"]), n_seeds=int(best["n_seeds"]),
            n_reached=int(best["n_reached"]), reach_frac=float(best["reach_frac"]),
            s_median=float(best["s_median"]), e_median=float(bsz) * float(best["s_median"]),
            agent_steps_median=float(best["agent_steps_median"]), reached=True, reason="",
        ))
    columns = ["env", "target", "rollout_batch_size", "best_lr", "n_seeds", "n_reached",
               "reach_frac", "s_median", "e_median", "agent_steps_median", "n_lrs",
               "n_lrs_eligible", "reached", "reason"]
    per_batch = pd.DataFrame(rows, columns=columns)

    chosen = per_batch.loc[per_batch["reached"], [*_GROUP, "best_lr"]]
    chosen_keys = set(chosen.itertuples(index=False, name=None))
    run_keys = runs[[*_GROUP, "lr"]].itertuples(index=False, name=None)
    per_seed = runs[np.array([key in chosen_keys for key in run_keys], dtype=bool)]
    per_seed = per_seed.drop(columns=["_s", "_e"]).sort_values([*_GROUP, "seed"])
    return per_batch, per_seed.reset_index(drop=True)


FIT_COLUMNS = [
    "env", "target", "ok", "reason",
    "b_crit", "b_crit_lo", "b_crit_hi",
    "s_min", "s_min_lo", "s_min_hi",
    "e_min", "e_min_lo", "e_min_hi",
    "rms_log", "log_b_crit_se",
    "n_batch_sizes", "n_batch_sizes_tried", "batch_sizes_not_reached",
    "n_boot", "boot_failed", "boot_fail_frac",
]


def fit_from_runs(
    df: pd.DataFrame,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = B_CRIT_CI,
    *,
    range_factor: float = 2.0,
    min_reach_frac: float = 0.5,
) -> pd.DataFrame:
    """Critical batch size per (env, target) from a table of runs.

    For each (env, target): ``best_per_batch`` chooses the lr per batch size; the batch
    sizes whose best lr reached the target enter ``fit_critical_batch`` with their median
    S; ``bootstrap_critical_batch`` gives ``ci`` percentile intervals by resampling seeds.

    Returns one row per (env, target) with columns (``FIT_COLUMNS``):
        env, target, ok, reason;
        b_crit, b_crit_lo, b_crit_hi     -- agent steps;
        s_min, s_min_lo, s_min_hi        -- PPO iterations;
        e_min, e_min_lo, e_min_hi        -- agent steps;
        rms_log, log_b_crit_se           -- fit quality (natural-log units);
        n_batch_sizes (that reached the target and were fitted), n_batch_sizes_tried,
        batch_sizes_not_reached (comma-separated string);
        n_boot, boot_failed, boot_fail_frac -- see ``BootstrapResult``.
    When ``ok`` is False the estimates and intervals are NaN, no bootstrap is run
    (n_boot = 0), and ``reason`` says what went wrong and what data would fix it.
    """
    per_batch, per_seed = best_per_batch(df, min_reach_frac=min_reach_frac)
    rng = np.random.default_rng(seed)
    rows = []
    for (env, target), g in per_batch.groupby(["env", "target"], sort=True):
        reached = g[g["reached"]].sort_values("rollout_batch_size")
        missed = g.loc[~g["reached"], "rollout_batch_size"].tolist()
        row: dict[str, Any] = {col: np.nan for col in FIT_COLUMNS}
        row.update(
            env=env, target=target, n_batch_sizes=len(reached), n_batch_sizes_tried=len(g),
            batch_sizes_not_reached=", ".join(f"{v:g}" for v in missed), n_boot=0,
            boot_failed=0, boot_fail_frac=np.nan,
        )
        fit = fit_critical_batch(
            reached["rollout_batch_size"].to_numpy(float), reached["s_median"].to_numpy(float),
            range_factor=range_factor,
        )
        row.update(ok=fit.ok, reason=fit.reason, rms_log=fit.rms_log,
                   log_b_crit_se=fit.log_b_crit_se)
        if fit.kind == TOO_FEW_BATCH_SIZES and missed:
            not_reached = row["batch_sizes_not_reached"]
            row["reason"] += f" Batch sizes that did not reach the target: {not_reached}."
        if fit.ok:
            mine = per_seed[(per_seed["env"] == env) & (per_seed["target"] == target)]
            bs = reached["rollout_batch_size"].to_numpy(float)
            seeds = [mine.loc[mine["rollout_batch_size"] == v, "iterations_to_target"]
                     .to_numpy(float) for v in bs]
            boot = bootstrap_critical_batch(bs, seeds, n_boot=n_boot, seed=rng, ci=ci,
                                            range_factor=range_factor)
            row.update(
                b_crit=fit.b_crit, s_min=fit.s_min, e_min=fit.e_min,
                b_crit_lo=boot.b_crit_lo, b_crit_hi=boot.b_crit_hi,
                s_min_lo=boot.s_min_lo, s_min_hi=boot.s_min_hi,
                e_min_lo=boot.e_min_lo, e_min_hi=boot.e_min_hi,
                n_boot=boot.n_boot, boot_failed=boot.n_failed, boot_fail_frac=boot.fail_frac,
            )
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
