"""Population based training (Jaderberg et al. 2017) of PPO on Ray Tune.

See docs/sweeps.md for the full description.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from agents import PPOConfig
from rl.runs.storage import (
    CHECKPOINT_DIR,
    LATEST_FILE,
    RunDir,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    clear_run_dir,
    load_metrics,
    lock_run_dir,
)
from rl.sweeps.settings import (
    SweepStateError,
    batch_shapes,
    did_you_mean,
    env_settings,
    is_finite_number,
    is_int,
)
from rl.sweeps.state import RunPlan, append_event, classify_run, read_sweep_state, write_sweep_state
from rl.train.config import PPOOverride, TrainConfig
from rl.train.launch import train

__all__ = [
    "HYPERPARAMS",
    "PBTConfig",
    "PBT_COLUMNS",
    "check_pbt_spec",
    "initial_values",
    "is_pbt_sweep",
    "member_name",
    "member_statuses",
    "member_summary",
    "parse_param_flag",
    "parse_pbt_table",
    "pbt_table",
    "plan_members",
    "plot_pbt",
    "run_member",
    "run_pbt",
    "write_pbt_outputs",
]

HYPERPARAMS = ("learning_rate", "ent_coef", "clip_coef")
"""The PPO hyperparameters PBT can perturb (``rl.train.config.PPOOverride`` fields)."""
KINDS = ("log", "uniform", "values")
METRICS = ("return_recent", "return_mean")
# Smallest allowed value of each hyperparameter (and whether the bound itself is allowed).
_LOWER = {"learning_rate": (0.0, False), "ent_coef": (0.0, True), "clip_coef": (0.0, False)}
MEMBER_FILE = "pbt_member.json"
PERTURBATION_FACTORS = (1.2, 0.8)  # Tune's default, named here for the docs and the tests


@dataclass
class PBTConfig:
    """Population based training: the ``[pbt]`` table of a sweep spec."""

    population: int = 4
    """PBT: members of the population (>= 2), each a Ray Tune trial with its own run
    directory; as many train at once as the CPUs allow (--cpus-per-trial each), Tune
    time-shares the others."""
    perturbation_interval: int = 10
    """PBT: PPO iterations between a member's exploit/explore decisions (also its
    checkpoint cadence)."""
    quantile_fraction: float = 0.25
    """PBT: members in this bottom fraction copy a member of the top fraction (0 < f <= 0.5)."""
    resample_probability: float = 0.25
    """PBT: chance that explore draws a hyperparameter afresh instead of perturbing it (x0.8
    or x1.2 for a range, a neighbour for a list)."""
    metric: Literal["return_recent", "return_mean"] = "return_recent"
    """PBT: the score members are ranked by: return_recent (mean return of the last
    return_window games) or return_mean (games finished in the iteration)."""
    hyperparams: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    """Perturbed hyperparameters: name -> {"log": [low, high]}, {"uniform": [low, high]} or
    {"values": [v1, v2, ...]}; empty: the defaults (``default_hyperparams``)."""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PBTConfig:
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


def member_name(index: int) -> str:
    return f"m{index:02d}"


def default_hyperparams(preset_lr: float) -> dict[str, dict[str, list[float]]]:
    """learning_rate log-uniform over [lr / 10, lr x 10] around the preset's lr; ent_coef
    from a list that includes 0; clip_coef uniform over [0.1, 0.3]."""
    return {
        "learning_rate": {"log": [_round(preset_lr / 10), _round(preset_lr * 10)]},
        "ent_coef": {"values": [0.0, 0.001, 0.003, 0.01, 0.03]},
        "clip_coef": {"uniform": [0.1, 0.3]},
    }


def _round(x: float) -> float:
    return float(f"{x:.6g}")


# --------------------------------------------------------------------------------------
# Spec
# --------------------------------------------------------------------------------------


def _check_value(name: str, v: float) -> str | None:
    low, inclusive = _LOWER[name]
    if v > low or (inclusive and v == low):
        return None
    return f"must be {'>=' if inclusive else '>'} {low:g}"


def _parse_hyperparam(name: str, value: Any, add: Callable[[str], None]) -> dict | None:
    where = f"pbt.hyperparams.{name}"
    if not isinstance(value, Mapping) or len(value) != 1 or next(iter(value)) not in KINDS:
        add(f"{where} = {value!r}: give a log-uniform range {{ log = [1e-4, 1e-2] }}, a "
            "range { uniform = [0.1, 0.3] } or a list { values = [0.0, 0.01] } (flag: "
            f"--pbt-param {name}=log:LOW,HIGH)")
        return None
    kind, args = next(iter(value.items()))
    if not isinstance(args, (list, tuple)) or not all(is_finite_number(a) for a in args):
        add(f"{where}.{kind} must be a list of finite numbers, got {args!r}")
        return None
    args = [float(a) for a in args]
    bad = [a for a in args if _check_value(name, a)]
    if bad:
        add(f"{where}: {name} {_check_value(name, bad[0])}; bad value(s): "
            f"{', '.join(f'{a:g}' for a in bad)}")
        return None
    if kind == "values":
        if not args:
            add(f"{where}.values is empty; list at least one value")
            return None
        if len(set(args)) < len(args):
            add(f"{where}.values lists a value more than once; list each value once")
            return None
        return {"values": sorted(args)}
    if len(args) != 2:
        add(f"{where}.{kind} needs exactly two numbers (low, high), got {len(args)}")
        return None
    low, high = args
    if not low < high:
        add(f"{where}.{kind} = [{low:g}, {high:g}] is an empty range: low must be less than "
            "high (for one fixed value give a values list of one, or leave the name out)")
        return None
    if kind == "log" and low <= 0:
        add(f"{where}.log needs low > 0 (log-uniform); use {{ uniform = [{low:g}, {high:g}] }}"
            " or a values list")
        return None
    return {kind: [low, high]}


def parse_pbt_table(value: Any, preset_lr: float, add: Callable[[str], None]) -> dict[str, Any]:
    """The ``[pbt]`` table, validated and with every field explicit (plain JSON values).

    ``preset_lr``: the learning rate the default learning_rate range is centred on.
    ``add`` receives one message per problem.
    """

    if not isinstance(value, Mapping):
        add(f"pbt must be a table of PBT settings ({', '.join(_fields())}), got {value!r}")
        return {}
    defaults = PBTConfig()
    out: dict[str, Any] = {}
    for key in value:
        if key not in _fields():
            add(f"pbt.{key} is not a PBT setting{did_you_mean(key, _fields())} (settings: "
                f"{', '.join(_fields())})")
    population = value.get("population", defaults.population)
    if not (is_int(population) and population >= 2):
        add(f"pbt.population must be an integer >= 2 (PBT copies between members), got "
            f"{population!r}")
    interval = value.get("perturbation_interval", defaults.perturbation_interval)
    if not (is_int(interval) and interval >= 1):
        add(f"pbt.perturbation_interval must be a positive number of PPO iterations, got "
            f"{interval!r}")
    quantile = value.get("quantile_fraction", defaults.quantile_fraction)
    if not (is_finite_number(quantile) and 0 < quantile <= 0.5):
        add(f"pbt.quantile_fraction must be in (0, 0.5] (the bottom fraction copies the top "
            f"one), got {quantile!r}")
    resample = value.get("resample_probability", defaults.resample_probability)
    if not (is_finite_number(resample) and 0 <= resample <= 1):
        add(f"pbt.resample_probability must be in [0, 1], got {resample!r}")
    metric = value.get("metric", defaults.metric)
    if metric not in METRICS:
        add(f"pbt.metric must be one of {', '.join(METRICS)} (metrics columns of the trainer),"
            f" got {metric!r}")
    raw_hp = value.get("hyperparams")
    hyperparams: dict[str, dict] = {}
    if raw_hp is None:
        hyperparams = default_hyperparams(preset_lr)
    elif not isinstance(raw_hp, Mapping) or not raw_hp:
        add(f"pbt.hyperparams must be a table naming at least one of {', '.join(HYPERPARAMS)} "
            f"(leave it out for the defaults), got {raw_hp!r}")
    else:
        for name, spec in raw_hp.items():
            if name not in HYPERPARAMS:
                add(f"pbt.hyperparams.{name}: unknown hyperparameter"
                    f"{did_you_mean(name, HYPERPARAMS)};"
                    f" PBT perturbs {', '.join(HYPERPARAMS)}")
                continue
            parsed = _parse_hyperparam(name, spec, add)
            if parsed is not None:
                hyperparams[name] = parsed
        hyperparams = {k: hyperparams[k] for k in HYPERPARAMS if k in hyperparams}
    out.update(population=population, perturbation_interval=interval,
               quantile_fraction=float(quantile) if is_finite_number(quantile) else quantile,
               resample_probability=float(resample) if is_finite_number(resample) else resample,
               metric=metric, hyperparams=hyperparams)
    return out


def _fields() -> list[str]:
    return [f.name for f in dataclasses.fields(PBTConfig)]


def check_pbt_spec(spec, raw: Mapping[str, Any], add: Callable[[str], None]) -> None:
    """Checks of a ``scheduler = "pbt"`` spec across its keys; sets parallel = population
    when the spec does not give it."""

    cfg = PBTConfig.from_dict(spec.pbt)
    if spec.backend != "ray":
        add("scheduler = 'pbt' runs on Ray Tune's PopulationBasedTraining scheduler: set "
            "backend = 'ray' (flag --backend ray)")
    if len(spec.env) != 1:
        add(f"PBT trains one environment, got {len(spec.env)} ({', '.join(spec.env)}); run one "
            "PBT sweep per environment")
    for key in ("num_envs", "num_steps"):
        if len(getattr(spec, key)) > 1:
            add(f"PBT trains at one batch size: give one {key} value, got {getattr(spec, key)}")
    if len(spec.seeds) != 1:
        add("PBT uses one base seed (member i trains with seed + i): give one seed, e.g. "
            f"seeds = [0], got {spec.seeds}")
    perturbed = set(cfg.hyperparams)
    if "learning_rate" in perturbed and ("lrs" in raw or "base_lr" in raw):
        add("with scheduler = 'pbt' the learning rate is PBT's: give its range as "
            "pbt.hyperparams.learning_rate (e.g. { log = [1e-4, 1e-2] }) instead of lrs")
    elif len(spec.lrs) > 1:
        add(f"PBT trains one fixed learning rate when it does not perturb it: give one lr, "
            f"got lrs = {spec.lrs}")
    if spec.lr_rule != "constant":
        add("lr_rule is not used with scheduler = 'pbt' (one batch size); remove it")
    for name in sorted(perturbed & set(spec.ppo)):
        add(f"ppo.{name} is perturbed by PBT (initial values come from pbt.hyperparams."
            f"{name}); remove it from the ppo table, or drop {name} from the hyperparams to fix "
            "it")
    if "checkpoint_every" in spec.train:
        add("train.checkpoint_every is set by PBT (= pbt.perturbation_interval: members "
            "checkpoint where they may be copied); remove it")
    if is_int(cfg.population):
        if "parallel" not in raw:
            spec.parallel = cfg.population
        elif spec.parallel != cfg.population:
            add(f"parallel = {spec.parallel} with PBT: leave it out (or equal to pbt.population):"
                " every member is a live Tune trial; as many run at once as the CPUs allow "
                "(cpus_per_trial each), and Tune time-shares the others at perturbation points")
    if len(spec.env) != 1 or not is_int(cfg.perturbation_interval):
        return
    train_base, ppo_base = env_settings(spec, spec.env[0])
    shapes = batch_shapes(spec, train_base)
    budget = spec.budget or TrainConfig(**train_base).total_agent_steps
    if len(shapes) == 1:
        b = shapes[0][0] * shapes[0][1]
        iterations = budget // b
        need = 2 * cfg.perturbation_interval
        if iterations < need:
            add(f"budget {budget} agent steps gives {iterations} PPO iterations per member at "
                f"batch size {b}, fewer than 2 perturbation intervals ({need}): exploits need "
                f"at least two; raise budget to {need * b} or lower pbt.perturbation_interval")
    # Every value a member can get must make a valid PPOConfig.
    for name, dist in cfg.hyperparams.items():
        for v in next(iter(dist.values())):
            try:
                PPOConfig(**{**ppo_base, name: v}).validate(shapes[0][0] * shapes[0][1])
            except (TypeError, ValueError) as exc:
                add(f"pbt.hyperparams.{name} = {v:g}: {exc}")
                break


def parse_param_flag(text: str) -> tuple[str, dict[str, list[float]]]:
    """``--pbt-param`` value: ``NAME=log:LOW,HIGH``, ``NAME=uniform:LOW,HIGH`` or
    ``NAME=values:V1,V2,...`` -> (name, {kind: numbers}); checked later by the spec."""
    name, sep, rest = text.partition("=")
    kind, sep2, numbers = rest.partition(":")
    if not sep or not sep2 or not name.strip() or kind.strip() not in KINDS:
        raise ValueError(
            f"--pbt-param takes NAME=KIND:NUMBERS with KIND one of {', '.join(KINDS)}, e.g. "
            f"--pbt-param learning_rate=log:1e-4,1e-2 or --pbt-param ent_coef=values:0,0.01; "
            f"got {text!r}"
        )
    values = []
    for part in numbers.split(","):
        if not part.strip():
            continue
        try:
            values.append(float(part))
        except ValueError:
            raise ValueError(f"--pbt-param {text!r}: {part.strip()!r} is not a number") from None
    return name.strip(), {kind.strip(): values}


# --------------------------------------------------------------------------------------
# Members
# --------------------------------------------------------------------------------------


def initial_values(cfg: PBTConfig, seed: int) -> list[dict[str, float]]:
    """Each member's initial hyperparameters, drawn from the ranges and lists with a
    generator seeded by the base seed (log-uniform, uniform, or a uniform pick)."""
    rng = np.random.default_rng([int(seed), 0x9B7])
    members = []
    for _ in range(cfg.population):
        values = {}
        for name, dist in cfg.hyperparams.items():
            kind, args = next(iter(dist.items()))
            if kind == "log":
                v = _round(math.exp(rng.uniform(math.log(args[0]), math.log(args[1]))))
            elif kind == "uniform":
                v = _round(rng.uniform(args[0], args[1]))
            else:
                v = float(args[int(rng.integers(len(args)))])
            values[name] = min(max(v, args[0]), args[-1]) if kind != "values" else v
        members.append(values)
    return members


def plan_members(spec) -> list:
    """The members of a PBT sweep as ``rl.sweeps.state.RunPlan`` s (names m00, m01, ...; lr = the
    member's initial learning rate; configs with its initial hyperparameters, seed =
    base seed + index, checkpoint_every = perturbation_interval, no target stop)."""

    cfg = PBTConfig.from_dict(spec.pbt)
    env = spec.env[0]
    train_base, ppo_base = env_settings(spec, env)
    (ne, ns), = batch_shapes(spec, train_base)
    budget = spec.budget or TrainConfig(**train_base).total_agent_steps
    lr = spec.lrs[0] if spec.lrs else PPOConfig(**ppo_base).learning_rate
    out = Path(spec.out).resolve()
    plans = []
    for i, values in enumerate(initial_values(cfg, spec.seeds[0])):
        name = member_name(i)
        run_dir = str(out / "runs" / name)
        train = {**train_base, "env": env, "num_envs": ne, "num_steps": ns,
                 "seed": spec.seeds[0] + i, "total_agent_steps": budget, "target_return": None,
                 "run_dir": run_dir, "resume": False,
                 "checkpoint_every": cfg.perturbation_interval}
        ppo = {**ppo_base, "learning_rate": lr, **values}
        t_cfg, p_cfg = TrainConfig(**train), PPOConfig(**ppo)
        plans.append(RunPlan(name, env, ne, ns, p_cfg.learning_rate, t_cfg.seed, run_dir,
                             dataclasses.asdict(t_cfg), dataclasses.asdict(p_cfg)))
    return plans


def is_pbt_sweep(out: str | os.PathLike[str]) -> bool:
    """Whether ``out`` holds a PBT sweep (by its sweep.json)."""

    state = read_sweep_state(out) or {}
    return state.get("spec", {}).get("scheduler") == "pbt"


# --------------------------------------------------------------------------------------
# One member (no Ray here: ``report`` is Tune's in a trial, anything in a test)
# --------------------------------------------------------------------------------------


def _reseeded(state: dict[str, Any], seed: int) -> dict[str, Any]:
    """``state`` with its action-sampling, minibatch-order and torch generators reseeded.

    Only CPU generator states are replaced (Ray trials train on CPU); others are kept."""

    state = dict(state)
    size = torch.Generator().get_state().numel()
    for offset, key in enumerate(("sample_gen", "perm_gen", "torch_rng")):
        old = state.get(key)
        if old is not None and old.numel() == size:
            state[key] = torch.Generator().manual_seed((seed + offset) % 2**63).get_state()
    return state


def _write_tune_checkpoint(run_path: Path, iteration: int, meta: dict[str, Any],
                           target: Path) -> None:
    """``target``: a run-dir-shaped copy of the checkpoint of ``iteration`` + meta."""

    source = RunDir(run_path).checkpoint_path(iteration)
    ckpt_dir = target / CHECKPOINT_DIR
    ckpt_dir.mkdir(parents=True)
    try:
        os.link(source, ckpt_dir / source.name)  # no copy where the filesystem allows
    except OSError:
        shutil.copyfile(source, ckpt_dir / source.name)
    atomic_write_json(ckpt_dir / LATEST_FILE, {"iteration": iteration, "file": source.name})
    atomic_write_json(target / MEMBER_FILE, meta)


TUNE_METRICS = ("iteration", "agent_steps", "return_recent", "return_mean", "learning_rate",
                "ent_coef", "clip_coef")


def run_member(plan, hyperparams: Mapping[str, float], *, interval: int,
               restore: Path | None, report: Callable[[dict[str, Any], Path | None], None]):
    """Train PBT member ``plan`` (an ``rl.sweeps.state.RunPlan``) with ``hyperparams`` in force.

    ``restore``: the directory of the Tune checkpoint the trial was restored from (None
    on a fresh start). ``report(metrics, checkpoint_dir)`` is called after every PPO
    iteration; ``checkpoint_dir`` is a directory to hand to Tune as the checkpoint at
    every ``interval``-th iteration, else None. Returns the trainer's ``TrainResult``.
    """

    run_path = Path(plan.run_dir)
    out = run_path.parent.parent
    hyperparams = {k: float(v) for k, v in hyperparams.items()}
    with lock_run_dir(run_path, wait=True):
        donor, donor_iteration, resume = plan.name, 0, False
        if restore is not None:
            meta = json.loads((restore / MEMBER_FILE).read_text(encoding="utf-8"))
            loaded = RunDir(restore).load_latest_checkpoint(map_location="cpu")
            if loaded is None:
                raise RuntimeError(f"the Tune checkpoint {restore} holds no loadable checkpoint")
            state, iteration = loaded
            if meta["member"] != plan.name:  # exploit: continue from the donor's state
                left = (RunDir(run_path).read_status() or {}).get("iteration")
                donor, donor_iteration = meta["member"], iteration
                state = _reseeded(state, plan.seed * 1_000_003 + iteration * 7919)
                append_event(out, "exploit", run=plan.name, donor=donor,
                             donor_iteration=iteration, left_iteration=left,
                             donor_episodes_total=state.get("episodes_total"),
                             donor_hyperparams=meta.get("hyperparams"), **hyperparams)
            else:
                donor, donor_iteration = meta["donor"], meta["donor_iteration"]
                append_event(out, "restore", run=plan.name, from_iteration=iteration)
            RunDir(run_path).save_checkpoint(state, iteration)
            resume = True
        else:
            if (run_path / "config.json").exists():
                # This population's own start of the member, cut short before its first
                # checkpoint (run_pbt refuses to start over other runs): start over.
                clear_run_dir(run_path)
            append_event(out, "start", run=plan.name, **hyperparams)
        cfg, ppo = plan.configs(resume=resume)
        columns = {"pbt/member": plan.name, "pbt/donor": donor,
                   "pbt/donor_iteration": donor_iteration,
                   "pbt/learning_rate": hyperparams.get("learning_rate", ppo.learning_rate)}
        override = PPOOverride(**hyperparams, columns=columns)

        def on_iteration(row: dict[str, Any]) -> None:
            metrics = {k: row[k] for k in TUNE_METRICS if k in row}
            it = int(row["iteration"])
            if it % interval:
                report(metrics, None)
                return
            meta = {"member": plan.name, "iteration": it, "donor": donor,
                    "donor_iteration": donor_iteration, "hyperparams": hyperparams}
            with tempfile.TemporaryDirectory(prefix=f"pbt-{plan.name}-") as tmp:
                _write_tune_checkpoint(run_path, it, meta, Path(tmp) / "ckpt")
                report(metrics, Path(tmp) / "ckpt")

        return train(cfg, ppo, on_iteration=on_iteration, override=override)


# --------------------------------------------------------------------------------------
# Ray Tune
# --------------------------------------------------------------------------------------


class _Clip:
    """Tune ``custom_explore_fn``: clip perturbed range values to their ranges."""

    def __init__(self, bounds: Mapping[str, tuple[float, float]]):
        self.bounds = dict(bounds)

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        for name, (low, high) in self.bounds.items():
            config[name] = min(max(_round(float(config[name])), low), high)
        return config


class _Initial:
    """Tune ``sample_from``: a member's initial value of one hyperparameter."""

    def __init__(self, values: Mapping[str, float]):
        self.values = dict(values)

    def __call__(self, config: Mapping[str, Any]) -> float:
        return self.values[config["member"]]


