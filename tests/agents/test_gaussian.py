"""The Gaussian policy head (Box actions): densities against torch.distributions, sampling,
building and bad input, the PPO loss through it."""

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.distributions import Independent, Normal

from agents import (
    ActorCritic,
    GaussianActorCritic,
    PPOConfig,
    build_actor_critic,
    ppo_loss,
)

OBS = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
ACT = gym.spaces.Box(np.array([-2.0, -1.0], np.float32), np.array([2.0, 1.0], np.float32))


def _model(**kw) -> GaussianActorCritic:
    torch.manual_seed(0)
    return build_actor_critic(OBS, ACT, **kw)


def _ground_truth(model, obs):
    """The policy's distribution as torch.distributions, from the mean and log-std alone."""
    x = model.preprocess(obs)
    hidden = model.actor_trunk(x)
    mean = model.policy_head(hidden)
    if model.state_dependent_std:
        log_std = model.log_std_head(hidden).clamp(-20.0, 2.0)
    else:
        log_std = model.log_std.expand_as(mean)
    return Independent(Normal(mean, log_std.exp()), 1)


@pytest.mark.parametrize("state_dependent", [False, True])
def test_log_prob_and_entropy_equal_torch_distributions(state_dependent):
    model = _model(log_std_init=-0.7, state_dependent_std=state_dependent)
    with torch.no_grad():  # move the std away from one value for all dimensions
        if state_dependent:
            model.log_std_head.bias.copy_(torch.tensor([-0.3, 0.4]))
        else:
            model.log_std.copy_(torch.tensor([-0.3, 0.4]))
    obs = torch.randn(64, 3, generator=torch.Generator().manual_seed(1))
    actions = torch.randn(64, 2, generator=torch.Generator().manual_seed(2)) * 3.0
    logp, entropy, value = model.evaluate(obs, actions)
    truth = _ground_truth(model, obs)
    torch.testing.assert_close(logp, truth.log_prob(actions), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(entropy, truth.entropy(), rtol=1e-5, atol=1e-5)
    assert value.shape == (64,)
    # act(): the log-probability returned with a sample is that sample's density.
    action, logp_act, _ = model.act(obs, generator=torch.Generator().manual_seed(3))
    assert action.shape == (64, 2) and action.dtype == torch.float32
    torch.testing.assert_close(logp_act, truth.log_prob(action), rtol=1e-5, atol=1e-5)


def test_gradients_reach_the_log_std_and_the_mean():
    model = _model()
    obs, actions = torch.randn(16, 3), torch.randn(16, 2)
    logp, entropy, _ = model.evaluate(obs, actions)
    (logp.mean() + entropy.mean()).backward()
    assert model.log_std.grad is not None and model.log_std.grad.abs().sum() > 0
    assert model.policy_head.weight.grad.abs().sum() > 0


def test_sampling_deterministic_noise_and_generator():
    model = _model(log_std_init=np.log(0.5))
    obs = torch.randn(4000, 3, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        mean = model.policy_head(model.actor_trunk(model.preprocess(obs)))
        det, _, _ = model.act(obs, deterministic=True)
        torch.testing.assert_close(det, mean)
        noise = model.sampling_noise((4000,), generator=torch.Generator().manual_seed(5))
        assert noise.shape == (4000, 2)
        a, _, _ = model.act(obs, noise=noise)
        torch.testing.assert_close(a, mean + 0.5 * noise)
        # Samples: standardized residuals have mean ~0 and std ~1 (4,000 draws: the
        # standard error of the mean is 0.016, of the std about 0.011; margins 5 x that).
        b, _, _ = model.act(obs, generator=torch.Generator().manual_seed(6))
        z = (b - mean) / 0.5
        assert z.mean().abs().max() < 0.08 and (z.std(dim=0) - 1).abs().max() < 0.06
        # Same generator seed, same samples.
        c, _, _ = model.act(obs, generator=torch.Generator().manual_seed(6))
        torch.testing.assert_close(b, c)


def test_build_picks_the_head_by_action_space_and_initializes_like_sb3():
    model = _model()
    assert type(model) is GaussianActorCritic and model.action_dim == 2
    assert torch.equal(model.log_std.detach(), torch.zeros(2))
    assert model.policy_head.out_features == 2
    assert type(build_actor_critic(OBS, gym.spaces.Discrete(3))) is ActorCritic
    # Every parameter has an SB3 counterpart: tests/rl/peers/test_sb3.py.
    sd = _model(state_dependent_std=True, log_std_init=-1.0)
    assert "log_std" not in dict(sd.named_parameters())
    assert torch.equal(sd.log_std_head.bias.detach(), torch.full((2,), -1.0))


@pytest.mark.parametrize("space, match", [
    (gym.spaces.Box(-1, 1, (2, 2), np.float32), r"1-D Box action space.*\(2, 2\)"),
    (gym.spaces.Box(0, 5, (2,), np.int64), "not continuous"),
])
def test_unsupported_box_action_spaces_are_refused_with_a_fix(space, match):
    with pytest.raises(ValueError, match=match):
        build_actor_critic(OBS, space)


def test_log_std_init_must_be_finite():
    with pytest.raises(ValueError, match="log_std_init"):
        build_actor_critic(OBS, ACT, log_std_init=float("nan"))


def test_ppo_loss_through_the_gaussian_head():
    """At the rollout's parameters the ratio is 1 (approx KL 0), the entropy term is the
    Gaussian's, and every loss term has finite gradients."""
    model = _model()
    obs = torch.randn(32, 3)
    with torch.no_grad():
        actions, logp, values = model.act(obs, generator=torch.Generator().manual_seed(7))
    batch = {"obs": obs, "actions": actions, "logprobs": logp, "values": values,
             "advantages": torch.randn(32), "returns": torch.randn(32),
             "mask": torch.ones(32)}
    ppo = dataclasses.replace(PPOConfig(), ent_coef=0.01)
    terms = ppo_loss(model, batch, ppo)
    assert float(terms.approx_kl) == pytest.approx(0.0, abs=1e-6)
    # Entropy of N(mu, 1) per dimension: 0.5 + 0.5 log(2 pi); two dimensions.
    expected = 2 * (0.5 + 0.5 * np.log(2 * np.pi))
    assert float(terms.entropy.detach()) == pytest.approx(expected, rel=1e-6)
    terms.total.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
