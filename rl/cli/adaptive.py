"""``rlscale compare-adaptive``: adaptive-batch runs against a sweep's best fixed batch."""

from __future__ import annotations

from pathlib import Path

from rl.analysis.adaptive import compare_with_fixed
from rl.cli.output import console, print_table
from rl.runs.files import atomic_write_text
from rl.runs.record import has_metrics


def cmd_compare(args) -> int:
    for r in args.runs:
        if not has_metrics(r):
            raise FileNotFoundError(f"{r} is not a run directory (no metrics.jsonl)")
    df = compare_with_fixed(Path(args.sweep_dir), args.runs, args.targets)
    print_table(df, title="adaptive vs fixed rollout batch (iterations = PPO iterations; "
                "agent_steps = agent steps; medians over runs, inf = not reached by most)")
    if args.out:

        atomic_write_text(args.out, df.to_csv(index=False))
        console.print(f"wrote {args.out}")
    return 0