def _trial_name(trial) -> str:
    # Called once, when the trial is created: its "member" is then its own. (After an
    # exploit, config["member"] is the donor's, copied with the donor's config: a trial
    # knows its member by its name.)
    return str(trial.config["member"])


def _mutations(cfg: PBTConfig) -> dict[str, Any]:
    from ray import tune  # lazy: optional extra

    out: dict[str, Any] = {}
    for name, dist in cfg.hyperparams.items():
        kind, args = next(iter(dist.items()))
        out[name] = (tune.loguniform(*args) if kind == "log" else
                     tune.uniform(*args) if kind == "uniform" else list(args))
    return out


def _member_trainable(config: dict[str, Any], *, plans: dict[str, dict[str, Any]],
                      hyperparams: list[str], interval: int, threads: int) -> None:
    from ray import tune  # lazy: optional extra

    name = tune.get_context().get_trial_name()
    if name not in plans:
        raise RuntimeError(f"trial {name!r} is not a member of this population ({list(plans)})")
    torch.set_num_threads(int(threads))

    def report(metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        if checkpoint_dir is None:
            tune.report(metrics)
        else:
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))

    values = {k: config[k] for k in hyperparams}
    checkpoint = tune.get_checkpoint()
    plan = RunPlan.from_dict(plans[name])
    if checkpoint is None:
        run_member(plan, values, interval=interval, restore=None, report=report)
    else:
        with checkpoint.as_directory() as restore:
            run_member(plan, values, interval=interval, restore=Path(restore), report=report)


