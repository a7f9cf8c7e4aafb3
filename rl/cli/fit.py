"""``rlscale fit``: the critical batch size of a sweep (``rl.analysis.sweep_fits``).

Definitions and the interval: docs/critical-batch.md.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from rl.analysis.fit import few_seeds_caveat
from rl.analysis.sweep_fits import (
    fit_sweep,
    plot_b_simple,
    plot_fits,
    remove_stale_fit_plots,
    seed_table,
    units,
)
from rl.cli.output import console, print_table
from rl.cli.sweep import print_pbt
from rl.runs.files import atomic_write_texts
from rl.sweeps.pbt import is_pbt_sweep, member_summary, write_pbt_outputs
from rl.sweeps.results import read_results, sweep_table
from rl.sweeps.spec import stored_spec
from rl.sweeps.state import read_untrained_floors


def refreshed_results(sweep_dir: Path) -> pd.DataFrame:
    """The sweep's results table (``sweep_table``: rebuilt from the run directories, or the
    stored table of a sweep whose runs were not kept); the stored table of a directory with
    no sweep.json. Errors (a damaged metrics file, a spec that no longer reads) propagate:
    fitting an older stored table instead would hide them."""
    spec = stored_spec(sweep_dir)
    return read_results(sweep_dir) if spec is None else sweep_table(spec)


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


def _interval(lo: Any, hi: Any) -> str:
    return "-" if pd.isna(lo) or pd.isna(hi) else f"[{_fmt(lo)}, {_fmt(hi)}]"


def _b_crit_cell(row: Any) -> str:
    if bool(row["ok"]):
        return _fmt(row["b_crit"])
    if str(row["bound"]) and math.isfinite(float(row["b_crit_bound"])):
        return f"{row['bound']} {_fmt(row['b_crit_bound'])}"
    return "-"


def fit_summary_table(fits: pd.DataFrame) -> pd.DataFrame:
    """The table `rlscale fit` prints: one row per (env, target)."""
    def lof(f: Any, p: Any) -> str:
        return "-" if pd.isna(f) else f"{float(f):.3g} (p {float(p):.2g})"

    return pd.DataFrame({
        "env": fits["env"],
        "target": fits["target"].astype(float),
        "fit": ["ok" if ok else ("bound" if b else "FAILED")
                for ok, b in zip(fits["ok"], fits["bound"].fillna(""), strict=True)],
        "B_crit": [_b_crit_cell(r) for _, r in fits.iterrows()],
        "interval": [_interval(r["b_crit_lo"], r["b_crit_hi"]) for _, r in fits.iterrows()],
        "seed-only": [_interval(r["b_crit_seed_lo"], r["b_crit_seed_hi"])
                      for _, r in fits.iterrows()],
        "lack of fit F": [lof(f, p) for f, p in zip(fits["lof_f"], fits["lof_p"], strict=True)],
        "leave one out": [_interval(lo, hi) for lo, hi in
                          zip(fits["b_crit_loo_min"], fits["b_crit_loo_max"], strict=True)],
        "S_min": fits["s_min"].astype(float),
        "E_min": fits["e_min"].astype(float),
        "B_simple policy": fits["b_simple_policy"].astype(float),
        "B_simple value": fits["b_simple_value"].astype(float),
        "B_simple total": fits["b_simple_total"].astype(float),
        "batch sizes": [f"{int(n)}/{int(t)}" for n, t in
                        zip(fits["n_batch_sizes"], fits["n_batch_sizes_tried"], strict=True)],
    })


LACK_OF_FIT_P = 0.05
"""Below this p of the lack-of-fit test, `rlscale fit` says the batch sizes scatter around the
curve more than their seeds explain."""


def fit_notes(fits: pd.DataFrame) -> list[str]:
    """What a reader of the fit must know: refused fits and why, lack of fit, fragile
    leave-one-out values, an untuned or too small lr grid, too few seeds."""
    notes = []
    for _, row in fits.iterrows():
        where = f"{row['env']}, target {float(row['target']):g}"
        if not bool(row["ok"]):
            label = "bound" if str(row["bound"]) else "fit failed"
            notes.append(f"[red]{label}[/] for {where}: {row['reason']}")
        if pd.notna(row["lof_p"]) and float(row["lof_p"]) < LACK_OF_FIT_P:
            notes.append(
                f"[yellow]lack of fit[/] at {where}: the batch sizes scatter around the curve "
                f"more than their seeds explain (F {float(row['lof_f']):.3g} on "
                f"{int(row['lof_df_batch'])}, {int(row['lof_df_seeds'])}; p "
                f"{float(row['lof_p']):.2g}; batch sd {float(row['batch_sd_log']):.2g} against "
                f"seed sd {float(row['seed_sd_log']):.2g} in log S): the seed-only interval is "
                "too narrow; the profile interval carries it.")
        if bool(row["ok"]) and pd.notna(row["loo_outside"]) and int(row["loo_outside"]) > 0:
            notes.append(
                f"[yellow]fragile[/] at {where}: leaving one batch size out moves B_crit "
                f"outside its interval ({row['b_crit_leave_one_out']}).")
    for env, rows in fits.groupby("env", sort=True):
        edges = [f"target {float(t):g}: {e}" for t, e in
                 zip(rows["target"], rows["lr_at_edge"].fillna(""), strict=True) if e]
        if rows["lr_untuned"].astype(bool).any():
            notes.append(f"[yellow]note:[/] {env}: one learning rate per batch size: S is not "
                         "at each batch size's best lr (the definition of B_crit), which biases "
                         "it low; give lrs a grid (docs/sweeps.md).")
        elif edges:
            notes.append(f"[yellow]note:[/] {env}: the best lr sits at the edge of its grid "
                         f"(batch sizes, and which edge) at {'; '.join(edges)}: extend the grid "
                         "there.")
        seeds = rows.loc[rows["ok"].astype(bool), "min_seeds"]
        if len(seeds) and (caveat := few_seeds_caveat(seeds.min())):
            notes.append(f"[yellow]note:[/] {env}: seed-only interval: {caveat}.")
    return notes


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
        print_pbt(member_summary(table), sweep_dir)
        return 0
    df = refreshed_results(sweep_dir)
    floors = {env: f.floor for env, f in read_untrained_floors(sweep_dir).items()}
    fits, per_batch = fit_sweep(df, n_boot=args.n_boot, seed=args.seed, ci=args.ci,
                                range_factor=args.range_factor, floors=floors)
    if fits.empty:
        console.print(f"no finished runs in {sweep_dir}: nothing to fit")
        return 1
    atomic_write_texts({sweep_dir / "fit.csv": fits.to_csv(index=False),
                        sweep_dir / "fit_per_batch.csv": per_batch.to_csv(index=False)})

    level = f"{args.ci:.0%}"
    print_table(fit_summary_table(fits), title=f"critical batch size, {sweep_dir}")
    u = units(str(fits["env"].iloc[0]))
    console.print(
        f"Units: B_crit, E_min and B_simple in {u['batch']}; S_min in {u['steps']}. B_crit: "
        "a number only where at least 2 batch sizes lie at or above it and 2 below, else a "
        f"bound ('>='/'<='). Interval: {level} profile interval from the fit's residuals "
        "(seed scatter and lack of fit alike; inf = unbounded above); seed-only: resampling "
        "seeds, which misses lack of fit. Lack of fit: F = scatter of the batch sizes around "
        "the curve over their seeds' scatter (about 1 when seeds explain it), with p. "
        "Leave one out: the range of B_crit refitted without each batch size. B_simple: mean "
        "over the runs at each batch size's best lr of each run's run-averaged B_simple; "
        "'-' = not measured. 'batch sizes' = reached the target / tried."
    )
    for note in fit_notes(fits):
        console.print(note, highlight=False)
    if not floors:
        console.print(f"[yellow]note:[/] no untrained-play floor measured for {sweep_dir}: "
                      f"targets were not checked against it (`rlscale sweep --out {sweep_dir} "
                      "--floor-only` measures it; docs/sweeps.md).", highlight=False)
    unsettled = int(fits["runs_unsettled"].max()) if len(fits) else 0
    if unsettled:
        console.print(f"[yellow]note:[/] {unsettled} run(s) are not finished (pending, "
                      "running or interrupted) and were left out; continue the sweep first.")
    written = [sweep_dir / "fit.csv", sweep_dir / "fit_per_batch.csv"]
    if not args.no_plots:
        written += plot_fits(sweep_dir, fits, per_batch, seed_table(df))
        remove_stale_fit_plots(sweep_dir, fits)
        b_plots = plot_b_simple(sweep_dir, df)
        if not b_plots:
            console.print("no noise-scale columns (gns/*) in the runs' metrics: no B_simple "
                          "plot (set [train] gns_every > 0 in the spec)")
        written += b_plots
    console.print("wrote " + ", ".join(str(p) for p in written))
    measured_or_bound = fits["ok"].astype(bool) | (fits["bound"].fillna("") != "")
    return 0 if measured_or_bound.all() else 1
