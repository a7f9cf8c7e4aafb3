"""`rlscale fit` on a stored results table: bounds, lack of fit, the floor, the notes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rl.cli import main
from rl.measure.floor import UntrainedFloor
from rl.sweeps.state import write_floor_file

B = 128.0 * 2.0 ** np.arange(6)


def _results(tmp_path, b_crit_by_target, seeds=3, sigma=0.05, tau=0.0, lrs=(1e-3,)):
    """A sweep directory with only results.csv (the runs were not kept)."""
    rng = np.random.default_rng(0)
    rows = []
    for j, b in enumerate(B):
        shift = tau * rng.standard_normal()
        for lr in lrs:
            for seed in range(seeds):
                noise = np.exp(shift + sigma * rng.standard_normal())
                row = dict(run=f"r{j}-{lr}-{seed}", env="Game", rollout_batch_size=b,
                           num_envs=int(b // 128), num_steps=128, lr=lr, seed=seed,
                           status="finished", message="", b_simple_total=np.nan,
                           b_simple_policy=np.nan, b_simple_value=np.nan, gns_split="")
                for t, b_crit in b_crit_by_target.items():
                    s = 100 * t * (1 + b_crit / b) * noise
                    row[f"iterations_to_target_{t:g}"] = s
                    row[f"agent_steps_to_target_{t:g}"] = s * b
                rows.append(row)
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    return tmp_path


def test_bound_and_floor_and_notes(tmp_path, capsys):
    sweep = _results(tmp_path, {2.5: 700.0, 5: 1000.0, 10: 3000.0}, tau=0.2, seeds=2)
    floor = UntrainedFloor(floor=3.0, mean=1.2, sd=1.5, skew=2.0, games=200, window=20, z=5,
                           seed=0)
    write_floor_file(sweep, {"format": 1, "envs": {"Game": floor.to_dict()}})
    code = main(["fit", str(sweep), "--no-plots", "--n-boot", "50"])
    out = capsys.readouterr().out
    fit = pd.read_csv(sweep / "fit.csv", keep_default_na=False).set_index("target")
    assert fit.loc[2.5, "kind"] == "target_below_floor"
    assert fit.loc[10, "kind"] == "lower_bound" and fit.loc[10, "bound"] == ">="
    assert ">= " in out and "untrained play" in out and "one learning rate per batch" in out
    assert "seed-only interval" in out  # 2 seeds
    assert code == 1  # target 2.5 has neither a number nor a bound


def test_measured_b_crit_exits_zero_and_flags_the_lr_edge(tmp_path, capsys):
    sweep = _results(tmp_path, {5: 1000.0}, lrs=(5e-4, 1e-3))
    # Make the larger lr faster everywhere: the best lr sits at the grid's top edge.
    df = pd.read_csv(sweep / "results.csv")
    df.loc[df["lr"] == 5e-4, "iterations_to_target_5"] *= 1.5
    df.to_csv(sweep / "results.csv", index=False)
    assert main(["fit", str(sweep), "--no-plots", "--n-boot", "50"]) == 0
    out = capsys.readouterr().out
    fit = pd.read_csv(sweep / "fit.csv", keep_default_na=False).iloc[0]
    assert bool(fit["ok"]) and "(high)" in fit["lr_at_edge"]
    assert "extend the grid" in out and "no untrained-play floor" in out