def _member_done_callback(base: type) -> type:
    """A ``ray.tune.Callback`` that logs each member's end (the log is not pickled)."""

    class MemberDone(base):
        def __init__(self, log: Callable[[str], None], out: Path):
            self.log, self.out = log, out

        def __getstate__(self):
            return {"log": None, "out": self.out}

        def on_trial_complete(self, iteration, trials, trial, **info):
            result = trial.last_result or {}
            if self.log is not None:
                self.log(f"{trial}: finished at PPO iteration {result.get('iteration')}, "
                         f"return_recent {result.get('return_recent')}")

        def on_trial_error(self, iteration, trials, trial, **info):
            if self.log is not None:
                self.log(f"{trial}: failed ({trial.error_file})")

    return MemberDone


def _check_sweep_dir(spec, members: list) -> str:
    """'new' (start the population) or 'finished' (nothing to train); raises
    ``SweepStateError`` for anything else, before anything runs."""

    out = Path(spec.out)
    state = read_sweep_state(out)
    if state is not None and state.get("spec", {}).get("scheduler", "grid") != "pbt":
        raise SweepStateError(
            f"{out} holds a grid sweep (sweep.json); a PBT population needs its own sweep "
            "directory: give a new out (--out)"
        )
    actions = {m.name: classify_run(m) for m in members}
    if all(a == "finished" for a, _ in actions.values()):
        return "finished"
    started = [f"{name}: {a}{f' ({d})' if d else ''}" for name, (a, d) in actions.items()
               if a != "new"]
    if started:
        raise SweepStateError(
            f"{out} already holds members of a PBT population that did not finish (or was made "
            "with other settings):\n  " + "\n  ".join(started[:10]) + "\nA PBT population is "
            "not continued after an interruption (its exploit/explore state lived in the Tune "
            f"driver). Start it again with a new out (--out), or delete {out / 'runs'}."
        )
    runs = out / "runs"
    others = sorted(p.name for p in runs.iterdir() if p.name not in actions
                    and not p.name.startswith(".")) if runs.is_dir() else []
    if others:
        raise SweepStateError(
            f"{runs} holds run directories that are not members of this population "
            f"({', '.join(others[:5])}); give a new out (--out)"
        )
    return "new"


