"""The option dataclasses of the analysis commands, apart from the code that runs them.

``rlscale`` builds every command's options from these when it builds its parser (every
``--help``); here they cost no import of stable-baselines3, scipy or the run machinery. The
modules that use them import them from here (``rl.analysis.learning``, ``.evaluate``,
``.checkpoint_noise``, ``.sharpness``), so their old import paths still work.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from agents import PPOConfig
from rl.train.config import PRESETS, TrainConfig, preset_for

IMPLS = ("ours", "sb3")
"""The implementations compared: ours and stable-baselines3's PPO."""


@dataclass
class LearningBenchConfig:
    """Learning parity: ours vs stable-baselines3 PPO, identical settings, N seeds each."""

    env: str = "Breakout"
    """Game (or any environment name; see `rlscale envs`)."""
    num_envs: int = 8
    """Parallel environments per run."""
    num_steps: int = 128
    """Agent steps per environment per rollout."""
    total_agent_steps: int = 1_000_000
    """Budget per run in agent steps (Atari: frames = 4 x agent steps)."""
    seeds: str = "0"
    """Comma-separated seeds, run for every implementation."""
    impls: str = "ours,sb3"
    """Implementations to train (the report covers every run found under runs)."""
    runs: str = "runs/learning/{env}"
    """Folder of the run directories (<impl>-seed<k>); {env} is replaced by the game."""
    train: bool = True
    """Train missing or unfinished runs first (--no-train: only report what is there)."""
    gns_every: int = 10
    """Ours: measure the noise scale every this many iterations (measuring never changes
    training; 0: off)."""
    torch_threads: int = 0
    """torch CPU threads per run (0: torch's default)."""
    device: str = "auto"
    """Device for both implementations: auto, cpu, cuda."""
    align_value_loss: bool = True
    """SB3 gets vf_coef / 2, so its value term (mean squared error, no 0.5) weighs what
    ours (0.5 x mean squared error) does."""
    return_window: int = 20
    """Games in the smoothed return."""
    ci: float = 0.95
    """Confidence level of the intervals; the verdict's test runs at (1 - ci) / 2 per
    measure."""
    span: int = 0
    """Compare over the first this many agent steps, with the runs that reached it (0: the
    longest span that every run reached)."""

    def validate(self) -> None:
        for name in ("num_envs", "num_steps", "total_agent_steps", "return_window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.span, bool) or not isinstance(self.span, int) or self.span < 0:
            raise ValueError(f"span must be an integer >= 0 (0: the span every run reached), "
                             f"got {self.span!r}")
        if not 0.0 < self.ci < 1.0:
            raise ValueError(f"ci must be in (0, 1), e.g. 0.95; got {self.ci}")
        self.seed_list()
        unknown = set(self.impl_list()) - set(IMPLS)
        if unknown or not self.impl_list():
            raise ValueError(f"impls must name some of {', '.join(IMPLS)}; got {self.impls!r}")

    def seed_list(self) -> list[int]:
        try:
            seeds = [int(s) for s in self.seeds.split(",") if s.strip()]
        except ValueError:
            raise ValueError(f"seeds must be comma-separated integers, got {self.seeds!r}") \
                from None
        if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise ValueError(f"seeds must be distinct integers >= 0, got {self.seeds!r}")
        return seeds

    def impl_list(self) -> list[str]:
        return [s.strip() for s in self.impls.split(",") if s.strip()]

    def runs_dir(self) -> Path:
        return Path(self.runs.replace("{env}", self.env.replace("/", "_").replace(":", "_")))

    def train_config(self, impl: str, seed: int) -> TrainConfig:
        """The run's TrainConfig: the env's preset (as `rlscale train`) with these settings."""
        preset, _ = PRESETS[preset_for(self.env)]
        return dataclasses.replace(TrainConfig(), **{
            **preset, "env": self.env, "num_envs": self.num_envs, "num_steps": self.num_steps,
            "total_agent_steps": self.total_agent_steps, "seed": seed, "device": self.device,
            "torch_threads": self.torch_threads, "return_window": self.return_window,
            "gns_every": self.gns_every if impl == "ours" else 0,
            "run_dir": str(self.runs_dir() / f"{impl}-seed{seed}")})

    def ppo_config(self) -> PPOConfig:
        """PPO settings: the env's preset, the same for both implementations."""
        return dataclasses.replace(PPOConfig(), **PRESETS[preset_for(self.env)][1])


@dataclass
class EvalConfig:
    """Evaluation episodes of a trained run."""

    episodes: int = 10
    """Full games to play (all lives of an Atari game), spread over the environments."""
    deterministic: bool = True
    """Greedy actions (argmax of the policy); --stochastic samples from the policy."""
    seed: int = 0
    """Seed of the environments (env i: seed + i) and of the sampled actions."""
    num_envs: int = 8
    """Environments played at once (at most the number of episodes); each plays a fixed
    share of the games, so short games are not over-represented."""
    video_episodes: int = 2
    """Games recorded with --video (played after the evaluation games, on one env)."""
    max_agent_steps: int = 10_000_000
    """Stop after this many agent steps over all environments even if fewer games ended
    (an environment without a time limit would otherwise never end)."""

    def validate(self) -> None:
        for name in ("episodes", "num_envs", "video_episodes", "max_agent_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")


@dataclass
class CheckpointNoiseConfig:
    """B_simple at a run's checkpoints, measured on fresh rollouts of each checkpoint's policy."""

    num_envs: int = 64
    """environments of each measurement rollout (a multiple of groups)"""
    num_steps: int = 128
    """agent steps per environment per rollout; big batch = num_envs x num_steps agent steps"""
    groups: int = 8
    """groups each rollout is split into, along the environment axis (small batch = big / groups)"""
    repeats: int = 12
    """rollouts per checkpoint, all at its parameters; B_simple is the ratio of their means"""
    warmup_rollouts: int = 1
    """rollouts played and discarded first, so that measured states come from inside games"""
    checkpoint_dir: str = ""
    """folder of ckpt_*.pt files to measure (default: the run's checkpoints/ folder)"""
    every: int = 1
    """measure every this many-th checkpoint file (by iteration order); the last is always kept"""
    seed: int = 2024
    """seed of the measurement environments and action sampling (the same for every checkpoint)"""
    device: str = "cpu"
    """device of the measurement"""
    torch_threads: int = 0
    """torch CPU threads while measuring (0: torch's default); 1 is often fastest for small
    networks on a few shared cores"""

    def __post_init__(self) -> None:
        for name in ("num_envs", "num_steps", "groups", "repeats", "every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("warmup_rollouts", "seed", "torch_threads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
        if self.groups < 2 or self.num_envs % self.groups:
            raise ValueError(
                f"groups must be >= 2 and divide num_envs (the split is along environments), got "
                f"groups={self.groups}, num_envs={self.num_envs}; e.g. --num-envs 64 --groups 8")
        if self.repeats < 3:
            raise ValueError(f"repeats must be >= 3 for an interval, got {self.repeats}")

    @property
    def measuring_batch_size(self) -> int:
        return self.num_envs * self.num_steps


@dataclass
class SharpnessConfig:
    """Sharpness of the PPO loss at a run's final checkpoint, on fresh rollouts."""

    num_envs: int = 8
    """environments of the measurement rollouts (the same for every run, so that runs of
    different batch sizes are measured on the same number of samples)"""
    num_steps: int = 128
    """agent steps per environment per measurement rollout (samples = num_envs x num_steps)"""
    repeats: int = 3
    """independent rollouts (fresh environment seeds); the spread gives the standard error"""
    eps: str = "1e-3,5e-4"
    """box sizes of the eps-sharpness, comma-separated (Keskar et al. used 1e-3 and 5e-4)"""
    ascent_steps: int = 10
    """L-BFGS-B iterations per start for the max over the box (Keskar et al. used 10)"""
    ascent_starts: int = 3
    """start points of the max over the box: z = 0 and random points of the box"""
    max_products: int = 200
    """most Hessian-vector products per eigenvalue (Lanczos); an eigenvalue not converged
    by then is kept as a row marked unconverged, its value NaN"""
    eigen_tol: float = 1e-3
    """relative accuracy of the eigenvalues (ARPACK's residual test, eigsh's tol)"""
    seed: int = 12345
    """base seed of the measurement rollouts (repeat r uses seed + r)"""
    device: str = "cpu"
    """device of the measurement"""

    def __post_init__(self) -> None:
        for name in ("num_envs", "num_steps", "repeats", "ascent_steps", "ascent_starts",
                     "max_products"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not 0.0 < self.eigen_tol < 1.0:
            raise ValueError(f"eigen_tol must be in (0, 1), got {self.eigen_tol!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        try:
            values = self.eps_values
        except ValueError:
            values = ()
        if not values or any(not (e > 0 and math.isfinite(e)) for e in values):
            raise ValueError(f"eps must be positive numbers, comma-separated (e.g. 1e-3,5e-4), "
                             f"got {self.eps!r}")

    @property
    def eps_values(self) -> tuple[float, ...]:
        return tuple(float(e) for e in str(self.eps).split(",") if e.strip())
