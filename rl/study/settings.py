"""The study's settings: suites of games, presets of grids and budgets, published values.

A suite names games and which of them get a critical-batch sweep in each preset; a preset
gives, per environment family, the sweep grid and the noise-scale runs; the sharpness
measurement's settings. See docs/study.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CITED",
    "CITED_LABEL",
    "CITED_REFERENCE",
    "DIGITS_SHARPNESS",
    "NO_TARGET",
    "PRESET_NAMES",
    "SHARPNESS_EPS",
    "STUDY_SHARPNESS",
    "STUDY_PRESETS",
    "SUITES",
    "SUPERVISED_GRIDS",
    "SWEEP_TARGETS",
    "Family",
    "NoiseRuns",
    "Suite",
    "SupervisedGrid",
    "SweepGrid",
]

CITED_REFERENCE = "McCandlish et al. 2018, Table 1"
CITED_LABEL = "cited (McCandlish et al. 2018)"

# (task, kind, B_crit, B_simple, unit, note): a number, or (low, high) for a range.
CITED: tuple[tuple[str, str, Any, Any, str, str], ...] = (
    ("MNIST", "supervised", 200, 900, "training examples", "run-averaged"),
    ("SVHN", "supervised", 500, 4_000, "training examples", "run-averaged"),
    ("CIFAR-10", "supervised", 900, 2_000, "training examples", "run-averaged"),
    ("ImageNet", "supervised", 15_000, 30_000, "training examples", "run-averaged"),
    ("Billion Word", "supervised", 100_000, 150_000, "tokens", "run-averaged"),
    ("Atari (several games)", "rl", (400, 8_000), (1_000, 20_000), "as published",
     "range over the games; run-averaged"),
    ("Dota 5v5", "rl", (8e6, math.inf), 2.4e7, "as published",
     "B_crit estimated (lower bound); run-averaged"),
)


@dataclass(frozen=True)
class SweepGrid:
    """A critical-batch sweep of one game: B = num_envs x num_steps agent steps."""

    num_envs: tuple[int, ...]
    num_steps: int
    lrs: tuple[float, ...]
    seeds: int
    budget: int
    """agent steps per run at most"""
    gns_every: int


@dataclass(frozen=True)
class NoiseRuns:
    """Noise-scale runs of one game at one batch size."""

    num_envs: int
    num_steps: int
    budget: int
    gns_every: int
    seeds: int


@dataclass(frozen=True)
class SupervisedGrid:
    """A supervised critical-batch sweep (docs/sweeps.md, "Supervised sweeps"): B in
    examples, lrs at base_batch_size scaled by sqrt(B / base_batch_size)."""

    batch_sizes: tuple[int, ...]
    lrs: tuple[float, ...]
    base_batch_size: int
    seeds: int
    budget: int
    """examples per run at most"""
    gns_every: int
    """optimizer steps between noise-scale measurements"""
    targets: tuple[float, ...]
    """minus the training loss (nats): -0.1 is a training loss of 0.1 (untrained: log 10 =
    2.30); a run stops at the highest (the lowest loss)"""


@dataclass(frozen=True)
class Family:
    """Settings of an environment family in one preset."""

    trainer_preset: str
    sweep: SweepGrid
    noise: NoiseRuns
    ppo: Mapping[str, Any] = field(default_factory=dict)
    train: Mapping[str, Any] = field(default_factory=dict)


_MINATAR_PPO = {"learning_rate": 1e-3}
_MINATAR_TRAIN = {"network": "auto"}
_ATARI_B = (8, 16, 32, 64, 128, 256, 512)

STUDY_PRESETS: dict[str, dict[str, Family]] = {
    "cpu-quick": {
        "classic": Family("classic", SweepGrid((1, 2, 4, 8, 16, 32, 64), 32, (1e-3,), 2,
                                               60_000, 5),
                          NoiseRuns(8, 32, 60_000, 2, 1)),
        "minatar": Family("atari", SweepGrid((4, 8, 16, 32, 64), 128, (1e-3,), 1, 1_000_000, 10),
                          NoiseRuns(8, 128, 750_000, 2, 1), _MINATAR_PPO, _MINATAR_TRAIN),
        "atari": Family("atari", SweepGrid(_ATARI_B, 128, (2.5e-4,), 1, 10_000_000, 10),
                        NoiseRuns(8, 128, 100_000, 5, 1)),
    },
    "gpu": {
        "classic": Family("classic", SweepGrid((1, 2, 4, 8, 16, 32, 64), 32, (5e-4, 1e-3, 2e-3),
                                               4, 200_000, 5),
                          NoiseRuns(8, 32, 200_000, 1, 3)),
        "minatar": Family("atari", SweepGrid((4, 8, 16, 32, 64, 128), 128, (5e-4, 1e-3), 3,
                                             5_000_000, 10),
                          NoiseRuns(8, 128, 5_000_000, 4, 3), _MINATAR_PPO, _MINATAR_TRAIN),
        "atari": Family("atari", SweepGrid(_ATARI_B, 128, (2.5e-4, 1e-3), 2, 10_000_000, 10),
                        NoiseRuns(8, 128, 10_000_000, 10, 2)),
    },
}
PRESET_NAMES = tuple(STUDY_PRESETS)

# Supervised critical-batch sweeps per preset (the study runs stage 1 only: every lr, these
# seeds; reference/supervised-sweeps holds the full two-stage sweeps). cpu-quick: about 35
# CPU-seconds for digits-mlp (the demo's), to training loss 0.1.
SUPERVISED_GRIDS: dict[str, SupervisedGrid] = {
    "cpu-quick": SupervisedGrid((8, 32, 128, 512, 2048), (0.05, 0.1, 0.2, 0.4), 64, 2, 100_000,
                                10, (-0.3, -0.2, -0.1)),
    "gpu": SupervisedGrid((8, 16, 32, 64, 128, 256, 512, 1024, 2048),
                          (0.025, 0.05, 0.1, 0.2, 0.4), 64, 3, 150_000, 5, (-0.3, -0.1, -0.03)),
}

# Target returns of the critical-batch sweeps (a run stops at the highest). Lower targets
# cost no training; at least 3 spanning a factor 2 (rl.analysis.power_laws.MIN_SPAN) give
# power laws.
SWEEP_TARGETS: dict[str, tuple[float, ...]] = {
    "CartPole": (50.0, 75.0, 100.0, 150.0, 200.0),
    "Acrobot": (-200.0, -120.0),
    "MinAtar-Breakout": (2.5, 5.0, 10.0),
    "MinAtar-SpaceInvaders": (15.0, 30.0, 100.0),
    "MinAtar-Freeway": (10.0, 20.0, 40.0),
    "MinAtar-Asterix": (2.5, 5.0, 15.0),
    "MinAtar-Seaquest": (2.5, 5.0, 15.0),
    "Pong": (0.0, 18.0),
    "Breakout": (50.0, 200.0),
    "SpaceInvaders": (500.0, 1000.0),
    "BeamRider": (1000.0, 2500.0),
    "Qbert": (2500.0, 10000.0),
    "Seaquest": (500.0, 1500.0),
}
# Noise-scale runs stop at the game's known maximum return, else at this (never reached).
NO_TARGET = 1e9


@dataclass(frozen=True)
class Suite:
    description: str
    games: tuple[str, ...]
    sweep_games: Mapping[str, tuple[str, ...]]
    """preset -> the games that get a critical-batch sweep"""
    supervised_sweeps: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """preset -> the supervised tasks (``rl.measure.supervised.SUPERVISED_TASKS``) that get a
    critical-batch sweep"""


_MINATAR = ("MinAtar-Breakout", "MinAtar-SpaceInvaders", "MinAtar-Freeway", "MinAtar-Asterix",
            "MinAtar-Seaquest")
_ATARI_PAPER = ("Pong", "Breakout", "SpaceInvaders", "BeamRider", "Qbert", "Seaquest")

SUITES: dict[str, Suite] = {
    "classic": Suite("classic control", ("CartPole", "Acrobot"),
                     {"cpu-quick": ("CartPole", "Acrobot"), "gpu": ("CartPole", "Acrobot")}),
    "minatar": Suite("MinAtar games (the rlscale-minatar plugin)", _MINATAR,
                     {"cpu-quick": (), "gpu": _MINATAR}),
    "atari-paper": Suite("Atari games of McCandlish et al. 2018", _ATARI_PAPER,
                         {"cpu-quick": (), "gpu": _ATARI_PAPER}),
    "demo": Suite("CartPole sweep, two MinAtar games and a digits-mlp sweep (rlscale demo on a "
                  "CPU)", ("CartPole", "MinAtar-Breakout", "MinAtar-SpaceInvaders"),
                  {"cpu-quick": ("CartPole",), "gpu": ("CartPole",)},
                  {"cpu-quick": ("digits-mlp",), "gpu": ("digits-mlp", "digits-cnn")}),
}


# The study's sharpness measurement: cheap enough for the demo (seconds per sweep).
STUDY_SHARPNESS = dict(num_envs=8, num_steps=64, repeats=2, max_products=200, ascent_steps=5)
DIGITS_SHARPNESS = dict(batch_sizes=(32, 128, 512), epochs=20, seeds=(0, 1), max_products=200,
                        ascent_steps=5)
SHARPNESS_EPS = 1e-3
