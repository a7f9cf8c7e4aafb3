"""Sweeps: many PPO runs over environments, rollout batch sizes, learning rates and seeds.

This module holds the parts of a sweep that do not run anything: the spec and its
validation, the run plan, the state of each run on disk, the results table, and the
critical-batch fit of a finished sweep. ``rl.executors`` runs the plan (local processes
or Ray Tune); ``rl.cli_sweep`` is the command line (``rlscale sweep``, ``rlscale fit``).

The spec (a TOML file, or the same keys as command-line flags)
-------------------------------------------------------------
::

    env = "CartPole"             # or a list: ["CartPole", "Acrobot"]
    vary = "num_envs"            # the factor of B = num_envs x num_steps that varies
    num_envs = [1, 2, 4, 8, 16]  # the varied factor: a list
    num_steps = 32               # the fixed factor: one value (default: the env's preset)
    lrs = [1e-3]                 # learning-rate grid, tried at every batch size
    lr_rule = "constant"         # or "sqrt" / "linear": lrs are then given at base_batch_size
    # base_batch_size = 256
    seeds = [0, 1]               # or a count: seeds = 3 means [0, 1, 2]
    targets = [100, 200]         # returns; a run stops at the highest (or its budget)
    budget = 40000               # agent steps per run ("40k", "10M" also accepted)
    parallel = 2                 # runs at once
    out = "results/sweeps/cartpole"
    # preset = "classic"         # default: by environment kind (atari or classic)
    # backend = "local"          # or "ray"; address = "ray://host:10001"; cpus_per_trial = 1
    # retry_failed = false       # also rerun runs that failed (not just interrupted ones)
    # scheduler = "grid"         # or "pbt": population based training on Ray Tune, with a
    #                            # [pbt] table (rl/pbt.py documents it)

    [ppo]                        # PPOConfig fields (learning_rate is the sweep's: use lrs)
    anneal_lr = false
    [train]                      # TrainConfig fields other than those the sweep sets
    checkpoint_every = 10

Settings of a run: dataclass defaults < the env's preset (``rl.trainer.PRESETS``) < the
``[ppo]`` / ``[train]`` tables < the sweep (env, num_envs, num_steps, learning_rate, seed,
total_agent_steps = budget, target_return = max(targets), run_dir).

Learning-rate rule: with ``lr_rule`` = constant every batch size B gets every lr of
``lrs``. With ``sqrt`` or ``linear`` each lr0 in ``lrs`` is the learning rate at
``base_batch_size`` B0, and batch size B gets lr0 * (B / B0) ** p with p = 1/2 (sqrt) or
p = 1 (linear), rounded to 6 significant digits (the rounded value is the run's lr and
appears in its name). ``base_lr = x`` is accepted as a synonym of ``lrs = [x]``.

Layout of a sweep directory (``out``)::

    sweep.json          the validated spec and the planned runs (rewritten at each start)
    events.jsonl        one line per run event: start, resume, skip, done, failed
    results.csv         one row per planned run (RESULT columns below), rewritten
    results.parquet       atomically whenever a run ends
    results_long.csv    one row per (run, target): the input of rl.fit.fit_from_runs
    runs/<name>/        each run's own run directory (rl.storage layout)
                        (each holds its lock file .lock, held while a process trains it)
    ray/                Ray Tune's own records (backend ray)
    fit.csv, fit_*.png, b_simple_*.png   written by ``rlscale fit``

A ``scheduler = "pbt"`` sweep (population based training, ``rl.pbt``) has members
``runs/m00``, ``runs/m01``, ... instead of a grid, and ``pbt.csv`` / ``pbt.parquet`` /
``pbt.png`` instead of the results and fit files.

Run names are ``{env}-b{B}-n{num_envs}x{num_steps}-lr{lr:.6g}-s{seed}``.

Units (DESIGN.md): B and every ``agent_steps*`` column count agent steps (Atari: frames =
4 x agent steps); ``iterations*`` columns count PPO iterations.
"""

from __future__ import annotations

import dataclasses
import difflib
import io
import json
import math
import os
import time
import types
import typing
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rl.storage import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    flatten_config,
    load_metrics,
    save_figure,
)

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = [
    "KNOWN_MAX_RETURN",
    "SPEC_KEYS",
    "RunPlan",
    "SweepSpec",
    "SweepSpecError",
    "SweepStateError",
    "classify_run",
    "fit_sweep",
    "load_spec",
    "long_results",
    "parse_spec",
    "plan_runs",
    "plot_b_simple",
    "plot_fits",
    "read_results",
    "results_table",
    "run_row",
    "write_results",
]

# --------------------------------------------------------------------------------------
# Known returns
# --------------------------------------------------------------------------------------

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

# --------------------------------------------------------------------------------------
# The spec
# --------------------------------------------------------------------------------------

SPEC_KEYS: dict[str, str] = {
    "env": "environment name or list of names (see `rlscale envs`)",
    "vary": "which factor of B = num_envs x num_steps varies: num_envs (default) or num_steps",
    "num_envs": "parallel environments: a list when vary = num_envs, else one value",
    "num_steps": "steps per environment per rollout: a list when vary = num_steps, else one",
    "lrs": "learning-rate grid (at every batch size, or at base_batch_size with a rule)",
    "base_lr": "synonym of lrs = [base_lr]",
    "lr_rule": "constant (default), sqrt or linear scaling of lrs from base_batch_size",
    "base_batch_size": "the batch size (agent steps) at which lrs are given, with a rule",
    "seeds": "list of seeds, or a count n meaning 0..n-1 (default [0])",
    "targets": "target returns (a run stops once it reaches the highest)",
    "budget": "agent steps per run at most (default: the preset's total_agent_steps)",
    "preset": "settings family: classic or atari (default: by environment kind)",
    "parallel": "runs at once (default 1; with PBT the population, as CPUs allow)",
    "out": "the sweep directory",
    "backend": "local (default) or ray",
    "address": "ray: address of an existing cluster (default: start a local instance)",
    "cpus_per_trial": "ray: CPUs per run (default 1); local runs get cores // parallel",
    "retry_failed": "rerun runs whose status is failed (default false: only interrupted ones)",
    "scheduler": "grid (default: every run of the grid) or pbt (population based training, "
                 "backend ray; see rl/pbt.py)",
    "pbt": "table of PBT settings (scheduler = 'pbt'): population, perturbation_interval, "
           "quantile_fraction, resample_probability, metric, hyperparams",
    "ppo": "table of PPOConfig overrides",
    "train": "table of TrainConfig overrides",
}

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

