"""A sweep's spec as data, and the settings every part of a sweep derives from it.

``SweepSpec`` (the validated spec), its errors, the known maximum returns, and the helpers
that turn a spec into each run's training settings (``env_settings``, ``batch_shapes``,
``scaled_lr``; a supervised sweep's: ``supervised_settings``). See docs/sweeps.md.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import envs
from rl.measure.supervised_config import SUPERVISED_TASKS
from rl.train.config import PRESETS, TrainConfig, parse_count, preset_for

# The largest return a game can have, by the rules of the environment (unclipped, per full
# game). A target above it can never be reached. Environments missing here are not checked.
KNOWN_MAX_RETURN: dict[str, tuple[float, str]] = {
    "CartPole": (500.0, "+1 per step, and CartPole-v1 ends every game at 500 steps"),
    "Acrobot": (0.0, "-1 per step until the goal, 0 on the step that reaches it"),
    "MountainCar": (-1.0, "-1 on every step, the last one included"),
    "Pong": (21.0, "a game ends when one side reaches 21 points, +1 per point won"),
    "Boxing": (100.0, "the score difference; a knockout at 100 points ends the game"),
}

_GYM_IDS = {"CartPole-v1": "CartPole", "Acrobot-v1": "Acrobot", "MountainCar-v0": "MountainCar"}

SPEC_KEYS: dict[str, str] = {
    "env": "environment name or list of names (see `rlscale envs`), or supervised task(s): "
           f"{', '.join(SUPERVISED_TASKS)}",
    "vary": "which factor of B = num_envs x num_steps varies: num_envs (default) or num_steps",
    "num_envs": "parallel environments: a list when vary = num_envs, else one value",
    "num_steps": "steps per environment per rollout: a list when vary = num_steps, else one",
    "lrs": "learning-rate grid (at every batch size, or at base_batch_size with a rule)",
    "base_lr": "synonym of lrs = [base_lr]",
    "lr_rule": "constant (default), sqrt or linear scaling of lrs from base_batch_size",
    "base_batch_size": "the batch size (agent steps) at which lrs are given, with a rule",
    "extra_lrs": "table {batch size = [lrs]}: further learning rates at that batch size only, "
                 "as given (no lr_rule), e.g. to extend a grid whose best lr is at its edge",
    "seeds": "list of seeds, or a count n meaning 0..n-1 (default [0]); with best_lr_seeds, "
             "the seeds of the lr grid (stage 1)",
    "best_lr_seeds": "seeds in all at each batch size's best lr (stage 2, default none): once "
                     "a batch size's grid runs have all ended, its best lr (the fit's rule, at "
                     "the highest target) gets further seeds up to this count",
    "targets": "target returns (a run stops once it reaches the highest); each must be above "
               "its environment's untrained-play floor (untrained_floor.json)",
    "allow_target_below_floor": "run targets at or below the untrained-play floor anyway "
                                "(default false: refused); recorded in untrained_floor.json",
    "budget": "agent steps per run at most (default: the preset's total_agent_steps)",
    "preset": "settings family: classic or atari (default: by environment kind)",
    "parallel": "runs at once (default 1; with PBT the population, as CPUs allow)",
    "out": "the sweep directory",
    "backend": "local (default) or ray",
    "address": "ray: address of an existing cluster (default: start a local instance)",
    "cpus_per_trial": "ray: CPUs per run (default 1); local runs get cores // parallel",
    "retry_failed": "rerun runs whose status is failed (default false: only interrupted ones)",
    "scheduler": "grid (default: every run of the grid) or pbt (population based training, "
                 "backend ray; see rl/sweeps/pbt/)",
    "pbt": "table of PBT settings (scheduler = 'pbt'): population, perturbation_interval, "
           "quantile_fraction, resample_probability, metric, synchronous, hyperparams",
    "ppo": "table of PPOConfig overrides",
    "train": "table of TrainConfig overrides",
    "batch_sizes": "supervised tasks: the batch sizes (examples), instead of num_envs/num_steps",
    "supervised": "supervised tasks: table of SupervisedConfig overrides",
}

SUPERVISED_KIND = "supervised"
"""The kind (``resolve_env``) of a supervised task (``rl.measure.supervised.SUPERVISED_TASKS``)."""

# SupervisedConfig fields the sweep sets for every run: not allowed in [supervised].
SWEEP_SET_SUPERVISED = {
    "dataset": "env (the task)", "model": "env (the task)", "batch_size": "batch_sizes",
    "lr": "lrs", "seed": "seeds", "target": "targets", "total_steps": "budget",
    "epochs": "budget", "sampling": "(a sweep draws every batch iid, with replacement)",
}

SUPERVISED_SWEEP_DEFAULTS: dict[str, Any] = {"eval_per_octave": 32, "diverge_factor": 10.0}
"""SupervisedConfig values of a sweep's runs other than the dataclass defaults (the
``[supervised]`` table overrides them): steps to a target resolved to 1/32 (3%); a run
whose training loss passes 10x its untrained loss stops as failed (diverged: at a too large
lr the loss grows without bound, and without this such a run spends its whole budget)."""

# TrainConfig fields the sweep sets for every run: not allowed in [train].
SWEEP_SET_TRAIN = {
    "env": "env", "num_envs": "num_envs", "num_steps": "num_steps", "seed": "seeds",
    "total_agent_steps": "budget", "target_return": "targets", "run_dir": "out",
    "resume": "(the sweep resumes interrupted runs itself)",
}

SWEEP_SET_PPO = {"learning_rate": "lrs"}

LR_RULES = {"constant": 0.0, "sqrt": 0.5, "linear": 1.0}

BACKENDS = ("local", "ray")

SCHEDULERS = ("grid", "pbt")


class SweepSpecError(ValueError):
    """A sweep spec with problems; ``problems`` lists each one (with its fix)."""

    def __init__(self, problems: list[str], source: str = "sweep spec"):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s)\n{lines}")


class SweepStateError(ValueError):
    """The sweep directory holds runs that do not match the spec."""


@dataclass
class SweepSpec:
    """A validated sweep. Build it with ``parse_spec`` or ``load_spec``."""

    env: list[str]
    """Canonical environment names."""
    targets: list[float]
    out: str
    vary: str = "num_envs"
    num_envs: list[int] = field(default_factory=list)
    """The varied factor's values, or [] / one value for the fixed factor ([] = preset)."""
    num_steps: list[int] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    """[] = the preset's learning rate."""
    lr_rule: str = "constant"
    base_batch_size: int | None = None
    extra_lrs: dict[int, list[float]] = field(default_factory=dict)
    """{batch size: further lrs at that batch size only}, beside the grid of ``lrs``."""
    seeds: list[int] = field(default_factory=lambda: [0])
    budget: int | None = None
    """None = the preset's total_agent_steps."""
    preset: str | None = None
    parallel: int = 1
    backend: str = "local"
    address: str | None = None
    cpus_per_trial: int = 1
    retry_failed: bool = False
    ppo: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    scheduler: str = "grid"
    """grid: every run of the grid; pbt: a population on Ray Tune (``rl.sweeps.pbt``)."""
    pbt: dict[str, Any] = field(default_factory=dict)
    """PBT settings (``rl.sweeps.pbt.PBTConfig`` fields, all explicit); {} with the grid."""
    best_lr_seeds: int | None = None
    """Stage 2: seeds in all at each batch size's chosen lr (None: no stage 2)."""
    allow_target_below_floor: bool = False
    """Run targets at or below the untrained-play floor (recorded; default: refused)."""
    batch_sizes: list[int] = field(default_factory=list)
    """Supervised tasks: the batch sizes, examples ([] for RL sweeps: num_envs x num_steps)."""
    supervised: dict[str, Any] = field(default_factory=dict)
    """Supervised tasks: SupervisedConfig overrides ({} for RL sweeps)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def is_supervised(self) -> bool:
        """A sweep of supervised tasks (``SUPERVISED_TASKS``) rather than of environments."""
        return bool(self.env) and self.env[0] in SUPERVISED_TASKS


def tkey(target: float) -> str:
    """Column suffix of a target: 200.0 -> '200', 0.5 -> '0.5'."""
    return f"{float(target):g}"


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_finite_number(v: Any) -> bool:
    return is_number(v) and math.isfinite(v)


def did_you_mean(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def duplicates(values: list[Any]) -> list[Any]:
    return [v for v, n in Counter(values).items() if n > 1]


def type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(type_ok(value, a) for a in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return is_int(value)
    if hint is float:
        return is_number(value)
    if hint is str:
        return isinstance(value, str)
    return True


def type_name(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(hint))
    if args:
        return " or ".join(type_name(a) for a in args)
    return getattr(hint, "__name__", str(hint))


class Problems(list):
    def add(self, msg: str) -> None:
        if msg not in self:
            self.append(msg)


def list_of(raw: Mapping, key: str, check, what: str, problems: Problems,
             *, allow_scalar: bool = True) -> list | None:
    """raw[key] as a list whose items pass ``check``; None (and a problem) if it is bad."""
    value = raw[key]
    if not isinstance(value, list):
        if not allow_scalar:
            problems.add(f"{key} must be a list of {what}, got {value!r}")
            return None
        value = [value]
    if not value:
        problems.add(f"{key} is empty; give at least one value (a list of {what})")
        return None
    bad = [v for v in value if not check(v)]
    if bad:
        problems.add(f"{key} must hold {what}; bad value(s): {', '.join(repr(v) for v in bad)}")
        return None
    dups = duplicates(value)
    if dups:
        problems.add(
            f"{key} has duplicate values {', '.join(repr(v) for v in dups)}; list each value "
            "once (a repeated setting would run the same runs twice)"
        )
        return None
    return list(value)


def as_count(value: Any) -> int | None:
    if is_int(value):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):

        try:
            return parse_count(value)
        except Exception:
            return None
    return None


def resolve_env(name: Any, problems: Problems) -> tuple[str, str] | None:
    """(canonical name, kind) of an environment name, or None and a problem."""

    if not isinstance(name, str):
        problems.add(f"env must be a name or a list of names, got {name!r}")
        return None
    if name in SUPERVISED_TASKS:
        return name, SUPERVISED_KIND
    try:
        entry = envs.resolve(name)
    except ValueError as exc:
        problems.add(f"env {name!r}: {exc}")
        return None
    if entry.kind == "gym" and entry.name in _GYM_IDS:
        return _GYM_IDS[entry.name], "classic"
    return (f"gym:{entry.name}" if entry.kind == "gym" else entry.name), entry.kind


def preset_of(env_kinds: Mapping[str, str]) -> str:
    """The preset of the (first) environment; classic when none resolved."""
    return "atari" if "atari" in list(env_kinds.values())[:1] else "classic"


def env_settings(spec: SweepSpec, env: str) -> tuple[dict, dict]:
    """(TrainConfig kwargs, PPOConfig kwargs) of ``env`` before the per-run values."""

    preset = spec.preset or preset_for(env)
    train_over, ppo_over = PRESETS[preset]
    return {**train_over, **spec.train}, {**ppo_over, **spec.ppo}


def supervised_settings(spec: SweepSpec, env: str) -> dict[str, Any]:
    """SupervisedConfig kwargs of a supervised task's runs before the per-run values: the
    sweep's defaults < the task < the ``[supervised]`` table; batches drawn iid."""
    return {**SUPERVISED_SWEEP_DEFAULTS, **SUPERVISED_TASKS[env], "sampling": "iid",
            **spec.supervised}


