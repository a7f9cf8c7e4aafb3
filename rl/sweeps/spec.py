"""Read and check a sweep spec (TOML or flags), and plan its runs.

``parse_spec`` names every problem of a spec at once, with the fix; ``plan_runs`` turns a
spec into one ``RunPlan`` per run (or per PBT member). See docs/sweeps.md.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]
from agents import PPOConfig
from rl.measure.supervised import SUPERVISED_TASKS, SupervisedConfig
from rl.runs.record import peek_status
from rl.sweeps.pbt.config import check_pbt_spec, parse_pbt_table
from rl.sweeps.pbt.members import plan_members
from rl.sweeps.settings import (
    BACKENDS,
    KNOWN_MAX_RETURN,
    LR_RULES,
    SCHEDULERS,
    SPEC_KEYS,
    SUPERVISED_KIND,
    SWEEP_SET_PPO,
    SWEEP_SET_SUPERVISED,
    SWEEP_SET_TRAIN,
    Problems,
    SweepSpec,
    SweepSpecError,
    SweepStateError,
    as_count,
    batch_shapes,
    did_you_mean,
    duplicates,
    env_settings,
    is_int,
    is_number,
    list_of,
    preset_of,
    resolve_env,
    round_lr,
    scaled_lr,
    stage_two_seeds,
    supervised_settings,
    type_name,
    type_ok,
)
from rl.sweeps.state import BEST_LR_FILE, BestLr, RunPlan, read_best_lrs, read_sweep_state, run_name
from rl.train.config import PRESETS, TrainConfig


def parse_spec(raw: Mapping[str, Any], *, source: str = "sweep spec") -> SweepSpec:
    """Validate a spec given as a mapping (parsed TOML, or built from flags).

    Every problem found is reported at once in a ``SweepSpecError``: unknown keys (with
    close matches), wrong types, empty grids, duplicate values, batch sizes that the PPO
    settings cannot split into minibatches, budgets smaller than a rollout, targets above
    an environment's known maximum return (``KNOWN_MAX_RETURN``), unknown or sweep-set
    fields in ``[ppo]`` / ``[train]``. A sweep of supervised tasks (``batch_sizes`` and a
    ``[supervised]`` table instead of the batch factors and ``[ppo]`` / ``[train]``):
    ``_supervised_grid``.
    """

    problems = Problems()
    raw = dict(raw)
    _check_keys(raw, problems)
    scheduler = _scheduler(raw, problems)
    pbt = scheduler == "pbt"
    env_kinds = _envs(raw, problems)
    supervised = _supervised_kind(env_kinds, problems)
    preset = _preset(raw, problems)
    if supervised:
        vary, factors = "num_envs", {"num_envs": [], "num_steps": []}
        batch_sizes, sup_table = _supervised_grid(raw, pbt, problems)
    else:
        vary, factors = _batch_factors(raw, pbt, problems)
        batch_sizes, sup_table = [], {}
        for key in ("batch_sizes", "supervised"):
            if key in raw:
                problems.add(f"{key} is for supervised tasks ({', '.join(SUPERVISED_TASKS)}); "
                             "an environment's batch sizes are num_envs x num_steps")
    lrs, lr_rule, base_batch_size = _learning_rates(raw, problems)
    extra_lrs = _extra_lrs(raw, pbt, problems)
    seeds = _seeds(raw, problems)
    targets = _targets(raw, pbt, env_kinds, problems)
    if supervised:
        _supervised_targets(targets, sup_table, problems)
    budget = _budget(raw, problems)
    execution = _execution(raw, problems)
    protocol = _protocol(raw, pbt, seeds, lrs, problems)
    overrides = {table: _override_table(raw, table, cls, sweep_set, problems)
                 for table, cls, sweep_set in (("ppo", PPOConfig, SWEEP_SET_PPO),
                                               ("train", TrainConfig, SWEEP_SET_TRAIN))}
    pbt_settings = _pbt_settings(raw, pbt, preset, env_kinds, overrides, problems)
    spec = SweepSpec(
        env=list(env_kinds), targets=targets, vary=vary, num_envs=factors["num_envs"],
        num_steps=factors["num_steps"], lrs=lrs, lr_rule=lr_rule,
        base_batch_size=base_batch_size, extra_lrs=extra_lrs, seeds=seeds, budget=budget,
        preset=preset,
        ppo=overrides["ppo"], train=overrides["train"], scheduler=scheduler, pbt=pbt_settings,
        batch_sizes=batch_sizes, supervised=sup_table, **execution, **protocol,
    )
    if pbt and not problems:
        check_pbt_spec(spec, raw, problems.add)
    # Batch sizes and full run configs, only once the pieces are sound.
    if not problems:
        (_check_supervised_runs if supervised else _check_runs)(spec, env_kinds, problems)
    if problems:
        raise SweepSpecError(problems, source)
    return spec


# --------------------------------------------------------------------------------------
# The steps of parse_spec: each reads its keys of the raw spec, reports what is wrong to
# ``problems`` and returns a usable value (a default where the given one is wrong).
# --------------------------------------------------------------------------------------


def _check_keys(raw: Mapping[str, Any], problems: Problems) -> None:
    for key in raw:
        if key not in SPEC_KEYS:
            problems.add(
                f"unknown key {key!r}{did_you_mean(key, SPEC_KEYS)} (known keys: "
                f"{', '.join(SPEC_KEYS)})"
            )


def _scheduler(raw: Mapping[str, Any], problems: Problems) -> str:
    scheduler = raw.get("scheduler", "grid")
    if scheduler not in SCHEDULERS:
        problems.add(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
        scheduler = "grid"
    return scheduler


def _envs(raw: Mapping[str, Any], problems: Problems) -> dict[str, str]:
    """{canonical environment name: kind}, in the spec's order."""
    env_kinds: dict[str, str] = {}
    if "env" not in raw:
        problems.add("env is missing: name the environment(s), e.g. env = \"CartPole\"")
        return env_kinds
    names = list_of(raw, "env", lambda v: isinstance(v, str) and v.strip(),
                    "environment names", problems)
    for name in names or []:
        resolved = resolve_env(name, problems)
        if resolved is None:
            continue
        canon, kind = resolved
        if canon in env_kinds:
            problems.add(
                f"env lists {canon!r} more than once (as {name!r}); list each environment once"
            )
        env_kinds[canon] = kind
    return env_kinds


