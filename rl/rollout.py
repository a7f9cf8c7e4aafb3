"""Rollout storage on the learner's device, and the collection loop.

Observations stay in the environment's dtype (uint8 frames, bool grids) until they reach
the device; the network converts them. Per step the loop does a constant amount of
Python work, whatever the number of environments: one forward pass, one host<->device
copy each way, one vector ``env.step``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

_TORCH_DTYPES = {np.dtype(np.uint8): torch.uint8, np.dtype(bool): torch.bool}


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """Copy a numpy batch to ``device`` keeping integer/bool dtypes; floats become float32."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.is_floating_point():
        tensor = tensor.float()
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


class RolloutBuffer:
    """(num_steps, num_envs, ...) tensors of one rollout, allocated once on ``device``."""

    def __init__(self, num_steps: int, num_envs: int, obs_example: torch.Tensor, device):
        self.num_steps, self.num_envs = num_steps, num_envs
        shape = (num_steps, num_envs)
        self.obs = torch.zeros(shape + tuple(obs_example.shape[1:]), dtype=obs_example.dtype,
                               device=device)
        self.actions = torch.zeros(shape, dtype=torch.long, device=device)
        self.logprobs = torch.zeros(shape, device=device)
        self.values = torch.zeros(shape, device=device)
        self.rewards = torch.zeros(shape, device=device)
        self.terminated = torch.zeros(shape, dtype=torch.bool, device=device)
        self.truncated = torch.zeros(shape, dtype=torch.bool, device=device)
        self.autoreset = torch.zeros(shape, dtype=torch.bool, device=device)


@dataclass
class EpisodeLog:
    """Games finished during one rollout (unclipped returns, lengths in agent steps)."""

    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)


@torch.no_grad()
def collect(env, model, buffer: RolloutBuffer, next_obs: torch.Tensor, generator, device):
    """Fill ``buffer`` with one rollout starting from ``next_obs``.

    Returns ``(next_obs, next_value, episodes)``: the observation after the last step,
    its value (for bootstrapping), and the games that finished.
    """
    episodes = EpisodeLog()
    for t in range(buffer.num_steps):
        action, logprob, value = model.act(next_obs, generator=generator)
        buffer.obs[t] = next_obs
        buffer.actions[t] = action
        buffer.logprobs[t] = logprob
        buffer.values[t] = value
        obs, reward, terminated, truncated, info = env.step(action.cpu().numpy())
        buffer.rewards[t] = to_device(reward, device)
        buffer.terminated[t] = to_device(terminated, device)
        buffer.truncated[t] = to_device(truncated, device)
        buffer.autoreset[t] = to_device(info["autoreset"], device)
        done = info["episode_done"]
        if done.any():
            episodes.returns.extend(info["episode_return"][done].tolist())
            episodes.lengths.extend(info["episode_length"][done].tolist())
        next_obs = to_device(obs, device)
    _, next_value = model(next_obs)
    return next_obs, next_value, episodes
