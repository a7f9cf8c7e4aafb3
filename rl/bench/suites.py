"""``SUITES``: each throughput suite's config dataclass and the function that runs it."""

from __future__ import annotations

from rl.analysis.learning import bench_learning
from rl.bench.configs import SUITE_CONFIGS
from rl.bench.envs import bench_envs
from rl.bench.flops import bench_flops
from rl.bench.gns import bench_gns
from rl.bench.ppo import bench_ppo
from rl.bench.scaling import bench_scaling

_RUNS = {"envs": bench_envs, "gns": bench_gns, "ppo": bench_ppo, "scaling": bench_scaling,
         "learning": bench_learning, "flops": bench_flops}

SUITES = {name: (cfg_cls, _RUNS[name]) for name, cfg_cls in SUITE_CONFIGS.items()}