# Config keys a finished or interrupted run may have stored differently and still count as
# the same run (where it lives, how often it checkpointed, which device trained it).
SAME_RUN_MAY_DIFFER = ("train.resume", "train.run_dir", "train.device",
                       "train.checkpoint_every", "train.compile")
# Status messages of runs that were stopped from outside rather than failed.
_INTERRUPTED = ("KeyboardInterrupt", "SystemExit")


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
    """grid: every run of the grid; pbt: a population on Ray Tune (``rl.pbt``)."""
    pbt: dict[str, Any] = field(default_factory=dict)
    """PBT settings (``rl.pbt.PBTConfig`` fields, all explicit); {} with the grid."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _tkey(target: float) -> str:
    """Column suffix of a target: 200.0 -> '200', 0.5 -> '0.5'."""
    return f"{float(target):g}"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _close(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _duplicates(values: list[Any]) -> list[Any]:
    return [v for v, n in Counter(values).items() if n > 1]


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return _is_int(value)
    if hint is float:
        return _is_number(value)
    if hint is str:
        return isinstance(value, str)
    return True


def _type_name(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(hint))
    if args:
        return " or ".join(_type_name(a) for a in args)
    return getattr(hint, "__name__", str(hint))


class _Problems(list):
    def add(self, msg: str) -> None:
        if msg not in self:
            self.append(msg)


def _list_of(raw: Mapping, key: str, check, what: str, problems: _Problems,
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
    dups = _duplicates(value)
    if dups:
        problems.add(
            f"{key} has duplicate values {', '.join(repr(v) for v in dups)}; list each value "
            "once (a repeated setting would run the same runs twice)"
        )
        return None
    return list(value)


def _count(value: Any) -> int | None:
    if _is_int(value):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        from rl.cliargs import parse_count

        try:
            return parse_count(value)
        except Exception:
            return None
    return None


def _resolve_env(name: Any, problems: _Problems) -> tuple[str, str] | None:
    """(canonical name, kind) of an environment name, or None and a problem."""
    import envs

    if not isinstance(name, str):
        problems.add(f"env must be a name or a list of names, got {name!r}")
        return None
    try:
        entry = envs.resolve(name)
    except ValueError as exc:
        problems.add(f"env {name!r}: {exc}")
        return None
    if entry.kind == "gym" and entry.name in _GYM_IDS:
        return _GYM_IDS[entry.name], "classic"
    return (f"gym:{entry.name}" if entry.kind == "gym" else entry.name), entry.kind


def parse_spec(raw: Mapping[str, Any], *, source: str = "sweep spec") -> SweepSpec:
    """Validate a spec given as a mapping (parsed TOML, or built from flags).

    Every problem found is reported at once in a ``SweepSpecError``: unknown keys (with
    close matches), wrong types, empty grids, duplicate values, batch sizes that the PPO
    settings cannot split into minibatches, budgets smaller than a rollout, targets above
    an environment's known maximum return (``KNOWN_MAX_RETURN``), unknown or sweep-set
    fields in ``[ppo]`` / ``[train]``.
    """
    from agents import PPOConfig
    from rl.trainer import PRESETS, TrainConfig

    problems = _Problems()
    raw = dict(raw)
    for key in raw:
        if key not in SPEC_KEYS:
            problems.add(
                f"unknown key {key!r}{_close(key, SPEC_KEYS)} (known keys: "
                f"{', '.join(SPEC_KEYS)})"
            )
    scheduler = raw.get("scheduler", "grid")
    if scheduler not in SCHEDULERS:
        problems.add(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
        scheduler = "grid"
    pbt = scheduler == "pbt"

    # --- environments
    env_kinds: dict[str, str] = {}
    if "env" not in raw:
        problems.add("env is missing: name the environment(s), e.g. env = \"CartPole\"")
    else:
        names = _list_of(raw, "env", lambda v: isinstance(v, str) and v.strip(),
                         "environment names", problems)
        for name in names or []:
            resolved = _resolve_env(name, problems)
            if resolved is None:
                continue
            canon, kind = resolved
            if canon in env_kinds:
                problems.add(
                    f"env lists {canon!r} more than once (as {name!r}); list each environment once"
                )
            env_kinds[canon] = kind

    preset = raw.get("preset")
    if preset is not None and preset not in PRESETS:
        problems.add(f"preset {preset!r} is unknown{_close(str(preset), PRESETS)}; "
                     f"use one of {', '.join(PRESETS)}")
        preset = None

    # --- batch sizes
    vary = raw.get("vary", "num_envs")
    if vary not in ("num_envs", "num_steps"):
        problems.add(f"vary must be 'num_envs' or 'num_steps', got {vary!r}")
        vary = "num_envs"
    fixed_key = "num_steps" if vary == "num_envs" else "num_envs"
    factors: dict[str, list[int]] = {vary: [], fixed_key: []}
    if vary not in raw and not pbt:  # PBT: one batch size, the preset's by default
        problems.add(f"{vary} is missing: with vary = {vary!r} give the list of {vary} values "
                     "(the batch sizes of the sweep)")
    else:
        got = _list_of(raw, vary, lambda v: _is_int(v) and v >= 1, "positive integers",
                       problems)
        factors[vary] = got or []
    if fixed_key in raw:
        got = _list_of(raw, fixed_key, lambda v: _is_int(v) and v >= 1, "positive integers",
                       problems)
        if got is not None and len(got) > 1:
            problems.add(
                f"{fixed_key} has {len(got)} values but vary = {vary!r} keeps it fixed; give "
                f"one {fixed_key}, or set vary = {fixed_key!r} (and one {vary})"
            )
            got = None
        factors[fixed_key] = got or []

    # --- learning rates
    if "lrs" in raw and "base_lr" in raw:
        problems.add("give either lrs or base_lr, not both (base_lr = x means lrs = [x])")
    lr_key = "base_lr" if "base_lr" in raw else "lrs"
    lrs: list[float] = []
    if lr_key in raw:
        lrs = _list_of(raw, lr_key, lambda v: _is_number(v) and math.isfinite(v) and v > 0,
                       "positive numbers", problems) or []
        lrs = [float(v) for v in lrs]
    lr_rule = raw.get("lr_rule", "constant")
    if lr_rule not in LR_RULES:
        problems.add(f"lr_rule {lr_rule!r} is unknown{_close(str(lr_rule), LR_RULES)}; use one "
                     f"of {', '.join(LR_RULES)}")
        lr_rule = "constant"
    base_batch_size = raw.get("base_batch_size")
    if lr_rule != "constant":
        if base_batch_size is None:
            problems.add(f"lr_rule = {lr_rule!r} needs base_batch_size: the batch size (agent "
                         "steps) at which the lrs are given, e.g. base_batch_size = 256")
        elif not (_is_int(base_batch_size) and base_batch_size >= 1):
            problems.add(f"base_batch_size must be a positive integer, got {base_batch_size!r}")
            base_batch_size = None
        if not lrs and lr_key not in raw:
            problems.add(f"lr_rule = {lr_rule!r} needs the learning rate(s) at base_batch_size: "
                         "lrs = [...] or base_lr = x")
    elif base_batch_size is not None:
        problems.add("base_batch_size is only used with lr_rule = 'sqrt' or 'linear'; remove "
                     "it or set lr_rule")
        base_batch_size = None

    # --- seeds, targets, budget
    seeds: list[int] = [0]
    if "seeds" in raw:
        value = raw["seeds"]
        if _is_int(value) and not isinstance(value, list):
            if value < 1:
                problems.add(f"seeds = {value} runs nothing; give a count >= 1 or a list of seeds")
            seeds = list(range(max(value, 0)))
        else:
            seeds = _list_of(raw, "seeds", lambda v: _is_int(v) and v >= 0,
                             "non-negative integers", problems, allow_scalar=False) or []
    targets: list[float] = []
    if pbt and raw.get("targets") in (None, []):
        pass  # optional with PBT: members train their whole budget; targets are only reported
    elif "targets" not in raw:
        problems.add("targets is missing: give the return(s) to reach, e.g. targets = [200]")
    else:
        targets = [float(t) for t in _list_of(
            raw, "targets", lambda v: _is_number(v) and math.isfinite(v), "finite numbers",
            problems) or []]
    for env, _kind in env_kinds.items():
        known = KNOWN_MAX_RETURN.get(env)
        if known is None:
            continue
        top, why = known
        over = [t for t in targets if t > top]
        if over:
            problems.add(
                f"target(s) {', '.join(f'{t:g}' for t in over)} can never be reached on {env}: "
                f"its return is at most {top:g} by definition ({why}); use targets <= {top:g}"
            )
    budget = None
    if "budget" in raw:
        budget = _count(raw["budget"])
        if budget is None or budget < 1:
            problems.add(f"budget must be a positive number of agent steps (e.g. 40000 or "
                         f"'40k'), got {raw['budget']!r}")
            budget = None

    # --- execution
    parallel = raw.get("parallel", 1)
    if not (_is_int(parallel) and parallel >= 1):
        problems.add(f"parallel must be a positive integer, got {parallel!r}")
        parallel = 1
    backend = raw.get("backend", "local")
    if backend not in BACKENDS:
        problems.add(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        backend = "local"
    address = raw.get("address")
    if address is not None and not isinstance(address, str):
        problems.add(f"address must be a string (e.g. 'ray://head:10001' or 'auto'), got "
                     f"{address!r}")
    cpus = raw.get("cpus_per_trial", 1)
    if not (_is_int(cpus) and cpus >= 1):
        problems.add(f"cpus_per_trial must be a positive integer, got {cpus!r}")
        cpus = 1
    retry_failed = raw.get("retry_failed", False)
    if not isinstance(retry_failed, bool):
        problems.add(f"retry_failed must be true or false, got {retry_failed!r}")
        retry_failed = False
    out = raw.get("out")
    if out is None:
        problems.add("out is missing: name the sweep directory, e.g. out = \"results/sweeps/x\"")
    elif not isinstance(out, str) or not out.strip():
        problems.add(f"out must be a directory path, got {out!r}")

    # --- overrides
    overrides: dict[str, dict[str, Any]] = {}
    for table, cls, sweep_set in (("ppo", PPOConfig, SWEEP_SET_PPO),
                                  ("train", TrainConfig, SWEEP_SET_TRAIN)):
        value = raw.get(table, {})
        if not isinstance(value, Mapping):
            problems.add(f"{table} must be a table of {cls.__name__} fields, got {value!r}")
            overrides[table] = {}
            continue
        hints = typing.get_type_hints(cls)
        fields = [f.name for f in dataclasses.fields(cls) if f.init]
        good = {}
        for key, v in value.items():
            if key in sweep_set:
                problems.add(f"{table}.{key} is set by the sweep for every run; use the "
                             f"sweep key {sweep_set[key]} instead")
            elif key not in fields:
                problems.add(f"{table}.{key} is not a {cls.__name__} field"
                             f"{_close(key, fields)} (fields: {', '.join(fields)})")
            elif not _type_ok(v, hints[key]):
                problems.add(f"{table}.{key} = {v!r} has the wrong type; expected "
                             f"{_type_name(hints[key])}")
            else:
                good[key] = float(v) if hints[key] is float else v
        overrides[table] = good

    pbt_settings: dict[str, Any] = {}
    if pbt:
        from rl.pbt import parse_pbt_table

        preset_lr = PPOConfig(**{**PRESETS[preset or _preset_of(env_kinds)][1],
                                 **overrides["ppo"]}).learning_rate
        pbt_settings = parse_pbt_table(raw.get("pbt", {}), preset_lr, problems.add)
        # PBT controls the lr: constant unless the spec asks for the annealing schedule.
        overrides["ppo"].setdefault("anneal_lr", False)
    elif raw.get("pbt"):
        problems.add("the pbt table is only used with scheduler = 'pbt' (flag --scheduler pbt);"
                     " set it or remove the table")

    spec = SweepSpec(
        env=list(env_kinds), targets=targets, out=str(out) if isinstance(out, str) else "",
        vary=vary, num_envs=factors["num_envs"], num_steps=factors["num_steps"], lrs=lrs,
        lr_rule=lr_rule, base_batch_size=base_batch_size, seeds=seeds, budget=budget,
        preset=preset, parallel=parallel, backend=backend,
        address=address if isinstance(address, str) else None, cpus_per_trial=cpus,
        retry_failed=retry_failed, ppo=overrides["ppo"], train=overrides["train"],
        scheduler=scheduler, pbt=pbt_settings,
    )
    if pbt and not problems:
        from rl.pbt import check_pbt_spec

        check_pbt_spec(spec, raw, problems.add)
    # Batch sizes and full run configs, only once the pieces are sound.
    if not problems:
        _check_runs(spec, env_kinds, problems)
    if problems:
        raise SweepSpecError(problems, source)
    return spec


def _preset_of(env_kinds: Mapping[str, str]) -> str:
    """The preset of the (first) environment; classic when none resolved."""
    return "atari" if "atari" in list(env_kinds.values())[:1] else "classic"


def _env_settings(spec: SweepSpec, env: str) -> tuple[dict, dict]:
    """(TrainConfig kwargs, PPOConfig kwargs) of ``env`` before the per-run values."""
    from rl.trainer import PRESETS, preset_for

    preset = spec.preset or preset_for(env)
    train_over, ppo_over = PRESETS[preset]
    return {**train_over, **spec.train}, {**ppo_over, **spec.ppo}


def _batch_shapes(spec: SweepSpec, train_base: Mapping[str, Any]) -> list[tuple[int, int]]:
    from rl.trainer import TrainConfig

    default = TrainConfig(**{k: v for k, v in train_base.items()
                             if k in ("num_envs", "num_steps")})
    envs_ = spec.num_envs or [default.num_envs]
    steps_ = spec.num_steps or [default.num_steps]
    return [(ne, ns) for ne in envs_ for ns in steps_]


def _scaled_lr(spec: SweepSpec, lr0: float, batch_size: int) -> float:
    p = LR_RULES[spec.lr_rule]
    lr = lr0 if p == 0 else lr0 * (batch_size / spec.base_batch_size) ** p
    return float(f"{lr:.6g}")


def _check_runs(spec: SweepSpec, env_kinds: Mapping[str, str], problems: _Problems) -> None:
    """Build every run's configs and validate them (batch sizes, budget, overrides)."""
    from agents import PPOConfig
    from rl.trainer import TrainConfig

    for env in env_kinds:
        train_base, ppo_base = _env_settings(spec, env)
        shapes = _batch_shapes(spec, train_base)
        budget = spec.budget or TrainConfig(**train_base).total_agent_steps
        for ne, ns in shapes:
            b = ne * ns
            where = f"batch size {b} (num_envs={ne} x num_steps={ns}) on {env}"
            lrs = spec.lrs or [PPOConfig(**ppo_base).learning_rate]
            try:
                PPOConfig(**{**ppo_base, "learning_rate": lrs[0]}).validate(b)
            except (TypeError, ValueError) as exc:
                problems.add(f"{where}: {exc}")
            if budget < b:
                continue  # reported once per env below
            try:
                TrainConfig(**{**train_base, "env": env, "num_envs": ne, "num_steps": ns,
                               "total_agent_steps": budget}).validate()
            except (TypeError, ValueError) as exc:
                problems.add(f"{where}: {exc}")
            scaled = [_scaled_lr(spec, lr, b) for lr in lrs]
            if len(set(scaled)) < len(scaled):
                problems.add(f"{where}: the lrs {lrs} give equal learning rates after the "
                             f"{spec.lr_rule} rule and rounding to 6 digits; use distinct lrs")
        bs = [ne * ns for ne, ns in shapes]
        short = sorted(b for b in bs if b > budget)
        if short:
            problems.add(
                f"budget {budget} agent steps is less than one rollout of batch size(s) "
                f"{', '.join(map(str, short))} on {env}; raise budget to at least {max(bs)} "
                "(runs need many rollouts to reach a target)"
            )
        if _duplicates(bs):
            problems.add(f"batch sizes {_duplicates(bs)} occur more than once on {env}")


