"""Tests for sweeps: spec validation, run plan, results table, local executor, restart
after SIGKILL, and the critical-batch fit of a small CartPole sweep."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rl.analysis.sweep_fits import fit_sweep
from rl.measure import warmup
from rl.measure.warmup import WARMUP_ITERATIONS
from rl.runs.metrics import load_metrics
from rl.runs.storage import RunDir
from rl.sweeps.executors import LocalExecutor, run_sweep
from rl.sweeps.protocol import TargetBelowFloorError
from rl.sweeps.results import (
    RESULT_TIMING_COLUMNS,
    long_results,
    read_results,
    result_columns,
    run_row,
)
from rl.sweeps.settings import SweepSpecError, SweepStateError
from rl.sweeps.spec import load_spec, parse_spec, plan_runs, spec_to_raw
from rl.sweeps.state import classify_run, read_events
from rl.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[3]
HAS_GNS = "gns_every" in {f.name for f in dataclasses.fields(TrainConfig)}

# The test sweep: classic preset, B = num_envs x 32 = 64 ... 1024 agent steps (B_crit of
# CartPole at return 100 is a few hundred), 2 seeds, one lr. Runs stop at return 100, a
# few seconds each. Constant lr, so steps-to-target do not depend on the budget.
SPEC_TOML = """
env = "CartPole"
num_envs = [2, 4, 8, 16, 32]
num_steps = 32
seeds = [0, 1]
lrs = [1e-3]
targets = [50, 100]
budget = 20000
parallel = 2
out = "{out}"

[ppo]
anneal_lr = false

