"""``rlscale sweep``: run or continue a sweep (``rlscale fit`` is ``rl.cli.fit``).

Spec format, sweep directory layout and result columns: ``rl.sweeps``. Executors and
restart rules: ``rl.sweeps.executors``. Population based training (``--scheduler pbt``):
``rl.sweeps.pbt``. The untrained-play floor and stage 2 (``best_lr_seeds``, its lr chosen
here with the fit's rule): ``rl.sweeps.protocol``, docs/sweeps.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd

from rl.analysis.fit import best_per_batch
from rl.cli.args import explicit_fields
from rl.cli.output import console, err_console, print_table
from rl.sweeps.executors import run_sweep
from rl.sweeps.pbt import (
    PBTConfig,
    member_statuses,
    member_summary,
    parse_param_flag,
    plan_members,
)
from rl.sweeps.protocol import (
    check_untrained_floor,
    describe_floor,
    floor_problem,
    stage_two_summary,
    targets_below_floor,
    untrained_floors,
)
from rl.sweeps.spec import load_spec, parse_spec, plan_runs, stored_spec, tomllib
from rl.sweeps.state import UNTRAINED_FLOOR_FILE

# Flags that carry a list: comma-separated values.
_LIST_FLAGS = ("env", "num_envs", "num_steps", "lrs", "targets", "batch_sizes")


def _literal(text: str) -> Any:
    """'4' -> 4, '2.5e-4' -> 0.00025, 'true' -> True, anything else stays a string."""

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _list(text: str) -> list[Any]:
    return [_literal(p.strip()) for p in text.split(",") if p.strip()]


def _key_values(items: list[str] | None, flag: str) -> dict[str, Any]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{flag} takes KEY=VALUE (e.g. {flag} num_epochs=10), got {item!r}")
        out[key.strip()] = _literal(value.strip())
    return out


def spec_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The spec keys set by flags."""
    raw: dict[str, Any] = {}
    for key in _LIST_FLAGS:
        value = getattr(args, key)
        if value is not None:
            raw[key] = _list(value)
    if args.seeds is not None:
        raw["seeds"] = _list(args.seeds) if "," in args.seeds else _literal(args.seeds)
    for key in ("vary", "lr_rule", "base_batch_size", "preset", "parallel", "out", "backend",
                "address", "cpus_per_trial", "scheduler", "best_lr_seeds"):
        value = getattr(args, key)
        if value is not None:
            raw[key] = value
    if args.base_lr is not None:
        raw["base_lr"] = args.base_lr
    if args.budget is not None:
        raw["budget"] = _literal(args.budget)
    if args.retry_failed:
        raw["retry_failed"] = True
    if args.allow_target_below_floor:
        raw["allow_target_below_floor"] = True
    for table in ("ppo", "train", "supervised"):
        values = _key_values(getattr(args, table), f"--{table}")
        if values:
            raw[table] = values
    pbt = _pbt_overrides(args)
    if pbt:
        raw["pbt"] = pbt
    return raw


