"""The settings of the throughput suites (``rlscale bench SUITE``), apart from the suites so
that the command line builds its options without importing what they run.

``SUITE_CONFIGS`` names each suite's config dataclass; ``rl.bench.suites.SUITES`` adds the
function that runs it.
"""

from __future__ import annotations

from dataclasses import dataclass

from rl.analysis.configs import LearningBenchConfig
from rl.bench.common import check_ints, int_list
from rl.train.config import TrainConfig


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

    def validate(self) -> None:
        check_ints(self, positive=("steps", "repeats"), nonnegative=("warmup_steps", "seed"))
        self.env_counts()

    def env_counts(self) -> list[int]:
        """The environment counts of ``num_envs`` (ValueError naming it unless positive)."""
        return int_list(self, "num_envs", "1,8,32")


@dataclass
class GNSBenchConfig:
    """Noise-scale overhead: PPO wall time with measurement off, at the default cadence, always."""

    envs: str = "CartPole,Pong"
    """Comma-separated environments (network: auto, i.e. MLP for CartPole, Nature CNN for Pong)."""
    iterations: str = "40,3"
    """Comma-separated PPO iterations per run, one per environment."""
    cadences: str = "0,default,1"
    """Comma-separated gns_every values; "default" is TrainConfig's; 0 (off) is the reference."""
    num_envs: int = 8
    """Environments per run."""
    num_steps: int = 128
    """Steps per environment per rollout (agent steps per iteration = num_envs x num_steps)."""
    gns_groups: int = 8
    """Groups K of the noise-scale measurement."""
    repeats: int = 3
    """Interleaved repeats per configuration; the table shows medians."""
    device: str = "cpu"
    """Device for the runs."""
    seed: int = 0
    """Seed of every run."""

    def validate(self) -> None:
        check_ints(self, positive=("num_envs", "num_steps", "repeats"), nonnegative=("seed",))
        g = self.gns_groups
        if isinstance(g, bool) or not isinstance(g, int) or g < 2:
            raise ValueError(f"gns_groups must be an integer >= 2, got {g!r}")
        self.iteration_counts()
        self.gns_everies()

    def iteration_counts(self) -> list[int]:
        """The PPO iterations of ``iterations``, one per env (ValueError unless positive)."""
        return int_list(self, "iterations", "40,3")

    def gns_everies(self) -> list[int]:
        """The gns_every values of ``cadences``, "default" read as TrainConfig's."""
        items = [c.strip() for c in self.cadences.split(",") if c.strip()]
        if not items or not all(c == "default" or c.isdigit() for c in items):
            raise ValueError(f"cadences must be comma-separated gns_every values, integers "
                             f">= 0 or default (e.g. 0,default,1), got {self.cadences!r}")
        return [TrainConfig().gns_every if c == "default" else int(c) for c in items]


@dataclass
class PPOBenchConfig:
    """End-to-end PPO agent steps/s: ours vs stable-baselines3, identical settings."""

    configs: str = "CartPole:8x128,CartPole:64x128,Pong:8x128"
    """Comma-separated ENV:NUM_ENVSxNUM_STEPS entries."""
    iterations: int = 3
    """Timed PPO iterations per repeat (after one warm-up iteration)."""
    repeats: int = 3
    """Interleaved repeats per (config, implementation); the table shows medians."""
    impls: str = "ours,sb3"
    """Implementations to compare; the ratio is ours / sb3."""
    device: str = "cpu"
    """Torch device for both implementations."""
    threads: int = 0
    """torch CPU threads for both implementations (0: torch's default, one per core)."""
    cpu_bf16: bool = False
    """Ours only: bfloat16 autocast on CPU (TrainConfig.cpu_bf16); SB3 stays fp32."""
    channels_last_memory: bool | None = None
    """Ours only: CNN weights and input in channels-last memory format (TrainConfig option;
    none: the trainer's default, on for the CPU)."""
    seed: int = 0
    """Seed."""

    def validate(self) -> None:
        check_ints(self, positive=("iterations", "repeats"), nonnegative=("threads", "seed"))