def load_spec(path: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None,
              *, default_out: str | None = None) -> SweepSpec:
    """Read a TOML spec, apply ``overrides`` (e.g. from flags), validate."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SweepSpecError([f"not valid TOML: {exc}"], str(path)) from None
    raw = merge_spec(raw, overrides or {})
    if "out" not in raw and default_out is not None:
        raw["out"] = default_out
    return parse_spec(raw, source=str(path))


def merge_spec(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``over``; the ``ppo`` / ``train`` / ``pbt`` tables are merged key
    by key (and ``pbt.hyperparams`` name by name)."""
    out = dict(base)
    for key, value in over.items():
        if key in ("ppo", "train", "pbt") and isinstance(value, Mapping) and \
                isinstance(out.get(key), Mapping):
            merged = {**out[key], **value}
            old_hp, new_hp = out[key].get("hyperparams"), value.get("hyperparams")
            if key == "pbt" and isinstance(old_hp, Mapping) and isinstance(new_hp, Mapping):
                merged["hyperparams"] = {**old_hp, **new_hp}
            out[key] = merged
        else:
            out[key] = value
    return out


def spec_to_raw(spec: SweepSpec) -> dict[str, Any]:
    """The raw mapping that ``parse_spec`` turns back into ``spec`` (None values dropped)."""
    raw = {k: v for k, v in spec.to_dict().items() if v is not None}
    for key in ("num_envs", "num_steps"):
        if not raw[key]:
            del raw[key]
    if not raw["lrs"]:
        del raw["lrs"]
    if raw.get("scheduler") == "pbt":
        if not raw["targets"]:
            del raw["targets"]
        del raw["parallel"]  # = the population with PBT
    else:
        raw.pop("pbt", None)
    return raw


