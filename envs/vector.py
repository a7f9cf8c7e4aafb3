"""One vector-env interface over every backend, with the facts a rollout needs.

Backends (envpool, ale-py's ``AtariVectorEnv``, gymnasium's sync/async vector envs and its
numpy-vectorized classic-control envs)
report episode ends, lives, rewards and auto-resets differently. Each is adapted to a
*raw* backend with one contract (:class:`RawVecEnv`):

- ``step`` returns the *unclipped* reward, ``terminated`` only when the game itself is
  over, ``truncated`` at the time limit, and the lives counter (or ``None``);
- auto-reset happens on the step *after* an episode ends ("next-step" mode): that step
  ignores its action, returns the new episode's first observation, reward 0 and no
  termination.

:class:`VecEnv` turns that into the gymnasium vector API (``reset -> (obs, info)``,
``step -> (obs, reward, terminated, truncated, info)``) and adds, in ``info``, under the
same keys for every backend (all arrays of length ``num_envs``):

- ``"autoreset"`` (bool): this step was an auto-reset step. Its transition is not real
  (the action was ignored): a learner masks it out of the loss and of GAE.
- ``"episode_done"`` (bool): a whole game ended on this step (all lives, or the time
  limit), as opposed to the training episode that a life loss ends.
- ``"episode_return"`` (float64): the unclipped return of that game, NaN elsewhere.
- ``"episode_length"`` (int64): its length in agent steps, 0 elsewhere.
- ``"life_loss"`` (bool): a life was lost (``terminated`` is set for it when the preset
  says life loss ends the training episode).

All of it is vectorized numpy: no per-environment Python work per step.
"""

from __future__ import annotations

from typing import Any, Protocol

import gymnasium as gym
import numpy as np


class RawVecEnv(Protocol):
    """What a backend adapter provides (see the module docstring for the contract)."""

    num_envs: int
    single_observation_space: gym.Space
    single_action_space: gym.Space

    def reset(self, seed: int | None) -> np.ndarray: ...

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]: ...

    def close(self) -> None: ...


