"""A vector env made of chunks, of which a prefix is stepped: the environments an adaptive
num_envs grows and pauses in (``rl.train.batch_schedule``, docs/adaptive-batch.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


class EnvChunks:
    """A vector env made of chunks of ``chunk_envs`` environments, of which the first
    ``active`` are stepped (the ``envs`` vector-env interface: reset, step, close, spaces,
    ``frames_per_step``).

    Chunk j of rank r is ``make(chunk_envs, seed + (j x world + r) x chunk_envs)``: chunk 0 is
    the rank's starting env; with one rank and a backend that seeds env i with seed + i (all
    but ``gym-vector``, whose envs share one generator), k chunks hold the environments one
    vector env of k x chunk_envs seeded ``seed`` would hold. ``set_active(k)`` changes the
    prefix and returns its observations: new chunks are reset, paused ones continue their games.
    """

    def __init__(self, first, make: Callable[[int, int], Any], chunk_envs: int, seed: int,
                 rank: int = 0, world: int = 1):
        self.make, self.chunk_envs, self.seed = make, int(chunk_envs), int(seed)
        self.rank, self.world = int(rank), int(world)
        self.chunks = [first]
        self.last_obs: list[np.ndarray | None] = [None]
        self.active = 1
        self.single_observation_space = first.single_observation_space
        self.single_action_space = first.single_action_space
        self.frames_per_step = first.frames_per_step

    @property
    def checkpointable(self) -> bool:
        """Whether every chunk's state can be saved (``rl.runs.envstate``)."""
        return all(getattr(chunk, "checkpointable", False) for chunk in self.chunks)

    @property
    def num_envs(self) -> int:
        return self.active * self.chunk_envs

    def chunk_seed(self, j: int) -> int:
        return self.seed + (j * self.world + self.rank) * self.chunk_envs

    def reset(self, **kwargs):
        outs = [self.chunks[j].reset(**kwargs) for j in range(self.active)]
        for j, (obs, _) in enumerate(outs):
            self.last_obs[j] = obs
        return np.concatenate([o for o, _ in outs]), _concat_info([i for _, i in outs])

    def step(self, actions):
        actions = np.asarray(actions)
        outs = [self.chunks[j].step(actions[j * self.chunk_envs:(j + 1) * self.chunk_envs])
                for j in range(self.active)]
        for j, out in enumerate(outs):
            self.last_obs[j] = out[0]
        obs, reward, terminated, truncated, info = zip(*outs, strict=True)
        return (np.concatenate(obs), np.concatenate(reward), np.concatenate(terminated),
                np.concatenate(truncated), _concat_info(info))

    def set_active(self, k: int) -> np.ndarray:
        """Step the first ``k`` chunks from now on; their current observations."""
        while len(self.chunks) < k:
            chunk = self.make(self.chunk_envs, self.chunk_seed(len(self.chunks)))
            obs, _ = chunk.reset()
            self.chunks.append(chunk)
            self.last_obs.append(obs)
        self.active = k
        return np.concatenate(self.last_obs[:k])

    def close(self) -> None:
        for chunk in self.chunks:
            chunk.close()


def _concat_info(infos: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {key: np.concatenate([i[key] for i in infos]) for key in infos[0]}
