"""Agents: actor-critic networks, the PPO loss and update, and an SB3 adapter.

Imports nothing from ``rl``; stable-baselines3 is imported only when the adapter is called.
"""

from agents.networks import (
    MLP,
    NETWORKS,
    ActorCritic,
    GaussianActorCritic,
    ImpalaCNN,
    NatureCNN,
    ObsPreprocessor,
    SmallCNN,
    build_actor_critic,
    check_box_actions,
    gaussian_entropy,
    gaussian_log_prob,
    infer_channels_last,
    orthogonal_init_,
)
from agents.ppo import (
    BATCH_KEYS,
    PPOBatch,
    PPOConfig,
    PPOLossTerms,
    learning_rate_at,
    make_optimizer,
    masked_mean,
    normalize_advantages,
    ppo_loss,
    ppo_update,
    set_learning_rate,
)
from agents.sb3 import SB3_POLICIES, sb3_parameter_name, sb3_policy_name, sb3_ppo_kwargs

__all__ = [
    "BATCH_KEYS",
    "MLP",
    "NETWORKS",
    "SB3_POLICIES",
    "ActorCritic",
    "GaussianActorCritic",
    "ImpalaCNN",
    "NatureCNN",
    "ObsPreprocessor",
    "PPOBatch",
    "PPOConfig",
    "PPOLossTerms",
    "SmallCNN",
    "build_actor_critic",
    "check_box_actions",
    "gaussian_entropy",
    "gaussian_log_prob",
    "infer_channels_last",
    "learning_rate_at",
    "make_optimizer",
    "masked_mean",
    "normalize_advantages",
    "orthogonal_init_",
    "ppo_loss",
    "ppo_update",
    "sb3_parameter_name",
    "sb3_policy_name",
    "sb3_ppo_kwargs",
    "set_learning_rate",
]