def _supervised_kind(env_kinds: Mapping[str, str], problems: Problems) -> bool:
    """Whether the spec sweeps supervised tasks; a mix with environments is a problem."""
    kinds = {k == SUPERVISED_KIND for k in env_kinds.values()}
    if len(kinds) > 1:
        problems.add(f"env mixes supervised tasks ({', '.join(SUPERVISED_TASKS)}) with "
                     "environments; sweep them in separate specs (their settings differ)")
    return kinds == {True}


def _supervised_grid(raw: Mapping[str, Any], pbt: bool, problems: Problems
                     ) -> tuple[list[int], dict[str, Any]]:
    """(batch_sizes, the [supervised] table) of a supervised sweep; the keys of PPO sweeps
    are problems."""
    for key, why in (("vary", "batch_sizes"), ("num_envs", "batch_sizes"),
                     ("num_steps", "batch_sizes"), ("preset", "the [supervised] table"),
                     ("ppo", "the [supervised] table"), ("train", "the [supervised] table"),
                     ("pbt", "a grid")):
        if key in raw:
            problems.add(f"{key} does not apply to supervised tasks; use {why}")
    if pbt:
        problems.add("scheduler = 'pbt' trains PPO members; a supervised sweep is a grid")
    batch_sizes: list[int] = []
    if "batch_sizes" not in raw:
        problems.add("batch_sizes is missing: give the batch sizes (examples) of the supervised "
                     "sweep, e.g. batch_sizes = [8, 16, 32, 64, 128, 256, 512, 1024]")
    else:
        batch_sizes = list_of(raw, "batch_sizes", lambda v: is_int(v) and v >= 1,
                              "positive integers", problems) or []
    table = _override_table(raw, "supervised", SupervisedConfig, SWEEP_SET_SUPERVISED, problems)
    return batch_sizes, table


