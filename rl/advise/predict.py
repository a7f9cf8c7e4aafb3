"""Batch-size advice from a noise scale: B_crit = r x B_simple, then S(B), E(B) and wall-clock.

Pure functions over typed results; no training, no files. S(B) = S_min (1 + B_crit / B) and
E(B) = E_min (1 + B / B_crit) (McCandlish et al. 2018); wall-clock = S(B) x seconds per PPO
iteration at B. See docs/advise.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any

__all__ = [
    "Advice",
    "Candidate",
    "CandidateRow",
    "CriticalBatchPrediction",
    "NoiseScaleEstimate",
    "RatioCalibration",
    "Recommendation",
    "TOLERANCE",
    "advise_from",
    "predict_b_crit",
    "relative_iterations",
    "relative_samples",
    "relative_wall_clock",
    "pick",
]

TOLERANCE = 0.1
"""The sample-efficient pick may be this much slower (wall-clock) than the fastest."""

_Z95 = NormalDist().inv_cdf(0.975)


@dataclass(frozen=True)
class NoiseScaleEstimate:
    """B_simple of one loss term from a probe (agent steps), with its 95% interval.

    ``lo``/``hi`` come from a block bootstrap over the measurements (``hi`` may be inf: mean
    |G|^2 not resolved above zero). ``measurements``: PPO iterations averaged;
    ``rollout_batch_size``: the probe's batch (agent steps); ``return_first``/``return_last``:
    the smoothed return at the first and last of them, ``first_iteration``/``last_iteration``
    their PPO iterations (1-based; 0: not known); ``source``: where it came from."""

    term: str
    b_simple: float
    lo: float
    hi: float
    measurements: int
    rollout_batch_size: int
    return_first: float = math.nan
    return_last: float = math.nan
    source: str = ""
    first_iteration: int = 0
    last_iteration: int = 0


@dataclass(frozen=True)
class RatioCalibration:
    """B_crit / B_simple across tasks: geometric mean ``ratio``, ``spread`` (sd of the natural
    log over ``tasks``), its prediction interval [``lo``, ``hi``] at level ``ci`` for a task
    outside them, the loss ``term`` and the ``source`` (file and what it holds)."""

    term: str
    ratio: float
    spread: float
    lo: float
    hi: float
    ci: float
    tasks: tuple[str, ...]
    source: str = ""


@dataclass(frozen=True)
class CriticalBatchPrediction:
    """B_crit = ratio x B_simple (agent steps) with a band of ``band_sd`` log-sds: the ratio's
    spread and B_simple's interval (its 95% half-widths / 1.96, each side) in quadrature."""

    b_crit: float
    lo: float
    hi: float
    band_sd: float


@dataclass(frozen=True)
class Candidate:
    """A rollout shape and its seconds per PPO iteration on this machine (the value the
    advice uses; ``measured_seconds_per_iteration``: the raw timing, where it differs)."""

    num_envs: int
    num_steps: int
    seconds_per_iteration: float
    measured_seconds_per_iteration: float = math.nan

    @property
    def rollout_batch_size(self) -> int:
        """Agent steps per rollout: num_envs x num_steps."""
        return self.num_envs * self.num_steps


@dataclass(frozen=True)
class CandidateRow:
    """One candidate's predictions. ``iterations``: S(B) / S_min; ``samples``: E(B) / E_min;
    ``wall_clock``: S(B) x seconds per iteration over the fastest candidate's (1 = fastest);
    each ``_lo``/``_hi`` over B_crit's band (the fastest re-chosen at each end)."""

    num_envs: int
    num_steps: int
    rollout_batch_size: int
    seconds_per_iteration: float
    measured_seconds_per_iteration: float
    iterations: float
    iterations_lo: float
    iterations_hi: float
    samples: float
    samples_lo: float
    samples_hi: float
    wall_clock: float
    wall_clock_lo: float
    wall_clock_hi: float


