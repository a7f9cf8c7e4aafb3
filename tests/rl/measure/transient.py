"""A synthetic noise-scale run with a known start-up transient, for the warm-up tests.

Steady measurements: |G|^2 estimates ~ N(MU_G2, SD_G2^2) and tr(Sigma) estimates ~
N(MU_TRACE, SD_TRACE^2), independent, so the true B_simple is B_TRUE = MU_TRACE / MU_G2. The
first TRANSIENT_ITERATIONS iterations (all inside the warm-up) carry |G|^2 at
TRANSIENT_FACTOR x MU_G2, as the value head fitting its initial offset does in Breakout.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

MU_G2, SD_G2 = 1.0, 0.5
MU_TRACE, SD_TRACE = 200.0, 60.0
B_TRUE = MU_TRACE / MU_G2
TRANSIENT_ITERATIONS = 3
TRANSIENT_FACTOR = 100.0
TERMS = ("total", "policy", "value")
Z = 5.0
"""Tolerance of the ratio checks, in ``ratio_sd``: the ratio of two normal means has a heavier
tail than the normal (through 1 / mean g2); simulated for 98 measurements of this run,
P(|error| > 5 sd) = 2e-5 per check."""


def transient_run(n_iterations: int = 400, every: int = 1, seed: int = 0) -> pd.DataFrame:
    """Metrics rows 1..n_iterations; iteration i is measured when (i - 1) % every == 0 (the
    trainer's cadence). return_recent rises linearly with the iteration, so the transient
    sits in the lowest return bin as well as in the first quarter."""
    rng = np.random.default_rng(seed)
    rows = []
    for it in range(1, n_iterations + 1):
        row = {"iteration": it, "agent_steps": 1024 * it, "episodes_total": 2 * it,
               "return_recent": 0.05 * it}
        if (it - 1) % every == 0:
            for term in TERMS:
                mean = MU_G2 * (TRANSIENT_FACTOR if it <= TRANSIENT_ITERATIONS else 1.0)
                row[f"gns/{term}/g2"] = mean + SD_G2 * rng.normal()
                row[f"gns/{term}/trace_sigma"] = MU_TRACE + SD_TRACE * rng.normal()
            row["gns/split_envs"] = 1
        rows.append(row)
    return pd.DataFrame(rows)


def ratio_sd(n: int) -> float:
    """Delta-method standard deviation of mean(trace) / mean(g2) over n steady measurements:
    sqrt(SD_TRACE^2 + B_TRUE^2 SD_G2^2) / (MU_G2 sqrt(n)) (independent g2 and trace)."""
    return math.sqrt(SD_TRACE**2 + B_TRUE**2 * SD_G2**2) / (MU_G2 * math.sqrt(n))


def ema_ratio_sd(n: int, beta: float) -> float:
    """The same for the ratio of the bias-corrected EMAs after n measurements: the EMA is a
    weighted mean with weights w_i = (1 - beta) beta^(n - i) / (1 - beta^n), so n is replaced
    by the effective count 1 / sum w_i^2."""
    w = (1 - beta) * beta ** np.arange(n)[::-1] / (1 - beta**n)
    return ratio_sd(1) * math.sqrt(float(np.sum(w**2)))