# --------------------------------------------------------------------------------------
# The run plan
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunPlan:
    """One run of a sweep: its parameters and its complete configs (plain dicts)."""

    name: str
    env: str
    num_envs: int
    num_steps: int
    lr: float
    seed: int
    run_dir: str
    train: dict[str, Any]
    """TrainConfig keyword arguments (run_dir, budget and max target included)."""
    ppo: dict[str, Any]
    """PPOConfig keyword arguments."""

    @property
    def rollout_batch_size(self) -> int:
        return self.num_envs * self.num_steps

    def configs(self, *, resume: bool = False):
        """(TrainConfig, PPOConfig) of this run."""
        from agents import PPOConfig
        from rl.trainer import TrainConfig

        return TrainConfig(**{**self.train, "resume": resume}), PPOConfig(**self.ppo)

    def stored_config(self) -> dict[str, Any]:
        """What the trainer writes to config.json for this run (JSON-normalised)."""
        cfg, ppo = self.configs()
        config = {"train": dataclasses.asdict(cfg), "ppo": dataclasses.asdict(ppo)}
        return json.loads(json.dumps(config, sort_keys=True))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunPlan:
        return cls(**d)


def run_name(env: str, num_envs: int, num_steps: int, lr: float, seed: int) -> str:
    slug = env.replace("/", "_").replace(":", "_")
    return f"{slug}-b{num_envs * num_steps}-n{num_envs}x{num_steps}-lr{lr:.6g}-s{seed}"


