"""The adaptive rollout batch size (rl/train/batch_schedule.py): the rule, a CartPole run
whose batch follows the measured noise scale, resume, and the comparison with a sweep's fixed
batches."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from rl.analysis.adaptive import compare_with_fixed
from rl.cli import main
from rl.measure import warmup
from rl.measure.warmup import WARMUP_ITERATIONS
from rl.runs.metrics import load_metrics
from rl.runs.storage import RunDir
from rl.sweeps.results import result_columns, write_results
from rl.train.batch_schedule import AdaptiveBatch, BatchSchedule
from rl.train.comm import LocalComm
from rl.train.config import TIMING_COLUMNS, AdaptiveConfig
from rl.train.env_chunks import EnvChunks
from rl.train.schedule_plot import PLOT_FILE

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def schedule(**kw) -> BatchSchedule:
    cfg = AdaptiveConfig(batch_schedule="adaptive", batch_beta=0.0, batch_warmup=2, **kw)
    return BatchSchedule(cfg, num_envs=8, num_steps=32)


# --- the rule ---------------------------------------------------------------------------------


def test_batch_follows_the_square_root_of_the_noise_scale():
    s = schedule()
    assert s.batch_size == 256 and s.levels[-1] == 16
    assert s.observe(1.0, 100.0) is None  # warm-up
    assert s.observe(1.0, 100.0) is None  # calibrated here: c = 256 / sqrt(100)
    assert s.scale == pytest.approx(25.6) and s.target == pytest.approx(256)
    assert s.observe(1.0, 400.0) == (16, 32)  # noise x4 -> batch x2 (num_envs grows)
    assert s.batch_size == 512 and s.lr_factor() == 1.0
    assert s.observe(1.0, 100.0 * 3.0**2) == (24, 32)  # noise x9 -> batch x3
    assert s.observe(1.0, 100.0) == (8, 32)  # back down, never below the start
    assert s.observe(1.0, 1.0) is None and s.batch_size == 256
    assert s.observe(1.0, 100.0 * 100**2) == (128, 32)  # x100 clipped to batch_max = 16 x
    assert s.observe(-1.0, 5.0) is None  # smoothed g2 <= 0: unresolved, no change
    assert s.changes == 4


def test_hysteresis_axis_bounds_and_learning_rate_rule():
    s = schedule(batch_axis="num_steps", batch_lr_rule="sqrt", batch_max=1024)
    s.observe(1.0, 100.0)
    s.observe(1.0, 100.0)
    # Target 1.45 x: level 1 is barely farther from it than level 2 -> stay.
    assert s.observe(1.0, 100.0 * 1.45**2) is None
    assert s.observe(1.0, 100.0 * 1.7**2) == (8, 64)  # num_steps grows
    assert s.lr_factor() == pytest.approx(math.sqrt(2))
    assert s.learning_rate(1e-3, True, 500, 1000) == pytest.approx(0.5e-3 * math.sqrt(2))
    assert s.observe(1.0, 100.0 * 10**2) == (8, 128)  # 4 x = batch_max 1024
    state = s.state_dict()
    t = schedule(batch_axis="num_steps", batch_lr_rule="sqrt", batch_max=1024)
    t.load_state_dict(json.loads(json.dumps(state)))
    assert (t.shape, t.scale, t.changes) == (s.shape, s.scale, s.changes)
    assert t.b_simple == s.b_simple
    fixed_scale = schedule(batch_scale=10.0)
    fixed_scale.observe(1.0, 2500.0)
    assert fixed_scale.observe(1.0, 2500.0) == (16, 32)  # 10 x sqrt(2500) = 500 -> 512


def test_the_schedule_is_never_fed_warmup_measurements():
    cfg = AdaptiveConfig(batch_schedule="adaptive", batch_beta=0.0, batch_warmup=1)
    loop = AdaptiveBatch(cfg, num_envs=8, num_steps=32, world=1, total_agent_steps=10**6)
    gns = {"gns/total/g2": 1e-3, "gns/total/trace_sigma": 100.0}  # a transient-like B
    for iteration in range(1, WARMUP_ITERATIONS + 1):  # rows measured after 0 .. W-1 updates
        assert loop.observe(gns, {"iteration": iteration}, LocalComm()) is None
        assert loop.schedule.tracker.count == 0 and math.isnan(loop.columns()["adaptive/b_simple"])
    row = {"iteration": WARMUP_ITERATIONS + 1}  # W updates done: counts, calibrates c
    assert loop.observe({"gns/total/g2": 1.0, "gns/total/trace_sigma": 100.0}, row,
                        LocalComm()) is None
    assert loop.schedule.tracker.count == 1 and loop.columns()["adaptive/b_simple"] == 100.0
    assert loop.schedule.scale == pytest.approx(256 / 10)


def test_bad_adaptive_settings():
    for kw, message in [(dict(batch_beta=1.0), "batch_beta"), (dict(batch_warmup=0), "warmup"),
                        (dict(batch_scale=-1.0), "batch_scale"),
                        (dict(batch_max=128), "below the starting rollout batch")]:
        with pytest.raises(ValueError, match=message):
            BatchSchedule(AdaptiveConfig(batch_schedule="adaptive", **kw), 8, 32)
    with pytest.raises(ValueError, match="--gns-every"):
        AdaptiveConfig(batch_schedule="adaptive").validate(gns_every=0)


def test_env_chunks_grow_and_pause_without_dropping_games():
    import functools
    import pickle

    import envs

    # gym-sync seeds env i with seed + i, so the chunks tile one whole env; partial: picklable
    make = functools.partial(envs.make_vec, "CartPole", backend="gym-sync")
    env = EnvChunks(make(2, 0), make, 2, seed=0)
    obs, info = env.reset()
    assert obs.shape == (2, 4) and info["autoreset"].shape == (2,)
    grown = env.set_active(3)  # chunks 1 and 2 are new: seeded 2 and 4
    whole, _ = make(6, 0).reset()
    np.testing.assert_array_equal(grown[2:], whole[2:])
    np.testing.assert_array_equal(grown[:2], obs)
    rng = np.random.default_rng(0)
    for _ in range(30):
        out = env.step(rng.integers(0, 2, size=6))
    assert all(x.shape[0] == 6 for x in out[:4]) and out[4]["episode_done"].shape == (6,)
    paused = env.set_active(1)[:2], env.last_obs[1].copy(), env.last_obs[2].copy()
    for _ in range(5):
        env.step(rng.integers(0, 2, size=2))
    assert env.num_envs == 2 and not np.array_equal(env.last_obs[0], paused[0])
    again = env.set_active(3)  # paused chunks continue their games where they stopped
    np.testing.assert_array_equal(again[2:4], paused[1])
    np.testing.assert_array_equal(again[4:], paused[2])
    copy = pickle.loads(pickle.dumps(env))
    actions = rng.integers(0, 2, size=6)
    np.testing.assert_array_equal(copy.step(actions)[0], env.step(actions)[0])
    env.close()


# --- a CartPole run -------------------------------------------------------------------------

ARGS = ["train", "--env", "CartPole", "--batch-schedule", "adaptive", "--gns-every", "2",
        "--no-anneal-lr", "--checkpoint-every", "5", "--quiet"]


def comparable(df):
    timing = [c for c in df.columns if c in TIMING_COLUMNS or c.endswith("/seconds")]
    return df.drop(columns=timing).reset_index(drop=True)


@pytest.mark.slow
def test_cartpole_batch_follows_the_measured_noise_scale_and_resumes(tmp_path, monkeypatch):
    # A warm-up of 2 PPO iterations instead of 10: the 31 iterations of this short run leave
    # the schedule room to act (the rule itself: test_the_schedule_is_never_fed_warmup_...).
    monkeypatch.setattr(warmup, "WARMUP_ITERATIONS", 2)
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert main([*ARGS, "--total-agent-steps", "8k", "--run-dir", str(whole)]) == 0
    m = load_metrics(whole)
    batch = m["rollout_batch_size"].to_numpy()
    noise = m["adaptive/b_simple"].to_numpy(float)
    target = m["adaptive/target_batch_size"].to_numpy(float)
    assert (m["agent_steps"].diff().fillna(batch[0]).to_numpy() == batch).all()
    assert (batch == m["num_envs"] * m["num_steps"]).all() and (m["num_steps"] == 32).all()
    assert (m["num_envs"] % 8 == 0).all()
    changes = np.flatnonzero(batch[1:] != batch[:-1])  # decided after row i, used from i + 1
    assert len(changes) >= 1, "the batch never changed"
    # Each change goes the way the smoothed noise scale went since the calibration (or the
    # previous change), and moves the batch toward the target c sqrt(B_simple).
    calibrated = np.flatnonzero(np.isfinite(target))[0]
    anchor = noise[calibrated]
    for i in changes:
        assert np.sign(batch[i + 1] - batch[i]) == np.sign(noise[i] - anchor), (i, noise[i])
        assert abs(math.log(batch[i + 1] / target[i])) < abs(math.log(batch[i] / target[i]))
        assert target[i] == pytest.approx(m["adaptive/scale"].iloc[i] * math.sqrt(noise[i]))
        anchor = noise[i]
    assert batch[-1] > batch[0] and noise[-1] > noise[calibrated]
    assert (m["learning_rate"] == 1e-3).all()  # constant rule, no annealing here
    assert (whole / PLOT_FILE).stat().st_size > 10_000
    config = json.loads((whole / "config.json").read_text())
    assert config["adaptive"]["batch_schedule"] == "adaptive"

    # Stopped early and resumed: the same run (schedule state, env, generators restored).
    stop = int(m["agent_steps"].iloc[changes[0] + 2])
    assert main([*ARGS, "--total-agent-steps", str(stop), "--run-dir", str(part)]) == 0
    assert len(load_metrics(part)) == changes[0] + 3
    assert main([*ARGS, "--total-agent-steps", "8k", "--run-dir", str(part), "--resume"]) == 0
    pdt.assert_frame_equal(comparable(m), comparable(load_metrics(part)))


# --- the comparison with fixed batches ------------------------------------------------------


def _fake_run(path, batches, returns, window=2):
    run = RunDir.create(path, {"train": {"return_window": window},
                               "ppo": {"learning_rate": 1e-3},
                               "adaptive": {"batch_schedule": "adaptive"}})
    steps = episodes = 0
    for i, (b, r) in enumerate(zip(batches, returns, strict=True), start=1):
        steps += b
        episodes += 1
        run.append_metrics({"iteration": i, "agent_steps": steps, "rollout_batch_size": b,
                            "episodes_total": episodes, "return_recent": r})


def test_compare_adaptive_runs_with_the_best_fixed_batch(tmp_path, capsys):
    cols = result_columns([100.0])
    rows = []
    # B=64: 30 iterations, B=256: 10 iterations (fewest iterations), B=32: 50 (fewest steps).
    for b, iters in ((32, 50), (64, 30), (256, 10)):
        for seed in (0, 1):
            rows.append({c: math.nan for c in cols} | dict(
                run=f"b{b}-s{seed}", env="CartPole", rollout_batch_size=b, num_envs=b // 32,
                num_steps=32, lr=1e-3, seed=seed, status="finished", message="",
                iterations=iters, agent_steps=iters * b, final_return_recent=120.0,
                iterations_to_target_100=iters + seed,
                agent_steps_to_target_100=(iters + seed) * b))
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    write_results(sweep, pd.DataFrame(rows, columns=cols))
    _fake_run(tmp_path / "a0", [64, 64, 128, 128], [10, 50, 101, 150])
    _fake_run(tmp_path / "a1", [64, 128, 128, 256], [10, 20, 30, 99])  # never reaches 100
    _fake_run(tmp_path / "a2", [64, 64, 64, 128], [10, 120, 130, 150])
    df = compare_with_fixed(sweep, [tmp_path / f"a{i}" for i in range(3)], [100])
    fixed_s, fixed_e, adaptive = (df.iloc[i] for i in range(3))
    assert fixed_s["rollout_batch_size"] == "256" and fixed_s["iterations"] == 10.5
    assert fixed_e["rollout_batch_size"] == "32" and fixed_e["agent_steps"] == 50.5 * 32
    assert adaptive["runs"] == 3 and adaptive["reached"] == 2
    assert adaptive["iterations"] == 3.0  # median of (3, inf, 2)
    assert adaptive["agent_steps"] == 256.0  # median of (256, inf, 128)
    assert adaptive["best_return"] == 150.0
    code = main(["compare-adaptive", str(sweep), *(str(tmp_path / f"a{i}") for i in range(3)),
                 "--targets", "100", "--out", str(tmp_path / "cmp.csv")])
    assert code == 0 and "fewest iterations" in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "cmp.csv")) == 3
