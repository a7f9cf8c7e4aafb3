"""Open a trained run as a policy: ``load_policy(run_dir)`` -> observation -> action.

The run's config.json is read as data (the environment, its backend and preset, the network)
and its checkpoint with ``weights_only=True``: nothing from the run directory is executed.
See docs/run-directory.md ("Using a trained policy").
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import envs
from agents import PPOConfig, build_actor_critic
from agents.networks import ActorCritic
from envs import atari
from rl.runs.checkpoints import load_checkpoint_file
from rl.runs.errors import RunDirError
from rl.runs.files import read_json
from rl.runs.layout import CONFIG_FILE
from rl.runs.storage import RunDir

__all__ = ["Policy", "RunEnv", "load_policy"]


@dataclass(frozen=True)
class RunEnv:
    """The environment a run trained on, as config.json's ``train`` section names it."""

    env: str
    """Environment name (``rlscale envs``)."""
    backend: str | None = None
    """Backend the run used (None: the environment's default)."""
    env_preset: str | None = None
    """Atari preprocessing preset (None: standard)."""
    network: str = "auto"
    """Network the run trained (auto, nature, impala, small, mlp)."""
    state_dependent_std: bool = False
    """Box actions: the Gaussian's log-std is a head on the actor's features."""
    norm_obs: bool = False
    """The run normalized observations (the policy applies the checkpoint's statistics)."""
    norm_obs_clip: float = 10.0
    """Bound of the normalized observations."""

    @classmethod
    def from_config(cls, config: dict[str, Any], where: str | os.PathLike[str] = CONFIG_FILE
                    ) -> RunEnv:
        train = config.get("train") if isinstance(config, dict) else None
        if not isinstance(train, dict) or not isinstance(train.get("env"), str):
            raise RunDirError(f"{where} is not a PPO run's config (no train.env); give a run "
                              "directory written by `rlscale train`")
        return cls(env=train["env"], backend=train.get("backend"),
                   env_preset=train.get("env_preset"), network=train.get("network", "auto"),
                   state_dependent_std=bool(train.get("state_dependent_std", False)),
                   norm_obs=bool(train.get("norm_obs", False)),
                   norm_obs_clip=float(train.get("norm_obs_clip", 10.0)))

    def make_vec(self, num_envs: int, seed: int) -> envs.VecEnv:
        """``num_envs`` environments with the run's preprocessing (training reward clipping
        included; ``info["episode_return"]`` is the unclipped full-game return)."""
        return envs.make_vec(self.env, num_envs, seed, backend=self.backend,
                             preset=self.env_preset)

    def make_env(self, **options: Any) -> gym.Env:
        """One environment with the run's preprocessing (e.g. ``render_mode="rgb_array"``).

        Atari: gymnasium's ALE env with the preset's wrappers; its reward is unclipped and
        it does not press FIRE after a lost life (``Policy.fire_action`` says which action
        the vector env would press)."""
        return envs.make_env(self.env, preset=self.env_preset, **options)


@dataclass
class Policy:
    """A trained run's policy, ready to act on observations of ``make_env``/``make_vec``.

    ``policy(obs)`` takes one observation and returns one action; ``policy.act(batch)`` takes
    a batch. Deterministic (argmax; the Gaussian's mean for Box actions) unless
    ``deterministic=False``. Observations are raw, as the env emits them: a run trained with
    ``norm_obs`` normalizes them with the checkpoint's statistics (frozen). Box actions come
    clipped to the action space's bounds.
    """

    model: ActorCritic
    """The actor-critic with the checkpoint's weights, in eval mode on ``device``."""
    config: dict[str, Any]
    """config.json, as data."""
    iteration: int
    """The PPO iteration of the checkpoint."""
    run_dir: Path
    env: RunEnv
    device: torch.device
    obs_norm: tuple[np.ndarray, np.ndarray] | None = None
    """(mean, var) of the run's observation normalization, or None."""
    action_bounds: tuple[np.ndarray, np.ndarray] | None = None
    """(low, high) of a Box action space, or None."""

    @property
    def ppo(self) -> PPOConfig:
        """The run's PPO settings (config.json's ``ppo`` section; unknown keys ignored)."""
        names = {f.name for f in dataclasses.fields(PPOConfig)}
        return PPOConfig(**{k: v for k, v in self.config.get("ppo", {}).items() if k in names})

    @property
    def fire_action(self) -> int | None:
        """The action the run's vector env presses after a lost life (Atari presets with
        ``fire_after_life_loss``), else None."""
        entry = envs.resolve(self.env.env)
        if entry.kind != "atari":
            return None
        preset = atari.get_preset(self.env.env_preset)
        if not preset.fire_after_life_loss:
            return None
        return atari.fire_action(entry.target, preset.full_action_space)

    def make_vec(self, num_envs: int, seed: int = 0) -> envs.VecEnv:
        """``num_envs`` environments preprocessed as in training (``RunEnv.make_vec``)."""
        return self.env.make_vec(num_envs, seed)

    def make_env(self, **options: Any) -> gym.Env:
        """One environment preprocessed as in training (``RunEnv.make_env``)."""
        return self.env.make_env(**options)

    @torch.no_grad()
    def act(self, obs: Any, deterministic: bool = True,
            generator: torch.Generator | None = None) -> np.ndarray:
        """Actions (N,) for a batch of observations (N, ...); sampled from the policy with
        ``generator`` (on ``device``) unless ``deterministic``."""
        obs = np.asarray(obs)
        if self.obs_norm is not None:
            mean, var = self.obs_norm
            clip = self.env.norm_obs_clip
            obs = np.clip((obs - mean) / np.sqrt(var + 1e-8), -clip, clip).astype(np.float32)
        batch = torch.as_tensor(obs, device=self.device)
        if batch.is_floating_point():
            batch = batch.float()
        action, _, _ = self.model.act(batch, deterministic=deterministic, generator=generator,
                                      with_value=False)
        out = action.cpu().numpy()
        if self.action_bounds is not None:
            out = np.clip(out, *self.action_bounds)
        return out

    def __call__(self, obs: Any, deterministic: bool = True,
                 generator: torch.Generator | None = None) -> int | np.ndarray:
        """The action for one observation (an int; an array for Box actions)."""
        action = self.act(np.asarray(obs)[None], deterministic, generator)[0]
        return action if self.action_bounds is not None else int(action)