def _supervised_targets(targets: list[float], table: Mapping[str, Any],
                        problems: Problems) -> None:
    """Targets a supervised task's progress score can reach: minus the training loss is
    below 0, the test accuracy at most 1."""
    progress = table.get("progress", "train_loss")
    if progress == "train_loss":
        bad = [t for t in targets if t >= 0]
        if bad:
            problems.add(f"target(s) {', '.join(f'{t:g}' for t in bad)} can never be reached: "
                         "the progress score is minus the training loss (a target of -0.1 is "
                         "a training loss of 0.1), so targets are negative")
    elif progress == "test_acc":
        bad = [t for t in targets if not 0 < t <= 1]
        if bad:
            problems.add(f"target(s) {', '.join(f'{t:g}' for t in bad)} are no test accuracy: "
                         "with progress = 'test_acc' targets are fractions in (0, 1]")


def _preset(raw: Mapping[str, Any], problems: Problems) -> str | None:
    preset = raw.get("preset")
    if preset is not None and preset not in PRESETS:
        problems.add(f"preset {preset!r} is unknown{did_you_mean(str(preset), PRESETS)}; "
                     f"use one of {', '.join(PRESETS)}")
        preset = None
    return preset


def _batch_factors(raw: Mapping[str, Any], pbt: bool, problems: Problems
                   ) -> tuple[str, dict[str, list[int]]]:
    """(vary, {"num_envs": [...], "num_steps": [...]}): the varied factor's values and the
    fixed one's (one value, or none for the preset's)."""
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
        got = list_of(raw, vary, lambda v: is_int(v) and v >= 1, "positive integers",
                      problems)
        factors[vary] = got or []
    if fixed_key in raw:
        got = list_of(raw, fixed_key, lambda v: is_int(v) and v >= 1, "positive integers",
                      problems)
        if got is not None and len(got) > 1:
            problems.add(
                f"{fixed_key} has {len(got)} values but vary = {vary!r} keeps it fixed; give "
                f"one {fixed_key}, or set vary = {fixed_key!r} (and one {vary})"
            )
            got = None
        factors[fixed_key] = got or []
    return vary, factors


def _learning_rates(raw: Mapping[str, Any], problems: Problems
                    ) -> tuple[list[float], str, int | None]:
    """(lrs, lr_rule, base_batch_size)."""
    if "lrs" in raw and "base_lr" in raw:
        problems.add("give either lrs or base_lr, not both (base_lr = x means lrs = [x])")
    lr_key = "base_lr" if "base_lr" in raw else "lrs"
    lrs: list[float] = []
    if lr_key in raw:
        lrs = list_of(raw, lr_key, lambda v: is_number(v) and math.isfinite(v) and v > 0,
                      "positive numbers", problems) or []
        lrs = [float(v) for v in lrs]
    lr_rule = raw.get("lr_rule", "constant")
    if lr_rule not in LR_RULES:
        problems.add(f"lr_rule {lr_rule!r} is unknown"
                     f"{did_you_mean(str(lr_rule), LR_RULES)}; use one "
                     f"of {', '.join(LR_RULES)}")
        lr_rule = "constant"
    base_batch_size = raw.get("base_batch_size")
    if lr_rule != "constant":
        if base_batch_size is None:
            problems.add(f"lr_rule = {lr_rule!r} needs base_batch_size: the batch size (agent "
                         "steps) at which the lrs are given, e.g. base_batch_size = 256")
        elif not (is_int(base_batch_size) and base_batch_size >= 1):
            problems.add(f"base_batch_size must be a positive integer, got {base_batch_size!r}")
            base_batch_size = None
        if not lrs and lr_key not in raw:
            problems.add(f"lr_rule = {lr_rule!r} needs the learning rate(s) at base_batch_size: "
                         "lrs = [...] or base_lr = x")
    elif base_batch_size is not None:
        problems.add("base_batch_size is only used with lr_rule = 'sqrt' or 'linear'; remove "
                     "it or set lr_rule")
        base_batch_size = None
    return lrs, lr_rule, base_batch_size


