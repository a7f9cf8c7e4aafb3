import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from agents import build_actor_critic
from agents.ppo import PPOConfig

sb3 = pytest.importorskip("stable_baselines3")
from stable_baselines3.common.vec_env import DummyVecEnv  # noqa: E402

from rl.peers.sb3 import sb3_parameter_name, sb3_policy_name, sb3_ppo_kwargs  # noqa: E402


def _build(cfg: PPOConfig, num_envs: int = 2, num_steps: int = 16):
    env = DummyVecEnv([lambda: gym.make("CartPole-v1")] * num_envs)
    kwargs = sb3_ppo_kwargs(cfg, num_envs, num_steps)
    return sb3.PPO(sb3_policy_name("mlp"), env, device="cpu", seed=0, **kwargs)


def test_sb3_ppo_matches_our_settings():
    cfg = PPOConfig(num_minibatches=4)
    model = _build(cfg, num_envs=2, num_steps=16)
    assert model.n_steps == 16 and model.n_envs == 2
    assert model.batch_size == 2 * 16 // 4
    assert model.n_epochs == cfg.num_epochs
    assert (model.gamma, model.gae_lambda) == (cfg.gamma, cfg.gae_lambda)
    assert (model.ent_coef, model.vf_coef, model.max_grad_norm) == (
        cfg.ent_coef,
        cfg.vf_coef,
        cfg.max_grad_norm,
    )
    assert model.normalize_advantage is cfg.norm_adv
    assert model.target_kl is None
    assert model.clip_range(1.0) == pytest.approx(cfg.clip_coef)
    assert model.clip_range_vf(1.0) == pytest.approx(cfg.clip_coef)
    assert model.lr_schedule(1.0) == pytest.approx(cfg.learning_rate)
    assert model.lr_schedule(0.5) == pytest.approx(cfg.learning_rate / 2)
    group = model.policy.optimizer.param_groups[0]
    assert isinstance(model.policy.optimizer, torch.optim.Adam)
    assert group["eps"] == cfg.adam_eps and group["lr"] == pytest.approx(cfg.learning_rate)
    assert model.policy.ortho_init
    for net in (model.policy.mlp_extractor.policy_net, model.policy.mlp_extractor.value_net):
        linears = [m for m in net if isinstance(m, nn.Linear)]
        assert [(m.in_features, m.out_features) for m in linears] == [(4, 64), (64, 64)]
        assert all(isinstance(m, nn.Tanh) for m in net if not isinstance(m, nn.Linear))


def test_sb3_options_off():
    cfg = PPOConfig(anneal_lr=False, clip_value_loss=False, norm_adv=False, target_kl=0.015)
    model = _build(cfg)
    assert model.clip_range_vf is None
    assert model.lr_schedule(0.5) == pytest.approx(cfg.learning_rate)
    assert model.normalize_advantage is False
    assert 1.5 * model.target_kl == pytest.approx(0.015)


def test_sb3_adapter_errors():
    with pytest.raises(ValueError, match="not divisible"):
        sb3_ppo_kwargs(PPOConfig(num_minibatches=3), 2, 16)
    with pytest.raises(ValueError, match="impala"):
        sb3_ppo_kwargs(PPOConfig(), 2, 16, network="impala")


# --- update equivalence: our loss and gradient equal SB3's on one batch ----------------------


class _ImageEnv(gym.Env):
    """Stand-in with Atari's spaces (4 stacked 84x84 frames, channels first)."""

    observation_space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    action_space = gym.spaces.Discrete(4)

    def reset(self, seed=None, options=None):
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