def load_policy(run_dir: str | os.PathLike[str], device: str | torch.device = "cpu", *,
                checkpoint: str | os.PathLike[str] | None = None) -> Policy:
    """The policy of a training run, from its newest good checkpoint (or ``checkpoint``, a
    ``ckpt_*.pt`` file of this run).

    Example (a CartPole run of ``rlscale train --env CartPole --run-dir runs/cp``)::

        policy = load_policy("runs/cp")
        env = policy.make_env()
        obs, _ = env.reset(seed=0)
        obs, reward, terminated, truncated, _ = env.step(policy(obs))

    Raises ``FileNotFoundError`` when ``run_dir`` holds no config.json or no loadable
    checkpoint, ``RunDirError`` (a ``ValueError``) for a config that is not a PPO run's.
    """
    path = Path(run_dir)
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"{path} holds no {CONFIG_FILE}; is it a run directory "
                                "(rlscale train --run-dir ...)?")
    config = read_json(config_path)
    run_env = RunEnv.from_config(config, config_path)
    module, colon, _ = run_env.env.partition(":")
    if colon and module != "gym" and module not in sys.modules:
        raise RunDirError(f"the run's environment {run_env.env!r} comes from the module "
                          f"{module!r}, which is not imported; import it first (rlscale eval "
                          f"--env-module {module}): a run directory's config never makes "
                          "load_policy import code")
    device = torch.device(device)
    if checkpoint is not None:
        loaded = load_checkpoint_file(checkpoint, map_location=device)
    else:
        loaded = RunDir(path).load_latest_checkpoint(map_location=device)
    if loaded is None:
        raise FileNotFoundError(f"{path} has no loadable checkpoint; train it (or resume it) "
                                "until a checkpoint is written")
    state, iteration = loaded
    if "model" not in state:
        raise RunDirError(f"the checkpoint of {path} at iteration {iteration} holds no model "
                          "weights; it was not written by `rlscale train`")
    env = run_env.make_vec(1, 0)
    try:
        obs_space, act_space = env.single_observation_space, env.single_action_space
        if run_env.norm_obs:  # the network saw normalized float observations
            obs_space = gym.spaces.Box(-run_env.norm_obs_clip, run_env.norm_obs_clip,
                                       obs_space.shape, np.float32)
        model = build_actor_critic(obs_space, act_space, run_env.network,
                                   state_dependent_std=run_env.state_dependent_std)
    finally:
        env.close()
    model.load_state_dict(state["model"])
    model.to(device).eval()
    obs_norm = None
    if run_env.norm_obs:
        saved = (state.get("env_norm") or {}).get("obs")
        if saved is None:
            raise RunDirError(f"the run in {path} trained on normalized observations but its "
                              "checkpoint holds no normalization statistics; it was not "
                              "written by this version of `rlscale train`")
        obs_norm = tuple(torch.as_tensor(saved[k]).cpu().double().numpy()
                         for k in ("mean", "var"))
    bounds = None
    if isinstance(act_space, gym.spaces.Box):
        bounds = (np.asarray(act_space.low, np.float32), np.asarray(act_space.high, np.float32))
    return Policy(model=model, config=config, iteration=int(iteration), run_dir=path,
                  env=run_env, device=device, obs_norm=obs_norm, action_bounds=bounds)
