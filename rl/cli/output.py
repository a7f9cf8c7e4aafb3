"""What the command line prints: the consoles, tables, and the one-line user error."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape
from rich.table import Table

# Tables are often read from logs: do not squeeze them to 80 columns when not on a terminal.
console = Console(width=None if sys.stdout.isatty() else 160)
# Messages in logs and pipes are grepped: one line each, however long (rich would wrap at 80).
err_console = Console(stderr=True, soft_wrap=not sys.stderr.isatty())


class CLIError(Exception):
    """A user error: printed as one clear line, exit status 2."""


def print_error(label: str, message: str) -> None:
    """``label: message`` on stderr (label in red), the message taken literally (no markup).

    Wrapped to the window on a terminal, one line elsewhere. Decided at each call, not at
    import, because wrappers and pytest's capsys swap sys.stderr after import.
    """
    err_console.print(f"[red]{label}:[/] {escape(message)}", highlight=False,
                      soft_wrap=not err_console.is_terminal)


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
