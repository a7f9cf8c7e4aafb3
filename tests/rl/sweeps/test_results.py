"""The sweep table's sharpness columns (from ``rlscale sharpness SWEEP_DIR``)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from rl.sweeps.results import SHARPNESS_FILE, read_results, with_sharpness


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
