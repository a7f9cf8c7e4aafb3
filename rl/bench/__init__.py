"""Throughput benchmarks (``rlscale bench``), each reported as ratios against a peer
measured in the same run.

Method (every suite): each configuration is measured ``repeats`` times, the repeats are
interleaved (rep 1 of every config, then rep 2, ...) so that drift in machine load hits
all configs alike, and the table reports medians with the ratio to the suite's reference.
``SUITES`` names each suite's config dataclass and function. See BENCHMARKS.md.
"""

from __future__ import annotations

from rl.analysis.learning import LearningBenchConfig, bench_learning
from rl.bench.common import write_results
from rl.bench.envs import EnvBenchConfig, backends_for, bench_envs
from rl.bench.gns import GNSBenchConfig, bench_gns
from rl.bench.ppo import PPOBenchConfig, bench_ppo
from rl.bench.scaling import ScalingBenchConfig, bench_scaling

SUITES = {
    "envs": (EnvBenchConfig, bench_envs),  # environment steps/s per backend
    "gns": (GNSBenchConfig, bench_gns),  # noise-scale overhead
    "ppo": (PPOBenchConfig, bench_ppo),  # PPO iterations: ours against SB3
    "scaling": (ScalingBenchConfig, bench_scaling),  # throughput against num_envs
    "learning": (LearningBenchConfig, bench_learning),  # learning parity against SB3
}

__all__ = ["SUITES", "backends_for", "write_results"]