def _extra_lrs(raw: Mapping[str, Any], pbt: bool, problems: Problems) -> dict[int, list[float]]:
    """{batch size: further lrs there}: ``[extra_lrs]`` of the spec (TOML keys are strings,
    and so are JSON's in sweep.json). The batch sizes are checked against the sweep's in
    ``_check_runs``."""
    table = raw.get("extra_lrs", {})
    if not isinstance(table, Mapping):
        problems.add(f"extra_lrs must be a table {{batch size = [lrs]}}, e.g. [extra_lrs] "
                     f"with 1024 = [0.004], got {table!r}")
        return {}
    if table and pbt:
        problems.add("extra_lrs is for grid sweeps; PBT explores the lr itself: remove it")
        return {}
    out: dict[int, list[float]] = {}
    for key, values in table.items():
        text = str(key).strip()
        if not text.isdigit() or int(text) < 1:
            problems.add(f"extra_lrs: {key!r} is not a batch size (a positive integer, agent "
                         "steps)")
            continue
        values = values if isinstance(values, list) else [values]
        good = [v for v in values if is_number(v) and math.isfinite(v) and v > 0]
        if len(good) != len(values) or not values:
            problems.add(f"extra_lrs.{text}: {values!r} must be a non-empty list of positive "
                         "learning rates")
            continue
        out[int(text)] = sorted(float(v) for v in good)
    return out


def _seeds(raw: Mapping[str, Any], problems: Problems) -> list[int]:
    if "seeds" not in raw:
        return [0]
    value = raw["seeds"]
    if is_int(value) and not isinstance(value, list):
        if value < 1:
            problems.add(f"seeds = {value} runs nothing; give a count >= 1 or a list of seeds")
        return list(range(max(value, 0)))
    return list_of(raw, "seeds", lambda v: is_int(v) and v >= 0,
                   "non-negative integers", problems, allow_scalar=False) or []


def _targets(raw: Mapping[str, Any], pbt: bool, env_kinds: Mapping[str, str],
             problems: Problems) -> list[float]:
    """The target returns, each checked against the environments' known maximum return."""
    targets: list[float] = []
    if pbt and raw.get("targets") in (None, []):
        pass  # optional with PBT: members train their whole budget; targets are only reported
    elif "targets" not in raw:
        problems.add("targets is missing: give the return(s) to reach, e.g. targets = [200]")
    else:
        targets = [float(t) for t in list_of(
            raw, "targets", lambda v: is_number(v) and math.isfinite(v), "finite numbers",
            problems) or []]
    for env in env_kinds:
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
    return targets


def _budget(raw: Mapping[str, Any], problems: Problems) -> int | None:
    if "budget" not in raw:
        return None
    budget = as_count(raw["budget"])
    if budget is None or budget < 1:
        problems.add(f"budget must be a positive number of agent steps (e.g. 40000 or "
                     f"'40k'), got {raw['budget']!r}")
        return None
    return budget


def _execution(raw: Mapping[str, Any], problems: Problems) -> dict[str, Any]:
    """The SweepSpec fields of where and how the runs run: parallel, backend, address,
    cpus_per_trial, retry_failed, out."""
    parallel = raw.get("parallel", 1)
    if not (is_int(parallel) and parallel >= 1):
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
    if not (is_int(cpus) and cpus >= 1):
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
    return dict(parallel=parallel, backend=backend,
                address=address if isinstance(address, str) else None, cpus_per_trial=cpus,
                retry_failed=retry_failed, out=str(out) if isinstance(out, str) else "")


def _protocol(raw: Mapping[str, Any], pbt: bool, seeds: list[int], lrs: list[float],
              problems: Problems) -> dict[str, Any]:
    """The SweepSpec fields of the two-stage protocol and the floor: best_lr_seeds,
    allow_target_below_floor."""
    allow = raw.get("allow_target_below_floor", False)
    if not isinstance(allow, bool):
        problems.add(f"allow_target_below_floor must be true or false, got {allow!r}")
        allow = False
    n = raw.get("best_lr_seeds")
    if n is None:
        return dict(best_lr_seeds=None, allow_target_below_floor=allow)
    if not (is_int(n) and n >= 2):
        problems.add(f"best_lr_seeds must be a whole number of seeds >= 2 (e.g. 5: seeds in "
                     f"all at each batch size's best lr), got {n!r}")
        n = None
    elif pbt:
        problems.add("best_lr_seeds (stage 2 of a grid) does not apply to scheduler = 'pbt'; "
                     "remove it")
        n = None
    elif seeds and n <= len(seeds):
        problems.add(f"best_lr_seeds = {n} must exceed the number of grid seeds ({len(seeds)}: "
                     f"seeds = {seeds}) to add seeds at the best lr; raise it (e.g. "
                     f"best_lr_seeds = {max(5, len(seeds) + 1)}) or remove it")
        n = None
    elif len(lrs) < 2:
        problems.add(f"best_lr_seeds needs a learning-rate grid (lrs with 2 or more values, got "
                     f"{lrs or 'the preset lr'}) to choose from; give lrs = [...], or with one "
                     f"lr set seeds = {n} and remove best_lr_seeds")
        n = None
    return dict(best_lr_seeds=n, allow_target_below_floor=allow)