[train]
checkpoint_every = 10
{gns}
"""


def write_spec(path: Path, out: Path) -> Path:
    path.write_text(SPEC_TOML.format(out=out, gns="gns_every = 5" if HAS_GNS else ""))
    return path


BASE = dict(env="CartPole", num_envs=[2, 4], num_steps=32, targets=[100], out="unused")


def problems_of(**changes) -> str:
    raw = {**BASE, **changes}
    raw = {k: v for k, v in raw.items() if v is not None}
    with pytest.raises(SweepSpecError) as info:
        parse_spec(raw)
    return str(info.value)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "changes, expected",
    [
        # unknown keys, with close names suggested
        (dict(num_env=[1, 2]), ["unknown key 'num_env'", "did you mean 'num_envs'"]),
        (dict(ppo={"num_epoch": 4}), ["ppo.num_epoch is not a PPOConfig field",
                                      "did you mean 'num_epochs'"]),
        (dict(train={"checkpoint_evry": 4}), ["did you mean 'checkpoint_every'"]),
        # fields the sweep sets itself
        (dict(ppo={"learning_rate": 1e-3}), ["ppo.learning_rate is set by the sweep",
                                             "use the sweep key lrs"]),
        (dict(train={"seed": 3}), ["train.seed is set by the sweep", "seeds"]),
        (dict(ppo={"num_epochs": "4"}), ["ppo.num_epochs = '4' has the wrong type",
                                         "expected int"]),
        # batch sizes that cannot be formed
        (dict(num_envs=[0, 2]), ["num_envs must hold positive integers", "bad value(s): 0"]),
        (dict(num_envs=[2, -4]), ["bad value(s): -4"]),
        (dict(ppo={"num_minibatches": 3}), [
            "batch size 64 (num_envs=2 x num_steps=32) on CartPole",
            "not divisible by num_minibatches=3"]),
        (dict(num_steps=[16, 32]), ["num_steps has 2 values but vary = 'num_envs' keeps it "
                                    "fixed", "set vary = 'num_steps'"]),
        (dict(vary="num_steps"), ["num_envs has 2 values but vary = 'num_steps'"]),
        (dict(budget=100), ["budget 100 agent steps is less than one rollout of batch size(s) "
                            "128 on CartPole", "at least 128"]),
        # empty grids
        (dict(num_envs=[]), ["num_envs is empty"]),
        (dict(lrs=[]), ["lrs is empty"]),
        (dict(targets=[]), ["targets is empty"]),
        (dict(seeds=[]), ["seeds is empty"]),
        (dict(env=[]), ["env is empty"]),
        # duplicates
        (dict(num_envs=[2, 4, 2]), ["num_envs has duplicate values 2", "list each value once"]),
        (dict(lrs=[1e-3, 1e-3]), ["lrs has duplicate values 0.001"]),
        (dict(seeds=[0, 1, 1]), ["seeds has duplicate values 1"]),
        (dict(targets=[100, 100.0]), ["targets has duplicate values 100"]),
        (dict(env=["CartPole", "CartPole-v1"]), ["env lists 'CartPole' more than once"]),
        # targets unreachable by definition
        (dict(targets=[200, 501]), ["target(s) 501 can never be reached on CartPole",
                                    "at most 500", "use targets <= 500"]),
        (dict(env="Pong", num_steps=128, targets=[22]), ["can never be reached on Pong",
                                                          "at most 21"]),
        (dict(env="Acrobot", targets=[10]), ["can never be reached on Acrobot"]),
        # other mistakes
        (dict(env="CartPol"), ["env 'CartPol'", "Did you mean: CartPole"]),
        (dict(targets=None), ["targets is missing"]),
        (dict(out=None), ["out is missing"]),
        (dict(lr_rule="sqrt"), ["lr_rule = 'sqrt' needs base_batch_size"]),
        (dict(lr_rule="cubic"), ["lr_rule 'cubic' is unknown", "constant, sqrt, linear"]),
        (dict(base_batch_size=256), ["base_batch_size is only used with lr_rule"]),
        (dict(lrs=[1e-3], base_lr=1e-3), ["either lrs or base_lr"]),
        (dict(lrs=[0.0]), ["lrs must hold positive numbers"]),
        (dict(parallel=0), ["parallel must be a positive integer"]),
        (dict(backend="slurm"), ["backend must be one of local, ray"]),
        (dict(budget="lots"), ["budget must be a positive number of agent steps"]),
    ],
)
def test_spec_errors(changes, expected):
    msg = problems_of(**changes)
    for part in expected:
        assert part in msg, f"{part!r} not in:\n{msg}"


def test_spec_reports_every_problem_at_once():
    with pytest.raises(SweepSpecError) as info:
        parse_spec({**BASE, "num_env": 1, "targets": [600], "seeds": [1, 1]})
    assert len(info.value.problems) == 3
    assert "3 problem(s)" in str(info.value)


def test_toml_syntax_error_names_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("env = [CartPole\n")
    with pytest.raises(SweepSpecError, match="(?s)bad.toml.*not valid TOML"):
        load_spec(path)


def test_known_max_return_allows_the_max_and_unknown_envs_pass():
    assert parse_spec({**BASE, "targets": [500]}).targets == [500.0]
    # No known maximum for a gymnasium id outside the table: no check.
    spec = parse_spec({**BASE, "env": "gym:Pendulum-v1", "targets": [1e6]})
    assert spec.env == ["gym:Pendulum-v1"]


# --------------------------------------------------------------------------- plan


def test_plan_names_configs_and_order(tmp_path):
    spec = parse_spec({**BASE, "num_envs": [4, 2], "seeds": 2, "lrs": [1e-3, 3e-4],
                       "targets": [50, 100], "budget": "8k", "out": str(tmp_path),
                       "ppo": {"num_epochs": 3}, "train": {"checkpoint_every": 7}})
    plans = plan_runs(spec)
    assert len(plans) == 2 * 2 * 2
    assert [p.rollout_batch_size for p in plans] == [64] * 4 + [128] * 4  # small B first
    assert plans[0].name == "CartPole-b64-n2x32-lr0.0003-s0"
    p = plans[-1]
    assert p.name == "CartPole-b128-n4x32-lr0.001-s1"
    assert p.run_dir == str(tmp_path.resolve() / "runs" / p.name)
    cfg, ppo = p.configs()
    assert (cfg.num_envs, cfg.num_steps, cfg.seed) == (4, 32, 1)
    assert cfg.total_agent_steps == 8000 and cfg.target_return == 100.0
    assert cfg.checkpoint_every == 7 and cfg.network == "mlp"  # override, classic preset
    assert ppo.learning_rate == 1e-3 and ppo.num_epochs == 3 and ppo.num_minibatches == 1


def test_plan_lr_rule_and_vary_num_steps(tmp_path):
    spec = parse_spec({"env": "CartPole", "vary": "num_steps", "num_envs": 4,
                       "num_steps": [16, 64], "lr_rule": "sqrt", "base_lr": 1e-3,
                       "base_batch_size": 256, "targets": [100], "out": str(tmp_path)})
    plans = plan_runs(spec)
    assert [(p.num_envs, p.num_steps) for p in plans] == [(4, 16), (4, 64)]
    # lr(B) = base_lr * sqrt(B / base_batch_size), 6 significant digits
    assert [p.lr for p in plans] == [float(f"{1e-3 * math.sqrt(64 / 256):.6g}"), 1e-3]
    assert plans[0].name == "CartPole-b64-n4x16-lr0.0005-s0"
    linear = parse_spec({**BASE, "lr_rule": "linear", "lrs": [1e-3], "base_batch_size": 64,
                         "out": str(tmp_path)})
    assert [p.lr for p in plan_runs(linear)] == [1e-3, 2e-3]


def test_fixed_factor_defaults_to_the_preset(tmp_path):
    spec = parse_spec({"env": "CartPole", "num_envs": [2], "targets": [100],
                       "out": str(tmp_path)})
    (plan,) = plan_runs(spec)
    assert plan.num_steps == 32 and plan.lr == 1e-3  # classic preset


def test_flags_give_the_same_spec_as_toml(tmp_path):
    from rl.cli.app import build_parser
    from rl.cli.sweep import spec_from_args

    toml = load_spec(write_spec(tmp_path / "s.toml", tmp_path / "out"))
    args = build_parser().parse_args([
        "sweep", "--env", "CartPole", "--num-envs", "2,4,8,16,32", "--num-steps", "32",
        "--seeds", "0,1", "--lrs", "1e-3", "--targets", "50,100", "--budget", "20k",
        "--parallel", "2", "--out", str(tmp_path / "out"), "--ppo", "anneal_lr=false",
        "--train", "checkpoint_every=10", *(["--train", "gns_every=5"] if HAS_GNS else []),
    ])
    assert spec_from_args(args) == toml
    # Flags override the file.
    args = build_parser().parse_args(["sweep", str(tmp_path / "s.toml"), "--seeds", "3",
                                      "--ppo", "num_epochs=5"])
    spec = spec_from_args(args)
    assert spec.seeds == [0, 1, 2] and spec.ppo == {"anneal_lr": False, "num_epochs": 5}


# --------------------------------------------------------------------------- results


def fake_run(plan, rows, status="finished", message="reached target"):
    run = RunDir.create(plan.run_dir, plan.stored_config())
    for row in rows:
        run.append_metrics(row)
    run.write_status(status, message=message)


def test_run_row_targets_need_a_full_window_and_b_simple_averages(tmp_path, monkeypatch):
    monkeypatch.setattr(warmup, "WARMUP_ITERATIONS", 0)  # every measurement counts here
    spec = parse_spec({**BASE, "num_envs": [2], "targets": [10, 30], "out": str(tmp_path),
                       "train": {"return_window": 5}})
    (plan,) = plan_runs(spec)
    rows = [
        # return 50 but only 3 games: not counted
        dict(iteration=1, agent_steps=64, episodes_total=3, return_recent=50.0, sps=10.0,
             **{"gns/policy/g2": 2.0, "gns/policy/trace_sigma": 100.0}),
        dict(iteration=2, agent_steps=128, episodes_total=5, return_recent=12.0, sps=30.0,
             **{"gns/policy/g2": -1.0, "gns/policy/trace_sigma": 50.0}),
        dict(iteration=3, agent_steps=192, episodes_total=9, return_recent=31.0, sps=20.0),
    ]
    fake_run(plan, rows)
    row = run_row(plan, spec.targets)
    assert list(row) == result_columns(spec.targets)
    assert (row["iterations_to_target_10"], row["agent_steps_to_target_10"]) == (2, 128)
    assert (row["iterations_to_target_30"], row["agent_steps_to_target_30"]) == (3, 192)
    assert row["status"] == "finished" and row["final_return_recent"] == 31.0
    # mean(trace_sigma) / mean(g2) over measured rows; negative single g2 kept in the mean
    assert row["b_simple_policy"] == pytest.approx(75.0 / 0.5)
    assert math.isnan(row["b_simple_value"]) and row["gns_measurements"] == 2
    assert row["sps_median"] == 20.0


def test_long_view_and_fit_failure_reason(tmp_path):
    spec = parse_spec({**BASE, "num_envs": [2, 4], "seeds": 2, "targets": [10],
                       "out": str(tmp_path), "train": {"return_window": 1}})
    plans = plan_runs(spec)
    for p in plans:
        fake_run(p, [dict(iteration=i, agent_steps=i * p.rollout_batch_size, episodes_total=i,
                          return_recent=float(i)) for i in range(1, 16)])
    from rl.sweeps.results import results_table

    df = results_table(plans, spec.targets)
    long = long_results(df)
    assert list(long.columns[:7]) == ["env", "target", "rollout_batch_size", "lr", "seed",
                                      "iterations_to_target", "agent_steps_to_target"]
    assert len(long) == len(df) * len(spec.targets)
    fits, _ = fit_sweep(df, n_boot=10)
    assert not fits.loc[0, "ok"]
    assert "only 2 distinct batch size(s)" in fits.loc[0, "reason"]


def test_b_simple_beside_b_crit_counts_only_environment_split_runs(tmp_path):
    # 2 and 4 envs with 4 groups: the 2-env runs are split in time (correlated groups, a
    # B_simple biased low), the 4-env runs by environment. Known values: 10 (time), 1000.
    spec = parse_spec({**BASE, "num_envs": [2, 4, 8], "seeds": 1, "targets": [3],
                       "out": str(tmp_path), "train": {"return_window": 1, "gns_groups": 4}})
    plans = plan_runs(spec)
    for p in plans:
        split = 1 if p.num_envs % 4 == 0 else 0
        trace = 1000.0 if split else 10.0
        fake_run(p, [dict(iteration=i, agent_steps=i * p.rollout_batch_size, episodes_total=i,
                          return_recent=float(i), **{"gns/split_envs": split,
                          **{f"gns/{t}/g2": 1.0 for t in ("total", "policy", "value")},
                          **{f"gns/{t}/trace_sigma": trace for t in ("total", "policy",
                                                                       "value")}})
                     for i in range(1, WARMUP_ITERATIONS + 6)])
    from rl.sweeps.results import results_table

    df = results_table(plans, spec.targets)
    assert list(df["gns_split"]) == ["time", "envs", "envs"]
    assert list(df["b_simple_total"]) == [10.0, 1000.0, 1000.0]  # each run's own value
    fits, _ = fit_sweep(df, n_boot=10)
    assert fits.loc[0, "b_simple_total"] == 1000.0 and fits.loc[0, "b_simple_runs"] == 2
    assert fits.loc[0, "min_seeds"] == 1  # 1 seed: the fit's interval is flagged


def test_conflicting_run_dir_stops_the_sweep_before_anything_runs(tmp_path):
    spec = parse_spec({**BASE, "num_envs": [2], "targets": [10], "out": str(tmp_path)})
    (plan,) = plan_runs(spec)
    other = plan.stored_config()
    other["ppo"]["num_epochs"] = 3
    RunDir.create(plan.run_dir, other)
    assert classify_run(plan)[0] == "conflict"
    with pytest.raises(SweepStateError, match="ppo.num_epochs: stored 3 != planned 20"):
        run_sweep(spec)


@pytest.mark.parametrize("stored_target, state, epochs, action", [
    (20.0, "finished", 20, "finished"),  # stopped at a higher target: passed 10 on the way
    (None, "finished", 20, "finished"),  # no target: trained its whole budget
    (5.0, "finished", 20, "conflict"),   # stopped before the planned target: needs training
    (20.0, "running", 20, "conflict"),   # unfinished: resuming would change when it stops
    (20.0, "finished", 3, "conflict"),   # another setting differs too
])
def test_a_finished_run_serves_a_lower_target(tmp_path, stored_target, state, epochs, action):
    spec = parse_spec({**BASE, "num_envs": [2], "targets": [5, 10], "out": str(tmp_path)})
    (plan,) = plan_runs(spec)
    stored = plan.stored_config()
    stored["train"]["target_return"] = stored_target
    stored["ppo"]["num_epochs"] = epochs
    run = RunDir.create(plan.run_dir, stored)
    if state == "finished":
        run.mark_finished(iteration=3, agent_steps=192, message="reached target")
    else:
        run.mark_running(iteration=3, agent_steps=192)
    run.close()
    got, detail = classify_run(plan)
    assert got == action, detail
    if action == "finished":
        assert detail.startswith("reached target (trained with target_return")
        assert detail.endswith("above the planned 10: reused)")
    else:
        assert "stored" in detail and "planned" in detail


def test_local_executor_shares_the_cores():
    assert LocalExecutor(2, cores=2).threads == 1
    assert LocalExecutor(3, cores=16).threads == 5
    assert LocalExecutor(8, cores=4).threads == 1


# --------------------------------------------------------------------------- real sweeps


@pytest.fixture(scope="module")
def cartpole_sweep(tmp_path_factory):
    """The uninterrupted reference sweep (shared by the tests below)."""
    base = tmp_path_factory.mktemp("sweep")
    spec = load_spec(write_spec(base / "spec.toml", base / "out"))
    t0 = time.perf_counter()
    table = run_sweep(spec)
    return spec, table, time.perf_counter() - t0


@pytest.mark.slow
def test_cartpole_sweep_fits_a_finite_critical_batch(cartpole_sweep, capsys):
    spec, table, seconds = cartpole_sweep
    plans = plan_runs(spec)
    assert list(table.columns) == result_columns(spec.targets)
    assert list(table["run"]) == [p.name for p in plans] and len(plans) == 10
    assert (table["status"] == "finished").all(), table[["run", "status", "message"]]
    stored = read_results(spec.out)
    pd.testing.assert_frame_equal(stored, table)
    assert pd.read_csv(Path(spec.out) / "results.csv").shape == table.shape
    assert json.loads((Path(spec.out) / "sweep.json").read_text())["spec"]["targets"] == [50, 100]

    fits, per_batch = fit_sweep(table, n_boot=1000, seed=0)
    with capsys.disabled():
        print(f"\nCartPole sweep: {seconds:.1f} s")
        print(fits[["target", "ok", "b_crit", "b_crit_lo", "b_crit_hi", "s_min", "e_min",
                    "b_simple_policy", "b_simple_value", "b_simple_total"]].to_string())
    row = fits[fits["target"] == 100].iloc[0]
    assert row["ok"], row["reason"]
    assert 64 / 2 <= row["b_crit"] <= 1024 * 2
    assert np.isfinite([row["b_crit_lo"], row["b_crit_hi"]]).all()
    assert row["b_crit_lo"] <= row["b_crit"] <= row["b_crit_hi"]
    if HAS_GNS:
        assert np.isfinite(row["b_simple_value"]) and row["b_simple_runs"] > 0


@pytest.mark.slow
def test_fit_command_writes_table_and_plots(cartpole_sweep, capsys):
    from rl.cli import main

    spec = cartpole_sweep[0]
    code = main(["fit", spec.out, "--n-boot", "200"])
    out = capsys.readouterr().out
    assert "critical batch size" in out and "B_crit" in out
    out_dir = Path(spec.out)
    fit = pd.read_csv(out_dir / "fit.csv")
    assert list(fit["target"]) == [50, 100]
    assert code == (0 if (fit["ok"] | fit["bound"].notna()).all() else 1)
    assert (out_dir / "fit_CartPole_100.png").stat().st_size > 0
    if HAS_GNS:
        assert (out_dir / "b_simple_CartPole.png").stat().st_size > 0


@pytest.mark.slow
def test_restarting_a_finished_sweep_runs_nothing(cartpole_sweep):
    spec, table, _ = cartpole_sweep
    runs = Path(spec.out) / "runs"
    before = {p.name: (p / "metrics.jsonl").stat().st_mtime_ns for p in runs.iterdir()}
    n_events = len(read_events(spec.out))
    again = run_sweep(spec)
    new = read_events(spec.out)[n_events:]
    assert [e["event"] for e in new if e["event"] in ("start", "resume")] == []
    assert sum(e["event"] == "skip" for e in new) == 10
    after = {p.name: (p / "metrics.jsonl").stat().st_mtime_ns for p in runs.iterdir()}
    assert after == before
    pd.testing.assert_frame_equal(again.drop(columns=list(RESULT_TIMING_COLUMNS)),
                                  table.drop(columns=list(RESULT_TIMING_COLUMNS)))


def _statuses(out: Path) -> dict[str, dict]:
    found = {}
    for path in (out / "runs").glob("*/status.json"):
        try:
            found[path.parent.name] = json.loads(path.read_text())
        except ValueError:
            pass
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "\nState:\tZ" not in f.read()
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_lower_targets_reuse_a_finished_sweep(cartpole_sweep, tmp_path):
    # Re-targeting a finished sweep below its highest target trains nothing: every run
    # passed the new targets on its way, so their steps come from the stored metrics.
    spec, table, _ = cartpole_sweep
    out = tmp_path / "out"
    shutil.copytree(spec.out, out)
    # A target at or below the floor of untrained play (about 38 on CartPole) is refused here
    # too, before anything is looked at; the floor measured with the sweep is reused.
    floor = (out / "untrained_floor.json").read_bytes()
    n_events = len(read_events(out))
    with pytest.raises(TargetBelowFloorError, match="target.s. 25 on CartPole"):
        run_sweep(parse_spec({**spec_to_raw(spec), "out": str(out), "targets": [25, 50]}))
    assert len(read_events(out)) == n_events
    assert (out / "untrained_floor.json").read_bytes() == floor
    lower = parse_spec({**spec_to_raw(spec), "out": str(out), "targets": [40, 50, 75]})
    again = run_sweep(lower)
    new = read_events(out)[n_events:]
    assert [e["event"] for e in new if e["event"] in ("start", "resume")] == []
    assert sum(e["event"] == "skip" for e in new) == 10
    assert (again["agent_steps_to_target_50"].fillna(-1) ==
            table["agent_steps_to_target_50"].fillna(-1)).all()
    reached_100 = table["agent_steps_to_target_100"].notna()
    assert again.loc[reached_100, "agent_steps_to_target_75"].notna().all()
    assert (again["agent_steps_to_target_40"] <= again["agent_steps_to_target_50"]).all()
    # The fit follows the new targets; the old targets' plots go.
    from rl.cli import main

    (out / "fit_CartPole_100.png").write_bytes(b"stale")
    main(["fit", str(out), "--n-boot", "20"])
    assert sorted(p.name for p in out.glob("fit_*.png")) == \
        [f"fit_CartPole_{t}.png" for t in (40, 50, 75)]
    # A higher target needs training these runs stopped short of: refused before anything runs.
    higher = parse_spec({**spec_to_raw(spec), "out": str(out), "targets": [50, 150]})
    with pytest.raises(SweepStateError, match="train.target_return: stored 100.0 != planned 150"):
        run_sweep(higher)


@pytest.mark.slow
def test_sigkill_mid_sweep_then_restart_matches_uninterrupted(cartpole_sweep, tmp_path):
    ref_spec, ref_table, _ = cartpole_sweep
    out = tmp_path / "out"
    spec_path = write_spec(tmp_path / "spec.toml", out)
    cmd = [sys.executable, "-m", "rl.cli", "sweep", str(spec_path), "--quiet"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        # Kill once some runs finished and one is past a checkpoint and still going (no
        # deadline: a loaded machine is slow, and a sweep that ends first fails the test).
        while True:
            assert proc.poll() is None, f"sweep ended before the kill: {proc.stderr.read()}"
            status = _statuses(out)
            finished = [n for n, s in status.items() if s["state"] == "finished"]
            going = [n for n, s in status.items() if s["state"] == "running"
                     and (s.get("iteration") or 0) >= 10]
            if len(finished) >= 2 and going:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    # The workers notice their parent died and exit by themselves (within a fraction of a
    # second on an idle machine; the wait is generous for a loaded one).
    workers = {e["pid"] for e in read_events(out) if e["event"] in ("start", "resume")}
    deadline = time.monotonic() + 300
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in workers), "orphaned sweep workers kept running"

    status = _statuses(out)
    finished = {n for n, s in status.items() if s["state"] == "finished"}
    in_progress = {n for n, s in status.items() if s["state"] == "running"}
    assert finished and in_progress, status
    mtimes = {n: (out / "runs" / n / "metrics.jsonl").stat().st_mtime_ns for n in finished}
    checkpoint = {n: RunDir(out / "runs" / n).list_checkpoints() for n in in_progress}
    n_events = len(read_events(out))

    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    events = read_events(out)[n_events:]
    started = {e["run"]: e for e in events if e["event"] in ("start", "resume")}
    assert not finished & started.keys(), "a finished run was trained again"
    assert {n: (out / "runs" / n / "metrics.jsonl").stat().st_mtime_ns for n in finished} \
        == mtimes
    for name in in_progress:
        if checkpoint[name]:
            assert started[name]["event"] == "resume"
            assert started[name]["from_iteration"] == checkpoint[name][-1]
    assert set(started) == {p.name for p in plan_runs(ref_spec)} - finished

    table = read_results(out)
    timing = list(RESULT_TIMING_COLUMNS)
    assert list(table.columns) == list(ref_table.columns)
    assert list(table["run"]) == list(ref_table["run"])
    assert (table["status"] == "finished").all()
    resumed = {n for n, e in started.items() if e["event"] == "resume" and e["from_iteration"]}
    same = table["run"].isin(set(table["run"]) - resumed) if not _resume_is_exact() else \
        table["run"].notna()
    pd.testing.assert_frame_equal(table[same].drop(columns=timing),
                                  ref_table[same].drop(columns=timing),
                                  check_exact=False, rtol=1e-9)
    if not same.all():
        # The trainer cannot resume this env exactly (see _resume_is_exact): the resumed runs
        # must still match the reference up to their checkpoint and then finish.
        for name in resumed:
            k = checkpoint[name][-1]
            a = load_metrics(out / "runs" / name)
            b = load_metrics(Path(ref_spec.out) / "runs" / name)
            cols = ["iteration", "agent_steps", "episodes_total", "return_recent", "policy_loss"]
            pd.testing.assert_frame_equal(a[a["iteration"] <= k][cols],
                                          b[b["iteration"] <= k][cols])
            assert list(a["iteration"]) == list(range(1, len(a) + 1))
        warnings.warn(
            f"runs {sorted(resumed)} were resumed from checkpoints but the trainer's resume is "
            "not exact here (the CartPole vector env does not pickle, so rl.train.loop reseeds it "
            "on resume): their rows after the checkpoint were not compared",
            stacklevel=1,
        )


def _resume_is_exact() -> bool:
    """rl.train.loop resumes CartPole exactly only if its vector env pickles (it stores the
    env in the checkpoint; otherwise it rebuilds it with a new seed)."""
    import pickle

    import envs

    env = envs.make_vec("CartPole", 1, 0)
    try:
        pickle.dumps(env)
        return True
    except Exception:
        return False
    finally:
        env.close()


def test_a_dead_worker_marks_no_run_failed(tmp_path, monkeypatch):
    """A worker that dies takes the pool down: every run it leaves is reported interrupted
    (to resume or start on the next sweep), none failed, and no run directory changes."""
    import rl.sweeps.executors
    from tests.rl.sweeps.crash_worker import die

    spec = parse_spec({**BASE, "num_envs": [2, 4, 8], "out": str(tmp_path)})
    plans = plan_runs(spec)
    monkeypatch.setattr(rl.sweeps.executors, "run_one", die)
    summaries = []
    LocalExecutor(1).run(plans, lambda plan, summary: summaries.append(summary))
    assert sorted(s["run"] for s in summaries) == sorted(p.name for p in plans)
    assert {s["status"] for s in summaries} == {"interrupted"}
    assert all("run the sweep again" in s["message"] for s in summaries)
    assert not any(Path(p.run_dir).joinpath("status.json").exists() for p in plans)


def test_a_stopping_worker_starts_no_further_run(tmp_path):
    """A worker's first SIGINT (the sweep being stopped) marks it stopping: the run it trains
    is interrupted as usual (KeyboardInterrupt), and a run the pool hands it afterwards is
    reported interrupted without its run directory being touched."""
    import rl.sweeps.executors as executors

    (plan,) = plan_runs(parse_spec({**BASE, "num_envs": [2], "out": str(tmp_path)}))
    assert not executors._STOPPING.is_set()
    try:
        with pytest.raises(KeyboardInterrupt):
            executors._stop_on_sigint(signal.SIGINT, None)
        assert executors._STOPPING.is_set()
        summary = executors.run_one(plan)
        assert summary["status"] == "interrupted" and "not started" in summary["message"]
        assert not Path(plan.run_dir).exists() and not (tmp_path / "events.jsonl").exists()
    finally:
        executors._STOPPING.clear()


@pytest.mark.parametrize("message, action", [
    ("OSError: [Errno 28] No space left on device: '/runs/x/checkpoints/ckpt_00000004.pt'",
     "resume"),
    ("OSError: [Errno 122] Disk quota exceeded: '/runs/x/metrics.jsonl'", "resume"),
    ("OSError: [Errno 27] File too large: '/runs/x/tb'", "resume"),
    ("MemoryError: ", "resume"),
    ("RuntimeError: DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes",
     "resume"),
    ("KeyboardInterrupt: SIGTERM", "resume"),
    ("RuntimeError: the loss is not finite at iteration 3", "failed"),  # the settings' fault
    ("ValueError: lr must be positive", "failed"),
    ("PermissionError: [Errno 13] Permission denied: '/runs/x'", "failed"),  # needs a fix
])
def test_a_run_failed_by_the_machine_is_resumed(tmp_path, message, action):
    """#24 item 4: a run that failed for a full disk (or memory, or a signal) is not a failure
    of its settings: the sweep resumes it once space is freed, and its row says interrupted,
    so that fit leaves it out as unsettled rather than count it as never reaching a target."""
    from rl.sweeps.results import results_table

    spec = parse_spec({**BASE, "num_envs": [2], "targets": [10], "out": str(tmp_path)})
    (plan,) = plan_runs(spec)
    run = RunDir.create(plan.run_dir, plan.stored_config())
    run.mark_failed(message, iteration=4, agent_steps=256)
    run.close()
    assert classify_run(plan)[0] == action
    status = results_table([plan], spec.targets)["status"].iloc[0]
    assert status == ("interrupted" if action == "resume" else "failed")


def test_an_unreachable_ray_address_fails_at_once(tmp_path, capsys):
    """#24 item 8: ``--backend ray --address host:port`` where nothing listens ends with one
    line naming the address and the fix, exit 2, instead of Ray retrying it for ever."""
    from rl.cli import main
    from rl.sweeps.executors import check_ray_address

    with pytest.raises(ConnectionError, match="cannot reach the Ray cluster at 127.0.0.1:1"):
        check_ray_address("127.0.0.1:1")
    with pytest.raises(ValueError, match="not host:port"):
        check_ray_address("127.0.0.1")
    check_ray_address(None)  # Ray starts a local instance: nothing to check
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC_TOML.format(out=tmp_path / "out", gns=""))
    pytest.importorskip("ray")  # CI installs the ray extra (make install)
    code = main(["sweep", str(spec), "--backend", "ray", "--address", "127.0.0.1:1", "--quiet"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2, err
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in err and "--backend local" in err
    assert "check the path and its disk" not in err
