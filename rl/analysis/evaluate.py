"""Evaluation episodes of a trained policy: full-game returns, and videos of a few games.

``evaluate_policy`` plays whole games on the run's own vector env (its preprocessing, the
unclipped full-game return); ``record_videos`` plays a few more on one rendering env with
gymnasium's ``RecordVideo``. ``rlscale eval`` runs both (docs/run-directory.md).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from rl.analysis.configs import EvalConfig
from rl.runs.policy import Policy

__all__ = ["EvalConfig", "EvalResult", "evaluate_policy", "record_videos"]


@dataclass
class EvalResult:
    """The games played: unclipped full-game returns and lengths (agent steps)."""

    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    agent_steps: int = 0
    """Agent steps played, over all environments."""

    @property
    def games(self) -> int:
        return len(self.returns)

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns)) if self.returns else math.nan

    @property
    def std(self) -> float:
        """Standard deviation over games (ddof 0, as SB3's evaluate_policy reports)."""
        return float(np.std(self.returns)) if self.returns else math.nan


def evaluate_policy(policy: Policy, cfg: EvalConfig) -> EvalResult:
    """Play ``cfg.episodes`` whole games with ``policy`` on the run's preprocessing.

    Environment i plays games i, i + n, ... (a fixed quota each, so that the environments
    finishing short games first do not bias the mean). Returns are per full game,
    unclipped, as in the run's ``return_recent``. Stops at ``cfg.max_agent_steps`` agent
    steps in all: ``games`` may then be fewer than asked.
    """
    cfg.validate()
    n = min(cfg.episodes, cfg.num_envs)
    quota = np.array([cfg.episodes // n + (i < cfg.episodes % n) for i in range(n)])
    done = np.zeros(n, dtype=int)
    games: list[tuple[int, int, float, int]] = []  # (env, game, return, length)
    generator = torch.Generator(device=policy.device).manual_seed(cfg.seed)
    env = policy.make_vec(n, cfg.seed)
    try:
        obs, _ = env.reset()
        steps = 0
        while (done < quota).any() and steps < cfg.max_agent_steps:
            obs, _, _, _, info = env.step(policy.act(obs, cfg.deterministic, generator))
            steps += n
            for i in np.flatnonzero(info["episode_done"]):
                if done[i] < quota[i]:
                    games.append((int(i), int(done[i]), float(info["episode_return"][i]),
                                  int(info["episode_length"][i])))
                    done[i] += 1
    finally:
        env.close()
    games.sort()
    return EvalResult([g[2] for g in games], [g[3] for g in games], steps)


def record_videos(policy: Policy, folder: str | Path, cfg: EvalConfig) -> list[Path]:
    """Record ``cfg.video_episodes`` games as mp4 files in ``folder`` (gymnasium's
    ``RecordVideo``, which needs moviepy; classic control renders with pygame). Game k
    starts from seed ``cfg.seed + k``, is cut at ``cfg.max_agent_steps`` and goes to
    ``eval-episode-{k}.mp4`` (replacing a file of that name). Returns the files written."""
    cfg.validate()
    folder = Path(folder)
    # Frames are drawn off-screen: pygame (classic control) needs no display, and without
    # one it would print an error about XDG_RUNTIME_DIR.
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    try:
        env = policy.make_env(render_mode="rgb_array")
    except TypeError as exc:
        raise ValueError(f"{policy.env.env!r} does not take render_mode ({exc}): it cannot be "
                         "recorded; leave out --video") from None
    try:
        env = gym.wrappers.RecordVideo(env, str(folder), episode_trigger=lambda _: True,
                                       name_prefix="eval", disable_logger=True)
    except gym.error.DependencyNotInstalled as exc:
        env.close()
        raise ValueError(f"recording a video needs moviepy: {exc}; pip install moviepy") \
            from None
    fire = policy.fire_action
    generator = torch.Generator(device=policy.device).manual_seed(cfg.seed)
    try:
        for k in range(cfg.video_episodes):
            obs, info = env.reset(seed=cfg.seed + k)
            lives, press_fire, over, steps = info.get("lives"), False, False, 0
            while not over and steps < cfg.max_agent_steps:
                steps += 1
                action = fire if press_fire else policy(obs, cfg.deterministic, generator)
                obs, _, terminated, truncated, info = env.step(action)
                over = bool(terminated or truncated)
                # As the run's vector env does: FIRE after a lost life (Atari presets).
                press_fire = fire is not None and lives is not None \
                    and info.get("lives", lives) < lives
                lives = info.get("lives", lives)
    except gym.error.DependencyNotInstalled as exc:
        raise ValueError(f"{policy.env.env!r} cannot render: {exc}") from None
    finally:
        env.close()
    files = [folder / f"eval-episode-{k}.mp4" for k in range(cfg.video_episodes)]
    return [f for f in files if f.is_file()]
