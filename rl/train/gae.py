"""Generalized advantage estimation (Schulman et al. 2016) for next-step auto-reset rollouts.

See docs/training-loop.md for the full description.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_value: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    autoreset: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``(advantages, returns, mask)``, each (T, N) float32.

    ``returns = advantages + values`` are the value-function targets (TD(lambda)).
    """
    num_steps = rewards.shape[0]
    rewards = rewards.float()
    values = values.float()
    not_terminal = 1.0 - terminated.float()
    # The trace continues into step t + 1 only if step t ended nothing.
    continues = 1.0 - (terminated | truncated).float()
    mask = 1.0 - autoreset.float()

    next_values = torch.cat([values[1:], next_value.float().unsqueeze(0)], dim=0)
    deltas = rewards + gamma * next_values * not_terminal - values

    advantages = torch.zeros_like(values)
    running = torch.zeros_like(next_value, dtype=torch.float32)
    for t in reversed(range(num_steps)):
        running = deltas[t] + gamma * gae_lambda * continues[t] * running
        advantages[t] = running
    advantages *= mask
    returns = (advantages + values) * mask
    return advantages, returns, mask
