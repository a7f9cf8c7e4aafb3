"""``rlscale compare-adaptive``: adaptive-batch runs against a sweep's best fixed batch."""

from __future__ import annotations

from pathlib import Path

from rl.analysis.adaptive import compare_with_fixed
from rl.cli.args import finite_floats
from rl.cli.output import console, print_table
from rl.runs.files import atomic_write_text


def cmd_compare(args) -> int:
    for r in args.runs:
        if not (Path(r) / "metrics.jsonl").exists():
            raise FileNotFoundError(f"{r} is not a run directory (no metrics.jsonl)")
    df = compare_with_fixed(Path(args.sweep_dir), args.runs, args.targets)
    print_table(df, title="adaptive vs fixed rollout batch (iterations = PPO iterations; "
                "agent_steps = agent steps; medians over runs, inf = not reached by most)")
    if args.out:

        atomic_write_text(args.out, df.to_csv(index=False))
        console.print(f"wrote {args.out}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "compare-adaptive",
        help="iterations and agent steps to a target: adaptive runs vs a sweep's best fixed B",
        description="Report PPO iterations and agent steps to each target for adaptive-batch "
        "runs (rlscale train --batch-schedule adaptive) next to the best fixed rollout batch "
        "of a sweep (fewest iterations, fewest agent steps; each at its best lr).",
    )
    p.add_argument("sweep_dir", metavar="SWEEP_DIR", help="a sweep's out directory")
    p.add_argument("runs", metavar="RUN_DIR", nargs="+", help="adaptive run directories")
    p.add_argument("--targets", required=True, type=finite_floats, metavar="LIST",
                   help="target returns, comma-separated")
    p.add_argument("--out", help="also write the table as csv here")
    p.set_defaults(func=cmd_compare)
