"""``rlscale gns``: gradient-noise-scale studies. Subcommands: ``supervised``."""

from __future__ import annotations

import math
import time
from pathlib import Path

from rl.cliargs import add_dataclass_args, dataclass_from_args
from rl.supervised import SupervisedConfig


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
    import pandas as pd
    from rich.progress import Progress

    from rl.cli import console, err_console, print_table
    from rl.supervised import run_supervised

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


def add_parser(sub) -> None:
    p = sub.add_parser(
        "gns",
        help="gradient noise scale studies (supervised reference, ...)",
        description="Gradient noise scale (B_simple, McCandlish et al. 2018) measured with the "
        "same estimator as the RL runs.",
    )
    gsub = p.add_subparsers(dest="gns_command", metavar="STUDY", required=True)

    sp = gsub.add_parser(
        "supervised",
        help="train a small classifier on a bundled dataset and measure B_simple as it trains",
        description="Supervised reference: minibatch training of a small classifier on a "
        "scikit-learn bundled dataset (no download), measuring B_simple every --gns-every "
        "steps from --gns-groups groups of --gns-group-size examples drawn i.i.d. from the "
        "training set.",
    )
    add_dataclass_args(sp, SupervisedConfig, title="supervised run")
    sp.add_argument(
        "--out", metavar="DIR",
        help="new or empty results folder (default: results/gns/supervised/<name>-<time>); "
        "an existing run is never overwritten",
    )
    sp.add_argument("--quiet", action="store_true", help="no progress display")
    sp.set_defaults(func=cmd_supervised)
