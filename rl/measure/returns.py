"""The smoothed episodic return and the one rule for "the run reached the target".

The smoothed return is the mean return of the last ``window`` finished games (all
environments, all ranks). A target counts as reached once ``window`` games have finished
and that mean is at least the target. ``SmoothedReturn`` applies the rule while training;
``first_reach`` applies the same rule to a run's metrics table afterwards.
See docs/critical-batch.md.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

import numpy as np
import pandas as pd


def reached(mean: float, games: int, window: int, target: float | None) -> bool:
    """The target rule: ``window`` games finished and their mean return >= ``target``."""
    return target is not None and games >= window and mean >= target


class SmoothedReturn:
    """The returns of the last ``window`` finished games."""

    def __init__(self, window: int, returns: Iterable[float] = ()):
        self.window = int(window)
        self.returns: deque[float] = deque(returns, maxlen=self.window)

    def extend(self, returns: Iterable[float]) -> None:
        self.returns.extend(returns)

    @property
    def mean(self) -> float:
        """Mean of the kept returns (NaN before the first game ends)."""
        return float(np.mean(self.returns)) if self.returns else math.nan

    def reached(self, target: float | None) -> bool:
        return reached(self.mean, len(self.returns), self.window, target)

    def __len__(self) -> int:
        return len(self.returns)


def first_reach(metrics: pd.DataFrame, target: float, window: int) -> int | None:
    """Position of the first metrics row that reaches ``target`` by the rule, or None.

    A row's game count is ``episodes_total`` (games finished so far, all environments)."""
    if metrics.empty or "return_recent" not in metrics:
        return None
    ret = pd.to_numeric(metrics["return_recent"], errors="coerce").to_numpy(float)
    games = metrics["episodes_total"].to_numpy(float)
    hit = np.flatnonzero((games >= window) & (ret >= target))
    return int(hit[0]) if hit.size else None