def plan_runs(spec: SweepSpec) -> list[RunPlan]:
    """Every run of the sweep, ordered by env, then batch size (small first: those take the
    most iterations, so they start first), lr, seed. A PBT spec's runs are its members
    (``rl.pbt.plan_members``)."""
    from agents import PPOConfig
    from rl.trainer import TrainConfig

    if spec.scheduler == "pbt":
        from rl.pbt import plan_members

        return plan_members(spec)

    out = Path(spec.out).resolve()
    plans = []
    for env in spec.env:
        train_base, ppo_base = _env_settings(spec, env)
        budget = spec.budget or TrainConfig(**train_base).total_agent_steps
        lrs = sorted(spec.lrs) or [PPOConfig(**ppo_base).learning_rate]
        shapes = sorted(_batch_shapes(spec, train_base), key=lambda s: (s[0] * s[1], s))
        for ne, ns in shapes:
            for lr0 in lrs:
                lr = _scaled_lr(spec, lr0, ne * ns)
                for seed in spec.seeds:
                    name = run_name(env, ne, ns, lr, seed)
                    run_dir = str(out / "runs" / name)
                    train = {**train_base, "env": env, "num_envs": ne, "num_steps": ns,
                             "seed": seed, "total_agent_steps": budget,
                             "target_return": max(spec.targets), "run_dir": run_dir,
                             "resume": False}
                    ppo = {**ppo_base, "learning_rate": lr}
                    # Through the dataclasses: every field explicit, defaults included.
                    t_cfg, p_cfg = TrainConfig(**train), PPOConfig(**ppo)
                    plans.append(RunPlan(name, env, ne, ns, lr, seed, run_dir,
                                         dataclasses.asdict(t_cfg), dataclasses.asdict(p_cfg)))
    names = [p.name for p in plans]
    assert len(set(names)) == len(names), _duplicates(names)
    return plans


# --------------------------------------------------------------------------------------
# Run state on disk
# --------------------------------------------------------------------------------------


def config_differences(stored: Mapping[str, Any], plan: RunPlan) -> list[str]:
    """'key: stored X != planned Y' for every setting in which a stored run differs."""
    a, b = flatten_config(dict(stored)), flatten_config(plan.stored_config())
    diffs = []
    for key in sorted(a.keys() | b.keys()):
        if any(key == p or key.startswith(p + ".") for p in SAME_RUN_MAY_DIFFER):
            continue
        if a.get(key) != b.get(key):
            diffs.append(f"{key}: stored {a.get(key, '<absent>')} != planned "
                         f"{b.get(key, '<absent>')}")
    return diffs


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def is_interrupted(status: Mapping[str, Any] | None) -> bool:
    return bool(status) and status.get("state") == "failed" and \
        str(status.get("message", "")).startswith(_INTERRUPTED)


