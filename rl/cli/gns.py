"""``rlscale gns``: noise-scale studies (``supervised``, ``run``, ``checkpoints``)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
from rich.progress import Progress

from rl.analysis.checkpoint_noise import CheckpointNoiseConfig, run_checkpoint_noise
from rl.analysis.power_laws import noise_scale_by_return
from rl.cli.args import dataclass_from_args
from rl.cli.output import CLIError, console, err_console, print_table
from rl.measure.ppo_noise import noise_scale_by_segment
from rl.measure.run_average import HEAVY_TAIL_SHARE, TOP_FRACTION
from rl.measure.supervised import SupervisedConfig, run_supervised
from rl.measure.warmup import WARMUP_ITERATIONS
from rl.runs.files import atomic_write_text, save_figure
from rl.runs.record import has_config, has_metrics, peek_status
from rl.runs.storage import RunDir


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def _interval(summary: dict, key: str) -> str:
    return (
        f"{_fmt(summary[key])}  [{_fmt(summary[key + '_lower'])}, "
        f"{_fmt(summary[key + '_upper'])}]"
    )


def default_out(cfg: SupervisedConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("results/gns/supervised") / f"{cfg.dataset}-{cfg.model}-seed{cfg.seed}-{stamp}"


def cmd_supervised(args) -> int:
    cfg = dataclass_from_args(args, SupervisedConfig)
    out = Path(args.out) if args.out else default_out(cfg)
    with Progress(console=err_console, transient=True, disable=args.quiet) as bar:
        task = bar.add_task(f"supervised {cfg.dataset} {cfg.model}", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = run_supervised(cfg, out, progress=progress)
    s = result.summary
    rows = [
        ("final test accuracy", f"{s['final_test_acc']:.3f}"),
        ("train loss, start -> end",
         f"{s['initial_train_loss']:.3g} -> {s['final_train_loss']:.3g}"),
        ("B_simple, run average [95%]", _interval(s, "b_simple_run")),
        ("B_simple, first quarter [95%]", _interval(s, "b_simple_start")),
        ("B_simple, last quarter [95%]", _interval(s, "b_simple_end")),
        ("B_simple end / start", _fmt(s["b_simple_end_over_start"])),
    ]
    print_table(
        pd.DataFrame(rows, columns=["quantity", "value"]),
        title=f"{cfg.dataset} {cfg.model} ({cfg.optimizer}), {s['steps']:,} steps of "
        f"{cfg.batch_size} ({s['epochs']:.3g} epochs), {s['measurements']} measurements",
    )
    console.print(
        "B_simple in training examples; measured with K = "
        f"{cfg.gns_groups} groups of b = {cfg.gns_group_size} examples drawn i.i.d. "
        f"(big batch {s['gns_big_batch']}); {s['negative_g2_fraction']:.0%} of single |G|^2 "
        "estimates were negative."
    )
    console.print(f"results: {result.out_dir} (summary.json, metrics.jsonl, config.json)")
    return 0


def plot_b_simple(table, path: Path, title: str, *, x: str, xlabel: str,
                  offsets=(0.0, 0.0, 0.0), line: str = "o") -> Path:
    """B_simple per term against column ``x`` (95% bars; open-ended where unresolved), and
    the smoothed return on a second axis."""
    import matplotlib  # lazy: slow import, figures only

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: slow import, figures only

    finite = table[["b_simple", "b_simple_hi"]].to_numpy(float)
    finite = finite[np.isfinite(finite)]
    cap = 10 * float(finite.max()) if finite.size else 1e6  # where unbounded bars end
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for offset, (term, part) in zip(offsets, table.groupby("term", sort=False), strict=False):
        xs = part[x].to_numpy(float) + offset
        b = part["b_simple"].to_numpy(float)
        lo = np.nan_to_num(part["b_simple_lo"].to_numpy(float), nan=0.0)
        hi = np.nan_to_num(part["b_simple_hi"].to_numpy(float), nan=cap, posinf=cap)
        ax.errorbar(xs, b, yerr=[np.maximum(b - lo, 0), np.maximum(hi - b, 0)], fmt=line,
                    capsize=3, label=term)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("B_simple (agent steps)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    first = table[table["term"] == table["term"].iloc[0]]
    twin = ax.twinx()
    twin.plot(first[x], first["return_recent"], "k--", lw=1)
    twin.set_ylabel("smoothed return (dashed)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path


def cmd_run(args) -> int:
    run = RunDir(args.run_dir)
    if not has_metrics(run.path):
        raise CLIError(f"{args.run_dir} has no metrics.jsonl: point RUN_DIR at a training run "
                       "directory (rlscale train --run-dir ...)")
    for flag, value in (("--segments", args.segments), ("--return-bins", args.return_bins)):
        if value < 1:
            raise CLIError(f"{flag} must be a positive integer, got {value}")
    metrics = run.load_metrics()
    try:
        table = noise_scale_by_segment(metrics, args.segments)
        bins = noise_scale_by_return(metrics, args.return_bins)
    except ValueError as err:
        raise CLIError(str(err)) from None
    last = peek_status(run.path)
    status = "unknown" if last is None or last.state is None else last.state
    title = f"({status}, {int(metrics['agent_steps'].max()):,} agent steps)"
    print_table(table[["segment", "term", "agent_steps_last", "measurements", "b_simple",
                       "b_simple_lo", "b_simple_hi", "g2_top_share", "return_recent"]],
                title=f"{run.path}: B_simple per segment {title}")
    print_table(bins[["bin", "term", "return_lo", "return_hi", "measurements", "b_simple",
                      "b_simple_lo", "b_simple_hi", "g2_top_share"]],
                title=f"{run.path}: B_simple per bin of return_recent {title}")
    out = Path(args.out) if args.out else Path("results/gns/run") / run.path.name
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "gns_segments.csv", table.to_csv(index=False))
    atomic_write_text(out / "gns_return_bins.csv", bins.to_csv(index=False))
    plot_b_simple(table, out / "gns_segments.png", f"{run.path.name}: B_simple per segment",
                  x="segment", xlabel="segment of the run (measurements in order)",
                  offsets=(-0.15, 0.0, 0.15))
    if len(bins):
        plot_b_simple(bins, out / "gns_return_bins.png",
                      f"{run.path.name}: B_simple per bin of return", x="return_recent",
                      xlabel="smoothed return (bin mean)")
    heavy = pd.concat([table, bins])["heavy_tailed"].astype(bool)
    console.print(
        f"B_simple in agent steps, after a warm-up of {WARMUP_ITERATIONS} PPO iterations; 95% "
        "block-bootstrap intervals (hi = inf: mean |G|^2 not resolved above zero; Fieller's in "
        f"the CSVs); g2_top_share: share of sum |G|^2 carried by the largest "
        f"{TOP_FRACTION:.0%} of estimates"
        + (f", over {HEAVY_TAIL_SHARE:.0%} in {int(heavy.sum())} rows: heavy-tailed, the "
           "intervals there are approximate" if heavy.any() else "")
        + f". results: {out}")
    return 0


def cmd_checkpoints(args) -> int:
    try:
        cfg = dataclass_from_args(args, CheckpointNoiseConfig)
    except ValueError as err:
        raise CLIError(str(err)) from None
    run = RunDir(args.run_dir)
    if not has_config(run.path):
        raise CLIError(f"{args.run_dir} has no config.json: point RUN_DIR at a training run "
                       "directory (rlscale train --run-dir ...)")
    out = Path(args.out) if args.out else Path("results/gns/checkpoints") / run.path.name
    with Progress(console=err_console, transient=True, disable=args.quiet) as bar:
        task = bar.add_task("checkpoints", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            table = run_checkpoint_noise(run.path, out, cfg, progress=progress)
        except (FileNotFoundError, ValueError) as err:
            raise CLIError(str(err)) from None
    shown = table[["iteration", "agent_steps", "return_recent", "term", "samples", "b_simple",
                   "b_simple_lo", "b_simple_hi", "negative_g2_fraction", "seconds"]]
    print_table(shown, title=f"{run.path}: B_simple at checkpoints, measuring batch "
                f"{cfg.measuring_batch_size:,} x {cfg.repeats} repeats")
    plot_b_simple(table, out / "checkpoints.png", f"{run.path.name}: B_simple at checkpoints "
                  f"(batch {cfg.measuring_batch_size:,} x {cfg.repeats})", x="agent_steps",
                  xlabel="agent steps at the checkpoint", line="o-")
    console.print("B_simple in agent steps; 95% Fieller intervals over the repeats (hi = inf: "
                  f"mean |G|^2 not resolved above zero); seconds per checkpoint. results: {out}")
    return 0
