"""The noise scale at a run's checkpoints, on fresh rollouts: what is measured, where it is
written, that a rerun continues, and that bad settings are refused."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import envs
from agents import PPOConfig
from rl.analysis import checkpoint_noise as cn
from rl.analysis.checkpoint_noise import (
    CheckpointNoiseConfig,
    checkpoint_files,
    measure_policy_noise,
    run_checkpoint_noise,
    summarize,
)
from rl.cli import gns as gns_cli
from rl.cli.app import main
from rl.runs.metrics import load_metrics
from rl.runs.policy import load_policy


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    from rl.train.config import PRESETS, TrainConfig
    from rl.train.launch import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_kw, ppo_kw = PRESETS["classic"]
        run_dir = tmp_path_factory.mktemp("ckpt-noise") / "run"
        cfg = TrainConfig(**{**train_kw, "env": "CartPole", "num_envs": 4, "num_steps": 16,
                             "total_agent_steps": 6 * 64, "run_dir": str(run_dir),
                             "gns_every": 0, "checkpoint_every": 2})
        train(cfg, PPOConfig(**{**ppo_kw, "num_epochs": 2}))
    finally:
        torch.set_num_threads(threads)
    return run_dir


SMALL = dict(num_envs=8, num_steps=16, groups=4, repeats=3, warmup_rollouts=1)


def test_each_repeat_is_the_two_batch_estimate_and_leaves_the_model_alone(cartpole_run,
                                                                          one_torch_thread):
    policy = load_policy(cartpole_run)
    model, config = policy.model, policy.config
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ppo = PPOConfig(**config["ppo"])
    cfg = CheckpointNoiseConfig(**SMALL)
    env = envs.make_vec("CartPole", cfg.num_envs, cfg.seed)
    try:
        rows = pd.DataFrame(measure_policy_noise(model, env, ppo, cfg))
        again = pd.DataFrame(measure_policy_noise(model, env, ppo, cfg))
    finally:
        env.close()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert len(rows) == 3 * 3 and set(rows["term"]) == {"total", "policy", "value"}
    # Same seed, same env streams and action draws: the measurement repeats exactly.
    pd.testing.assert_frame_equal(rows, again)
    # Fresh rollouts: the repeats differ.
    assert rows[rows["term"] == "value"]["g2"].nunique() == 3
    # Each row comes from K group gradients: |G_B|^2 = g2 + tr/B is the squared norm of their
    # mean and |G_b|^2 = g2 + tr/b the mean of their squared norms, so 0 <= |G_B|^2 <= |G_b|^2.
    b, big = 128 // 4, 128
    for _, r in rows.iterrows():
        big_sq = r["g2"] + r["trace_sigma"] / big
        small_sq = r["g2"] + r["trace_sigma"] / b
        assert 0 < big_sq <= small_sq * (1 + 1e-9)


def test_summary_is_the_ratio_of_means_with_an_interval():
    rng = np.random.default_rng(0)
    g2 = 2.0 + 0.01 * rng.standard_normal(20)
    tr = 600.0 + 3.0 * rng.standard_normal(20)
    reps = pd.DataFrame({"iteration": 4, "agent_steps": 256.0, "return_recent": 9.0,
                         "term": "total", "g2": g2, "trace_sigma": tr, "samples": 128,
                         "seconds": 1.0})
    s = summarize(reps).iloc[0]
    assert s["b_simple"] == pytest.approx(tr.mean() / g2.mean())
    assert s["b_simple_lo"] < 300 < s["b_simple_hi"] and s["b_simple_hi"] - s["b_simple_lo"] < 10
    assert s["samples"] == 20 * 128 and s["negative_g2_fraction"] == 0


def test_run_measures_the_chosen_checkpoints_and_a_rerun_continues(cartpole_run, tmp_path,
                                                                    one_torch_thread,
                                                                    monkeypatch):
    files = checkpoint_files(cartpole_run / "checkpoints")
    assert [i for i, _ in files] == [4, 6]  # the trainer keeps the last two
    archive = tmp_path / "archive"
    archive.mkdir()
    for _, p in files:
        (archive / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "out"
    first = run_checkpoint_noise(cartpole_run, out, CheckpointNoiseConfig(
        **SMALL, checkpoint_dir=str(archive), every=5))
    # every=5 picks the first file; the last is always added.
    assert sorted(first["iteration"].unique()) == [4, 6]
    metrics = load_metrics(cartpole_run / "metrics.jsonl").set_index("iteration")
    for _, r in first.iterrows():
        assert r["agent_steps"] == metrics.loc[r["iteration"], "agent_steps"]
        assert r["samples"] == 3 * 128 and r["repeats"] == 3
        assert math.isfinite(r["seconds"]) and r["seconds"] > 0
    assert (out / "repeats.csv").exists() and (out / "checkpoints.csv").exists()

    # A rerun with the same settings measures nothing again.
    def no_measuring(*args, **kwargs):
        raise AssertionError("measured a checkpoint twice")

    monkeypatch.setattr(cn, "measure_policy_noise", no_measuring)
    second = run_checkpoint_noise(cartpole_run, out, CheckpointNoiseConfig(
        **SMALL, checkpoint_dir=str(archive), every=5))
    pd.testing.assert_frame_equal(first, second)
    # Other settings in the same folder would mix two measurements: refused.
    with pytest.raises(ValueError, match="other settings.*repeats"):
        run_checkpoint_noise(cartpole_run, out, CheckpointNoiseConfig(
            **{**SMALL, "repeats": 4}, checkpoint_dir=str(archive)))


def test_torch_threads_apply_while_measuring_and_a_rerun_may_change_them(cartpole_run, tmp_path,
                                                                         one_torch_thread,
                                                                         monkeypatch):
    seen = []

    def fake_measure(model, env, ppo, cfg):  # records the threads, skips the slow part
        seen.append(torch.get_num_threads())
        return [{"repeat": r, "term": term, "g2": 1.0 + r, "trace_sigma": 100.0,
                 "b_simple": 100.0 / (1.0 + r)} for r in range(cfg.repeats) for term in cn.TERMS]

    monkeypatch.setattr(cn, "measure_policy_noise", fake_measure)
    first = tmp_path / "first"  # the run's first checkpoint alone
    first.mkdir()
    (first / "ckpt_00000004.pt").write_bytes(
        (cartpole_run / "checkpoints" / "ckpt_00000004.pt").read_bytes())
    out = tmp_path / "out"
    run_checkpoint_noise(cartpole_run, out, CheckpointNoiseConfig(
        **SMALL, torch_threads=2, checkpoint_dir=str(first)))
    assert seen == [2] and torch.get_num_threads() == 1  # set for the measuring, then restored
    # Threads change no measurement: a rerun with another count continues the same folder.
    table = run_checkpoint_noise(cartpole_run, out, CheckpointNoiseConfig(**SMALL))
    assert seen == [2, 1] and sorted(table["iteration"].unique()) == [4, 6]


def test_cli_torch_threads_reaches_the_config(cartpole_run, tmp_path, monkeypatch):
    got = []

    def stop(run_dir, out, cfg, progress=None):
        got.append(cfg)
        raise FileNotFoundError("stopped before measuring")

    monkeypatch.setattr(gns_cli, "run_checkpoint_noise", stop)
    argv = ["gns", "checkpoints", str(cartpole_run), "--out", str(tmp_path / "o"), "--quiet"]
    assert main([*argv, "--torch-threads", "1"]) == 2
    assert main(argv) == 2
    assert [cfg.torch_threads for cfg in got] == [1, 0]  # 0: torch's default


@pytest.mark.parametrize("bad, match", [
    (dict(groups=3), "divide num_envs"),
    (dict(groups=1, num_envs=8), "groups must be >= 2"),
    (dict(repeats=2), "repeats must be >= 3"),
    (dict(num_steps=0), "num_steps must be a positive integer"),
    (dict(warmup_rollouts=-1), "warmup_rollouts"),
    (dict(torch_threads=-1), "torch_threads must be an integer >= 0"),
])
def test_bad_settings_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        CheckpointNoiseConfig(**{**SMALL, **bad})


def test_cli_writes_table_csv_and_plot_and_refuses_bad_input(cartpole_run, tmp_path, capsys,
                                                             one_torch_thread):
    out = tmp_path / "cli"
    rc = main(["gns", "checkpoints", str(cartpole_run), "--num-envs", "8", "--num-steps", "16",
               "--groups", "4", "--repeats", "3", "--out", str(out), "--quiet"])
    assert rc == 0
    assert (out / "checkpoints.png").stat().st_size > 0
    table = pd.read_csv(out / "checkpoints.csv")
    assert len(table) == 2 * 3
    rc = main(["gns", "checkpoints", str(cartpole_run), "--groups", "3", "--out", str(out)])
    assert rc != 0 and "divide num_envs" in capsys.readouterr().err
    rc = main(["gns", "checkpoints", str(tmp_path / "nothing"), "--out", str(out)])
    assert rc != 0 and "config.json" in capsys.readouterr().err