def classify_run(plan: RunPlan, *, retry_failed: bool = False) -> tuple[str, str]:
    """(action, detail) for a planned run, from its directory.

    Actions: ``new`` (no run there yet), ``resume`` (started, not finished: continue from
    its newest checkpoint), ``finished`` (skip), ``failed`` (skip unless retry_failed, in
    which case ``resume``), ``conflict`` (the directory holds a run with other settings;
    detail lists them).
    """
    path = Path(plan.run_dir)
    stored = _read_json(path / "config.json")
    if stored is None:
        return "new", ""
    diffs = config_differences(stored, plan)
    if diffs:
        return "conflict", "; ".join(diffs)
    status = _read_json(path / "status.json")
    state = (status or {}).get("state")
    if state == "finished":
        return "finished", str(status.get("message", ""))
    if state == "failed" and not is_interrupted(status):
        return ("resume" if retry_failed else "failed"), str(status.get("message", ""))
    return "resume", str((status or {}).get("message", ""))


def append_event(out: str | os.PathLike[str], event: str, run: str = "", **fields: Any) -> None:
    """Append one line to ``<out>/events.jsonl`` (one write in append mode)."""
    row = {"time": time.time(), "pid": os.getpid(), "event": event, "run": run, **fields}
    line = (json.dumps(row, sort_keys=True, default=str) + "\n").encode("utf-8")
    path = Path(out) / "events.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_events(out: str | os.PathLike[str]) -> list[dict[str, Any]]:
    path = Path(out) / "events.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def write_sweep_state(spec: SweepSpec, plans: list[RunPlan]) -> None:
    """``<out>/sweep.json``: the spec and the planned runs, written atomically."""
    atomic_write_json(Path(spec.out) / "sweep.json", {
        "format": 1,
        "spec": spec.to_dict(),
        "runs": [{k: getattr(p, k) for k in ("name", "env", "num_envs", "num_steps", "lr",
                                              "seed")} for p in plans],
    })


def read_sweep_state(out: str | os.PathLike[str]) -> dict[str, Any] | None:
    return _read_json(Path(out) / "sweep.json")


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------

GNS_TERMS = ("total", "policy", "value")
# Columns that measure speed, not learning: they differ between identical runs.
TIMING_COLUMNS = ("sps_median",)


def result_columns(targets: Iterable[float]) -> list[str]:
    """Columns of the results table, in order."""
    cols = ["run", "env", "rollout_batch_size", "num_envs", "num_steps", "lr", "seed",
            "status", "iterations", "agent_steps", "episodes_total", "final_return_recent"]
    for t in sorted(targets):
        cols += [f"iterations_to_target_{_tkey(t)}", f"agent_steps_to_target_{_tkey(t)}"]
    cols += [f"b_simple_{term}" for term in GNS_TERMS]
    cols += ["gns_measurements", "sps_median", "message"]
    return cols


def _b_simple(metrics: pd.DataFrame, term: str) -> tuple[float, int]:
    """Run-averaged B_simple = mean(trace_sigma) / mean(g2) over the measured rows (rows with
    both estimates finite); NaN when not measured or when mean(g2) <= 0."""
    g2_col, tr_col = f"gns/{term}/g2", f"gns/{term}/trace_sigma"
    if g2_col not in metrics or tr_col not in metrics:
        return math.nan, 0
    g2 = pd.to_numeric(metrics[g2_col], errors="coerce").to_numpy(float)
    tr = pd.to_numeric(metrics[tr_col], errors="coerce").to_numpy(float)
    ok = np.isfinite(g2) & np.isfinite(tr)
    if not ok.any():
        return math.nan, 0
    g2_mean, tr_mean = g2[ok].mean(), tr[ok].mean()
    return (float(tr_mean / g2_mean) if g2_mean > 0 else math.nan), int(ok.sum())


def run_row(plan: RunPlan, targets: Iterable[float]) -> dict[str, Any]:
    """The results-table row of one run, from its run directory.

    iterations_to_target_{t}: the first iteration whose ``return_recent`` >= t with at
    least ``return_window`` games finished (NaN if never); agent_steps_to_target_{t}: the
    agent steps at that iteration. b_simple_{term}: see ``_b_simple``. status: pending (no
    run yet), running (started, not finished: in progress or interrupted by a kill),
    interrupted (stopped by Ctrl-C), finished, failed.
    """
    path = Path(plan.run_dir)
    status = _read_json(path / "status.json")
    row: dict[str, Any] = dict(
        run=plan.name, env=plan.env, rollout_batch_size=plan.rollout_batch_size,
        num_envs=plan.num_envs, num_steps=plan.num_steps, lr=plan.lr, seed=plan.seed,
        status="pending" if status is None else ("interrupted" if is_interrupted(status)
                                                 else status.get("state", "pending")),
        message="" if status is None else str(status.get("message", "")),
    )
    metrics = load_metrics(path) if (path / "metrics.jsonl").exists() else pd.DataFrame()
    window = int(plan.train.get("return_window", 20))
    if len(metrics) and "return_recent" in metrics:
        last = metrics.iloc[-1]
        row.update(iterations=int(last["iteration"]), agent_steps=int(last["agent_steps"]),
                   episodes_total=int(last["episodes_total"]),
                   final_return_recent=float(last["return_recent"]))
        ret = pd.to_numeric(metrics["return_recent"], errors="coerce").to_numpy(float)
        enough = metrics["episodes_total"].to_numpy(float) >= window
        for t in targets:
            hit = np.flatnonzero(enough & (ret >= t))
            it = float(metrics["iteration"].iloc[hit[0]]) if hit.size else math.nan
            steps = float(metrics["agent_steps"].iloc[hit[0]]) if hit.size else math.nan
            row[f"iterations_to_target_{_tkey(t)}"] = it
            row[f"agent_steps_to_target_{_tkey(t)}"] = steps
        n_measured = 0
        for term in GNS_TERMS:
            row[f"b_simple_{term}"], n = _b_simple(metrics, term)
            n_measured = max(n_measured, n)
        row["gns_measurements"] = n_measured
        if "sps" in metrics:
            row["sps_median"] = float(pd.to_numeric(metrics["sps"], errors="coerce").median())
    columns = result_columns(targets)
    return {c: row.get(c, math.nan) for c in columns}