def batch_shapes(spec: SweepSpec, train_base: Mapping[str, Any]) -> list[tuple[int, int]]:
    """(num_envs, num_steps) of each batch size; a supervised sweep's are (B, 1)."""
    if spec.is_supervised:
        return [(b, 1) for b in spec.batch_sizes]
    default = TrainConfig(**{k: v for k, v in train_base.items()
                             if k in ("num_envs", "num_steps")})
    envs_ = spec.num_envs or [default.num_envs]
    steps_ = spec.num_steps or [default.num_steps]
    return [(ne, ns) for ne in envs_ for ns in steps_]


def stage_two_seeds(spec: SweepSpec) -> list[int]:
    """The seeds stage 2 adds at each batch size's chosen lr: the next best_lr_seeds -
    len(seeds) integers above the grid's seeds ([] without stage 2)."""
    if not spec.best_lr_seeds or not spec.seeds:
        return []
    start = max(spec.seeds) + 1
    return list(range(start, start + max(0, spec.best_lr_seeds - len(spec.seeds))))


def round_lr(lr: float) -> float:
    """A learning rate as runs carry it (and their names show it): 6 significant digits."""
    return float(f"{lr:.6g}")


def scaled_lr(spec: SweepSpec, lr0: float, batch_size: int) -> float:
    p = LR_RULES[spec.lr_rule]
    return round_lr(lr0 if p == 0 else lr0 * (batch_size / spec.base_batch_size) ** p)