def run_pbt(spec, *, log: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Train the population of a ``scheduler = "pbt"`` spec on Ray Tune; returns the PBT
    table (also written to ``spec.out``: pbt.csv, pbt.parquet, pbt.png).

    Raises ``SweepStateError`` before anything runs when ``spec.out`` holds something
    else than a finished population of the same settings.
    """

    log = log or (lambda msg: None)
    out = Path(spec.out)
    out.mkdir(parents=True, exist_ok=True)
    members = plan_members(spec)
    if _check_sweep_dir(spec, members) == "finished":
        log(f"PBT population {out}: all {len(members)} members finished; nothing to train")
        return write_pbt_outputs(out)
    write_sweep_state(spec, members)
    append_event(out, "sweep_start", runs=len(members), backend="ray", scheduler="pbt")
    cfg = PBTConfig.from_dict(spec.pbt)
    log(f"PBT population {out}: {cfg.population} members of {spec.env[0]} at batch size "
        f"{members[0].rollout_batch_size} agent steps on Ray Tune ({spec.cpus_per_trial} CPU(s) "
        "each, as many at once as the CPUs allow); "
        f"perturbation every {cfg.perturbation_interval} PPO iterations, perturbing "
        f"{', '.join(cfg.hyperparams)}")
    try:
        _tune_population(spec, cfg, members, log)
    finally:
        table = write_pbt_outputs(out)
    statuses = member_statuses(members)
    for m in members:
        append_event(out, "done" if statuses[m.name] == "finished" else "failed", run=m.name)
    append_event(out, "sweep_end", runs=len(members),
                 finished=sum(s == "finished" for s in statuses.values()))
    return table


def member_statuses(members: Iterable) -> dict[str, str]:
    return {m.name: (RunDir(m.run_dir).read_status() or {}).get("state", "pending")
            for m in members}


def _tune_population(spec, cfg: PBTConfig, members: list, log: Callable[[str], None]) -> None:
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    try:
        import ray  # lazy: optional extra
        from ray import tune  # lazy: optional extra
        from ray.tune.schedulers import PopulationBasedTraining  # lazy: optional extra
    except ImportError as exc:
        raise ModuleNotFoundError(
            f"PBT needs Ray Tune ({exc}); install it with `pip install -e '.[ray]'` (or "
            "`pip install \"ray[tune]\"`)"
        ) from None

    ranges = {name: tuple(next(iter(d.values()))) for name, d in cfg.hyperparams.items()
              if next(iter(d)) != "values"}
    scheduler = PopulationBasedTraining(
        time_attr="iteration",  # our PPO iteration: it continues from the donor's on exploit
        metric=cfg.metric, mode="max", perturbation_interval=cfg.perturbation_interval,
        hyperparam_mutations=_mutations(cfg), quantile_fraction=cfg.quantile_fraction,
        resample_probability=cfg.resample_probability,
        perturbation_factors=PERTURBATION_FACTORS, custom_explore_fn=_Clip(ranges),
    )
    names = [m.name for m in members]
    param_space: dict[str, Any] = {"member": tune.grid_search(names)}
    for name in cfg.hyperparams:
        param_space[name] = tune.sample_from(_Initial({m.name: m.ppo[name] for m in members}))
    trainable = tune.with_resources(
        tune.with_parameters(_member_trainable, plans={m.name: m.to_dict() for m in members},
                             hyperparams=list(cfg.hyperparams),
                             interval=cfg.perturbation_interval, threads=spec.cpus_per_trial),
        {"cpu": spec.cpus_per_trial},
    )
    storage = (Path(spec.out) / "ray").resolve()
    experiment = time.strftime("pbt-%Y%m%d-%H%M%S")
    started = False
    if not ray.is_initialized():
        ray.init(address=spec.address, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            # Every member is a live trial from the start (max_concurrent_trials would hold
            # members back until others finish): as many run at once as the CPUs allow, and
            # PBT time-shares the rest, pausing members at their perturbation points.
            tune_config=tune.TuneConfig(
                scheduler=scheduler, reuse_actors=True,
                trial_name_creator=_trial_name, trial_dirname_creator=_trial_name,
            ),
            run_config=tune.RunConfig(
                name=experiment, storage_path=str(storage), verbose=0,
                callbacks=[_member_done_callback(tune.Callback)(log, Path(spec.out))],
                checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
        tuner.fit()
    finally:
        if started:
            ray.shutdown()
    # Tune's copies of the perturbation checkpoints: not needed once the population ended.
    for ckpt in (storage / experiment).glob("*/checkpoint_*"):
        if ckpt.is_dir():
            shutil.rmtree(ckpt, ignore_errors=True)


# --------------------------------------------------------------------------------------
# The PBT table and its plot
# --------------------------------------------------------------------------------------

PBT_COLUMNS = ["member", "iteration", "agent_steps", "lr", "lr_pbt", "ent_coef", "clip_coef",
               "return", "b_simple_policy", "b_simple_value", "b_simple_total", "gns_measured",
               "donor", "donor_iteration", "exploit"]
"""member; iteration (PPO iterations) and agent_steps of the member's timeline; lr (the rate
in force), lr_pbt (PBT's value; equal without annealing), ent_coef, clip_coef in force;
return (return_recent, smoothed episodic return); b_simple_{term}: the trainer's smoothed
B_simple (ratio of bias-corrected EMAs, agent steps) on rows where the noise scale was
measured, NaN elsewhere; gns_measured; donor, donor_iteration: whose checkpoint at which
iteration the member's current stretch started from (itself and 0 before any exploit);
exploit: the first row after an exploit."""


def _member_names(out: Path) -> list[str]:
    state = read_sweep_state(out) or {}
    names = [r["name"] for r in state.get("runs", [])]
    if names:
        return names
    runs = out / "runs"
    return sorted(p.name for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if runs.is_dir() else []


def pbt_table(out: str | os.PathLike[str]) -> pd.DataFrame:
    """The PBT table (``PBT_COLUMNS``) of a PBT sweep directory, from its members' metrics."""

    out = Path(out)
    frames = []
    for name in _member_names(out):
        path = out / "runs" / name
        m = load_metrics(path) if (path / "metrics.jsonl").exists() else pd.DataFrame()
        if m.empty or "agent_steps" not in m:
            continue

        def col(key: str, default: Any = math.nan, m=m) -> pd.Series:
            return m[key] if key in m else pd.Series(default, index=m.index)

        measured = col("gns/total/g2").notna()
        donor = col("pbt/donor", name).fillna(name).astype(str)
        donor_it = pd.to_numeric(col("pbt/donor_iteration", 0), errors="coerce").fillna(0)
        frames.append(pd.DataFrame({
            "member": name,
            "iteration": m["iteration"].astype("int64"),
            "agent_steps": m["agent_steps"].astype("int64"),
            "lr": col("learning_rate").astype(float),
            "lr_pbt": col("pbt/learning_rate").astype(float),
            "ent_coef": col("ent_coef").astype(float),
            "clip_coef": col("clip_coef").astype(float),
            "return": col("return_recent").astype(float),
            **{f"b_simple_{t}": pd.to_numeric(col(f"gns/{t}/b_simple_ema"), errors="coerce")
               .where(measured).astype(float) for t in ("policy", "value", "total")},
            "gns_measured": measured.astype(bool),
            "donor": donor,
            "donor_iteration": donor_it.astype("int64"),
            "exploit": ((donor != name) & (m["iteration"] == donor_it + 1)).astype(bool),
        }))
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in PBT_COLUMNS})
    return pd.concat(frames, ignore_index=True)[PBT_COLUMNS]