def results_table(plans: list[RunPlan], targets: Iterable[float],
                  rows: Mapping[str, dict[str, Any]] | None = None) -> pd.DataFrame:
    """One row per planned run (``result_columns``); ``rows`` caches rows by run name."""
    targets = list(targets)
    rows = dict(rows or {})
    data = [rows.get(p.name) or run_row(p, targets) for p in plans]
    df = pd.DataFrame(data, columns=result_columns(targets))
    for col in ("iterations", "agent_steps", "episodes_total", "gns_measurements"):
        df[col] = df[col].astype("float64")
    df["message"] = df["message"].fillna("").astype(str)
    return df


def long_results(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, target): env, target, rollout_batch_size, lr, seed,
    iterations_to_target, agent_steps_to_target (NaN = not reached), plus num_envs,
    num_steps, status, run and the b_simple_* columns. Feeds ``rl.fit.fit_from_runs``."""
    prefix = "iterations_to_target_"
    keys = [c[len(prefix):] for c in df.columns if c.startswith(prefix)]
    keep = ["env", "rollout_batch_size", "lr", "seed", "num_envs", "num_steps", "status", "run",
            *[f"b_simple_{t}" for t in GNS_TERMS]]
    parts = []
    for key in keys:
        part = df[keep].copy()
        part.insert(1, "target", float(key))
        part["iterations_to_target"] = df[prefix + key].astype(float)
        part["agent_steps_to_target"] = df[f"agent_steps_to_target_{key}"].astype(float)
        parts.append(part)
    cols = ["env", "target", "rollout_batch_size", "lr", "seed", "iterations_to_target",
            "agent_steps_to_target", "num_envs", "num_steps", "status", "run",
            *[f"b_simple_{t}" for t in GNS_TERMS]]
    if not parts:
        return pd.DataFrame(columns=cols)
    out = pd.concat(parts, ignore_index=True)[cols]
    return out.sort_values(["env", "target", "rollout_batch_size", "lr", "seed"],
                           kind="stable").reset_index(drop=True)


def write_results(out: str | os.PathLike[str], df: pd.DataFrame) -> None:
    """results.csv, results.parquet and results_long.csv, each written atomically."""
    out = Path(out)
    atomic_write_text(out / "results.csv", df.to_csv(index=False))
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    atomic_write_bytes(out / "results.parquet", buf.getvalue())
    atomic_write_text(out / "results_long.csv", long_results(df).to_csv(index=False))


def read_results(out: str | os.PathLike[str]) -> pd.DataFrame:
    """The results table of a sweep directory (parquet, else csv)."""
    out = Path(out)
    if (out / "results.parquet").exists():
        return pd.read_parquet(out / "results.parquet")
    if (out / "results.csv").exists():
        return pd.read_csv(out / "results.csv", keep_default_na=True).fillna({"message": ""})
    raise FileNotFoundError(
        f"{out} holds no results.parquet or results.csv; is it a sweep directory? Run "
        f"`rlscale sweep --out {out} ...` first"
    )


# --------------------------------------------------------------------------------------
# Fit
# --------------------------------------------------------------------------------------

# Runs whose outcome is known: finished, or failed on their own (diverged: did not reach).
_SETTLED = ("finished", "failed")


def fit_sweep(df: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0, ci: float = 0.9,
              range_factor: float = 2.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Critical batch size per (env, target) of a results table, with B_simple beside it.

    Uses runs whose status is finished or failed (a failed run did not reach what it did
    not reach); pending, running and interrupted runs are left out and counted in
    ``runs_unsettled``. ``rl.fit.fit_from_runs`` picks the best lr per batch size, fits
    S(B) and bootstraps seeds.

    The B_simple columns beside the fit (``b_simple_{term}``) are the mean, over the runs
    at each batch size's best lr (every seed, every batch size whose best lr reached the
    target), of each run's run-averaged B_simple (mean trace_sigma / mean g2 over all its
    measured iterations, until it stopped); ``b_simple_runs`` counts the runs with a finite
    value. NaN where the runs measured no noise scale.

    Returns (fit table: rl.fit.FIT_COLUMNS + b_simple_total/policy/value, b_simple_runs,
    runs_used, runs_unsettled; per batch size table of rl.fit.best_per_batch).
    """
    from rl.fit import FIT_COLUMNS, best_per_batch, fit_from_runs

    settled = df[df["status"].isin(_SETTLED)]
    unsettled = df[~df["status"].isin(_SETTLED)]
    long = long_results(settled)
    extra = [*[f"b_simple_{t}" for t in GNS_TERMS], "b_simple_runs", "runs_used",
             "runs_unsettled"]
    if long.empty:
        return pd.DataFrame(columns=[*FIT_COLUMNS, *extra]), pd.DataFrame()
    fits = fit_from_runs(long, n_boot=n_boot, seed=seed, ci=ci, range_factor=range_factor)
    per_batch, per_seed = best_per_batch(long)
    for i, fit in fits.iterrows():
        mine = per_seed[(per_seed["env"] == fit["env"]) & (per_seed["target"] == fit["target"])]
        for term in GNS_TERMS:
            v = mine[f"b_simple_{term}"].astype(float)
            fits.loc[i, f"b_simple_{term}"] = float(v.mean()) if v.notna().any() else math.nan
        fits.loc[i, "b_simple_runs"] = int(mine["b_simple_total"].astype(float).notna().sum())
        fits.loc[i, "runs_used"] = int((settled["env"] == fit["env"]).sum())
        fits.loc[i, "runs_unsettled"] = int((unsettled["env"] == fit["env"]).sum())
    return fits[[*FIT_COLUMNS, *extra]], per_batch