def _override_table(raw: Mapping[str, Any], table: str, cls: type, sweep_set: Mapping[str, str],
                    problems: Problems) -> dict[str, Any]:
    """The valid fields of the ``[ppo]`` or ``[train]`` table (floats made float)."""
    value = raw.get(table, {})
    if not isinstance(value, Mapping):
        problems.add(f"{table} must be a table of {cls.__name__} fields, got {value!r}")
        return {}
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls) if f.init]
    good = {}
    for key, v in value.items():
        if key in sweep_set:
            problems.add(f"{table}.{key} is set by the sweep for every run; use the "
                         f"sweep key {sweep_set[key]} instead")
        elif key not in fields:
            problems.add(f"{table}.{key} is not a {cls.__name__} field"
                         f"{did_you_mean(key, fields)} (fields: {', '.join(fields)})")
        elif not type_ok(v, hints[key]):
            problems.add(f"{table}.{key} = {v!r} has the wrong type; expected "
                         f"{type_name(hints[key])}")
        else:
            good[key] = float(v) if hints[key] is float else v
    return good


def _pbt_settings(raw: Mapping[str, Any], pbt: bool, preset: str | None,
                  env_kinds: Mapping[str, str], overrides: dict[str, dict[str, Any]],
                  problems: Problems) -> dict[str, Any]:
    """The ``[pbt]`` table with PBT (which then keeps the lr constant unless the spec asks
    for annealing); without PBT a non-empty table is a problem."""
    if not pbt:
        if raw.get("pbt"):
            problems.add("the pbt table is only used with scheduler = 'pbt' (flag --scheduler "
                         "pbt); set it or remove the table")
        return {}
    preset_lr = PPOConfig(**{**PRESETS[preset or preset_of(env_kinds)][1],
                             **overrides["ppo"]}).learning_rate
    settings = parse_pbt_table(raw.get("pbt", {}), preset_lr, problems.add)
    overrides["ppo"].setdefault("anneal_lr", False)
    return settings


def _check_runs(spec: SweepSpec, env_kinds: Mapping[str, str], problems: Problems) -> None:
    """Build every run's configs and validate them (batch sizes, budget, overrides)."""

    for env in env_kinds:
        train_base, ppo_base = env_settings(spec, env)
        shapes = batch_shapes(spec, train_base)
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
            scaled = [scaled_lr(spec, lr, b) for lr in lrs]
            if len(set(scaled)) < len(scaled):
                problems.add(f"{where}: the lrs {lrs} give equal learning rates after the "
                             f"{spec.lr_rule} rule and rounding to 6 digits; use distinct lrs")
            both = sorted(set(scaled) & {round_lr(v) for v in spec.extra_lrs.get(b, [])})
            if both:
                problems.add(f"{where}: extra_lrs {', '.join(f'{v:g}' for v in both)} already "
                             "in the grid of lrs there; give only new ones")
        bs = [ne * ns for ne, ns in shapes]
        unknown = sorted(set(spec.extra_lrs) - set(bs))
        if unknown:
            problems.add(f"extra_lrs names batch size(s) {', '.join(map(str, unknown))}, which "
                         f"{env}'s sweep does not have (its batch sizes: "
                         f"{', '.join(map(str, sorted(bs)))})")
        short = sorted(b for b in bs if b > budget)
        if short:
            problems.add(
                f"budget {budget} agent steps is less than one rollout of batch size(s) "
                f"{', '.join(map(str, short))} on {env}; raise budget to at least {max(bs)} "
                "(runs need many rollouts to reach a target)"
            )
        if duplicates(bs):
            problems.add(f"batch sizes {duplicates(bs)} occur more than once on {env}")


