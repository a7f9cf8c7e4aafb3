"""Rollout storage on the learner's device, and the collection loop.

See docs/training-loop.md for the full description.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gymnasium as gym
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


def _host_staging(shape: tuple[int, ...], dtype: torch.dtype, device) -> torch.Tensor:
    """A zeroed host tensor for per-step writes; pinned when the learner is on CUDA."""
    pin = torch.device(device).type == "cuda"
    return torch.zeros(shape, dtype=dtype, pin_memory=pin)


# Order of the flags in RolloutBuffer.host_flags.
FLAGS = ("terminated", "truncated", "autoreset")


class RolloutBuffer:
    """(num_steps, num_envs, ...) tensors of one rollout, allocated once on ``device``.

    ``host_rewards`` (T, N) float32 and ``host_flags`` (3, T, N) bool (``FLAGS`` order)
    are numpy views of host staging memory that ``collect`` fills step by step;
    ``upload()`` copies them into ``rewards``, ``terminated``, ``truncated`` and
    ``autoreset`` on the device.

    ``actions`` starts as int64 (T, N) (discrete actions); ``collect`` reallocates it to
    the shape and dtype of the policy's actions (float32 (T, N, A) for a Gaussian policy)
    at the first rollout that needs it.
    """

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
        self._host_rewards = _host_staging(shape, torch.float32, device)
        self._host_flags = _host_staging((len(FLAGS),) + shape, torch.bool, device)
        self.host_rewards = self._host_rewards.numpy()
        self.host_flags = self._host_flags.numpy()

    def fit_actions(self, action: torch.Tensor) -> None:
        """Make ``actions`` hold actions like ``action`` (one step's, (N, ...))."""
        a = self.actions
        if a.shape[2:] != action.shape[1:] or a.dtype != action.dtype:
            self.actions = torch.zeros(a.shape[:2] + tuple(action.shape[1:]),
                                       dtype=action.dtype, device=a.device)

    def upload(self) -> None:
        """Copy the host staging arrays to the device tensors (two copies in all)."""
        self.rewards.copy_(self._host_rewards)
        flags = self._host_flags.to(self.terminated.device)
        self.terminated.copy_(flags[0])
        self.truncated.copy_(flags[1])
        self.autoreset.copy_(flags[2])


@dataclass
class EpisodeLog:
    """Games finished during one rollout (unclipped returns, lengths in agent steps)."""

    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)


def action_bounds(env) -> tuple[np.ndarray, np.ndarray] | None:
    """(low, high) of the env's Box action space where any bound is finite, else None."""
    space = getattr(env, "single_action_space", None)
    if not isinstance(space, gym.spaces.Box):
        return None
    low = np.asarray(space.low, dtype=np.float32)
    high = np.asarray(space.high, dtype=np.float32)
    if not (np.isfinite(low).any() or np.isfinite(high).any()):
        return None
    return low, high


def env_actions(action: torch.Tensor, bounds: tuple[np.ndarray, np.ndarray] | None
                ) -> np.ndarray:
    """The actions to step the env with: clipped to a Box space's bounds (a new array; the
    sampled ``action`` is left as it is)."""
    out = action.cpu().numpy()
    return out if bounds is None else np.clip(out, bounds[0], bounds[1])


@torch.no_grad()
def collect(env, model, buffer: RolloutBuffer, next_obs: torch.Tensor, generator, device):
    """Fill ``buffer`` with one rollout starting from ``next_obs``.

    Returns ``(next_obs, next_value, episodes)``: the observation after the last step,
    its value (for bootstrapping), and the games that finished. Continuous actions are
    clipped to the action space's bounds when stepping the env; the buffer keeps the
    unclipped sample and its log-probability.
    """
    episodes = EpisodeLog()
    rewards, flags = buffer.host_rewards, buffer.host_flags
    # Separate actor and critic (the MLP): sample with the actor alone, and compute every
    # value of the rollout in one batched pass at the end (same values, far fewer calls).
    defer_values = bool(getattr(model, "defers_value", False))
    # Models that take sampling noise (ActorCritic): one Gumbel draw for the whole rollout
    # instead of a multinomial call per step.
    noise_fn = getattr(model, "sampling_noise", None)
    noise = None if noise_fn is None else noise_fn(
        (buffer.num_steps, buffer.num_envs), generator=generator, device=buffer.actions.device)
    bounds = action_bounds(env)
    for t in range(buffer.num_steps):
        extra = {} if noise is None else {"noise": noise[t]}
        if defer_values:
            action, logprob, _ = model.act(next_obs, generator=generator, with_value=False,
                                           **extra)
        else:
            action, logprob, value = model.act(next_obs, generator=generator, **extra)
            buffer.values[t] = value
        if t == 0:
            buffer.fit_actions(action)
        buffer.obs[t] = next_obs
        buffer.actions[t] = action
        buffer.logprobs[t] = logprob
        obs, reward, terminated, truncated, info = env.step(env_actions(action, bounds))
        rewards[t] = reward
        flags[0, t] = terminated
        flags[1, t] = truncated
        flags[2, t] = info["autoreset"]
        done = info["episode_done"]
        if done.any():
            episodes.returns.extend(info["episode_return"][done].tolist())
            episodes.lengths.extend(info["episode_length"][done].tolist())
        next_obs = to_device(obs, device)
    buffer.upload()
    if defer_values:
        values = model.value(torch.cat([buffer.obs.flatten(0, 1), next_obs]))
        buffer.values.copy_(values[: -buffer.num_envs].view_as(buffer.values))
        next_value = values[-buffer.num_envs :]
    else:
        _, next_value = model(next_obs)
    return next_obs, next_value, episodes
