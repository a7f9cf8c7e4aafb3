"""``rlscale sweep`` (run or continue a sweep) and ``rlscale fit`` (critical batch size).

Spec format, sweep directory layout and result columns: ``rl.sweeps``. Executors and
restart rules: ``rl.sweeps.executors``. Population based training (``--scheduler pbt``):
``rl.sweeps.pbt``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import pandas as pd

from rl.analysis.fit import B_CRIT_CI, few_seeds_caveat
from rl.analysis.sweep_fits import (
    fit_sweep,
    plot_b_simple,
    plot_fits,
    remove_stale_fit_plots,
)
from rl.cli.args import add_dataclass_args, explicit_fields
from rl.cli.output import console, err_console, print_table
from rl.runs.files import atomic_write_text
from rl.sweeps.executors import run_sweep
from rl.sweeps.pbt import (
    PBTConfig,
    is_pbt_sweep,
    member_statuses,
    member_summary,
    parse_param_flag,
    plan_members,
    write_pbt_outputs,
)
from rl.sweeps.results import read_results, results_table
from rl.sweeps.settings import SweepSpecError
from rl.sweeps.spec import load_spec, parse_spec, plan_runs, stored_spec, tomllib

# Flags that carry a list: comma-separated values.
_LIST_FLAGS = ("env", "num_envs", "num_steps", "lrs", "targets")


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
                "address", "cpus_per_trial", "scheduler"):
        value = getattr(args, key)
        if value is not None:
            raw[key] = value
    if args.base_lr is not None:
        raw["base_lr"] = args.base_lr
    if args.budget is not None:
        raw["budget"] = _literal(args.budget)
    if args.retry_failed:
        raw["retry_failed"] = True
    for table in ("ppo", "train"):
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


def cmd_sweep(args) -> int:
    spec = spec_from_args(args)
    if spec.scheduler == "pbt":
        return _cmd_pbt(spec, args)
    if args.dry_run:
        plans = plan_runs(spec)
        console.print(f"{len(plans)} runs into {Path(spec.out).resolve()} (dry run: nothing "
                      "started); B in agent steps")

        print_table(pd.DataFrame([dict(run=p.name, env=p.env, B=p.rollout_batch_size,
                                       num_envs=p.num_envs, num_steps=p.num_steps, lr=p.lr,
                                       seed=p.seed) for p in plans]), title="planned runs")
        return 0

    def log(msg: str) -> None:
        if not args.quiet:
            err_console.print(msg, highlight=False)

    table = run_sweep(spec, log=log)
    prefix = "iterations_to_target_"
    shown = table[["run", "status", "iterations", "final_return_recent",
                   *[c for c in table.columns if c.startswith(prefix)],
                   "b_simple_policy", "b_simple_value"]]
    shown = shown.rename(columns={
        "final_return_recent": "return", "b_simple_policy": "B_simple pol",
        "b_simple_value": "B_simple val",
        **{c: f"iters to {c[len(prefix):]}" for c in shown.columns if c.startswith(prefix)},
    })
    print_table(shown, title=f"sweep {spec.out} (iters = PPO iterations; B_simple in agent "
                "steps, run-averaged)")
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
    _print_pbt(member_summary(table, sorted(spec.targets)[-1:]), spec.out)
    statuses = member_statuses(plan_members(spec))
    unfinished = sorted(name for name, state in statuses.items() if state != "finished")
    if unfinished:
        err_console.print(f"[red]{len(unfinished)} member(s) did not finish[/] "
                          f"({', '.join(unfinished)}): see {Path(spec.out) / 'events.jsonl'} and "
                          "their runs/<member>/status.json")
        return 1
    return 0


def _print_pbt(summary, out) -> None:
    if summary.empty:
        console.print(f"no member of {out} has metrics yet")
        return
    print_table(summary, title=f"PBT population {out}: each member's last iteration (return = "
                "smoothed episodic return; B_simple: last smoothed value, agent steps)")
    console.print(f"PBT table: {Path(out) / 'pbt.csv'} (and .parquet), plot {Path(out) / 'pbt.png'}"
                  "; one row per member per PPO iteration")


def _refreshed_results(sweep_dir: Path):
    """The results table rebuilt from the run directories (it may be newer than
    results.parquet if a sweep was killed), else the stored table."""

    try:
        spec = stored_spec(sweep_dir)
        if spec is not None:
            return results_table(plan_runs(spec), spec.targets)
    except (SweepSpecError, TypeError, KeyError, ValueError):
        pass
    return read_results(sweep_dir)


def _fmt(v: Any) -> str:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(v):
        return "-"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def check_fit_options(n_boot: int, ci: float, range_factor: float, seed: int = 0) -> None:
    """ValueError naming the bad ``rlscale fit`` option and its valid range."""
    if seed < 0:
        raise ValueError(f"--seed seeds the bootstrap and must be an integer >= 0 (e.g. 0), "
                         f"got {seed}")
    if n_boot < 1:
        raise ValueError(f"--n-boot must be a positive number of bootstrap replicates "
                         f"(e.g. 1000), got {n_boot}")
    if not (math.isfinite(ci) and 0 < ci < 1):
        raise ValueError(f"--ci is the interval level, between 0 and 1 (e.g. 0.95 for 95%), "
                         f"got {ci}")
    if not (math.isfinite(range_factor) and range_factor >= 1):
        raise ValueError(f"--range-factor must be a finite number >= 1 (e.g. 2), got "
                         f"{range_factor}")


def cmd_fit(args) -> int:
    check_fit_options(args.n_boot, args.ci, args.range_factor, args.seed)
    sweep_dir = Path(args.sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir} is not a directory (give a sweep's out dir)")

    if is_pbt_sweep(sweep_dir):
        # One batch size: no critical batch size to fit. Rebuild the PBT table and plot.
        table = write_pbt_outputs(sweep_dir, plot=not args.no_plots)
        if table.empty:
            console.print(f"no member metrics in {sweep_dir}: nothing to tabulate")
            return 1
        console.print(f"{sweep_dir} is a PBT sweep (one batch size): there is no critical batch "
                      "size to fit; the PBT table and plot were rebuilt from the members' runs")
        _print_pbt(member_summary(table), sweep_dir)
        return 0
    df = _refreshed_results(sweep_dir)
    fits, per_batch = fit_sweep(df, n_boot=args.n_boot, seed=args.seed, ci=args.ci,
                                range_factor=args.range_factor)
    if fits.empty:
        console.print(f"no finished runs in {sweep_dir}: nothing to fit")
        return 1
    atomic_write_text(sweep_dir / "fit.csv", fits.to_csv(index=False))
    atomic_write_text(sweep_dir / "fit_per_batch.csv", per_batch.to_csv(index=False))

    level = f"{args.ci:.0%}"
    shown = pd.DataFrame({
        "env": fits["env"],
        "target": fits["target"].astype(float),
        "fit": ["ok" if ok else "FAILED" for ok in fits["ok"]],
        "B_crit": [_fmt(v) for v in fits["b_crit"]],
        f"B_crit {level} interval": [
            "-" if not ok else f"[{_fmt(lo)}, {_fmt(hi)}]"
            for ok, lo, hi in zip(fits["ok"], fits["b_crit_lo"], fits["b_crit_hi"], strict=True)
        ],
        "S_min": fits["s_min"].astype(float),
        "E_min": fits["e_min"].astype(float),
        "B_simple policy": fits["b_simple_policy"].astype(float),
        "B_simple value": fits["b_simple_value"].astype(float),
        "B_simple total": fits["b_simple_total"].astype(float),
        "batch sizes": [f"{int(n)}/{int(t)}" for n, t in
                        zip(fits["n_batch_sizes"], fits["n_batch_sizes_tried"], strict=True)],
    })
    print_table(shown, title=f"critical batch size, {sweep_dir}")
    console.print(
        "Units: B_crit, E_min and B_simple in agent steps; S_min in PPO iterations. B_crit "
        f"interval: {level} seed bootstrap (inf = unbounded above). B_simple: mean over the "
        "runs at each batch size's best lr (all seeds, batch sizes that reached the target) "
        "of each run's run-averaged B_simple = mean(trace_sigma) / mean(g2) over its "
        "measured iterations; '-' = not measured. 'batch sizes' = reached the target / tried."
    )
    for _, row in fits[~fits["ok"].astype(bool)].iterrows():
        console.print(f"[red]fit failed[/] for {row['env']}, target {row['target']:g}: "
                      f"{row['reason']}", highlight=False)
    for env, seeds in fits[fits["ok"].astype(bool)].groupby("env")["min_seeds"].min().items():
        if caveat := few_seeds_caveat(seeds):
            console.print(f"[yellow]note:[/] {env}: {caveat}.", highlight=False)
    unsettled = int(fits["runs_unsettled"].max()) if len(fits) else 0
    if unsettled:
        console.print(f"[yellow]note:[/] {unsettled} run(s) are not finished (pending, "
                      "running or interrupted) and were left out; continue the sweep first.")
    written = [sweep_dir / "fit.csv", sweep_dir / "fit_per_batch.csv"]
    if not args.no_plots:
        written += plot_fits(sweep_dir, fits, per_batch)
        remove_stale_fit_plots(sweep_dir, fits)
        b_plots = plot_b_simple(sweep_dir, df)
        if not b_plots:
            console.print("no noise-scale columns (gns/*) in the runs' metrics: no B_simple "
                          "plot (set [train] gns_every > 0 in the spec)")
        written += b_plots
    console.print("wrote " + ", ".join(str(p) for p in written))
    return 0 if fits["ok"].astype(bool).all() else 1


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="run (or continue) a sweep over batch sizes, learning rates, seeds, envs",
        description="Run a sweep from a TOML spec and/or flags (flags override the file). "
        "Started again, it skips finished runs, resumes interrupted ones from their "
        "checkpoints and starts missing ones. `rlscale sweep --out DIR` alone continues the "
        "sweep stored in DIR. Lists are comma-separated: --num-envs 1,2,4,8. Spec keys: "
        "see rl/sweeps/ and examples/sweeps/cartpole.toml. --scheduler pbt --backend ray "
        "trains a population at one batch size with population based training instead "
        "(rl/sweeps/pbt/, docs/scale-out.md section 4).",
    )
    p.add_argument("spec", nargs="?", help="TOML spec file (optional if flags say it all)")
    g = p.add_argument_group("grid")
    g.add_argument("--env", help="environment(s), comma-separated")
    g.add_argument("--vary", choices=["num_envs", "num_steps"],
                   help="which factor of B = num_envs x num_steps varies (default num_envs)")
    g.add_argument("--num-envs", dest="num_envs", help="list (varied) or one value (fixed)")
    g.add_argument("--num-steps", dest="num_steps", help="list (varied) or one value (fixed)")
    g.add_argument("--lrs", help="learning-rate grid, comma-separated")
    g.add_argument("--base-lr", dest="base_lr", type=float, help="one lr (same as --lrs X)")
    g.add_argument("--lr-rule", dest="lr_rule", choices=["constant", "sqrt", "linear"],
                   help="lr(B) = lr * (B / base_batch_size) ** p, p = 0, 1/2, 1")
    g.add_argument("--base-batch-size", dest="base_batch_size", type=int,
                   help="batch size (agent steps) at which --lrs are given, with a rule")
    g.add_argument("--seeds", help="comma-separated seeds, or a count N (seeds 0..N-1)")
    g.add_argument("--targets", help="target returns, comma-separated")
    g.add_argument("--budget", help="agent steps per run at most (e.g. 40k, 10M)")
    g.add_argument("--preset", help="settings family: classic or atari (default by env)")
    g.add_argument("--ppo", action="append", metavar="KEY=VALUE",
                   help="a PPOConfig override (repeatable), e.g. --ppo num_epochs=10")
    g.add_argument("--train", action="append", metavar="KEY=VALUE",
                   help="a TrainConfig override (repeatable), e.g. --train gns_every=5")
    e = p.add_argument_group("execution")
    e.add_argument("--out", help="sweep directory (default results/sweeps/<spec name>)")
    e.add_argument("--parallel", type=int, help="runs at once (default 1)")
    e.add_argument("--backend", choices=["local", "ray"], help="local processes or Ray Tune")
    e.add_argument("--address", help="ray: address of an existing cluster (default: local)")
    e.add_argument("--cpus-per-trial", dest="cpus_per_trial", type=int,
                   help="ray: CPUs per run (default 1)")
    e.add_argument("--scheduler", choices=["grid", "pbt"],
                   help="grid: every run of the grid (default); pbt: population based training "
                   "of one batch size on Ray Tune (needs --backend ray; settings below)")
    e.add_argument("--retry-failed", dest="retry_failed", action="store_true",
                   help="also rerun runs that failed (interrupted runs are always resumed)")
    e.add_argument("--dry-run", dest="dry_run", action="store_true",
                   help="validate and list the planned runs; start nothing")
    e.add_argument("--quiet", action="store_true", help="no per-run progress lines")

    add_dataclass_args(p, PBTConfig, title="population based training (--scheduler pbt; "
                       "the [pbt] table of a spec)", exclude=("hyperparams",))
    p.add_argument_group("population based training, hyperparameters").add_argument(
        "--pbt-param", dest="pbt_param", action="append", metavar="NAME=KIND:NUMBERS",
        help="a perturbed hyperparameter and its range (repeatable): NAME one of "
        "learning_rate, ent_coef, clip_coef; KIND log (log-uniform range LOW,HIGH), uniform "
        "(range LOW,HIGH) or values (a list V1,V2,...). E.g. --pbt-param "
        "learning_rate=log:1e-4,1e-2 --pbt-param ent_coef=values:0,0.001,0.01. Default: all "
        "three, learning_rate log-uniform over [preset lr / 10, x 10], ent_coef values "
        "0,0.001,0.003,0.01,0.03, clip_coef uniform 0.1,0.3. Initial values are drawn from "
        "them; explore multiplies a range value by 0.8 or 1.2 (clipped to the range) or "
        "moves a list value to a neighbour, or with --resample-probability draws afresh")
    p.set_defaults(func=cmd_sweep)

    f = sub.add_parser(
        "fit",
        help="critical batch size of a sweep: best lr per batch size, S(B), E(B), fit, plots",
        description="Fit S(B) = S_min (1 + B_crit / B) per env and target from a sweep's "
        "results (best lr per batch size, median over seeds), with a seed-bootstrap "
        "interval, beside the run-averaged B_simple. Writes fit.csv, fit_per_batch.csv and "
        "png plots into the sweep directory. Exit status 1 if any fit failed.",
    )
    f.add_argument("sweep_dir", metavar="SWEEP_DIR")
    f.add_argument("--n-boot", dest="n_boot", type=int, default=1000,
                   help="bootstrap replicates (default 1000)")
    f.add_argument("--ci", type=float, default=B_CRIT_CI,
                   help=f"interval level (default {B_CRIT_CI:g})")
    f.add_argument("--seed", type=int, default=0, help="bootstrap RNG seed (default 0)")
    f.add_argument("--range-factor", dest="range_factor", type=float, default=2.0,
                   help="B_crit beyond [min B / f, max B * f] counts as a failed fit (default 2)")
    f.add_argument("--no-plots", dest="no_plots", action="store_true", help="no png files")
    f.set_defaults(func=cmd_fit)
