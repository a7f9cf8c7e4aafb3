"""MinAtar games as rlscale environments (a plugin: see this package's pyproject.toml)."""

from __future__ import annotations

import gymnasium as gym

GAMES = {
    "Asterix": "asterix",
    "Breakout": "breakout",
    "Freeway": "freeway",
    "Seaquest": "seaquest",
    "SpaceInvaders": "space_invaders",
}


class MinAtarEnv(gym.Env):
    """One MinAtar game: observations are 10x10xC bool grids, minimal action set.

    MinAtar's own default sticky-action probability (0.1) is kept; episodes are truncated
    after ``max_episode_steps`` so that a good policy cannot run forever.
    """

    metadata = {"render_modes": []}

    def __init__(self, game: str, sticky_action_prob: float = 0.1, max_episode_steps=10_000):
        from minatar import Environment

        self.game = Environment(game, sticky_action_prob=sticky_action_prob)
        self._actions = list(self.game.minimal_action_set())
        self.action_space = gym.spaces.Discrete(len(self._actions))
        self.observation_space = gym.spaces.Box(
            low=0, high=1, shape=self.game.state_shape(), dtype=bool
        )
        self.max_episode_steps = max_episode_steps
        self._steps = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.game.seed(seed)
        elif self.game.random is None:
            self.game.seed(int(self.np_random.integers(2**31)))
        self.game.reset()
        self._steps = 0
        return self.game.state().astype(bool), {}

    def step(self, action):
        reward, done = self.game.act(self._actions[int(action)])
        self._steps += 1
        truncated = (not done) and self._steps >= self.max_episode_steps
        return self.game.state().astype(bool), float(reward), bool(done), truncated, {}


def register() -> None:
    """Entry point: register every MinAtar game with the testbed's environment registry."""
    from envs import register_env

    for short, game in GAMES.items():
        register_env(f"MinAtar-{short}")(_factory(game))


def _factory(game: str):
    def make(**options) -> gym.Env:
        return MinAtarEnv(game, **options)

    make.__qualname__ = f"make_minatar_{game}"
    return make


__all__ = ["GAMES", "MinAtarEnv", "register"]
