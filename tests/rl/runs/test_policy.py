"""load_policy: a trained run opened as a ready-to-act policy, without running its code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from agents import PPOConfig
from rl.analysis import checkpoint_noise, sharpness
from rl.runs.errors import RunDirError
from rl.runs.policy import Policy, load_policy
from rl.train.config import PRESETS, TrainConfig
from rl.train.launch import train

DOCS = Path(__file__).resolve().parents[3] / "docs" / "run-directory.md"


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_kw, ppo_kw = PRESETS["classic"]
        run_dir = tmp_path_factory.mktemp("policy") / "run"
        cfg = TrainConfig(**{**train_kw, "env": "CartPole", "num_envs": 4, "num_steps": 16,
                             "total_agent_steps": 4 * 64, "run_dir": str(run_dir),
                             "gns_every": 0})
        train(cfg, PPOConfig(**{**ppo_kw, "num_epochs": 2}))
    finally:
        torch.set_num_threads(threads)
    return run_dir


def test_the_policy_acts_greedily_on_the_runs_observations(cartpole_run):
    policy = load_policy(cartpole_run)
    assert isinstance(policy, Policy) and policy.iteration == 4
    assert policy.env.env == "CartPole" and policy.ppo.num_epochs == 2
    env = policy.make_vec(3, seed=1)
    try:
        obs, _ = env.reset()
        actions = policy.act(obs)
        with torch.no_grad():
            logits, _ = policy.model(torch.as_tensor(obs).float())
        np.testing.assert_array_equal(actions, logits.argmax(-1).numpy())
        assert [policy(o) for o in obs] == actions.tolist()
    finally:
        env.close()


def test_sampled_actions_follow_the_generator(cartpole_run):
    policy = load_policy(cartpole_run)
    obs = np.zeros((64, 4), dtype=np.float32)
    a = policy.act(obs, deterministic=False, generator=torch.Generator().manual_seed(0))
    b = policy.act(obs, deterministic=False, generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(a, b)
    assert set(a.tolist()) <= {0, 1}


def test_the_documented_example_runs(cartpole_run, capsys):
    text = DOCS.read_text()
    section = text[text.index("## Using a trained policy"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "load_policy" in code
    exec(code.replace('"runs/cp"', repr(str(cartpole_run))), {})
    assert re.match(r"return \d+\.0, checkpoint iteration 4", capsys.readouterr().out)


def test_a_folder_that_is_not_a_run_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_policy(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"something": "else"}))
    with pytest.raises(RunDirError, match="not a PPO run's config"):
        load_policy(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"train": {"env": "CartPole"},
                                                      "ppo": {}}))
    with pytest.raises(FileNotFoundError, match="no loadable checkpoint"):
        load_policy(tmp_path)


def test_the_analyses_open_runs_with_the_one_loader():
    assert sharpness.load_policy is load_policy
    assert checkpoint_noise.load_policy is load_policy