class VecEnv(gym.vector.VectorEnv):
    """A gymnasium-style vector env with uniform episode statistics and auto-reset flags.

    Args:
        raw: the backend adapter.
        seed: seed used by the first ``reset()`` that is not given one.
        clip_rewards: return rewards clipped to [-1, 1] (training reward); the episode
            statistics always use the unclipped reward.
        life_loss_terminates: set ``terminated`` when a life is lost (the game goes on).
        fire_action: if set, the step after a lost life executes this action in place of
            the agent's (Atari games that wait for FIRE to go on after a life loss).
        frames_per_step: emulator frames per agent step (frame skip), for reporting.
        description: what was built, for logs (env, backend, preset).
    """

    def __init__(
        self,
        raw: RawVecEnv,
        *,
        seed: int,
        clip_rewards: bool = False,
        life_loss_terminates: bool = False,
        fire_action: int | None = None,
        frames_per_step: int = 1,
        description: dict[str, Any] | None = None,
    ):
        self.raw = raw
        self.num_envs = raw.num_envs
        self.single_observation_space = raw.single_observation_space
        self.single_action_space = raw.single_action_space
        self.observation_space = gym.vector.utils.batch_space(
            raw.single_observation_space, raw.num_envs
        )
        self.action_space = gym.vector.utils.batch_space(raw.single_action_space, raw.num_envs)
        self.metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}
        self.clip_rewards = clip_rewards
        self.life_loss_terminates = life_loss_terminates
        self.fire_action = fire_action
        self.frames_per_step = frames_per_step
        self.description = dict(description or {})
        self._seed = seed
        self._seeded = False
        n = self.num_envs
        self._return = np.zeros(n, dtype=np.float64)
        self._length = np.zeros(n, dtype=np.int64)
        self._ended = np.zeros(n, dtype=bool)  # backend episode ended: next step auto-resets
        self._lives: np.ndarray | None = None
        self._fire_next = np.zeros(n, dtype=bool)  # a life was just lost: this step fires

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is None and not self._seeded:
            seed = self._seed
        self._seeded = True
        obs = self.raw.reset(seed)
        self._return[:] = 0.0
        self._length[:] = 0
        self._ended[:] = False
        self._lives = None
        self._fire_next[:] = False
        n = self.num_envs
        info = {
            "autoreset": np.zeros(n, dtype=bool),
            "episode_done": np.zeros(n, dtype=bool),
            "episode_return": np.full(n, np.nan),
            "episode_length": np.zeros(n, dtype=np.int64),
            "life_loss": np.zeros(n, dtype=bool),
        }
        return obs, info

    def step(self, actions):
        actions = np.asarray(actions)
        if actions.shape[:1] != (self.num_envs,):
            raise ValueError(
                f"step() needs one action per environment: expected a leading dimension of "
                f"{self.num_envs}, got shape {actions.shape}"
            )
        if self.fire_action is not None and self._fire_next.any():
            actions = np.where(self._fire_next, self.fire_action, actions).astype(actions.dtype)
        obs, raw_reward, game_over, truncated, lives = self.raw.step(actions)
        raw_reward = np.asarray(raw_reward, dtype=np.float64)
        game_over = np.asarray(game_over, dtype=bool)
        truncated = np.asarray(truncated, dtype=bool)
        autoreset = self._ended.copy()

        real = ~autoreset
        self._return[autoreset] = 0.0
        self._length[autoreset] = 0
        self._return += np.where(real, raw_reward, 0.0)
        self._length += real

        if lives is not None:
            lives = np.asarray(lives)
            if self._lives is None:
                self._lives = lives.copy()
            life_loss = real & (lives < self._lives) & ~game_over
            self._lives = lives.copy()
        else:
            life_loss = np.zeros(self.num_envs, dtype=bool)

        done = game_over | truncated
        episode_return = np.where(done, self._return, np.nan)
        episode_length = np.where(done, self._length, 0)
        self._ended = done
        self._fire_next = life_loss & ~done

        terminated = game_over | life_loss if self.life_loss_terminates else game_over
        reward = np.clip(raw_reward, -1.0, 1.0) if self.clip_rewards else raw_reward
        info = {
            "autoreset": autoreset,
            "episode_done": done,
            "episode_return": episode_return,
            "episode_length": episode_length,
            "life_loss": life_loss,
        }
        return obs, reward.astype(np.float32), terminated, truncated, info

    @property
    def checkpointable(self) -> bool:
        """Whether ``pickle`` may save this env exactly (a trainer still tries, and falls back
        to reseeding on resume if pickling fails)."""
        return bool(getattr(self.raw, "checkpointable", False))

    def close(self, **kwargs):
        self.raw.close()

    def __repr__(self) -> str:
        desc = ", ".join(f"{k}={v}" for k, v in self.description.items())
        return f"VecEnv({desc}, num_envs={self.num_envs})"


class GymnasiumRaw:
    """Adapter for a gymnasium ``VectorEnv`` in next-step auto-reset mode.

    ``lives_key`` names the info entry holding the lives counter (ALE: ``"lives"``).
    ``checkpointable``: the vector env is plain Python/numpy state that ``pickle`` can save
    and restore exactly (default: only for ``SyncVectorEnv``, whose single envs may still
    refuse; a subprocess or native pool never can).
    """

    def __init__(self, vec: gym.vector.VectorEnv, lives_key: str | None = None,
                 checkpointable: bool | None = None):
        mode = vec.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
        if mode != gym.vector.AutoresetMode.NEXT_STEP:
            raise ValueError(f"gymnasium vector env must use next-step auto-reset, not {mode}")
        self.vec = vec
        self.num_envs = vec.num_envs
        self.single_observation_space = vec.single_observation_space
        self.single_action_space = vec.single_action_space
        self.lives_key = lives_key
        if checkpointable is None:
            checkpointable = isinstance(vec, gym.vector.SyncVectorEnv)
        self.checkpointable = checkpointable

    def reset(self, seed):
        obs, _ = self.vec.reset(seed=seed)
        return obs

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.vec.step(actions)
        lives = info.get(self.lives_key) if self.lives_key else None
        return obs, reward, terminated, truncated, lives

    def close(self):
        self.vec.close()


def async_vector_env(fns) -> gym.vector.AsyncVectorEnv:
    """gymnasium's subprocess vector env, started with ``forkserver``.

    Forking a process that already runs threads (envpool's pool, torch's intra-op pool)
    can crash the child; a fork server forks from a clean process instead. The factories
    travel by cloudpickle, so closures work.
    """
    return gym.vector.AsyncVectorEnv(fns, context="forkserver")
