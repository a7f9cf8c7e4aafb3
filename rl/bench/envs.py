"""``rlscale bench envs``: environment steps per second of each backend that runs an env.
"""

from __future__ import annotations

import importlib.util
import statistics
import time

import numpy as np
import pandas as pd

import envs
from envs.make import _BACKEND_PACKAGES, ATARI_BACKENDS, GYM_BACKENDS
from rl.bench.common import interleaved
from rl.bench.configs import EnvBenchConfig


def time_env(env_id: str, backend: str, num_envs: int, cfg: EnvBenchConfig) -> float:
    env = envs.make_vec(env_id, num_envs, seed=cfg.seed, backend=backend)
    try:
        env.reset()
        n_actions = env.single_action_space.n
        rng = np.random.default_rng(cfg.seed)
        actions = rng.integers(0, n_actions, size=(cfg.warmup_steps + cfg.steps, num_envs))
        for t in range(cfg.warmup_steps):
            env.step(actions[t])
        start = time.perf_counter()
        for t in range(cfg.warmup_steps, cfg.warmup_steps + cfg.steps):
            env.step(actions[t])
        elapsed = time.perf_counter() - start
    finally:
        env.close()
    return cfg.steps * num_envs / elapsed


def backends_for(env_id: str) -> list[str]:
    """Every backend that can run ``env_id``, its default first."""

    entry = envs.resolve(env_id)
    default = envs.default_backend(entry.kind, entry.target)
    if entry.kind == "atari":
        names = [b for b in ATARI_BACKENDS if b not in _BACKEND_PACKAGES
                 or importlib.util.find_spec(_BACKEND_PACKAGES[b][0]) is not None]
    else:
        names = [b for b in GYM_BACKENDS if b != "gym-vector" or default == "gym-vector"]
    return [default] + [b for b in names if b != default]


def bench_envs(cfg: EnvBenchConfig, progress=None) -> pd.DataFrame:
    cfg.validate()
    backends = [b.strip() for b in cfg.backends.split(",") if b.strip()] or backends_for(cfg.env)
    counts = cfg.env_counts()
    if not backends or not counts:
        raise ValueError("bench envs needs at least one backend and one num_envs")
    configs = [{"backend": b, "num_envs": n} for n in counts for b in backends]
    samples = interleaved(
        configs,
        lambda c: time_env(cfg.env, c["backend"], c["num_envs"], cfg),
        cfg.repeats,
        progress,
    )
    rows = []
    for config, s in zip(configs, samples, strict=True):
        rows.append(
            {
                "env": cfg.env,
                **config,
                "agent_steps_per_s": statistics.median(s),
                "min": min(s),
                "max": max(s),
                "repeats": len(s),
            }
        )
    df = pd.DataFrame(rows)
    ref = df[df.backend == backends[0]].set_index("num_envs")["agent_steps_per_s"]
    df[f"ratio_to_{backends[0]}"] = df.agent_steps_per_s / df.num_envs.map(ref)
    return df
