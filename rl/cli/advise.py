"""``rlscale advise``: batch-size advice from one short probe run (``rl.advise``).

What it predicts and how well: docs/advise.md.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
from rich.markup import escape

from rl.advise import Advice, AdviseConfig, NoProbeData, advise, advise_run
from rl.cli.args import dataclass_from_args
from rl.cli.output import CLIError, console, err_console, print_table
from rl.runs.record import metrics_file


def _n(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if math.isinf(v):
        return "inf"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _band(v: float, lo: float, hi: float) -> str:
    return f"{_n(v)} [{_n(lo)}, {_n(hi)}]"


def advice_table(advice: Advice) -> pd.DataFrame:
    """The printed table: one row per candidate rollout."""
    return pd.DataFrame({
        "rollout": [f"{r.num_envs} x {r.num_steps}" for r in advice.rows],
        "batch (agent steps)": [r.rollout_batch_size for r in advice.rows],
        "s / iteration": [f"{r.seconds_per_iteration:.3g}" for r in advice.rows],
        "PPO iterations S / S_min": [_band(r.iterations, r.iterations_lo, r.iterations_hi)
                                     for r in advice.rows],
        "agent steps E / E_min": [_band(r.samples, r.samples_lo, r.samples_hi)
                                  for r in advice.rows],
        "wall-clock / fastest": [_band(r.wall_clock, r.wall_clock_lo, r.wall_clock_hi)
                                 for r in advice.rows],
    })


def print_advice(advice: Advice) -> None:
    n, c, b = advice.noise, advice.calibration, advice.b_crit
    console.print(
        f"B_simple ({n.term} loss) {_band(n.b_simple, n.lo, n.hi)} agent steps (95%, block "
        f"bootstrap) over {n.measurements} measurements past the warm-up"
        + (f" (PPO iterations {n.first_iteration}-{n.last_iteration})" if n.last_iteration
           else "") + " at a batch of "
        f"{n.rollout_batch_size:,} agent steps (smoothed return {n.return_first:.3g} -> "
        f"{n.return_last:.3g}); source: {escape(n.source)}")
    console.print(
        f"B_crit = r x B_simple = {_band(b.b_crit, b.lo, b.hi)} agent steps ({b.band_sd:g}-sd "
        f"band: the ratio's spread x{math.exp(c.spread):.2g} and B_simple's interval); r = "
        f"{c.ratio:.3g} ({c.ci:.0%} prediction interval for a new task [{c.lo:.3g}, "
        f"{c.hi:.3g}]) from {escape(c.source)}")
    print_table(advice_table(advice), title="Predicted cost to a fixed target, per candidate "
                "rollout (brackets: over the B_crit band)")
    for r in (advice.fastest, advice.sample_efficient):
        console.print(
            f"[bold]{r.rule}:[/] {r.num_envs} x {r.num_steps} = {r.rollout_batch_size:,} agent "
            f"steps (over the band: {r.lo:,}-{r.hi:,}); predicted speedup over the probe's "
            f"{advice.reference_batch_size:,}: x{_band(r.speedup, r.speedup_lo, r.speedup_hi)}"
            " in wall-clock")
    for note in advice.notes:
        console.print(escape(note))


def cmd_advise(args) -> int:
    cfg = dataclass_from_args(args, AdviseConfig)
    if args.budget is not None:
        cfg.budget_s = args.budget
    if args.run_dir_in is not None and args.run_dir is not None:
        raise CLIError("RUN_DIR and --run-dir exclude each other: advice from an existing run "
                       "trains nothing (the probe's --run-dir is for a new run)")
    if args.run_dir_in is not None and args.env is None and \
            (Path(args.run_dir_in) / "progress.csv").is_file() and \
            not metrics_file(args.run_dir_in).is_file():
        raise CLIError(f"{args.run_dir_in} has no config.json naming its environment (a "
                       "stable-baselines3 run?): pass --env NAME for the throughput probe")
    done = [0]

    def tick() -> None:  # one line per timed configuration: the probe's own bar follows
        done[0] += 1
        if not args.quiet:
            err_console.print(f"throughput probe: {done[0]} timing(s) done (env-only and "
                              "end-to-end per candidate)", highlight=False)

    try:
        if args.run_dir_in is not None:
            result = advise_run(args.run_dir_in, cfg, progress=tick)
        else:
            result = advise(cfg, quiet=args.quiet or args.json, progress=tick)
    except NoProbeData as err:
        raise CLIError(str(err)) from None
    except FileExistsError as err:
        raise CLIError(str(err)) from None
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print_advice(result)
    return 0
