"""The study's one progress display: runs done out of all, and the runs in progress.

Read from the run directories (status.json, the tail of metrics.jsonl), so it sees every
worker process's runs without talking to them. See docs/study.md.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rl.runs.record import metrics_file, peek_status

__all__ = ["StudyMonitor", "last_metrics_row"]


def last_metrics_row(path: Path) -> dict[str, Any] | None:
    """The last complete row of ``metrics.jsonl`` (reads the file's tail only)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 16384))
            tail = f.read()
    except OSError:
        return None
    lines = tail.split(b"\n")[:-1]
    for raw in reversed(lines):
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            continue
    return None


class StudyMonitor:
    """The study's one progress display: runs done / total and the runs in progress."""

    def __init__(self, plans: list, extra: int, console, quiet: bool):
        self.plans = plans
        self.extra_total = extra
        self.extra_done = 0
        self.quiet = quiet
        self.console = console
        self.progress = None
        if quiet:
            return

        monitor = self

        class StudyProgress(Progress):
            def get_renderables(self):
                yield self.make_tasks_table(self.tasks)
                table = monitor.running_table()
                if table is not None:
                    yield table

        self.progress = StudyProgress(
            TextColumn("[bold]study"), BarColumn(), MofNCompleteColumn(),
            TextColumn("runs done"), TimeElapsedColumn(), console=console,
            refresh_per_second=2,
        )
        self.task = self.progress.add_task("study", total=len(plans) + extra)
        self._running: list[tuple[str, dict]] = []

    def log(self, msg: str) -> None:
        if self.quiet:
            return
        (self.progress.console if self.progress else self.console).print(msg, highlight=False)

    def __enter__(self):
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.tick()
            self.progress.stop()

    def tick(self) -> None:
        if self.progress is None:
            return
        done = 0
        running = []
        now = time.time()
        for p in self.plans:
            path = Path(p.run_dir)
            try:
                status = peek_status(path)
            except OSError:
                status = None
            state = None if status is None else status.state
            if state in ("finished", "failed"):
                done += 1
                continue
            metrics = metrics_file(path)
            try:
                fresh = now - metrics.stat().st_mtime < 120
            except OSError:
                fresh = False
            if state == "running" and fresh:
                row = last_metrics_row(metrics)
                if row is not None:
                    running.append((p, row))
        self._running = running
        self.progress.update(self.task, completed=done + self.extra_done)

    def running_table(self):
        if not getattr(self, "_running", None):
            return None

        table = Table(box=None, padding=(0, 1), show_header=True, header_style="dim")
        for col in ("run in progress", "agent steps", "SPS", "return"):
            table.add_column(col, justify="left" if col.startswith("run") else "right")
        for plan, row in self._running:
            ret = row.get("return_recent", math.nan)
            budget = plan.train.get("total_agent_steps", 0)
            table.add_row(plan.name, f"{row.get('agent_steps', 0):,}/{budget:,}",
                          f"{row.get('sps', math.nan):,.0f}",
                          "-" if ret is None or ret != ret else f"{ret:.1f}")
        return table