@dataclass(frozen=True)
class Recommendation:
    """A recommended rollout batch size (agent steps), the picks at B_crit's band ends
    (``lo``, ``hi``: batch sizes), and its predicted wall-clock speedup over the reference
    batch (the probe's) with the range over the band."""

    rule: str
    num_envs: int
    num_steps: int
    rollout_batch_size: int
    lo: int
    hi: int
    speedup: float
    speedup_lo: float
    speedup_hi: float


@dataclass(frozen=True)
class Advice:
    """The table and the two recommendations (``advise_from``); notes in plain words."""

    noise: NoiseScaleEstimate
    calibration: RatioCalibration
    b_crit: CriticalBatchPrediction
    reference_batch_size: int
    rows: tuple[CandidateRow, ...]
    fastest: Recommendation
    sample_efficient: Recommendation
    tolerance: float
    notes: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        """Plain values (JSON-ready: inf and nan become None)."""
        return _plain(asdict(self))

    def table(self):
        """The candidates as a pandas DataFrame (one row each)."""
        import pandas as pd  # lazy: slow import, only for notebooks and the CLI

        return pd.DataFrame([asdict(r) for r in self.rows])


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _positive(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def predict_b_crit(noise: NoiseScaleEstimate, calibration: RatioCalibration,
                   band_sd: float = 1.0) -> CriticalBatchPrediction:
    """B_crit = ratio x B_simple with a ``band_sd``-sd band in log space (class docstring).

    An open end of B_simple's interval (lo <= 0 or hi = inf) opens that end of the band.

    Raises:
        ValueError: if B_simple or the ratio is not a finite positive number, or the
            spread or band is negative.
    """
    if not _positive(noise.b_simple):
        raise ValueError(f"B_simple must be a finite number > 0, got {noise.b_simple}")
    if not _positive(calibration.ratio):
        raise ValueError(f"the ratio B_crit / B_simple must be > 0, got {calibration.ratio}")
    spread = calibration.spread if math.isfinite(calibration.spread) else 0.0
    if spread < 0 or not (math.isfinite(band_sd) and band_sd >= 0):
        raise ValueError(f"spread and band_sd must be >= 0, got {spread}, {band_sd}")
    b = noise.b_simple
    point = calibration.ratio * b
    ends = []
    for end, sign in ((noise.lo, -1), (noise.hi, 1)):
        end = float(end)
        if (sign < 0 and end <= 0) or (sign > 0 and end == math.inf):
            ends.append(0.0 if sign < 0 else math.inf)  # unresolved: that end stays open
            continue
        sd_b = abs(math.log(end / b)) / _Z95 if _positive(end) else 0.0  # nan: no interval
        ends.append(point * math.exp(sign * band_sd * math.hypot(spread, sd_b)))
    return CriticalBatchPrediction(point, ends[0], ends[1], band_sd)


def relative_iterations(batch_size: float, b_crit: float) -> float:
    """S(B) / S_min = 1 + B_crit / B (PPO iterations to the target, relative)."""
    return 1.0 + b_crit / batch_size


def relative_samples(batch_size: float, b_crit: float) -> float:
    """E(B) / E_min = 1 + B / B_crit (agent steps to the target, relative)."""
    return 1.0 + batch_size / b_crit if b_crit > 0 else math.inf


def relative_wall_clock(candidates: Sequence[Candidate], b_crit: float) -> list[float]:
    """S(B) x seconds per iteration for each candidate over the smallest such value."""
    walls = [relative_iterations(c.rollout_batch_size, b_crit) * c.seconds_per_iteration
             for c in candidates]
    best = min(walls)
    return [w / best for w in walls]


def pick(candidates: Sequence[Candidate], b_crit: float,
         tolerance: float = TOLERANCE) -> tuple[int, int]:
    """(index of the fastest candidate in wall-clock, index of the most sample-efficient
    one within ``tolerance`` of the fastest) at this B_crit. Ties: the smaller batch."""
    walls = relative_wall_clock(candidates, b_crit)
    order = sorted(range(len(candidates)), key=lambda i: candidates[i].rollout_batch_size)
    fastest = min(order, key=lambda i: walls[i])
    near = [i for i in order if walls[i] <= 1.0 + tolerance + 1e-12]
    efficient = min(near, key=lambda i: relative_samples(candidates[i].rollout_batch_size,
                                                          b_crit))
    return fastest, efficient


def _check_candidates(candidates: Sequence[Candidate]) -> None:
    if not candidates:
        raise ValueError("advice needs at least one candidate rollout shape")
    for c in candidates:
        if c.num_envs < 1 or c.num_steps < 1 or not _positive(c.seconds_per_iteration):
            raise ValueError(f"bad candidate {c}: num_envs and num_steps must be >= 1 and "
                             "seconds_per_iteration a finite number > 0")


def advise_from(noise: NoiseScaleEstimate, calibration: RatioCalibration,
                candidates: Sequence[Candidate], *, reference_batch_size: int | None = None,
                tolerance: float = TOLERANCE, band_sd: float = 1.0,
                notes: Sequence[str] = ()) -> Advice:
    """The advice: B_crit from B_simple and the ratio, the table over ``candidates``, the
    fastest and the most sample-efficient within ``tolerance`` of it, each with the range of
    picks over B_crit's band, and the speedup over ``reference_batch_size`` (default: the
    probe's batch; it must be a candidate's batch size, else the nearest one is used)."""
    _check_candidates(candidates)
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance}")
    pred = predict_b_crit(noise, calibration, band_sd)
    cands = sorted(candidates, key=lambda c: (c.rollout_batch_size, c.num_envs))
    ends = [pred.lo, pred.b_crit, pred.hi]
    # An open end of the band: evaluate there at a value beyond every candidate.
    sizes = [c.rollout_batch_size for c in cands]
    ends = [min(max(e, min(sizes) * 1e-6), max(sizes) * 1e6) for e in ends]
    walls = [relative_wall_clock(cands, e) for e in ends]
    rows = []
    for i, c in enumerate(cands):
        b = c.rollout_batch_size
        its = [relative_iterations(b, e) for e in ends]
        smp = [relative_samples(b, e) for e in ends]
        wall = [w[i] for w in walls]
        rows.append(CandidateRow(c.num_envs, c.num_steps, b, c.seconds_per_iteration,
                                 c.measured_seconds_per_iteration, its[1], min(its), max(its),
                                 smp[1], min(smp), max(smp), wall[1], min(wall), max(wall)))
    ref = reference_batch_size if reference_batch_size is not None else noise.rollout_batch_size
    ref_i = min(range(len(cands)), key=lambda i: (abs(math.log(sizes[i] / ref)), sizes[i]))
    picks = [pick(cands, e, tolerance) for e in ends]

    def recommendation(which: int, rule: str) -> Recommendation:
        chosen = [p[which] for p in picks]
        c = cands[chosen[1]]
        speed = []
        for e, k in zip(ends, chosen, strict=True):
            s_ref = relative_iterations(sizes[ref_i], e) * cands[ref_i].seconds_per_iteration
            s_k = relative_iterations(sizes[k], e) * cands[k].seconds_per_iteration
            speed.append(s_ref / s_k)
        return Recommendation(rule, c.num_envs, c.num_steps, c.rollout_batch_size,
                              min(sizes[k] for k in chosen), max(sizes[k] for k in chosen),
                              speed[1], min(speed), max(speed))

    return Advice(noise, calibration, pred, sizes[ref_i], tuple(rows),
                  recommendation(0, "fastest in wall-clock"),
                  recommendation(1, f"fewest agent steps within {tolerance:.0%} of the "
                                    "fastest"),
                  tolerance, tuple(notes))
