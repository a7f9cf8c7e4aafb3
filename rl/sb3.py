"""stable-baselines3 as a peer: run its PPO with our settings, through the same harness.

``train_sb3`` builds SB3's PPO from a ``TrainConfig`` + ``PPOConfig`` (via
``agents.sb3.sb3_ppo_kwargs``) on SB3's own vector env of the same environment, and
reports the same smoothed return (mean over the last ``return_window`` finished
episodes, all environments) as our trainer, stopping at the same target.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from agents import PPOConfig, sb3_policy_name, sb3_ppo_kwargs
from rl.trainer import TrainConfig


@dataclass
class SB3Result:
    iterations: int
    agent_steps: int
    return_recent: float
    reached_target: bool
    wall_time_s: float


def make_sb3_env(cfg: TrainConfig):
    """SB3's own vector env for the environment (Atari: SB3's standard Atari wrappers)."""
    import envs
    from stable_baselines3.common.env_util import make_atari_env, make_vec_env
    from stable_baselines3.common.vec_env import VecFrameStack

    entry = envs.resolve(cfg.env)
    if entry.kind == "atari":
        import ale_py
        import gymnasium as gym

        gym.register_envs(ale_py)
        env_id = f"{''.join(p.capitalize() for p in entry.target.split('_'))}NoFrameskip-v4"
        venv = make_atari_env(env_id, n_envs=cfg.num_envs, seed=cfg.seed)
        return VecFrameStack(venv, n_stack=4)
    if entry.kind == "plugin":
        return make_vec_env(entry.factory, n_envs=cfg.num_envs, seed=cfg.seed)
    return make_vec_env(entry.target, n_envs=cfg.num_envs, seed=cfg.seed)


def train_sb3(cfg: TrainConfig, ppo: PPOConfig, *, device: str = "cpu") -> SB3Result:
    """Train SB3's PPO with these settings; stop at ``cfg.target_return`` like ``train``."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback

    cfg.validate()
    ppo.validate(cfg.rollout_batch_size)
    import envs

    network = "nature" if envs.resolve(cfg.env).kind == "atari" else "mlp"
    venv = make_sb3_env(cfg)
    model = PPO(sb3_policy_name(network), venv, seed=cfg.seed, device=device, verbose=0,
                **sb3_ppo_kwargs(ppo, cfg.num_envs, cfg.num_steps, network=network))
    recent: deque[float] = deque(maxlen=cfg.return_window)
    state = {"reached": False, "iterations": 0}

    class Harness(BaseCallback):
        """Same smoothed return and stopping rule as rl.trainer."""

        def _on_step(self) -> bool:
            if state["reached"]:
                return False  # first step of the rollout after the target: stop
            for info in self.locals["infos"]:
                if "episode" in info:  # SB3's Monitor: one finished game
                    recent.append(float(info["episode"]["r"]))
            return True

        def _on_rollout_end(self) -> None:
            state["iterations"] += 1
            state["reached"] = (cfg.target_return is not None
                                and len(recent) == cfg.return_window
                                and float(np.mean(recent)) >= cfg.target_return)

    start = time.perf_counter()
    model.learn(total_timesteps=cfg.total_agent_steps,
                callback=Harness())
    venv.close()
    return SB3Result(
        iterations=state["iterations"],
        agent_steps=state["iterations"] * cfg.rollout_batch_size,
        return_recent=float(np.mean(recent)) if recent else math.nan,
        reached_target=state["reached"],
        wall_time_s=time.perf_counter() - start,
    )
