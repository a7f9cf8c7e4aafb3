"""Map a ``PPOConfig`` onto stable-baselines3's PPO, to run a peer with the same settings.

    from stable_baselines3 import PPO
    model = PPO(sb3_policy_name("mlp"), vec_env, **sb3_ppo_kwargs(cfg, vec_env.num_envs, 128))

Known differences that remain (checked against SB3 2.9):
* Value loss: SB3 uses mean((R - v')^2) with v' the clipped prediction alone; ours is
  0.5 * mean(max(unclipped, clipped)). With the same vf_coef, SB3 weights the value term
  about twice as much.
* Learning-rate annealing: SB3 updates its progress after collecting a rollout, so its k-th
  update (0-based) uses lr * (1 - (k + 1) / K), one iteration behind ``learning_rate_at``.
* SB3 does not mask auto-reset steps (it uses same-step resets, so it has none to mask).
* target_kl: SB3 stops when a minibatch's approx KL exceeds 1.5 x its target_kl (checked
  before the step, as ours); the adapter passes cfg.target_kl / 1.5 so the thresholds agree.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from agents.ppo import PPOConfig

__all__ = ["SB3_POLICIES", "sb3_parameter_name", "sb3_policy_name", "sb3_ppo_kwargs"]

SB3_POLICIES = {"mlp": "MlpPolicy", "nature": "CnnPolicy"}
"""Our network names that SB3 has a built-in equivalent for, and that policy's name."""


def sb3_policy_name(network: str = "mlp") -> str:
    """SB3 policy name for one of our networks ("mlp" or "nature")."""
    if network not in SB3_POLICIES:
        raise ValueError(
            f"SB3 has no built-in equivalent of network={network!r}; use one of "
            f"{', '.join(SB3_POLICIES)}"
        )
    return SB3_POLICIES[network]


# Our ActorCritic parameter-name prefixes and SB3's (ActorCriticPolicy.named_parameters(),
# which lists a shared features extractor once, as features_extractor).
_SB3_PREFIXES = {
    "mlp": (("actor_trunk.net.", "mlp_extractor.policy_net."),
            ("critic_trunk.net.", "mlp_extractor.value_net."),
            ("policy_head.", "action_net."), ("value_head.", "value_net."),
            ("log_std", "log_std")),  # a Gaussian policy's (Box actions)
    "nature": (("actor_trunk.convs.", "features_extractor.cnn."),
               ("actor_trunk.fc.", "features_extractor.linear.0."),
               ("policy_head.", "action_net."), ("value_head.", "value_net.")),
}


def sb3_parameter_name(name: str, network: str = "mlp") -> str:
    """SB3's name for our parameter ``name`` (e.g. ``policy_head.weight`` -> ``action_net.weight``).

    The two layouts hold the same tensors with the same shapes, so weights copy one to one.
    """
    sb3_policy_name(network)
    for ours, theirs in _SB3_PREFIXES[network]:
        if name.startswith(ours):
            return theirs + name[len(ours):]
    raise ValueError(f"no SB3 counterpart for parameter {name!r} of network={network!r}")


def sb3_ppo_kwargs(
    cfg: PPOConfig, num_envs: int, num_steps: int, *, network: str = "mlp"
) -> dict[str, Any]:
    """Keyword arguments for ``stable_baselines3.PPO(policy, env, **kwargs)``.

    ``num_envs`` must be the vector env's size: SB3's rollout is n_steps x num_envs.
    """
    from stable_baselines3.common.utils import LinearSchedule

    sb3_policy_name(network)
    rollout = num_envs * num_steps
    batch_size = cfg.minibatch_size(rollout)
    learning_rate: Any = (
        LinearSchedule(cfg.learning_rate, 0.0, 1.0) if cfg.anneal_lr else cfg.learning_rate
    )
    policy_kwargs: dict[str, Any] = {
        "ortho_init": True,
        "optimizer_class": torch.optim.Adam,
        "optimizer_kwargs": {"eps": cfg.adam_eps},
    }
    if network == "mlp":
        policy_kwargs["net_arch"] = {"pi": [64, 64], "vf": [64, 64]}
        policy_kwargs["activation_fn"] = nn.Tanh
    else:  # nature: SB3's NatureCNN (512 features) shared by linear policy and value heads
        policy_kwargs["net_arch"] = []
        policy_kwargs["features_extractor_kwargs"] = {"features_dim": 512}
    return {
        "n_steps": num_steps,
        "batch_size": batch_size,
        "n_epochs": cfg.num_epochs,
        "learning_rate": learning_rate,
        "gamma": cfg.gamma,
        "gae_lambda": cfg.gae_lambda,
        "clip_range": cfg.clip_coef,
        "clip_range_vf": cfg.clip_coef if cfg.clip_value_loss else None,
        "normalize_advantage": cfg.norm_adv,
        "ent_coef": cfg.ent_coef,
        "vf_coef": cfg.vf_coef,
        "max_grad_norm": cfg.max_grad_norm,
        "target_kl": None if cfg.target_kl is None else cfg.target_kl / 1.5,
        "policy_kwargs": policy_kwargs,
    }
