"""The ``[pbt]`` table of a sweep spec: its settings, their checks, the --pbt-param flag.

``parse_pbt_table`` and ``check_pbt_spec`` name every problem (like ``rl.sweeps.spec``);
the hyperparameters PBT perturbs and how. See docs/sweeps.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from agents import PPOConfig
from rl.sweeps.settings import batch_shapes, did_you_mean, env_settings, is_finite_number, is_int
from rl.train.config import TrainConfig

__all__ = [
    "HYPERPARAMS",
    "KINDS",
    "MEMBER_FILE",
    "METRICS",
    "PERTURBATION_FACTORS",
    "PBTConfig",
    "check_pbt_spec",
    "default_hyperparams",
    "member_name",
    "parse_param_flag",
    "parse_pbt_table",
    "round6",
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
    synchronous: bool = False
    """PBT: every member waits at each perturbation point until all live members reach it,
    then the bottom fraction copies the top (Tune's synch mode: a decision at every
    interval, independent of timing; members idle while the slowest catches up). False:
    asynchronous, each member decides alone against the others' latest scores, as in
    Jaderberg et al. 2017."""
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
        "learning_rate": {"log": [round6(preset_lr / 10), round6(preset_lr * 10)]},
        "ent_coef": {"values": [0.0, 0.001, 0.003, 0.01, 0.03]},
        "clip_coef": {"uniform": [0.1, 0.3]},
    }


def round6(x: float) -> float:
    """``x`` to 6 significant digits, as hyperparameter values are written."""
    return float(f"{x:.6g}")


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
    synchronous = value.get("synchronous", defaults.synchronous)
    if not isinstance(synchronous, bool):
        add(f"pbt.synchronous must be true or false (flag --synchronous / --no-synchronous), "
            f"got {synchronous!r}")
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
               metric=metric, synchronous=synchronous, hyperparams=hyperparams)
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