def write_pbt_outputs(out: str | os.PathLike[str], *, plot: bool = True) -> pd.DataFrame:
    """Write pbt.csv and pbt.parquet (atomically) and pbt.png; returns the table."""

    out = Path(out)
    table = pbt_table(out)
    atomic_write_text(out / "pbt.csv", table.to_csv(index=False))
    buf = io.BytesIO()
    table.to_parquet(buf, index=False)
    atomic_write_bytes(out / "pbt.parquet", buf.getvalue())
    if plot and len(table):
        plot_pbt(table, out / "pbt.png")
    return table


def plot_pbt(table: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Each member's lr, ent_coef, clip_coef, return and policy B_simple against agent
    steps (one colour per member, a dot where an exploit started a new stretch); written
    atomically as png."""
    from matplotlib import colormaps  # lazy: slow import, figures only
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: slow import, figures only
    from matplotlib.figure import Figure  # lazy: slow import, figures only

    panels = [("lr", "learning rate in force", True), ("ent_coef", "ent_coef", False),
              ("clip_coef", "clip_coef", False), ("return", "return_recent (smoothed)", False),
              ("b_simple_policy", "B_simple, policy loss (agent steps)", True)]
    fig = Figure(figsize=(9, 12), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, sharex=True)
    members = list(dict.fromkeys(table["member"]))
    cmap = colormaps["tab10"] if len(members) <= 10 else colormaps["viridis"]
    for i, member in enumerate(members):
        rows = table[table["member"] == member].sort_values("iteration")
        colour = cmap(i if len(members) <= 10 else i / max(1, len(members) - 1))
        for ax, (key, _, log) in zip(axes, panels, strict=True):
            d = rows[rows[key].notna() & ((rows[key] > 0) if log else True)]
            if d.empty:
                continue
            measured = key.startswith("b_simple")  # points; the others hold between rows
            ax.plot(d["agent_steps"], d[key], color=colour, lw=1.0,
                    marker="." if measured else None, ms=3,
                    drawstyle="default" if measured else "steps-post",
                    label=member if key == "lr" else None)
            hit = d[d["exploit"]]
            ax.plot(hit["agent_steps"], hit[key], "o", color=colour, ms=5, mfc="none")
    for ax, (_, label, log) in zip(axes, panels, strict=True):
        ax.set_ylabel(label, fontsize=8)
        if log:
            ax.set_yscale("log")
    axes[0].legend(fontsize=7, ncol=min(len(members), 8), loc="best")
    axes[-1].set_xlabel("agent steps")
    fig.suptitle("PBT members: hyperparameters in force, return and policy noise scale "
                 "(circles: first iteration after an exploit)", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def member_summary(table: pd.DataFrame, targets: Iterable[float] = ()) -> pd.DataFrame:
    """One row per member: its last row's values, exploits, and (per target) the first
    agent_steps at which its return reached the target (NaN if never)."""
    rows = []
    if table.empty:
        return pd.DataFrame(columns=["member", "iterations", "return"])
    for member, rows_m in table.groupby("member", sort=True):
        rows_m = rows_m.sort_values("iteration")
        last = rows_m.iloc[-1]
        measured = rows_m[rows_m["gns_measured"]]
        row = {"member": member, "iterations": int(last["iteration"]),
               "agent_steps": int(last["agent_steps"]), "return": float(last["return"]),
               "lr": float(last["lr"]), "ent_coef": float(last["ent_coef"]),
               "clip_coef": float(last["clip_coef"]), "exploits": int(rows_m["exploit"].sum()),
               "b_simple_policy": float(measured["b_simple_policy"].iloc[-1])
               if len(measured) else math.nan,
               "b_simple_value": float(measured["b_simple_value"].iloc[-1])
               if len(measured) else math.nan}
        for t in targets:
            hit = rows_m[rows_m["return"] >= t]
            row[f"agent_steps_to_{t:g}"] = float(hit["agent_steps"].iloc[0]) if len(hit) \
                else math.nan
        rows.append(row)
    return pd.DataFrame(rows)