def _random_batch(obs_space, action_space, n: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if obs_space.dtype == np.uint8:
        obs = torch.randint(0, 256, (n, *obs_space.shape), generator=g, dtype=torch.uint8)
    else:
        obs = torch.randn(n, *obs_space.shape, generator=g)
    if isinstance(action_space, gym.spaces.Box):  # samples beyond the bounds too
        actions = 1.5 * torch.randn(n, *action_space.shape, generator=g)
    else:
        actions = torch.randint(0, action_space.n, (n,), generator=g)
    return {"obs": obs, "actions": actions,
            "advantages": torch.randn(n, generator=g) * 3 + 0.5,
            "returns": torch.randn(n, generator=g), "values": torch.randn(n, generator=g)}


@pytest.mark.parametrize("network", ["mlp", "nature", "gaussian"])
def test_our_loss_and_gradient_equal_sb3s_on_one_batch(network, one_torch_thread):
    """Same weights, same batch: our PPO loss and its gradient equal SB3's own train() step.

    Aligned documented differences: SB3's value term is mean((R - v)^2) where ours is
    0.5 mean((R - v)^2), so SB3 gets vf_coef / 2; value clipping is off in both (their
    clipping rules differ, rl/peers/sb3.py). Old log-probabilities are perturbed so that
    about half of the ratios fall outside [1 - clip, 1 + clip]: the clipped branch is used.
    "gaussian": the MLP with a Gaussian head on Pendulum's Box actions (log-std, entropy
    bonus and all), against SB3's DiagGaussianDistribution.
    """
    from stable_baselines3.common.logger import Logger

    from agents import normalize_advantages, ppo_loss

    gaussian = network == "gaussian"
    network = "mlp" if gaussian else network
    env_fn = {"mlp": lambda: gym.make("Pendulum-v1" if gaussian else "CartPole-v1"),
              "nature": _ImageEnv}[network]
    num_steps, num_envs = 16, 2
    n = num_steps * num_envs
    cfg = PPOConfig(clip_value_loss=False, num_minibatches=1, num_epochs=1, max_grad_norm=1e9)
    kwargs = sb3_ppo_kwargs(cfg, num_envs, num_steps, network=network)
    kwargs["vf_coef"] = cfg.vf_coef / 2
    model = sb3.PPO(sb3_policy_name(network), DummyVecEnv([env_fn] * num_envs), device="cpu",
                    seed=0, **kwargs)
    model.set_logger(Logger(folder=None, output_formats=[]))
    probe = env_fn()
    ours = build_actor_critic(probe.observation_space, probe.action_space, network)
    theirs = dict(model.policy.named_parameters())
    with torch.no_grad():  # SB3 starts from our weights
        for name, p in ours.named_parameters():
            theirs[sb3_parameter_name(name, network)].copy_(p)

    b = _random_batch(probe.observation_space, probe.action_space, n, seed=1)
    with torch.no_grad():
        logp, _, _ = ours.evaluate(b["obs"], b["actions"])
    b["logprobs"] = logp + 0.2 * torch.randn(n, generator=torch.Generator().manual_seed(2))

    # SB3: fill its rollout buffer (time-major, like a rollout) and run its own train() once,
    # catching the gradient it hands to the optimizer instead of stepping.
    buf = model.rollout_buffer
    buf.reset()
    shape = (num_steps, num_envs)
    buf.observations[:] = b["obs"].numpy().reshape(*shape, *probe.observation_space.shape)
    buf.actions[:] = b["actions"].numpy().reshape(*shape, -1)
    for field, key in (("log_probs", "logprobs"), ("values", "values"),
                       ("advantages", "advantages"), ("returns", "returns")):
        getattr(buf, field)[:] = b[key].numpy().reshape(shape)
    buf.pos, buf.full = num_steps, True
    caught = {}

    def catch_gradient(*args, **kw):
        caught.update({k: p.grad.detach().clone() for k, p in theirs.items()})

    model.policy.optimizer.step = catch_gradient
    model.train()
    sb3_loss = model.logger.name_to_value["train/loss"]

    batch = dict(b, mask=torch.ones(n))
    batch["advantages"] = normalize_advantages(b["advantages"], batch["mask"])
    terms = ppo_loss(ours, batch, cfg)
    terms.total.backward()
    assert 0.2 < float(terms.clip_fraction) < 0.8  # both branches of the clip are exercised
    assert float(terms.total.detach()) == pytest.approx(sb3_loss, rel=1e-5, abs=1e-6)
    for name, p in ours.named_parameters():
        g_sb3 = caught[sb3_parameter_name(name, network)]
        scale = float(p.grad.abs().max())
        torch.testing.assert_close(p.grad, g_sb3, rtol=1e-4, atol=1e-5 * scale, msg=name)


def test_every_gaussian_parameter_has_an_sb3_name():
    """The Gaussian policy (Box actions): every parameter has an SB3 counterpart, log_std
    included."""
    obs = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    act = gym.spaces.Box(np.array([-2.0, -1.0], np.float32), np.array([2.0, 1.0], np.float32))
    model = build_actor_critic(obs, act)
    assert sb3_parameter_name("log_std") == "log_std"
    for name, _ in model.named_parameters():
        sb3_parameter_name(name)
