"""``AdviseConfig``, the options of ``rlscale advise``, apart from the probe that uses them so
that the command line builds its options without importing training or benchmarks."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import envs
from agents import PPOConfig
from rl.measure.ppo_noise import TERMS
from rl.train.config import PRESETS, TrainConfig, preset_for

MIN_MEASUREMENTS = 5
"""Fewest noise-scale measurements past the warm-up that advice is given from."""


@dataclass
class AdviseConfig:
    """Batch-size advice from one short probe run and a throughput probe of this machine."""

    env: str = "CartPole"
    """Environment of the probe (any name `rlscale envs` lists)."""
    preset: str | None = None
    """Settings family of the probe and the timings: atari (8 x 128, the reference Atari PPO
    settings) or classic (8 x 32, the fast classic-control settings); default: by the
    environment's kind (plugins such as MinAtar: classic)."""
    num_envs: int | None = None
    """Environments of the probe run (default: the preset's, 8)."""
    num_steps: int | None = None
    """Agent steps per environment per rollout, for the probe and every candidate (default:
    the preset's: 32 classic, 128 Atari)."""
    candidates: str = "1,2,4,8,16,32,64"
    """Comma-separated num_envs of the candidate rollouts (batch = num_envs x num_steps)."""
    learning_rate: float | None = None
    """Adam learning rate of the probe (default: the preset's; constant, not annealed)."""
    budget_s: float = 180.0
    """Wall-clock budget in seconds for both probes together (advice from a run directory:
    the throughput probe only)."""
    measurements: int = 30
    """Noise-scale measurements past the 10-iteration warm-up that the advice averages (the
    first ones; the probe run stops after them or when the budget is spent)."""
    from_iteration: int = 0
    """Advice from a run directory: use its measurements from this PPO iteration on (a later
    stretch of training; 0: from the end of the warm-up)."""
    term: str | None = None
    """Loss term whose B_simple predicts B_crit: total, policy or value (default: the one
    whose ratio spreads least across the study's tasks, the value term in the committed
    study)."""
    tolerance: float = 0.1
    """The sample-efficient pick may be this fraction slower than the fastest."""
    band_sd: float = 1.0
    """Width of the B_crit band in sds of its log (ratio spread and B_simple's interval)."""
    seed: int = 0
    """Seed of the probe run."""
    threads: int = 0
    """torch CPU threads (0: torch's default)."""
    study: str | None = None
    """Results table of the study that calibrates B_crit / B_simple (default: the committed
    reference/study-protocol/results.csv)."""
    run_dir: str | None = None
    """Directory for the probe run (must not exist; default: a new runs/advise-<env>-<time>)."""

    def validate(self) -> None:
        envs.resolve(self.env)  # UnknownEnvError (a ValueError) naming `rlscale envs`
        if isinstance(self.from_iteration, bool) or not isinstance(self.from_iteration, int) \
                or self.from_iteration < 0:
            raise ValueError(f"--from-iteration must be an integer >= 0, got "
                             f"{self.from_iteration!r}")
        for name in ("seed", "threads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"--{name} must be an integer >= 0, got {v!r}")
        for name in ("num_envs", "num_steps", "measurements"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, "
                                 f"got {v!r}")
        if self.measurements < MIN_MEASUREMENTS:
            raise ValueError(f"--measurements must be at least {MIN_MEASUREMENTS}, got "
                             f"{self.measurements}")
        for name in ("budget_s", "tolerance", "band_sd"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0) or (name == "budget_s" and v <= 0):
                raise ValueError(f"--{name.replace('_', '-')} must be a finite number "
                                 f"{'> 0' if name == 'budget_s' else '>= 0'}, got {v}")
        if self.learning_rate is not None and not (math.isfinite(self.learning_rate)
                                                   and self.learning_rate > 0):
            raise ValueError(f"--learning-rate must be > 0, got {self.learning_rate}")
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"--preset must be one of {', '.join(sorted(PRESETS))}, got "
                             f"{self.preset!r}")
        if self.term is not None and self.term not in TERMS:
            raise ValueError(f"--term must be one of {', '.join(TERMS)}, got {self.term!r}")
        self.candidate_envs()

    def candidate_envs(self) -> list[int]:
        """The positive integers of ``candidates`` (ValueError otherwise)."""
        try:
            values = sorted({int(v) for v in self.candidates.split(",") if v.strip()})
        except ValueError:
            values = []
        if not values or values[0] < 1:
            raise ValueError(f"--candidates must be comma-separated positive num_envs (e.g. "
                             f"1,2,4,8), got {self.candidates!r}")
        return values

    def train_configs(self) -> tuple[TrainConfig, PPOConfig]:
        """The probe's settings: the preset of the environment's kind, then these options."""
        train_over, ppo_over = PRESETS[self.preset or preset_for(self.env)]
        cfg = dataclasses.replace(TrainConfig(), **train_over, env=self.env, seed=self.seed)
        if envs.resolve(self.env).kind != "atari":  # the Atari preset's Nature CNN needs 84x84
            cfg = dataclasses.replace(cfg, network="auto")
        if self.num_envs is not None:
            cfg = dataclasses.replace(cfg, num_envs=self.num_envs)
        if self.num_steps is not None:
            cfg = dataclasses.replace(cfg, num_steps=self.num_steps)
        ppo = dataclasses.replace(PPOConfig(), **ppo_over, anneal_lr=False)
        if self.learning_rate is not None:
            ppo = dataclasses.replace(ppo, learning_rate=self.learning_rate)
        return cfg, ppo
