"""Running observation and reward normalization for a vector env (``NormalizeVec``).

The same scheme as gymnasium's ``NormalizeObservation`` / ``NormalizeReward`` wrappers and
stable-baselines3's ``VecNormalize`` (whose defaults it takes: epsilon 1e-8, clipping at
10):

- observations: ``clip((obs - mean) / sqrt(var + eps), -clip_obs, clip_obs)`` with the
  running mean and variance of every observation seen (updated before normalizing);
- rewards: ``clip(reward / sqrt(var_R + eps), -clip_reward, clip_reward)`` where var_R is
  the running variance of the discounted return ``R <- gamma R + reward`` of each
  environment, reset to 0 when its episode ends. No mean is subtracted (the reward's sign
  and the optimal policy stay the same).

Auto-reset steps (``info["autoreset"]``, whose action the env ignored and whose reward is
0) do not enter the return statistics. The episode statistics in ``info``
(``episode_return``) stay the environment's own, unnormalized.

The wrapper's state is plain numpy (``rl.runs.envstate`` saves it with the env);
``state_dict`` / ``load_state_dict`` carry the statistics alone, for a trainer that
rebuilds the environments on resume but must keep the normalization it trained with.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["NormalizeVec", "RunningMeanStd"]


class RunningMeanStd:
    """Running mean and (population) variance of batches, merged by Chan et al.'s rule.

    Starts at mean 0, variance 1 and a count of ``epsilon`` (as SB3's), so the first
    batch dominates without a division by zero.
    """

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4):
        self.mean = np.zeros(shape, dtype=np.float64)
        self.var = np.ones(shape, dtype=np.float64)
        self.count = float(epsilon)

    def update(self, batch: np.ndarray) -> None:
        """Merge a batch (leading axis = samples)."""
        batch = np.asarray(batch, dtype=np.float64)
        n = batch.shape[0]
        if n == 0:
            return
        b_mean, b_var = batch.mean(axis=0), batch.var(axis=0)
        delta = b_mean - self.mean
        total = self.count + n
        m2 = self.var * self.count + b_var * n + delta**2 * self.count * n / total
        self.mean = np.asarray(self.mean + delta * n / total, dtype=np.float64)
        self.var = np.asarray(m2 / total, dtype=np.float64)
        self.count = total

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.copy(), "var": self.var.copy(), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mean = np.asarray(state["mean"], dtype=np.float64)
        var = np.asarray(state["var"], dtype=np.float64)
        if mean.shape != self.mean.shape or var.shape != self.var.shape:
            raise ValueError(f"saved normalization statistics have shape {mean.shape}, this "
                             f"environment's {self.mean.shape}: they belong to another env")
        self.mean, self.var, self.count = mean.copy(), var.copy(), float(state["count"])


class NormalizeVec(gym.vector.VectorEnv):
    """Normalize the observations and/or rewards of a vector env (see the module doc).

    Args:
        env: an ``envs.VecEnv`` (or anything with its interface and ``info`` keys).
        obs: normalize observations (a Box observation space is needed).
        reward: scale rewards by the running standard deviation of the discounted return.
        gamma: the discount of that return (the learner's gamma).
        clip_obs, clip_reward: bounds of the normalized values (> 0).
        epsilon: added to the variances.
        training: update the statistics (False: normalize with frozen statistics).
    """

    def __init__(self, env, *, obs: bool = True, reward: bool = True, gamma: float = 0.99,
                 clip_obs: float = 10.0, clip_reward: float = 10.0, epsilon: float = 1e-8,
                 training: bool = True):
        for name, value in (("clip_obs", clip_obs), ("clip_reward", clip_reward),
                            ("epsilon", epsilon)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        space = env.single_observation_space
        if obs and not isinstance(space, gym.spaces.Box):
            raise ValueError(f"observation normalization needs a Box observation space, got "
                             f"{space}; turn off norm_obs or flatten the observations")
        self.env = env
        self.num_envs = env.num_envs
        self.normalize_obs, self.normalize_reward = bool(obs), bool(reward)
        self.gamma, self.epsilon = float(gamma), float(epsilon)
        self.clip_obs, self.clip_reward = float(clip_obs), float(clip_reward)
        self.training = bool(training)
        self.single_action_space = env.single_action_space
        self.action_space = env.action_space
        if self.normalize_obs:
            self.single_observation_space = gym.spaces.Box(
                -self.clip_obs, self.clip_obs, shape=space.shape, dtype=np.float32)
            self.observation_space = gym.vector.utils.batch_space(
                self.single_observation_space, self.num_envs)
        else:
            self.single_observation_space = space
            self.observation_space = env.observation_space
        self.metadata = dict(getattr(env, "metadata", {}))
        self.frames_per_step = getattr(env, "frames_per_step", 1)
        self.description = {**getattr(env, "description", {}),
                            "normalize": "+".join(k for k, on in (("obs", obs),
                                                                  ("reward", reward)) if on)}
        self.obs_rms = RunningMeanStd(tuple(space.shape)) if self.normalize_obs else None
        self.ret_rms = RunningMeanStd(()) if self.normalize_reward else None
        self.returns = np.zeros(self.num_envs, dtype=np.float64)

    @property
    def checkpointable(self) -> bool:
        return bool(getattr(self.env, "checkpointable", False))

    def _obs(self, obs: np.ndarray) -> np.ndarray:
        if not self.normalize_obs:
            return obs
        if self.training:
            self.obs_rms.update(obs)
        out = (np.asarray(obs, dtype=np.float64) - self.obs_rms.mean) / np.sqrt(
            self.obs_rms.var + self.epsilon)
        return np.clip(out, -self.clip_obs, self.clip_obs).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.returns[:] = 0.0
        return self._obs(obs), info

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        if self.normalize_reward:
            real = ~np.asarray(info.get("autoreset", np.zeros(self.num_envs, dtype=bool)))
            self.returns = np.where(real, self.returns * self.gamma + reward, 0.0)
            if self.training:
                self.ret_rms.update(self.returns[real])
            scaled = np.asarray(reward, dtype=np.float64) / math.sqrt(
                float(self.ret_rms.var) + self.epsilon)
            reward = np.clip(scaled, -self.clip_reward, self.clip_reward).astype(np.float32)
            self.returns[np.asarray(terminated) | np.asarray(truncated)] = 0.0
        return self._obs(obs), reward, terminated, truncated, info

    def state_dict(self) -> dict[str, Any]:
        """The running statistics (not the per-environment returns in progress)."""
        return {"obs": None if self.obs_rms is None else self.obs_rms.state_dict(),
                "reward": None if self.ret_rms is None else self.ret_rms.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue with saved statistics (``state_dict``'s); ValueError if they do not fit."""
        for name, rms in (("obs", self.obs_rms), ("reward", self.ret_rms)):
            saved = state.get(name)
            if (saved is None) != (rms is None):
                saved_has = "has" if saved is not None else "lacks"
                env_does = "does not" if rms is None else "does"
                raise ValueError(f"the saved normalization {saved_has} {name} statistics and "
                                 f"this env {env_does} normalize them: resume with the same "
                                 "norm_obs/norm_reward")
            if rms is not None:
                rms.load_state_dict(saved)

    def close(self, **kwargs):
        self.env.close()

    def __repr__(self) -> str:
        return f"NormalizeVec({self.env!r}, obs={self.normalize_obs}, " \
               f"reward={self.normalize_reward})"
