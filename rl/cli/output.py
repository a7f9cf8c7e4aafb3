"""What the command line prints: the consoles, tables, and the one-line user error."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

# Tables are often read from logs: do not squeeze them to 80 columns when not on a terminal.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)


class CLIError(Exception):
    """A user error: printed as one clear line, exit status 2."""


def format_number(v: float) -> str:
    if v != v:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def print_table(df, title: str | None = None) -> None:
    table = Table(title=title)
    for col in df.columns:
        table.add_column(str(col), justify="right" if df[col].dtype.kind in "fiu" else "left")
    for row in df.itertuples(index=False):
        cells = []
        for v in row:
            if isinstance(v, float):
                cells.append(format_number(v))
            else:
                cells.append(str(v))
        table.add_row(*cells)
    console.print(table)
