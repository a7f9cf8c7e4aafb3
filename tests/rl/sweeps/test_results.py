"""The sweep table's sharpness columns (from ``rlscale sharpness SWEEP_DIR``) and its
run-averaged noise scale (after the warm-up, rl/measure/warmup.py)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from rl.measure.ppo_noise import EMA_BETA
from rl.measure.run_average import ema_ratios
from rl.measure.warmup import WARMUP_ITERATIONS
from rl.runs.storage import RunDir
from rl.sweeps.results import (
    SHARPNESS_FILE,
    b_simple_curve,
    read_results,
    run_row,
    with_sharpness,
)
from rl.sweeps.spec import parse_spec, plan_runs
from tests.rl.measure.transient import B_TRUE, Z, ema_ratio_sd, ratio_sd, transient_run


def test_sharpness_columns_are_per_run_means_over_repeats(tmp_path):
    table = pd.DataFrame({"run": ["a", "b", "c"], "rollout_batch_size": [64, 128, 256],
                          "message": ["", "", ""]})
    table.to_csv(tmp_path / "results.csv", index=False)
    assert list(read_results(tmp_path).columns) == list(table.columns)  # nothing measured yet
    rows = []
    for run, base in (("a", 1.0), ("b", 10.0)):  # c was not measured
        for term, scale in (("policy", 1.0), ("value", 100.0)):
            for rep, delta in enumerate((-1.0, 1.0, 3.0)):
                rows.append({"term": term, "repeat": rep, "top_eigenvalue": scale * (base + delta),
                             "eps_sharpness_0.001": base + delta + scale,
                             "eps_sharpness_0.0005": -1.0, "run": run})
    pd.DataFrame(rows).to_csv(tmp_path / SHARPNESS_FILE, index=False)
    df = read_results(tmp_path).set_index("run")
    assert df.loc["a", "top_eigenvalue_policy"] == pytest.approx(2.0)
    assert df.loc["b", "top_eigenvalue_value"] == pytest.approx(1100.0)
    assert df.loc["a", "eps_sharpness_value"] == pytest.approx(102.0)  # the first eps column
    assert df.loc["b", "eps_sharpness_policy"] == pytest.approx(12.0)
    assert all(math.isnan(df.loc["c", c]) for c in ("top_eigenvalue_policy",
                                                     "eps_sharpness_value"))
    # Applying it again replaces the columns rather than duplicating them.
    again = with_sharpness(df.reset_index(), tmp_path)
    assert list(again.columns) == list(df.reset_index().columns)


# --- the noise scale of a run: the warm-up rule (rl/measure/warmup.py) --------------------


def _fake_sweep_run(tmp_path, metrics: pd.DataFrame):
    spec = parse_spec({"env": "CartPole", "num_envs": [8], "num_steps": 128, "targets": [5],
                       "out": str(tmp_path), "train": {"return_window": 1}})
    (plan,) = plan_runs(spec)
    run = RunDir.create(plan.run_dir, plan.stored_config())
    for row in metrics.to_dict("records"):
        run.append_metrics({k: v for k, v in row.items() if v == v})  # NaN: column absent
    run.write_status("finished", message="")
    return plan, spec


def test_run_average_leaves_out_the_startup_transient(tmp_path):
    metrics = transient_run(200, every=2)  # rows 1, 3, 5, ...; rows 1-3 carry 100x |G|^2
    plan, spec = _fake_sweep_run(tmp_path, metrics)
    row = run_row(plan, spec.targets)
    counted = len([i for i in range(1, 201, 2) if i > WARMUP_ITERATIONS])
    assert row["gns_measurements"] == counted
    for term in ("total", "policy", "value"):
        assert abs(row[f"b_simple_{term}"] - B_TRUE) < Z * ratio_sd(counted), term
    # With the two transient rows averaged in, the same value would miss by far more.
    g2, tr = metrics["gns/total/g2"].dropna(), metrics["gns/total/trace_sigma"].dropna()
    assert abs(tr.mean() / g2.mean() - B_TRUE) > 2 * Z * ratio_sd(len(g2))


def test_b_simple_curve_is_recomputed_from_the_rows_after_the_warmup():
    metrics = transient_run(100)
    metrics["gns/total/b_simple_ema"] = 1.0  # a stored column (old runs): never read
    curve = b_simple_curve(metrics, "total")
    counted = metrics[metrics["iteration"] > WARMUP_ITERATIONS]
    assert len(curve) == len(counted)
    np.testing.assert_array_equal(curve["return_recent"], counted["return_recent"])
    np.testing.assert_allclose(curve["b_simple"], ema_ratios(
        counted["gns/total/g2"], counted["gns/total/trace_sigma"], EMA_BETA))
    # After 50 counted measurements the smoothed ratio is within Z sd of the truth; the same
    # smoothing fed the transient rows too is pulled far below it (their 100x |G|^2 still
    # holds about 3 x 100 x 0.01 x 0.99^50 / (1 - 0.99^53) = 4.4 of the smoothed |G|^2).
    assert abs(curve["b_simple"].iloc[49] - B_TRUE) < Z * ema_ratio_sd(50, EMA_BETA)
    fed_all = ema_ratios(metrics["gns/total/g2"], metrics["gns/total/trace_sigma"], EMA_BETA)
    assert abs(fed_all[WARMUP_ITERATIONS + 49] - B_TRUE) > Z * ema_ratio_sd(50, EMA_BETA)
    assert b_simple_curve(metrics, "absent").empty
