"""``rlscale envs`` and ``rlscale bench``, whose options ``rl.cli.app.build_parser`` defines
(``rlscale demo`` is ``rl.cli.compare.cmd_demo``)."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

import envs
from envs.registry import load_entry_points
from rl import bench
from rl.bench.suites import SUITES
from rl.cli.args import dataclass_from_args
from rl.cli.output import console, err_console, print_table

# --- rlscale envs ------------------------------------------------------------------------


def cmd_envs(args) -> int:
    errors = load_entry_points()
    entries = envs.list_envs()
    if args.kind:
        entries = [e for e in entries if e.kind == args.kind]
    table = Table(title=f"{len(entries)} environments")
    for col in ("name", "kind", "source", "backend id"):
        table.add_column(col)
    for e in entries:
        table.add_row(e.name, e.kind, e.source, e.target)
    console.print(table)
    console.print(
        "Any gymnasium id also works with the prefix gym: (e.g. gym:LunarLander-v3). "
        f"Atari backends: {', '.join(envs.ATARI_BACKENDS)} "
        f"(default {envs.default_backend('atari')})."
    )
    for msg in errors:
        err_console.print(f"[yellow]warning:[/] {escape(str(msg))}")
    return 0


# --- rlscale bench -----------------------------------------------------------------------


def cmd_bench(args) -> int:
    cfg_cls, run = SUITES[args.suite]
    cfg = dataclass_from_args(args, cfg_cls)
    with Progress(console=err_console, transient=True, disable=args.quiet) as progress:
        task = progress.add_task(f"bench {args.suite}", total=None)
        df = run(cfg, progress=lambda: progress.advance(task))
    print_table(df, title=f"rlscale bench {args.suite}")
    if df.attrs.get("note"):
        console.print(escape(df.attrs["note"]))
    path = bench.write_results(df, Path(args.out), args.suite, cfg)
    console.print(f"results: {path}")
    return 0
