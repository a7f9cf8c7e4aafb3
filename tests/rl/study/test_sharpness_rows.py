"""The study's sharpness rows (#25): both extreme eigenvalues, unconverged ones counted out."""

from __future__ import annotations

import math

import pandas as pd

from rl.study import results


def test_unconverged_eigenvalues_are_left_out_and_said_so(tmp_path):
    path = tmp_path / "sharpness.csv"
    rows = [dict(term="policy", rollout_batch_size=b, repeat=r,
                 top_eigenvalue=math.nan if (b, r) == (512, 0) else 1.0 + r,
                 min_eigenvalue=-0.5, **{"eps_sharpness_0.001": 0.1})
            for b in (256, 512, 1024) for r in range(3)]
    pd.DataFrame(rows).to_csv(path, index=False)
    out = pd.DataFrame(results._sharpness_rows("Game", "rl", path, "rollout_batch_size",
                                               "agent steps"))
    top = out[(out["quantity"] == "top_eigenvalue") & (out["batch_size"] == 512)].iloc[0]
    assert top["n"] == 2 and top["value"] == 2.5  # the repeats 1 and 2: 2.0 and 3.0
    assert "largest Hessian eigenvalue" in top["note"]
    assert "1 of 3 did not converge and are left out" in top["note"]
    other = out[(out["quantity"] == "top_eigenvalue") & (out["batch_size"] == 256)].iloc[0]
    assert other["n"] == 3 and "did not converge" not in other["note"]
    assert set(out["quantity"]) >= {"min_eigenvalue", "min_eigenvalue_trend", "eps_sharpness"}
