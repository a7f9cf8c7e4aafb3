import gymnasium as gym
import pytest
import torch
from torch import nn

from agents.ppo import PPOConfig
from agents.sb3 import sb3_policy_name, sb3_ppo_kwargs

sb3 = pytest.importorskip("stable_baselines3")
from stable_baselines3.common.vec_env import DummyVecEnv  # noqa: E402


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
