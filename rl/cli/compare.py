"""``rlscale compare``: noise scale and critical batch size of games, beside supervised learning.

Suites: ``rl.study.settings``; the plan and study directory: ``rl.study.plan``; the results
table: ``rl.study.results``. A second invocation with the same settings reuses every
finished run and only redoes the report.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from rl.cli.output import CLIError, console, err_console, print_table
from rl.study.compare import compare
from rl.study.plan import Overrides, build_plan, describe_plan


def default_out(suite: str | None, preset: str) -> Path:
    return Path("results/compare") / f"{suite or 'custom'}-{preset}"


def plan_from_args(args: argparse.Namespace):
    ov = Overrides(
        sweep_games=args.sweep_games, noise_games=args.noise_games, num_envs=args.num_envs,
        num_steps=args.num_steps, lrs=args.lrs, seeds=args.seeds, targets=args.targets,
        budget=args.budget, sweep_gns_every=args.sweep_gns_every,
        noise_num_envs=args.noise_num_envs, noise_num_steps=args.noise_num_steps,
        noise_budget=args.noise_budget, noise_seeds=args.noise_seeds, gns_every=args.gns_every,
        supervised=not args.no_supervised, supervised_epochs=args.supervised_epochs,
        supervised_seed=args.supervised_seed, parallel=args.parallel, device=args.device,
        n_boot=args.n_boot, retry_failed=args.retry_failed,
        sweep_dirs=args.sweep_dirs, noise_dirs=args.noise_dirs,
        supervised_sweeps=args.supervised_sweeps,
        supervised_sweep_dirs=args.supervised_sweep_dirs,
    )
    out = args.out or default_out(args.suite if not args.games else None, args.preset)
    return build_plan(suite=args.suite, games=args.games or None, preset=args.preset, out=out,
                      overrides=ov)


def run_and_report(plan, *, quiet: bool = False, dry_run: bool = False,
                   report_only: bool = False) -> int:
    """Run (or reuse) the study of ``plan``, print the headline table and where the report is."""

    table = describe_plan(plan)
    if dry_run or not quiet:
        print_table(table, title=f"study {plan.out}: suite {plan.suite}, preset {plan.preset} "
                    "(B and budgets in agent steps)")
    if dry_run:
        console.print("dry run: nothing started")
        return 0
    t0 = time.perf_counter()
    outcome = compare(plan, quiet=quiet, console=err_console, train=not report_only)
    print_table(outcome.headline.drop(columns=["reference"]),
                title="headline: B_simple and B_crit (RL: agent steps; supervised: training "
                "examples; cited rows: McCandlish et al. 2018, Table 1)")
    console.print(f"results table: {outcome.results_csv}")
    console.print(f"report: {outcome.report_html.resolve()} (and {outcome.report_md.name})")
    console.print(f"study wall time: {time.perf_counter() - t0:,.0f} s")
    return 0


def cmd_compare(args) -> int:
    return run_and_report(plan_from_args(args), quiet=args.quiet, dry_run=args.dry_run,
                          report_only=args.report_only)


def cmd_demo(args) -> int:
    """The study on its built-in default: ``rlscale compare`` of the demo suite (cpu-quick:
    a CartPole critical-batch sweep, MinAtar noise-scale runs, the supervised reference and a
    digits-mlp critical-batch sweep), or
    of the atari-paper suite with ``--preset gpu``. A rerun reuses finished runs."""

    if args.preset == "gpu":

        if not torch.cuda.is_available():
            raise CLIError("--preset gpu runs the Atari study (days of CPU time) and needs a "
                           "CUDA device; force it with `rlscale compare --suite atari-paper "
                           "--preset gpu --device cpu`")
    suite = "demo" if args.preset == "cpu-quick" else "atari-paper"
    out = args.out or ("results/demo" if args.preset == "cpu-quick" else "results/demo-gpu")
    plan = build_plan(suite=suite, preset=args.preset, out=out)
    return run_and_report(plan, quiet=args.quiet)
