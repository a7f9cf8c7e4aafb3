"""`rlscale fit` on a stored results table (bounds, lack of fit, the floor, the notes) and on a
sweep directory with its runs (damaged or foreign runs are errors)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from rl.cli import main
from rl.measure.floor import UntrainedFloor
from rl.runs.storage import RunDir
from rl.sweeps.results import results_table, write_results
from rl.sweeps.spec import parse_spec, plan_runs
from rl.sweeps.state import write_floor_file, write_sweep_state

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


# --- a sweep directory with its run directories (#24 items 5, 6) -------------------------


def _run_dirs(out, lrs=(1e-3,), b_crit=64.0):
    """A sweep directory as `rlscale sweep` leaves it: sweep.json, finished run directories
    whose smoothed return reaches 10 after S = 20 (1 + b_crit / B) iterations, and the
    stored tables. Metrics are written as lines (no training)."""
    spec = parse_spec({"env": "CartPole", "num_envs": [1, 2, 4, 8, 16], "num_steps": 16,
                       "seeds": 2, "lrs": list(lrs), "targets": [10], "out": str(out),
                       "train": {"return_window": 1}})
    plans = plan_runs(spec)
    write_sweep_state(spec, plans)
    for p in plans:
        run = RunDir.create(p.run_dir, p.stored_config())
        s = 20 * (1 + b_crit / p.rollout_batch_size) * (1 + 0.05 * p.seed)
        rows = [dict(iteration=i, agent_steps=i * p.rollout_batch_size, episodes_total=i,
                     return_recent=10 * i / s) for i in range(1, int(s) + 3)]
        (Path(p.run_dir) / "metrics.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows))
        run.write_status("finished", message="reached target")
    write_results(out, results_table(plans, spec.targets))
    return spec, plans


def test_a_damaged_metrics_file_is_an_error_not_the_older_stored_table(tmp_path, capsys):
    _, plans = _run_dirs(tmp_path)
    metrics = Path(plans[3].run_dir) / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text("".join(lines[:2]) + '{"iteration": 3, "agent_st\n' + "".join(lines[3:]))
    assert main(["fit", str(tmp_path), "--no-plots", "--n-boot", "20"]) == 2
    err = capsys.readouterr().err
    assert f"{metrics}:3" in err and "restore it" in err and err.count("\n") == 1
    assert not (tmp_path / "fit.csv").exists()


def test_a_stored_sweep_without_run_directories_fits_its_results_csv(tmp_path, capsys):
    _run_dirs(tmp_path)
    (tmp_path / "results.parquet").unlink()
    shutil.rmtree(tmp_path / "runs")  # kept only as sweep.json and results.csv
    assert main(["fit", str(tmp_path), "--no-plots", "--n-boot", "20"]) == 0
    fit = pd.read_csv(tmp_path / "fit.csv").iloc[0]
    assert bool(fit["ok"]) and fit["n_batch_sizes"] == 5


def test_a_run_copied_from_another_sweep_is_refused_as_by_the_sweep(tmp_path, capsys):
    _, plans = _run_dirs(tmp_path / "this")
    _, others = _run_dirs(tmp_path / "other", lrs=(5e-4,), b_crit=4.0)
    # The other sweep's run, under this sweep's name for it (same B and seed, another lr).
    shutil.rmtree(plans[4].run_dir)
    shutil.copytree(others[4].run_dir, plans[4].run_dir)
    assert main(["fit", str(tmp_path / "this"), "--no-plots", "--n-boot", "20"]) == 2
    err = capsys.readouterr().err
    assert plans[4].name in err and "ppo.learning_rate: stored 0.0005 != planned 0.001" in err
    assert "move it out" in err and not (tmp_path / "this" / "fit.csv").exists()