def _pbt_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The [pbt] keys set by flags (--population, ..., --pbt-param NAME=KIND:NUMBERS)."""

    pbt = {k: v for k, v in explicit_fields(args, PBTConfig).items() if k != "hyperparams"}
    params = dict(parse_param_flag(text) for text in args.pbt_param or [])
    if params:
        pbt["hyperparams"] = params
    return pbt


def spec_from_args(args: argparse.Namespace):
    """The spec: TOML file (or the stored spec of ``--out``) updated by the flags."""

    over = spec_overrides(args)
    if args.spec:
        path = Path(args.spec)
        if not path.exists():
            raise FileNotFoundError(f"sweep spec {path} does not exist")
        return load_spec(path, over, default_out=str(Path("results/sweeps") / path.stem))
    # `rlscale sweep --out DIR` continues the sweep stored there (flags still apply).
    stored = stored_spec(over["out"], over) if "out" in over else None
    return stored if stored is not None else parse_spec(over, source="sweep flags")


def choose_best_lrs(runs: pd.DataFrame) -> pd.DataFrame:
    """Stage 2's choice of lr per batch size: the fit's (``rl.analysis.fit.best_per_batch``)."""
    per_batch, _ = best_per_batch(runs)
    return per_batch


def _floor_lines(spec, *, measure: bool) -> tuple[list[str], list[str]]:
    """(a line per env on its floor, a problem per env with targets below it)."""
    floors = untrained_floors(spec, measure=measure)
    lines = [describe_floor(env, floors[env]) if env in floors else
             f"untrained-play floor of {env}: not measured yet (`rlscale sweep --out "
             f"{spec.out} --floor-only` measures it; a sweep measures it before its runs)"
             for env in spec.env]
    below = targets_below_floor(spec, floors)
    return lines, [floor_problem(env, ts, floors[env]) for env, ts in below.items()]


def cmd_sweep(args) -> int:
    spec = spec_from_args(args)
    if args.floor_only and spec.scheduler == "pbt":
        raise ValueError("--floor-only checks the targets of a grid sweep; a PBT population "
                         "only reports its targets (drop --floor-only or --scheduler pbt)")
    if spec.scheduler == "pbt":
        return _cmd_pbt(spec, args)
    if args.floor_only:
        return _cmd_floor(spec)
    if args.dry_run:
        plans = plan_runs(spec)
        console.print(f"{len(plans)} runs into {Path(spec.out).resolve()} (dry run: nothing "
                      f"started); B in {'examples' if spec.is_supervised else 'agent steps'}")

        print_table(pd.DataFrame([dict(run=p.name, env=p.env, B=p.rollout_batch_size,
                                       num_envs=p.num_envs, num_steps=p.num_steps, lr=p.lr,
                                       seed=p.seed) for p in plans]), title="planned runs")
        stage_two = stage_two_summary(spec)
        if stage_two:
            console.print(stage_two)
        lines, problems = _floor_lines(spec, measure=False)
        for line in lines:
            console.print(line, highlight=False)
        for line in problems:
            err_console.print(f"[yellow]would be refused:[/] {line}"
                              + (" (allowed by allow_target_below_floor)"
                                 if spec.allow_target_below_floor else ""), highlight=False)
        return 0

    def log(msg: str) -> None:
        if not args.quiet:
            err_console.print(msg, highlight=False)

    table = run_sweep(spec, log=log, choose_lr=choose_best_lrs)
    prefix = "iterations_to_target_"
    terms = ["b_simple_total"] if spec.is_supervised else ["b_simple_policy", "b_simple_value"]
    shown = table[["run", "status", "iterations", "final_return_recent",
                   *[c for c in table.columns if c.startswith(prefix)], *terms]]
    shown = shown.rename(columns={
        "final_return_recent": "score" if spec.is_supervised else "return",
        "b_simple_policy": "B_simple pol", "b_simple_value": "B_simple val",
        "b_simple_total": "B_simple",
        **{c: f"iters to {c[len(prefix):]}" for c in shown.columns if c.startswith(prefix)},
    })
    units = ("iters = optimizer steps; score = the progress score; B_simple in examples"
             if spec.is_supervised else "iters = PPO iterations; B_simple in agent steps")
    print_table(shown, title=f"sweep {spec.out} ({units}, run-averaged)")
    console.print(f"results: {Path(spec.out) / 'results.csv'} (and .parquet, results_long.csv)"
                  f"; fit with `rlscale fit {spec.out}`")
    unsettled = table[~table["status"].isin(["finished", "failed"])]
    failed = table[table["status"] == "failed"]
    if len(failed):
        err_console.print(f"[yellow]{len(failed)} run(s) failed[/] (kept; they count as not "
                          "reaching the target). Rerun them with --retry-failed.")
    if len(unsettled):
        err_console.print(f"[red]{len(unsettled)} run(s) did not finish[/]; run the same "
                          "command again to continue them.")
        return 1
    return 0


def _cmd_floor(spec) -> int:
    """--floor-only: measure the floors the sweep lacks, show them, check the targets."""
    Path(spec.out).mkdir(parents=True, exist_ok=True)
    untrained_floors(spec, log=lambda msg: None)
    lines, problems = _floor_lines(spec, measure=False)
    for line in lines:
        console.print(line, highlight=False)
    console.print(f"stored in {Path(spec.out) / UNTRAINED_FLOOR_FILE}; targets "
                  f"{', '.join(f'{t:g}' for t in spec.targets)}")
    if problems and spec.allow_target_below_floor:
        check_untrained_floor(spec)  # records the targets allowed below the floor
        for line in problems:
            err_console.print(f"[yellow]allowed:[/] {line}", highlight=False)
        return 0
    for line in problems:
        err_console.print(f"[red]refused:[/] {line}", highlight=False)
    return 1 if problems else 0


def _cmd_pbt(spec, args) -> int:
    cfg = PBTConfig.from_dict(spec.pbt)
    if args.dry_run:
        members = plan_members(spec)
        console.print(f"PBT population of {len(members)} members into "
                      f"{Path(spec.out).resolve()} (dry run: nothing started); B in agent steps, "
                      f"perturbation every {cfg.perturbation_interval} PPO iterations")
        print_table(pd.DataFrame([dict(member=m.name, env=m.env, B=m.rollout_batch_size,
                                       seed=m.seed, **{k: m.ppo[k] for k in (
                                           "learning_rate", "ent_coef", "clip_coef")})
                                  for m in members]),
                    title="members (initial hyperparameters; perturbed: "
                    f"{', '.join(cfg.hyperparams)})")
        return 0

    def log(msg: str) -> None:
        if not args.quiet:
            err_console.print(msg, highlight=False)

    table = run_sweep(spec, log=log)
    print_pbt(member_summary(table, sorted(spec.targets)[-1:]), spec.out)
    statuses = member_statuses(plan_members(spec))
    unfinished = sorted(name for name, state in statuses.items() if state != "finished")
    if unfinished:
        err_console.print(f"[red]{len(unfinished)} member(s) did not finish[/] "
                          f"({', '.join(unfinished)}): see {Path(spec.out) / 'events.jsonl'} and "
                          "their runs/<member>/status.json")
        return 1
    return 0


def print_pbt(summary, out) -> None:
    if summary.empty:
        console.print(f"no member of {out} has metrics yet")
        return
    print_table(summary, title=f"PBT population {out}: each member's last iteration (return = "
                "smoothed episodic return; B_simple: last smoothed value, agent steps)")
    console.print(f"PBT table: {Path(out) / 'pbt.csv'} (and .parquet), plot {Path(out) / 'pbt.png'}"
                  "; one row per member per PPO iteration")