def _fit_object(row: Mapping[str, Any]):
    from rl.fit import CriticalBatchFit

    ok = bool(row["ok"])
    return CriticalBatchFit(ok, "ok" if ok else "failed", str(row["reason"]),
                            s_min=float(row["s_min"]), e_min=float(row["e_min"]),
                            b_crit=float(row["b_crit"]))


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def plot_fits(out: str | os.PathLike[str], fits: pd.DataFrame,
              per_batch: pd.DataFrame) -> list[Path]:
    """One png per (env, target): E vs S with the fitted hyperbola, S(B) and E(B) with the
    fit. Returns the paths written."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from rl.fit import plot_pareto, plot_steps_and_samples

    paths = []
    for _, row in fits.iterrows():
        pts = per_batch[(per_batch["env"] == row["env"]) & (per_batch["target"] == row["target"])
                        & per_batch["reached"]].sort_values("rollout_batch_size")
        if pts.empty:
            continue
        fit = _fit_object(row)
        fig = Figure(figsize=(15, 4.5))
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 3)
        b, s = pts["rollout_batch_size"].to_numpy(float), pts["s_median"].to_numpy(float)
        plot_pareto(axes[0], fit, b, s)
        plot_steps_and_samples(axes[1:], fit, b, s)
        ci = (f", B_crit interval [{row['b_crit_lo']:.3g}, {row['b_crit_hi']:.3g}]"
              if fit.ok else f" -- fit failed: {str(row['reason'])[:90]}")
        fig.suptitle(f"{row['env']}, target return {row['target']:g}: B in agent steps, "
                     f"S in PPO iterations{ci}", fontsize=10)
        fig.tight_layout()
        path = Path(out) / f"fit_{_slug(str(row['env']))}_{_tkey(row['target'])}.png"
        save_figure(fig, path, dpi=90)
        paths.append(path)
    return paths


def b_simple_curve(metrics: pd.DataFrame, term: str, window: int = 10) -> pd.DataFrame:
    """(return_recent, b_simple) along a run: the trainer's ``gns/{term}/b_simple_ema``
    where present, else the ratio of window means of trace_sigma and g2 over the last
    ``window`` measured iterations (NaN where the mean g2 <= 0)."""
    ema = f"gns/{term}/b_simple_ema"
    if ema in metrics:
        y = pd.to_numeric(metrics[ema], errors="coerce")
        keep = y.notna()
        return pd.DataFrame({"return_recent": metrics.loc[keep, "return_recent"].astype(float),
                             "b_simple": y[keep].astype(float)})
    g2_col, tr_col = f"gns/{term}/g2", f"gns/{term}/trace_sigma"
    if g2_col not in metrics or tr_col not in metrics:
        return pd.DataFrame({"return_recent": [], "b_simple": []})
    m = metrics[["return_recent", g2_col, tr_col]].apply(pd.to_numeric, errors="coerce")
    m = m[m[g2_col].notna() & m[tr_col].notna()]
    g2 = m[g2_col].rolling(window, min_periods=1).mean()
    tr = m[tr_col].rolling(window, min_periods=1).mean()
    return pd.DataFrame({"return_recent": m["return_recent"],
                         "b_simple": (tr / g2).where(g2 > 0)})


def plot_b_simple(out: str | os.PathLike[str], df: pd.DataFrame) -> list[Path]:
    """One png per env: B_simple (policy, value, total; log scale) against return_recent,
    one line per run coloured by batch size. Nothing is written for an env without
    noise-scale measurements. Returns the paths written."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    out = Path(out)
    paths = []
    for env, runs in df.groupby("env", sort=True):
        curves = []
        for _, r in runs.iterrows():
            path = out / "runs" / str(r["run"])
            if not (path / "metrics.jsonl").exists():
                continue
            metrics = load_metrics(path)
            if "return_recent" not in metrics:
                continue
            curves.append((float(r["rollout_batch_size"]),
                           {t: b_simple_curve(metrics, t) for t in GNS_TERMS}))
        if not any(len(c[t]) for _, c in curves for t in GNS_TERMS):
            continue
        bs = [b for b, _ in curves]
        norm = LogNorm(min(bs), max(bs) if max(bs) > min(bs) else min(bs) * 2)
        cmap = colormaps["viridis"]
        fig = Figure(figsize=(15, 4.5), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 3)
        for ax, term in zip(axes, GNS_TERMS, strict=True):
            for b, c in curves:
                d = c[term]
                d = d[d["b_simple"] > 0]
                if len(d):
                    ax.plot(d["return_recent"], d["b_simple"], color=cmap(norm(b)), lw=0.8,
                            alpha=0.8)
            ax.set_yscale("log")
            ax.set_xlabel("return_recent (mean of the last games)")
            ax.set_ylabel(f"B_simple, {term} loss (agent steps)")
            ax.set_title(f"{term}", fontsize=9)
        sm = ScalarMappable(norm=norm, cmap=cmap)
        fig.colorbar(sm, ax=list(axes), label="rollout batch size B (agent steps)")
        fig.suptitle(f"{env}: noise scale against return (EMA, or ratio of window means)",
                     fontsize=10)
        path = out / f"b_simple_{_slug(str(env))}.png"
        save_figure(fig, path, dpi=90)
        paths.append(path)
    return paths
