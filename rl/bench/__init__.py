"""Throughput benchmarks (``rlscale bench``), each reported as ratios against a peer
measured in the same run.

Method (every suite): each configuration is measured ``repeats`` times, the repeats are
interleaved (rep 1 of every config, then rep 2, ...) so that drift in machine load hits
all configs alike, and the table reports medians with the ratio to the suite's reference.
``rl.bench.suites.SUITES`` names each suite's config dataclass and function (the configs
alone: ``rl.bench.configs``, light to import). See BENCHMARKS.md.
"""

from __future__ import annotations

from rl.bench.common import write_results
from rl.bench.envs import backends_for

__all__ = ["backends_for", "write_results"]