def _supervised_run_config(spec: SweepSpec, env: str, batch_size: int, lr: float, seed: int
                           ) -> SupervisedConfig:
    """The SupervisedConfig of one run of a supervised sweep (``supervised_settings`` and the
    run's values; the budget in examples: budget // batch_size optimizer steps)."""
    return SupervisedConfig(**{
        **supervised_settings(spec, env), "batch_size": batch_size, "lr": lr, "seed": seed,
        "target": max(spec.targets),
        "total_steps": None if spec.budget is None else max(1, spec.budget // batch_size)})


def _check_supervised_runs(spec: SweepSpec, env_kinds: Mapping[str, str],
                           problems: Problems) -> None:
    """Build every batch size's SupervisedConfig and validate it (budget, lrs)."""
    unknown = sorted(set(spec.extra_lrs) - set(spec.batch_sizes))
    if unknown:
        problems.add(f"extra_lrs names batch size(s) {', '.join(map(str, unknown))}, which the "
                     f"sweep does not have ({', '.join(map(str, sorted(spec.batch_sizes)))})")
    for env in env_kinds:
        lrs = spec.lrs or [SupervisedConfig().learning_rate]
        for b in spec.batch_sizes:
            scaled = [scaled_lr(spec, lr, b) for lr in lrs]
            try:
                _supervised_run_config(spec, env, b, scaled[0], spec.seeds[0] if spec.seeds
                                       else 0)
            except (TypeError, ValueError) as exc:
                problems.add(f"batch size {b} on {env}: {exc}")
            if len(set(scaled)) < len(scaled):
                problems.add(f"batch size {b} on {env}: the lrs {lrs} give equal learning "
                             f"rates after the {spec.lr_rule} rule and rounding to 6 digits; "
                             "use distinct lrs")
        short = sorted(b for b in spec.batch_sizes if spec.budget is not None and b > spec.budget)
        if short:
            problems.add(f"budget {spec.budget} examples is less than one batch of "
                         f"{', '.join(map(str, short))} on {env}; raise budget")


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


def stored_spec(out: str | os.PathLike[str],
                overrides: Mapping[str, Any] | None = None) -> SweepSpec | None:
    """The spec of the sweep stored in ``out`` (its ``sweep.json``) updated by ``overrides``
    and validated, with ``out`` as its directory wherever the sweep was made; None if ``out``
    holds no sweep.json."""
    state = read_sweep_state(out)
    if state is None:
        return None
    try:
        raw = spec_to_raw(SweepSpec(**state["spec"]))
    except (KeyError, TypeError) as exc:
        raise SweepSpecError([f"sweep.json holds no readable spec ({exc!r}); was it made by "
                              "rlscale sweep?"], f"{out}/sweep.json") from None
    raw = merge_spec(raw, {"out": str(out), **(overrides or {})})
    return parse_spec(raw, source=f"{out}/sweep.json" + (" + overrides" if overrides else ""))


def merge_spec(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``over``; the ``ppo`` / ``train`` / ``pbt`` tables are merged key
    by key (and ``pbt.hyperparams`` name by name)."""
    out = dict(base)
    for key, value in over.items():
        if key in ("ppo", "train", "pbt", "supervised") and isinstance(value, Mapping) and \
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
    for key in ("num_envs", "num_steps", "batch_sizes", "supervised"):
        if not raw[key]:
            del raw[key]
    if not raw["lrs"]:
        del raw["lrs"]
    if raw.get("extra_lrs"):
        raw["extra_lrs"] = {str(b): v for b, v in raw["extra_lrs"].items()}
    else:
        raw.pop("extra_lrs", None)
    if spec.is_supervised:
        for key in ("vary", "ppo", "train", "pbt"):
            raw.pop(key, None)
    if raw.get("scheduler") == "pbt":
        if not raw["targets"]:
            del raw["targets"]
        del raw["parallel"]  # = the population with PBT
    else:
        raw.pop("pbt", None)
    return raw


def grid_at(spec: SweepSpec, lrs: list[float], batch_size: int) -> list[float]:
    """The learning rates of a batch size: ``lrs`` by the spec's rule, then its
    ``extra_lrs`` (as given, rounded like the rule's), sorted."""
    grid = {scaled_lr(spec, lr0, batch_size) for lr0 in lrs}
    grid |= {round_lr(v) for v in spec.extra_lrs.get(batch_size, [])}
    return sorted(grid)


def _extension_pending(spec: SweepSpec, out: Path, env: str, ne: int, ns: int,
                       grid: list[float], chosen: BestLr) -> bool:
    """Whether the grid at this batch size has lrs the choice was not made on, and a grid
    run at one of them has not ended (finished or failed) yet. Once they have, the recorded
    choice plans stage 2 until the sweep chooses again on the extended grid (a sweep
    recorded before that rule keeps its plan)."""
    new_lrs = set(grid) - set(chosen.grid_lrs)
    for lr in new_lrs:
        for seed in spec.seeds:
            status = peek_status(out / "runs" / run_name(env, ne, ns, lr, seed,
                                                         supervised=spec.is_supervised))
            if status is None or status.state not in ("finished", "failed"):
                return True
    return False


def plan_runs(spec: SweepSpec, best_lrs: Mapping[tuple[str, int], BestLr] | None = None
              ) -> list[RunPlan]:
    """Every run of the sweep, ordered by env, then batch size (small first: those take the
    most iterations, so they start first), lr, seed. A PBT spec's runs are its members
    (``rl.sweeps.pbt.plan_members``).

    With ``best_lr_seeds`` (stage 2) a batch size whose lr has been chosen (``best_lrs``,
    default: those recorded in ``<out>/best_lr.json``) also gets the seeds of
    ``stage_two_seeds`` at that lr, unless its grid has grown since the choice and the new
    grid runs have not all ended (then not until the extended grid chooses again).
    ``SweepStateError`` if a recorded lr is not in the batch size's grid (the spec's lrs
    changed after the choice).
    """

    if spec.scheduler == "pbt":

        return plan_members(spec)

    out = Path(spec.out).resolve()
    extra = stage_two_seeds(spec)
    if extra and best_lrs is None:
        best_lrs = read_best_lrs(spec.out)
    plans = []
    for env in spec.env:
        if spec.is_supervised:
            train_base, ppo_base = {}, {}
            lrs = sorted(spec.lrs) or [SupervisedConfig().learning_rate]
        else:
            train_base, ppo_base = env_settings(spec, env)
            budget = spec.budget or TrainConfig(**train_base).total_agent_steps
            lrs = sorted(spec.lrs) or [PPOConfig(**ppo_base).learning_rate]
        shapes = sorted(batch_shapes(spec, train_base), key=lambda s: (s[0] * s[1], s))
        for ne, ns in shapes:
            grid = grid_at(spec, lrs, ne * ns)
            chosen = (best_lrs or {}).get((env, ne * ns)) if extra else None
            if chosen is not None and chosen.lr is not None and chosen.lr not in grid:
                raise SweepStateError(
                    f"{Path(spec.out) / BEST_LR_FILE} records lr {chosen.lr:g} for batch size "
                    f"{ne * ns} on {env}, which is not in this spec's grid there "
                    f"({', '.join(f'{v:g}' for v in grid)}): the lrs changed after the choice. "
                    "Restore the spec's lrs (see sweep.json), or use a new sweep directory (out)"
                )
            if chosen is not None and _extension_pending(spec, out, env, ne, ns, grid, chosen):
                # The grid grew after the choice (it sat at the edge) and its new runs have
                # not all ended: stage 2 waits for the extended grid to choose again instead
                # of adding seeds at a choice that may be stale.
                chosen = None
            for lr in grid:
                stage_two = extra if chosen is not None and chosen.lr == lr else []
                for seed in [*spec.seeds, *stage_two]:
                    name = run_name(env, ne, ns, lr, seed, supervised=spec.is_supervised)
                    run_dir = str(out / "runs" / name)
                    if spec.is_supervised:
                        cfg = _supervised_run_config(spec, env, ne * ns, lr, seed)
                        plans.append(RunPlan(name, env, ne, ns, lr, seed, run_dir,
                                             dataclasses.asdict(cfg), {}, kind="supervised"))
                        continue
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
    assert len(set(names)) == len(names), duplicates(names)
    return plans
