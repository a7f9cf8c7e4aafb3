"""``rlscale sharpness PATH``: sharpness of the PPO loss at the final checkpoint of a run, or
of every finished run of a sweep (with a plot against the rollout batch size).

What is measured and how: ``rl.analysis.sharpness`` and docs/sharpness.md.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rl.analysis.sharpness import (
    SharpnessConfig,
    eps_columns,
    plot_sharpness,
    run_sharpness,
    summarize_repeats,
    sweep_sharpness,
)
from rl.cli.args import dataclass_from_args
from rl.cli.output import CLIError, console, print_table
from rl.runs.files import atomic_write_text
from rl.runs.layout import CONFIG_FILE
from rl.runs.record import has_config
from rl.sweeps.results import (
    SHARPNESS_FILE,
    merge_by_run,
    read_results,
    read_sharpness_rows,
    write_results,
)


def _measure_sweep(path: Path, cfg: SharpnessConfig, args, out: Path
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(this call's rows, every row of ``out``): the sweep's runs asked for, each run's rows
    merged into ``out`` (``merge_by_run``, atomically) as soon as it is measured, so that a
    later call for some runs keeps the other runs' rows and a kill loses only the run in
    progress (a run takes minutes)."""
    merged = read_sharpness_rows(out)  # before measuring: an unreadable file stops here
    own = out == path / SHARPNESS_FILE

    def save(rows: pd.DataFrame) -> None:
        nonlocal merged
        merged = merge_by_run(merged, rows)
        atomic_write_text(out, merged.to_csv(index=False))
        if own:  # the sweep table's sharpness columns follow the file
            write_results(path, read_results(path))

    df = sweep_sharpness(path, cfg, seeds=args.seeds, lr=args.lr, best_lr=args.best_lr,
                         on_run=save)
    return df, merged


def cmd_sharpness(args) -> int:
    cfg = dataclass_from_args(args, SharpnessConfig)
    path = Path(args.path)
    values = ["loss", "top_eigenvalue", "min_eigenvalue", *eps_columns(cfg.eps_values)]
    if has_config(path):
        df = run_sharpness(path, cfg)
        keys = ["term"]
        out = Path(args.out) if args.out else path / "sharpness.csv"
        atomic_write_text(out, df.to_csv(index=False))
    elif (path / "sweep.json").exists() or (path / "results.csv").exists():
        out = Path(args.out) if args.out else path / SHARPNESS_FILE
        df, measured = _measure_sweep(path, cfg, args, out)
        keys = ["term", "rollout_batch_size"]
        png = plot_sharpness(out.with_suffix(".png"), measured, x="rollout_batch_size",
                             title=f"{path.name}: sharpness of the PPO loss at the final "
                                   f"checkpoint, {cfg.num_envs * cfg.num_steps} fresh samples "
                                   f"x {cfg.repeats} repeats", eps=cfg.eps_values[0])
        console.print(f"plot: {png}")
        if out == path / SHARPNESS_FILE:
            console.print(f"sweep table with sharpness columns: {path / 'results.csv'}")
    else:
        raise CLIError(f"{path} is neither a run directory (no {CONFIG_FILE}) nor a sweep "
                       "directory (no sweep.json); give the folder `rlscale train --run-dir` "
                       "or `rlscale sweep` wrote")
    print_table(summarize_repeats(df, keys, [v for v in values if v in df]),
                title=f"sharpness (mean and standard error over {cfg.repeats} rollouts of "
                      f"{cfg.num_envs * cfg.num_steps} agent steps; Lanczos <= "
                      f"{cfg.max_products} products per eigenvalue, tol {cfg.eigen_tol:g}, "
                      f"*_n converged values used; L-BFGS-B {cfg.ascent_steps} iterations x "
                      f"{cfg.ascent_starts} starts for the eps-sharpness)")
    console.print(f"per repeat: {out}")
    flags = [c for c in ("top_eigen_converged", "min_eigen_converged") if c in df]
    unconverged = int((~df[flags].astype(bool)).to_numpy().sum())
    if unconverged:  # kept as rows, left out of every mean, trend and plot
        console.print(f"[yellow]{unconverged} eigenvalue(s) did not converge within "
                      f"{cfg.max_products} products: rows marked unconverged (value NaN) in "
                      f"{out}; raise --max-products[/yellow]")
    return 0
