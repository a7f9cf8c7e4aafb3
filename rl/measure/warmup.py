"""Which noise-scale measurements count toward averages: the warm-up rule.

One rule for every average of a run's measurements (run, segment, return bin, EMA, window,
the adaptive schedule's input); the raw rows stay in the metrics. Why 10 PPO iterations:
docs/noise-scale.md, "Warm-up".
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["UPDATES_COLUMN", "WARMUP_ITERATIONS", "after_warmup", "counted_measurements",
           "counted_rows"]

WARMUP_ITERATIONS = 10
"""PPO updates a run must have done before one of its noise-scale measurements counts
toward any average (a supervised run: optimizer steps). Counted in training progress, not in
measurements, so that it means the same at any ``gns_every``."""

UPDATES_COLUMN = "gns/updates_done"
"""Metrics column of the updates done before a row's measurement, where the rows carry it (a
supervised run's rows: its optimizer steps); PPO rows leave it out (``iteration`` - 1)."""


def after_warmup(updates_done: int) -> bool:
    """Whether a measurement taken after ``updates_done`` PPO updates counts.

    The trainer measures at the start of its 0-based iteration i, after i updates; that
    iteration's metrics row has ``iteration`` = i + 1.
    """
    return updates_done >= WARMUP_ITERATIONS


def counted_rows(metrics: pd.DataFrame) -> np.ndarray:
    """Boolean mask of the metrics rows whose measurement (if any) counts toward averages:
    ``UPDATES_COLUMN`` >= ``WARMUP_ITERATIONS`` where the rows carry that column, else
    ``iteration`` - 1 >= it (a PPO row's measurement comes before its iteration's update).

    Raises:
        ValueError: if the metrics have neither column (the rule needs one).
    """
    if UPDATES_COLUMN in metrics:
        updates = pd.to_numeric(metrics[UPDATES_COLUMN], errors="coerce").to_numpy(float)
    elif "iteration" in metrics:
        updates = pd.to_numeric(metrics["iteration"], errors="coerce").to_numpy(float) - 1
    else:
        raise ValueError("the metrics have no iteration column: the warm-up rule counts PPO "
                         "iterations (docs/noise-scale.md, 'Warm-up')")
    with np.errstate(invalid="ignore"):
        return updates >= WARMUP_ITERATIONS


def counted_measurements(metrics: pd.DataFrame, term: str) -> pd.DataFrame:
    """The measurements of ``term`` that count: rows after the warm-up with finite
    ``gns/{term}/g2`` and ``gns/{term}/trace_sigma``, in run order.

    Columns g2, trace_sigma, and iteration, agent_steps, return_recent where the metrics
    have them (as floats, NaN where missing). Empty when the term was never measured.
    """
    g2_col, tr_col = f"gns/{term}/g2", f"gns/{term}/trace_sigma"
    extra = [c for c in ("iteration", "agent_steps", "return_recent") if c in metrics]
    if g2_col not in metrics or tr_col not in metrics:
        return pd.DataFrame(columns=["g2", "trace_sigma", *extra], dtype=float)
    keep = counted_rows(metrics)
    m = metrics.loc[keep, [g2_col, tr_col, *extra]].apply(pd.to_numeric, errors="coerce")
    m = m.rename(columns={g2_col: "g2", tr_col: "trace_sigma"}).astype(float)
    finite = np.isfinite(m["g2"].to_numpy()) & np.isfinite(m["trace_sigma"].to_numpy())
    return m[finite]
