"""Agents: actor-critic networks, the PPO loss and update.

Imports nothing from ``rl``. The mapping onto stable-baselines3's PPO (its arguments and
parameter names) is the SB3 harness's, in ``rl.peers.sb3``.
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

__all__ = [
    "BATCH_KEYS",
    "MLP",
    "NETWORKS",
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
    "set_learning_rate",
]
