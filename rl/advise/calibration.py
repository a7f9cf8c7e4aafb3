"""The ratio B_crit / B_simple and the growth of B_simple, read from the committed study.

Source: reference/study-protocol/results.csv (``rlscale compare``; RESULTS.md, "Across
tasks"): the per-task ratios of ``rl.study.crosstask`` pooled again here, so that a task can
be left out (the validation in reference/advice-validation/).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rl.advise.predict import RatioCalibration
from rl.measure.ppo_noise import TERMS
from rl.study.crosstask import PREDICTION_CI, predict_ratio, ratio_table, study_points

__all__ = ["DEFAULT_STUDY", "GrowthExponent", "TERM", "best_term", "growth_exponents",
           "growth_note", "load_study", "ratio_calibration"]

DEFAULT_STUDY = Path(__file__).resolve().parents[2] / "reference" / "study-protocol" / \
    "results.csv"
"""The committed study's results table (a repository checkout; pass another path to use
another study)."""

TERM = "value"
"""The loss term whose B_simple predicts B_crit best in the committed study (RESULTS.md);
``best_term`` reads it from a study's table."""


def load_study(path: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """The study's results table; FileNotFoundError naming the file and how to make it."""
    p = Path(path) if path is not None else DEFAULT_STUDY
    if not p.is_file():
        raise FileNotFoundError(
            f"no study results at {p}: advice needs the ratio B_crit / B_simple from a study "
            "(reference/study-protocol/results.csv in a checkout, or `rlscale compare` output; "
            "--study PATH)")
    return pd.read_csv(p)


def ratio_calibration(study: pd.DataFrame, term: str = TERM, *,
                      leave_out: Sequence[str] = (), ci: float = PREDICTION_CI,
                      source: str = "") -> RatioCalibration:
    """B_crit / B_simple of ``term`` over the study's RL tasks with a measured B_crit (each
    against B_simple up to its headline target), leaving out ``leave_out``.

    Raises:
        ValueError: if no task remains.
    """
    ratios = ratio_table(study_points(study))
    ratios = ratios[(ratios["kind"] == "rl") & ~ratios["task"].isin(list(leave_out))]
    p = predict_ratio(ratios, term, ci)
    if p.n_tasks == 0:
        raise ValueError(f"the study has no RL task with a measured B_crit and a {term}-loss "
                         f"B_simple (left out: {', '.join(leave_out) or 'none'})")
    where = source or "reference/study-protocol/results.csv"
    text = (f"{where}: B_crit / B_simple ({term} loss, B_simple up to each task's headline "
            f"target) over {', '.join(p.tasks)}")
    return RatioCalibration(term, p.ratio, p.spread if math.isfinite(p.spread) else 0.0,
                            p.lo, p.hi, ci, tuple(p.tasks), text)


def best_term(study: pd.DataFrame, min_tasks: int = 3) -> str:
    """The loss term whose B_crit / B_simple spreads least across the study's RL tasks
    (``rl.study.crosstask.verdict``'s rule); ``TERM`` when no term has ``min_tasks`` tasks."""
    ratios = ratio_table(study_points(study))
    ratios = ratios[ratios["kind"] == "rl"]
    found = [predict_ratio(ratios, t) for t in TERMS]
    usable = [p for p in found if p.n_tasks >= min_tasks and math.isfinite(p.spread)]
    return min(usable, key=lambda p: p.spread).term if usable else TERM


@dataclass(frozen=True)
class GrowthExponent:
    """B_simple ~ return^k along training runs of one task (``k`` with its 95% interval)."""

    task: str
    term: str
    exponent: float
    lo: float
    hi: float


def growth_exponents(study: pd.DataFrame, term: str = TERM) -> list[GrowthExponent]:
    """The measured exponents of B_simple in the smoothed return (tasks with one)."""
    rows = study[(study["quantity"] == "b_simple_exponent") & (study["term"] == term)
                 & (study["source"] == "measured")]
    out = []
    for _, r in rows.iterrows():
        if pd.notna(r["value"]):
            out.append(GrowthExponent(str(r["task"]), term, float(r["value"]),
                                      float(r["lo"]), float(r["hi"])))
    return out


def growth_note(exponents: Sequence[GrowthExponent], env: str | None = None) -> str:
    """In plain words: B_simple grows as the agent improves, so a higher target wants a
    larger batch; the measured exponent for ``env`` where the study has one, else the
    study's range."""
    head = ("B_simple grows as the agent improves: this advice holds for the stretch of "
            "training the probe saw, and a higher target wants a larger batch")
    mine = [e for e in exponents if env is not None and e.task == env]
    if mine:
        e = mine[0]
        return (f"{head} (measured for {e.task}: B_simple ~ return^{e.exponent:.2g}, 95% "
                f"[{e.lo:.2g}, {e.hi:.2g}], {e.term} loss).")
    if exponents:
        parts = ", ".join(f"{e.task} {e.exponent:.2g}" for e in exponents)
        return (f"{head} (exponent of B_simple in the return, {exponents[0].term} loss, "
                f"measured on other tasks: {parts}; none for this one).")
    return head + " (no exponent measured)."
