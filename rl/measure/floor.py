"""The untrained-play floor of a target return: what an untrained policy scores per game.

``untrained_returns`` plays whole games with a given policy on a vector env and returns
each game's return; ``floor_rule`` turns them into an ``UntrainedFloor``, the return a
target must exceed. The rule, its z and its rationale: docs/sweeps.md ("Targets and the
untrained-play floor"). Building the env and the network is the caller's (rl.sweeps).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

FLOOR_Z = 5.0
"""One-sided level of the window mean (in its standard errors) that untrained play must not
reach: 5 sigma, a per-window probability of 2.9e-7 for a normal window mean."""

FLOOR_GAMES = 200
"""Games of untrained play measured (at least; every env plays the same number)."""

FLOOR_ENVS = 16
"""Environments that play them at once."""

FLOOR_SEED = 0
"""Seed of the network's initialization, the environments and the sampled actions."""

FLOOR_MAX_AGENT_STEPS = 20_000_000
"""Give up (an error) when untrained games have not ended after this many agent steps."""


def normal_tail(z: float) -> float:
    """P(Z >= z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


@dataclass(frozen=True)
class UntrainedFloor:
    """The untrained-play floor of one environment (returns per full game, unclipped)."""

    floor: float
    """Targets must be strictly above this: mean + z_eff * sd / sqrt(window)."""
    mean: float
    """Mean return per game of the untrained network."""
    sd: float
    """Standard deviation of the return per game (ddof 1)."""
    skew: float
    """Sample skewness of the return per game (0 when sd is 0)."""
    games: int
    """Games measured."""
    window: int
    """Games in the smoothed return a target is compared with (TrainConfig.return_window)."""
    z: float
    """The level: the floor is z standard errors of the window mean above the mean, plus the
    skew correction (``z_eff``)."""
    seed: int
    """Seed of the measurement (network initialization, environments, actions)."""
    num_envs: int = FLOOR_ENVS
    """Environments that played the games."""

    @property
    def z_eff(self) -> float:
        """z with the first Cornish-Fisher term for a right-skewed window mean: the mean of
        ``window`` games has skewness skew / sqrt(window), and its upper quantile at level z
        sits near z + (z^2 - 1) * skew_window / 6. Left skew is not credited (no lowering)."""
        return effective_z(self.z, self.skew, self.window)

    @property
    def window_tail(self) -> float:
        """The nominal probability that one window mean of untrained play reaches the floor
        (the normal tail at z)."""
        return normal_tail(self.z)

    def crossing_bound(self, windows: int) -> float:
        """An upper bound (union bound) on the probability that untrained play reaches the
        floor in any of ``windows`` consecutive windows of a run (one per finished game)."""
        return min(1.0, windows * self.window_tail)

    def passes(self, target: float) -> bool:
        """Whether ``target`` sits above the floor."""
        return float(target) > self.floor

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UntrainedFloor:
        """From plain JSON (extra keys ignored); ValueError when a field is missing or has
        the wrong type."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        missing = [f.name for f in fields(cls) if f.name not in values and f.name != "num_envs"]
        if missing:
            raise ValueError(f"untrained floor lacks {', '.join(missing)}")
        for key in ("floor", "mean", "sd", "skew", "z"):
            if not isinstance(values[key], (int, float)) or isinstance(values[key], bool):
                raise ValueError(f"untrained floor: {key} must be a number, got {values[key]!r}")
            values[key] = float(values[key])
        for key in ("games", "window", "seed", "num_envs"):
            if key in values and (not isinstance(values[key], int) or isinstance(values[key],
                                                                                 bool)):
                raise ValueError(f"untrained floor: {key} must be an integer, "
                                 f"got {values[key]!r}")
        return cls(**values)


def effective_z(z: float, skew: float, window: int) -> float:
    """``z`` corrected for the skewness of a ``window``-game mean (see ``UntrainedFloor.z_eff``)."""
    skew_window = max(float(skew), 0.0) / math.sqrt(window)
    return z + (z * z - 1.0) * skew_window / 6.0


def floor_rule(returns: Sequence[float] | np.ndarray, window: int, *, z: float = FLOOR_Z,
               seed: int = FLOOR_SEED, num_envs: int = FLOOR_ENVS) -> UntrainedFloor:
    """The floor from untrained returns per game: mean + z_eff * sd / sqrt(window)."""
    x = np.asarray(returns, dtype=float)
    if x.ndim != 1 or len(x) < 2 or not np.isfinite(x).all():
        raise ValueError(f"the floor needs at least 2 finite returns per game, got {len(x)}")
    if not (isinstance(window, int) and window >= 1):
        raise ValueError(f"window must be a positive number of games, got {window!r}")
    if not (math.isfinite(z) and z > 0):
        raise ValueError(f"z must be a positive number of standard errors, got {z!r}")
    mean, sd = float(x.mean()), float(x.std(ddof=1))
    m2 = float(((x - mean) ** 2).mean())
    skew = float(((x - mean) ** 3).mean() / m2 ** 1.5) if m2 > 0 else 0.0
    floor = mean + effective_z(z, skew, window) * sd / math.sqrt(window)
    return UntrainedFloor(floor=floor, mean=mean, sd=sd, skew=skew, games=len(x),
                          window=window, z=float(z), seed=int(seed), num_envs=int(num_envs))


def untrained_returns(env, policy: Callable[[Any], Any], games: int, *,
                      max_agent_steps: int = FLOOR_MAX_AGENT_STEPS) -> np.ndarray:
    """The returns of the first ``ceil(games / num_envs)`` games of every environment of
    ``env`` (an ``envs`` vector env, already seeded) played by ``policy`` (observations ->
    actions, one per environment), from ``env.reset()``.

    Every environment contributes the same number of games, in the order they ended: taking
    the first ``games`` to end over all environments would favour short games. Returns are
    the env's own per-game figures (``info["episode_return"]``: full game, unclipped).
    """
    n = int(env.num_envs)
    per_env = max(1, math.ceil(games / n))
    got: list[list[float]] = [[] for _ in range(n)]
    obs, _ = env.reset()
    steps = 0
    while min(len(g) for g in got) < per_env:
        if steps >= max_agent_steps:
            done = sum(min(len(g), per_env) for g in got)
            raise RuntimeError(
                f"untrained play finished only {done} of {per_env * n} games in {steps:,} "
                "agent steps: its games do not end without training; give the environment a "
                "time limit (e.g. max_episode_steps), or measure with fewer games"
            )
        obs, _, _, _, info = env.step(policy(obs))
        steps += n
        done_mask = np.asarray(info["episode_done"], dtype=bool)
        if done_mask.any():
            returns = np.asarray(info["episode_return"], dtype=float)
            for i in np.flatnonzero(done_mask):
                if len(got[i]) < per_env:
                    got[i].append(float(returns[i]))
    return np.asarray([r for g in got for r in g], dtype=float)