@dataclass
class ScalingBenchConfig:
    """End-to-end PPO agent steps/s as num_envs grows, beside the environment-only rate."""

    envs: str = "CartPole"
    """Comma-separated environments (network: auto; backend: --backend or each one's default)."""
    num_envs: str = "8,32,128,512"
    """Comma-separated environment counts."""
    num_steps: int = 128
    """Agent steps per environment per rollout (rollout batch = num_envs x num_steps)."""
    iterations: int = 2
    """Timed PPO iterations per repeat (after one warm-up iteration)."""
    repeats: int = 3
    """Interleaved repeats per configuration; the table shows medians."""
    backend: str | None = None
    """Environment backend for every env (default: each environment's default)."""
    device: str = "cpu"
    """Torch device of the learner."""
    threads: int = 0
    """torch CPU threads (0: torch's default, one per core)."""
    cpu_bf16: bool = False
    """bfloat16 autocast on CPU (TrainConfig.cpu_bf16)."""
    channels_last_memory: bool | None = None
    """CNN weights and input in channels-last memory format (TrainConfig option; none: the
    trainer's default, on for the CPU)."""
    overlap_probe: bool = False
    """envpool Atari only: also time inference + stepping in sync vs async (batch N/2) mode."""
    seed: int = 0
    """Seed."""

    def validate(self) -> None:
        check_ints(self, positive=("num_steps", "iterations", "repeats"),
                   nonnegative=("threads", "seed"))
        self.env_counts()

    def env_counts(self) -> list[int]:
        """The environment counts of ``num_envs`` (ValueError naming it unless positive)."""
        return int_list(self, "num_envs", "8,32,128")

@dataclass
class FlopsBenchConfig:
    """The PPO update's FLOP rate against the core's matrix-product rate, eager against
    torch.compile and bf16 autocast (rl/bench/flops.py)."""

    env: str = "Breakout"
    """Environment whose observation and action spaces (and preset network) the update uses."""
    num_envs: int = 8
    """Environments of the rollout (rollout batch = num_envs x num_steps)."""
    num_steps: int = 128
    """Steps per environment of the rollout."""
    arms: str = "eager,compile,bf16"
    """Comma-separated ways to run the update: eager (fp32, the trainer's CPU default),
    compile (torch.compile of the network, in place), bf16 (TrainConfig.cpu_bf16)."""
    updates: int = 2
    """Whole PPO updates timed per repeat (after one untimed warm-up update per arm)."""
    repeats: int = 3
    """Interleaved repeats per arm; the table shows medians."""
    threads: int = 1
    """torch CPU threads (0: torch's default, one per core)."""
    matmul_size: int = 1024
    """Side of the fp32 square matrix product that measures the peak."""
    seed: int = 0
    """Seed of the network and the synthetic rollout."""

    def validate(self) -> None:
        check_ints(self, positive=("num_envs", "num_steps", "updates", "repeats", "matmul_size"),
                   nonnegative=("threads", "seed"))
        self.arm_names()

    def arm_names(self) -> list[str]:
        """The arms of ``arms`` (ValueError naming an unknown one)."""
        names = [a.strip() for a in self.arms.split(",") if a.strip()]
        known = ("eager", "compile", "bf16")
        bad = [a for a in names if a not in known]
        if not names or bad:
            raise ValueError(f"arms must be comma-separated names from {', '.join(known)}, "
                             f"got {self.arms!r}")
        return list(dict.fromkeys(names))


SUITE_CONFIGS = {
    "envs": EnvBenchConfig,  # environment steps/s per backend
    "gns": GNSBenchConfig,  # noise-scale overhead
    "ppo": PPOBenchConfig,  # PPO iterations: ours against SB3
    "scaling": ScalingBenchConfig,  # throughput against num_envs
    "learning": LearningBenchConfig,  # learning parity against SB3
    "flops": FlopsBenchConfig,  # the update's FLOP rate; torch.compile and bf16
}
