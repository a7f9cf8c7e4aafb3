"""``rlscale bench``: throughput suites, reported as ratios against a peer in the same run.

Method (every suite): each configuration is measured ``repeats`` times, the repeats are
interleaved (rep 1 of every config, then rep 2, ...) so that drift in machine load hits
all configs alike, and the table reports medians with the ratio to the suite's reference
measured in the same run. Results go to a CSV beside a JSON file describing the machine.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rl.bench_gns import GNSBenchConfig, bench_gns


def machine_info() -> dict:
    import torch

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    for pkg in ("envpool", "ale_py", "gymnasium", "stable_baselines3"):
        try:
            info[pkg] = __import__(pkg).__version__
        except Exception:
            info[pkg] = None
    return info


@dataclass
class EnvBenchConfig:
    """Environment-only throughput: agent steps/s with random actions."""

    env: str = "Pong"
    """Environment name."""
    backends: str = ""
    """Comma-separated backends; the first is the reference for ratios (empty: every backend
    that can run the env, its default first: Atari envpool,ale,gym-sync,gym-async; CartPole
    gym-vector,gym-sync,gym-async)."""
    num_envs: str = "1,8,32"
    """Comma-separated environment counts."""
    steps: int = 300
    """Vector steps timed per repeat (agent steps = steps x num_envs)."""
    repeats: int = 3
    """Interleaved repeats per configuration; the table shows medians."""
    warmup_steps: int = 20
    """Untimed vector steps after reset."""
    seed: int = 0
    """Base seed."""


def _time_env(env_id: str, backend: str, num_envs: int, cfg: EnvBenchConfig) -> float:
    import envs

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


def interleaved(
    configs: list[dict], measure: Callable[[dict], float], repeats: int, progress=None
) -> list[list[float]]:
    """Run ``measure(config)`` ``repeats`` times per config, interleaving the configs."""
    samples: list[list[float]] = [[] for _ in configs]
    for _ in range(repeats):
        for i, config in enumerate(configs):
            samples[i].append(measure(config))
            if progress is not None:
                progress()
    return samples


def backends_for(env_id: str) -> list[str]:
    """Every backend that can run ``env_id``, its default first."""
    import importlib.util

    import envs
    from envs.make import _BACKEND_PACKAGES, ATARI_BACKENDS, GYM_BACKENDS

    entry = envs.resolve(env_id)
    default = envs.default_backend(entry.kind, entry.target)
    if entry.kind == "atari":
        names = [b for b in ATARI_BACKENDS if b not in _BACKEND_PACKAGES
                 or importlib.util.find_spec(_BACKEND_PACKAGES[b][0]) is not None]
    else:
        names = [b for b in GYM_BACKENDS if b != "gym-vector" or default == "gym-vector"]
    return [default] + [b for b in names if b != default]


def bench_envs(cfg: EnvBenchConfig, progress=None) -> pd.DataFrame:
    backends = [b.strip() for b in cfg.backends.split(",") if b.strip()] or backends_for(cfg.env)
    counts = [int(n) for n in cfg.num_envs.split(",") if n.strip()]
    if not backends or not counts:
        raise ValueError("bench envs needs at least one backend and one num_envs")
    configs = [{"backend": b, "num_envs": n} for n in counts for b in backends]
    samples = interleaved(
        configs,
        lambda c: _time_env(cfg.env, c["backend"], c["num_envs"], cfg),
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


SUITES = {"envs": (EnvBenchConfig, bench_envs)}
SUITES["gns"] = (GNSBenchConfig, bench_gns)  # noise-scale overhead (rl/bench_gns.py)


def _register_suites() -> None:
    from rl import bench_ppo, bench_scaling, learning

    SUITES["ppo"] = (bench_ppo.PPOBenchConfig, bench_ppo.bench_ppo)
    SUITES["scaling"] = (bench_scaling.ScalingBenchConfig, bench_scaling.bench_scaling)
    SUITES["learning"] = (learning.LearningBenchConfig, learning.bench_learning)


_register_suites()


def write_results(df: pd.DataFrame, out_dir: Path, suite: str, config) -> Path:
    """Write ``<suite>.csv`` and ``<suite>.json`` (config + machine) atomically."""
    from rl.storage import atomic_write_json, atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / f"{suite}.csv"
    atomic_write_text(csv_path, df.to_csv(index=False))
    meta = {
        "suite": suite,
        "config": vars(config),
        "machine": machine_info(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic_write_json(out_dir / f"{suite}.json", json.loads(json.dumps(meta, default=str)))
    return csv_path
