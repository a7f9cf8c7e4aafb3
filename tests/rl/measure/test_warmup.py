"""The warm-up rule (rl/measure/warmup.py) and the segment table that applies it, on a
synthetic run with a known start-up transient (tests/rl/measure/transient.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rl.measure import warmup
from rl.measure.ppo_noise import noise_scale_by_segment
from rl.measure.warmup import (
    WARMUP_ITERATIONS,
    after_warmup,
    counted_measurements,
    counted_rows,
)
from tests.rl.measure.transient import B_TRUE, TRANSIENT_ITERATIONS, Z, ratio_sd, transient_run


def test_rule_counts_training_progress_not_measurements():
    assert TRANSIENT_ITERATIONS <= WARMUP_ITERATIONS  # the synthetic transient is inside it
    assert not after_warmup(0) and not after_warmup(WARMUP_ITERATIONS - 1)
    assert after_warmup(WARMUP_ITERATIONS)
    # The same first counted iteration at every cadence: row iteration W + 1 or later.
    for every in (1, 2, 4, 10):
        m = counted_measurements(transient_run(60, every=every), "total")
        measured = [i for i in range(1, 61) if (i - 1) % every == 0]
        assert list(m["iteration"]) == [i for i in measured if i > WARMUP_ITERATIONS]
    rows = pd.DataFrame({"iteration": [1, WARMUP_ITERATIONS, WARMUP_ITERATIONS + 1, np.nan]})
    assert counted_rows(rows).tolist() == [False, False, True, False]
    with pytest.raises(ValueError, match="iteration column"):
        counted_rows(pd.DataFrame({"agent_steps": [1]}))


def test_counted_measurements_keep_order_and_drop_non_finite_estimates():
    m = transient_run(30)
    m.loc[m["iteration"] == 15, "gns/policy/g2"] = np.nan
    m.loc[m["iteration"] == 16, "gns/policy/trace_sigma"] = np.inf
    got = counted_measurements(m, "policy")
    assert list(got["iteration"]) == [i for i in range(11, 31) if i not in (15, 16)]
    assert list(got.columns) == ["g2", "trace_sigma", "iteration", "agent_steps",
                                 "return_recent"]
    assert counted_measurements(m, "absent").empty


def test_segments_exclude_the_transient_and_recover_the_known_ratio():
    m = transient_run(400)
    table = noise_scale_by_segment(m, segments=4)
    counted = 400 - WARMUP_ITERATIONS
    assert table["measurements"].sum() == 3 * counted
    assert table["iteration_first"].min() == WARMUP_ITERATIONS + 1
    for row in table.itertuples():
        assert abs(row.b_simple - B_TRUE) < Z * ratio_sd(row.measurements), row
        assert row.b_simple_lo <= row.b_simple <= row.b_simple_hi
        assert row.fieller_lo <= row.b_simple <= row.fieller_hi
        assert not row.heavy_tailed  # normal estimates
    whole = noise_scale_by_segment(m, segments=1)
    assert (whole["b_simple"] - B_TRUE).abs().max() < Z * ratio_sd(counted)
    # The same average with the warm-up rows in: the transient's 100x |G|^2 pulls it far
    # outside the tolerance (what the rule is for; this is how the check above can fail).
    for term in ("total", "value"):
        g2, tr = m[f"gns/{term}/g2"].dropna(), m[f"gns/{term}/trace_sigma"].dropna()
        assert abs(tr.mean() / g2.mean() - B_TRUE) > 2 * Z * ratio_sd(len(g2))


def test_changing_the_rule_changes_every_caller(monkeypatch):
    # One constant: the callers read it at call time (tests shorten the warm-up this way).
    m = transient_run(40)
    monkeypatch.setattr(warmup, "WARMUP_ITERATIONS", 0)
    assert noise_scale_by_segment(m, segments=1)["measurements"].iloc[0] == 40
    monkeypatch.setattr(warmup, "WARMUP_ITERATIONS", 20)
    assert noise_scale_by_segment(m, segments=1)["measurements"].iloc[0] == 20
    with pytest.raises(ValueError, match="after the warm-up"):
        noise_scale_by_segment(transient_run(22), segments=4)


def test_rows_that_carry_their_updates_use_them():
    # A supervised run's rows carry the optimizer steps done before each measurement
    # (gns/updates_done = the row's iteration); PPO rows measure before their update.
    rows = pd.DataFrame({"iteration": [0, WARMUP_ITERATIONS - 1, WARMUP_ITERATIONS, 40],
                         warmup.UPDATES_COLUMN: [0, WARMUP_ITERATIONS - 1, WARMUP_ITERATIONS,
                                                 40]})
    assert counted_rows(rows).tolist() == [False, False, True, True]
    assert counted_rows(rows.drop(columns=warmup.UPDATES_COLUMN)).tolist() == \
        [False, False, False, True]
    assert counted_rows(pd.DataFrame({warmup.UPDATES_COLUMN: [3, 12]})).tolist() == \
        [False, True]
