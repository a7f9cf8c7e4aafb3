"""A stored sweep whose run directories were not kept (its results.csv and sweep.json only)
enters the study from its results table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rl.study.plan import Part
from rl.study.results import part_table
from rl.sweeps.results import result_columns
from rl.sweeps.spec import parse_spec, plan_runs
from rl.sweeps.state import write_sweep_state


def test_a_sweep_kept_as_its_results_table_is_fitted_from_it(tmp_path):
    spec = parse_spec({"env": "CartPole", "num_envs": [1, 2, 4, 8, 16, 32], "num_steps": 32,
                       "lrs": [1e-3], "seeds": 3, "targets": [100], "budget": "100k",
                       "out": str(tmp_path)})
    plans = plan_runs(spec)
    write_sweep_state(spec, plans)
    rng = np.random.default_rng(0)
    rows = []
    for p in plans:
        s = 20 * (1 + 256 / p.rollout_batch_size) * np.exp(0.05 * rng.standard_normal())
        row = dict.fromkeys(result_columns(spec.targets), np.nan)
        row.update(run=p.name, env="CartPole", rollout_batch_size=p.rollout_batch_size,
                   num_envs=p.num_envs, num_steps=p.num_steps, lr=p.lr, seed=p.seed,
                   status="finished", message="reached target", gns_split="",
                   **{"iterations_to_target_100": s,
                      "agent_steps_to_target_100": s * p.rollout_batch_size})
        rows.append(row)
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    part = Part("sweep", "CartPole", spec)
    table = part_table(part)
    assert len(table) == len(plans) and (table["status"] == "finished").all()
    # With a run directory present the runs are read instead (a sweep in progress).
    (tmp_path / "runs" / plans[0].name).mkdir(parents=True)
    assert (part_table(part)["status"] == "pending").sum() >= len(plans) - 1
