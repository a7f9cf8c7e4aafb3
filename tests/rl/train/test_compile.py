"""``TrainConfig.compile``: the network the loop runs is compiled where the loop calls it.

The rollout and the update reach the network through ``act`` and ``evaluate``; a
``torch.compile(model)`` wrapper would compile only direct calls of the wrapper and leave
both paths eager (as the CUDA-only option did before), so the test counts what dynamo
captures on those two paths.
"""

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

from agents import build_actor_critic
from rl.train.config import TrainConfig
from rl.train.loop import prepare_network


@pytest.mark.slow  # one inductor compilation (C++) per path: tens of seconds on a busy CPU
def test_compile_reaches_act_and_evaluate_and_keeps_their_values(one_torch_thread):
    torch.manual_seed(0)
    obs_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
    model = build_actor_critic(obs_space, gym.spaces.Discrete(2), "mlp")
    eager = copy.deepcopy(model)
    net, _ = prepare_network(TrainConfig(env="CartPole", compile=True), model,
                             torch.device("cpu"))
    assert net is model
    obs, actions = torch.randn(16, 4), torch.randint(0, 2, (16,))
    torch._dynamo.reset()
    counters.clear()
    logp, entropy, value = net.evaluate(obs, actions)
    assert counters["stats"]["calls_captured"] >= 1, "evaluate ran eager"
    # Same parameters, same function: equal up to the reordering of float sums.
    for got, want in zip((logp, entropy, value), eager.evaluate(obs, actions), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    captured = counters["stats"]["calls_captured"]
    with torch.no_grad():
        net.act(obs, deterministic=True)
    # no_grad is part of the compiled graph's guards: a new capture, not the eager path
    assert counters["stats"]["calls_captured"] > captured, "act ran eager"


@pytest.mark.slow  # compiles the small CNN's forward and backward graphs, trains 3 iterations
def test_a_compiled_run_trains_and_measures_the_noise_scale(tmp_path, one_torch_thread):
    # The noise scale differentiates the policy and value terms of one forward pass through
    # the shared CNN trunk apart (retain_graph): compiled backward graphs must not have
    # donated their buffers (they did, and such a run failed at its first iteration).
    from agents import PPOConfig
    from rl.runs.metrics import load_metrics
    from rl.train.launch import train

    cfg = TrainConfig(env="MinAtar-Breakout", num_envs=4, num_steps=32, total_agent_steps=3 * 128,
                      gns_every=1, compile=True, run_dir=str(tmp_path / "run"), seed=0)
    assert train(cfg, PPOConfig(num_minibatches=2, num_epochs=2)).iterations == 3
    rows = load_metrics(tmp_path / "run")
    assert np.isfinite(rows["gns/total/b_simple"]).all()
    assert np.isfinite(rows["policy_loss"]).all()
